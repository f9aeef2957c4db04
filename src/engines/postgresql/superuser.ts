// Short-lived superuser connections over an instance's unix socket.
import pg from "pg";

/** Connects, runs one query, disconnects. Bounded: a hung server must not hang the agent. */
export async function queryOnce<R extends pg.QueryResultRow = pg.QueryResultRow>(
  config: pg.ClientConfig,
  sql: string,
  params: unknown[] = [],
  timeoutMs = 5000,
): Promise<R[]> {
  return withClient(config, timeoutMs, async (client) => (await client.query<R>(sql, params)).rows);
}

/**
 * Runs statements one after the other on one connection, each its own transaction (ALTER
 * SYSTEM refuses to run inside one). Returns the rows of each.
 */
export async function queryEach(
  config: pg.ClientConfig,
  sqls: string[],
  timeoutMs = 5000,
): Promise<pg.QueryResultRow[][]> {
  return withClient(config, timeoutMs, async (client) => {
    const results: pg.QueryResultRow[][] = [];
    for (const sql of sqls) results.push((await client.query<pg.QueryResultRow>(sql)).rows);
    return results;
  });
}

async function withClient<T>(
  config: pg.ClientConfig,
  timeoutMs: number,
  use: (client: pg.Client) => Promise<T>,
): Promise<T> {
  const client = new pg.Client({ ...config, connectionTimeoutMillis: timeoutMs, query_timeout: timeoutMs });
  // An error event after connect (server shutting down) must not crash the process.
  client.on("error", () => undefined);
  await client.connect();
  try {
    return await use(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}
