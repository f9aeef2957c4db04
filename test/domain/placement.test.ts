import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { placeDatabase, type HostView, type PlacementRequest } from "../../src/domain/placement.ts";

const host = (name: string, over: Partial<HostView> = {}): HostView => ({
  id: `host-${name}`,
  name,
  region: "osc-fr1",
  az: "osc-fr1-a",
  pool: "shared",
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

const req = (
  over: Partial<PlacementRequest> & { nodes?: number; ramMb?: number; vcpu?: number },
): PlacementRequest => ({
  model: over.model ?? "shared",
  region: over.region ?? "osc-fr1",
  sharedOvercommit: over.sharedOvercommit ?? 1,
  plan: {
    nodes: over.nodes ?? 1,
    gateways: over.nodes ?? 1,
    ramMb: over.ramMb ?? 512,
    vcpu: over.vcpu ?? 0.25,
    storageGb: 10,
  },
});

const dedicated = (name: string, az: string, over: Partial<HostView> = {}) =>
  host(name, { pool: "dedicated", az: `osc-fr1-${az}`, ...over });

describe("placement", () => {
  const cases: Array<{ name: string; req: PlacementRequest; hosts: HostView[]; expect: string[] | RegExp }> =
    [
      {
        name: "no host at all",
        req: req({}),
        hosts: [],
        expect: /no shared host is registered in region osc-fr1/,
      },
      {
        name: "only unreachable hosts",
        req: req({}),
        hosts: [host("s1", { ready: false })],
        expect: /is ready \(all unreachable\)/,
      },
      {
        name: "starter on the freest shared host",
        req: req({}),
        hosts: [host("s1", { usedRamMb: 4096 }), host("s2")],
        expect: ["s2"],
      },
      {
        name: "business: two nodes on different hosts of one AZ",
        req: req({ nodes: 2 }),
        hosts: [host("s1"), host("s2", { az: "osc-fr1-b" }), host("s3")],
        expect: ["s1", "s3"],
      },
      {
        name: "business needs two hosts in one AZ",
        req: req({ nodes: 2 }),
        hosts: [host("s1"), host("s2", { az: "osc-fr1-b" })],
        expect: /needs 2 shared host\(s\) in one AZ/,
      },
      {
        name: "shared overcommit lets RAM promises exceed capacity",
        req: req({ ramMb: 4096, sharedOvercommit: 4 }),
        hosts: [host("s1", { usedRamMb: 20000 })],
        expect: ["s1"],
      },
      {
        name: "dedicated ignores shared hosts",
        req: req({ model: "dedicated", ramMb: 4096, vcpu: 1 }),
        hosts: [host("s1")],
        expect: /no dedicated host is registered/,
      },
      {
        name: "dedicated: one node per host, never on an occupied host",
        req: req({ model: "dedicated", ramMb: 4096, vcpu: 1 }),
        hosts: [dedicated("d1", "a", { nodeCount: 1 }), dedicated("d2", "b")],
        expect: ["d2"],
      },
      {
        name: "enterprise: three nodes in three AZs",
        req: req({ model: "dedicated", nodes: 3, ramMb: 4096, vcpu: 1 }),
        hosts: [dedicated("d1", "a"), dedicated("d2", "b"), dedicated("d3", "c"), dedicated("d4", "a")],
        expect: ["d1", "d2", "d3"],
      },
      {
        name: "enterprise cannot double up in one AZ",
        req: req({ model: "dedicated", nodes: 3, ramMb: 4096, vcpu: 1 }),
        hosts: [dedicated("d1", "a"), dedicated("d2", "b"), dedicated("d4", "a")],
        expect: /3 free dedicated host\(s\) in 3 different AZs/,
      },
      {
        name: "dedicated vCPUs are never overcommitted",
        req: req({ model: "dedicated", ramMb: 4096, vcpu: 4 }),
        hosts: [dedicated("d1", "a", { capacityVcpu: 2 })],
        expect: /4 vCPU/,
      },
      {
        name: "dedicated RAM is never overcommitted",
        req: req({ model: "dedicated", ramMb: 16384, vcpu: 1, sharedOvercommit: 8 }),
        hosts: [dedicated("d1", "a")],
        expect: /16384 MB RAM/,
      },
    ];

  for (const c of cases) {
    it(c.name, () => {
      const result = placeDatabase(c.req, c.hosts);
      if (c.expect instanceof RegExp) {
        assert.equal(result.ok, false);
        if (!result.ok) assert.match(result.reason, c.expect);
        return;
      }
      assert.equal(result.ok, true, result.ok ? "" : result.reason);
      if (!result.ok) return;
      const nodes = result.slots.filter((s) => s.kind === "node").map((s) => s.hostId.replace("host-", ""));
      assert.deepEqual(nodes.sort(), [...c.expect].sort());
      const gateways = result.slots.filter((s) => s.kind === "gateway");
      assert.equal(gateways.length, c.req.plan.gateways);
      // Every gateway sits on a host that runs a node of the same database.
      for (const g of gateways)
        assert.ok(result.slots.some((s) => s.kind === "node" && s.hostId === g.hostId));
    });
  }
});
