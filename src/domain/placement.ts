// Placement: which hosts run a database's nodes and gateways. Pure.
// Shared: nodes of one cluster on different hosts of one AZ, memory may be overcommitted.
// Dedicated: one node per dedicated host ("one VM per node"), nodes in different AZs,
// never overcommitted.
import type { ArchitectureModel, Plan } from "./catalog.ts";

export interface HostView {
  id: string;
  name: string;
  region: string;
  az: string;
  pool: ArchitectureModel;
  ready: boolean;
  capacityVcpu: number;
  capacityRamMb: number;
  capacityDiskGb: number;
  /** Resources already promised to nodes of other databases. */
  usedVcpu: number;
  usedRamMb: number;
  usedDiskGb: number;
  /** Nodes of other databases on this host. */
  nodeCount: number;
}

export interface PlacementRequest {
  model: ArchitectureModel;
  region: string;
  plan: Pick<Plan, "nodes" | "gateways" | "ramMb" | "vcpu" | "storageGb">;
  /** Shared hosts may promise this many times their RAM and disk (idle databases use little). */
  sharedOvercommit: number;
}

export interface Slot {
  kind: "node" | "gateway";
  ordinal: number;
  hostId: string;
}

export type PlacementResult = { ok: true; slots: Slot[] } | { ok: false; reason: string };

function fits(h: HostView, req: PlacementRequest): boolean {
  // Shared hosts are thin-provisioned: RAM and disk promises may exceed the capacity.
  const factor = req.model === "shared" ? req.sharedOvercommit : 1;
  if (h.usedRamMb + req.plan.ramMb > h.capacityRamMb * factor) return false;
  if (h.usedDiskGb + req.plan.storageGb > h.capacityDiskGb * factor) return false;
  // Dedicated vCPUs are exclusive: never promise more than the host has.
  if (req.model === "dedicated" && h.usedVcpu + req.plan.vcpu > h.capacityVcpu) return false;
  return true;
}

const freeRam = (h: HostView) => h.capacityRamMb - h.usedRamMb;

export function placeDatabase(req: PlacementRequest, hosts: HostView[]): PlacementResult {
  const pool = hosts.filter((h) => h.region === req.region && h.pool === req.model);
  if (pool.length === 0) {
    return { ok: false, reason: `no ${req.model} host is registered in region ${req.region}` };
  }
  const ready = pool.filter((h) => h.ready);
  if (ready.length === 0) {
    return { ok: false, reason: `no ${req.model} host of region ${req.region} is ready (all unreachable)` };
  }
  const candidates = ready
    .filter((h) => fits(h, req) && (req.model === "shared" || h.nodeCount === 0))
    .sort((a, b) => freeRam(b) - freeRam(a) || a.name.localeCompare(b.name));
  const chosen =
    req.model === "shared"
      ? pickSameAz(candidates, req.plan.nodes)
      : pickDistinctAz(candidates, req.plan.nodes);
  if (!chosen) {
    const need =
      req.model === "shared"
        ? `${req.plan.nodes} shared host(s) in one AZ`
        : `${req.plan.nodes} free dedicated host(s) in ${req.plan.nodes} different AZs`;
    return {
      ok: false,
      reason:
        `no capacity: needs ${need} each with ${req.plan.ramMb} MB RAM, ${req.plan.vcpu} vCPU and ` +
        `${req.plan.storageGb} GB disk free; ${candidates.length} of ${ready.length} ready host(s) fit`,
    };
  }
  const slots: Slot[] = chosen.map((h, i) => ({ kind: "node", ordinal: i, hostId: h.id }));
  for (let i = 0; i < req.plan.gateways; i++) {
    // Each gateway sits with a node (node-gateway pairs, one per host or AZ).
    slots.push({ kind: "gateway", ordinal: i, hostId: chosen[i % chosen.length]!.id });
  }
  return { ok: true, slots };
}

function pickSameAz(candidates: HostView[], n: number): HostView[] | null {
  const byAz = new Map<string, HostView[]>();
  for (const h of candidates) byAz.set(h.az, [...(byAz.get(h.az) ?? []), h]);
  // The AZ whose best hosts have the most free memory wins.
  const options = [...byAz.values()].filter((hs) => hs.length >= n).map((hs) => hs.slice(0, n));
  options.sort((a, b) => freeRam(b[0]!) - freeRam(a[0]!));
  return options[0] ?? null;
}

function pickDistinctAz(candidates: HostView[], n: number): HostView[] | null {
  const picked: HostView[] = [];
  for (const h of candidates) {
    if (picked.some((p) => p.az === h.az)) continue;
    picked.push(h);
    if (picked.length === n) return picked;
  }
  return null;
}
