// Opens the control-plane store: the embedded PostgreSQL under the data directory by
// default, or an external one from CELLAR_DATABASE_URL. Applies migrations.
import path from "node:path";
import pg from "pg";
import type { Config } from "../config.ts";
import { LocalCluster } from "../engines/postgresql/local-cluster.ts";
import type { Logger } from "../log.ts";
import { createDb, isPgError, type Db } from "./db.ts";
import { migrate } from "./migrate.ts";

const STORE_DB = "cellar";
// The embedded cluster listens on a unix socket only; the port just names the socket file.
const EMBEDDED_PORT = 5432;

export interface Store {
  db: Db;
  /** Set when Cellar runs its own store cluster. */
  embedded: LocalCluster | null;
  close(): Promise<void>;
}

/**
 * `ownsDataDir`: the caller holds the data directory's lock (a controller). A store cluster
 * found running is then a leftover of a crashed controller, and is stopped with this one.
 */
export async function openStore(
  config: Config,
  log: Logger,
  opts: { ownsDataDir?: boolean } = {},
): Promise<Store> {
  let embedded: LocalCluster | null = null;
  let startedHere = false;
  let poolConfig: pg.PoolConfig;
  if (config.databaseUrl) {
    poolConfig = { connectionString: config.databaseUrl };
    log.info("using external control-plane store", { url: redactUrl(config.databaseUrl) });
  } else {
    embedded = new LocalCluster({ baseDir: path.join(config.dataDir, "store"), port: EMBEDDED_PORT });
    const fresh = !(await embedded.isInitialised());
    await embedded.ensureInitialised();
    startedHere = (await embedded.start()) || (opts.ownsDataDir ?? false);
    await ensureDatabase(embedded, STORE_DB);
    poolConfig = embedded.connectionConfig(STORE_DB);
    log.info(fresh ? "created embedded control-plane store" : "started embedded control-plane store", {
      dir: embedded.dataDir,
    });
  }
  const db = createDb(poolConfig);
  const applied = await migrate(db);
  if (applied.length) log.info("applied store migrations", { migrations: applied.join(",") });
  return {
    db,
    embedded,
    async close() {
      await db.close();
      // Only its owner stops the embedded cluster (not e.g. `cellar admin` next to a running Cellar).
      if (startedHere) await embedded?.stop();
    },
  };
}

/** CREATE DATABASE if missing; a concurrent creator winning the race is fine. */
export async function ensureDatabase(cluster: LocalCluster, name: string): Promise<void> {
  const client = new pg.Client(cluster.connectionConfig("postgres"));
  await client.connect();
  try {
    const { rows } = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
    if (rows.length) return;
    await client.query(`CREATE DATABASE "${name.replace(/"/g, '""')}"`).catch((err: unknown) => {
      if (!isPgError(err, "42P04") && !isPgError(err, "23505")) throw err;
    });
  } finally {
    await client.end();
  }
}

export function redactUrl(url: string): string {
  return url.replace(/\/\/([^:@/]+):[^@/]*@/, "//$1:***@");
}
