// Loss of the leader's whole host, on a Dedicated Business database (one node per dedicated
// host of its own AZ, each in its own network namespace and on the database's own network),
// with one writer through the database's URL all along:
// 1. Host down: the agent and every process of the host (Patroni, PostgreSQL, the gateway,
//    the etcd member) killed -9, as if the machine died. Nobody hands the leader key back:
//    the standby takes over once its TTL runs out. The controller marks the host unreachable;
//    the agent started again brings the old leader back as a follower (rewound).
// 2. Network cut: every packet of the new leader's namespace dropped but its loopback's. The
//    isolated leader, cut from etcd, demotes itself (never two writable primaries), the
//    standby takes over; once the cut ends the old leader rejoins as a follower.
// Then every acknowledged row is there but for Business's asynchronous bound (as in
// ha-data-safety), and deleting the database leaves no namespace, veth or process.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { PostgresDriver } from "../../src/agent/postgres.driver.ts";
import {
  isProcessAlive,
  processCommandLine,
  signalProcess,
} from "../../src/engines/postgresql/process-watch.ts";
import { queryOnce } from "../../src/engines/postgresql/superuser.ts";
import { shortRunDir } from "../../src/main/agent-main.ts";
import { createIsolationRuntime } from "../../src/runtime/factory.ts";
import { inNetns, links, listNodeNetns, netnsPids, nodeNetNames } from "../../src/runtime/netns.ts";
import { probeIsolation } from "../../src/runtime/probe.ts";
import { listVpcs, vpcNames } from "../../src/runtime/vpc.ts";
import { connectVerified, startCluster, type Cluster } from "../support/cluster.ts";
import { haNodes, lostAcks, printPatroniLogs, SequentialWriter, type HaNode } from "../support/ha.ts";

const probe = await probeIsolation();
const HOSTS = [
  { name: "e2e-hl-d1", pool: "dedicated" as const, az: "osc-fr1-a" },
  { name: "e2e-hl-d2", pool: "dedicated" as const, az: "osc-fr1-b" },
  // Two nodes, but three hosts: the region's etcd keeps its quorum when one host dies.
  { name: "e2e-hl-d3", pool: "dedicated" as const, az: "osc-fr1-c" },
];
const NAME = "hl-ledger";
const PLAN = "postgresql-dr-business-4096";
/** As ha-data-safety: what an asynchronous standby may miss, wide for a loaded 2-core machine. */
const WINDOW_MS = 5000;
const CUT_TABLE = "cellar_test_cut";
/** cannot_connect_now (57P03), no listener, no socket: the server takes no session. */
const REFUSED = new Set(["57P03", "ECONNREFUSED", "ENOENT"]);
/**
 * A cut cable, inside the node's namespace. Not `ip link set ... down`: the agent, outside the
 * namespace, sees its node stop answering and re-makes the node's links within a heartbeat
 * (they are its own to repair); a cable cut elsewhere is something it can neither see nor mend.
 */
const CUT = `table inet ${CUT_TABLE} {
  chain input { type filter hook input priority -300; policy drop; iif "lo" accept; }
  chain output { type filter hook output priority -300; policy drop; oif "lo" accept; }
}
`;

/** One loss: when, the writer's first failure after it, its first write again. */
interface Loss {
  what: string;
  at: number;
  brokenAt: number;
  resumedAt: number;
}

