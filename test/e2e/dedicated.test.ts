// A Dedicated Resources Starter database on an emulated dedicated host: its own host, TLS
// required, pinned CPUs and the plan's memory, and plaintext refused.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { connectVerified, startCluster, type Cluster } from "../support/cluster.ts";

describe("Dedicated Starter database, end to end", () => {
  let cl: Cluster;
  let dbId = "";
  let url = "";

  before(async () => {
    cl = await startCluster({
      subnet: 42,
      hosts: [
        { name: "e2e-ded-shared", pool: "shared", az: "osc-fr1-a" },
        { name: "e2e-ded-d1", pool: "dedicated", az: "osc-fr1-b" },
      ],
    });
  });
  after(async () => cl?.close());

  it("provisions on a dedicated host, with sslmode=require in its URL", async () => {
    const res = await cl.api("POST", "/v1/databases", {
      database: { name: "ledger-prod", technology: "postgresql-ng", plan: "postgresql-dr-starter-4096" },
    });
    assert.equal(res.status, 201, JSON.stringify(res.json));
    dbId = res.json.database.id;
    url = await cl.waitFor("the database to run and publish its URL", async () => {
      const vars = (await cl.api("GET", "/v1/apps/ledger-prod/variables")).json.variables as any[];
      return vars.find((v) => v.name === "SCALINGO_POSTGRESQL_URL")?.value as string | undefined;
    });
    // Its own public address (docs/networking.md), on the dedicated host (below).
    assert.match(url, /@198\.19\.42\.\d+:5432\/.*\?sslmode=require$/, "the database's public endpoint");
    const { rows } = await cl.controller.deps.db.query(
      "SELECT h.name FROM instances i JOIN hosts h ON h.id = i.host_id WHERE i.database_id = $1",
      [dbId],
    );
    assert.deepEqual(rows.map((r) => r.name).sort(), ["e2e-ded-d1", "e2e-ded-d1"]);
  });

  it("answers verify-full TLS and refuses plaintext (Force TLS by default)", async () => {
    const client = await connectVerified(url, await cl.regionCa());
    await client.query("SELECT 1");
    await client.end();
    const u = new URL(url);
    const plain = new pg.Client({
      host: u.hostname,
      port: Number(u.port),
      user: u.username,
      password: decodeURIComponent(u.password),
      database: u.pathname.slice(1),
      ssl: false,
    });
    // Closed by the gateway (first bytes not an SSLRequest), else refused by pg_hba.
    await assert.rejects(plain.connect(), /no encryption|pg_hba|terminated unexpectedly/);
    await plain.end().catch(() => undefined);
  });

  it("runs with the plan's memory limit and pinned CPUs", async () => {
    const dir = path.join(cl.dataDir, "hosts", "e2e-ded-d1", "instances");
    let pid: number | null = null;
    let id = "";
    for (const entry of await fs.readdir(dir)) {
      const text = await fs
        .readFile(path.join(dir, entry, "node", "pgdata", "postmaster.pid"), "utf8")
        .catch(() => null);
      if (text) [pid, id] = [Number(text.split("\n")[0]), entry];
    }
    assert.ok(pid, "a postmaster runs on the dedicated host");
    const cgroups = await fs.readFile(`/proc/${pid}/cgroup`, "utf8");
    const memory = cgroups
      .split("\n")
      .find((l) => /:memory:/.test(l))!
      .split(":")[2]!;
    assert.ok(memory.includes(`cellar-${id}`));
    const limit = Number(
      await fs.readFile(path.join("/sys/fs/cgroup/memory", memory, "memory.limit_in_bytes"), "utf8"),
    );
    assert.equal(limit, 4096 * 1024 * 1024);
    const status = await fs.readFile(`/proc/${pid}/status`, "utf8");
    assert.match(status, /Cpus_allowed_list:\s+0\n/, "pinned to one CPU (the plan's 1 vCPU)");
  });

  it("is destroyed through its app-shaped address, as the reference does", async () => {
    const res = await cl.api("DELETE", `/v1/apps/${dbId}?current_name=ledger-prod`);
    assert.equal(res.status, 204, JSON.stringify(res.json));
    await cl.waitFor("the database to be deleted", async () => {
      const { rows } = await cl.controller.deps.db.query("SELECT phase FROM databases WHERE id = $1", [dbId]);
      return rows[0].phase === "deleted" ? true : undefined;
    });
    assert.deepEqual(await fs.readdir(path.join(cl.dataDir, "hosts", "e2e-ded-d1", "instances")), []);
  });
});
