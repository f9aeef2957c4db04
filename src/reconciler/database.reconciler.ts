// One reconcile pass for one database: observe -> plan (pure) -> apply one idempotent step.
import type { Deps } from "../api/deps.ts";
import { findPlan } from "../domain/catalog.ts";
import { placeDatabase } from "../domain/placement.ts";
import type { Queryable } from "../store/db.ts";
import { finalizeDeletion, writePhase } from "../store/database-status.store.ts";
import { getDatabase, type Database } from "../store/databases.store.ts";
import { hostViews } from "../store/hosts.store.ts";
import { instancesOfDatabase, setDesiredState } from "../store/instances.store.ts";
import { countPendingOperations, startOperations } from "../store/operations.store.ts";
import { planDatabase, type DatabaseObservation, type DatabaseStep } from "./database-plan.ts";
import type { PassResult } from "./loop.ts";
import { reconcileBackups } from "./backup.reconciler.ts";
import { createInstances, markRunningIfReachable, updateInstanceSpecs, type HaContext } from "./provision.ts";
import { ensureHaSecrets, haSecrets } from "../store/dcs.store.ts";
import { dropDcsUser, ensureDcsUser, ensureRegionDcs } from "./dcs.ts";
import { applyHaStep, nodeSizeOf, observeHaChange } from "./ha-operations.ts";

export async function observeDatabase(deps: Deps, id: string): Promise<DatabaseObservation | null> {
  const q: Queryable = deps.db;
  const db = await getDatabase(q, id);
  if (!db) return null;
  // A removed instance is gone from its host; its row only waits for the agent's report.
  const instances = (await instancesOfDatabase(q, id)).filter((i) => i.status !== "removed");
  const { rows: hosts } = await q.query<{ id: string; name: string; status: string }>(
    "SELECT id, name, status FROM hosts WHERE id = ANY($1)",
    [instances.map((i) => i.hostId)],
  );
  const hostById = new Map(hosts.map((h) => [h.id, h]));
  const planNodes = findPlan(deps.catalog, db.planId)?.nodes ?? 1;
  return {
    id,
    generation: db.generation,
    observedGeneration: db.observedGeneration,
    phase: db.phase,
    phaseReason: db.phaseReason,
    deleteRequested: db.deleteRequestedAt !== null,
    deleted: db.deletedAt !== null,
    pendingOperations: await countPendingOperations(q, id),
    instances: instances.map((i) => ({
      id: i.id,
      kind: i.kind,
      hostName: hostById.get(i.hostId)?.name ?? i.hostId,
      hostReady: hostById.get(i.hostId)?.status === "ready",
      status: i.status,
      statusMessage: i.statusMessage,
      specGeneration: i.specGeneration,
      observedGeneration: i.observedGeneration,
      desiredState: i.desiredState,
      role: i.role,
      ha: i.kind === "node" && i.spec.ha !== undefined,
      synchronous: (i.spec.ha as { synchronous?: boolean } | undefined)?.synchronous === true,
      ...nodeSizeOf(i),
      ordinal: i.ordinal,
    })),
    placement: instances.length === 0 && !db.deleteRequestedAt ? await placementFor(deps, db) : null,
    planNodes,
    model: db.model,
    dcs:
      planNodes > 1 && instances.length === 0 && !db.deleteRequestedAt
        ? await ensureRegionDcs(deps, db.region)
        : null,
    ...(await observeHaChange(deps, db, instances, planNodes)),
  };
}

async function placementFor(deps: Deps, db: Database): Promise<DatabaseObservation["placement"]> {
  const plan = findPlan(deps.catalog, db.planId);
  if (!plan) return { ok: false, reason: `plan ${db.planId} is no longer in the catalog` };
  return placeDatabase(
    { model: db.model, region: db.region, plan, sharedOvercommit: deps.config.sharedOvercommit },
    await hostViews(deps.db, db.id),
  );
}

/** The cluster's secrets, and its own etcd user made before any node may use it. */
async function haContext(
  deps: Deps,
  id: string,
  endpoints: string[],
  serviceEndpoints: string[],
): Promise<HaContext> {
  const db = (await getDatabase(deps.db, id))!;
  const secrets = await ensureHaSecrets(deps.db, id);
  await ensureDcsUser(deps, db.region, id, endpoints, secrets);
  return { endpoints, serviceEndpoints, secrets: { ...secrets, dcsUserCreated: true } };
}

async function dropHaCluster(deps: Deps, id: string): Promise<void> {
  const secrets = await haSecrets(deps.db, id);
  const db = await getDatabase(deps.db, id);
  if (secrets?.dcsUserCreated && db) await dropDcsUser(deps, db.region, id, secrets);
}

async function notifyHosts(deps: Deps, databaseId: string): Promise<void> {
  for (const i of await instancesOfDatabase(deps.db, databaseId)) deps.hostSignals.notify(i.hostId);
}

async function applyStep(deps: Deps, id: string, step: DatabaseStep): Promise<string | null> {
  switch (step.kind) {
    case "none":
      return null;
    case "start-operations":
      await startOperations(deps.db, id, step.generation);
      return null;
    case "set-phase":
      await writePhase(deps.db, id, step.phase, step.reason);
      return null;
    case "finalize-deletion":
      await dropHaCluster(deps, id);
      await deps.db.tx((q) => finalizeDeletion(q, deps.catalog, id));
      return null;
    case "place":
      await createInstances(
        deps,
        id,
        step.slots,
        step.dcsEndpoints
          ? await haContext(deps, id, step.dcsEndpoints, step.dcsServiceEndpoints ?? step.dcsEndpoints)
          : null,
      );
      await notifyHosts(deps, id);
      return null;
    case "delete-instances":
      await setDesiredState(deps.db, id, "deleted");
      await notifyHosts(deps, id);
      return null;
    case "update-specs":
      await updateInstanceSpecs(deps, id, step.generation);
      await notifyHosts(deps, id);
      return null;
    case "verify":
      return markRunningIfReachable(deps, id, step.generation);
    case "ha":
      return applyHaStep(deps, id, step);
  }
}

export async function reconcileDatabase(deps: Deps, databaseId: string): Promise<PassResult> {
  const plan = planDatabase(await observeDatabase(deps, databaseId), databaseId);
  const failure = await applyStep(deps, databaseId, plan.step);
  const message = failure ? `${plan.message}: ${failure}` : plan.message;
  const result: PassResult =
    plan.requeueAfterMs === undefined ? { message } : { message, requeueAfterMs: plan.requeueAfterMs };
  return reconcileBackups(deps, databaseId, result);
}
