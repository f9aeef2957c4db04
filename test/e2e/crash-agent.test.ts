// kill -9 of a host agent at the worst moments of a provisioning and of a delete: once
// restarted, each database converges exactly once (one postmaster, one gateway, no orphan
// process, port, directory or sandbox, no duplicate row). Every kill point is reached by
// waiting on something observable, and held there with SIGSTOP, never by a sleep.
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { HostLayout } from "../../src/engines/postgresql/host-layout.ts";
import { connectVerified, startCluster, type Cluster } from "../support/cluster.ts";
import {
  assertDeletedOnce,
  assertHostMatchesStore,
  assertRunningOnce,
  instanceDir,
  instancesOf,
  isAlive,
  killNow,
  nodeDataDir,
  pathExists,
  phaseOf,
  postmastersOf,
  processesUsing,
  runDirOf,
  signal,
  waitUntil,
  type HostSite,
} from "../support/crash.ts";

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
  after(async () => cl?.close());

  const agent = (): ChildProcess => {
    const p = cl.fleet.processOf(HOST);
    assert.ok(p?.pid, "the agent runs");
    return p;
  };
  const restartAgent = async () => {
    await killNow(agent());
    cl.fleet.startAgent(HOST);
  };
  // One app per database: an app keeps the DATABASE_URL of its first PostgreSQL add-on.
  let apps = 0;
  const addAddon = async (): Promise<{ id: string; app: string }> => {
    const app = `crash-agent-${++apps}`;
    assert.equal((await cl.api("POST", "/v1/apps", { app: { name: app } })).status, 201);
    const res = await cl.api("POST", `/v1/apps/${app}/addons`, {
      addon: { addon_provider_id: "postgresql", plan_id: "postgresql-starter-512" },
    });
    assert.equal(res.status, 201);
    return { id: res.json.addon.id, app };
  };
  const phaseIs = (id: string, phase: string) => async () => (await phaseOf(site.db, id)).phase === phase;
  const answers = async (id: string) => {
    const { rows } = await site.db.query(
      "SELECT value FROM variables WHERE database_id = $1 AND name = 'DATABASE_URL'",
      [id],
    );
    const client = await connectVerified(rows[0].value, await cl.regionCa());
    try {
      assert.equal((await client.query("SELECT 1 AS one")).rows[0].one, 1);
    } finally {
      await client.end();
    }
  };

  it("during initdb: the restarted agent stops the leftover initdb and builds once", async () => {
    // The first node of a host waits for the host's template, made by initdb at agent start.
    const template = new HostLayout(site.stateDir).templateDir();
    const building = path.join(template, "pgdata.init");
    await waitUntil("the first template", async () => {
      const built = await pathExists(path.join(template, "pgdata", "global", "pg_control"));
      return built && (await processesUsing(template)).length === 0;
    });
    await killNow(agent());
    await fs.rm(template, { recursive: true, force: true });
    cl.fleet.startAgent(HOST);
    const fresh = agent();
    let initdbPid = 0;
    try {
      const initdb = await waitUntil(
        "the template's initdb",
        async () =>
          (await processesUsing(building)).find(
            (p) => p.argv[0]?.endsWith("/initdb") && p.ppid === fresh.pid,
          ),
        { intervalMs: 5, timeoutMs: 30_000 },
      );
      initdbPid = initdb.pid;
      // Held mid-way: as if initdb were still running when the agent comes back.
      signal(initdbPid, "SIGSTOP");
      const { id } = await addAddon();
      const { node } = await waitUntil("placement", () => instancesOf(site.db, id), { intervalMs: 10 });
      await waitUntil("the agent to work on the node", () => pathExists(instanceDir(site, node.id)), {
        intervalMs: 10,
      });
      assert.equal(await pathExists(nodeDataDir(site, node.id)), false, "the node waits for the template");
      assert.equal(await pathExists(building), true);
      await restartAgent();

      await waitUntil("the database to run", phaseIs(id, "running"));
      assert.equal(await isAlive(initdbPid), false, "the leftover initdb is gone");
      assert.deepEqual(await processesUsing(template), [], "nothing runs in the template");
      await assertRunningOnce(site.db, id);
      await assertHostMatchesStore(site);
      await answers(id);
    } finally {
      if (initdbPid) signal(initdbPid, "SIGKILL");
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

    await waitUntil("the database to run", phaseIs(second, "running"));
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
    // A stopped postmaster holds the agent in `pg_ctl stop` until it is let go.
    signal(master.pid, "SIGSTOP");
    try {
      assert.equal((await cl.api("DELETE", `/v1/apps/${secondApp}/addons/${second}`)).status, 204);
      await waitUntil(
        "the agent to stop the node",
        async () =>
          (await processesUsing(dataDir)).some(
            (p) => p.argv[0]?.endsWith("/pg_ctl") && p.argv.includes("stop"),
          ),
        { intervalMs: 10 },
      );
      await killNow(agent());
    } finally {
      signal(master.pid, "SIGCONT");
    }
    cl.fleet.startAgent(HOST);

    await waitUntil("the deletion to finish", phaseIs(second, "deleted"));
    await assertDeletedOnce(site.db, second);
    await assertHostMatchesStore(site);
    for (const dir of [instanceDir(site, node.id), instanceDir(site, gateway.id), runDirOf(site, node.id)]) {
      assert.equal(await pathExists(dir), false, `${dir} is removed`);
    }
  });
});
