// kill -9 of a host agent at the worst moments of a provisioning and of a delete: once
// restarted, each database converges exactly once (one postmaster, one gateway, no orphan
// process, port, directory or sandbox, no duplicate row). Every kill point is reached by
// waiting on something observable, and held there with SIGSTOP, never by a sleep.
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { startCluster, type Cluster } from "../support/cluster.ts";
import {
  addBallast,
  assertNothingLeft,
  assertHostMatchesStore,
  instanceDir,
  isAlive,
  holdTemplateInitdb,
  killNow,
  nodeDataDir,
  nodeWaitingForTemplate,
  pathExists,
  postmastersOf,
  processesUsing,
  removeHostResidue,
  runDirOf,
  signal,
  templateDirOf,
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
  settledIn,
} from "../support/crash-db.ts";

const HOST = "crash-agent-s1";

describe("kill -9 of a host agent", () => {
  let cl: Cluster;
  let site: HostSite;

  before(async () => {
    cl = await startCluster({ subnet: 61, hosts: [{ name: HOST, pool: "shared", az: "osc-fr1-a" }] });
    site = {
      db: cl.controller.deps.db,
      stateDir: path.join(cl.dataDir, "hosts", HOST),
      name: HOST,
      address: "127.61.0.1",
    };
  });
  after(async () => {
    if (!cl) return;
    await cl.close();
    await assertNothingLeft(cl.dataDir);
    await removeHostResidue(site.stateDir, HOST);
  });

  const agent = (): ChildProcess => {
    const p = cl.fleet.processOf(HOST);
    assert.ok(p?.pid, "the agent runs");
    return p;
  };
  const restartAgent = async () => {
    await killNow(agent());
    cl.fleet.startAgent(HOST);
  };
  let apps = 0;
  const addAddon = async () => {
    const app = `crash-agent-${++apps}`;
    return { id: await addStarter((m, p, b) => cl.api(m, p, b), app), app };
  };
  const answers = async (id: string) => assertAnswers(site.db, id, await cl.regionCa());

  it("during initdb: the restarted agent stops the leftover initdb and builds once", async () => {
    // The first node of a host waits for the host's template, made by initdb at agent start.
    const initdbPid = await holdTemplateInitdb(site, {
      kill: async () => killNow(agent()),
      start: () => {
        cl.fleet.startAgent(HOST);
        return agent();
      },
    });
    try {
      const { id } = await addAddon();
      await nodeWaitingForTemplate(site, site.db, id);
      await restartAgent();

      await waitUntil("the database to run", settledIn(site.db, id, "running"));
      assert.equal(await isAlive(initdbPid), false, "the leftover initdb is gone");
      assert.deepEqual(await processesUsing(templateDirOf(site)), [], "nothing runs in the template");
      await assertRunningOnce(site.db, id);
      await assertHostMatchesStore(site);
      await answers(id);
    } finally {
      signal(initdbPid, "SIGKILL");
    }
  });

  let second = "";
  let secondApp = "";

  it("between the node's start and its status report: the postmaster is adopted, not doubled", async () => {
    ({ id: second, app: secondApp } = await addAddon());
    const { node } = await waitUntil("placement", () => instancesOf(site.db, second), { intervalMs: 10 });
    const pidFile = path.join(nodeDataDir(site, node.id), "postmaster.pid");
    await waitUntil("the node's postmaster.pid", () => pathExists(pidFile), { intervalMs: 5 });
    const proc = agent();
    signal(proc.pid!, "SIGSTOP");
    try {
      const { rows } = await site.db.query("SELECT status FROM instances WHERE id = $1", [node.id]);
      assert.equal(rows[0].status, "booting", "frozen before its report");
    } finally {
      await killNow(proc); // SIGKILL ends a stopped process too
    }
    const [master] = await waitUntil("the postmaster", async () => {
      const found = await postmastersOf(nodeDataDir(site, node.id));
      return found.length ? found : undefined;
    });
    cl.fleet.startAgent(HOST);

    await waitUntil("the database to run", settledIn(site.db, second, "running"));
    assert.deepEqual(
      (await postmastersOf(nodeDataDir(site, node.id))).map((p) => p.pid),
      [master!.pid],
      "the same postmaster serves",
    );
    await assertRunningOnce(site.db, second);
    await assertHostMatchesStore(site);
    await answers(second);
  });

  it("during a delete: the restarted agent finishes it, nothing is left", async () => {
    const placed = await instancesOf(site.db, second);
    assert.ok(placed);
    const { node, gateway } = placed;
    const dataDir = nodeDataDir(site, node.id);
    const [master] = await postmastersOf(dataDir);
    assert.ok(master);
    const ballast = await addBallast(site, node.id);
    assert.equal((await cl.api("DELETE", `/v1/apps/${secondApp}/addons/${second}`)).status, 204);
    await waitNodeBeingRemoved(master.pid, ballast);
    const proc = agent();
    signal(proc.pid!, "SIGSTOP");
    try {
      assert.equal(await pathExists(ballast), true, "frozen while it removes the node's files");
    } finally {
      await killNow(proc);
    }
    cl.fleet.startAgent(HOST);

    await waitUntil("the deletion to finish", settledIn(site.db, second, "deleted"));
    await assertDeletedOnce(site.db, second);
    await assertHostMatchesStore(site);
    for (const dir of [instanceDir(site, node.id), instanceDir(site, gateway.id), runDirOf(site, node.id)]) {
      assert.equal(await pathExists(dir), false, `${dir} is removed`);
    }
  });
});
