// The planning of HA changes (pure): rolling resize with a switchover, Starter <-> Business,
// a switchover in flight, and where a Starter's standby goes.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  planDatabase,
  type DatabaseObservation,
  type InstanceObservation,
} from "../../src/reconciler/database-plan.ts";
import { SWITCHOVER_TIMEOUT_MS } from "../../src/reconciler/ha-plan.ts";
import { placeStandby } from "../../src/reconciler/placement-shared.ts";
import type { HostView } from "../../src/domain/placement.ts";

const dcs = {
  ready: true as const,
  endpoints: ["https://10.0.0.1:2379"],
  serviceEndpoints: ["https://10.0.0.1:2379"],
};

const inst = (id: string, over: Partial<InstanceObservation> = {}): InstanceObservation => ({
  id,
  kind: "node",
  hostName: `host-${id}`,
  hostReady: true,
  status: "running",
  statusMessage: "",
  specGeneration: 1,
  observedGeneration: 1,
  desiredState: "running",
  role: "",
  ha: false,
  ordinal: 0,
  ...over,
});

/** A Business cluster: leader n0, follower n1, gateways g0 and g1, all at generation `gen`. */
function business(
  gen: number,
  over: Record<string, Partial<InstanceObservation>> = {},
): InstanceObservation[] {
  const at = { specGeneration: gen, observedGeneration: gen };
  return [
    inst("n0", { ...at, role: "leader", ha: true, ordinal: 0, ...over.n0 }),
    inst("n1", { ...at, role: "follower", ha: true, ordinal: 1, ...over.n1 }),
    inst("g0", { ...at, kind: "gateway", ordinal: 0, ...over.g0 }),
    inst("g1", { ...at, kind: "gateway", ordinal: 1, ...over.g1 }),
  ];
}

const obs = (over: Partial<DatabaseObservation>): DatabaseObservation => ({
  id: "ad-1",
  generation: 2,
  observedGeneration: 1,
  phase: "updating",
  phaseReason: "",
  deleteRequested: false,
  deleted: false,
  pendingOperations: 0,
  instances: [],
  placement: null,
  planNodes: 2,
  model: "shared",
  dcs: null,
  switchover: null,
  ...over,
});

const actionOf = (o: DatabaseObservation) => {
  const plan = planDatabase(o, o.id);
  return { plan, action: plan.step.kind === "ha" ? plan.step.action : null };
};

describe("rolling resize of a Business cluster", () => {
  it("hands the new generation to the standby and the gateways first, never the leader", () => {
    const { action, plan } = actionOf(obs({ instances: business(1) }));
    assert.deepEqual(action, { kind: "update-specs", generation: 2, instanceIds: ["n1", "g0", "g1"] });
    assert.match(plan.message, /before the leader n0/);
  });

  it("waits for the standby to run the new generation", () => {
    const instances = business(2, {
      n0: { specGeneration: 1, observedGeneration: 1 },
      n1: { observedGeneration: 1 },
    });
    const { plan } = actionOf(obs({ instances }));
    assert.equal(plan.step.kind, "set-phase");
    assert.match(plan.message, /rolling update: waiting for node n1 .*applying generation 2/);
  });

  it("switches over to the up-to-date standby once it runs", () => {
    const instances = business(2, { n0: { specGeneration: 1, observedGeneration: 1 } });
    const { action } = actionOf(obs({ instances }));
    assert.deepEqual(action, {
      kind: "request-switchover",
      leaderId: "n0",
      candidateId: "n1",
      reason: "resize",
    });
  });

  it("then updates the old leader, now a follower", () => {
    const instances = business(2, {
      n0: { specGeneration: 1, observedGeneration: 1, role: "follower" },
      n1: { role: "leader" },
    });
    const { action } = actionOf(obs({ instances }));
    assert.deepEqual(action, { kind: "update-specs", generation: 2, instanceIds: ["n0"] });
  });

  it("verifies through the gateway once every instance runs the new generation", () => {
    const { plan } = actionOf(
      obs({ instances: business(2, { n0: { role: "follower" }, n1: { role: "leader" } }) }),
    );
    assert.deepEqual(plan.step, { kind: "verify", generation: 2 });
  });

  it("waits while the cluster has no single leader (a failover under way)", () => {
    const instances = business(1, { n0: { role: "follower" } });
    const { plan } = actionOf(obs({ instances }));
    assert.equal(plan.step.kind, "set-phase");
    assert.match(plan.message, /waiting for one leader/);
  });
});

