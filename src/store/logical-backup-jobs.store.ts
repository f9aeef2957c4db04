// The dump jobs of logical backups: a host's agent claims the backups whose source node it
// holds, keeps a lease alive while pg_dump runs, and reports the outcome. A lost runner
// (agent or host gone, lease over) never leaves a backup running: it is retried or failed.
import type { Queryable } from "./db.ts";
import { toLogicalBackup, type LogicalBackup, type LogicalBackupRow } from "./logical-backups.store.ts";

export interface ClaimedJob {
  backup: LogicalBackup;
  /** The node dumped: an HA cluster's follower when one runs, else its leader. */
  instanceId: string;
  port: number;
  dbname: string;
}

/**
 * Claims up to `limit` waiting backups whose source node runs on this host, for one lease.
 * The source is chosen now, not at scheduling: the follower of an HA cluster when one is
 * running on a ready host, else the node that runs.
 */
export async function claimJobs(
  q: Queryable,
  hostId: string,
  limit: number,
  leaseMs: number,
): Promise<ClaimedJob[]> {
  if (limit <= 0) return [];
  const { rows } = await q.query<LogicalBackupRow & { port: number; dbname: string }>(
    `WITH candidates AS (
       SELECT b.id, src.id AS instance_id, src.port, src.role, cr.dbname
       FROM logical_backups b
       JOIN databases d ON d.id = b.database_id
       JOIN database_credentials cr ON cr.database_id = d.id
       JOIN LATERAL (
         SELECT i.id, i.port, i.role, i.host_id FROM instances i JOIN hosts h ON h.id = i.host_id
         WHERE i.database_id = b.database_id AND i.kind = 'node' AND i.desired_state = 'running'
           AND i.status = 'running' AND h.status = 'ready'
         ORDER BY (i.role = 'follower') DESC, i.ordinal LIMIT 1
       ) src ON src.host_id = $1
       WHERE b.status = 'scheduled' AND b.expired_at IS NULL AND b.not_before <= now()
         AND d.phase = 'running' AND d.delete_requested_at IS NULL
       ORDER BY b.created_at
       LIMIT $2
       FOR UPDATE OF b SKIP LOCKED
     )
     UPDATE logical_backups b SET status = 'running', attempt = b.attempt + 1, host_id = $1,
            instance_id = c.instance_id, source_role = c.role, progress_bytes = 0,
            lease_until = now() + $3 * interval '1 millisecond', started_at = coalesce(b.started_at, now())
     FROM candidates c WHERE b.id = c.id
     RETURNING b.*, c.port, c.dbname`,
    [hostId, limit, leaseMs],
  );
  return rows.map((r) => ({
    backup: toLogicalBackup(r),
    instanceId: r.instance_id!,
    port: r.port,
    dbname: r.dbname,
  }));
}

/**
 * The runner is alive and has written `bytes`: the lease goes on. False when the job is no
 * longer this runner's (expired by a deletion, or taken over after its lease ended).
 */
export async function renewLease(
  q: Queryable,
  job: { id: string; hostId: string; attempt: number },
  bytes: number,
  leaseMs: number,
): Promise<boolean> {
  const { rowCount } = await q.query(
    `UPDATE logical_backups SET lease_until = now() + $4 * interval '1 millisecond', progress_bytes = $5
     WHERE id = $1 AND host_id = $2 AND attempt = $3 AND status = 'running' AND expired_at IS NULL`,
    [job.id, job.hostId, job.attempt, leaseMs, bytes],
  );
  return (rowCount ?? 0) > 0;
}

/** Locks the running job of this runner, if it still is its own. */
export async function lockRunningJob(
  q: Queryable,
  job: { id: string; hostId: string; attempt: number },
): Promise<LogicalBackup | null> {
  const { rows } = await q.query<LogicalBackupRow>(
    `SELECT * FROM logical_backups WHERE id = $1 AND host_id = $2 AND attempt = $3 AND status = 'running'
     FOR UPDATE`,
    [job.id, job.hostId, job.attempt],
  );
  return rows[0] ? toLogicalBackup(rows[0]) : null;
}

export async function markDone(q: Queryable, id: string, sizeBytes: number): Promise<LogicalBackup> {
  const { rows } = await q.query<LogicalBackupRow>(
    `UPDATE logical_backups SET status = 'done', size_bytes = $2, progress_bytes = $2, error = NULL,
            lease_until = NULL, finished_at = now()
     WHERE id = $1 RETURNING *`,
    [id, sizeBytes],
  );
  return toLogicalBackup(rows[0]!);
}

/**
 * A try that failed (reported, or its runner lost): waits `retryAfterMs` and goes again
 * while tries remain, else the backup is in error. Returns the row as it now is.
 */
export async function failOrRetry(
  q: Queryable,
  id: string,
  error: string,
  opts: { maxAttempts: number; retryAfterMs: number },
): Promise<LogicalBackup | null> {
  const { rows } = await q.query<LogicalBackupRow>(
    `UPDATE logical_backups SET
       status = CASE WHEN attempt < $3 AND expired_at IS NULL THEN 'scheduled' ELSE 'error' END,
       finished_at = CASE WHEN attempt < $3 AND expired_at IS NULL THEN NULL ELSE now() END,
       not_before = now() + $4 * interval '1 millisecond',
       lease_until = NULL, error = $2
     WHERE id = $1 AND status = 'running' RETURNING *`,
    [id, error.slice(0, 2000), opts.maxAttempts, opts.retryAfterMs],
  );
  return rows[0] ? toLogicalBackup(rows[0]) : null;
}

/** Jobs this host holds but its agent no longer runs (it restarted, or never got them). */
export async function jobsLostByHost(q: Queryable, hostId: string, running: string[]): Promise<string[]> {
  const { rows } = await q.query<{ id: string }>(
    `SELECT id FROM logical_backups WHERE host_id = $1 AND status = 'running' AND NOT (id = ANY($2))`,
    [hostId, running],
  );
  return rows.map((r) => r.id);
}

/** Running jobs whose runner stopped renewing its lease. */
export async function jobsWithLapsedLease(q: Queryable): Promise<string[]> {
  const { rows } = await q.query<{ id: string }>(
    "SELECT id FROM logical_backups WHERE status = 'running' AND lease_until < now()",
  );
  return rows.map((r) => r.id);
}

/**
 * Waiting backups nothing could start in time (the database not running, no ready host):
 * the reference skips them. Returns the ones just put in error.
 */
export async function failUnstarted(q: Queryable, maxWaitMs: number): Promise<LogicalBackup[]> {
  const { rows } = await q.query<LogicalBackupRow>(
    `UPDATE logical_backups SET status = 'error', finished_at = now(),
            error = coalesce(error, 'not started in time: the database had no running node to dump')
     WHERE status = 'scheduled' AND expired_at IS NULL
       AND greatest(created_at, not_before) < now() - $1 * interval '1 millisecond'
     RETURNING *`,
    [maxWaitMs],
  );
  return rows.map(toLogicalBackup);
}

/** Hosts holding waiting backups' source nodes: their agents are woken. */
export async function hostsWithWaitingJobs(q: Queryable): Promise<string[]> {
  const { rows } = await q.query<{ host_id: string }>(
    `SELECT DISTINCT i.host_id FROM logical_backups b
     JOIN instances i ON i.database_id = b.database_id AND i.kind = 'node' AND i.status = 'running'
     WHERE b.status = 'scheduled' AND b.expired_at IS NULL AND b.not_before <= now()`,
  );
  return rows.map((r) => r.host_id);
}
