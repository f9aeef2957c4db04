// The planning of Dedicated class switches and resizes (pure): nodes added on free hosts of
// other AZs, Business -> Enterprise (the new standby first, the leader in place at the same
// size), Enterprise -> Business (synchronous mode off through the standby that stays, then a
// standby and a gateway removed), Enterprise -> Starter (the going standbys turn synchronous
// mode off first), and a bigger plan waiting for capacity on the nodes' hosts.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  planDatabase,
  type DatabaseObservation,
  type InstanceObservation,
} from "../../src/reconciler/database-plan.ts";
import { dedicatedResizeBlocked, placeDedicatedGrowth } from "../../src/reconciler/placement-dedicated.ts";
import type { HostView } from "../../src/domain/placement.ts";

const dcs = {
  ready: true as const,
  endpoints: ["https://10.0.0.1:2379"],
  serviceEndpoints: ["https://100.64.0.1:2379"],
};

const inst = (id: string, over: Partial<InstanceObservation> = {}): InstanceObservation => ({
  id,
  kind: "node",
  hostName: `host-${id.slice(1)}`,
  hostReady: true,
  status: "running",
  statusMessage: "",
  specGeneration: 1,
  observedGeneration: 1,
  desiredState: "running",
  role: "",
  ha: true,
  ramMb: 4096,
  ordinal: Number(id.slice(1)),
  ...over,
});
const gw = (id: string, over: Partial<InstanceObservation> = {}) =>
  inst(id, { kind: "gateway", ha: false, ...over });

/** n0 leads; every node has a gateway beside it (g<i> on host-<i>). */
function cluster(size: number, over: Record<string, Partial<InstanceObservation>> = {}) {
  const out: InstanceObservation[] = [];
  for (let i = 0; i < size; i++) {
    out.push(inst(`n${i}`, { role: i === 0 ? "leader" : "follower", ...over[`n${i}`] }));
  }
  for (let i = 0; i < size; i++) out.push(gw(`g${i}`, over[`g${i}`]));
  return out;
}

const obs = (over: Partial<DatabaseObservation>): DatabaseObservation => ({
  id: "db-1",
  generation: 2,
  observedGeneration: 1,
  phase: "updating",
  phaseReason: "",
  deleteRequested: false,
  deleted: false,
  pendingOperations: 0,
  instances: [],
  placement: null,
  planNodes: 3,
  model: "dedicated",
  dcs,
  switchover: null,
  planRamMb: 4096,
  ...over,
});

const stepOf = (o: DatabaseObservation) => planDatabase(o, o.id);
const actionOf = (o: DatabaseObservation) => {
  const plan = stepOf(o);
  return plan.step.kind === "ha" ? plan.step.action : null;
};
const at2 = { specGeneration: 2, observedGeneration: 2 };

describe("Dedicated Business -> Enterprise (same size)", () => {
  const slots = [
    { kind: "node" as const, ordinal: 2, hostId: "host-2" },
    { kind: "gateway" as const, ordinal: 2, hostId: "host-2" },
  ];

  it("adds the third node and its gateway where the placement says", () => {
    const action = actionOf(obs({ instances: cluster(2), growPlacement: { ok: true, slots } }));
    assert.deepEqual(action, {
      kind: "grow",
      generation: 2,
      slots,
      dcs: { endpoints: dcs.endpoints, serviceEndpoints: dcs.serviceEndpoints },
    });
    assert.match(
      stepOf(obs({ instances: cluster(2), growPlacement: { ok: true, slots } })).message,
      /clone the leader/,
    );
  });

  it("stays pending with the placement's reason when no free host of another AZ fits", () => {
    const plan = stepOf(
      obs({ instances: cluster(2), growPlacement: { ok: false, reason: "no capacity for 1 more node(s)" } }),
    );
    assert.deepEqual(plan.step, {
      kind: "set-phase",
      phase: "updating",
      reason: "waiting for a host for the standby: no capacity for 1 more node(s)",
    });
  });

  it("waits for the new standby to run (stream, synchronous mode on) before touching the others", () => {
    const instances = [
      ...cluster(2),
      inst("n2", { ...at2, observedGeneration: 0, status: "booting", role: "" }),
      gw("g2", at2),
    ];
    const plan = stepOf(obs({ instances }));
    assert.equal(plan.step.kind, "set-phase");
    assert.match(plan.message, /rolling update: waiting for node n2/);
  });

  it("then hands the generation to the old standby and gateways, then to the leader in place", () => {
    const grown = [...cluster(2), inst("n2", { ...at2, role: "follower" }), gw("g2", at2)];
    assert.deepEqual(actionOf(obs({ instances: grown })), {
      kind: "update-specs",
      generation: 2,
      instanceIds: ["n1", "g0", "g1"],
    });
    const rolled = [
      ...cluster(2, { n1: at2, g0: at2, g1: at2 }),
      inst("n2", { ...at2, role: "follower" }),
      gw("g2", at2),
    ];
    const plan = stepOf(obs({ instances: rolled }));
    assert.deepEqual(plan.step.kind === "ha" ? plan.step.action : null, {
      kind: "update-specs",
      generation: 2,
      instanceIds: ["n0"],
    });
    assert.match(plan.message, /in place, no switchover/);
  });

  it("switches over instead when the size grows (Enterprise 4096 -> 8192)", () => {
    const rolled = cluster(3, { n1: at2, n2: at2, g0: at2, g1: at2, g2: at2 });
    assert.deepEqual(actionOf(obs({ instances: rolled, planRamMb: 8192 })), {
      kind: "request-switchover",
      leaderId: "n0",
      candidateId: "n1",
      reason: "resize",
    });
  });
});

