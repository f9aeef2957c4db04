// Logical backups end to end, against real agents and PostgreSQL: a manual backup of a
// Starter add-on is dumped by its host's agent, becomes done with its size, is downloaded
// through its signed link as <name>.tar.gz, and pg_restore of its dump into a fresh
// PostgreSQL recreates the data exactly. An agent killed mid-dump: the backup is retried
// and done. A Business cluster is dumped from its standby.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import pg from "pg";
import { LocalCluster } from "../../src/engines/postgresql/local-cluster.ts";
import { connectVerified, freePort, startCluster, type Cluster } from "../support/cluster.ts";
import { scratchDir } from "../engines/engine-fixtures.ts";
import { killNow } from "../support/crash.ts";
import { startSplitCluster, type SplitCluster } from "../support/controller-process.ts";
import { addStarter } from "../support/crash-db.ts";
import { shortRunDir } from "../../src/main/agent-main.ts";

const run = promisify(execFile);

const CONTENT_SQL = `SELECT id, note, amount::text, tags, made_at FROM ledger ORDER BY id`;

describe("logical backups, end to end", () => {
  let cl: Cluster;
  let scratch = "";
  let fresh: LocalCluster | undefined;
  let addonId = "";
  let url = "";
  let ca = "";

  before(async () => {
    // Three hosts: a Business cluster needs two nodes in one AZ and the region's etcd (three members).
    cl = await startCluster({
      subnet: 73,
      hosts: [
        { name: "e2e-lb-s1", pool: "shared", az: "osc-fr1-a" },
        { name: "e2e-lb-s2", pool: "shared", az: "osc-fr1-a" },
        { name: "e2e-lb-s3", pool: "shared", az: "osc-fr1-b" },
      ],
    });
    ca = await cl.regionCa();
    scratch = await scratchDir("logical-e2e");
    assert.equal((await cl.api("POST", "/v1/apps", { app: { name: "dump-app" } })).status, 201);
  });
  after(async () => {
    await fresh?.destroy().catch(() => undefined);
    await cl?.close();
    if (scratch) await fs.rm(scratch, { recursive: true, force: true });
  });

  const dbApi = async (method: string, p: string, body?: unknown, app = "dump-app", id = addonId) => {
    const tok = await cl.api("POST", `/v1/apps/${app}/addons/${id}/token`);
    assert.equal(tok.status, 200, JSON.stringify(tok.json));
    const res = await fetch(`${cl.controller.url}/api${p}`, {
      method,
      headers: { authorization: `Bearer ${tok.json.addon.token}`, "content-type": "application/json" },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null };
  };
  const source = async <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => {
    const c = await connectVerified(url, ca);
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  };

  it("dumps a manual backup of a running Starter add-on: done, with its size and an event", async () => {
    const res = await cl.api("POST", "/v1/apps/dump-app/addons", {
      addon: { addon_provider_id: "postgresql", plan_id: "postgresql-starter-512" },
    });
    assert.equal(res.status, 201);
    addonId = res.json.addon.id;
    url = await cl.waitFor("the add-on to run", async () => {
      const vars = (await cl.api("GET", "/v1/apps/dump-app/variables")).json.variables as any[];
      return vars.find((v) => v.name === "SCALINGO_POSTGRESQL_URL")?.value as string | undefined;
    });
    await source(async (c) => {
      await c.query(`CREATE TABLE ledger (id serial PRIMARY KEY, note text NOT NULL, amount numeric(12,2),
                       tags text[], made_at timestamptz DEFAULT '2026-01-31T12:00:00Z')`);
      await c.query(`INSERT INTO ledger (note, amount, tags)
                     SELECT 'row ' || g, g * 1.25, ARRAY['t' || (g % 3)] FROM generate_series(1, 500) g`);
      await c.query("INSERT INTO ledger (note, amount, tags) VALUES ('quote '' and ünïcødé', NULL, '{}')");
      await c.query("CREATE INDEX ledger_note ON ledger (note)");
    });
    const post = await dbApi("POST", `/databases/${addonId}/backups`);
    assert.equal(post.status, 201, JSON.stringify(post.json));
    const id = post.json.database_backup.id as string;
    const done = await cl.waitFor(
      "the backup to be done",
      async () => {
        const b = (await dbApi("GET", `/databases/${addonId}/backups/${id}`)).json.database_backup;
        if (b.status === "error") throw new Error(`backup failed: ${b.error}`);
        return b.status === "done" ? b : undefined;
      },
      120_000,
    );
    assert.ok(done.size > 1000, `a real archive (${done.size} bytes)`);
    assert.ok(done.started_at && done.finished_at);
    const events = (await cl.api("GET", "/v1/apps/dump-app/events")).json.events as any[];
    const ok = events.filter((e) => e.type === "database_backup_succeeded" && e.type_data.backup_id === id);
    assert.equal(ok.length, 1);
    assert.equal(ok[0].type_data.backup_method, "manual");
    // Only the finished archive lies in the database's directory: no partial or work files.
    const dir = path.join(cl.dataDir, "backups", "osc-fr1", "logical", addonId);
    assert.deepEqual(await fs.readdir(dir), [`${id}.tar.gz`]);
  });

  it("downloads it through its signed link, and pg_restore recreates the data in a fresh PostgreSQL", async () => {
    const list = (await dbApi("GET", `/databases/${addonId}/backups`)).json.database_backups as any[];
    const b = list[0];
    const link = await dbApi("GET", `/databases/${addonId}/backups/${b.id}/archive`);
    assert.equal(link.status, 200);
    const res = await fetch(link.json.download_url);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-disposition"), `attachment; filename="${b.name}.tar.gz"`);
    const archive = path.join(scratch, `${b.name}.tar.gz`);
    await fs.writeFile(archive, Buffer.from(await res.arrayBuffer()));
    assert.equal((await fs.stat(archive)).size, b.size);
    const { stdout } = await run("tar", ["-tzf", archive]);
    assert.deepEqual(stdout.trim().split("\n"), [`${b.name}.pgsql`]);
    await run("tar", ["-xzf", archive, "-C", scratch]);

    fresh = new LocalCluster({ baseDir: path.join(scratch, "fresh"), port: await freePort() });
    await fresh.ensureInitialised();
    await fresh.start();
    const admin = new pg.Client(fresh.connectionConfig());
    await admin.connect();
    await admin.query("CREATE DATABASE restored");
    await admin.end();
    // The reference's restore instructions, as a customer runs them.
    await run("runuser", [
      "-u",
      "postgres",
      "--",
      "/usr/lib/postgresql/15/bin/pg_restore",
      "--clean",
      "--if-exists",
      "--no-owner",
      "--no-privileges",
      "--no-comments",
      "-h",
      fresh.socketDir,
      "-p",
      String(fresh.port),
      "-d",
      "restored",
      path.join(scratch, `${b.name}.pgsql`),
    ]);
    const restored = new pg.Client(fresh.connectionConfig("restored"));
    await restored.connect();
    try {
      const want = await source(async (c) => (await c.query(CONTENT_SQL)).rows);
      const got = (await restored.query(CONTENT_SQL)).rows;
      assert.equal(got.length, 501);
      assert.deepEqual(got, want);
      const idx = await restored.query("SELECT 1 FROM pg_indexes WHERE indexname = 'ledger_note'");
      assert.equal(idx.rowCount, 1, "indexes come back too");
      const seq = await restored.query("SELECT nextval('ledger_id_seq')::int AS n");
      assert.equal(seq.rows[0].n, 502, "the sequence goes on where it was");
    } finally {
      await restored.end();
    }
  });

  it("retries a dump whose agent was killed mid-way: never left running, no partial file served", async () => {
    await source(async (c) => {
      await c.query("CREATE TABLE bulk (id int PRIMARY KEY, payload text)");
      await c.query("INSERT INTO bulk SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 250000) g");
    });
    const post = await dbApi("POST", `/databases/${addonId}/backups`);
    assert.equal(post.status, 201, JSON.stringify(post.json));
    const id = post.json.database_backup.id as string;
    const { rows } = await cl.controller.deps.db.query(
      `SELECT h.name FROM instances i JOIN hosts h ON h.id = i.host_id WHERE i.database_id = $1 AND i.kind = 'node'`,
      [addonId],
    );
    const host = rows[0].name as string;
    const dir = path.join(cl.dataDir, "backups", "osc-fr1", "logical", addonId);
    // The dump is under way once its work directory holds the dump file.
    await cl.waitFor("the dump to be writing", async () => {
      const names = await fs.readdir(path.join(dir, `${id}.tar.gz.work`)).catch(() => []);
      return names.length > 0 ? true : undefined;
    });
    await killNow(cl.fleet.processOf(host)!);
    // pg_dump dies with its agent: nothing is left writing the files of this backup.
    await cl.waitFor("pg_dump to be gone", async () => {
      const { stdout } = await run("ps", ["-eo", "args"]);
      return stdout.includes(`${id}.tar.gz.work`) ? undefined : true;
    });
    const during = (await dbApi("GET", `/databases/${addonId}/backups/${id}`)).json.database_backup;
    assert.equal(during.status, "running", "its lease has not lapsed yet");
    const link = await dbApi("GET", `/databases/${addonId}/backups/${id}/archive`);
    assert.equal(link.status, 409, "a backup that is not done is not served");
    cl.fleet.startAgent(host);
    const done = await cl.waitFor(
      "the backup to be retried and done",
      async () => {
        const b = (await dbApi("GET", `/databases/${addonId}/backups/${id}`)).json.database_backup;
        if (b.status === "error") throw new Error(`backup failed: ${b.error}`);
        return b.status === "done" ? b : undefined;
      },
      180_000,
    );
    const row = (await cl.controller.deps.db.query("SELECT attempt FROM logical_backups WHERE id = $1", [id]))
      .rows[0];
    assert.equal(row.attempt, 2);
    const files = (await fs.readdir(dir)).filter((n) => n.startsWith(id));
    assert.deepEqual(files, [`${id}.tar.gz`]);
    assert.equal((await fs.stat(path.join(dir, `${id}.tar.gz`))).size, done.size);
    const { stdout } = await run("tar", ["-tzf", path.join(dir, `${id}.tar.gz`)]);
    assert.equal(stdout.trim(), `${done.name}.pgsql`);
  });

  it("takes a Business cluster's backup from its standby", async () => {
    assert.equal((await cl.api("POST", "/v1/apps", { app: { name: "dump-ha-app" } })).status, 201);
    const res = await cl.api("POST", "/v1/apps/dump-ha-app/addons", {
      addon: { addon_provider_id: "postgresql", plan_id: "postgresql-business-512" },
    });
    assert.equal(res.status, 201, JSON.stringify(res.json));
    const haId = res.json.addon.id as string;
    const haUrl = await cl.waitFor(
      "the Business add-on to run",
      async () => {
        const vars = (await cl.api("GET", "/v1/apps/dump-ha-app/variables")).json.variables as any[];
        return vars.find((v) => v.name === "SCALINGO_POSTGRESQL_URL")?.value as string | undefined;
      },
      240_000,
    );
    const c = await connectVerified(haUrl, ca);
    try {
      await c.query("CREATE TABLE ledger (id serial PRIMARY KEY, note text NOT NULL)");
      await c.query("INSERT INTO ledger (note) SELECT 'ha ' || g FROM generate_series(1, 100) g");
    } finally {
      await c.end();
    }
    // The standby has replayed the rows (asynchronous replication) before the backup is asked.
    const follower = await cl.waitFor(
      "a follower with the rows",
      async () => {
        const { rows } = await cl.controller.deps.db.query(
          `SELECT i.id, i.port, h.name AS host, cr.dbname FROM instances i JOIN hosts h ON h.id = i.host_id
           JOIN database_credentials cr ON cr.database_id = i.database_id
           WHERE i.database_id = $1 AND i.kind = 'node' AND i.role = 'follower' AND i.status = 'running'`,
          [haId],
        );
        const f = rows[0];
        if (!f) return undefined;
        const socketDir = path.join(
          shortRunDir(path.join(cl.dataDir, "hosts", f.host)),
          f.id.replace(/^inst-/, ""),
        );
        const standby = new pg.Client({
          host: socketDir,
          port: f.port,
          user: "postgres",
          database: f.dbname,
        });
        await standby.connect();
        try {
          const n = (await standby.query("SELECT count(*)::int AS n FROM ledger")).rows[0].n as number;
          return n === 100 ? (f.id as string) : undefined;
        } finally {
          await standby.end();
        }
      },
      120_000,
    );
    const post = await dbApi("POST", `/databases/${haId}/backups`, undefined, "dump-ha-app", haId);
    assert.equal(post.status, 201, JSON.stringify(post.json));
    const id = post.json.database_backup.id as string;
    await cl.waitFor(
      "the Business backup to be done",
      async () => {
        const b = (await dbApi("GET", `/databases/${haId}/backups/${id}`, undefined, "dump-ha-app", haId))
          .json.database_backup;
        if (b.status === "error") throw new Error(`backup failed: ${b.error}`);
        return b.status === "done" ? b : undefined;
      },
      120_000,
    );
    const { rows } = await cl.controller.deps.db.query(
      "SELECT instance_id, source_role, file_path, name FROM logical_backups WHERE id = $1",
      [id],
    );
    assert.deepEqual([rows[0].instance_id, rows[0].source_role], [follower, "follower"]);
    await run("tar", ["-xzf", rows[0].file_path, "-C", scratch]);
    const { stdout } = await run("/usr/lib/postgresql/15/bin/pg_restore", [
      "--list",
      path.join(scratch, `${rows[0].name}.pgsql`),
    ]);
    assert.match(stdout, /TABLE DATA public ledger/);
  });

  it("refuses the link once its signature is altered", async () => {
    const list = (await dbApi("GET", `/databases/${addonId}/backups`)).json.database_backups as any[];
    const link = (await dbApi("GET", `/databases/${addonId}/backups/${list[0].id}/archive`)).json
      .download_url;
    const forged = link.slice(0, -2) + (link.endsWith("AA") ? "BB" : "AA");
    assert.equal((await fetch(forged)).status, 403);
  });
});

describe("logical backups across a controller killed mid-dump", () => {
  let cl: SplitCluster;

  before(async () => {
    cl = await startSplitCluster({
      subnet: 73,
      hosts: [{ name: "e2e-lb-c1", pool: "shared", az: "osc-fr1-a" }],
    });
  });
  after(async () => cl?.close());

  it("ends the backup done (or retried), never running for ever, once the controller is back", async () => {
    const id = await addStarter((m, p, b) => cl.api(m, p, b), "dump-ctl-app");
    const url = await waitUntilValue("the add-on to run", async () => {
      const { rows } = await cl.db.query(
        "SELECT value FROM variables WHERE database_id = $1 AND name = 'DATABASE_URL'",
        [id],
      );
      return rows[0]?.value as string | undefined;
    });
    const c = await connectVerified(url, await cl.regionCa());
    try {
      await c.query("CREATE TABLE bulk (id int PRIMARY KEY, payload text)");
      await c.query("INSERT INTO bulk SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 250000) g");
    } finally {
      await c.end();
    }
    const tok = await cl.api("POST", `/v1/apps/dump-ctl-app/addons/${id}/token`);
    // The database API of the region, as region discovery gives it.
    const dbApiBase = (await cl.api("GET", "/v1/regions")).json.regions[0].database_api as string;
    const post = await fetch(`${dbApiBase}/api/databases/${id}/backups`, {
      method: "POST",
      headers: { authorization: `Bearer ${tok.json.addon.token}` },
    });
    assert.equal(post.status, 201);
    const backupId = (await post.json()).database_backup.id as string;
    const dir = path.join(cl.dataDir, "backups", "osc-fr1", "logical", id);
    await waitUntilValue("the dump to be writing", async () => {
      const names = await fs.readdir(path.join(dir, `${backupId}.tar.gz.work`)).catch(() => []);
      return names.length > 0 ? true : undefined;
    });
    await cl.controller.kill();
    await cl.controller.start();
    const final = await waitUntilValue(
      "the backup to end",
      async () => {
        const { rows } = await cl.db.query(
          "SELECT status, attempt, error FROM logical_backups WHERE id = $1",
          [backupId],
        );
        return rows[0].status === "done" || rows[0].status === "error" ? rows[0] : undefined;
      },
      180_000,
    );
    assert.equal(final.status, "done", final.error);
    assert.deepEqual(
      (await fs.readdir(dir)).filter((n) => n.startsWith(backupId)),
      [`${backupId}.tar.gz`],
    );
  });
});

async function waitUntilValue<T>(
  what: string,
  check: () => Promise<T | undefined>,
  ms = 120_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
