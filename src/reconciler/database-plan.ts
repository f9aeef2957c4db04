// Pure planning of one reconcile pass on a database: from what was observed to the one
// step to apply next, with the sentence that explains it.
import type { ArchitectureModel } from "../domain/catalog.ts";
import type { PlacementResult, Slot } from "../domain/placement.ts";
import type { DcsState } from "./dcs.ts";
import type { Phase } from "../store/databases.store.ts";
import type { DesiredState, InstanceKind, InstanceStatus } from "../store/instances.store.ts";
import { planHaChange, type HaAction, type SwitchoverObservation } from "./ha-plan.ts";

export interface InstanceObservation {
  id: string;
  kind: InstanceKind;
  hostName: string;
  hostReady: boolean;
  status: InstanceStatus;
  statusMessage: string;
  specGeneration: number;
  observedGeneration: number;
  desiredState: DesiredState;
  /** Nodes of HA clusters: leader or follower, as their agent last reported. */
  role?: string;
  /** A node whose spec has Patroni run it. */
  ha?: boolean;
  /** A node whose spec asks for synchronous replication (Enterprise). */
  synchronous?: boolean;
  /** Nodes: the RAM of the plan their spec was made for. */
  ramMb?: number;
  ordinal?: number;
}

export interface DatabaseObservation {
  id: string;
  generation: number;
  observedGeneration: number;
  phase: Phase;
  phaseReason: string;
  deleteRequested: boolean;
  deleted: boolean;
  /** Operations still pending (work on them has not started). */
  pendingOperations: number;
  /** Instances of this database that still exist on some host. */
  instances: InstanceObservation[];
  /** Where new instances would go; computed only when the database has none. */
  placement: PlacementResult | null;
  /** Database nodes the current plan asks for (1 Starter, 2 Business, 3 Enterprise). */
  planNodes: number;
  model: ArchitectureModel;
  /** The region's DCS, looked at only when an HA cluster is about to be placed. */
  dcs: DcsState | null;
  /** A planned switchover in flight (ha-plan.ts). */
  switchover?: SwitchoverObservation | null;
  /** Starter -> Business: where the standby and its gateway would go. */
  growPlacement?: PlacementResult | null;
  /** The cluster's etcd user still exists (to drop once it is a single node again). */
  haClusterLeft?: boolean;
  /** The RAM of the current plan (a same-size change needs no switchover). */
  planRamMb?: number;
  /** Dedicated: why the nodes' hosts cannot take the bigger plan yet; null when they can. */
  resizeBlocked?: string | null;
}

export type DatabaseStep =
  | { kind: "none" }
  | { kind: "start-operations"; generation: number }
  | { kind: "set-phase"; phase: Exclude<Phase, "deleted">; reason: string }
  | { kind: "finalize-deletion" }
  | { kind: "place"; slots: Slot[]; dcsEndpoints?: string[]; dcsServiceEndpoints?: string[] }
  | { kind: "delete-instances" }
  | { kind: "update-specs"; generation: number }
  | { kind: "verify"; generation: number }
  | { kind: "ha"; action: HaAction; progress: string };

export interface DatabasePlan {
  step: DatabaseStep;
  message: string;
  requeueAfterMs?: number;
}

/** How long a database waiting on something outside the control plane waits between checks. */
export const WAIT_RECHECK_MS = 60_000;
/** Waiting on agents: their reports also wake the database, this is the safety net. */
export const INSTANCE_RECHECK_MS = 5_000;

export const CLASS_SWITCH_NOT_YET_REASON =
  "switching between single-node (Starter) and high-availability (Business, Enterprise) plans is not supported by this Cellar version yet";

export const HA_RESIZE_NOT_YET_REASON =
  "resizing a high-availability cluster (a rolling restart with a switchover) is not supported by this Cellar version yet; it keeps serving on its current size";

export const NO_HOST_REASON = "waiting for a host: no host agent has registered";

/** Brings phase and reason to `phase`/`reason`, or waits if they already are. */
export function settle(
  o: DatabaseObservation,
  phase: Exclude<Phase, "deleted">,
  reason: string,
  recheckMs = WAIT_RECHECK_MS,
): DatabasePlan {
  const recheck = `; checking again in ${recheckMs / 1000} s`;
  if (o.phase === phase && o.phaseReason === reason) {
    return {
      step: { kind: "none" },
      message: `${o.id} ${phase}, ${reason}${recheck}`,
      requeueAfterMs: recheckMs,
    };
  }
  return {
    step: { kind: "set-phase", phase, reason },
    message: `${o.id} is now ${phase}: ${reason}${recheck}`,
    requeueAfterMs: recheckMs,
  };
}