function inNs(ns: string, argv: string[], stdin?: string): Promise<string> {
  const [cmd, ...args] = inNetns(ns, argv);
  return new Promise((resolve, reject) => {
    const child = execFile(cmd!, args, { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${argv.join(" ")} in ${ns}: ${String(stderr).trim() || err.message}`));
      else resolve(String(stdout));
    });
    if (stdin !== undefined) child.stdin?.end(stdin);
  });
}

/**
 * Live processes of a host's directory: one naming a path below it anywhere in its arguments
 * (Patroni's config, HAProxy's, etcd's --data-dir=) or working in it (PostgreSQL's).
 */
async function processesUnder(dir: string): Promise<number[]> {
  const found: number[] = [];
  for (const pid of (await fs.readdir("/proc")).filter((e) => /^\d+$/.test(e)).map(Number)) {
    if (pid === process.pid) continue;
    const argv = await processCommandLine(pid);
    const cwd = await fs.readlink(`/proc/${pid}/cwd`).catch(() => "");
    const uses = (argv ?? []).some((a) => a.includes(`${dir}/`)) || cwd.startsWith(`${dir}/`);
    if (uses && (await isProcessAlive(pid))) found.push(pid);
  }
  return found;
}

describe(
  "Dedicated Business: loss of the leader's host",
  { skip: probe.netns.ok ? false : `needs network namespaces (root): ${probe.netns.detail}` },
  () => {
    let cl: Cluster;
    let ca = "";
    let id = "";
    let url = "";
    let writer: SequentialWriter | null = null;
    const losses: Loss[] = [];
    /** Agents killed and not yet started again; namespaces cut and not yet restored. */
    const down = new Set<string>();
    const cut = new Set<string>();

    before(async () => {
      cl = await startCluster({ subnet: 57, hosts: HOSTS });
      ca = await cl.regionCa();
    });

    after(async () => {
      await writer?.stop();
      for (const ns of cut) await uncut(ns).catch((err: Error) => console.error(`cleanup: ${err.message}`));
      if (!cl) return;
      // A host left down: its agent comes back, so that the fleet's stop gives its node's
      // namespace and volume back as on any host.
      for (const host of down) {
        cl.fleet.startAgent(host);
        await heartbeatSince(host, new Date()).catch((err: Error) =>
          console.error(`cleanup: ${err.message}`),
        );
      }
      await cl.fleet.stop();
      // Whatever an agent could not stop (one that never came back).
      for (const h of HOSTS) {
        const stateDir = stateDirOf(h.name);
        const runtime = await createIsolationRuntime(probe, { parent: `cellar-${h.name}` });
        const driver = new PostgresDriver({
          stateDir,
          runDir: shortRunDir(stateDir),
          runtime,
          exclusiveCpus: [],
        });
        await driver.stopAll().catch((err: Error) => console.error(`cleanup: ${err.message}`));
      }
      await cl.close();
    });

    const stateDirOf = (host: string) => path.join(cl.dataDir, "hosts", host);
    const nodes = () => haNodes(cl.controller.deps.db, id);
    const q = <T extends object>(sql: string, params: unknown[] = []) =>
      cl.controller.deps.db.query<T>(sql, params).then((r) => r.rows);
    const hostStatus = async (host: string) =>
      (await q<{ status: string }>("SELECT status FROM hosts WHERE name = $1", [host]))[0]?.status;
    const heartbeatSince = (host: string, since: Date) =>
      cl.waitFor(
        `a heartbeat of ${host}`,
        async () => {
          const rows = await q(
            "SELECT 1 FROM hosts WHERE name = $1 AND status = 'ready' AND last_heartbeat_at > $2",
            [host, since],
          );
          return rows.length > 0 ? true : undefined;
        },
        120_000,
      );

    /**
     * Over the node's unix socket (not bound to a namespace): true for a writable primary,
     * false for a standby, "refused" when the server says it takes no session (shutting down,
     * starting up) or nothing listens, null when nothing answers in time.
     */
    const writable = (n: HaNode): Promise<boolean | "refused" | null> =>
      superuser<{ w: boolean }>(n, "SELECT NOT pg_is_in_recovery() AS w").then(
        (rows) => rows[0]?.w ?? null,
        (err: { code?: string }) => (REFUSED.has(err.code ?? "") ? "refused" : null),
      );
    const superuser = <R extends object>(n: HaNode, sql: string) => {
      const socketDir = path.join(shortRunDir(stateDirOf(n.host)), n.id.replace(/^inst-/, ""));
      return queryOnce<R & Record<string, unknown>>(
        { host: socketDir, port: n.port, user: "postgres", database: "postgres" },
        sql,
        [],
        2000,
      );
    };
    /** `leader` streams WAL to `member`, by the leader's own account. */
    const streamsTo = async (leader: HaNode, member: HaNode) => {
      const rows = await superuser<{ application_name: string; state: string }>(
        leader,
        "SELECT application_name, state FROM pg_stat_replication",
      ).catch(() => []);
      return rows.some((r) => r.application_name === member.id && r.state === "streaming");
    };
    /** The one writable primary, when every node answers and exactly one is. */
    const leaderNow = async (all: HaNode[]) => {
      const states = await Promise.all(all.map(writable));
      if (states.some((s) => s === null)) return undefined;
      const leaders = all.filter((_, i) => states[i] === true);
      return leaders.length === 1 ? leaders[0] : undefined;
    };

    const printState = async () => {
      const db = await q("SELECT phase, phase_reason FROM databases WHERE id = $1", [id]);
      const inst = await q(
        `SELECT i.kind, i.id, h.name AS host, h.status AS host_status, i.role, i.status, i.status_message
         FROM instances i JOIN hosts h ON h.id = i.host_id WHERE i.database_id = $1 ORDER BY i.kind, i.ordinal`,
        [id],
      );
      console.log(JSON.stringify({ db, inst, writerError: writer?.lastError }, null, 1));
      await printPatroniLogs(cl.dataDir, await nodes(), 25);
    };
    const withState = <T>(p: Promise<T>): Promise<T> =>
      p.catch(async (err: Error) => {
        await printState();
        throw err;
      });

    /** The writer's session breaks after `at`; returns the loss once a write goes through again. */
    const awaitResumed = async (what: string, at: number): Promise<Loss> => {
      const brokenAt = await cl.waitFor(
        `the writer's session to fail after the ${what}`,
        () => Promise.resolve(writer!.failureAfter(at)),
        30_000,
      );
      const resumedAt = await withState(
        cl.waitFor(
          `a write through the URL after the ${what}`,
          () => Promise.resolve(writer!.acksAfter(brokenAt)[0]?.at),
          120_000,
        ),
      );
      const loss = { what, at, brokenAt, resumedAt };
      losses.push(loss);
      return loss;
    };

    /** The old leader runs again as a follower streaming from the new one, in the store too. */
    const awaitRejoined = async (old: HaNode, leader: HaNode) => {
      await withState(
        cl.waitFor(
          `${old.id} to stream from ${leader.id} as a standby`,
          async () => ((await writable(old)) === false && (await streamsTo(leader, old)) ? true : undefined),
          120_000,
        ),
      );
      await withState(
        cl.waitFor(
          "the store to show one leader and a running follower",
          async () => {
            const all = await nodes();
            const o = all.find((n) => n.id === old.id);
            const leaders = all.filter((n) => n.role === "leader");
            const ok = o?.role === "follower" && o.status === "running" && leaders[0]?.id === leader.id;
            return ok && leaders.length === 1 ? true : undefined;
          },
          60_000,
        ),
      );
      assert.equal((await leaderNow(await nodes()))?.id, leader.id, "one writable primary");
    };

    /** Kills the agent, then every process of the host at once; returns when the first signal went. */
    const killHost = async (host: string, namespaces: string[]): Promise<number> => {
      const agent = cl.fleet.processOf(host);
      assert.ok(agent?.pid, `the agent of ${host} runs`);
      const exited = new Promise<void>((resolve) => agent.once("exit", () => resolve()));
      const at = performance.now();
      agent.kill("SIGKILL");
      down.add(host);
      await exited;
      // Whatever names the host's state dir or works in it, and runs in its nodes' namespaces.
      const dir = stateDirOf(host);
      await cl.waitFor(
        `every process of ${host} to be gone`,
        async () => {
          const inNamespaces = (await Promise.all(namespaces.map(netnsPids))).flat();
          const pids = [...new Set([...(await processesUnder(dir)), ...inNamespaces])];
          for (const pid of pids) signalProcess(pid, "SIGKILL");
          return pids.length === 0 ? true : undefined;
        },
        30_000,
      );
      return at;
    };

    const uncut = async (ns: string) => {
      if (!cut.has(ns)) return;
      await inNs(ns, ["nft", "delete", "table", "inet", CUT_TABLE]);
      cut.delete(ns);
    };

    const ms = (v: number) => `${Math.round(v)} ms`;

    it("provisions a Dedicated Business database on two hosts of two AZs, with a writer through its URL", async () => {
      const res = await cl.api("POST", "/v1/databases", {
        database: { name: NAME, technology: "postgresql-ng", plan: PLAN },
      });
      assert.equal(res.status, 201, JSON.stringify(res.json));
      id = res.json.database.id;
      url = await withState(
        cl.waitFor(
          "the database to run and publish its URL",
          async () => {
            const vars = (await cl.api("GET", `/v1/apps/${NAME}/variables`)).json.variables as Array<{
              name: string;
              value: string;
            }>;
            return vars.find((v) => v.name === "SCALINGO_POSTGRESQL_URL")?.value;
          },
          300_000,
        ),
      );
      const all = await nodes();
      assert.equal(all.length, 2);
      assert.notEqual(
        HOSTS.find((h) => h.name === all[0]!.host)?.az,
        HOSTS.find((h) => h.name === all[1]!.host)?.az,
      );
      const setup = await connectVerified(url, ca);
      try {
        await setup.query("CREATE TABLE acked (n int PRIMARY KEY)");
      } finally {
        await setup.end();
      }
      const leader = await withState(cl.waitFor("one writable primary", () => leaderNow(all)));
      const standby = all.find((n) => n.id !== leader.id)!;
      await withState(
        cl.waitFor("the standby to stream", async () =>
          (await streamsTo(leader, standby)) ? true : undefined,
        ),
      );
      writer = new SequentialWriter({ url, ca, table: "acked", everyMs: 20, timeoutMs: 3000 });
      writer.start();
      await cl.waitFor("the writer's first rows", () =>
        Promise.resolve(writer!.acks.length > 20 ? true : undefined),
      );
    });

    it("host down: the standby takes over, the host is unreachable, then the old leader rejoins", async () => {
      const all = await nodes();
      const leader = await cl.waitFor("one writable primary", () => leaderNow(all));
      const standby = all.find((n) => n.id !== leader.id)!;
      const flowing = performance.now();
      await cl.waitFor("writes before the loss", () =>
        Promise.resolve(writer!.acksAfter(flowing).length >= 20 ? true : undefined),
      );

      const at = await killHost(leader.host, [nodeNetNames(leader.id).ns]);
      const unreachable = cl.waitFor(
        `${leader.host} to be marked unreachable`,
        async () => ((await hostStatus(leader.host)) === "unreachable" ? performance.now() : undefined),
        60_000,
      );
      unreachable.catch(() => undefined); // awaited below, after the failover
      const loss = await awaitResumed("host loss", at);
      await withState(
        cl.waitFor(`${standby.id} to be the writable primary`, async () =>
          (await writable(standby)) === true ? true : undefined,
        ),
      );
      const unreachableAt = await unreachable;
      const [db] = await q<{ phase_reason: string }>("SELECT phase_reason FROM databases WHERE id = $1", [
        id,
      ]);
      console.log(`database's reason while the host is down: ${db?.phase_reason}`);
      await cl.waitFor(
        "the failover's event",
        async () => {
          const ev = await q(
            "SELECT 1 FROM events WHERE database_id = $1 AND type = 'database_leader_changed' AND type_data->>'new_leader' = $2",
            [id, standby.id],
          );
          return ev.length > 0 ? true : undefined;
        },
        30_000,
      );

      const restartedAt = performance.now();
      cl.fleet.startAgent(leader.host);
      down.delete(leader.host);
      await heartbeatSince(leader.host, new Date());
      await awaitRejoined(leader, standby);
      const rejoinedAt = performance.now();
      await withState(
        cl.waitFor(
          `every instance of ${leader.host} to run again (its gateway, its etcd member)`,
          async () => {
            const rows = await q(
              "SELECT 1 FROM instances i JOIN hosts h ON h.id = i.host_id WHERE h.name = $1 AND i.status <> 'running'",
              [leader.host],
            );
            return rows.length === 0 ? true : undefined;
          },
          120_000,
        ),
      );
      console.log(
        `timing: host down (${leader.id} on ${leader.host} -> ${standby.id}): session failed after ` +
          `${ms(loss.brokenAt - at)}, first write after ${ms(loss.resumedAt - at)}, host unreachable after ` +
          `${ms(unreachableAt - at)}; agent restarted: rejoined as a follower after ${ms(rejoinedAt - restartedAt)}`,
      );
    });

    it("network cut: the isolated leader demotes itself, the standby takes over, then it rejoins", async () => {
      const all = await nodes();
      const leader = await cl.waitFor("one writable primary", () => leaderNow(all));
      const standby = all.find((n) => n.id !== leader.id)!;
      await cl.waitFor("the standby to stream", async () =>
        (await streamsTo(leader, standby)) ? true : undefined,
      );
      const flowing = performance.now();
      await cl.waitFor("writes before the cut", () =>
        Promise.resolve(writer!.acksAfter(flowing).length >= 20 ? true : undefined),
      );

      const { ns } = nodeNetNames(leader.id);
      // Every link of the namespace: to the host (etcd, the agent) and to the database's
      // network (the standby, the gateways).
      const cutLinks = (await links(ns)).filter((l) => l.ifname !== "lo").map((l) => l.ifname);
      assert.ok(
        cutLinks.length >= 2,
        `the node has its host link and its database network link: ${cutLinks.join(", ")}`,
      );
      const at = performance.now();
      cut.add(ns);
      await inNs(ns, ["nft", "-f", "-"], CUT);
      // Both nodes polled side by side: the isolated leader must stop taking writes before the
      // standby takes any; never two writable primaries. (It then shuts down, which waits for
      // its WAL senders to give up on the unreachable standby, wal_sender_timeout, before it
      // runs read-only: the cut ends before that.)
      let lastWritableAt = at;
      let stoppedAt = 0;
      let promotedAt = 0;
      let loss: Loss;
      try {
        await withState(
          cl.waitFor(
            "the isolated leader to refuse writes and the standby to take them",
            async () => {
              const [o, s] = await Promise.all([writable(leader), writable(standby)]);
              const seen = performance.now();
              if (o === true) lastWritableAt = seen;
              else if (o !== null) stoppedAt ||= seen;
              if (s === true) promotedAt ||= seen;
              return stoppedAt && promotedAt ? true : undefined;
            },
            120_000,
          ),
        );
        loss = await awaitResumed("network cut", at);
      } finally {
        await uncut(ns);
      }
      const restoredAt = performance.now();
      assert.ok(
        lastWritableAt < promotedAt,
        `split brain: the isolated leader took writes ${ms(lastWritableAt - promotedAt)} after the standby's promotion`,
      );
      await awaitRejoined(leader, standby);
      console.log(
        `timing: network cut (${leader.id} -> ${standby.id}, links ${cutLinks.join(", ")}): isolated leader ` +
          `last writable after ${ms(lastWritableAt - at)}, refusing writes after ${ms(stoppedAt - at)}; standby ` +
          `writable after ${ms(promotedAt - at)}; session failed after ` +
          `${ms(loss.brokenAt - at)}, first write after ${ms(loss.resumedAt - at)}; cut ended: rejoined as a ` +
          `follower after ${ms(performance.now() - restoredAt)}`,
      );
    });

    it("keeps every acknowledged row within the asynchronous bound", async () => {
      assert.ok(writer, "the writer ran");
      await writer.stop();
      const { acks, failures } = writer;
      writer = null;
      const lost = await lostAcks(url, ca, "acked", acks);
      // What an asynchronous standby may miss: the seconds before each loss, and what the old
      // leader acknowledged until the writer's session to it failed.
      const windows = losses.map((l) => ({ from: l.at - WINDOW_MS, to: l.brokenAt }));
      const inWindow = (t: number) => windows.some((w) => t > w.from && t < w.to);
      const bound = acks.filter((a) => inWindow(a.at)).length;
      console.log(
        `data safety: ${acks.length} acknowledged, ${failures.length} failed inserts, ${lost.length} lost (bound ${bound}); ` +
          `failover (loss to first write): ${losses.map((l) => `${l.what} ${ms(l.resumedAt - l.at)}`).join(", ")}`,
      );
      assert.equal(losses.length, 2);
      assert.ok(acks.length > 200, `only ${acks.length} rows acknowledged`);
      assert.ok(lost.length <= bound, `${lost.length} acknowledged rows lost, more than the bound ${bound}`);
      assert.deepEqual(
        lost.filter((a) => !inWindow(a.at)).map((a) => a.n),
        [],
        "acknowledged rows lost outside the seconds before a loss",
      );
    });

    it("deletes the database leaving no namespace, veth or process", async () => {
      const all = await nodes();
      const instanceDirs = (
        await q<{ id: string; host: string }>(
          "SELECT i.id, h.name AS host FROM instances i JOIN hosts h ON h.id = i.host_id WHERE i.database_id = $1",
          [id],
        )
      ).map((i) => path.join(stateDirOf(i.host), "instances", i.id));
      const res = await cl.api("DELETE", `/v1/apps/${id}?current_name=${NAME}`);
      assert.equal(res.status, 204, JSON.stringify(res.json));
      await withState(
        cl.waitFor(
          "every instance to be gone",
          async () => {
            const rows = await q("SELECT 1 FROM instances WHERE database_id = $1", [id]);
            return rows.length === 0 ? true : undefined;
          },
          120_000,
        ),
      );
      const namespaces = await listNodeNetns();
      for (const n of all) {
        const names = nodeNetNames(n.id);
        assert.ok(!namespaces.includes(names.ns), `${n.id}'s namespace is gone`);
        assert.deepEqual(await links(null, names.hostIf), [], `${n.id}'s veth is gone`);
      }
      assert.ok(!(await listVpcs()).includes(vpcNames(id).ns), "the database's network is gone");
      for (const dir of instanceDirs)
        assert.deepEqual(await processesUnder(dir), [], `nothing runs in ${dir}`);
    });
  },
);
