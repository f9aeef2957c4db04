// Class switches and resizes of a Dedicated database, with a writer through its URL all
// along: Starter -> Business (a standby on a dedicated host of another AZ, the node handed
// to Patroni), Business -> Enterprise 8192 (a third node in the third AZ, synchronous mode on
// once it streams, then a rolling resize with a switchover; the volumes grow), a smaller plan
// refused, Enterprise -> Business 8192 (synchronous mode off, then a standby removed) and
// Business -> Starter 8192 (the leader kept, Patroni gone). The URL never changes, no
// acknowledged write is lost, the rows are all there after each step, and the longest write
// pause of each step is printed.
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { probeIsolation } from "../../src/runtime/probe.ts";
import { volumeUsage } from "../../src/runtime/volume.ts";
import { connectVerified, startCluster, type Cluster } from "../support/cluster.ts";
import { lostAcks, printPatroniLogs, SequentialWriter, type Ack } from "../support/ha.ts";

const probe = await probeIsolation();
// Room for the 8192 plans (160 GB volumes, sparse) on each dedicated host.
const HOSTS = [
  { name: "e2e-ds-d1", pool: "dedicated" as const, az: "osc-fr1-a", diskGb: 200 },
  { name: "e2e-ds-d2", pool: "dedicated" as const, az: "osc-fr1-b", diskGb: 200 },
  { name: "e2e-ds-d3", pool: "dedicated" as const, az: "osc-fr1-c", diskGb: 200 },
];
const AZ = new Map(HOSTS.map((h) => [h.name, h.az]));
const NAME = "ledger-switch";
const CHANGE_TIMEOUT_MS = 300_000;
const KEPT_ROWS = 100;

interface InstanceRow {
  id: string;
  kind: string;
  ordinal: number;
  role: string;
  status: string;
  host: string;
}

/** The longest time without an acknowledged write between `from` and `to` (performance.now()). */
function longestPause(acks: Ack[], from: number, to: number): number {
  const times = [from, ...acks.map((a) => a.at).filter((t) => t > from && t < to), to];
  let longest = 0;
  for (let i = 1; i < times.length; i++) longest = Math.max(longest, times[i]! - times[i - 1]!);
  return Math.round(longest);
}