describe("a switchover in flight", () => {
  const sw = { id: "sw-1", leaderId: "n0", candidateId: "n1", ageMs: 2000 };

  it("waits for the candidate to lead, checking every second", () => {
    const plan = planDatabase(obs({ instances: business(1), switchover: sw }), "ad-1");
    assert.equal(plan.step.kind, "set-phase");
    assert.equal(plan.requeueAfterMs, 1000);
    assert.match(plan.message, /switching over from n0 to n1/);
  });

  it("is finished when the candidate is the one leader", () => {
    const instances = business(1, { n0: { role: "follower" }, n1: { role: "leader" } });
    const { action } = actionOf(obs({ instances, switchover: sw }));
    assert.deepEqual(action, { kind: "finish-switchover", switchoverId: "sw-1", candidateId: "n1" });
  });

  it("fails after its deadline, or when the candidate is gone", () => {
    const late = actionOf(
      obs({ instances: business(1), switchover: { ...sw, ageMs: SWITCHOVER_TIMEOUT_MS + 1 } }),
    );
    assert.equal(late.action?.kind, "fail-switchover");
    const gone = actionOf(obs({ instances: business(1).filter((i) => i.id !== "n1"), switchover: sw }));
    assert.equal(gone.action?.kind, "fail-switchover");
  });
});

describe("Starter -> Business", () => {
  const starter = () => [
    inst("n0", { role: "leader", ordinal: 0 }),
    inst("g0", { kind: "gateway", ordinal: 0 }),
  ];
  const slots = [
    { kind: "node" as const, ordinal: 1, hostId: "host-b" },
    { kind: "gateway" as const, ordinal: 1, hostId: "host-b" },
  ];

  it("waits for the region's etcd cluster", () => {
    const { plan } = actionOf(obs({ instances: starter(), dcs: { ready: false, reason: "forming etcd" } }));
    assert.equal(plan.step.kind, "set-phase");
    assert.match(plan.message, /forming etcd/);
  });

  it("adds the standby and its gateway first, next to the serving node", () => {
    const { action } = actionOf(obs({ instances: starter(), dcs, growPlacement: { ok: true, slots } }));
    assert.deepEqual(action, {
      kind: "grow",
      generation: 2,
      slots,
      dcs: { endpoints: dcs.endpoints, serviceEndpoints: dcs.serviceEndpoints },
    });
  });

  it("says why when no host can take the standby", () => {
    const { plan } = actionOf(
      obs({ instances: starter(), dcs, growPlacement: { ok: false, reason: "no other ready host of AZ a" } }),
    );
    assert.match(plan.message, /waiting for a host for the standby: no other ready host of AZ a/);
  });

  it("then hands the existing node to Patroni", () => {
    const instances = [
      ...starter(),
      inst("n1", { ha: true, ordinal: 1, specGeneration: 2, observedGeneration: 0, status: "booting" }),
      inst("g1", { kind: "gateway", ordinal: 1, specGeneration: 2, observedGeneration: 2 }),
    ];
    const { action } = actionOf(obs({ instances, dcs }));
    assert.equal(action?.kind, "convert-to-ha");
  });

  it("points the old gateway at the cluster only once Patroni leads the converted node", () => {
    const converted = (observed: number) => [
      inst("n0", { role: "leader", ha: true, ordinal: 0, specGeneration: 2, observedGeneration: observed }),
      inst("g0", { kind: "gateway", ordinal: 0 }),
      inst("n1", { ha: true, ordinal: 1, specGeneration: 2, observedGeneration: 0, status: "booting" }),
      inst("g1", { kind: "gateway", ordinal: 1, specGeneration: 2, observedGeneration: 2 }),
    ];
    const early = planDatabase(obs({ instances: converted(1), dcs }), "ad-1");
    assert.match(early.message, /waiting for the leader node n0/);
    const { action } = actionOf(obs({ instances: converted(2), dcs }));
    assert.deepEqual(action, { kind: "update-specs", generation: 2, instanceIds: ["g0"] });
  });
});

