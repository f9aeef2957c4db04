// How a database's instances are shown by the database API (reference §4.3): their status
// in the reference's vocabulary and the metrics built from the usage agents report. Pure.

/** What the views need of an instance row (see store/instances.store.ts). */
export interface InstanceFacts {
  id: string;
  kind: "node" | "gateway";
  status: string;
  desiredState: string;
  role: string;
  /** Where the instance listens: its host's address and its port. */
  address: string;
  port: number;
  /** Numbers read on the host by the agent (cpu_percent, memory_bytes, disk_bytes...). */
  usage: Record<string, number>;
  /** A node's data dir as its agent last saw it: encrypted at rest (null: not reported). */
  encryptedAtRest?: boolean | null;
  /** With what it is encrypted, or why it is not. */
  atRestNote?: string;
}

export type ReferenceInstanceStatus = "booting" | "running" | "restarting" | "stopped" | "removing";

/**
 * The reference's instance statuses (booting, running, restarting, migrating, upgrading,
 * stopped, removing). A failed instance does not serve: it is `stopped` (its agent keeps
 * retrying and the database's phase reason says why); one on its way out is `removing`.
 */
export function referenceInstanceStatus(
  i: Pick<InstanceFacts, "status" | "desiredState">,
): ReferenceInstanceStatus {
  if (i.desiredState === "deleted" || i.status === "removing" || i.status === "removed") return "removing";
  switch (i.status) {
    case "booting":
    case "running":
    case "restarting":
    case "stopped":
      return i.status;
    default:
      return "stopped";
  }
}

export function instanceStatusJson(i: InstanceFacts) {
  return {
    id: i.id,
    type: i.kind === "node" ? "db-node" : "haproxy",
    status: referenceInstanceStatus(i),
    role: i.kind === "node" ? i.role : "",
    // Cellar's own: whether the node's data is encrypted at rest, and with what or why not.
    ...(i.kind === "node"
      ? { encryption_at_rest: i.encryptedAtRest === true, encryption_at_rest_detail: atRestDetail(i) }
      : {}),
  };
}

function atRestDetail(i: InstanceFacts): string {
  if (i.encryptedAtRest === null || i.encryptedAtRest === undefined) return "not reported yet";
  return i.atRestNote ?? "";
}

/**
 * The database's `encryption_at_rest`: true only when every node it keeps reports its data
 * dir encrypted (policy read back, key present); unknown counts as not encrypted.
 */
export function databaseEncryptedAtRest(instances: InstanceFacts[]): boolean {
  const nodes = instances.filter((i) => i.kind === "node" && i.desiredState !== "deleted");
  return nodes.length > 0 && nodes.every((n) => n.encryptedAtRest === true);
}

/** The `instances` of the database object. */
export function databaseInstanceJson(i: InstanceFacts) {
  return {
    id: i.id,
    hostname: i.address,
    port: i.port,
    status: referenceInstanceStatus(i),
    type: i.kind === "node" ? "db-node" : "haproxy",
    features: [],
    private_ip: i.address,
  };
}

const num = (usage: Record<string, number>, key: string): number | null => {
  const v = usage[key];
  return typeof v === "number" && Number.isFinite(v) ? v : null;
};

/** Memory in the reference's shape; this platform runs without swap, so swap is 0. */
function memoryJson(usage: Record<string, number>) {
  return {
    memory_usage: num(usage, "memory_bytes"),
    memory_limit: num(usage, "memory_limit_bytes"),
    max_memory_usage: num(usage, "memory_peak_bytes"),
    swap_usage: 0,
    swap_limit: 0,
    max_swap_usage: 0,
  };
}

function nodeMetricsJson(i: InstanceFacts) {
  return {
    instance_id: i.id,
    instance_address: `${i.address}:${i.port}`,
    real_disk_size: num(i.usage, "disk_bytes"),
    cpu: { usage_in_percents: roundCpu(num(i.usage, "cpu_percent")) },
    memory: memoryJson(i.usage),
  };
}

const roundCpu = (v: number | null): number | null => (v === null ? null : Math.round(v * 100) / 100);

/**
 * `GET /databases/:db/metrics`: per database node, and at the top the leader's numbers (the
 * node that serves writes; the only one on a Starter). Unknown numbers (no report yet) are null.
 */
export function databaseMetricsJson(instances: InstanceFacts[]) {
  const nodes = instances.filter((i) => i.kind === "node" && referenceInstanceStatus(i) !== "removing");
  const leader = nodes.find((n) => n.role === "leader") ?? nodes[0];
  const usage = leader?.usage ?? {};
  return {
    cpu_usage: roundCpu(num(usage, "cpu_percent")),
    memory: memoryJson(usage),
    real_disk_size: num(usage, "disk_bytes"),
    instances_metrics: Object.fromEntries(nodes.map((n) => [n.id, nodeMetricsJson(n)])),
  };
}

export interface CpuSample {
  cpuSeconds: number;
  /** Monotonic milliseconds. */
  atMs: number;
}

/**
 * CPU used between two readings of a sandbox's counter, in percent of the instance's vCPU
 * allotment (100 = all it may use). null when it cannot be told: no time elapsed, or the
 * counter went back (the sandbox was re-created).
 */
export function cpuPercentBetween(prev: CpuSample, cur: CpuSample, vcpu: number): number | null {
  const elapsedSeconds = (cur.atMs - prev.atMs) / 1000;
  const used = cur.cpuSeconds - prev.cpuSeconds;
  if (elapsedSeconds <= 0 || used < 0 || vcpu <= 0) return null;
  return (used / elapsedSeconds / vcpu) * 100;
}
