// Continuous backups of databases: the stanza of each (spec, fixed at the first placement),
// what its node reported (status), the backup sets seen, and point-in-time restores.
import { randomBytes } from "node:crypto";
import { randomSecret } from "../domain/ids.ts";
import type { Queryable } from "./db.ts";
import { scopeIdOf, type Database } from "./databases.store.ts";
import { insertOperation, type Operation } from "./operations.store.ts";
import { enqueueReconcile } from "./reconcile-queue.store.ts";

export interface ContinuousBackup {
  databaseId: string;
  stanza: string;
  repoPath: string;
  cipherPass: string;
  retentionDays: number;
  timeline: number | null;
  earliestRecoverableAt: Date | null;
  latestRecoverableAt: Date | null;
  archiveError: string | null;
  lastFailure: string | null;
  lastFailureAt: Date | null;
  reportedAt: Date | null;
  health: "healthy" | "delayed" | "stale" | null;
  repoRemovedAt: Date | null;
}

interface ContinuousBackupRow {
  database_id: string;
  stanza: string;
  repo_path: string;
  cipher_pass: string;
  retention_days: number;
  timeline: number | null;
  earliest_recoverable_at: Date | null;
  latest_recoverable_at: Date | null;
  archive_error: string | null;
  last_failure: string | null;
  last_failure_at: Date | null;
  reported_at: Date | null;
  health: ContinuousBackup["health"];
  repo_removed_at: Date | null;
}

const toContinuousBackup = (r: ContinuousBackupRow): ContinuousBackup => ({
  databaseId: r.database_id,
  stanza: r.stanza,
  repoPath: r.repo_path,
  cipherPass: r.cipher_pass,
  retentionDays: r.retention_days,
  timeline: r.timeline,
  earliestRecoverableAt: r.earliest_recoverable_at,
  latestRecoverableAt: r.latest_recoverable_at,
  archiveError: r.archive_error,
  lastFailure: r.last_failure,
  lastFailureAt: r.last_failure_at,
  reportedAt: r.reported_at,
  health: r.health,
  repoRemovedAt: r.repo_removed_at,
});

/**
 * The database's stanza, made at its first placement: named after the database, in its own
 * repository under `repoRoot/<region>/`, with its own 64-character key. Idempotent; the
 * retention follows the current plan's class.
 */
export async function ensureContinuousBackup(
  q: Queryable,
  db: Database,
  opts: { repoRoot: string; retentionDays: number },
): Promise<ContinuousBackup> {
  const repoPath = `${opts.repoRoot.replace(/\/+$/, "")}/${db.region}/${db.id}`;
  const { rows } = await q.query<ContinuousBackupRow>(
    `INSERT INTO continuous_backups (database_id, stanza, repo_path, cipher_pass, retention_days)
     VALUES ($1, $1, $2, $3, $4)
     ON CONFLICT (database_id) DO UPDATE SET retention_days = excluded.retention_days
     RETURNING *`,
    [db.id, repoPath, randomSecret(64), opts.retentionDays],
  );
  return toContinuousBackup(rows[0]!);
}

export async function findContinuousBackup(
  q: Queryable,
  databaseId: string,
): Promise<ContinuousBackup | null> {
  const { rows } = await q.query<ContinuousBackupRow>(
    "SELECT * FROM continuous_backups WHERE database_id = $1",
    [databaseId],
  );
  return rows[0] ? toContinuousBackup(rows[0]) : null;
}

/** Locked for the rest of the transaction (one report at a time per database). */
export async function lockContinuousBackup(
  q: Queryable,
  databaseId: string,
): Promise<ContinuousBackup | null> {
  const { rows } = await q.query<ContinuousBackupRow>(
    "SELECT * FROM continuous_backups WHERE database_id = $1 FOR UPDATE",
    [databaseId],
  );
  return rows[0] ? toContinuousBackup(rows[0]) : null;
}

export interface ReportedStatus {
  timeline: number | null;
  earliest: Date | null;
  latest: Date | null;
  archiveError: string | null;
  failure: { at: Date; message: string } | null;
}

export async function saveReportedStatus(q: Queryable, databaseId: string, s: ReportedStatus): Promise<void> {
  await q.query(
    `UPDATE continuous_backups SET timeline = $2, earliest_recoverable_at = $3, latest_recoverable_at = $4,
            archive_error = $5, last_failure = $6, last_failure_at = $7, reported_at = now()
     WHERE database_id = $1`,
    [
      databaseId,
      s.timeline,
      s.earliest,
      s.latest,
      s.archiveError,
      s.failure?.message ?? null,
      s.failure?.at ?? null,
    ],
  );
}

export async function setHealth(q: Queryable, databaseId: string, health: ContinuousBackup["health"]) {
  await q.query("UPDATE continuous_backups SET health = $2 WHERE database_id = $1", [databaseId, health]);
}

