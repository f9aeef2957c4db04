// Where a Shared Starter's standby goes when it becomes a Business cluster (pure): another
// ready host of its node's AZ with room for the plan, never the node's own host.
import type { HostView, Slot } from "../domain/placement.ts";

/** Where a Starter's standby goes: another ready host of its node's AZ with room for the plan. */
export function placeStandby(
  current: { hostId: string },
  hosts: HostView[],
  req: { ramMb: number; storageGb: number; overcommit: number; nodeOrdinal: number; gatewayOrdinal: number },
): { ok: true; slots: Slot[] } | { ok: false; reason: string } {
  const home = hosts.find((h) => h.id === current.hostId);
  if (!home) return { ok: false, reason: `the node's host ${current.hostId} is unknown` };
  const fits = (h: HostView) =>
    h.usedRamMb + req.ramMb <= h.capacityRamMb * req.overcommit &&
    h.usedDiskGb + req.storageGb <= h.capacityDiskGb * req.overcommit;
  const candidates = hosts
    .filter((h) => h.id !== home.id && h.ready && h.pool === home.pool && h.region === home.region)
    .filter((h) => h.az === home.az && fits(h))
    .sort(
      (a, b) =>
        b.capacityRamMb - b.usedRamMb - (a.capacityRamMb - a.usedRamMb) || a.name.localeCompare(b.name),
    );
  const chosen = candidates[0];
  if (!chosen) {
    return {
      ok: false,
      reason: `no other ready host of AZ ${home.az} has ${req.ramMb} MB RAM and ${req.storageGb} GB disk free`,
    };
  }
  return {
    ok: true,
    slots: [
      { kind: "node", ordinal: req.nodeOrdinal, hostId: chosen.id },
      { kind: "gateway", ordinal: req.gatewayOrdinal, hostId: chosen.id },
    ],
  };
}
