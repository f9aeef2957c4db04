// Pure planning of the changes of an HA cluster (Shared and Dedicated) that the plain "hand
// every instance its new spec" cannot do without downtime: a planned switchover in flight, a
// rolling resize (standbys first, switchover, then the old leader; in place when the size is
// the same), Starter -> Business/Enterprise (standbys and gateways added, then Patroni takes
// the existing data dir over), Business -> Enterprise (a standby added, synchronous mode on
// once it streams), Enterprise -> Business (synchronous mode off, then a standby removed) and
// back to Starter (the kept node made leader, the standbys removed, Patroni gone).
import type { Slot } from "../domain/placement.ts";
import {
  CLASS_SWITCH_NOT_YET_REASON,
  INSTANCE_RECHECK_MS,
  settle,
  type DatabaseObservation,
  type DatabasePlan,
  type InstanceObservation,
} from "./database-plan.ts";
import { planDropNodes, planShrink } from "./ha-plan-shrink.ts";
import { describe, ha, isStale, nodesOf, settled } from "./ha-plan-steps.ts";

/** A switchover not observed done in this long has failed (Patroni's own limit is ~30 s). */
export const SWITCHOVER_TIMEOUT_MS = 60_000;
/** How often a pass looks again while a switchover runs: roles arrive with reports (2 s). */
export const SWITCHOVER_RECHECK_MS = 1_000;

export interface SwitchoverObservation {
  id: string;
  leaderId: string;
  candidateId: string;
  /** Milliseconds since it was requested. */
  ageMs: number;
}

/** Where the nodes dial the region's etcd cluster (from the host, from a namespace). */
export interface DcsEndpoints {
  endpoints: string[];
  serviceEndpoints: string[];
}

/** What the HA steps do; applied by ha-operations.ts. */
export type HaAction =
  /** Hands the generation to these instances only (standbys and gateways before the leader). */
  | { kind: "update-specs"; generation: number; instanceIds: string[] }
  | { kind: "request-switchover"; leaderId: string; candidateId: string; reason: string }
  | { kind: "finish-switchover"; switchoverId: string; candidateId: string }
  | { kind: "fail-switchover"; switchoverId: string; error: string }
  /** Starter -> Business: the standby and its gateway placed next to the existing node. */
  | { kind: "grow"; generation: number; slots: Slot[]; dcs: DcsEndpoints }
  /** Starter -> Business: Patroni takes the existing node over; gateways check /primary. */
  | { kind: "convert-to-ha"; generation: number; dcs: DcsEndpoints }
  /** Business -> Starter: the standbys and extra gateways go. */
  | { kind: "remove-instances"; instanceIds: string[] }
  /** Business -> Starter: the kept node runs without Patroni, its gateway without checks. */
  | { kind: "convert-to-single"; generation: number }
  /** Business -> Starter done: the cluster's etcd user and keys are dropped. */
  | { kind: "drop-dcs" };

/** The step for an HA change in progress, or null when the ordinary planning applies. */
export function planHaChange(o: DatabaseObservation): DatabasePlan | null {
  const nodes = nodesOf(o);
  if (nodes.length === 0) return null;
  if (o.switchover) return planSwitchoverInFlight(o, o.switchover);
  // A Dedicated host is its node's VM: a bigger plan that does not fit there waits for capacity.
  if (o.resizeBlocked) return settle(o, "updating", o.resizeBlocked);
  const anyHa = nodes.some((n) => n.ha === true);
  if (o.planNodes > 1) {
    if (nodes.length > o.planNodes) {
      // Shared has no plan of more than 2 nodes: only Dedicated Enterprise -> Business gets here.
      if (o.model !== "dedicated") return settle(o, "updating", CLASS_SWITCH_NOT_YET_REASON);
      return planDropNodes(o, nodes);
    }
    if (nodes.length < o.planNodes) return planGrow(o, nodes);
    if (nodes.some((n) => n.ha !== true)) return planConvertToHa(o);
    if (o.instances.some(isStale(o))) return planRollingUpdate(o, nodes);
    return null;
  }
  if (nodes.length > 1 || anyHa) return planShrink(o, nodes);
  if (o.haClusterLeft && nodes.every(settled) && !o.instances.some(isStale(o))) {
    return ha({ kind: "drop-dcs" }, `${o.id} is a single node again: its etcd user and keys are dropped`);
  }
  return null;
}

function planSwitchoverInFlight(o: DatabaseObservation, sw: SwitchoverObservation): DatabasePlan {
  const candidate = o.instances.find((i) => i.id === sw.candidateId);
  if (!candidate) {
    const error = `candidate ${sw.candidateId} no longer exists`;
    return ha({ kind: "fail-switchover", switchoverId: sw.id, error }, `${o.id} switchover failed: ${error}`);
  }
  // The candidate's own agent saying so is enough: the old leader's report may lag behind.
  // A synchronous cluster switches over to its synchronous standby, whichever it is.
  const leaders = o.instances.filter((i) => i.kind === "node" && i.role === "leader");
  const led = candidate.role === "leader" ? candidate : leaders.length === 1 ? leaders[0] : undefined;
  if (led && led.id !== sw.leaderId) {
    return ha(
      { kind: "finish-switchover", switchoverId: sw.id, candidateId: led.id },
      `${o.id} switched over: ${led.id} on ${led.hostName} is the leader`,
    );
  }
  if (sw.ageMs > SWITCHOVER_TIMEOUT_MS) {
    const error = `${candidate.id} was not the leader ${SWITCHOVER_TIMEOUT_MS / 1000} s after the request`;
    return ha({ kind: "fail-switchover", switchoverId: sw.id, error }, `${o.id} switchover failed: ${error}`);
  }
  const reason = `switching over from ${sw.leaderId} to ${sw.candidateId} on ${candidate.hostName}`;
  return settle(o, "updating", reason, SWITCHOVER_RECHECK_MS);
}

