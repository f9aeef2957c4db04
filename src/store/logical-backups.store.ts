// Logical backups of Shared databases: each database's daily schedule, the backups taken
// (rows and where their archive lies), and their removal once evicted or deleted.
import { randomBytes } from "node:crypto";
import path from "node:path";
import { backupName, DEFAULT_SCHEDULE_HOURS } from "../domain/logical-backup-policy.ts";
import type { Queryable } from "./db.ts";
import type { Database } from "./databases.store.ts";

export type LogicalBackupStatus = "scheduled" | "running" | "done" | "error";
export type LogicalBackupMethod = "periodic" | "manual";

export interface LogicalBackup {
  id: string;
  databaseId: string;
  method: LogicalBackupMethod;
  name: string;
  slot: Date | null;
  status: LogicalBackupStatus;
  filePath: string;
  sizeBytes: number | null;
  attempt: number;
  hostId: string | null;
  instanceId: string | null;
  sourceRole: string | null;
  leaseUntil: Date | null;
  progressBytes: number | null;
  error: string | null;
  createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
  expiredAt: Date | null;
}

export interface LogicalBackupRow {
  id: string;
  database_id: string;
  method: LogicalBackupMethod;
  name: string;
  slot: Date | null;
  status: LogicalBackupStatus;
  file_path: string;
  size_bytes: string | null;
  attempt: number;
  host_id: string | null;
  instance_id: string | null;
  source_role: string | null;
  lease_until: Date | null;
  progress_bytes: string | null;
  error: string | null;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
  expired_at: Date | null;
}

const num = (v: string | null): number | null => (v === null ? null : Number(v));

export const toLogicalBackup = (r: LogicalBackupRow): LogicalBackup => ({
  id: r.id,
  databaseId: r.database_id,
  method: r.method,
  name: r.name,
  slot: r.slot,
  status: r.status,
  filePath: r.file_path,
  sizeBytes: num(r.size_bytes),
  attempt: r.attempt,
  hostId: r.host_id,
  instanceId: r.instance_id,
  sourceRole: r.source_role,
  leaseUntil: r.lease_until,
  progressBytes: num(r.progress_bytes),
  error: r.error,
  createdAt: r.created_at,
  startedAt: r.started_at,
  finishedAt: r.finished_at,
  expiredAt: r.expired_at,
});

/** `<repo root>/<region>/logical/<database id>`: beside the continuous backups' repositories. */
export function logicalBackupDir(repoRoot: string, region: string, databaseId: string): string {
  return path.join(path.resolve(repoRoot), region, "logical", databaseId);
}

export interface Schedule {
  enabled: boolean;
  hours: number[];
  /** Slots before this moment are not taken. */
  since: Date;
}

export async function scheduleOf(q: Queryable, db: Database): Promise<Schedule> {
  const { rows } = await q.query<{ enabled: boolean; hours: number[]; updated_at: Date }>(
    "SELECT enabled, hours, updated_at FROM logical_backup_schedules WHERE database_id = $1",
    [db.id],
  );
  const r = rows[0];
  return r
    ? { enabled: r.enabled, hours: r.hours, since: r.updated_at }
    : { enabled: true, hours: DEFAULT_SCHEDULE_HOURS, since: db.createdAt };
}

export async function saveSchedule(
  q: Queryable,
  db: Database,
  change: { enabled?: boolean | undefined; hours?: number[] | undefined },
): Promise<Schedule> {
  const current = await scheduleOf(q, db);
  const enabled = change.enabled ?? current.enabled;
  const hours = change.hours ?? current.hours;
  const { rows } = await q.query<{ updated_at: Date }>(
    `INSERT INTO logical_backup_schedules (database_id, enabled, hours) VALUES ($1, $2, $3)
     ON CONFLICT (database_id) DO UPDATE SET enabled = excluded.enabled, hours = excluded.hours,
       updated_at = now()
     RETURNING updated_at`,
    [db.id, enabled, hours],
  );
  return { enabled, hours, since: rows[0]!.updated_at };
}

export function newLogicalBackupId(): string {
  return `bkp-${randomBytes(10).toString("hex")}`;
}

/**
 * A backup waiting for its dump. A periodic one is made once per slot: null when that
 * slot already has its backup. A second manual one while one waits or runs violates the
 * schema's unique index (the caller turns it into a conflict).
 */
export async function insertLogicalBackup(
  q: Queryable,
  db: Database,
  b: { method: LogicalBackupMethod; slot?: Date; userId?: string; repoRoot: string; now: Date },
): Promise<LogicalBackup | null> {
  const id = newLogicalBackupId();
  const file = path.join(logicalBackupDir(b.repoRoot, db.region, db.id), `${id}.tar.gz`);
  const { rows } = await q.query<LogicalBackupRow>(
    `INSERT INTO logical_backups (id, database_id, method, name, slot, file_path, user_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (database_id, slot) WHERE method = 'periodic' DO NOTHING RETURNING *`,
    [id, db.id, b.method, backupName(b.slot ?? b.now, db.resourceId), b.slot ?? null, file, b.userId ?? null],
  );
  return rows[0] ? toLogicalBackup(rows[0]) : null;
}

/** The backups users see: newest first, expired ones left out. */
export async function listLogicalBackups(q: Queryable, databaseId: string): Promise<LogicalBackup[]> {
  const { rows } = await q.query<LogicalBackupRow>(
    `SELECT * FROM logical_backups WHERE database_id = $1 AND expired_at IS NULL
     ORDER BY created_at DESC, id DESC`,
    [databaseId],
  );
  return rows.map(toLogicalBackup);
}

