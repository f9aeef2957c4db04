// Databases: one aggregate for Shared add-ons (attached to an app) and Dedicated databases
// (standalone, named). The API writes the spec; reconcilers alone write the status.
import { randomInt } from "node:crypto";
import type { Catalog } from "../domain/catalog.ts";
import { findPlan, findProvider } from "../domain/catalog.ts";
import { newId } from "../domain/ids.ts";
import type { Role } from "../domain/rules.ts";
import { reserveName } from "./apps.store.ts";
import { isPgError, UNIQUE_VIOLATION, type Queryable } from "./db.ts";
import { recordEvent } from "./events.store.ts";
import { insertOperation, type Operation } from "./operations.store.ts";
import { enqueueReconcile } from "./reconcile-queue.store.ts";

export type DatabaseModel = "shared" | "dedicated";
export type Phase = "provisioning" | "running" | "updating" | "deleting" | "deleted" | "suspended" | "failed";

export interface Database {
  id: string;
  model: DatabaseModel;
  appId: string | null;
  name: string | null;
  resourceId: string;
  ownerId: string;
  projectId: string | null;
  region: string;
  providerId: string;
  engine: string;
  // Spec
  planId: string;
  ipRange: string | null;
  generation: number;
  deleteRequestedAt: Date | null;
  // Status
  observedGeneration: number;
  phase: Phase;
  phaseReason: string;
  currentPlanId: string | null;
  deletedAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

interface DatabaseRow {
  id: string;
  model: DatabaseModel;
  app_id: string | null;
  name: string | null;
  resource_id: string;
  owner_id: string;
  project_id: string | null;
  region: string;
  provider_id: string;
  engine: string;
  plan_id: string;
  ip_range: string | null;
  generation: number;
  delete_requested_at: Date | null;
  observed_generation: number;
  phase: Phase;
  phase_reason: string;
  current_plan_id: string | null;
  deleted_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

const toDatabase = (r: DatabaseRow): Database => ({
  id: r.id,
  model: r.model,
  appId: r.app_id,
  name: r.name,
  resourceId: r.resource_id,
  ownerId: r.owner_id,
  projectId: r.project_id,
  region: r.region,
  providerId: r.provider_id,
  engine: r.engine,
  planId: r.plan_id,
  ipRange: r.ip_range,
  generation: r.generation,
  deleteRequestedAt: r.delete_requested_at,
  observedGeneration: r.observed_generation,
  phase: r.phase,
  phaseReason: r.phase_reason,
  currentPlanId: r.current_plan_id,
  deletedAt: r.deleted_at,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

/** The scope id operations and events of a database are filed under (app, or itself). */
export const scopeIdOf = (db: Database): string => db.appId ?? db.id;

/** Names shown in events, as the reference's EventAddon carries them. */
export function eventAddonData(catalog: Catalog, db: Database): Record<string, string> {
  return {
    addon_provider_name: findProvider(catalog, db.providerId)?.name ?? db.providerId,
    plan_name: findPlan(catalog, db.planId)?.name ?? db.planId,
    resource_id: db.resourceId,
  };
}

export interface NewDatabase {
  model: DatabaseModel;
  appId?: string;
  name?: string;
  /** Prefix of the resource id: the app name (Shared) or the database name (Dedicated). */
  resourceBase: string;
  ownerId: string;
  projectId?: string;
  region: string;
  providerId: string;
  engine: string;
  planId: string;
  ipRange?: string;
}

/**
 * Inserts the row with a fresh `<base>_<4 digits>` resource id. Call inside a transaction:
 * a savepoint lets a colliding resource id be retried without aborting the caller's work.
 */
async function insertDatabaseRow(q: Queryable, d: NewDatabase): Promise<Database> {
  const base = d.resourceBase.replace(/-/g, "_");
  for (let attempt = 0; ; attempt++) {
    const resourceId = `${base}_${randomInt(1000, 10000)}`;
    await q.query("SAVEPOINT insert_database");
    try {
      const { rows } = await q.query<DatabaseRow>(
        `INSERT INTO databases (id, model, app_id, name, resource_id, owner_id, project_id, region,
                                provider_id, engine, plan_id, ip_range)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING *`,
        [
          newId("ad"),
          d.model,
          d.appId ?? null,
          d.name ?? null,
          resourceId,
          d.ownerId,
          d.projectId ?? null,
          d.region,
          d.providerId,
          d.engine,
          d.planId,
          d.ipRange ?? null,
        ],
      );
      await q.query("RELEASE SAVEPOINT insert_database");
      return toDatabase(rows[0]!);
    } catch (err) {
      await q.query("ROLLBACK TO SAVEPOINT insert_database");
      const collision =
        isPgError(err, UNIQUE_VIOLATION) &&
        (err as { constraint?: string }).constraint === "databases_resource_id_key";
      if (!collision || attempt >= 20) throw err;
    }
  }
}

/**
 * Records the intent to provision: the row (generation 1), a `provision` operation, the
 * `new_addon` event and a reconcile request. Call inside a transaction. A Dedicated name
 * already used by an app or database fails with a unique violation on resource_names.
 */
export async function provisionDatabase(
  q: Queryable,
  catalog: Catalog,
  d: NewDatabase & { userId: string },
): Promise<{ database: Database; operation: Operation }> {
  if (d.model === "dedicated") await reserveName(q, d.name!, "database");
  const database = await insertDatabaseRow(q, d);
  const operation = await insertOperation(q, {
    appId: scopeIdOf(database),
    databaseId: database.id,
    type: "provision",
    targetGeneration: database.generation,
  });
  await recordEvent(q, {
    appId: scopeIdOf(database),
    databaseId: database.id,
    userId: d.userId,
    type: "new_addon",
    typeData: eventAddonData(catalog, database),
  });
  await enqueueReconcile(q, database.id);
  return { database, operation };
}

/** A database not yet finalized as deleted, locked for the rest of the transaction. */
export async function lockDatabase(q: Queryable, id: string): Promise<Database | null> {
  const { rows } = await q.query<DatabaseRow>(
    "SELECT * FROM databases WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
    [id],
  );
  return rows[0] ? toDatabase(rows[0]) : null;
}

/** Any database row, deleted or not (reconcilers). */
export async function getDatabase(q: Queryable, id: string): Promise<Database | null> {
  const { rows } = await q.query<DatabaseRow>("SELECT * FROM databases WHERE id = $1", [id]);
  return rows[0] ? toDatabase(rows[0]) : null;
}

/** A database the API may show: neither deleted nor being deleted. */
export async function findLiveDatabase(q: Queryable, id: string): Promise<Database | null> {
  const { rows } = await q.query<DatabaseRow>(
    "SELECT * FROM databases WHERE id = $1 AND delete_requested_at IS NULL AND deleted_at IS NULL",
    [id],
  );
  return rows[0] ? toDatabase(rows[0]) : null;
}

/** The live add-ons of an app (Shared databases attached to it). */
export async function listLiveAddons(q: Queryable, appId: string): Promise<Database[]> {
  const { rows } = await q.query<DatabaseRow>(
    `SELECT * FROM databases WHERE app_id = $1 AND delete_requested_at IS NULL AND deleted_at IS NULL
     ORDER BY created_at, id`,
    [appId],
  );
  return rows.map(toDatabase);
}

/** Dedicated databases the user owns or collaborates on (accepted), with the user's role. */
export async function listDedicatedForUser(
  q: Queryable,
  region: string,
  userId: string,
): Promise<Array<{ database: Database; role: Role }>> {
  const { rows } = await q.query<DatabaseRow & { is_owner: boolean }>(
    `SELECT d.*, d.owner_id = $2 AS is_owner FROM databases d
     WHERE d.model = 'dedicated' AND d.region = $1 AND d.delete_requested_at IS NULL
       AND d.deleted_at IS NULL
       AND (d.owner_id = $2 OR EXISTS (
         SELECT 1 FROM collaborators c
         WHERE c.database_id = d.id AND c.user_id = $2 AND c.status = 'accepted'))
     ORDER BY d.created_at, d.id`,
    [region, userId],
  );
  return rows.map((r) => ({ database: toDatabase(r), role: r.is_owner ? "owner" : "collaborator" }));
}

/** A live Dedicated database by id or name in a region (no access check). */
export async function findLiveDedicated(
  q: Queryable,
  region: string,
  idOrName: string,
): Promise<Database | null> {
  const { rows } = await q.query<DatabaseRow>(
    `SELECT * FROM databases WHERE model = 'dedicated' AND region = $1 AND (id = $2 OR name = $2)
       AND delete_requested_at IS NULL AND deleted_at IS NULL`,
    [region, idOrName],
  );
  return rows[0] ? toDatabase(rows[0]) : null;
}

/**
 * Records a plan change on a locked database: new plan in the spec, next generation, a
 * `change-plan` operation, the `upgrade_addon` event and a reconcile request.
 */
export async function changeDatabasePlan(
  q: Queryable,
  catalog: Catalog,
  db: Database,
  change: { planId: string; userId: string },
): Promise<{ database: Database; operation: Operation }> {
  const { rows } = await q.query<DatabaseRow>(
    `UPDATE databases SET plan_id = $2, generation = generation + 1, updated_at = now()
     WHERE id = $1 RETURNING *`,
    [db.id, change.planId],
  );
  const updated = toDatabase(rows[0]!);
  const operation = await insertOperation(q, {
    appId: scopeIdOf(updated),
    databaseId: updated.id,
    type: "change-plan",
    targetGeneration: updated.generation,
  });
  const newData = eventAddonData(catalog, updated);
  await recordEvent(q, {
    appId: scopeIdOf(updated),
    databaseId: updated.id,
    userId: change.userId,
    type: "upgrade_addon",
    typeData: {
      ...newData,
      old_plan_name: eventAddonData(catalog, db).plan_name,
      new_plan_name: newData.plan_name,
    },
  });
  await enqueueReconcile(q, updated.id);
  return { database: updated, operation };
}

/**
 * Asks for a database (Shared add-on or Dedicated) to be deleted: sets delete_requested_at,
 * moves to the next generation, records a `delete` operation and the `delete_addon` event,
 * and queues a reconcile pass that finalizes it (name released, variables removed).
 * Call inside a transaction; then kick the reconciler. Idempotent: a database already being
 * deleted (or gone) returns null and writes nothing.
 */
export async function requestDatabaseDeletion(
  q: Queryable,
  catalog: Catalog,
  r: { databaseId: string; userId: string },
): Promise<{ database: Database; operation: Operation } | null> {
  const db = await lockDatabase(q, r.databaseId);
  if (!db || db.deleteRequestedAt) return null;
  const { rows } = await q.query<DatabaseRow>(
    `UPDATE databases SET delete_requested_at = now(), generation = generation + 1, updated_at = now()
     WHERE id = $1 RETURNING *`,
    [db.id],
  );
  const updated = toDatabase(rows[0]!);
  const operation = await insertOperation(q, {
    appId: scopeIdOf(updated),
    databaseId: updated.id,
    type: "delete",
    targetGeneration: updated.generation,
  });
  await recordEvent(q, {
    appId: scopeIdOf(updated),
    databaseId: updated.id,
    userId: r.userId,
    type: "delete_addon",
    typeData: eventAddonData(catalog, updated),
  });
  await enqueueReconcile(q, updated.id);
  return { database: updated, operation };
}
