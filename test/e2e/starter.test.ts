// A newcomer's journey against real agents, PostgreSQL and HAProxy: add a Starter add-on,
// connect with verify-full through the gateway, change its plan, remove it.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { connectVerified, startCluster, type Cluster } from "../support/cluster.ts";

describe("Starter PostgreSQL add-on, end to end", () => {
  let cl: Cluster;
  let addonId = "";
  let url = "";

  before(async () => {
    cl = await startCluster({
      subnet: 41,
      hosts: [{ name: "e2e-starter-s1", pool: "shared", az: "osc-fr1-a" }],
    });
    assert.equal((await cl.api("POST", "/v1/apps", { app: { name: "journey-app" } })).status, 201);
  });
  after(async () => cl?.close());

  const addon = async () => (await cl.api("GET", `/v1/apps/journey-app/addons/${addonId}`)).json.addon;
  const variable = async (name: string) =>
    (await cl.api("GET", "/v1/apps/journey-app/variables")).json.variables.find((v: any) => v.name === name)
      ?.value;

  it("provisions a real database, running only once it answers over TLS", async () => {
    const res = await cl.api("POST", "/v1/apps/journey-app/addons", {
      addon: { addon_provider_id: "postgresql", plan_id: "postgresql-starter-512" },
    });
    assert.equal(res.status, 201);
    addonId = res.json.addon.id;
    assert.equal(res.json.addon.status, "provisioning");
    await cl.waitFor("the add-on to run", async () =>
      (await addon()).status === "running" ? true : undefined,
    );
    url = await variable("SCALINGO_POSTGRESQL_URL");
    assert.match(
      url,
      /^postgresql:\/\/[a-z_0-9]+:[A-Za-z0-9_]{64}@127\.41\.0\.1:\d+\/[a-z_0-9]+\?sslmode=prefer$/,
    );
    assert.equal(await variable("DATABASE_URL"), url);
  });

  it("accepts verify-full TLS 1.3 with the region CA, through the gateway, with the plan's settings", async () => {
    const client = await connectVerified(url, await cl.regionCa());
    try {
      const ssl = await client.query("SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
      assert.equal(ssl.rows[0].version, "TLSv1.3");
      assert.equal((await client.query("SHOW max_connections")).rows[0].max_connections, "33");
      await client.query("CREATE TABLE journey (id int primary key, note text)");
      await client.query("INSERT INTO journey VALUES (1, 'kept across plan changes')");
    } finally {
      await client.end();
    }
    // psql too, as a newcomer would.
    const out = execFileSync("psql", [
      `${url.split("?")[0]}?sslmode=verify-full&sslrootcert=${path.join(cl.dataDir, "pki/osc-fr1/ca.crt")}`,
      "-tAc",
      "SELECT note FROM journey",
    ]);
    assert.equal(out.toString().trim(), "kept across plan changes");
  });

  it("runs PostgreSQL inside its sandbox, with the plan's memory limit and CPU quota", async () => {
    const dir = path.join(cl.dataDir, "hosts", "e2e-starter-s1", "instances");
    const nodes = [];
    for (const id of await fs.readdir(dir)) {
      const pidFile = path.join(dir, id, "node", "pgdata", "postmaster.pid");
      const pid = await fs.readFile(pidFile, "utf8").then(
        (t) => Number(t.split("\n")[0]),
        () => null,
      );
      if (pid) nodes.push({ id, pid });
    }
    assert.equal(nodes.length, 1);
    const cgroups = await fs.readFile(`/proc/${nodes[0]!.pid}/cgroup`, "utf8");
    const memory = cgroups.split("\n").find((l) => /:memory:/.test(l));
    assert.ok(memory?.includes(`cellar-${nodes[0]!.id}`), `postmaster memory cgroup: ${memory}`);
    const limit = await fs.readFile(
      path.join("/sys/fs/cgroup/memory", memory!.split(":")[2]!, "memory.limit_in_bytes"),
      "utf8",
    );
    assert.equal(Number(limit), 512 * 1024 * 1024);
    // The node was set up with spare CPU; once it runs, the plan's 0.25 vCPU applies.
    const cpu = cgroups.split("\n").find((l) => /:cpu,cpuacct:|:cpu:/.test(l));
    const cpuDir = path.join("/sys/fs/cgroup/cpu", cpu!.split(":")[2]!);
    const quota = Number(await fs.readFile(path.join(cpuDir, "cpu.cfs_quota_us"), "utf8"));
    const period = Number(await fs.readFile(path.join(cpuDir, "cpu.cfs_period_us"), "utf8"));
    assert.equal(quota / period, 0.25);
  });

  it("rejects a wrong password", async () => {
    const wrong = url.replace(/:[A-Za-z0-9_]{64}@/, ":not-the-password@");
    await assert.rejects(connectVerified(wrong, await cl.regionCa()), /password authentication failed/);
  });

  it("changes the plan: data kept, URL unchanged, new settings applied", async () => {
    const res = await cl.api("PATCH", `/v1/apps/journey-app/addons/${addonId}`, {
      addon: { plan_id: "postgresql-starter-1024" },
    });
    assert.equal(res.status, 200);
    await cl.waitFor("the plan change to finish", async () => {
      const { rows } = await cl.controller.deps.db.query(
        "SELECT phase, observed_generation = generation AS done FROM databases WHERE id = $1",
        [addonId],
      );
      return rows[0].phase === "running" && rows[0].done ? true : undefined;
    });
    assert.equal(await variable("SCALINGO_POSTGRESQL_URL"), url);
    const client = await connectVerified(url, await cl.regionCa());
    try {
      assert.equal((await client.query("SHOW max_connections")).rows[0].max_connections, "63");
      assert.equal((await client.query("SELECT note FROM journey")).rows[0].note, "kept across plan changes");
    } finally {
      await client.end();
    }
  });

  it("removes it: processes stopped, data removed, connections refused", async () => {
    const instanceDir = path.join(cl.dataDir, "hosts", "e2e-starter-s1", "instances");
    assert.ok((await fs.readdir(instanceDir)).length > 0);
    assert.equal((await cl.api("DELETE", `/v1/apps/journey-app/addons/${addonId}`)).status, 204);
    await cl.waitFor("the add-on to be deleted", async () => {
      const { rows } = await cl.controller.deps.db.query("SELECT phase FROM databases WHERE id = $1", [
        addonId,
      ]);
      return rows[0].phase === "deleted" ? true : undefined;
    });
    assert.deepEqual(await fs.readdir(instanceDir), []);
    await assert.rejects(connectVerified(url, await cl.regionCa()), /ECONNREFUSED/);
    assert.equal(await variable("SCALINGO_POSTGRESQL_URL"), undefined);
  });
});
