// Forks: a new database whose first data is another database's backups at a point in time
// (`restore_from: {database_id, restore_time}` on POST /v1/apps/:app/addons and
// POST /v1/databases; the reference has no such thing). Checked and recorded in the
// transaction that provisions the new database, so a refused fork creates nothing.
import { checkForkPlan, checkRestoreTime, parseRestoreTime } from "../domain/backup-policy.ts";
import { findPlan } from "../domain/catalog.ts";
import { ValidationError } from "../domain/errors.ts";
import { canManageDatabase, type Role } from "../domain/rules.ts";
import { roleOnApp, roleOnDedicatedDatabase, findApp } from "../store/apps.store.ts";
import { findContinuousBackup, insertSeed } from "../store/backups.store.ts";
import type { Queryable } from "../store/db.ts";
import { findLiveDatabase, type Database } from "../store/databases.store.ts";
import type { Deps } from "./deps.ts";

export interface ForkRequest {
  databaseId: string;
  restoreTime: Date;
}

const FIELD = "restore_from";

/** The `restore_from` field of a creation request (absent: not a fork). */
export function readForkRequest(raw: unknown): ForkRequest | null {
  if (raw === undefined || raw === null) return null;
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw ValidationError.field(FIELD, "must be a JSON object: {database_id, restore_time}");
  }
  const o = raw as Record<string, unknown>;
  if (typeof o.database_id !== "string" || o.database_id === "") {
    throw ValidationError.field(`${FIELD}.database_id`, "is required: the id of the database to fork");
  }
  return { databaseId: o.database_id, restoreTime: prefixed(() => parseRestoreTime(o.restore_time)) };
}

/** The policy's errors name `restore_time`; here the field sits under `restore_from`. */
function prefixed<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof ValidationError && err.fields.restore_time) {
      throw new ValidationError({ [`${FIELD}.restore_time`]: err.fields.restore_time });
    }
    throw err;
  }
}

async function roleOn(q: Queryable, db: Database, userId: string): Promise<Role> {
  if (!db.appId) return roleOnDedicatedDatabase(q, db, userId);
  const { rows } = await q.query<{ region: string }>("SELECT region FROM apps WHERE id = $1", [db.appId]);
  const app = rows[0] ? await findApp(q, rows[0].region, db.appId) : null;
  return app ? roleOnApp(q, app, userId) : "none";
}

/**
 * Awaits the new database's provisioning, then checks and records its fork: the source is
 * a live database of the same region and kind the user may manage, the time inside its
 * recovery window, the plan the same or bigger. Any refusal aborts the transaction.
 */
export async function withFork<T extends { database: Database }>(
  q: Queryable,
  deps: Pick<Deps, "catalog" | "now">,
  fork: ForkRequest | null,
  userId: string,
  provisioned: Promise<T>,
): Promise<T> {
  const result = await provisioned;
  if (!fork) return result;
  const db = result.database;
  const source = await findLiveDatabase(q, fork.databaseId);
  const role = source && source.region === db.region ? await roleOn(q, source, userId) : "none";
  if (!source || !canManageDatabase(role)) {
    throw ValidationError.field(
      `${FIELD}.database_id`,
      `no database ${fork.databaseId} you manage in ${db.region}`,
    );
  }
  const [sourcePlan, plan] = [findPlan(deps.catalog, source.planId), findPlan(deps.catalog, db.planId)];
  if (!sourcePlan || !plan) throw ValidationError.field("plan_id", "the plan is no longer in the catalog");
  checkForkPlan(sourcePlan, plan);
  const cb = await findContinuousBackup(q, source.id);
  const window = { earliest: cb?.earliestRecoverableAt ?? null, latest: cb?.latestRecoverableAt ?? null };
  prefixed(() => checkRestoreTime(fork.restoreTime, window, deps.now()));
  await insertSeed(q, {
    databaseId: db.id,
    sourceDatabaseId: source.id,
    targetTime: fork.restoreTime,
    sourceTimeline: cb!.timeline ?? 1,
  });
  return result;
}