/**
 * Resize: every instance but the leader first (standbys restart with the new settings,
 * gateways reload), then a switchover to an up-to-date standby, then the old leader.
 */
function planRollingUpdate(o: DatabaseObservation, nodes: InstanceObservation[]): DatabasePlan {
  const leaders = nodes.filter((n) => n.role === "leader");
  if (leaders.length !== 1) {
    const roles = nodes.map((n) => `${n.id} ${n.role || "no role"} (${n.status})`).join(", ");
    return settle(
      o,
      "updating",
      `waiting for one leader before the rolling update: ${roles}`,
      INSTANCE_RECHECK_MS,
    );
  }
  const leader = leaders[0]!;
  // A node Patroni is taking over (Starter -> Business) leads once it runs its new spec.
  if (!settled(leader)) {
    return settle(
      o,
      "updating",
      `rolling update: waiting for the leader ${describe(leader)}`,
      INSTANCE_RECHECK_MS,
    );
  }
  // Why: a node just added for this change (Business -> Enterprise) streams before any other
  // restarts, so the cluster never runs on a single copy of the data.
  const added = isStale(o)(leader) ? nodes.find((n) => !isStale(o)(n) && !settled(n)) : undefined;
  if (added) {
    return settle(o, "updating", `rolling update: waiting for ${describe(added)}`, INSTANCE_RECHECK_MS);
  }
  const others = o.instances.filter((i) => i.id !== leader.id);
  const stale = others.filter(isStale(o));
  if (stale.length > 0) {
    const names = stale.map((i) => `${i.kind} ${i.id}`).join(", ");
    return ha(
      { kind: "update-specs", generation: o.generation, instanceIds: stale.map((i) => i.id) },
      `${o.id} rolls generation ${o.generation} out to ${names} before the leader ${leader.id}`,
    );
  }
  const waiting = others.find((i) => !settled(i));
  if (waiting)
    return settle(o, "updating", `rolling update: waiting for ${describe(waiting)}`, INSTANCE_RECHECK_MS);
  // Same size (Business <-> Enterprise): no setting needs a restart, so no switchover either.
  if (leader.ramMb !== undefined && leader.ramMb === o.planRamMb) {
    return ha(
      { kind: "update-specs", generation: o.generation, instanceIds: [leader.id] },
      `${o.id} same size: the leader ${leader.id} takes generation ${o.generation} in place, no switchover`,
    );
  }
  const candidate = nodes.find((n) => n.id !== leader.id && n.role === "follower" && settled(n));
  if (!candidate) {
    return settle(
      o,
      "updating",
      "rolling update: waiting for a running standby to switch over to",
      INSTANCE_RECHECK_MS,
    );
  }
  return ha(
    { kind: "request-switchover", leaderId: leader.id, candidateId: candidate.id, reason: "resize" },
    `${o.id} standbys run generation ${o.generation}: switching over from ${leader.id} to ${candidate.id}`,
    SWITCHOVER_RECHECK_MS,
  );
}

function dcsWait(o: DatabaseObservation): { plan: DatabasePlan } | { dcs: DcsEndpoints } {
  if (!o.dcs)
    return { plan: settle(o, "updating", "waiting for the region's etcd cluster", INSTANCE_RECHECK_MS) };
  if (!o.dcs.ready) return { plan: settle(o, "updating", o.dcs.reason, INSTANCE_RECHECK_MS) };
  return { dcs: { endpoints: o.dcs.endpoints, serviceEndpoints: o.dcs.serviceEndpoints } };
}

/**
 * Starter -> Business/Enterprise, first half: the standbys and their gateways, next to the
 * serving node (Shared: same AZ; Dedicated: free hosts of other AZs). Business -> Enterprise:
 * the third node and gateway; it clones the leader, and its agent turns synchronous mode on
 * once it streams.
 */
function planGrow(o: DatabaseObservation, nodes: InstanceObservation[]): DatabasePlan {
  const wait = dcsWait(o);
  if ("plan" in wait) return wait.plan;
  const p = o.growPlacement;
  if (!p || !p.ok) {
    const why = p && !p.ok ? p.reason : "no placement computed";
    return settle(o, "updating", `waiting for a host for the standby: ${why}`);
  }
  const hosts = [...new Set(p.slots.map((s) => s.hostId))].join(", ");
  const then = nodes.every((n) => n.ha === true)
    ? "they clone the leader"
    : "then Patroni takes the node over";
  return ha(
    { kind: "grow", generation: o.generation, slots: p.slots, dcs: wait.dcs },
    `${o.id} becomes a ${o.planNodes}-node cluster: standby and gateway placed on ${hosts}, ${then}`,
  );
}

/**
 * Starter -> Business, second half: the existing node gets its HA spec. Its gateway is
 * updated afterwards by the rolling path, once Patroni leads (a gateway checking /primary
 * earlier would mark the node down while Patroni starts).
 */
function planConvertToHa(o: DatabaseObservation): DatabasePlan {
  const wait = dcsWait(o);
  if ("plan" in wait) return wait.plan;
  return ha(
    { kind: "convert-to-ha", generation: o.generation, dcs: wait.dcs },
    `${o.id} hands its running node to Patroni (its data dir kept)`,
  );
}
