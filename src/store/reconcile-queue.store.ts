// The reconcile queue: one row per database (the primary key de-duplicates requests).
import type { Queryable } from "./db.ts";

export interface QueueItem {
  databaseId: string;
  version: number;
  attempts: number;
}

/** Asks for a pass on a database, at once or after a delay; repeated asks merge. */
export async function enqueueReconcile(q: Queryable, databaseId: string, delayMs = 0): Promise<void> {
  await q.query(
    `INSERT INTO reconcile_queue (database_id, run_after) VALUES ($1, now() + $2 * interval '1 millisecond')
     ON CONFLICT (database_id) DO UPDATE
       SET run_after = least(reconcile_queue.run_after, excluded.run_after),
           version = reconcile_queue.version + 1`,
    [databaseId, delayMs],
  );
}

/**
 * Claims the next due database for `leaseMs`. SKIP LOCKED plus the lease make two workers
 * (or two controllers) never reconcile the same database at once.
 */
export async function claimNext(q: Queryable, worker: string, leaseMs: number): Promise<QueueItem | null> {
  const { rows } = await q.query<{ database_id: string; version: number; attempts: number }>(
    `UPDATE reconcile_queue SET locked_by = $1, locked_until = now() + $2 * interval '1 millisecond',
            attempts = attempts + 1
     WHERE database_id = (
       SELECT database_id FROM reconcile_queue
       WHERE run_after <= now() AND (locked_until IS NULL OR locked_until < now())
       ORDER BY run_after LIMIT 1 FOR UPDATE SKIP LOCKED)
     RETURNING database_id, version, attempts`,
    [worker, leaseMs],
  );
  const r = rows[0];
  return r ? { databaseId: r.database_id, version: r.version, attempts: r.attempts } : null;
}

/** Extends a claim still held by `worker`; false when it was lost (expired and taken). */
export async function renewClaim(
  q: Queryable,
  item: QueueItem,
  worker: string,
  leaseMs: number,
): Promise<boolean> {
  const { rowCount } = await q.query(
    `UPDATE reconcile_queue SET locked_until = now() + $3 * interval '1 millisecond'
     WHERE database_id = $1 AND locked_by = $2`,
    [item.databaseId, worker, leaseMs],
  );
  return (rowCount ?? 0) > 0;
}

/**
 * Ends a claimed pass. With `requeueAfterMs` the item comes back later; otherwise it is
 * removed, unless someone enqueued it again meanwhile (its version moved on).
 */
export async function completeClaim(
  q: Queryable,
  item: QueueItem,
  worker: string,
  outcome: { requeueAfterMs?: number; message: string; failed?: boolean },
): Promise<void> {
  if (outcome.requeueAfterMs !== undefined) {
    await q.query(
      `UPDATE reconcile_queue SET locked_by = NULL, locked_until = NULL, last_message = $3,
              run_after = CASE WHEN version = $4 THEN now() + $5 * interval '1 millisecond' ELSE now() END,
              attempts = CASE WHEN $6 THEN attempts ELSE 0 END
       WHERE database_id = $1 AND locked_by = $2`,
      [
        item.databaseId,
        worker,
        outcome.message,
        item.version,
        outcome.requeueAfterMs,
        outcome.failed ?? false,
      ],
    );
    return;
  }
  await q.query("DELETE FROM reconcile_queue WHERE database_id = $1 AND locked_by = $2 AND version = $3", [
    item.databaseId,
    worker,
    item.version,
  ]);
  await q.query(
    `UPDATE reconcile_queue SET locked_by = NULL, locked_until = NULL, last_message = $3, attempts = 0
     WHERE database_id = $1 AND locked_by = $2`,
    [item.databaseId, worker, outcome.message],
  );
}
