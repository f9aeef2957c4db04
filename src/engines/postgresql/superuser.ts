// Short-lived superuser connections over an instance's unix socket.
import pg from "pg";

/** Connects, runs one query, disconnects. Bounded: a hung server must not hang the agent. */
export async function queryOnce<R extends pg.QueryResultRow = pg.QueryResultRow>(
  config: pg.ClientConfig,
  sql: string,
  params: unknown[] = [],
  timeoutMs = 5000,
): Promise<R[]> {
  const client = new pg.Client({ ...config, connectionTimeoutMillis: timeoutMs, query_timeout: timeoutMs });
  // An error event after connect (server shutting down) must not crash the process.
  client.on("error", () => undefined);
  await client.connect();
  try {
    return (await client.query<R>(sql, params)).rows;
  } finally {
    await client.end().catch(() => undefined);
  }
}
