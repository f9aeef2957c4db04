// The small pieces the HA planning files share (pure): which instances are nodes, stale or
// settled, how an instance is described in a reason, and an HA step with its sentence.
import type { DatabaseObservation, DatabasePlan, InstanceObservation } from "./database-plan.ts";
import type { HaAction } from "./ha-plan.ts";

export const nodesOf = (o: DatabaseObservation) => o.instances.filter((i) => i.kind === "node");
export const isStale = (o: DatabaseObservation) => (i: InstanceObservation) =>
  i.specGeneration < o.generation;
export const settled = (i: InstanceObservation) =>
  i.status === "running" && i.observedGeneration >= i.specGeneration;
export const lowestOrdinal = (list: InstanceObservation[]) =>
  [...list].sort((a, b) => (a.ordinal ?? 0) - (b.ordinal ?? 0))[0];

export function ha(action: HaAction, message: string, requeueAfterMs = 0): DatabasePlan {
  return { step: { kind: "ha", action, progress: message }, message, requeueAfterMs };
}

export function describe(i: InstanceObservation): string {
  const what =
    i.status === "running" && i.observedGeneration < i.specGeneration
      ? `applying generation ${i.specGeneration}`
      : i.statusMessage
        ? `${i.status}: ${i.statusMessage}`
        : i.status;
  return `${i.kind} ${i.id} on ${i.hostName}: ${what}`;
}
