// Pure planning of an HA cluster losing nodes: Enterprise -> Business (synchronous mode off,
// then a standby and a gateway removed) and back to a single node (Starter: the leader kept,
// the others removed, Patroni gone). The leader keeps serving throughout.
import {
  INSTANCE_RECHECK_MS,
  settle,
  type DatabaseObservation,
  type DatabasePlan,
  type InstanceObservation,
} from "./database-plan.ts";
import { describe, ha, isStale, lowestOrdinal, settled } from "./ha-plan-steps.ts";

/**
 * Business -> Starter: the leader stays, so writes never pause for a switchover (the
 * reference: "follower powered off"), with the gateway of the lowest ordinal (the URL).
 */
export function planShrink(o: DatabaseObservation, nodes: InstanceObservation[]): DatabasePlan | null {
  const keepGateway = lowestOrdinal(o.instances.filter((i) => i.kind === "gateway"));
  if (nodes.length === 1) {
    const keep = nodes[0]!;
    const extras = o.instances.filter((i) => i.id !== keep.id && i.id !== keepGateway?.id);
    if (extras.length > 0) return planRemoval(o, keep, extras);
    if (keep.ha === true || o.instances.some(isStale(o))) {
      return ha(
        { kind: "convert-to-single", generation: o.generation },
        `${o.id} runs ${keep.id} without Patroni again (its data dir kept)`,
      );
    }
    return null;
  }
  const leaders = nodes.filter((n) => n.role === "leader");
  if (leaders.length !== 1 || !settled(leaders[0]!)) {
    const roles = nodes.map((n) => `${n.id} ${n.role || "no role"} (${n.status})`).join(", ");
    return settle(o, "updating", `waiting for one running leader to keep: ${roles}`, INSTANCE_RECHECK_MS);
  }
  const keep = leaders[0]!;
  const extras = o.instances.filter((i) => i.id !== keep.id && i.id !== keepGateway?.id);
  // Why: with synchronous_mode_strict a leader left alone accepts no commit. The standbys about
  // to go take the new generation first: their agent turns synchronous mode off.
  if (nodes.some((n) => n.synchronous === true)) {
    const going = extras.filter((i) => i.kind === "node");
    const stale = going.filter(isStale(o));
    if (stale.length > 0) {
      return ha(
        { kind: "update-specs", generation: o.generation, instanceIds: stale.map((i) => i.id) },
        `${o.id} turns synchronous replication off through ${stale.map((i) => i.id).join(", ")} before removing the standbys`,
      );
    }
    const waiting = going.find((i) => !settled(i));
    if (waiting)
      return settle(
        o,
        "updating",
        `waiting for ${describe(waiting)} (synchronous mode off)`,
        INSTANCE_RECHECK_MS,
      );
  }
  return planRemoval(o, keep, extras);
}

/**
 * Enterprise -> Business: the standbys that stay take the new generation first (their agent
 * turns synchronous mode off: commits stop waiting for a standby), then the standby of the
 * highest ordinal and a gateway go; the leader and the other gateways follow in the rolling
 * update. Cellar's plans have one gateway per node, so planNodes also counts the gateways.
 */
export function planDropNodes(o: DatabaseObservation, nodes: InstanceObservation[]): DatabasePlan {
  const removing = o.instances.find((i) => i.desiredState === "deleted");
  if (removing) {
    return settle(o, "updating", `waiting for ${describe(removing)} to be removed`, INSTANCE_RECHECK_MS);
  }
  const leaders = nodes.filter((n) => n.role === "leader");
  if (leaders.length !== 1 || !settled(leaders[0]!)) {
    const roles = nodes.map((n) => `${n.id} ${n.role || "no role"} (${n.status})`).join(", ");
    return settle(
      o,
      "updating",
      `waiting for one running leader before removing a standby: ${roles}`,
      INSTANCE_RECHECK_MS,
    );
  }
  const leader = leaders[0]!;
  const followers = nodes
    .filter((n) => n.id !== leader.id)
    .sort((a, b) => (b.ordinal ?? 0) - (a.ordinal ?? 0));
  const extras = followers.slice(0, nodes.length - o.planNodes);
  const kept = followers.slice(nodes.length - o.planNodes);
  const stale = kept.filter(isStale(o));
  if (stale.length > 0) {
    const names = stale.map((n) => n.id).join(", ");
    return ha(
      { kind: "update-specs", generation: o.generation, instanceIds: stale.map((n) => n.id) },
      `${o.id} hands generation ${o.generation} to ${names} (synchronous mode off) before removing ${extras.map((n) => n.id).join(", ")}`,
    );
  }
  const waiting = kept.find((n) => !settled(n));
  if (waiting)
    return settle(
      o,
      "updating",
      `waiting for ${describe(waiting)} before removing a standby`,
      INSTANCE_RECHECK_MS,
    );
  const extraHosts = new Set(extras.map((n) => n.hostName));
  const gateways = o.instances.filter((i) => i.kind === "gateway");
  // The gateway beside a removed node goes; the one of ordinal 0 (the URL's) always stays.
  const dropGateways = gateways
    .filter((g) => g.ordinal !== 0)
    .sort(
      (a, b) =>
        Number(extraHosts.has(b.hostName)) - Number(extraHosts.has(a.hostName)) ||
        (b.ordinal ?? 0) - (a.ordinal ?? 0),
    )
    .slice(0, Math.max(0, gateways.length - o.planNodes));
  const gone = [...extras, ...dropGateways];
  return ha(
    { kind: "remove-instances", instanceIds: gone.map((i) => i.id) },
    `${o.id} removes ${gone.map((i) => `${i.kind} ${i.id}`).join(", ")}; synchronous mode is off and the leader ${leader.id} keeps serving`,
  );
}

function planRemoval(o: DatabaseObservation, keep: InstanceObservation, extras: InstanceObservation[]) {
  if (extras.every((i) => i.desiredState === "deleted")) {
    return settle(o, "updating", `waiting for ${describe(extras[0]!)} to be removed`, INSTANCE_RECHECK_MS);
  }
  const names = extras.map((i) => `${i.kind} ${i.id}`).join(", ");
  return ha(
    { kind: "remove-instances", instanceIds: extras.map((i) => i.id) },
    `${o.id} removes ${names}; the leader ${keep.id} keeps serving`,
  );
}
