// Pure checks and unit conversions shared by the cgroup back-ends (no I/O).
import { ValidationError } from "../domain/errors.ts";
import type { IoLimit, SandboxLimits } from "./types.ts";

const NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;

/** On-host sandbox name of an instance: deterministic, so a restarted agent finds its sandboxes. */
export function sandboxNameFor(instanceId: string): string {
  return assertSandboxName(`cellar-${instanceId}`);
}

/** Names become directory names under the cgroup tree: no slash, no dot, nothing to escape. */
export function assertSandboxName(name: string): string {
  if (!NAME.test(name)) {
    throw ValidationError.field(
      "sandbox",
      `"${name}" is not a valid sandbox name: 1 to 63 characters of a-z, 0-9, _ and -, starting with a letter or digit`,
    );
  }
  return name;
}

export const MIN_MEMORY_BYTES = 4 * 1024 * 1024;
/** CFS period used by both back-ends; 100 ms is the kernel default. */
export const CPU_PERIOD_US = 100_000;
const MIN_QUOTA_US = 1_000;

function checkInt(field: string, value: number | undefined, min: number, max: number): void {
  if (value === undefined) return;
  if (!Number.isInteger(value) || value < min || value > max) {
    throw ValidationError.field(field, `must be an integer from ${min} to ${max}, got ${value}`);
  }
}

function checkIo(io: IoLimit, index: number): void {
  if (!/^\d+:\d+$/.test(io.device)) {
    throw ValidationError.field(`io[${index}].device`, `must be "major:minor", got "${io.device}"`);
  }
  for (const key of ["readIops", "writeIops", "readBps", "writeBps"] as const) {
    checkInt(`io[${index}].${key}`, io[key], 1, Number.MAX_SAFE_INTEGER);
  }
}

export function validateLimits(limits: SandboxLimits): void {
  checkInt("memoryBytes", limits.memoryBytes, MIN_MEMORY_BYTES, Number.MAX_SAFE_INTEGER);
  if (limits.cpuQuota !== undefined) {
    const q = limits.cpuQuota;
    if (!Number.isFinite(q) || q * CPU_PERIOD_US < MIN_QUOTA_US || q > 1024) {
      throw ValidationError.field("cpuQuota", `must be a fraction of vCPUs from 0.01 to 1024, got ${q}`);
    }
  }
  checkInt("cpuWeight", limits.cpuWeight, 1, 10_000);
  checkInt("pidsMax", limits.pidsMax, 1, 4_194_304);
  if (limits.cpus !== undefined) {
    if (limits.cpus.length === 0) throw ValidationError.field("cpus", "must list at least one CPU id");
    limits.cpus.forEach((c) => checkInt("cpus", c, 0, 8191));
    if (new Set(limits.cpus).size !== limits.cpus.length) {
      throw ValidationError.field("cpus", `must not repeat a CPU id, got ${formatCpuList(limits.cpus)}`);
    }
  }
  limits.io?.forEach(checkIo);
}

/** cpuQuota 0.25 → 25000 (µs per 100 ms period). */
export function quotaMicros(cpuQuota: number): number {
  return Math.max(MIN_QUOTA_US, Math.round(cpuQuota * CPU_PERIOD_US));
}

/** cgroup v2 weight (1..10000, default 100) → cgroup v1 shares (2..262144, default 1024). */
export function weightToShares(weight: number): number {
  return Math.min(262_144, Math.max(2, Math.round((weight * 1024) / 100)));
}

/** Parses the kernel's CPU list format: "0-2,4" → [0, 1, 2, 4]; "" → []. */
export function parseCpuList(text: string): number[] {
  const out = new Set<number>();
  for (const part of text.trim().split(",")) {
    if (part === "") continue;
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw new Error(`not a CPU list: "${text}"`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    for (let c = lo; c <= hi; c++) out.add(c);
  }
  return [...out].sort((a, b) => a - b);
}

/** [0, 1, 2, 4] → "0-2,4". */
export function formatCpuList(cpus: readonly number[]): string {
  const sorted = [...new Set(cpus)].sort((a, b) => a - b);
  const parts: string[] = [];
  let i = 0;
  while (i < sorted.length) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    parts.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}
