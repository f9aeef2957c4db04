// Continuous backups and point-in-time recovery against real agents, PostgreSQL and
// pgBackRest: a Starter add-on archives into its own encrypted stanza and gets a full
// backup once running; the recovery window is the real one; bad restore times change
// nothing; a restore in place brings back exactly the data of its time; deleting the
// database deletes its repository. A Dedicated Starter gets the same continuous backups.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import type pg from "pg";
import { connectVerified, startCluster, type Cluster } from "../support/cluster.ts";

describe("continuous backups and PITR, end to end", () => {
  let cl: Cluster;
  let ca = "";
  let addonId = "";
  let url = "";
  let target = "";

  before(async () => {
    cl = await startCluster({
      subnet: 71,
      hosts: [
        { name: "e2e-bk-s1", pool: "shared", az: "osc-fr1-a" },
        { name: "e2e-bk-d1", pool: "dedicated", az: "osc-fr1-b" },
      ],
      // Short enough for a test: archive switches every 5 s, agents look every 2 s.
      env: { CELLAR_BACKUP_CHECK_EVERY_S: "2", CELLAR_BACKUP_ARCHIVE_TIMEOUT_S: "5" },
    });
    ca = await cl.regionCa();
    assert.equal((await cl.api("POST", "/v1/apps", { app: { name: "pitr-app" } })).status, 201);
    await recordConvergeFailures();
  });
  after(async () => cl?.close());

  /** A database-API call with a fresh add-on token, as the reference's clients do. */
  const dbApi = async (scope: string, id: string, method: string, p: string, body?: unknown) => {
    const tok = await cl.api("POST", `/v1/apps/${scope}/addons/${id}/token`);
    assert.equal(tok.status, 200, JSON.stringify(tok.json));
    const res = await fetch(`${cl.controller.url}/api/databases/${id}${p}`, {
      method,
      headers: { authorization: `Bearer ${tok.json.addon.token}`, "content-type": "application/json" },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null };
  };
  const windowOf = async (scope: string, id: string) => {
    const res = await dbApi(scope, id, "GET", "/pitr/recovery_window");
    assert.equal(res.status, 200, JSON.stringify(res.json));
    return res.json.recovery_window as { earliest_recoverable_at?: string; latest_recoverable_at?: string };
  };
  const withClient = async <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => {
    const client = await connectVerified(url, ca);
    try {
      return await fn(client);
    } finally {
      await client.end();
    }
  };
  const notes = () =>
    withClient(async (c) => (await c.query("SELECT note FROM ledger ORDER BY id")).rows.map((r) => r.note));
  const generation = async () =>
    (await cl.controller.deps.db.query("SELECT generation FROM databases WHERE id = $1", [addonId])).rows[0]
      .generation as number;
  /**
   * Every failed convergence an agent reports, kept by a trigger on the store's instances
   * (a failure heals at the next attempt, a second later: a poll could miss it).
   */
  const recordConvergeFailures = async () => {
    await cl.controller.deps.db.query(`
      CREATE TABLE test_converge_failures (instance_id text, database_id text, message text);
      CREATE FUNCTION test_converge_failed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          INSERT INTO test_converge_failures VALUES (NEW.id, NEW.database_id, NEW.status_message);
          RETURN NEW;
        END $$;
      CREATE TRIGGER test_converge_failed AFTER UPDATE OF status ON instances
        FOR EACH ROW WHEN (NEW.status = 'failed') EXECUTE FUNCTION test_converge_failed();`);
  };
  const convergeFailures = async (databaseId: string) =>
    (
      await cl.controller.deps.db.query(
        "SELECT instance_id, message FROM test_converge_failures WHERE database_id = $1",
        [databaseId],
      )
    ).rows;
  const operationCount = async () =>
    (
      await cl.controller.deps.db.query("SELECT count(*)::int AS n FROM operations WHERE database_id = $1", [
        addonId,
      ])
    ).rows[0].n as number;

  it("archives a new Starter add-on and takes its first full backup: a real recovery window", async () => {
    const res = await cl.api("POST", "/v1/apps/pitr-app/addons", {
      addon: { addon_provider_id: "postgresql", plan_id: "postgresql-starter-512" },
    });
    assert.equal(res.status, 201);
    addonId = res.json.addon.id;
    url = await cl.waitFor("the add-on to run", async () => {
      const vars = (await cl.api("GET", "/v1/apps/pitr-app/variables")).json.variables as any[];
      return vars.find((v) => v.name === "SCALINGO_POSTGRESQL_URL")?.value as string | undefined;
    });
    await withClient(async (c) => {
      await c.query("CREATE TABLE ledger (id serial PRIMARY KEY, note text NOT NULL)");
      await c.query("INSERT INTO ledger (note) VALUES ('kept-1'), ('kept-2')");
    });
    const w = await cl.waitFor("a recovery window", async () => {
      const win = await windowOf("pitr-app", addonId);
      return win.earliest_recoverable_at ? win : undefined;
    });
    assert.ok(Date.parse(w.earliest_recoverable_at!) <= Date.parse(w.latest_recoverable_at!));
    assert.ok(Date.now() - Date.parse(w.earliest_recoverable_at!) < 5 * 60_000, "the backup just taken");
    // One stanza per database, in its own repository, encrypted: no plain-text manifest.
    const repo = path.join(cl.dataDir, "backups", "osc-fr1", addonId);
    const info = await fs.readFile(path.join(repo, "backup", addonId, "backup.info"));
    assert.ok(!info.toString("utf8").includes("[backup:current]"), "backup.info is encrypted");
    const events = (await cl.api("GET", "/v1/apps/pitr-app/events")).json.events as any[];
    const ok = events.filter((e) => e.type === "database_backup_succeeded");
    assert.equal(ok.length, 1);
    assert.equal(ok[0].type_data.addon_uuid, addonId);
    assert.equal(ok[0].type_data.backup_status, "done");
  });

  it("reaches the latest commits: the window's end passes a point taken after them", async () => {
    target = await withClient(async (c) => {
      await c.query("INSERT INTO ledger (note) VALUES ('kept-3')");
      await new Promise((r) => setTimeout(r, 50));
      const t = (await c.query("SELECT clock_timestamp() AS t")).rows[0].t as Date;
      await new Promise((r) => setTimeout(r, 50));
      await c.query("INSERT INTO ledger (note) VALUES ('lost-4')");
      await c.query("UPDATE ledger SET note = 'changed' WHERE note = 'kept-1'");
      return t.toISOString();
    });
    await cl.waitFor(
      "the archive to reach past the target",
      async () => {
        const w = await windowOf("pitr-app", addonId);
        return w.latest_recoverable_at && Date.parse(w.latest_recoverable_at) > Date.parse(target)
          ? true
          : undefined;
      },
      60_000,
    );
  });

  it("answers 422 to a malformed, future or out-of-window time, and changes nothing", async () => {
    const before = {
      generation: await generation(),
      operations: await operationCount(),
      notes: await notes(),
    };
    const w = await windowOf("pitr-app", addonId);
    const earlier = new Date(Date.parse(w.earliest_recoverable_at!) - 3_600_000).toISOString();
    for (const restore_time of ["yesterday", "2026-13-45T99:00:00Z", "2026-01-31T12:00:00", 1234, null]) {
      const res = await dbApi("pitr-app", addonId, "POST", "/pitr/restore", { restore_time });
      assert.equal(res.status, 422, `${String(restore_time)}: ${JSON.stringify(res.json)}`);
      assert.ok(Array.isArray(res.json.errors.restore_time));
    }
    const future = await dbApi("pitr-app", addonId, "POST", "/pitr/restore", {
      restore_time: new Date(Date.now() + 3_600_000).toISOString(),
    });
    assert.equal(future.status, 422);
    assert.match(future.json.errors.restore_time[0], /in the future/);
    const old = await dbApi("pitr-app", addonId, "POST", "/pitr/restore", { restore_time: earlier });
    assert.equal(old.status, 422);
    assert.match(old.json.errors.restore_time[0], /outside the recovery window/);
    assert.deepEqual(
      { generation: await generation(), operations: await operationCount(), notes: await notes() },
      before,
    );
  });

  it("restores in place to the target: exactly the data of that time, as an operation", async () => {
    assert.deepEqual((await notes()).sort(), ["changed", "kept-2", "kept-3", "lost-4"]);
    const res = await dbApi("pitr-app", addonId, "POST", "/pitr/restore", { restore_time: target });
    assert.equal(res.status, 201, JSON.stringify(res.json));
    const opId = res.json.operation.id as string;
    assert.equal(res.json.operation_id, opId);
    const again = await dbApi("pitr-app", addonId, "POST", "/pitr/restore", { restore_time: target });
    assert.equal(again.status, 409, "one restore at a time");
    const op = await cl.waitFor(
      "the restore operation to finish",
      async () => {
        const o = (await cl.api("GET", `/v1/apps/pitr-app/operations/${opId}`)).json.operation;
        return o.status === "done" || o.status === "error" ? o : undefined;
      },
      180_000,
    );
    assert.equal(op.status, "done", op.error ?? "");
    assert.equal(op.type, "pitr-restore");
    assert.deepEqual(await notes(), ["kept-1", "kept-2", "kept-3"]);
    const addon = (await cl.api("GET", `/v1/apps/pitr-app/addons/${addonId}`)).json.addon;
    assert.equal(addon.status, "running");
    assert.deepEqual(await convergeFailures(addonId), [], "the restored node converges at once");
  });

  it("starts a new timeline: a new full backup, and nothing before the restore is offered again", async () => {
    const w = await cl.waitFor("the window of the new timeline", async () => {
      const win = await windowOf("pitr-app", addonId);
      return win.earliest_recoverable_at && Date.parse(win.earliest_recoverable_at) > Date.parse(target)
        ? win
        : undefined;
    });
    const res = await dbApi("pitr-app", addonId, "POST", "/pitr/restore", { restore_time: target });
    assert.equal(res.status, 422, `before ${w.earliest_recoverable_at}: ${JSON.stringify(res.json)}`);
    const events = (await cl.api("GET", "/v1/apps/pitr-app/events")).json.events as any[];
    assert.equal(events.filter((e) => e.type === "database_backup_succeeded").length, 2);
    assert.deepEqual(await notes(), ["kept-1", "kept-2", "kept-3"], "writes go on after the restore");
  });

  it("forks the add-on into another app at a point in time: that time's data, a new URL, the source untouched", async () => {
    assert.equal((await cl.api("POST", "/v1/apps", { app: { name: "pitr-staging" } })).status, 201);
    const forkTime = await withClient(async (c) => {
      await c.query("INSERT INTO ledger (note) VALUES ('in-fork')");
      await new Promise((r) => setTimeout(r, 50));
      const t = (await c.query("SELECT clock_timestamp() AS t")).rows[0].t as Date;
      await new Promise((r) => setTimeout(r, 50));
      await c.query("INSERT INTO ledger (note) VALUES ('not-in-fork')");
      return t.toISOString();
    });
    await cl.waitFor("the archive to pass the fork's time", async () => {
      const w = await windowOf("pitr-app", addonId);
      return w.latest_recoverable_at && Date.parse(w.latest_recoverable_at) > Date.parse(forkTime)
        ? true
        : undefined;
    });
    const res = await cl.api("POST", "/v1/apps/pitr-staging/addons", {
      addon: {
        addon_provider_id: "postgresql",
        plan_id: "postgresql-starter-1024",
        restore_from: { database_id: addonId, restore_time: forkTime },
      },
    });
    assert.equal(res.status, 201, JSON.stringify(res.json));
    const forkId = res.json.addon.id as string;
    const forkUrl = await cl.waitFor(
      "the fork to run",
      async () => {
        const vars = (await cl.api("GET", "/v1/apps/pitr-staging/variables")).json.variables as any[];
        return vars.find((v) => v.name === "SCALINGO_POSTGRESQL_URL")?.value as string | undefined;
      },
      180_000,
    );
    assert.notEqual(forkUrl, url);
    const fork = await connectVerified(forkUrl, ca);
    try {
      const rows = (await fork.query("SELECT note FROM ledger ORDER BY id")).rows.map((r) => r.note);
      assert.deepEqual(rows, ["kept-1", "kept-2", "kept-3", "in-fork"]);
      await fork.query("INSERT INTO ledger (note) VALUES ('written in the fork')");
    } finally {
      await fork.end();
    }
    assert.deepEqual(await convergeFailures(forkId), [], "the fork's node converges at once");
    assert.deepEqual(await notes(), ["kept-1", "kept-2", "kept-3", "in-fork", "not-in-fork"]);
    // Its own stanza: a first full backup of its own, then a window of its own.
    await cl.waitFor(
      "the fork's own recovery window",
      async () => {
        const w = await windowOf("pitr-staging", forkId);
        return w.earliest_recoverable_at ? true : undefined;
      },
      120_000,
    );
    assert.equal((await cl.api("DELETE", `/v1/apps/pitr-staging/addons/${forkId}`)).status, 204);
  });

  it("deletes the add-on's repository with it", async () => {
    const repo = path.join(cl.dataDir, "backups", "osc-fr1", addonId);
    await fs.access(repo);
    assert.equal((await cl.api("DELETE", `/v1/apps/pitr-app/addons/${addonId}`)).status, 204);
    await cl.waitFor("the repository to be removed", async () =>
      (await fs.access(repo).then(
        () => false,
        () => true,
      ))
        ? true
        : undefined,
    );
  });

  it("gives a Dedicated Starter continuous backups too, removed with it", async () => {
    const res = await cl.api("POST", "/v1/databases", {
      database: { name: "vault-prod", technology: "postgresql-ng", plan: "postgresql-dr-starter-4096" },
    });
    assert.equal(res.status, 201, JSON.stringify(res.json));
    const dbId = res.json.database.id as string;
    const w = await cl.waitFor(
      "the Dedicated database's recovery window",
      async () => {
        const win = await windowOf("vault-prod", dbId).catch(() => null);
        return win?.earliest_recoverable_at ? win : undefined;
      },
      180_000,
    );
    assert.ok(w.latest_recoverable_at);
    const { rows } = await cl.controller.deps.db.query(
      "SELECT retention_days FROM continuous_backups WHERE database_id = $1",
      [dbId],
    );
    assert.equal(rows[0].retention_days, 7);
    const repo = path.join(cl.dataDir, "backups", "osc-fr1", dbId);
    await fs.access(repo);
    assert.equal((await cl.api("DELETE", `/v1/apps/${dbId}?current_name=vault-prod`)).status, 204);
    await cl.waitFor("the Dedicated repository to be removed", async () =>
      (await fs.access(repo).then(
        () => false,
        () => true,
      ))
        ? true
        : undefined,
    );
  });
});