function describeWait(i: InstanceObservation): string {
  const where = i.hostReady ? `on ${i.hostName}` : `on ${i.hostName} (host unreachable)`;
  const what =
    i.status === "running" && i.observedGeneration < i.specGeneration
      ? `applying generation ${i.specGeneration}`
      : i.statusMessage
        ? `${i.status}: ${i.statusMessage}`
        : i.status;
  return `waiting for ${i.kind} ${i.id} ${where}: ${what}`;
}

function planDeletion(o: DatabaseObservation): DatabasePlan {
  if (o.instances.some((i) => i.desiredState !== "deleted")) {
    return {
      step: { kind: "delete-instances" },
      message: `${o.id} asks the hosts to remove its ${o.instances.length} instance(s)`,
      requeueAfterMs: 0,
    };
  }
  if (o.instances.length === 0) {
    return {
      step: { kind: "finalize-deletion" },
      message: `${o.id} deletion finalized: no instance left, name and variables released`,
    };
  }
  const left = o.instances.map((i) => `${i.id} on ${i.hostName} (${i.status})`).join(", ");
  return settle(o, "deleting", `waiting for instances to be removed: ${left}`, INSTANCE_RECHECK_MS);
}

export function planDatabase(o: DatabaseObservation | null, id: string): DatabasePlan {
  if (!o) return { step: { kind: "none" }, message: `${id} no longer exists: nothing to do` };
  if (o.deleted) return { step: { kind: "none" }, message: `${id} is deleted: nothing to do` };
  if (o.pendingOperations > 0) {
    return {
      step: { kind: "start-operations", generation: o.generation },
      message: `${id} work starts on generation ${o.generation} (${o.pendingOperations} operation(s))`,
      requeueAfterMs: 0,
    };
  }
  if (o.deleteRequested) return planDeletion(o);

  // Class switches, HA resizes and switchovers are rolled out step by step (ha-plan.ts).
  const haChange = planHaChange(o);
  if (haChange) return haChange;

  if (o.instances.length === 0) {
    // An HA cluster keeps its leader key in the region's etcd cluster: it must run first.
    if (o.planNodes > 1 && o.dcs && !o.dcs.ready)
      return settle(o, "provisioning", o.dcs.reason, INSTANCE_RECHECK_MS);
    if (o.placement?.ok) {
      const hosts = [...new Set(o.placement.slots.map((s) => s.hostId))].join(", ");
      const dcs = o.dcs?.ready
        ? { dcsEndpoints: o.dcs.endpoints, dcsServiceEndpoints: o.dcs.serviceEndpoints }
        : {};
      return {
        step: { kind: "place", slots: o.placement.slots, ...dcs },
        message: `${id} placed ${o.placement.slots.length} instance(s) on ${hosts}`,
        requeueAfterMs: 0,
      };
    }
    const reason =
      o.placement && !o.placement.ok ? `waiting for a host: ${o.placement.reason}` : NO_HOST_REASON;
    return settle(o, "provisioning", reason);
  }

  if (o.instances.some((i) => i.specGeneration < o.generation)) {
    return {
      step: { kind: "update-specs", generation: o.generation },
      message: `${id} hands generation ${o.generation} to its instances`,
      requeueAfterMs: 0,
    };
  }

  // A silent host's instances may still serve, but nobody can vouch for them: say so.
  const lost = o.instances.find((i) => !i.hostReady);
  if (lost && o.phase === "running") {
    const reason = `host ${lost.hostName} is unreachable (no heartbeat): ${lost.kind} ${lost.id} may not be serving`;
    return settle(o, "running", reason, INSTANCE_RECHECK_MS);
  }

  // Before a first success the database is provisioning; afterwards a change is an update.
  const waitPhase = o.observedGeneration === 0 ? "provisioning" : "updating";
  const waiting = o.instances.find((i) => i.status !== "running" || i.observedGeneration < i.specGeneration);
  if (waiting) return settle(o, waitPhase, describeWait(waiting), INSTANCE_RECHECK_MS);

  if (o.observedGeneration < o.generation || o.phase !== "running") {
    return {
      step: { kind: "verify", generation: o.generation },
      message: `${id} checks a TLS connection through its gateway at generation ${o.generation}`,
      requeueAfterMs: INSTANCE_RECHECK_MS,
    };
  }
  if (o.phaseReason !== "") {
    return {
      step: { kind: "set-phase", phase: "running", reason: "" },
      message: `${id} running at generation ${o.generation}, its hosts answer again`,
      requeueAfterMs: WAIT_RECHECK_MS,
    };
  }
  return {
    step: { kind: "none" },
    message: `${id} running at generation ${o.generation}`,
    requeueAfterMs: WAIT_RECHECK_MS,
  };
}
