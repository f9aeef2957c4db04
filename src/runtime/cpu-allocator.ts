// Exclusive CPU allocation for Dedicated hosts (pure). A CPU given to one sandbox is never
// given to another: the caller passes every CPU already taken (by sandboxes or kept for the host).
import { formatCpuList } from "./limits.ts";

export type CpuAllocation = { ok: true; cpus: number[] } | { ok: false; reason: string };

/**
 * Picks `wanted` CPUs among 0..totalCpus-1 that are not in `reserved`, lowest ids first, so the
 * same inputs always give the same answer (an agent replaying a step gets the same CPUs).
 */
export function allocateCpus(totalCpus: number, reserved: readonly number[], wanted: number): CpuAllocation {
  if (!Number.isInteger(totalCpus) || totalCpus < 1) {
    return { ok: false, reason: `the host must have at least 1 CPU, got ${totalCpus}` };
  }
  if (!Number.isInteger(wanted) || wanted < 1) {
    return {
      ok: false,
      reason: `exclusive CPUs are allocated by whole CPUs: wanted ${wanted}, need 1 or more`,
    };
  }
  const outOfRange = reserved.filter((c) => !Number.isInteger(c) || c < 0 || c >= totalCpus);
  if (outOfRange.length > 0) {
    return {
      ok: false,
      reason: `reserved CPUs ${outOfRange.join(",")} do not exist on a host with CPUs 0-${totalCpus - 1}`,
    };
  }
  const taken = new Set(reserved);
  const free: number[] = [];
  for (let c = 0; c < totalCpus; c++) if (!taken.has(c)) free.push(c);
  if (free.length < wanted) {
    const takenText = taken.size ? ` (CPUs ${formatCpuList([...taken])} already taken)` : "";
    return {
      ok: false,
      reason: `needs ${wanted} exclusive CPU${wanted > 1 ? "s" : ""}, only ${free.length} of ${totalCpus} free${takenText}`,
    };
  }
  return { ok: true, cpus: free.slice(0, wanted) };
}
