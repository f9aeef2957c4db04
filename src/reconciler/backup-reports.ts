// The controller's side of backup reports: each node's agent says what its stanza holds,
// how far its archive reaches and how its last restore ended; this records it, derives the
// recovery window, and tells users about new and failed backups (events, reference §2.8).
import type { Deps } from "../api/deps.ts";
import { recoveryWindow } from "../engines/postgresql/backup/backup-info.ts";
import type { BackupReport, BaseBackupReport, RestoreOutcome } from "../engines/postgresql/backup/types.ts";
import {
  finishRestore,
  lockContinuousBackup,
  pendingRestore,
  recordBaseBackups,
  saveReportedStatus,
  type BaseBackupRow,
} from "../store/backups.store.ts";
import { recordVerifications, type VerificationVerdict } from "../store/backup-verification.store.ts";
import type { Queryable } from "../store/db.ts";
import { eventAddonData, getDatabase, scopeIdOf, type Database } from "../store/databases.store.ts";
import { recordEvent } from "../store/events.store.ts";

/** The last report applied per node: a report repeats every heartbeat, mostly unchanged. */
const applied = new Map<string, string>();
const MAX_REMEMBERED = 100_000;

type Json = Record<string, unknown>;
const isObj = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
const isTime = (v: unknown): v is string => typeof v === "string" && !Number.isNaN(Date.parse(v));
const optTime = (v: unknown): Date | null => (isTime(v) ? new Date(v) : null);

function parseSet(v: unknown): BaseBackupRow | null {
  if (!isObj(v)) return null;
  const b = v as Partial<Record<keyof BaseBackupReport, unknown>>;
  if (typeof b.label !== "string" || !/^[0-9A-Za-z_-]{1,64}$/.test(b.label)) return null;
  if (b.type !== "full" && b.type !== "diff" && b.type !== "incr") return null;
  if (!Number.isInteger(b.timeline) || !isTime(b.started_at) || !isTime(b.stopped_at)) return null;
  return {
    label: b.label,
    type: b.type,
    timeline: b.timeline as number,
    startedAt: new Date(b.started_at),
    stoppedAt: new Date(b.stopped_at),
    sizeBytes: Math.max(0, Number(b.size) || 0),
    repoSizeBytes: Math.max(0, Number(b.repo_size) || 0),
    reason: typeof b.reason === "string" ? b.reason.slice(0, 40) : null,
  };
}

/** A set's verification verdict, when its node reached one (pending sets have none). */
function parseVerdict(v: unknown): VerificationVerdict | null {
  if (!isObj(v) || typeof v.label !== "string" || !isObj(v.verification)) return null;
  const { status, at, detail } = v.verification;
  if ((status !== "verified" && status !== "failed") || !isTime(at)) return null;
  return {
    label: v.label,
    status,
    at: new Date(at),
    detail: typeof detail === "string" ? detail.slice(0, 1000) : null,
  };
}

interface ParsedReport {
  stanza: string;
  timeline: number | null;
  /** The current timeline and those it continues (HA failovers); see BackupReport.timelines. */
  timelines: number[] | null;
  backups: BaseBackupRow[];
  verdicts: VerificationVerdict[];
  archivedUntil: Date | null;
  archiveError: string | null;
  failure: { at: Date; message: string } | null;
  restore: RestoreOutcome | null;
}

/** Checks the shape an agent sent; anything malformed is ignored, never half-applied. */
export function parseBackupReport(v: unknown): ParsedReport | null {
  if (!isObj(v) || typeof v.stanza !== "string" || !Array.isArray(v.backups)) return null;
  const r = v as Partial<Record<keyof BackupReport, unknown>>;
  const backups = (v.backups as unknown[]).map(parseSet);
  if (backups.some((b) => b === null)) return null;
  const failure = isObj(r.failure) && isTime(r.failure.at) ? r.failure : null;
  const restore = isObj(r.restore) ? (r.restore as Partial<Record<keyof RestoreOutcome, unknown>>) : null;
  const restoreOk =
    restore && typeof restore.id === "string" && (restore.status === "done" || restore.status === "failed");
  return {
    stanza: v.stanza,
    timeline: Number.isInteger(r.timeline) ? (r.timeline as number) : null,
    timelines:
      Array.isArray(r.timelines) && r.timelines.length > 0 && r.timelines.every((t) => Number.isInteger(t))
        ? (r.timelines as number[])
        : null,
    backups: backups as BaseBackupRow[],
    verdicts: (v.backups as unknown[]).map(parseVerdict).filter((x): x is VerificationVerdict => x !== null),
    archivedUntil: optTime(r.archived_until),
    archiveError: typeof r.archive_error === "string" ? r.archive_error.slice(0, 1000) : null,
    failure: failure
      ? { at: new Date(failure.at as string), message: String(failure.message).slice(0, 1000) }
      : null,
    restore: restoreOk
      ? {
          id: restore.id as string,
          status: restore.status as RestoreOutcome["status"],
          error: typeof restore.error === "string" ? restore.error.slice(0, 2000) : null,
          at: isTime(restore.at) ? restore.at : new Date().toISOString(),
        }
      : null,
  };
}

