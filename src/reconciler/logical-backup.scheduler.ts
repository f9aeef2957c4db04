// The controller's logical-backup loop, every few seconds: periodic backups made at their
// hour, runners that stopped renewing their lease retried or failed, backups nothing could
// start failed, retention applied, and the files of expired backups (and of deleted
// databases) removed. Every step is idempotent and guarded in SQL, so two controllers can
// run it at once.
import fs from "node:fs/promises";
import path from "node:path";
import type { Deps } from "../api/deps.ts";
import { dueSlots } from "../domain/logical-backup-policy.ts";
import { dumpFiles } from "../engines/postgresql/logical-dump.ts";
import { getDatabase } from "../store/databases.store.ts";
import {
  failUnstarted,
  hostsWithWaitingJobs,
  jobsWithLapsedLease,
} from "../store/logical-backup-jobs.store.ts";
import {
  databasesWithDoneBackups,
  deleteLogicalBackupRow,
  deletedDatabasesWithoutBackups,
  expireBackupsOfDeletedDatabases,
  expiredToRemove,
  expireOldErrors,
  insertLogicalBackup,
  logicalBackupDir,
  periodicCandidates,
  recentSlots,
} from "../store/logical-backups.store.ts";
import {
  applyRetention,
  backupEvent,
  DEFAULT_JOB_TIMING,
  loseJob,
  type JobTiming,
} from "./logical-backup-jobs.ts";

export interface SchedulerOptions extends JobTiming {
  tickMs: number;
  retentionEveryMs: number;
  /** A backup no runner could start for this long is failed (the reference skips it). */
  unstartedMaxWaitMs: number;
  /** Failed backups stay listed this long. */
  errorKeepMs: number;
}

export const DEFAULT_SCHEDULER_OPTIONS: SchedulerOptions = {
  ...DEFAULT_JOB_TIMING,
  tickMs: 15_000,
  retentionEveryMs: 3_600_000,
  unstartedMaxWaitMs: 6 * 3_600_000,
  errorKeepMs: 7 * 24 * 3_600_000,
};

/** Files removed per tick: a backlog drains over a few ticks rather than in one long one. */
const REMOVE_BATCH = 200;

/** The agents' long poll for jobs waits on this signal (per host). */
export const jobSignal = (hostId: string) => `logical-backup:${hostId}`;

export async function tickLogicalBackups(
  deps: Deps,
  opts: SchedulerOptions = DEFAULT_SCHEDULER_OPTIONS,
  /** Retention of every database (a done backup applies its own at once): hourly is plenty. */
  { retention = true }: { retention?: boolean } = {},
): Promise<void> {
  await schedulePeriodic(deps);
  for (const id of await jobsWithLapsedLease(deps.db)) {
    await loseJob(deps, id, "the dump's runner stopped answering (agent or host lost)", opts);
  }
  await deps.db.tx(async (q) => {
    for (const b of await failUnstarted(q, opts.unstartedMaxWaitMs)) {
      await backupEvent(deps, q, b, "database_backup_failed");
    }
  });
  if (retention) {
    for (const id of await databasesWithDoneBackups(deps.db)) {
      await deps.db.tx((q) => applyRetention(deps, q, id));
    }
  }
  await expireOldErrors(deps.db, opts.errorKeepMs);
  await expireBackupsOfDeletedDatabases(deps.db);
  await removeExpired(deps);
  for (const hostId of await hostsWithWaitingJobs(deps.db)) deps.hostSignals.notify(jobSignal(hostId));
}

/** One backup per scheduled hour that passed (at most a day late), each slot made once. */
async function schedulePeriodic(deps: Deps): Promise<void> {
  const now = deps.now();
  const made = await recentSlots(deps.db);
  for (const c of await periodicCandidates(deps.db)) {
    const slots = dueSlots(c.schedule.hours, now, c.schedule.since).filter(
      (s) => !made.has(`${c.databaseId}@${s.getTime()}`),
    );
    if (slots.length === 0) continue;
    const db = await getDatabase(deps.db, c.databaseId);
    if (!db) continue;
    for (const slot of slots) {
      const b = await insertLogicalBackup(deps.db, db, {
        method: "periodic",
        slot,
        repoRoot: deps.config.backup.repoPath,
        now,
      });
      if (b) deps.log.info("periodic logical backup scheduled", { db: db.id, backup: b.id });
    }
  }
}

/** Files first, rows after: a crash in between leaves a row whose file is already gone. */
async function removeExpired(deps: Deps): Promise<void> {
  const touched = new Set<string>();
  for (const b of await expiredToRemove(deps.db, REMOVE_BATCH)) {
    try {
      await removeArchive(b.filePath);
    } catch (err) {
      // One file that resists (a volume gone read-only) must not stop the others: next tick.
      deps.log.warn("cannot remove a logical backup's file", { backup: b.id, err: (err as Error).message });
      continue;
    }
    await deleteLogicalBackupRow(deps.db, b.id);
    touched.add(b.databaseId);
  }
  const root = deps.config.backup.repoPath;
  for (const db of await deletedDatabasesWithoutBackups(deps.db, [...touched])) {
    await fs.rm(logicalBackupDir(root, db.region, db.id), { recursive: true, force: true });
  }
}

/** The archive, and what a lost runner may have left beside it (dump-files.ts names them). */
export async function removeArchive(file: string): Promise<void> {
  if (!path.isAbsolute(file) || !file.endsWith(".tar.gz")) return;
  for (const p of dumpFiles(file).all) await fs.rm(p, { recursive: true, force: true });
}

export interface LogicalBackupScheduler {
  stop(): Promise<void>;
}

export function startLogicalBackupScheduler(
  deps: Deps,
  opts: SchedulerOptions = DEFAULT_SCHEDULER_OPTIONS,
): LogicalBackupScheduler {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | null = null;
  let retainedAt = 0;
  const loop = () => {
    if (stopped) return;
    const retention = Date.now() - retainedAt >= opts.retentionEveryMs;
    if (retention) retainedAt = Date.now();
    running = tickLogicalBackups(deps, opts, { retention })
      .catch((err: Error) => deps.log.error("logical backup tick failed", { err: err.message }))
      .finally(() => {
        running = null;
        if (!stopped) timer = setTimeout(loop, opts.tickMs);
      });
  };
  timer = setTimeout(loop, Math.min(opts.tickMs, 1000));
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
