// kill -9 of every host agent while a Business cluster is being bootstrapped: Patroni and
// etcd keep running (they are detached), and once the agents are back the cluster
// converges exactly once: two Patroni processes, one leader, four instances, and nothing
// left behind after it is deleted.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { isProcessAlive, processCommandLine } from "../../src/engines/postgresql/process-watch.ts";
import { startCluster, type Cluster } from "../support/cluster.ts";

const HOSTS = [
  { name: "crash-ha-s1", pool: "shared" as const, az: "osc-fr1-a" },
  { name: "crash-ha-s2", pool: "shared" as const, az: "osc-fr1-a" },
  { name: "crash-ha-s3", pool: "shared" as const, az: "osc-fr1-b" },
];

/** Live processes whose command line mentions `fragment` (a path of this test's data dir). */
async function processesMentioning(fragment: string): Promise<number[]> {
  const found: number[] = [];
  for (const name of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const argv = await processCommandLine(Number(name));
    if (argv?.some((a) => a.includes(fragment)) && (await isProcessAlive(Number(name))))
      found.push(Number(name));
  }
  return found;
}

describe("HA cluster: every agent killed -9 during its bootstrap", () => {
  let cl: Cluster;
  let addonId = "";

  before(async () => {
    cl = await startCluster({ subnet: 47, hosts: HOSTS });
    assert.equal((await cl.api("POST", "/v1/apps", { app: { name: "crash-ha-app" } })).status, 201);
  });
  after(async () => cl?.close());

  const nodeRows = async () =>
    (
      await cl.controller.deps.db.query<{ id: string; host: string; role: string; status: string }>(
        `SELECT i.id, h.name AS host, i.role, i.status FROM instances i JOIN hosts h ON h.id = i.host_id
         WHERE i.database_id = $1 AND i.kind = 'node' ORDER BY i.ordinal`,
        [addonId],
      )
    ).rows;
  const patroniConfig = (n: { id: string; host: string }) =>
    path.join(cl.dataDir, "hosts", n.host, "instances", n.id, "node", "patroni.json");

  it("converges once after the agents come back", async () => {
    const res = await cl.api("POST", "/v1/apps/crash-ha-app/addons", {
      addon: { addon_provider_id: "postgresql", plan_id: "postgresql-business-512" },
    });
    assert.equal(res.status, 201);
    addonId = res.json.addon.id;
    // The kill point: both nodes' Patroni started (their config is on disk and they run).
    await cl.waitFor(
      "both nodes' Patroni to run",
      async () => {
        const nodes = await nodeRows();
        if (nodes.length !== 2) return undefined;
        for (const n of nodes)
          if ((await processesMentioning(patroniConfig(n))).length !== 1) return undefined;
        return true;
      },
      180_000,
    );
    for (const h of HOSTS) cl.fleet.processOf(h.name)?.kill("SIGKILL");
    await cl.waitFor(
      "the agents to be gone",
      () => Promise.resolve(HOSTS.every((h) => cl.fleet.processOf(h.name) === undefined) ? true : undefined),
      10_000,
    );
    // Patroni and etcd do not depend on their agent.
    for (const n of await nodeRows()) assert.equal((await processesMentioning(patroniConfig(n))).length, 1);
    for (const h of HOSTS) cl.fleet.startAgent(h.name);
    await cl.waitFor(
      "the add-on to run",
      async () => {
        const addon = (await cl.api("GET", `/v1/apps/crash-ha-app/addons/${addonId}`)).json.addon;
        return addon.status === "running" ? true : undefined;
      },
      180_000,
    );
    const nodes = await nodeRows();
    assert.deepEqual(nodes.map((n) => n.role).sort(), ["follower", "leader"]);
    for (const n of nodes)
      assert.equal((await processesMentioning(patroniConfig(n))).length, 1, `one Patroni for ${n.id}`);
    const { rows } = await cl.controller.deps.db.query(
      "SELECT count(*)::int AS n FROM instances WHERE database_id = $1",
      [addonId],
    );
    assert.equal(rows[0].n, 4);
  });

  it("leaves no process or directory of the cluster once deleted", async () => {
    const nodes = await nodeRows();
    assert.equal((await cl.api("DELETE", `/v1/apps/crash-ha-app/addons/${addonId}`)).status, 204);
    await cl.waitFor(
      "the instances to be removed",
      async () => ((await nodeRows()).length === 0 ? true : undefined),
      90_000,
    );
    for (const n of nodes) {
      const dir = path.join(cl.dataDir, "hosts", n.host, "instances", n.id);
      assert.deepEqual(await processesMentioning(dir), []);
      await assert.rejects(fs.access(dir));
    }
  });
});
