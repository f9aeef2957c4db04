// Class switches and rolling resizes of a Shared PostgreSQL add-on, with a writer through
// the URL all along: Starter -> Business (the node's data dir handed to Patroni, a standby
// and a second gateway added), Business 512 -> 1024 (standby first, a planned switchover,
// then the old leader), Business -> Starter (the kept node made leader, the standby
// removed, Patroni gone). The URL never changes, no acknowledged write is lost, and the
// longest write pause of each step is printed.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { createIsolationRuntime } from "../../src/runtime/factory.ts";
import { sandboxNameFor } from "../../src/runtime/limits.ts";
import { probeIsolation } from "../../src/runtime/probe.ts";
import { startCluster, type Cluster } from "../support/cluster.ts";
import { connectSoon, SequentialWriter, lostAcks, printPatroniLogs, type Ack } from "../support/ha.ts";

const HOSTS = [
  { name: "e2e-sw-s1", pool: "shared" as const, az: "osc-fr1-a" },
  { name: "e2e-sw-s2", pool: "shared" as const, az: "osc-fr1-a" },
  { name: "e2e-sw-s3", pool: "shared" as const, az: "osc-fr1-b" },
];
const CHANGE_TIMEOUT_MS = 240_000;

interface InstanceRow {
  id: string;
  kind: string;
  ordinal: number;
  role: string;
  status: string;
  host: string;
  spec_generation: number;
}

/** The longest time without an acknowledged write between `from` and `to` (performance.now()). */
function longestPause(acks: Ack[], from: number, to: number): { ms: number; endedAt: string } {
  const times = [from, ...acks.map((a) => a.at).filter((t) => t > from && t < to), to];
  let longest = 0;
  let end = from;
  for (let i = 1; i < times.length; i++) {
    if (times[i]! - times[i - 1]! > longest) [longest, end] = [times[i]! - times[i - 1]!, times[i]!];
  }
  // Wall-clock end of the pause, to find it in the logs.
  const endedAt = new Date(Date.now() - (performance.now() - end)).toISOString();
  return { ms: Math.round(longest), endedAt };
}

/** A node's CPU quota in vCPU as its cgroup holds it; undefined where the host sets none. */
async function cpuQuotaOf(host: string, id: string): Promise<number | null | undefined> {
  const runtime = await createIsolationRuntime(await probeIsolation(), { parent: `cellar-${host}` });
  for (const file of runtime.procsFiles(sandboxNameFor(id))) {
    const dir = path.dirname(file);
    const v1 = await fs.readFile(path.join(dir, "cpu.cfs_quota_us"), "utf8").catch(() => null);
    if (v1 !== null) {
      const period = Number(await fs.readFile(path.join(dir, "cpu.cfs_period_us"), "utf8"));
      return Number(v1) < 0 ? null : Number(v1) / period;
    }
    const v2 = await fs.readFile(path.join(dir, "cpu.max"), "utf8").catch(() => null);
    if (v2 !== null) {
      const [quota, period] = v2.trim().split(" ");
      return quota === "max" ? null : Number(quota) / Number(period);
    }
  }
  return undefined;
}

