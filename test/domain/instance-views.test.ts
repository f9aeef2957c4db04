import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  cpuPercentBetween,
  databaseEncryptedAtRest,
  databaseInstanceJson,
  databaseMetricsJson,
  instanceStatusJson,
  referenceInstanceStatus,
  type InstanceFacts,
} from "../../src/domain/instance-views.ts";

const node = (over: Partial<InstanceFacts> = {}): InstanceFacts => ({
  id: "inst-node",
  kind: "node",
  status: "running",
  desiredState: "running",
  role: "leader",
  address: "127.51.0.1",
  port: 20000,
  usage: {},
  ...over,
});

describe("instance status in the reference's words", () => {
  const cases: Array<[string, string, string]> = [
    ["booting", "running", "booting"],
    ["running", "running", "running"],
    ["restarting", "running", "restarting"],
    ["stopped", "running", "stopped"],
    ["failed", "running", "stopped"],
    ["removing", "deleted", "removing"],
    ["removed", "deleted", "removing"],
    ["running", "deleted", "removing"],
  ];
  for (const [status, desiredState, expected] of cases) {
    it(`${status} (desired ${desiredState}) -> ${expected}`, () => {
      assert.equal(referenceInstanceStatus({ status, desiredState }), expected);
    });
  }

  it("types nodes db-node and gateways haproxy; only nodes have a role", () => {
    assert.deepEqual(instanceStatusJson(node()), {
      id: "inst-node",
      type: "db-node",
      status: "running",
      role: "leader",
      encryption_at_rest: false,
      encryption_at_rest_detail: "not reported yet",
    });
    assert.deepEqual(instanceStatusJson(node({ id: "inst-gw", kind: "gateway", role: "leader" })), {
      id: "inst-gw",
      type: "haproxy",
      status: "running",
      role: "",
    });
    assert.deepEqual(databaseInstanceJson(node()), {
      id: "inst-node",
      hostname: "127.51.0.1",
      port: 20000,
      status: "running",
      type: "db-node",
      features: [],
      private_ip: "127.51.0.1",
    });
  });
});

describe("CPU percent between two readings", () => {
  it("is the share of the vCPU allotment used over the window", () => {
    assert.equal(cpuPercentBetween({ cpuSeconds: 10, atMs: 0 }, { cpuSeconds: 11, atMs: 2000 }, 1), 50);
    assert.equal(cpuPercentBetween({ cpuSeconds: 10, atMs: 0 }, { cpuSeconds: 10.5, atMs: 2000 }, 0.25), 100);
    assert.equal(cpuPercentBetween({ cpuSeconds: 10, atMs: 0 }, { cpuSeconds: 10, atMs: 2000 }, 2), 0);
  });

  it("cannot be told without elapsed time, or across a counter reset", () => {
    assert.equal(cpuPercentBetween({ cpuSeconds: 1, atMs: 5 }, { cpuSeconds: 2, atMs: 5 }, 1), null);
    assert.equal(cpuPercentBetween({ cpuSeconds: 9, atMs: 0 }, { cpuSeconds: 1, atMs: 1000 }, 1), null);
  });
});

describe("database metrics (reference shape)", () => {
  it("gives the leader's numbers at the top and every live node's below", () => {
    const usage = {
      cpu_percent: 12.3456,
      memory_bytes: 30e6,
      memory_limit_bytes: 512 * 2 ** 20,
      memory_peak_bytes: 40e6,
      disk_bytes: 50e6,
    };
    const m = databaseMetricsJson([
      node({ id: "inst-gw", kind: "gateway", usage: { memory_bytes: 1 } }),
      node({ id: "inst-b", role: "follower", usage: { ...usage, cpu_percent: 1 } }),
      node({ id: "inst-a", usage }),
      node({ id: "inst-old", desiredState: "deleted", usage }),
    ]);
    assert.equal(m.cpu_usage, 12.35);
    assert.deepEqual(m.memory, {
      memory_usage: 30e6,
      memory_limit: 512 * 2 ** 20,
      max_memory_usage: 40e6,
      swap_usage: 0,
      swap_limit: 0,
      max_swap_usage: 0,
    });
    assert.equal(m.real_disk_size, 50e6);
    assert.deepEqual(Object.keys(m.instances_metrics).sort(), ["inst-a", "inst-b"]);
    assert.deepEqual(m.instances_metrics["inst-b"], {
      instance_id: "inst-b",
      instance_address: "127.51.0.1:20000",
      real_disk_size: 50e6,
      cpu: { usage_in_percents: 1 },
      memory: { ...m.memory },
    });
  });

  it("says null for what no agent has reported yet", () => {
    const m = databaseMetricsJson([node()]);
    assert.equal(m.cpu_usage, null);
    assert.equal(m.memory.memory_usage, null);
    assert.equal(m.real_disk_size, null);
    assert.deepEqual(databaseMetricsJson([]).instances_metrics, {});
  });
});

describe("encryption at rest of a database", () => {
  const enc = (over: Partial<InstanceFacts> = {}) =>
    node({ encryptedAtRest: true, atRestNote: "AES-256-XTS/AES-256-CTS, key present", ...over });
  const gateway = node({ id: "inst-gw", kind: "gateway" });

  it("is true only when every node it keeps reports encrypted", () => {
    assert.equal(databaseEncryptedAtRest([enc(), gateway]), true);
    assert.equal(
      databaseEncryptedAtRest([enc(), enc({ id: "inst-2", encryptedAtRest: false }), gateway]),
      false,
    );
    assert.equal(
      databaseEncryptedAtRest([enc(), enc({ id: "inst-2", encryptedAtRest: null })]),
      false,
      "unknown",
    );
    assert.equal(databaseEncryptedAtRest([gateway]), false, "no node yet");
    // A node on its way out does not count.
    assert.equal(databaseEncryptedAtRest([enc(), node({ id: "inst-old", desiredState: "deleted" })]), true);
  });

  it("says per node with what it is encrypted or why not", () => {
    const plain = node({
      encryptedAtRest: false,
      atRestNote: "the filesystem of /x has no ext4 encryption feature",
    });
    assert.deepEqual(
      [instanceStatusJson(enc()), instanceStatusJson(plain)].map((j) => [
        j.encryption_at_rest,
        j.encryption_at_rest_detail,
      ]),
      [
        [true, "AES-256-XTS/AES-256-CTS, key present"],
        [false, "the filesystem of /x has no ext4 encryption feature"],
      ],
    );
    assert.equal("encryption_at_rest" in instanceStatusJson(gateway), false);
  });
});