describe("Business -> Starter", () => {
  it("keeps the leader, whatever its ordinal: no switchover, the URL's gateway stays", () => {
    const instances = business(1, { n0: { role: "follower" }, n1: { role: "leader" } });
    const { action } = actionOf(obs({ instances, planNodes: 1 }));
    assert.deepEqual(action, { kind: "remove-instances", instanceIds: ["n0", "g1"] });
  });

  it("waits for one running leader before removing anything", () => {
    const instances = business(1, { n1: { role: "leader" } });
    const plan = planDatabase(obs({ instances, planNodes: 1 }), "ad-1");
    assert.match(plan.message, /waiting for one running leader to keep/);
  });

  it("waits for their removal, then runs the kept node without Patroni", () => {
    const removing = business(1, { n1: { desiredState: "deleted" }, g1: { desiredState: "deleted" } });
    assert.match(planDatabase(obs({ instances: removing, planNodes: 1 }), "ad-1").message, /to be removed/);
    const kept = business(1).filter((i) => i.ordinal === 0);
    const { action } = actionOf(obs({ instances: kept, planNodes: 1 }));
    assert.deepEqual(action, { kind: "convert-to-single", generation: 2 });
  });

  it("drops the cluster's etcd user once the single node runs the new generation", () => {
    const single = [
      inst("n0", { specGeneration: 2, observedGeneration: 2, role: "leader" }),
      inst("g0", { kind: "gateway", specGeneration: 2, observedGeneration: 2 }),
    ];
    assert.deepEqual(actionOf(obs({ instances: single, planNodes: 1, haClusterLeft: true })).action, {
      kind: "drop-dcs",
    });
    assert.deepEqual(planDatabase(obs({ instances: single, planNodes: 1 }), "ad-1").step, {
      kind: "verify",
      generation: 2,
    });
  });
});

describe("placeStandby", () => {
  const host = (id: string, az: string, over: Partial<HostView> = {}): HostView => ({
    id,
    name: id,
    region: "r",
    az,
    pool: "shared",
    ready: true,
    capacityVcpu: 2,
    capacityRamMb: 4096,
    capacityDiskGb: 100,
    usedVcpu: 0,
    usedRamMb: 0,
    usedDiskGb: 0,
    nodeCount: 0,
    ...over,
  });
  const req = { ramMb: 512, storageGb: 10, overcommit: 1, nodeOrdinal: 1, gatewayOrdinal: 1 };

  it("picks another ready host of the node's AZ, the one with most free memory", () => {
    const hosts = [
      host("a", "az1"),
      host("b", "az1", { usedRamMb: 2048 }),
      host("c", "az1"),
      host("d", "az2"),
    ];
    const r = placeStandby({ hostId: "a" }, hosts, req);
    assert.deepEqual(r, {
      ok: true,
      slots: [
        { kind: "node", ordinal: 1, hostId: "c" },
        { kind: "gateway", ordinal: 1, hostId: "c" },
      ],
    });
  });

  it("never co-locates, and says why when nothing fits", () => {
    const r = placeStandby(
      { hostId: "a" },
      [host("a", "az1"), host("d", "az2"), host("e", "az1", { ready: false })],
      req,
    );
    assert.equal(r.ok, false);
    assert.match((r as { reason: string }).reason, /no other ready host of AZ az1/);
  });
});
