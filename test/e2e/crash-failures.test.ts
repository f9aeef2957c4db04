// Failures the platform must heal from by itself: a node whose port another process holds
// fails with a clear reason and is retried with back-off until the port is free; a host
// that stops heartbeating is marked unreachable (and its databases say so) until it is back.
import assert from "node:assert/strict";
import net from "node:net";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { startCluster, type Cluster } from "../support/cluster.ts";
import {
  assertNothingLeft,
  assertHostMatchesStore,
  removeHostResidue,
  signal,
  waitUntil,
  type HostSite,
} from "../support/crash.ts";
import { addStarter, assertAnswers, assertRunningOnce, instancesOf, phaseOf } from "../support/crash-db.ts";

const HOST = "crash-fail-s1";
const ADDRESS = "127.63.0.1";

function listen(port: number, host: string): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer((s) => s.destroy());
    srv.once("error", reject);
    srv.listen(port, host, () => resolve(srv));
  });
}

describe("failures the platform heals from", () => {
  let cl: Cluster;
  let site: HostSite;
  let id = "";

  before(async () => {
    cl = await startCluster({ subnet: 63, hosts: [{ name: HOST, pool: "shared", az: "osc-fr1-a" }] });
    site = {
      db: cl.controller.deps.db,
      stateDir: path.join(cl.dataDir, "hosts", HOST),
      name: HOST,
      address: ADDRESS,
    };
  });
  after(async () => {
    if (!cl) return;
    await cl.close();
    await assertNothingLeft(cl.dataDir);
    await removeHostResidue(site.stateDir, HOST);
  });

  const api = (m: string, p: string, b?: unknown) => cl.api(m, p, b);
  /** The database as the database API shows it (with an add-on token, as clients do). */
  const viaDatabaseApi = async (app: string, addonId: string) => {
    const tok = await api("POST", `/v1/apps/${app}/addons/${addonId}/token`);
    assert.equal(tok.status, 200);
    const res = await fetch(`${cl.controller.url}/api/databases/${addonId}`, {
      headers: { authorization: `Bearer ${tok.json.addon.token}` },
    });
    assert.equal(res.status, 200);
    return ((await res.json()) as { database: { status: string; phase: string; phase_reason: string } })
      .database;
  };

  it("a node whose port is taken fails with a reason naming it, backs off, and heals once the port is free", async () => {
    // Ports are handed out lowest free first from 20000, the node before its gateway.
    const { rows: used } = await site.db.query(
      "SELECT port FROM instances i JOIN hosts h ON h.id = i.host_id WHERE h.name = $1",
      [HOST],
    );
    const taken = new Set(used.map((r) => r.port as number));
    let port = 20000;
    while (taken.has(port)) port++;
    const squatter = await listen(port, ADDRESS);
    const attempts = new Map<number, { at: number; nextS: number }>();
    let message = "";
    try {
      id = await addStarter(api, "crash-fail-1");
      const { node } = await waitUntil("placement", () => instancesOf(site.db, id), { intervalMs: 20 });
      assert.equal(node.port, port, "the node got the port the test holds");
      await waitUntil(
        "three failed attempts",
        async () => {
          const { rows } = await site.db.query("SELECT status, status_message FROM instances WHERE id = $1", [
            node.id,
          ]);
          const m = /\(attempt (\d+), next in (\d+) s\)$/.exec(rows[0].status_message);
          if (rows[0].status === "failed" && m) {
            message = rows[0].status_message;
            if (!attempts.has(Number(m[1])))
              attempts.set(Number(m[1]), { at: Date.now(), nextS: Number(m[2]) });
          }
          return attempts.has(3);
        },
        // Each attempt clones a data dir and waits for a start that fails: slow on a busy machine.
        { intervalMs: 50, timeoutMs: 90_000 },
      );
      assert.match(message, new RegExp(`${ADDRESS.replace(/\./g, "\\.")}:${port}.*already in use`));
      const db = await phaseOf(site.db, id);
      assert.equal(db.phase, "provisioning");
      assert.match(db.reason, new RegExp(`node ${node.id} on ${HOST}: failed: .*:${port}.*already in use`));
      const addon = await api("GET", `/v1/apps/crash-fail-1/addons/${id}`);
      assert.equal(addon.json.addon.status, "provisioning");
      const shown = await viaDatabaseApi("crash-fail-1", id);
      assert.equal(shown.status, "creating");
      assert.match(shown.phase_reason, new RegExp(`:${port}.*already in use`));
      // 1 s, then 2 s, then 4 s: not a retry on every heartbeat.
      assert.deepEqual(
        [1, 2, 3].map((n) => attempts.get(n)?.nextS),
        [1, 2, 4],
      );
      const first = attempts.get(1)!.at;
      assert.ok(
        attempts.get(3)!.at - first >= 2500,
        `attempts 1 to 3 took ${attempts.get(3)!.at - first} ms`,
      );
    } finally {
      await new Promise((resolve) => squatter.close(resolve));
    }
    const freed = Date.now();
    await waitUntil("the database to run, without anyone acting", async () =>
      (await phaseOf(site.db, id)).phase === "running" ? true : undefined,
    );
    assert.ok(Date.now() - freed < 15_000, `healed ${Date.now() - freed} ms after the port was freed`);
    const { rows } = await site.db.query("SELECT status_message FROM instances WHERE database_id = $1", [id]);
    assert.deepEqual(
      rows.map((r) => r.status_message),
      ["", ""],
      "the failure is forgotten",
    );
    await assertRunningOnce(site.db, id);
    await assertHostMatchesStore(site);
    await assertAnswers(site.db, id, await cl.regionCa());
  });

  it("a host that stops heartbeating is unreachable, its databases say so, and it comes back", async () => {
    const agent = cl.fleet.processOf(HOST);
    assert.ok(agent?.pid);
    const hostRow = async () =>
      (await site.db.query("SELECT status, status_reason FROM hosts WHERE name = $1", [HOST])).rows[0];
    signal(agent.pid, "SIGSTOP");
    try {
      await waitUntil("the host to be unreachable", async () => (await hostRow()).status === "unreachable", {
        timeoutMs: 20_000,
      });
      assert.match((await hostRow()).status_reason, /^no heartbeat since \d{4}-/);
      const reason = await waitUntil(
        "the database to name the lost host",
        async () => (await phaseOf(site.db, id)).reason || undefined,
        { timeoutMs: 10_000 },
      );
      assert.match(reason, new RegExp(`host ${HOST} is unreachable`));
      assert.equal((await phaseOf(site.db, id)).phase, "running", "its data plane may still serve");
      assert.match((await viaDatabaseApi("crash-fail-1", id)).phase_reason, /is unreachable/);
    } finally {
      signal(agent.pid, "SIGCONT");
    }
    await waitUntil("the host to be ready again", async () => (await hostRow()).status === "ready", {
      timeoutMs: 20_000,
    });
    await waitUntil(
      "the reason to clear",
      async () => {
        const db = await phaseOf(site.db, id);
        return db.phase === "running" && db.reason === "";
      },
      { timeoutMs: 10_000 },
    );
    await assertRunningOnce(site.db, id, { transitions: false });
    await assertHostMatchesStore(site);
  });
});