describe("Dedicated Enterprise -> Business", () => {
  const to = { planNodes: 2 };

  it("hands the new generation to the standby that stays first (it turns synchronous mode off)", () => {
    const plan = stepOf(obs({ ...to, instances: cluster(3) }));
    assert.deepEqual(plan.step.kind === "ha" ? plan.step.action : null, {
      kind: "update-specs",
      generation: 2,
      instanceIds: ["n1"],
    });
    assert.match(plan.message, /synchronous mode off.*before removing n2/);
  });

  it("waits for it, then removes the standby of the highest ordinal and its gateway, never the leader", () => {
    const applying = cluster(3, { n1: { specGeneration: 2 } });
    assert.match(stepOf(obs({ ...to, instances: applying })).message, /waiting for node n1/);
    const ready = cluster(3, { n1: at2 });
    assert.deepEqual(actionOf(obs({ ...to, instances: ready })), {
      kind: "remove-instances",
      instanceIds: ["n2", "g2"],
    });
    // The leader on the highest ordinal stays; the gateway of ordinal 0 (the URL's) too.
    const leaderLast = cluster(3, { n0: { role: "follower", ...at2 }, n2: { role: "leader" }, g2: {} });
    assert.deepEqual(actionOf(obs({ ...to, instances: leaderLast })), {
      kind: "remove-instances",
      instanceIds: ["n1", "g1"],
    });
  });

  it("waits for the removal, then rolls the gateways and updates the leader in place", () => {
    const removing = cluster(3, {
      n1: at2,
      n2: { desiredState: "deleted" },
      g2: { desiredState: "deleted" },
    });
    assert.match(stepOf(obs({ ...to, instances: removing })).message, /to be removed/);
    const two = cluster(2, { n1: at2 });
    assert.deepEqual(actionOf(obs({ ...to, instances: two })), {
      kind: "update-specs",
      generation: 2,
      instanceIds: ["g0", "g1"],
    });
  });

  it("waits for one running leader before removing anything", () => {
    const noLeader = cluster(3, { n0: { role: "follower" }, n1: at2 });
    assert.match(stepOf(obs({ ...to, instances: noLeader })).message, /waiting for one running leader/);
  });
});

describe("Dedicated Enterprise -> Starter (same size)", () => {
  const sync = { synchronous: true };
  const to = { planNodes: 1 };

  it("has the standbys about to go turn synchronous mode off before they are removed", () => {
    const instances = cluster(3, { n0: sync, n1: sync, n2: sync });
    const plan = stepOf(obs({ ...to, instances }));
    assert.deepEqual(plan.step.kind === "ha" ? plan.step.action : null, {
      kind: "update-specs",
      generation: 2,
      instanceIds: ["n1", "n2"],
    });
    assert.match(plan.message, /synchronous replication off/);
    const off = cluster(3, { n0: sync, n1: at2, n2: at2 });
    assert.deepEqual(actionOf(obs({ ...to, instances: off })), {
      kind: "remove-instances",
      instanceIds: ["n1", "n2", "g1", "g2"],
    });
  });

  it("removes a Business cluster's standby at once (asynchronous: nothing waits on it)", () => {
    assert.deepEqual(actionOf(obs({ ...to, instances: cluster(2) })), {
      kind: "remove-instances",
      instanceIds: ["n1", "g1"],
    });
  });
});

describe("Dedicated resize capacity", () => {
  it("waits with the hosts' reason and acts on nothing", () => {
    const reason = "waiting for capacity: plan x needs 160 GB disk on each node's host";
    const plan = stepOf(obs({ planNodes: 2, instances: cluster(2), resizeBlocked: reason }));
    assert.deepEqual(plan.step, { kind: "set-phase", phase: "updating", reason });
  });

  it("a single node grows through the ordinary update (a restart, as the reference says)", () => {
    const single = [inst("n0", { ha: false, role: "" }), gw("g0")];
    assert.deepEqual(stepOf(obs({ planNodes: 1, instances: single, planRamMb: 8192 })).step, {
      kind: "update-specs",
      generation: 2,
    });
  });
});

