// One reconcile pass for one database: observe -> plan (pure) -> apply one idempotent step.
// Until host agents place instances, nothing can run a database: it stays provisioning and
// says why; a deletion with no instance left is finalized.
import type { Deps } from "../api/deps.ts";
import type { Queryable } from "../store/db.ts";
import { finalizeDeletion, writePhase } from "../store/database-status.store.ts";
import { getDatabase } from "../store/databases.store.ts";
import { countPendingOperations, startOperations } from "../store/operations.store.ts";
import { planDatabase, type DatabaseObservation, type DatabaseStep } from "./database-plan.ts";
import type { PassResult } from "./loop.ts";

async function count(q: Queryable, sql: string, param: string): Promise<number> {
  const { rows } = await q.query<{ n: number }>(sql, [param]);
  return rows[0]?.n ?? 0;
}

export async function observeDatabase(q: Queryable, id: string): Promise<DatabaseObservation | null> {
  const db = await getDatabase(q, id);
  if (!db) return null;
  return {
    id,
    generation: db.generation,
    phase: db.phase,
    phaseReason: db.phaseReason,
    deleteRequested: db.deleteRequestedAt !== null,
    deleted: db.deletedAt !== null,
    pendingOperations: await countPendingOperations(q, id),
    instances: await count(
      q,
      "SELECT count(*)::int AS n FROM instances WHERE database_id = $1 AND status <> 'removed'",
      id,
    ),
    hosts: await count(q, "SELECT count(*)::int AS n FROM hosts WHERE region = $1", db.region),
  };
}

async function applyStep(deps: Deps, id: string, step: DatabaseStep): Promise<void> {
  switch (step.kind) {
    case "none":
      return;
    case "start-operations":
      await startOperations(deps.db, id, step.generation);
      return;
    case "set-phase":
      await writePhase(deps.db, id, step.phase, step.reason);
      return;
    case "finalize-deletion":
      await deps.db.tx((q) => finalizeDeletion(q, deps.catalog, id));
      return;
  }
}

export async function reconcileDatabase(deps: Deps, databaseId: string): Promise<PassResult> {
  const plan = planDatabase(await observeDatabase(deps.db, databaseId), databaseId);
  await applyStep(deps, databaseId, plan.step);
  return plan.requeueAfterMs === undefined
    ? { message: plan.message }
    : { message: plan.message, requeueAfterMs: plan.requeueAfterMs };
}
