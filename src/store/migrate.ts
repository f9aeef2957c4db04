// Forward-only plain-SQL migrations, each in its own transaction.
// Concurrent controllers serialise on an advisory lock, so a migration runs exactly once.
import fs from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Db } from "./db.ts";

const MIGRATIONS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), "migrations");
const LOCK_KEY = 0x63656c6c; // "cell"

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export async function loadMigrations(dir = MIGRATIONS_DIR): Promise<Migration[]> {
  const files = (await fs.readdir(dir)).filter((f) => /^\d{4}-[a-z0-9-]+\.sql$/.test(f)).sort();
  // Two files with one number (parallel branches) would apply one and skip the other for ever.
  const clash = files.find((f, i) => i > 0 && f.slice(0, 4) === files[i - 1]!.slice(0, 4));
  if (clash) throw new Error(`two migrations are numbered ${clash.slice(0, 4)} in ${dir}: renumber one`);
  return Promise.all(
    files.map(async (file) => ({
      version: Number(file.slice(0, 4)),
      name: file.slice(5, -4),
      sql: await fs.readFile(path.join(dir, file), "utf8"),
    })),
  );
}

/** Applies pending migrations; returns the names of those applied by this call. */
export async function migrate(db: Db, migrations?: Migration[]): Promise<string[]> {
  const all = migrations ?? (await loadMigrations());
  const client = await db.pool.connect();
  const applied: string[] = [];
  try {
    await client.query("SELECT pg_advisory_lock($1)", [LOCK_KEY]);
    await client.query(`CREATE TABLE IF NOT EXISTS cellar_migrations (
      version integer PRIMARY KEY,
      name text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    const { rows } = await client.query<{ version: number }>("SELECT version FROM cellar_migrations");
    const done = new Set(rows.map((r) => r.version));
    const latest = Math.max(0, ...done);
    const known = Math.max(0, ...all.map((m) => m.version));
    if (latest > known) {
      // Why: an older controller must not run against a schema it does not understand.
      throw new Error(
        `store schema is at version ${latest}, newer than this Cellar (${known}): upgrade Cellar`,
      );
    }
    for (const m of all) {
      if (done.has(m.version)) continue;
      await client.query("BEGIN");
      try {
        await client.query(m.sql);
        await client.query("INSERT INTO cellar_migrations (version, name) VALUES ($1, $2)", [
          m.version,
          m.name,
        ]);
        await client.query("COMMIT");
      } catch (err) {
        await client.query("ROLLBACK");
        throw new Error(`migration ${m.version}-${m.name} failed: ${(err as Error).message}`);
      }
      applied.push(`${m.version}-${m.name}`);
    }
  } finally {
    await client.query("SELECT pg_advisory_unlock($1)", [LOCK_KEY]).catch(() => undefined);
    client.release();
  }
  return applied;
}
