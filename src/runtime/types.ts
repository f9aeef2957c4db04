// The isolation runtime's contract: what the host agent asks of a sandbox, and what it gets back.
// A sandbox is one cgroup (per hierarchy on v1) holding every process of one instance.

export type RuntimeKind = "cgroup-v1" | "cgroup-v2" | "none";

export interface IoLimit {
  /** Block device as "major:minor", e.g. "7:0" for /dev/loop0. */
  device: string;
  readIops?: number;
  writeIops?: number;
  readBps?: number;
  writeBps?: number;
}

/**
 * Desired limits of a sandbox. The whole object is the desired state: a field left out is
 * reset to "unlimited" / the default, so applying the same limits twice changes nothing.
 */
export interface SandboxLimits {
  /** Hard memory limit (the OOM killer acts inside the sandbox above it). */
  memoryBytes?: number;
  /** CPU bandwidth as a fraction of vCPUs: 0.25 = a quarter of one CPU, 2 = two CPUs. */
  cpuQuota?: number;
  /** Relative CPU weight under contention, cgroup v2 scale: 1..10000, default 100. */
  cpuWeight?: number;
  /** CPU ids reserved for this sandbox alone (Dedicated nodes); see allocateCpus(). */
  cpus?: readonly number[];
  /** Maximum number of processes and threads. */
  pidsMax?: number;
  io?: readonly IoLimit[];
}

export type LimitName = "memory" | "cpuQuota" | "cpuWeight" | "cpus" | "pids" | "io";

/** What ensureSandbox actually applied: a requested limit the host cannot enforce is listed in notes. */
export interface SandboxInfo {
  name: string;
  /** Limits written to the kernel (requested and enforceable). */
  enforced: LimitName[];
  /** One sentence per requested limit that is not enforced, and why. */
  notes: string[];
}

export interface SandboxUsage {
  /** CPU time consumed by the sandbox's processes since creation, in seconds. */
  cpuSeconds: number | null;
  /** Time the sandbox was held back by its CPU quota, in seconds. */
  cpuThrottledSeconds: number | null;
  memoryBytes: number | null;
  /** null when unlimited or unknown. */
  memoryLimitBytes: number | null;
  /** High-water mark of memoryBytes, where the kernel keeps one. */
  memoryPeakBytes: number | null;
  /** Processes killed by the OOM killer inside the sandbox. */
  oomKills: number | null;
  pids: number | null;
}

export interface RemoveOptions {
  /** How long to keep killing and waiting for the processes to go; default 10 s. */
  timeoutMs?: number;
}

export interface IsolationRuntime {
  readonly kind: RuntimeKind;
  /** Creates the sandbox if missing and applies `limits` (idempotent). */
  ensureSandbox(name: string, limits: SandboxLimits): Promise<SandboxInfo>;
  /** Same as ensureSandbox, but the sandbox must exist (NotFoundError otherwise). */
  updateLimits(name: string, limits: SandboxLimits): Promise<SandboxInfo>;
  /** Moves a running process (and only it: not its existing children) into the sandbox. */
  addProcess(name: string, pid: number): Promise<void>;
  /**
   * Files a process writes its own pid into to join the sandbox. Used by wrapCommand();
   * empty when the runtime isolates nothing.
   */
  procsFiles(name: string): string[];
  /** Pids currently in the sandbox (zombies are not listed). */
  processes(name: string): Promise<number[]>;
  usage(name: string): Promise<SandboxUsage>;
  /** Names of the sandboxes that exist under this runtime's parent (for orphan clean-up). */
  listSandboxes(): Promise<string[]>;
  /** Kills every process left in the sandbox and deletes it. Missing sandbox: no-op. */
  removeSandbox(name: string, opts?: RemoveOptions): Promise<void>;
}

export const EMPTY_USAGE: SandboxUsage = {
  cpuSeconds: null,
  cpuThrottledSeconds: null,
  memoryBytes: null,
  memoryLimitBytes: null,
  memoryPeakBytes: null,
  oomKills: null,
  pids: null,
};
