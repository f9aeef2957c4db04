// Connection pool and transactions for the control-plane store.
import pg from "pg";

export type Queryable = Pick<pg.PoolClient, "query">;

export interface Db extends Queryable {
  pool: pg.Pool;
  tx<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

// timestamptz as ISO strings would lose nothing, but Date objects are what the mappers expect.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

export function createDb(config: pg.PoolConfig): Db {
  const pool = new pg.Pool({ max: 10, ...config });
  // An idle client that loses its server must not crash the process; the next query reconnects.
  pool.on("error", () => undefined);
  return {
    pool,
    query: pool.query.bind(pool),
    async tx(fn) {
      const client = await pool.connect();
      try {
        await client.query("BEGIN");
        const result = await fn(client);
        await client.query("COMMIT");
        return result;
      } catch (err) {
        await client.query("ROLLBACK").catch(() => undefined);
        throw err;
      } finally {
        client.release();
      }
    },
    close: () => pool.end(),
  };
}

/** SQLSTATEs that mean "someone else got there first". */
export const UNIQUE_VIOLATION = "23505";
export const FOREIGN_KEY_VIOLATION = "23503";

export function isPgError(err: unknown, code: string): boolean {
  return typeof err === "object" && err !== null && (err as { code?: string }).code === code;
}
