// Every test file gets a fresh store cloned from the migrated template (test/run.ts).
import { randomBytes } from "node:crypto";
import pg from "pg";
import { createDb, type Db } from "../../src/store/db.ts";

export const TEMPLATE_DB = "cellar_template";

function serverConfig(database: string): pg.ClientConfig {
  const host = process.env.CELLAR_TEST_PG_HOST;
  if (!host) throw new Error("run tests through scripts/test.sh (it starts the test PostgreSQL)");
  return { host, port: Number(process.env.CELLAR_TEST_PG_PORT), user: "postgres", database };
}

export interface TestDb {
  db: Db;
  name: string;
  /** Connection settings, for tests that need a second pool on the same database. */
  config: pg.ClientConfig;
  drop(): Promise<void>;
}

/** A fresh database with the schema applied (or empty, for migration tests). */
export async function freshDb(opts: { empty?: boolean } = {}): Promise<TestDb> {
  const name = `t_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client(serverConfig("postgres"));
  await admin.connect();
  try {
    await admin.query(
      opts.empty ? `CREATE DATABASE ${name}` : `CREATE DATABASE ${name} TEMPLATE ${TEMPLATE_DB}`,
    );
  } finally {
    await admin.end();
  }
  const config = serverConfig(name);
  const db = createDb(config);
  return {
    db,
    name,
    config,
    async drop() {
      await db.close();
      const c = new pg.Client(serverConfig("postgres"));
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}