/**
 * Applies the `backup` field of each reported instance of a host. Only nodes placed on that
 * host count. Returns the databases whose reconcile should run now (a restore ended).
 */
export async function applyBackupReports(
  deps: Deps,
  hostId: string,
  instances: unknown[],
): Promise<string[]> {
  const wake: string[] = [];
  for (const inst of instances) {
    if (!isObj(inst) || typeof inst.id !== "string" || inst.backup === undefined) continue;
    const key = `${hostId}/${inst.id}`;
    const text = JSON.stringify(inst.backup);
    if (applied.get(key) === text) continue;
    const report = parseBackupReport(inst.backup);
    if (!report) continue;
    let databaseId: string | null;
    try {
      databaseId = await deps.db.tx((q) => applyOne(deps, q, hostId, inst.id as string, report));
    } catch (err) {
      // The rest of the host's report still counts; this one is applied again next time.
      deps.log.warn("cannot apply a backup report", { inst: inst.id, err: (err as Error).message });
      continue;
    }
    if (applied.size > MAX_REMEMBERED) applied.clear();
    applied.set(key, text);
    if (databaseId) wake.push(databaseId);
  }
  return wake;
}

async function applyOne(
  deps: Deps,
  q: Queryable,
  hostId: string,
  instanceId: string,
  report: ParsedReport,
): Promise<string | null> {
  const { rows } = await q.query<{ database_id: string }>(
    "SELECT database_id FROM instances WHERE id = $1 AND host_id = $2 AND kind = 'node'",
    [instanceId, hostId],
  );
  const databaseId = rows[0]?.database_id;
  if (!databaseId) return null;
  const cb = await lockContinuousBackup(q, databaseId);
  const db = await getDatabase(q, databaseId);
  // Another database's stanza, or a repository already removed with its database: ignored.
  if (!cb || !db || cb.repoRemovedAt || report.stanza !== cb.stanza) return null;
  for (const b of await recordBaseBackups(q, databaseId, report.backups)) {
    await backupEvent(deps, q, db, "database_backup_succeeded", {
      backup_id: b.label,
      backup_status: "done",
      started_at: b.startedAt.toISOString(),
      ended_at: b.stoppedAt.toISOString(),
    });
  }
  // An unverified backup is not a backup: a failed verification is a failed backup for users.
  for (const v of await recordVerifications(q, databaseId, report.verdicts)) {
    const set = report.backups.find((b) => b.label === v.label);
    if (v.status !== "failed" || !set) continue;
    await backupEvent(deps, q, db, "database_backup_failed", {
      backup_id: v.label,
      backup_status: "error",
      started_at: set.startedAt.toISOString(),
      ended_at: set.stoppedAt.toISOString(),
      verification_status: "failed",
      error: `verification failed: ${v.detail ?? "no detail"}`,
    });
  }
  // One event per run of failures: the next success clears it.
  if (report.failure && !cb.lastFailure) {
    await backupEvent(deps, q, db, "database_backup_failed", {
      backup_status: "error",
      started_at: report.failure.at.toISOString(),
      ended_at: report.failure.at.toISOString(),
      error: report.failure.message,
    });
  }
  const window = recoveryWindow(report.backups, report.timelines ?? report.timeline, report.archivedUntil);
  await saveReportedStatus(q, databaseId, {
    timeline: report.timeline,
    earliest: window.earliest,
    latest: window.latest,
    archiveError: report.archiveError,
    failure: report.failure,
  });
  const pending = await pendingRestore(q, databaseId);
  if (!report.restore || pending?.id !== report.restore.id) return null;
  await finishRestore(q, pending.id, {
    status: report.restore.status === "done" ? "done" : "error",
    error: report.restore.error,
  });
  return databaseId;
}

async function backupEvent(
  deps: Deps,
  q: Queryable,
  db: Database,
  type: string,
  data: Record<string, unknown>,
): Promise<void> {
  const addon = eventAddonData(deps.catalog, db);
  await recordEvent(q, {
    appId: scopeIdOf(db),
    databaseId: db.id,
    type,
    typeData: {
      addon_uuid: db.id,
      addon_name: addon.addon_provider_name,
      resource_id: db.resourceId,
      // Full base backups are taken on a schedule: the reference's periodic method.
      backup_method: "periodic",
      backup_kind: "continuous",
      ...data,
    },
  });
}