describe("placeDedicatedGrowth", () => {
  const host = (id: string, az: string, over: Partial<HostView> = {}): HostView => ({
    id,
    name: id,
    region: "r",
    az,
    pool: "dedicated",
    ready: true,
    capacityVcpu: 2,
    capacityRamMb: 8192,
    capacityDiskGb: 200,
    usedVcpu: 0,
    usedRamMb: 0,
    usedDiskGb: 0,
    nodeCount: 0,
    ...over,
  });
  const req = {
    region: "r",
    ramMb: 4096,
    vcpu: 1,
    storageGb: 80,
    count: 1,
    nodeOrdinal: 2,
    gatewayOrdinal: 2,
  };

  it("picks a free host of an AZ the database does not use, with its gateway beside the node", () => {
    const hosts = [
      host("a", "az1"),
      host("b", "az2"),
      host("a2", "az1"),
      host("c-busy", "az3", { nodeCount: 1, usedRamMb: 4096, usedVcpu: 1, usedDiskGb: 80 }),
      host("c", "az3"),
      host("s", "az4", { pool: "shared" }),
    ];
    assert.deepEqual(placeDedicatedGrowth(["a", "b"], hosts, req), {
      ok: true,
      slots: [
        { kind: "node", ordinal: 2, hostId: "c" },
        { kind: "gateway", ordinal: 2, hostId: "c" },
      ],
    });
  });

  it("places two nodes in two different new AZs (Starter -> Enterprise)", () => {
    const hosts = [host("a", "az1"), host("b", "az2"), host("b2", "az2"), host("c", "az3")];
    const r = placeDedicatedGrowth(["a"], hosts, { ...req, count: 2, nodeOrdinal: 1, gatewayOrdinal: 1 });
    assert.equal(r.ok, true);
    const nodes = r.ok ? r.slots.filter((s) => s.kind === "node").map((s) => s.hostId) : [];
    assert.equal(nodes.length, 2);
    assert.ok(nodes.includes("c") && (nodes.includes("b") || nodes.includes("b2")));
  });

  it("never co-locates nor overcommits, and says what it needs", () => {
    const hosts = [
      host("a", "az1"),
      host("b", "az2"),
      host("c", "az3", { usedVcpu: 2 }),
      host("d", "az1"),
      host("e", "az4", { ready: false }),
    ];
    const r = placeDedicatedGrowth(["a", "b"], hosts, req);
    assert.equal(r.ok, false);
    assert.match(
      (r as { reason: string }).reason,
      /needs 1 free dedicated host\(s\) in 1 different AZ\(s\) other than az1, az2, each with 4096 MB RAM, 1 vCPU and 80 GB disk free/,
    );
  });
});

describe("dedicatedResizeBlocked", () => {
  const host = (id: string, over: Partial<HostView> = {}): HostView => ({
    id,
    name: id,
    region: "r",
    az: "az1",
    pool: "dedicated",
    ready: true,
    capacityVcpu: 2,
    capacityRamMb: 8192,
    capacityDiskGb: 100,
    usedVcpu: 0,
    usedRamMb: 0,
    usedDiskGb: 0,
    nodeCount: 0,
    ...over,
  });
  const bigger = { name: "postgresql-dr-business-8192", ramMb: 8192, vcpu: 2, storageGb: 160 };

  it("names the host that cannot hold the bigger plan", () => {
    const reason = dedicatedResizeBlocked(
      ["a", "b"],
      [host("a", { capacityDiskGb: 200 }), host("b")],
      bigger,
    );
    assert.match(
      reason ?? "",
      /needs 8192 MB RAM, 2 vCPU and 160 GB disk on each node's host, and host b has 8192 MB RAM, 2 vCPU and 100 GB disk free/,
    );
  });

  it("is null when every node's host has room", () => {
    assert.equal(dedicatedResizeBlocked(["a"], [host("a", { capacityDiskGb: 200 })], bigger), null);
  });
});

describe("a switchover of a synchronous cluster", () => {
  it("is finished by whichever standby leads: Patroni takes only the synchronous one", () => {
    const sw = { id: "sw-1", leaderId: "n0", candidateId: "n1", ageMs: 3000 };
    const instances = cluster(3, { n0: { role: "follower" }, n2: { role: "leader" } });
    assert.deepEqual(actionOf(obs({ instances, switchover: sw })), {
      kind: "finish-switchover",
      switchoverId: "sw-1",
      candidateId: "n2",
    });
    const stillOld = cluster(3);
    assert.equal(stepOf(obs({ instances: stillOld, switchover: sw })).step.kind, "set-phase");
  });
});
