// The backup part of a database's reconcile pass, after its main step: restores that ended
// finish their operation, the archive's health is told in events, and a deleted database's
// repository is removed with it (reference: deleting a database deletes its continuous backups).
import fs from "node:fs/promises";
import path from "node:path";
import type { Deps } from "../api/deps.ts";
import { archiveHealth } from "../domain/backup-policy.ts";
import {
  cancelPendingRestore,
  countPendingForksOf,
  findContinuousBackup,
  finishRestoreOperations,
  markRepoRemoved,
  markSeedDone,
  setHealth,
  type ContinuousBackup,
} from "../store/backups.store.ts";
import { eventAddonData, getDatabase, scopeIdOf, type Database } from "../store/databases.store.ts";
import { recordEvent } from "../store/events.store.ts";
import { instancesOfDatabase } from "../store/instances.store.ts";
import { setOperationProgress } from "../store/switchovers.store.ts";
import { isS3Repository, removeS3Repository } from "./backup-repo.ts";
import type { PassResult } from "./loop.ts";

/** A repository that cannot be removed yet (a file still written) is tried again this late. */
const REMOVE_RETRY_MS = 30_000;

export async function reconcileBackups(
  deps: Deps,
  databaseId: string,
  pass: PassResult,
): Promise<PassResult> {
  const cb = await findContinuousBackup(deps.db, databaseId);
  const db = cb && (await getDatabase(deps.db, databaseId));
  if (!cb || !db) return pass;
  if (db.deleteRequestedAt) {
    await cancelPendingRestore(deps.db, databaseId);
    if (!db.deletedAt || cb.repoRemovedAt) return pass;
    // A fork still being made restores from this repository: it goes once the fork has its data.
    const forks = await countPendingForksOf(deps.db, databaseId);
    if (forks > 0) {
      const message = `${pass.message}; its backup repository stays while ${forks} fork(s) restore from it`;
      return { message, requeueAfterMs: Math.min(pass.requeueAfterMs ?? REMOVE_RETRY_MS, REMOVE_RETRY_MS) };
    }
    try {
      await (isS3Repository(cb)
        ? removeS3Repository(deps.config.backup.s3, cb, db.id)
        : removeRepository(cb, db));
      await markRepoRemoved(deps.db, databaseId);
      return { ...pass, message: `${pass.message}; its backup repository ${cb.repoPath} was removed` };
    } catch (err) {
      const message = `${pass.message}; cannot remove its backup repository yet: ${(err as Error).message}`;
      return { message, requeueAfterMs: Math.min(pass.requeueAfterMs ?? REMOVE_RETRY_MS, REMOVE_RETRY_MS) };
    }
  }
  await finishRestoreOperations(deps.db, databaseId);
  await tellRestoreProgress(deps, databaseId);
  // Running means its node converged, and a fork's node converges only once seeded.
  if (db.phase === "running") await markSeedDone(deps.db, databaseId);
  await tellHealth(deps, db, cb);
  return pass;
}

/**
 * The step a restore in place is at, in its operation's progress: the node restoring (an HA
 * cluster's other members stop meanwhile), then the nodes starting again (standbys cloned).
 */
async function tellRestoreProgress(deps: Deps, databaseId: string): Promise<void> {
  const { rows } = await deps.db.query<{ status: string; target_time: Date; generation: number }>(
    `SELECT r.status, r.target_time, o.target_generation AS generation
     FROM pitr_restores r JOIN operations o ON o.id = r.operation_id
     WHERE r.database_id = $1 AND o.status = 'running' AND r.status <> 'error'
     ORDER BY r.created_at DESC LIMIT 1`,
    [databaseId],
  );
  const r = rows[0];
  if (!r) return;
  const nodes = (await instancesOfDatabase(deps.db, databaseId)).filter(
    (i) => i.kind === "node" && i.desiredState !== "deleted",
  );
  const target = r.target_time.toISOString();
  let progress: string;
  if (r.status === "pending") {
    const others = nodes.length > 1 ? `; the other ${nodes.length - 1} node(s) stop and wait for it` : "";
    progress = `restoring the data as of ${target}${others}`;
  } else {
    const up = nodes.filter((n) => n.status === "running" && n.observedGeneration >= r.generation).length;
    const clones = nodes.length > 1 ? " (standbys cloned again from the restored leader)" : "";
    progress = `restored as of ${target}: ${up} of ${nodes.length} node(s) running${clones}`;
  }
  await setOperationProgress(deps.db, databaseId, progress);
}

/** Only ever the database's own directory (named after its id), whatever the path says. */
async function removeRepository(cb: ContinuousBackup, db: Database): Promise<void> {
  if (path.basename(cb.repoPath) !== db.id || !path.isAbsolute(cb.repoPath)) {
    throw new Error(`refusing to remove ${cb.repoPath}: not the repository of ${db.id}`);
  }
  await fs.rm(cb.repoPath, { recursive: true, force: true });
}

/** database_continuousbackup_healthy|delayed|stale, once per change (reference §2.8). */
async function tellHealth(deps: Deps, db: Database, cb: ContinuousBackup): Promise<void> {
  if (db.phase !== "running" || !cb.latestRecoverableAt) return;
  const now = deps.now();
  const health = archiveHealth(cb.latestRecoverableAt, now);
  if (health === cb.health) return;
  await deps.db.tx(async (q) => {
    await setHealth(q, db.id, health);
    await recordEvent(q, {
      appId: scopeIdOf(db),
      databaseId: db.id,
      type: `database_continuousbackup_${health}`,
      typeData: {
        addon_uuid: db.id,
        addon_name: eventAddonData(deps.catalog, db).addon_provider_name,
        resource_id: db.resourceId,
        status: health,
        error: cb.archiveError ?? "",
        recoverable: true,
        checked_at: now.toISOString(),
        unrecoverable_duration_seconds: Math.max(
          0,
          Math.round((now.getTime() - cb.latestRecoverableAt!.getTime()) / 1000),
        ),
      },
    });
  });
}
