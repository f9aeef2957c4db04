// The backups a database's node is asked to keep (NodeSpec.backup): its stanza, made at the
// first placement, the policy from the configuration, the restore under way, if any, and
// for a fork being made, the source's backups it starts from.
import type { Deps } from "../api/deps.ts";
import type { S3RepoConfig } from "../config.ts";
import { recoveryWindowDays } from "../domain/backup-policy.ts";
import { findPlan } from "../domain/catalog.ts";
import type { NodeBackupSpec, NodeSeedSpec } from "../engines/postgresql/backup/types.ts";
import type { HaSpec } from "../engines/postgresql/patroni-config.ts";
import {
  ensureContinuousBackup,
  pendingRestore,
  pendingSeed,
  type PendingSeed,
} from "../store/backups.store.ts";
import type { Queryable } from "../store/db.ts";
import { repoRootOf, repoSpecOf } from "./backup-repo.ts";
import type { Database } from "../store/databases.store.ts";

/**
 * Every PostgreSQL database. An HA cluster's nodes share the database's one stanza: every
 * member archives into it, its leader's agent takes the full backups, and a restore names
 * the member that runs it (ha-restore.ts in the agent).
 */
export async function nodeBackupSpec(
  q: Queryable,
  deps: Pick<Deps, "catalog" | "config">,
  db: Database,
): Promise<NodeBackupSpec | undefined> {
  const plan = findPlan(deps.catalog, db.planId);
  const cfg = deps.config.backup;
  if (!cfg.enabled || db.engine !== "postgresql" || !plan) return undefined;
  const cb = await ensureContinuousBackup(q, db, {
    repoRoot: repoRootOf(cfg),
    retentionDays: recoveryWindowDays(db.model, plan.serviceClass),
  });
  const restore = await pendingRestore(q, db.id);
  const seed = await pendingSeed(q, db.id);
  return {
    stanza: cb.stanza,
    ...repoSpecOf(cfg.s3, cb.repoPath),
    cipherPass: cb.cipherPass,
    retentionDays: cb.retentionDays,
    fullEveryHours: cfg.fullEveryHours,
    archiveTimeoutS: cfg.archiveTimeoutS,
    checkEveryS: cfg.checkEveryS,
    // Only when off: the specs of existing nodes stay as they were.
    ...(cfg.verify ? {} : { verify: false }),
    ...(restore
      ? {
          restore: {
            id: restore.id,
            targetTime: restore.targetTime.toISOString(),
            ...(plan.nodes > 1 ? { restorer: await restorerOf(q, db.id) } : {}),
          },
        }
      : {}),
    ...(seed?.fork ? { seed: seedSpec(seed, seed.fork, cfg.s3) } : {}),
  };
}

/**
 * The member that restores an HA cluster: its leader as last reported (its agent commits the
 * transaction that ends the restore's WAL), else the first node.
 */
async function restorerOf(q: Queryable, databaseId: string): Promise<string> {
  const { rows } = await q.query<{ id: string }>(
    `SELECT id FROM instances WHERE database_id = $1 AND kind = 'node' AND desired_state <> 'deleted'
     ORDER BY (role = 'leader') DESC, ordinal LIMIT 1`,
    [databaseId],
  );
  return rows[0]?.id ?? "";
}

/**
 * An HA fork: its first node takes the source's data (then Patroni adopts it); the others
 * wait for that leader and clone it, never bootstrapping a cluster of their own.
 */
export function forkMember<T extends { backup?: NodeBackupSpec; ha: HaSpec }>(spec: T, ordinal: number): T {
  if (!spec.backup?.seed || ordinal === 0) return spec;
  const backup = { ...spec.backup };
  delete backup.seed;
  return { ...spec, backup, ha: { ...spec.ha, joinOnly: true } };
}

function seedSpec(
  seed: PendingSeed,
  fork: { username: string; dbname: string },
  s3: S3RepoConfig | null,
): NodeSeedSpec {
  return {
    id: `seed-${seed.databaseId}`,
    ...repoSpecOf(s3, seed.source.repoPath),
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