export async function markRepoRemoved(q: Queryable, databaseId: string): Promise<void> {
  await q.query(
    "UPDATE continuous_backups SET repo_removed_at = now() WHERE database_id = $1 AND repo_removed_at IS NULL",
    [databaseId],
  );
}

export interface BaseBackupRow {
  label: string;
  type: "full" | "diff" | "incr";
  timeline: number;
  startedAt: Date;
  stoppedAt: Date;
  sizeBytes: number;
  repoSizeBytes: number;
  reason: string | null;
}

/** Records the sets a report lists; returns those seen for the first time. */
export async function recordBaseBackups(
  q: Queryable,
  databaseId: string,
  sets: BaseBackupRow[],
): Promise<BaseBackupRow[]> {
  const added: BaseBackupRow[] = [];
  for (const b of sets) {
    const { rowCount } = await q.query(
      `INSERT INTO base_backups (database_id, label, type, timeline, started_at, stopped_at, size_bytes,
                                 repo_size_bytes, reason)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (database_id, label) DO NOTHING`,
      [
        databaseId,
        b.label,
        b.type,
        b.timeline,
        b.startedAt,
        b.stoppedAt,
        b.sizeBytes,
        b.repoSizeBytes,
        b.reason,
      ],
    );
    if (rowCount) added.push(b);
  }
  // Gone from the repository: expired by retention (or the repository was lost).
  await q.query(
    `UPDATE base_backups SET expired_at = now()
     WHERE database_id = $1 AND expired_at IS NULL AND NOT (label = ANY($2))`,
    [databaseId, sets.map((b) => b.label)],
  );
  return added;
}

export async function listBaseBackups(q: Queryable, databaseId: string): Promise<BaseBackupRow[]> {
  const { rows } = await q.query<{
    label: string;
    type: BaseBackupRow["type"];
    timeline: number;
    started_at: Date;
    stopped_at: Date;
    size_bytes: string;
    repo_size_bytes: string;
    reason: string | null;
  }>(`SELECT * FROM base_backups WHERE database_id = $1 AND expired_at IS NULL ORDER BY stopped_at, label`, [
    databaseId,
  ]);
  return rows.map((r) => ({
    label: r.label,
    type: r.type,
    timeline: r.timeline,
    startedAt: r.started_at,
    stoppedAt: r.stopped_at,
    sizeBytes: Number(r.size_bytes),
    repoSizeBytes: Number(r.repo_size_bytes),
    reason: r.reason,
  }));
}

export interface PitrRestore {
  id: string;
  databaseId: string;
  operationId: string;
  targetTime: Date;
  status: "pending" | "done" | "error";
  error: string | null;
}

interface PitrRestoreRow {
  id: string;
  database_id: string;
  operation_id: string;
  target_time: Date;
  status: PitrRestore["status"];
  error: string | null;
}

const toRestore = (r: PitrRestoreRow): PitrRestore => ({
  id: r.id,
  databaseId: r.database_id,
  operationId: r.operation_id,
  targetTime: r.target_time,
  status: r.status,
  error: r.error,
});

export async function pendingRestore(q: Queryable, databaseId: string): Promise<PitrRestore | null> {
  const { rows } = await q.query<PitrRestoreRow>(
    "SELECT * FROM pitr_restores WHERE database_id = $1 AND status = 'pending'",
    [databaseId],
  );
  return rows[0] ? toRestore(rows[0]) : null;
}

/**
 * Records a restore in place on a locked database: the restore target joins the spec (next
 * generation, which the node applies by restoring), a `pitr-restore` operation, and a
 * reconcile request. Call inside a transaction.
 */
export async function requestRestore(
  q: Queryable,
  db: Database,
  r: { targetTime: Date; userId: string },
): Promise<{ operation: Operation; restore: PitrRestore }> {
  const { rows } = await q.query<{ generation: number }>(
    "UPDATE databases SET generation = generation + 1, updated_at = now() WHERE id = $1 RETURNING generation",
    [db.id],
  );
  const operation = await insertOperation(q, {
    appId: scopeIdOf(db),
    databaseId: db.id,
    type: "pitr-restore",
    targetGeneration: rows[0]!.generation,
  });
  const { rows: restores } = await q.query<PitrRestoreRow>(
    `INSERT INTO pitr_restores (id, database_id, operation_id, target_time, user_id)
     VALUES ($1, $2, $3, $4, $5) RETURNING *`,
    [`rst-${randomBytes(10).toString("hex")}`, db.id, operation.id, r.targetTime, r.userId],
  );
  await enqueueReconcile(q, db.id);
  return { operation, restore: toRestore(restores[0]!) };
}

/** The node's outcome of a pending restore; returns the restore when it was pending. */
export async function finishRestore(
  q: Queryable,
  id: string,
  outcome: { status: "done" | "error"; error: string | null },
): Promise<PitrRestore | null> {
  const { rows } = await q.query<PitrRestoreRow>(
    `UPDATE pitr_restores SET status = $2, error = $3, finished_at = now()
     WHERE id = $1 AND status = 'pending' RETURNING *`,
    [id, outcome.status, outcome.error],
  );
  return rows[0] ? toRestore(rows[0]) : null;
}

