// What the control plane keeps about a database's users: only the protected user (its
// credentials, made at provisioning) and the way to reach the database as that user.
// The other users live in the database itself and nowhere else: listing reads them there,
// so nothing can drift, and their passwords are never stored here.
import type { Queryable } from "./db.ts";

export interface ProtectedAccess {
  /** Gateway address and port: the address clients use, which survives plan changes. */
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

export async function protectedUsername(q: Queryable, databaseId: string): Promise<string | null> {
  const { rows } = await q.query<{ username: string }>(
    "SELECT username FROM database_credentials WHERE database_id = $1",
    [databaseId],
  );
  return rows[0]?.username ?? null;
}

/** How to reach the database as its protected user; null until it has a gateway and credentials. */
export async function protectedAccess(q: Queryable, databaseId: string): Promise<ProtectedAccess | null> {
  const { rows } = await q.query<ProtectedAccess>(
    `SELECT host(h.address) AS host, i.port, c.username AS user, c.password, c.dbname AS database
     FROM database_credentials c
     JOIN instances i ON i.database_id = c.database_id AND i.kind = 'gateway' AND i.desired_state = 'running'
     JOIN hosts h ON h.id = i.host_id
     WHERE c.database_id = $1
     ORDER BY i.ordinal LIMIT 1`,
    [databaseId],
  );
  return rows[0] ?? null;
}
