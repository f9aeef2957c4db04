// On-demand log tails of database nodes (see migration 0004): requested by the log
// endpoint, delivered by the node's agent.
import type { Queryable } from "./db.ts";

/** Largest tail kept, in bytes: the last lines of one node's log, not an archive. */
export const MAX_TAIL_BYTES = 256 * 1024;
/** A request older than this is abandoned (its reader timed out): agents stop fetching it. */
const REQUEST_TTL = "1 minute";

/** Asks for a fresh tail of each node; returns the request time (the store's clock). */
export async function requestLogTails(q: Queryable, instanceIds: string[]): Promise<Date> {
  const { rows } = await q.query<{ now: Date }>("SELECT now() AS now");
  await q.query(
    `INSERT INTO instance_log_tails (instance_id, requested_at)
     SELECT id, $2 FROM instances WHERE id = ANY($1)
     ON CONFLICT (instance_id) DO UPDATE SET requested_at = GREATEST(instance_log_tails.requested_at, $2)`,
    [instanceIds, rows[0]!.now],
  );
  return rows[0]!.now;
}

/** Nodes of this host whose log was asked for since the agent last sent it. */
export async function pendingLogRequests(q: Queryable, hostId: string): Promise<string[]> {
  const { rows } = await q.query<{ instance_id: string }>(
    `SELECT t.instance_id FROM instance_log_tails t JOIN instances i ON i.id = t.instance_id
     WHERE i.host_id = $1 AND t.requested_at > coalesce(t.read_at, '-infinity')
       AND t.requested_at > now() - $2::interval`,
    [hostId, REQUEST_TTL],
  );
  return rows.map((r) => r.instance_id);
}

/** Stores tails sent by a host's agent; only instances placed on that host are written. */
export async function saveLogTails(
  q: Queryable,
  hostId: string,
  tails: Array<{ id: string; text: string }>,
): Promise<void> {
  for (const t of tails) {
    const text = Buffer.from(t.text, "utf8");
    // Keep the end: the newest lines matter; cut at a line start.
    let tail = text.subarray(Math.max(0, text.length - MAX_TAIL_BYTES)).toString("utf8");
    if (text.length > MAX_TAIL_BYTES) tail = tail.slice(tail.indexOf("\n") + 1);
    await q.query(
      `UPDATE instance_log_tails t SET tail = $3, read_at = now()
       FROM instances i WHERE t.instance_id = $1 AND i.id = t.instance_id AND i.host_id = $2`,
      [t.id, hostId, tail],
    );
  }
}

export interface LogTail {
  instanceId: string;
  tail: string;
  readAt: Date | null;
}

export async function logTails(q: Queryable, instanceIds: string[]): Promise<LogTail[]> {
  const { rows } = await q.query<{ instance_id: string; tail: string; read_at: Date | null }>(
    "SELECT instance_id, tail, read_at FROM instance_log_tails WHERE instance_id = ANY($1) ORDER BY instance_id",
    [instanceIds],
  );
  return rows.map((r) => ({ instanceId: r.instance_id, tail: r.tail, readAt: r.read_at }));
}