/**
 * Ends the `pitr-restore` operations of a database whose restore is over: an error at
 * once, a success once the database runs at the operation's generation. Returns how many.
 */
export async function finishRestoreOperations(q: Queryable, databaseId: string): Promise<number> {
  const { rowCount } = await q.query(
    `UPDATE operations o SET status = CASE WHEN r.status = 'done' THEN 'done' ELSE 'error' END,
            error = r.error, finished_at = now()
     FROM pitr_restores r, databases d
     WHERE o.id = r.operation_id AND d.id = o.database_id AND o.database_id = $1
       AND o.status IN ('pending', 'running') AND r.status <> 'pending'
       AND (r.status = 'error' OR (d.observed_generation >= o.target_generation AND d.phase = 'running'))`,
    [databaseId],
  );
  return rowCount ?? 0;
}

/** A database deleted while a restore was pending: the restore will never run. */
export async function cancelPendingRestore(q: Queryable, databaseId: string): Promise<void> {
  const { rows } = await q.query<{ operation_id: string }>(
    `UPDATE pitr_restores SET status = 'error', error = 'cancelled: the database was deleted', finished_at = now()
     WHERE database_id = $1 AND status = 'pending' RETURNING operation_id`,
    [databaseId],
  );
  for (const r of rows) {
    await q.query(
      `UPDATE operations SET status = 'error', error = 'cancelled: the database was deleted', finished_at = now()
       WHERE id = $1 AND status IN ('pending', 'running')`,
      [r.operation_id],
    );
  }
}

/** A fork's seed, with what its node needs: the source's stanza and both sets of names. */
export interface PendingSeed {
  databaseId: string;
  sourceDatabaseId: string;
  targetTime: Date;
  sourceTimeline: number;
  source: { stanza: string; repoPath: string; cipherPass: string; username: string; dbname: string };
  fork: { username: string; dbname: string } | null;
}

export async function insertSeed(
  q: Queryable,
  s: { databaseId: string; sourceDatabaseId: string; targetTime: Date; sourceTimeline: number },
): Promise<void> {
  await q.query(
    `INSERT INTO database_seeds (database_id, source_database_id, target_time, source_timeline)
     VALUES ($1, $2, $3, $4)`,
    [s.databaseId, s.sourceDatabaseId, s.targetTime, s.sourceTimeline],
  );
}

export async function pendingSeed(q: Queryable, databaseId: string): Promise<PendingSeed | null> {
  const { rows } = await q.query<{
    source_database_id: string;
    target_time: Date;
    source_timeline: number;
    stanza: string;
    repo_path: string;
    cipher_pass: string;
    src_user: string;
    src_db: string;
    fork_user: string | null;
    fork_db: string | null;
  }>(
    `SELECT s.source_database_id, s.target_time, s.source_timeline, cb.stanza, cb.repo_path, cb.cipher_pass,
            sc.username AS src_user, sc.dbname AS src_db, fc.username AS fork_user, fc.dbname AS fork_db
     FROM database_seeds s
     JOIN continuous_backups cb ON cb.database_id = s.source_database_id
     JOIN database_credentials sc ON sc.database_id = s.source_database_id
     LEFT JOIN database_credentials fc ON fc.database_id = s.database_id
     WHERE s.database_id = $1 AND s.status = 'pending'`,
    [databaseId],
  );
  const r = rows[0];
  if (!r) return null;
  return {
    databaseId,
    sourceDatabaseId: r.source_database_id,
    targetTime: r.target_time,
    sourceTimeline: r.source_timeline,
    source: {
      stanza: r.stanza,
      repoPath: r.repo_path,
      cipherPass: r.cipher_pass,
      username: r.src_user,
      dbname: r.src_db,
    },
    fork: r.fork_user && r.fork_db ? { username: r.fork_user, dbname: r.fork_db } : null,
  };
}

/** The fork runs: its data came from the seed, which is no longer asked for. */
export async function markSeedDone(q: Queryable, databaseId: string): Promise<boolean> {
  const { rowCount } = await q.query(
    "UPDATE database_seeds SET status = 'done', finished_at = now() WHERE database_id = $1 AND status = 'pending'",
    [databaseId],
  );
  return (rowCount ?? 0) > 0;
}

/** Forks still being made from this database's backups (its repository must stay). */
export async function countPendingForksOf(q: Queryable, sourceDatabaseId: string): Promise<number> {
  const { rows } = await q.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM database_seeds s JOIN databases d ON d.id = s.database_id
     WHERE s.source_database_id = $1 AND s.status = 'pending' AND d.deleted_at IS NULL`,
    [sourceDatabaseId],
  );
  return rows[0]!.n;
}
