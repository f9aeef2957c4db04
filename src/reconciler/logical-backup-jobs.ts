// The controller's side of logical backup jobs: outcomes reported by agents, runners lost,
// retention applied when a backup is done, and the events users see (reference §2.8).
import type { Deps } from "../api/deps.ts";
import { findPlan } from "../domain/catalog.ts";
import { logicalRetention, manualToEvict, periodicToEvict } from "../domain/logical-backup-policy.ts";
import type { Queryable } from "../store/db.ts";
import { eventAddonData, getDatabase, scopeIdOf } from "../store/databases.store.ts";
import { recordEvent } from "../store/events.store.ts";
import { failOrRetry, lockRunningJob, markDone } from "../store/logical-backup-jobs.store.ts";
import { doneBackupsOf, expireLogicalBackups, type LogicalBackup } from "../store/logical-backups.store.ts";

/** How jobs are run: leases, tries, waits. Tests shorten them. */
export interface JobTiming {
  /** A runner that has not renewed its lease for this long is lost. */
  leaseMs: number;
  /** Tries of one backup (a lost runner or a failed dump each use one). */
  maxAttempts: number;
  /** Wait before the next try. */
  retryAfterMs: number;
}

export const DEFAULT_JOB_TIMING: JobTiming = { leaseMs: 60_000, maxAttempts: 3, retryAfterMs: 30_000 };

export interface JobOutcome {
  id: string;
  attempt: number;
  status: "done" | "failed";
  sizeBytes: number;
  error: string;
}

/**
 * Records what a runner says of its job. Returns false when the job is no longer this
 * runner's (then its file is not to be trusted, and the agent removes it).
 */
export async function recordOutcome(
  deps: Deps,
  hostId: string,
  outcome: JobOutcome,
  timing: JobTiming = DEFAULT_JOB_TIMING,
): Promise<boolean> {
  return deps.db.tx(async (q) => {
    const job = await lockRunningJob(q, { id: outcome.id, hostId, attempt: outcome.attempt });
    if (!job) return false;
    if (job.expiredAt) {
      // Its database was deleted meanwhile: the backup ends here, unlisted.
      await failOrRetry(q, job.id, "cancelled: the database was deleted", { ...timing, maxAttempts: 0 });
      return false;
    }
    if (outcome.status === "done") {
      const done = await markDone(q, job.id, outcome.sizeBytes);
      deps.log.info("logical backup done", { db: done.databaseId, backup: done.id, bytes: done.sizeBytes });
      await backupEvent(deps, q, done, "database_backup_succeeded");
      await applyRetention(deps, q, done.databaseId);
      return true;
    }
    await failed(deps, q, job, outcome.error || "the dump failed", timing);
    return true;
  });
}

/** A runner gone (agent restarted, host lost, lease over): the backup is retried or failed. */
export async function loseJob(
  deps: Deps,
  id: string,
  reason: string,
  timing: JobTiming = DEFAULT_JOB_TIMING,
): Promise<void> {
  await deps.db.tx(async (q) => {
    const { rows } = await q.query<{ id: string }>(
      "SELECT id FROM logical_backups WHERE id = $1 AND status = 'running' FOR UPDATE",
      [id],
    );
    if (rows[0]) await failed(deps, q, { id }, reason, timing);
  });
}

async function failed(
  deps: Deps,
  q: Queryable,
  job: Pick<LogicalBackup, "id">,
  error: string,
  timing: JobTiming,
): Promise<void> {
  const after = await failOrRetry(q, job.id, error, timing);
  if (after) {
    const next = after.status === "error" ? "failed for good" : `retried (try ${after.attempt + 1})`;
    deps.log.warn(`logical backup ${next}: ${error}`, { db: after.databaseId, backup: after.id });
  }
  if (after?.status === "error" && !after.expiredAt) {
    await backupEvent(deps, q, after, "database_backup_failed");
  }
}

/** Retention of one database's done backups: periodic by the class's GFS, manual by the cap. */
export async function applyRetention(deps: Deps, q: Queryable, databaseId: string): Promise<number> {
  const db = await getDatabase(q, databaseId);
  const plan = db && findPlan(deps.catalog, db.planId);
  if (!db || !plan) return 0;
  const r = logicalRetention(plan.serviceClass);
  const periodic = (await doneBackupsOf(q, databaseId, "periodic")).map((b) => ({
    id: b.id,
    at: b.slot ?? b.createdAt,
  }));
  const manual = (await doneBackupsOf(q, databaseId, "manual")).map((b) => ({ id: b.id, at: b.createdAt }));
  const evict = [...periodicToEvict(periodic, r, deps.now()), ...manualToEvict(manual, r.manualCap)];
  return expireLogicalBackups(q, evict);
}

/** database_backup_succeeded / database_backup_failed, with the reference's type_data. */
export async function backupEvent(
  deps: Deps,
  q: Queryable,
  b: LogicalBackup,
  type: "database_backup_succeeded" | "database_backup_failed",
): Promise<void> {
  const db = await getDatabase(q, b.databaseId);
  if (!db) return;
  await recordEvent(q, {
    appId: scopeIdOf(db),
    databaseId: db.id,
    type,
    typeData: {
      addon_uuid: db.id,
      addon_name: eventAddonData(deps.catalog, db).addon_provider_name,
      resource_id: db.resourceId,
      backup_method: b.method,
      backup_kind: "logical",
      backup_id: b.id,
      backup_name: b.name,
      backup_status: b.status,
      started_at: (b.startedAt ?? b.createdAt).toISOString(),
      ended_at: (b.finishedAt ?? deps.now()).toISOString(),
      ...(b.status === "error" ? { error: b.error ?? "" } : {}),
    },
  });
}