export async function findLogicalBackup(q: Queryable, id: string): Promise<LogicalBackup | null> {
  const { rows } = await q.query<LogicalBackupRow>(
    "SELECT * FROM logical_backups WHERE id = $1 AND expired_at IS NULL",
    [id],
  );
  return rows[0] ? toLogicalBackup(rows[0]) : null;
}

/** Shared PostgreSQL databases that run, with their schedule (defaults when none was set). */
export async function periodicCandidates(
  q: Queryable,
): Promise<Array<{ databaseId: string; schedule: Schedule }>> {
  const { rows } = await q.query<{ id: string; enabled: boolean; hours: number[]; since: Date }>(
    `SELECT d.id, coalesce(s.enabled, true) AS enabled, coalesce(s.hours, $1::integer[]) AS hours,
            coalesce(s.updated_at, d.created_at) AS since
     FROM databases d LEFT JOIN logical_backup_schedules s ON s.database_id = d.id
     WHERE d.model = 'shared' AND d.engine = 'postgresql' AND d.phase = 'running'
       AND d.delete_requested_at IS NULL AND d.deleted_at IS NULL`,
    [DEFAULT_SCHEDULE_HOURS],
  );
  return rows
    .filter((r) => r.enabled)
    .map((r) => ({ databaseId: r.id, schedule: { enabled: true, hours: r.hours, since: r.since } }));
}

/** `<database id>@<slot ms>` of the periodic backups made in the last day and a bit. */
export async function recentSlots(q: Queryable): Promise<Set<string>> {
  const { rows } = await q.query<{ database_id: string; slot: Date }>(
    "SELECT database_id, slot FROM logical_backups WHERE method = 'periodic' AND slot > now() - interval '26 hours'",
  );
  return new Set(rows.map((r) => `${r.database_id}@${r.slot.getTime()}`));
}

/** Databases with done backups: retention looks at each. */
export async function databasesWithDoneBackups(q: Queryable): Promise<string[]> {
  const { rows } = await q.query<{ database_id: string }>(
    "SELECT DISTINCT database_id FROM logical_backups WHERE status = 'done' AND expired_at IS NULL",
  );
  return rows.map((r) => r.database_id);
}

export async function doneBackupsOf(
  q: Queryable,
  databaseId: string,
  method: LogicalBackupMethod,
): Promise<LogicalBackup[]> {
  const { rows } = await q.query<LogicalBackupRow>(
    `SELECT * FROM logical_backups
     WHERE database_id = $1 AND method = $2 AND status = 'done' AND expired_at IS NULL`,
    [databaseId, method],
  );
  return rows.map(toLogicalBackup);
}

/** Hidden at once; the files go next (removeExpiredFiles), then the rows. */
export async function expireLogicalBackups(q: Queryable, ids: string[]): Promise<number> {
  if (ids.length === 0) return 0;
  const { rowCount } = await q.query(
    "UPDATE logical_backups SET expired_at = now() WHERE id = ANY($1) AND expired_at IS NULL",
    [ids],
  );
  return rowCount ?? 0;
}

/** Failed backups stay listed this long (users see what failed), then go. */
export async function expireOldErrors(q: Queryable, keepMs: number): Promise<number> {
  const { rowCount } = await q.query(
    `UPDATE logical_backups SET expired_at = now()
     WHERE status = 'error' AND expired_at IS NULL AND finished_at < now() - $1 * interval '1 millisecond'`,
    [keepMs],
  );
  return rowCount ?? 0;
}

/**
 * Backups of deleted databases (or being deleted): waiting ones are cancelled, all hidden.
 * A running one stays until its runner finishes or its lease ends: its file is written last.
 */
export async function expireBackupsOfDeletedDatabases(q: Queryable): Promise<number> {
  await q.query(
    `UPDATE logical_backups b SET status = 'error', error = 'cancelled: the database was deleted',
            finished_at = now()
     FROM databases d
     WHERE d.id = b.database_id AND d.delete_requested_at IS NOT NULL AND b.status = 'scheduled'`,
  );
  const { rowCount } = await q.query(
    `UPDATE logical_backups b SET expired_at = now() FROM databases d
     WHERE d.id = b.database_id AND d.delete_requested_at IS NOT NULL AND b.expired_at IS NULL`,
  );
  return rowCount ?? 0;
}

/** Expired backups whose dump no longer runs: their file can go. */
export async function expiredToRemove(q: Queryable, limit: number): Promise<LogicalBackup[]> {
  const { rows } = await q.query<LogicalBackupRow>(
    `SELECT * FROM logical_backups WHERE expired_at IS NOT NULL AND status <> 'running'
     ORDER BY expired_at LIMIT $1`,
    [limit],
  );
  return rows.map(toLogicalBackup);
}

export async function deleteLogicalBackupRow(q: Queryable, id: string): Promise<void> {
  await q.query("DELETE FROM logical_backups WHERE id = $1 AND expired_at IS NOT NULL", [id]);
}

/** Deleted databases whose backups are all gone: their directory can go. */
export async function deletedDatabasesWithoutBackups(
  q: Queryable,
  ids: string[],
): Promise<Array<{ id: string; region: string }>> {
  if (ids.length === 0) return [];
  const { rows } = await q.query<{ id: string; region: string }>(
    `SELECT d.id, d.region FROM databases d
     WHERE d.id = ANY($1) AND d.delete_requested_at IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM logical_backups b WHERE b.database_id = d.id)`,
    [ids],
  );
  return rows;
}
