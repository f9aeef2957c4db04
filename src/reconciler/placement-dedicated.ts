// Placement of the changes of a running Dedicated database (pure): the nodes a class switch
// adds (Starter -> Business/Enterprise, Business -> Enterprise) go to free dedicated hosts in
// AZs the database does not use yet, never next to another node; a bigger plan must fit on
// the hosts its nodes already run on (a dedicated host is the node's "VM": never overcommitted).
import type { HostView, PlacementResult, Slot } from "../domain/placement.ts";

export interface DedicatedSize {
  ramMb: number;
  vcpu: number;
  storageGb: number;
}

export interface GrowRequest extends DedicatedSize {
  region: string;
  /** How many nodes to add (each with its gateway). */
  count: number;
  nodeOrdinal: number;
  gatewayOrdinal: number;
}

/** Whether `h` can promise `size` beside what other databases' nodes already hold. */
function fits(h: HostView, size: DedicatedSize): boolean {
  return (
    h.usedRamMb + size.ramMb <= h.capacityRamMb &&
    h.usedDiskGb + size.storageGb <= h.capacityDiskGb &&
    h.usedVcpu + size.vcpu <= h.capacityVcpu
  );
}

const freeRam = (h: HostView) => h.capacityRamMb - h.usedRamMb;

/**
 * Where the added nodes go: one per free dedicated host, each in an AZ that none of the
 * database's nodes (`nodeHostIds`) uses, each with a gateway beside it. `hosts` counts the
 * resources of other databases only.
 */
export function placeDedicatedGrowth(
  nodeHostIds: readonly string[],
  hosts: HostView[],
  req: GrowRequest,
): PlacementResult {
  const byId = new Map(hosts.map((h) => [h.id, h]));
  const usedAzs = new Set(nodeHostIds.map((id) => byId.get(id)?.az).filter((az) => az !== undefined));
  const pool = hosts.filter((h) => h.pool === "dedicated" && h.region === req.region && h.ready);
  const candidates = pool
    .filter((h) => !nodeHostIds.includes(h.id) && !usedAzs.has(h.az))
    // Why: a dedicated host is one node's "VM"; a second node there would share its CPUs.
    .filter((h) => h.nodeCount === 0 && fits(h, req))
    .sort((a, b) => freeRam(b) - freeRam(a) || a.name.localeCompare(b.name));
  const chosen: HostView[] = [];
  for (const h of candidates) {
    if (chosen.some((c) => c.az === h.az)) continue;
    chosen.push(h);
    if (chosen.length === req.count) break;
  }
  if (chosen.length < req.count) {
    const avoid = usedAzs.size > 0 ? ` other than ${[...usedAzs].sort().join(", ")}` : "";
    return {
      ok: false,
      reason:
        `no capacity for ${req.count} more node(s): needs ${req.count} free dedicated host(s) in ` +
        `${req.count} different AZ(s)${avoid}, each with ${req.ramMb} MB RAM, ${req.vcpu} vCPU and ` +
        `${req.storageGb} GB disk free; ${candidates.length} of ${pool.length} ready dedicated host(s) qualify`,
    };
  }
  const slots: Slot[] = [];
  chosen.forEach((h, i) => {
    slots.push({ kind: "node", ordinal: req.nodeOrdinal + i, hostId: h.id });
    slots.push({ kind: "gateway", ordinal: req.gatewayOrdinal + i, hostId: h.id });
  });
  return { ok: true, slots };
}

/**
 * Whether a bigger plan fits where the database's nodes run; null when it does, else why not
 * (the change then waits: a node is never squeezed onto a host that cannot hold it).
 */
export function dedicatedResizeBlocked(
  nodeHostIds: readonly string[],
  hosts: HostView[],
  size: DedicatedSize & { name: string },
): string | null {
  const byId = new Map(hosts.map((h) => [h.id, h]));
  for (const id of nodeHostIds) {
    const h = byId.get(id);
    if (!h || fits(h, size)) continue;
    const free = `${h.capacityRamMb - h.usedRamMb} MB RAM, ${h.capacityVcpu - h.usedVcpu} vCPU and ${h.capacityDiskGb - h.usedDiskGb} GB disk`;
    return (
      `waiting for capacity: plan ${size.name} needs ${size.ramMb} MB RAM, ${size.vcpu} vCPU and ` +
      `${size.storageGb} GB disk on each node's host, and host ${h.name} has ${free} free`
    );
  }
  return null;
}