describe(
  "Dedicated: Starter -> Business -> Enterprise 8192 -> Business -> Starter",
  {
    skip: probe.netns.ok ? false : probe.netns.detail,
  },
  () => {
    let cl: Cluster;
    let id = "";
    let url = "";
    let ca = "";

    before(async () => {
      cl = await startCluster({ subnet: 54, hosts: HOSTS });
      ca = await cl.regionCa();
    });
    after(async () => cl?.close());

    const q = <T extends object>(sql: string, params: unknown[] = []) =>
      cl.controller.deps.db.query<T>(sql, params).then((r) => r.rows);
    const instances = () =>
      q<InstanceRow>(
        `SELECT i.id, i.kind, i.ordinal, i.role, i.status, h.name AS host
       FROM instances i JOIN hosts h ON h.id = i.host_id WHERE i.database_id = $1 ORDER BY i.kind, i.ordinal`,
        [id],
      );
    const nodes = async () => (await instances()).filter((i) => i.kind === "node");
    const urlNow = async () => {
      const vars = (await cl.api("GET", `/v1/apps/${NAME}/variables`)).json.variables as Array<{
        name: string;
        value: string;
      }>;
      return vars.find((v) => v.name === "SCALINGO_POSTGRESQL_URL")?.value;
    };
    const sql = async (text: string) => {
      const client = await connectVerified(url, ca);
      try {
        return (await client.query(text)).rows;
      } finally {
        await client.end();
      }
    };
    const keptRows = async () => (await sql("SELECT count(*)::int AS n FROM kept"))[0].n as number;
    const events = (type: string) =>
      q<{ type_data: Record<string, unknown> }>(
        "SELECT type_data FROM events WHERE database_id = $1 AND type = $2",
        [id, type],
      );

    async function printState(): Promise<void> {
      const [db] = await q("SELECT phase, phase_reason FROM databases WHERE id = $1", [id]);
      console.log(JSON.stringify({ db, instances: await instances() }, null, 1));
      await printPatroniLogs(cl.dataDir, await nodes());
    }

    /** Changes the plan with a writer through the URL; checks no acknowledged row was lost. */
    async function changePlan(planId: string, table: string): Promise<{ pauseMs: number; totalMs: number }> {
      await sql(`CREATE TABLE ${table} (n int PRIMARY KEY)`);
      const writer = new SequentialWriter({ url, ca, table, everyMs: 50, timeoutMs: 2000 });
      writer.start();
      const from = performance.now();
      try {
        const res = await cl.api("PATCH", `/v1/apps/${NAME}/addons/${id}`, { addon: { plan_id: planId } });
        assert.equal(res.status, 200, JSON.stringify(res.json));
        await cl
          .waitFor(
            `the change to ${planId} to finish`,
            async () => {
              const [db] = await q<{ phase: string; done: boolean }>(
                "SELECT phase, observed_generation = generation AS done FROM databases WHERE id = $1",
                [id],
              );
              return db?.phase === "running" && db.done ? true : undefined;
            },
            CHANGE_TIMEOUT_MS,
          )
          .catch(async (err: Error) => {
            await printState();
            throw err;
          });
      } finally {
        await writer.stop();
      }
      const to = performance.now();
      assert.ok(writer.acks.length > 10, `the writer got ${writer.acks.length} acks (${writer.lastError})`);
      const lost = await lostAcks(url, ca, table, writer.acks);
      assert.deepEqual(lost, [], `acknowledged rows lost: ${lost.map((a) => a.n).join(", ")}`);
      assert.equal(await urlNow(), url, "the URL never changes");
      assert.equal(await keptRows(), KEPT_ROWS);
      return { pauseMs: longestPause(writer.acks, from, to), totalMs: Math.round(to - from) };
    }

    const rolesSettle = (count: number) =>
      cl.waitFor(
        `one leader and ${count - 1} running follower(s)`,
        async () => {
          const ns = await nodes();
          const roles = ns.map((n) => `${n.role}/${n.status}`).sort();
          const want = [...Array<string>(count - 1).fill("follower/running"), "leader/running"].sort();
          return ns.length === count && roles.join() === want.join() ? ns : undefined;
        },
        60_000,
      );

    it("runs a Dedicated Starter with rows", async () => {
      const res = await cl.api("POST", "/v1/databases", {
        database: { name: NAME, technology: "postgresql-ng", plan: "postgresql-dr-starter-4096" },
      });
      assert.equal(res.status, 201, JSON.stringify(res.json));
      id = res.json.database.id as string;
      url = await cl.waitFor("the Starter's URL", urlNow, 240_000).catch(async (err: Error) => {
        await printState();
        throw err;
      });
      await sql("CREATE TABLE kept (n int PRIMARY KEY)");
      await sql(`INSERT INTO kept SELECT generate_series(1, ${KEPT_ROWS})`);
    });

    it("becomes Business: a standby on a dedicated host of another AZ, the node keeps its data dir", async () => {
      const [starter] = await nodes();
      const { pauseMs, totalMs } = await changePlan("postgresql-dr-business-4096", "biz_acks");
      console.log(`timing: Dedicated Starter -> Business ${totalMs} ms, longest write pause ${pauseMs} ms`);
      const ns = await rolesSettle(2);
      assert.ok(
        ns.some((n) => n.id === starter!.id),
        "the Starter's node is one of the cluster's",
      );
      assert.equal(new Set(ns.map((n) => AZ.get(n.host))).size, 2, "one node per AZ");
      assert.equal((await instances()).filter((i) => i.kind === "gateway").length, 2);
    });

    it("becomes Enterprise 8192: a third node in the third AZ, synchronous, resized with a switchover", async () => {
      const leaderBefore = (await nodes()).find((n) => n.role === "leader")!;
      const { pauseMs, totalMs } = await changePlan("postgresql-dr-enterprise-8192", "ent_acks");
      console.log(
        `timing: Dedicated Business 4096 -> Enterprise 8192 ${totalMs} ms, longest write pause ${pauseMs} ms`,
      );
      const ns = await rolesSettle(3);
      assert.equal(new Set(ns.map((n) => AZ.get(n.host))).size, 3, "one node per AZ");
      assert.equal((await instances()).filter((i) => i.kind === "gateway").length, 3);
      const switchovers = await events("database_switchover");
      assert.equal(switchovers.length, 1, "one planned switchover for the resize");
      assert.equal(switchovers[0]!.type_data.old_leader, leaderBefore.id);
      assert.equal((await sql("SHOW shared_buffers"))[0].shared_buffers, "2GB");
      let seen = "nothing yet";
      await cl
        .waitFor(
          "both standbys connected to the leader",
          async () => {
            // The protected user sees one row per WAL sender, not its state (that needs
            // pg_read_all_stats): two senders here, and a synchronous standby named below.
            const all = await sql("SELECT application_name FROM pg_stat_replication");
            seen = JSON.stringify(all);
            return all.length === 2 ? true : undefined;
          },
          // The old leader is the last to roll: its volume grows offline, then it rewinds and
          // catches up; on a loaded machine that can take minutes.
          180_000,
        )
        .catch((err: Error) => {
          throw new Error(`${err.message}; pg_stat_replication on the leader: ${seen}`);
        });
      assert.notEqual((await sql("SHOW synchronous_standby_names"))[0].synchronous_standby_names, "");
      if (probe.loopVolumes.ok) {
        for (const n of ns) {
          // The node's volume is mounted at volume/ (node/ links to its encrypted directory).
          const dir = path.join(cl.dataDir, "hosts", n.host, "instances", n.id, "volume");
          const { sizeBytes } = await volumeUsage(dir);
          assert.ok(
            (sizeBytes ?? 0) > 150 * 1024 ** 3,
            `${n.id}'s volume grew to the plan's 160 GB (${sizeBytes})`,
          );
        }
      }
    });

    it("refuses a smaller plan and changes nothing", async () => {
      const [before] = await q<{ generation: number }>("SELECT generation FROM databases WHERE id = $1", [
        id,
      ]);
      const res = await cl.api("PATCH", `/v1/apps/${NAME}/addons/${id}`, {
        addon: { plan_id: "postgresql-dr-starter-4096" },
      });
      assert.equal(res.status, 422);
      assert.match(res.json.errors.plan_id[0], /smaller than the current postgresql-dr-enterprise-8192/);
      const [afterRefusal] = await q<{ generation: number; phase: string }>(
        "SELECT generation, phase FROM databases WHERE id = $1",
        [id],
      );
      assert.deepEqual(afterRefusal, { generation: before!.generation, phase: "running" });
    });

    it("goes back to Business: synchronous mode off, then a standby and a gateway removed", async () => {
      const { pauseMs, totalMs } = await changePlan("postgresql-dr-business-8192", "back_acks");
      console.log(
        `timing: Dedicated Enterprise -> Business ${totalMs} ms, longest write pause ${pauseMs} ms`,
      );
      await cl.waitFor(
        "the third node and gateway to be gone",
        async () => ((await instances()).length === 4 ? true : undefined),
        60_000,
      );
      await rolesSettle(2);
      assert.equal((await sql("SHOW synchronous_standby_names"))[0].synchronous_standby_names, "");
      assert.equal((await events("database_switchover")).length, 1, "same size: no switchover");
    });

    it("goes back to Starter at the same size: the leader serves alone, without Patroni", async () => {
      const leaderBefore = (await nodes()).find((n) => n.role === "leader")!;
      const { pauseMs, totalMs } = await changePlan("postgresql-dr-starter-8192", "starter_acks");
      console.log(`timing: Dedicated Business -> Starter ${totalMs} ms, longest write pause ${pauseMs} ms`);
      await cl.waitFor(
        "the standby and the second gateway to be gone",
        async () => ((await instances()).length === 2 ? true : undefined),
        60_000,
      );
      const all = await instances();
      assert.deepEqual(all.map((i) => i.kind).sort(), ["gateway", "node"]);
      assert.equal(all.find((i) => i.kind === "node")!.id, leaderBefore.id);
      await sql("INSERT INTO kept VALUES (0)");
    });

    it("is deleted completely", async () => {
      const res = await cl.api("DELETE", `/v1/apps/${id}?current_name=${NAME}`);
      assert.equal(res.status, 204, JSON.stringify(res.json));
      await cl.waitFor(
        "every instance to be gone",
        async () => ((await instances()).length === 0 ? true : undefined),
        120_000,
      );
    });
  },
);
