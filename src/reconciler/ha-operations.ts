// Applying the HA steps of ha-plan.ts: planned switchovers (asked of the leader's agent,
// finished when the agents report the candidate as leader), rolling updates and class
// switches (their specs in ha-class-switch.ts), and what the planning observes for them.
import type { Deps } from "../api/deps.ts";
import { findPlan, type Plan } from "../domain/catalog.ts";
import type { HostView, PlacementResult } from "../domain/placement.ts";
import type { DcsEndpoints, HaAction, SwitchoverObservation } from "./ha-plan.ts";
import { dedicatedResizeBlocked, placeDedicatedGrowth } from "./placement-dedicated.ts";
import { placeStandby } from "./placement-shared.ts";
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

type HaObservation = Pick<
  DatabaseObservation,
  "switchover" | "growPlacement" | "haClusterLeft" | "planRamMb" | "resizeBlocked"
> & {
  dcs?: DcsState;
};

interface NodeLimits {
  memoryMb: number;
  vcpu: number;
  diskGb: number;
}

const limitsOf = (i: Instance) => i.spec.limits as NodeLimits | undefined;

/** A node's size as the planning sees it: the RAM of the plan its spec was made for. */
export function nodeSizeOf(i: Instance): { ramMb?: number } {
  const mb = limitsOf(i)?.memoryMb;
  return i.kind === "node" && typeof mb === "number" ? { ramMb: mb } : {};
}

/** What the HA planning needs beyond the ordinary observation. */
export async function observeHaChange(
  deps: Deps,
  db: Database,
  instances: Instance[],
  planNodes: number,
): Promise<HaObservation> {
  if (db.deleteRequestedAt) return {};
  const nodes = instances.filter((i) => i.kind === "node" && i.desiredState !== "deleted");
  if (nodes.length === 0) return {};
  const sw = await switchoverInFlight(deps.db, db.id);
  const switchover: SwitchoverObservation | null = sw
    ? {
        id: sw.id,
        leaderId: sw.leaderId,
        candidateId: sw.candidateId,
        ageMs: Date.now() - sw.requestedAt.getTime(),
      }
    : null;
  const plan = findPlan(deps.catalog, db.planId);
  const out: HaObservation = { switchover, ...(plan ? { planRamMb: plan.ramMb } : {}) };
  const converting = planNodes > 1 && nodes.some((n) => n.spec.ha === undefined);
  const growing = planNodes > nodes.length;
  if (converting || growing) out.dcs = await ensureRegionDcs(deps, db.region);
  const views = db.model === "dedicated" ? await hostViews(deps.db, db.id) : [];
  if (growing) {
    out.growPlacement =
      db.model === "dedicated"
        ? growthPlacement(db, plan, nodes, instances, views, planNodes)
        : await standbyPlacement(deps, db, nodes[0]!, instances);
  }
  if (db.model === "dedicated" && plan) out.resizeBlocked = resizeBlocked(plan, nodes, views);
  if (planNodes === 1) out.haClusterLeft = (await haSecrets(deps.db, db.id))?.dcsUserCreated === true;
  return out;
}

const nextOrdinal = (instances: Instance[], kind: string) =>
  Math.max(-1, ...instances.filter((i) => i.kind === kind).map((i) => i.ordinal)) + 1;

/** Dedicated: the nodes a class switch adds, on free hosts of AZs the database does not use. */
function growthPlacement(
  db: Database,
  plan: Plan | undefined,
  nodes: Instance[],
  instances: Instance[],
  views: HostView[],
  planNodes: number,
): PlacementResult {
  if (!plan) return { ok: false, reason: `plan ${db.planId} is no longer in the catalog` };
  return placeDedicatedGrowth(
    nodes.map((n) => n.hostId),
    views,
    {
      region: db.region,
      ramMb: plan.ramMb,
      vcpu: plan.vcpu,
      storageGb: plan.storageGb,
      count: planNodes - nodes.length,
      nodeOrdinal: nextOrdinal(instances, "node"),
      gatewayOrdinal: nextOrdinal(instances, "gateway"),
    },
  );
}

/** Dedicated: whether the hosts of the nodes a bigger plan grows can hold it. */
function resizeBlocked(plan: Plan, nodes: Instance[], views: HostView[]): string | null {
  const growing = nodes.filter((n) => {
    const l = limitsOf(n);
    return !l || l.memoryMb < plan.ramMb || l.vcpu < plan.vcpu || l.diskGb < plan.storageGb;
  });
  if (growing.length === 0) return null;
  return dedicatedResizeBlocked(
    growing.map((n) => n.hostId),
    views,
    plan,
  );
}

async function standbyPlacement(deps: Deps, db: Database, node: Instance, instances: Instance[]) {
  const plan = findPlan(deps.catalog, db.planId);
  if (!plan) return { ok: false as const, reason: `plan ${db.planId} is no longer in the catalog` };
  return placeStandby({ hostId: node.hostId }, await hostViews(deps.db, db.id), {
    ramMb: plan.ramMb,
    storageGb: plan.storageGb,
    overcommit: deps.config.sharedOvercommit,
    nodeOrdinal: nextOrdinal(instances, "node"),
    gatewayOrdinal: nextOrdinal(instances, "gateway"),
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
      await recordSwitchoverDone(deps, id, a.switchoverId, a.candidateId);
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

async function recordSwitchoverDone(
  deps: Deps,
  id: string,
  switchoverId: string,
  newLeader: string,
): Promise<void> {
  await deps.db.tx(async (q) => {
    const sw = (await switchoversOfDatabase(q, id)).find((s) => s.id === switchoverId);
    if (!sw || !(await finishSwitchover(q, switchoverId, { status: "done" }))) return;
    const db = await getDatabase(q, id);
    if (!db) return;
    const { rows } = await q.query<{ name: string }>(
      "SELECT h.name FROM instances i JOIN hosts h ON h.id = i.host_id WHERE i.id = $1",
      [newLeader],
    );
    deps.log.info("switchover done", { db: id, from: sw.leaderId, to: newLeader });
    await recordEvent(q, {
      appId: scopeIdOf(db),
      databaseId: id,
      type: "database_switchover",
      typeData: {
        addon_id: db.id,
        resource_id: db.resourceId,
        old_leader: sw.leaderId,
        new_leader: newLeader,
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
