// Pure planning of one reconcile pass on a database: from what was observed to the one
// step to apply next, with the sentence that explains it.
import type { Phase } from "../store/databases.store.ts";

export interface DatabaseObservation {
  id: string;
  generation: number;
  phase: Phase;
  phaseReason: string;
  deleteRequested: boolean;
  deleted: boolean;
  /** Operations still pending (work on them has not started). */
  pendingOperations: number;
  /** Instances of this database that still exist on some host. */
  instances: number;
  /** Host agents registered in the database's region. */
  hosts: number;
}

export type DatabaseStep =
  | { kind: "none" }
  | { kind: "start-operations"; generation: number }
  | { kind: "set-phase"; phase: Exclude<Phase, "deleted">; reason: string }
  | { kind: "finalize-deletion" };

export interface DatabasePlan {
  step: DatabaseStep;
  message: string;
  requeueAfterMs?: number;
}

/** How long a database waiting on something outside the control plane waits between checks. */
export const WAIT_RECHECK_MS = 60_000;

export const NO_HOST_REASON = "waiting for a host: no host agent has registered";

function waitingReason(o: DatabaseObservation): string {
  if (o.hosts === 0) return NO_HOST_REASON;
  return `waiting for a host: ${o.hosts} host agent(s) registered, but instance placement is not available yet`;
}

/** Brings phase and reason to `phase`/`reason`, or waits if they already are. */
function settle(o: DatabaseObservation, phase: Exclude<Phase, "deleted">, reason: string): DatabasePlan {
  const recheck = `; checking again in ${WAIT_RECHECK_MS / 1000} s`;
  if (o.phase === phase && o.phaseReason === reason) {
    return {
      step: { kind: "none" },
      message: `${o.id} ${phase}, ${reason}${recheck}`,
      requeueAfterMs: WAIT_RECHECK_MS,
    };
  }
  return {
    step: { kind: "set-phase", phase, reason },
    message: `${o.id} is now ${phase}: ${reason}${recheck}`,
    requeueAfterMs: WAIT_RECHECK_MS,
  };
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
  if (o.deleteRequested) {
    if (o.instances === 0) {
      return {
        step: { kind: "finalize-deletion" },
        message: `${id} deletion finalized: no instance left, name and variables released`,
      };
    }
    return settle(o, "deleting", `waiting for ${o.instances} instance(s) to be removed`);
  }
  // Nothing runs a database without an instance: it stays provisioning and says why.
  if (o.instances === 0) return settle(o, "provisioning", waitingReason(o));
  return {
    step: { kind: "none" },
    message: `${id} has ${o.instances} instance(s); their convergence is not driven by this controller yet`,
    requeueAfterMs: WAIT_RECHECK_MS,
  };
}
