// Forward-only migrations on a real PostgreSQL: once each, atomically, under concurrency.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { createDb, type Db, type Queryable } from "../../src/store/db.ts";
import { loadMigrations, migrate, type Migration } from "../../src/store/migrate.ts";
import { freshDb, type TestDb } from "../support/db.ts";

const dbs: TestDb[] = [];
async function emptyDb(): Promise<TestDb> {
  const t = await freshDb({ empty: true });
  dbs.push(t);
  return t;
}
after(async () => {
  for (const t of dbs) await t.drop().catch(() => undefined);
});

async function appliedVersions(q: Queryable): Promise<number[]> {
  const { rows } = await q.query<{ version: number }>(
    "SELECT version FROM cellar_migrations ORDER BY version",
  );
  return rows.map((r) => r.version);
}

async function tableExists(q: Queryable, name: string): Promise<boolean> {
  const { rows } = await q.query("SELECT 1 FROM pg_tables WHERE schemaname = 'public' AND tablename = $1", [
    name,
  ]);
  return rows.length === 1;
}

/** Every column, constraint and index of the public schema, as one comparable list. */
async function schemaOf(q: Queryable): Promise<string[]> {
  const { rows } = await q.query<{ line: string }>(
    `SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' ||
            coalesce(column_default, '') AS line
       FROM information_schema.columns WHERE table_schema = 'public'
     UNION ALL
     SELECT conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
       FROM pg_constraint WHERE connamespace = 'public'::regnamespace
     UNION ALL
     SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'
     ORDER BY 1`,
  );
  return rows.map((r) => r.line);
}

describe("migrate", () => {
  it("loads the shipped migrations numbered 1, 2, 3... without gaps", async () => {
    const all = await loadMigrations();
    assert.ok(all.length >= 1);
    assert.deepEqual(
      all.map((m) => m.version),
      all.map((_, i) => i + 1),
    );
    assert.equal(all[0]!.name, "foundation");
    for (const m of all) assert.match(m.name, /^[a-z0-9-]+$/);
  });

  it("refuses two migration files with one number", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-migrations-"));
    try {
      await fs.writeFile(path.join(dir, "0001-a.sql"), "SELECT 1");
      await fs.writeFile(path.join(dir, "0002-b.sql"), "SELECT 1");
      await fs.writeFile(path.join(dir, "0002-c.sql"), "SELECT 1");
      await fs.writeFile(path.join(dir, "notes.txt"), "ignored");
      await assert.rejects(loadMigrations(dir), /two migrations are numbered 0002 .*: renumber one/);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it("applies every migration to an empty store, then none on a rerun", async () => {
    const t = await emptyDb();
    const all = await loadMigrations();
    const applied = await migrate(t.db);
    assert.deepEqual(
      applied,
      all.map((m) => `${m.version}-${m.name}`),
    );
    assert.deepEqual(
      await appliedVersions(t.db),
      all.map((m) => m.version),
    );
    for (const table of ["users", "api_tokens", "apps", "databases", "collaborators", "reconcile_queue"]) {
      assert.ok(await tableExists(t.db, table), `${table} exists`);
    }
    assert.deepEqual(await migrate(t.db), []);
    assert.deepEqual(
      await appliedVersions(t.db),
      all.map((m) => m.version),
    );
  });

  it("two controllers migrating at once: each migration is applied exactly once", async () => {
    const t = await emptyDb();
    const reference = await freshDb();
    dbs.push(reference);
    const all = await loadMigrations();
    // Two pools are two controllers: separate sessions racing for the advisory lock.
    const pools: Db[] = [createDb(t.config), createDb(t.config)];
    try {
      const results = await Promise.all(pools.map((db) => migrate(db)));
      const everything = results.flat().sort();
      assert.deepEqual(everything, all.map((m) => `${m.version}-${m.name}`).sort(), "no migration twice");
      assert.deepEqual(
        await appliedVersions(t.db),
        all.map((m) => m.version),
      );
      assert.deepEqual(await schemaOf(t.db), await schemaOf(reference.db), "same schema as the template");
    } finally {
      await Promise.all(pools.map((db) => db.close()));
    }
  });

  it("rolls a failing migration back whole, keeps the ones before it, and can resume", async () => {
    const t = await emptyDb();
    const good: Migration = { version: 1, name: "good", sql: "CREATE TABLE good_one (id int PRIMARY KEY)" };
    const bad: Migration = {
      version: 2,
      name: "bad",
      sql: "CREATE TABLE partial_one (id int); INSERT INTO no_such_table VALUES (1);",
    };
    await assert.rejects(
      migrate(t.db, [good, bad]),
      /^Error: migration 2-bad failed: relation "no_such_table" does not exist$/,
    );
    assert.ok(await tableExists(t.db, "good_one"));
    assert.ok(!(await tableExists(t.db, "partial_one")), "no partial table left behind");
    assert.deepEqual(await appliedVersions(t.db), [1]);

    // The lock was released and the fixed migration applies on the next start.
    const fixed: Migration = { ...bad, sql: "CREATE TABLE partial_one (id int)" };
    assert.deepEqual(await migrate(t.db, [good, fixed]), ["2-bad"]);
    assert.ok(await tableExists(t.db, "partial_one"));
    assert.deepEqual(await appliedVersions(t.db), [1, 2]);
  });

  it("refuses a store whose schema is newer than this Cellar, changing nothing", async () => {
    const t = await emptyDb();
    await migrate(t.db);
    const known = Math.max(...(await loadMigrations()).map((m) => m.version));
    await t.db.query("INSERT INTO cellar_migrations (version, name) VALUES (9999, 'from-the-future')");
    const before = await schemaOf(t.db);
    const later: Migration = { version: 10_000, name: "later", sql: "CREATE TABLE later_one (id int)" };
    await assert.rejects(
      migrate(t.db),
      new RegExp(
        `^Error: store schema is at version 9999, newer than this Cellar \\(${known}\\): upgrade Cellar$`,
      ),
    );
    assert.deepEqual(await schemaOf(t.db), before);
    // A Cellar that knows more migrations goes on.
    assert.deepEqual(await migrate(t.db, [...(await loadMigrations()), later]), ["10000-later"]);
  });
});
