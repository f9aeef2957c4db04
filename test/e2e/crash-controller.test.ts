// kill -9 of the controller (a process of its own here) at the worst moments of a
// provisioning and of a delete; started again on the same store and data dir, it finishes
// the work exactly once: no second set of instances, operations done, one postmaster.
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { startSplitCluster, type SplitCluster } from "../support/controller-process.ts";
import {
  addBallast,
  assertNothingLeft,
  assertHostMatchesStore,
  holdTemplateInitdb,
  instanceDir,
  killNow,
  nodeDataDir,
  nodeWaitingForTemplate,
  pathExists,
  postmastersOf,
  runDirOf,
  signal,
  waitNodeBeingRemoved,
  waitUntil,
  type HostSite,
} from "../support/crash.ts";
import {
  addStarter,
  assertAnswers,
  assertDeletedOnce,
  assertRunningOnce,
  instancesOf,
  phaseOf,
  settledIn,
} from "../support/crash-db.ts";

const HOST = "crash-ctl-s1";

describe("kill -9 of the controller", () => {
  let cl: SplitCluster;
  let site: HostSite;

  before(async () => {
    cl = await startSplitCluster({ subnet: 62, hosts: [{ name: HOST, pool: "shared", az: "osc-fr1-a" }] });
    site = { db: cl.db, stateDir: path.join(cl.dataDir, "hosts", HOST), name: HOST, address: "127.62.0.1" };
  });
  after(async () => {
    if (!cl) return;
    await cl.close();
    await assertNothingLeft(cl.dataDir);
  });

  const api = (m: string, p: string, b?: unknown) => cl.api(m, p, b);
  const agent = () => {
    const p = cl.fleet.processOf(HOST);
    assert.ok(p?.pid, "the agent runs");
    return p;
  };

  it("during initdb: the restarted controller finishes the provisioning once", async () => {
    const initdbPid = await holdTemplateInitdb(site, {
      kill: async () => killNow(agent()),
      start: () => {
        cl.fleet.startAgent(HOST);
        return agent();
      },
    });
    let id = "";
    try {
      id = await addStarter(api, "crash-ctl-1");
      await nodeWaitingForTemplate(site, cl.db, id);
      await cl.controller.kill();
    } finally {
      signal(initdbPid, "SIGCONT");
    }
    // The agent goes on alone: initdb, node, gateway; its reports wait for a controller.
    await cl.controller.start();
    await waitUntil("the database to run", settledIn(cl.db, id, "running"));
    await assertRunningOnce(cl.db, id);
    await assertHostMatchesStore(site);
    await assertAnswers(cl.db, id, await cl.regionCa());
  });

  let second = "";

  it("between the node's start and the status write: the claim is taken over, running written once", async () => {
    second = await addStarter(api, "crash-ctl-2");
    await waitUntil("placement", () => instancesOf(cl.db, second), { intervalMs: 10 });
    // A lock on the database row holds the controller just before it writes the status.
    const locker = new pg.Client(cl.db.pool.options);
    await locker.connect();
    try {
      await locker.query("BEGIN");
      await locker.query("SELECT id FROM databases WHERE id = $1 FOR UPDATE", [second]);
      await waitUntil("the node and gateway to run, and the controller to wait on the row", async () => {
        const { rows } = await cl.db.query(
          `SELECT (SELECT count(*)::int FROM instances WHERE database_id = $1 AND status = 'running') AS running,
                  (SELECT count(*)::int FROM reconcile_queue WHERE database_id = $1 AND locked_until > now()) AS claimed,
                  (SELECT count(*)::int FROM pg_stat_activity
                    WHERE datname = current_database() AND wait_event_type = 'Lock') AS waiting`,
          [second],
        );
        return rows[0].running === 2 && rows[0].claimed === 1 && rows[0].waiting > 0;
      });
      assert.equal((await phaseOf(cl.db, second)).phase, "provisioning");
      await cl.controller.kill();
    } finally {
      await locker.query("ROLLBACK").catch(() => undefined);
      await locker.end();
    }
    await cl.controller.start();
    await waitUntil("the database to run", settledIn(cl.db, second, "running"), { timeoutMs: 40_000 });
    await assertRunningOnce(cl.db, second);
    await assertHostMatchesStore(site);
    await assertAnswers(cl.db, second, await cl.regionCa());
  });

  it("during a delete: the restarted controller finishes it, nothing is left", async () => {
    const placed = await instancesOf(cl.db, second);
    assert.ok(placed);
    const { node, gateway } = placed;
    const dataDir = nodeDataDir(site, node.id);
    const [master] = await postmastersOf(dataDir);
    assert.ok(master);
    const ballast = await addBallast(site, node.id);
    assert.equal((await api("DELETE", `/v1/apps/crash-ctl-2/addons/${second}`)).status, 204);
    await waitNodeBeingRemoved(master.pid, ballast);
    await cl.controller.kill();
    assert.equal(await pathExists(ballast), true, "killed while the agent removes the node's files");
    await cl.controller.start();
    await waitUntil("the deletion to finish", settledIn(cl.db, second, "deleted"), { timeoutMs: 40_000 });
    await assertDeletedOnce(cl.db, second);
    await assertHostMatchesStore(site);
    for (const dir of [instanceDir(site, node.id), instanceDir(site, gateway.id), runDirOf(site, node.id)]) {
      assert.equal(await pathExists(dir), false, `${dir} is removed`);
    }
  });
});