describe("Shared add-on: Starter -> Business -> resize -> Starter, URL and data kept", () => {
  let cl: Cluster;
  let addonId = "";
  let url = "";
  let ca = "";

  before(async () => {
    cl = await startCluster({ subnet: 48, hosts: HOSTS });
    assert.equal((await cl.api("POST", "/v1/apps", { app: { name: "switch-app" } })).status, 201);
    ca = await cl.regionCa();
  });
  after(async () => cl?.close());

  const q = <T extends object>(sql: string, params: unknown[] = []) =>
    cl.controller.deps.db.query<T>(sql, params).then((r) => r.rows);
  const instances = () =>
    q<InstanceRow>(
      `SELECT i.id, i.kind, i.ordinal, i.role, i.status, h.name AS host, i.spec_generation
       FROM instances i JOIN hosts h ON h.id = i.host_id WHERE i.database_id = $1 ORDER BY i.kind, i.ordinal`,
      [addonId],
    );
  const urlNow = async () => {
    const vars = (await cl.api("GET", "/v1/apps/switch-app/variables")).json.variables;
    return vars.find((v: { name: string }) => v.name === "SCALINGO_POSTGRESQL_URL").value as string;
  };
  const sql = async (text: string) => {
    const client = await connectSoon(url, ca);
    try {
      return (await client.query(text)).rows;
    } finally {
      await client.end();
    }
  };

  /** Changes the plan with a writer running through the URL; returns its acks and pause. */
  async function changePlan(planId: string, table: string): Promise<{ pause: string; totalMs: number }> {
    await sql(`CREATE TABLE ${table} (n int PRIMARY KEY)`);
    const writer = new SequentialWriter({ url, ca, table, everyMs: 50, timeoutMs: 2000 });
    writer.start();
    const from = performance.now();
    try {
      const res = await cl.api("PATCH", `/v1/apps/switch-app/addons/${addonId}`, {
        addon: { plan_id: planId },
      });
      assert.equal(res.status, 200, JSON.stringify(res.json));
      await cl
        .waitFor(
          `the change to ${planId} to finish`,
          async () => {
            const [db] = await q<{ phase: string; done: boolean; reason: string }>(
              "SELECT phase, phase_reason AS reason, observed_generation = generation AS done FROM databases WHERE id = $1",
              [addonId],
            );
            return db?.phase === "running" && db.done ? true : undefined;
          },
          CHANGE_TIMEOUT_MS,
        )
        .catch(async (err: Error) => {
          // What each node's Patroni said: the failure is otherwise hard to read.
          await printPatroniLogs(
            cl.dataDir,
            (await instances()).filter((i) => i.kind === "node"),
            40,
          );
          throw err;
        });
    } finally {
      await writer.stop();
    }
    const to = performance.now();
    assert.ok(writer.acks.length > 10, `the writer got ${writer.acks.length} acks (${writer.lastError})`);
    const lost = await lostAcks(url, ca, table, writer.acks);
    assert.deepEqual(lost, [], `acknowledged rows lost: ${lost.map((a) => a.n).join(", ")}`);
    const p = longestPause(writer.acks, from, to);
    return { pause: `${p.ms} ms (ending ${p.endedAt})`, totalMs: Math.round(to - from) };
  }

  it("runs a Starter add-on with some data", async () => {
    const res = await cl.api("POST", "/v1/apps/switch-app/addons", {
      addon: { addon_provider_id: "postgresql", plan_id: "postgresql-starter-512" },
    });
    assert.equal(res.status, 201);
    addonId = res.json.addon.id;
    await cl.waitFor(
      "the add-on to run",
      async () => {
        const addon = (await cl.api("GET", `/v1/apps/switch-app/addons/${addonId}`)).json.addon;
        return addon.status === "running" ? true : undefined;
      },
      120_000,
    );
    url = await urlNow();
    await sql("CREATE TABLE kept (note text)");
    await sql("INSERT INTO kept VALUES ('written on the Starter node')");
  });

  it("becomes Business: the node keeps its data dir, a standby and a gateway join, the URL stays", async () => {
    const [starterNode] = (await instances()).filter((i) => i.kind === "node");
    const { pause, totalMs } = await changePlan("postgresql-business-512", "conv_acks");
    console.log(`timing: Starter -> Business ${totalMs} ms, longest write pause ${pause}`);
    assert.equal(await urlNow(), url);
    const all = await instances();
    const nodes = all.filter((i) => i.kind === "node");
    assert.equal(nodes.length, 2);
    assert.equal(all.filter((i) => i.kind === "gateway").length, 2);
    assert.ok(
      nodes.some((n) => n.id === starterNode!.id),
      "the Starter's node is one of the cluster's",
    );
    assert.notEqual(nodes[0]!.host, nodes[1]!.host);
    await cl.waitFor(
      "a leader and a follower",
      async () => {
        const roles = (await instances()).filter((i) => i.kind === "node").map((n) => n.role);
        return roles.sort().join() === "follower,leader" ? true : undefined;
      },
      60_000,
    );
    assert.equal((await sql("SELECT note FROM kept"))[0].note, "written on the Starter node");
    await cl.waitFor(
      "the standby to stream from the leader",
      async () =>
        (await sql("SELECT count(*)::int AS n FROM pg_stat_replication"))[0].n === 1 ? true : undefined,
      60_000,
    );
  });

  it("resizes 512 -> 1024 standby first, with a planned switchover and no lost write", async () => {
    const leaderBefore = (await instances()).find((i) => i.role === "leader")!;
    const { pause, totalMs } = await changePlan("postgresql-business-1024", "resize_acks");
    console.log(`timing: Business 512 -> 1024 ${totalMs} ms, longest write pause ${pause}`);
    assert.equal(await urlNow(), url);
    const [sb] = await sql("SHOW shared_buffers");
    assert.equal(sb.shared_buffers, "256MB");
    const [mc] = await sql("SHOW max_connections");
    assert.equal(mc.max_connections, "63");
    const switchovers = await q<{
      type_data: { old_leader: string; new_leader: string; duration_ms: number };
    }>("SELECT type_data FROM events WHERE database_id = $1 AND type = 'database_switchover'", [addonId]);
    assert.equal(switchovers.length, 1);
    assert.equal(switchovers[0]!.type_data.old_leader, leaderBefore.id);
    console.log(`timing: switchover asked to observed done ${switchovers[0]!.type_data.duration_ms} ms`);
    // The old leader's agent watched the shutdown and the candidate, and either handed the key
    // over itself or found Patroni quicker; it never lost sight of either.
    const handover = cl.agentLines.filter((l) => /switchover: (leader key handed|Patroni releases)/.test(l));
    assert.equal(handover.length, 1, `one handover decision: ${handover.join(" | ")}`);
    assert.match(handover[0]!, /leader key handed to the candidate|the leader key was already released/);
    // A planned switchover is not also told as a failover.
    const changed = await q(
      "SELECT 1 FROM events WHERE database_id = $1 AND type = 'database_leader_changed'",
      [addonId],
    );
    assert.equal(changed.length, 0);
    const [op] = await q<{ progress: string; status: string }>(
      "SELECT progress, status FROM operations WHERE database_id = $1 AND type = 'change-plan' ORDER BY created_at DESC LIMIT 1",
      [addonId],
    );
    assert.equal(op!.status, "done");
    assert.match(op!.progress, /generation|switch/);
    // Both ends got spare CPU for the switchover only: each node is back on its plan's quota.
    const nodes = await q<{ id: string; host: string; vcpu: number }>(
      `SELECT i.id, h.name AS host, (i.spec->'limits'->>'vcpu')::float AS vcpu
       FROM instances i JOIN hosts h ON h.id = i.host_id WHERE i.database_id = $1 AND i.kind = 'node'`,
      [addonId],
    );
    for (const n of nodes) {
      const quota = await cpuQuotaOf(n.host, n.id);
      if (quota !== undefined) assert.equal(quota, n.vcpu, `CPU quota of ${n.id} after the switchover`);
    }
  });

  it("goes back to Starter: the leader serves alone without Patroni, data and URL kept", async () => {
    const leaderBefore = (await instances()).find((i) => i.role === "leader")!;
    const { pause, totalMs } = await changePlan("postgresql-starter-1024", "back_acks");
    console.log(`timing: Business -> Starter ${totalMs} ms, longest write pause ${pause}`);
    assert.equal(await urlNow(), url);
    await cl.waitFor(
      "the standby and the second gateway to be gone",
      async () => ((await instances()).length === 2 ? true : undefined),
      60_000,
    );
    const all = await instances();
    // The leader stayed (no switchover); the gateway of the URL too.
    assert.deepEqual(all.map((i) => i.kind).sort(), ["gateway", "node"]);
    assert.equal(all.find((i) => i.kind === "gateway")!.ordinal, 0);
    assert.equal(all.find((i) => i.kind === "node")!.id, leaderBefore.id);
    assert.equal((await sql("SELECT note FROM kept"))[0].note, "written on the Starter node");
    const [secrets] = await q<{ dcs_user_created: boolean }>(
      "SELECT dcs_user_created FROM database_ha_secrets WHERE database_id = $1",
      [addonId],
    );
    assert.equal(secrets?.dcs_user_created, false);
    await sql("INSERT INTO kept VALUES ('written on the Starter again')");
  });

  it("is removed completely", async () => {
    assert.equal((await cl.api("DELETE", `/v1/apps/switch-app/addons/${addonId}`)).status, 204);
    await cl.waitFor(
      "the add-on's instances to be removed",
      async () => ((await instances()).length === 0 ? true : undefined),
      90_000,
    );
  });
});
