// The backups a database's node is asked to keep (NodeSpec.backup): its stanza, made at the
// first placement, the policy from the configuration, the restore under way, if any, and
// for a fork being made, the source's backups it starts from.
import type { Deps } from "../api/deps.ts";
import { recoveryWindowDays } from "../domain/backup-policy.ts";
import { findPlan } from "../domain/catalog.ts";
import type { NodeBackupSpec, NodeSeedSpec } from "../engines/postgresql/backup/types.ts";
import {
  ensureContinuousBackup,
  pendingRestore,
  pendingSeed,
  type PendingSeed,
} from "../store/backups.store.ts";
import type { Queryable } from "../store/db.ts";
import type { Database } from "../store/databases.store.ts";

/**
 * Single-node PostgreSQL plans only: on an HA cluster every node would archive and back up
 * into one stanza; the primary-only wiring belongs with Patroni.
 */
export async function nodeBackupSpec(
  q: Queryable,
  deps: Pick<Deps, "catalog" | "config">,
  db: Database,
): Promise<NodeBackupSpec | undefined> {
  const plan = findPlan(deps.catalog, db.planId);
  const cfg = deps.config.backup;
  if (!cfg.enabled || db.engine !== "postgresql" || !plan || plan.nodes !== 1) return undefined;
  const cb = await ensureContinuousBackup(q, db, {
    repoRoot: cfg.repoPath,
    retentionDays: recoveryWindowDays(db.model, plan.serviceClass),
  });
  const restore = await pendingRestore(q, db.id);
  const seed = await pendingSeed(q, db.id);
  return {
    stanza: cb.stanza,
    repoPath: cb.repoPath,
    cipherPass: cb.cipherPass,
    retentionDays: cb.retentionDays,
    fullEveryHours: cfg.fullEveryHours,
    archiveTimeoutS: cfg.archiveTimeoutS,
    checkEveryS: cfg.checkEveryS,
    // Only when off: the specs of existing nodes stay as they were.
    ...(cfg.verify ? {} : { verify: false }),
    ...(restore ? { restore: { id: restore.id, targetTime: restore.targetTime.toISOString() } } : {}),
    ...(seed?.fork ? { seed: seedSpec(seed, seed.fork) } : {}),
  };
}

function seedSpec(seed: PendingSeed, fork: { username: string; dbname: string }): NodeSeedSpec {
  return {
    id: `seed-${seed.databaseId}`,
    repoPath: seed.source.repoPath,
    stanza: seed.source.stanza,
    cipherPass: seed.source.cipherPass,
    targetTime: seed.targetTime.toISOString(),
    timeline: seed.sourceTimeline,
    rename: {
      fromUser: seed.source.username,
      fromDatabase: seed.source.dbname,
      toUser: fork.username,
      toDatabase: fork.dbname,
    },
  };
}
