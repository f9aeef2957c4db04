// Applying the HA steps of ha-plan.ts: planned switchovers (asked of the leader's agent,
// finished when the agents report the candidate as leader), rolling updates and class
// switches (their specs in ha-class-switch.ts), and what the planning observes for them.
import type { Deps } from "../api/deps.ts";
import { findPlan } from "../domain/catalog.ts";
import { placeStandby, type DcsEndpoints, type HaAction, type SwitchoverObservation } from "./ha-plan.ts";
import type { DatabaseObservation } from "./database-plan.ts";
import type { DcsState } from "./dcs.ts";
import { dropDcsUser, ensureDcsUser, ensureRegionDcs } from "./dcs.ts";
import { getDatabase, scopeIdOf, type Database } from "../store/databases.store.ts";
import { ensureHaSecrets, haSecrets } from "../store/dcs.store.ts";
import { recordEvent } from "../store/events.store.ts";
import { hostViews } from "../store/hosts.store.ts";
import { instancesOfDatabase, type Instance } from "../store/instances.store.ts";
import { currentOperation } from "../store/operations.store.ts";
import {
  finishSwitchover,
  requestSwitchover,
  setOperationProgress,
  switchoverInFlight,
  switchoversOfDatabase,
} from "../store/switchovers.store.ts";
import { convertToHa, convertToSingle, growCluster, updateRolling } from "./ha-class-switch.ts";
import type { HaContext } from "./provision.ts";

type HaObservation = Pick<DatabaseObservation, "switchover" | "growPlacement" | "haClusterLeft"> & {
  dcs?: DcsState;
};

/** What the HA planning needs beyond the ordinary observation. */
export async function observeHaChange(
  deps: Deps,
  db: Database,
  instances: Instance[],
  planNodes: number,
): Promise<HaObservation> {
  if (db.deleteRequestedAt || db.model !== "shared") return {};
  const nodes = instances.filter((i) => i.kind === "node");
  const sw = await switchoverInFlight(deps.db, db.id);
  const switchover: SwitchoverObservation | null = sw
    ? {
        id: sw.id,
        leaderId: sw.leaderId,
        candidateId: sw.candidateId,
        ageMs: Date.now() - sw.requestedAt.getTime(),
      }
    : null;
  const out: HaObservation = { switchover };
  const converting = planNodes > 1 && nodes.length > 0 && nodes.some((n) => n.spec.ha === undefined);
  if (converting) out.dcs = await ensureRegionDcs(deps, db.region);
  if (planNodes > 1 && nodes.length === 1)
    out.growPlacement = await standbyPlacement(deps, db, nodes[0]!, instances);
  if (planNodes === 1) out.haClusterLeft = (await haSecrets(deps.db, db.id))?.dcsUserCreated === true;
  return out;
}

async function standbyPlacement(deps: Deps, db: Database, node: Instance, instances: Instance[]) {
  const plan = findPlan(deps.catalog, db.planId);
  if (!plan) return { ok: false as const, reason: `plan ${db.planId} is no longer in the catalog` };
  const next = (kind: string) =>
    Math.max(...instances.filter((i) => i.kind === kind).map((i) => i.ordinal)) + 1;
  return placeStandby({ hostId: node.hostId }, await hostViews(deps.db, db.id), {
    ramMb: plan.ramMb,
    storageGb: plan.storageGb,
    overcommit: deps.config.sharedOvercommit,
    nodeOrdinal: next("node"),
    gatewayOrdinal: next("gateway"),
  });
}

/** Applies one HA step; returns what failed, or null. */
export async function applyHaStep(
  deps: Deps,
  id: string,
  step: { action: HaAction; progress: string },
): Promise<string | null> {
  await setOperationProgress(deps.db, id, step.progress);
  const a = step.action;
  switch (a.kind) {
    case "update-specs":
      await updateRolling(deps, id, a.generation, a.instanceIds);
      break;
    case "request-switchover": {
      const op = await currentOperation(deps.db, id);
      await requestSwitchover(deps.db, {
        databaseId: id,
        leaderId: a.leaderId,
        candidateId: a.candidateId,
        reason: a.reason,
        operationId: op?.id ?? null,
      });
      break;
    }
    case "finish-switchover":
      await recordSwitchoverDone(deps, id, a.switchoverId);
      return null;
    case "fail-switchover":
      await finishSwitchover(deps.db, a.switchoverId, { status: "failed", error: a.error });
      deps.log.warn("switchover failed", { db: id, err: a.error });
      return null;
    case "grow":
      await growCluster(deps, id, a.generation, a.slots, await haContextOf(deps, id, a.dcs));
      break;
    case "convert-to-ha":
      await convertToHa(deps, id, a.generation, await haContextOf(deps, id, a.dcs));
      break;
    case "remove-instances":
      await deps.db.query(
        "UPDATE instances SET desired_state = 'deleted' WHERE database_id = $1 AND id = ANY($2)",
        [id, a.instanceIds],
      );
      break;
    case "convert-to-single":
      await convertToSingle(deps, id, a.generation);
      break;
    case "drop-dcs": {
      const db = await getDatabase(deps.db, id);
      const secrets = await haSecrets(deps.db, id);
      if (db && secrets?.dcsUserCreated) await dropDcsUser(deps, db.region, id, secrets);
      return null;
    }
  }
  for (const i of await instancesOfDatabase(deps.db, id)) deps.hostSignals.notify(i.hostId);
  return null;
}

async function recordSwitchoverDone(deps: Deps, id: string, switchoverId: string): Promise<void> {
  await deps.db.tx(async (q) => {
    const sw = (await switchoversOfDatabase(q, id)).find((s) => s.id === switchoverId);
    if (!sw || !(await finishSwitchover(q, switchoverId, { status: "done" }))) return;
    const db = await getDatabase(q, id);
    if (!db) return;
    const { rows } = await q.query<{ name: string }>(
      "SELECT h.name FROM instances i JOIN hosts h ON h.id = i.host_id WHERE i.id = $1",
      [sw.candidateId],
    );
    deps.log.info("switchover done", { db: id, from: sw.leaderId, to: sw.candidateId });
    await recordEvent(q, {
      appId: scopeIdOf(db),
      databaseId: id,
      type: "database_switchover",
      typeData: {
        addon_id: db.id,
        resource_id: db.resourceId,
        old_leader: sw.leaderId,
        new_leader: sw.candidateId,
        host: rows[0]?.name ?? "",
        reason: sw.reason,
        duration_ms: Date.now() - sw.requestedAt.getTime(),
      },
    });
  });
}

async function haContextOf(deps: Deps, id: string, dcs: DcsEndpoints): Promise<HaContext> {
  const db = (await getDatabase(deps.db, id))!;
  const secrets = await ensureHaSecrets(deps.db, id);
  await ensureDcsUser(deps, db.region, id, dcs.endpoints, secrets);
  return { ...dcs, secrets: { ...secrets, dcsUserCreated: true } };
}
