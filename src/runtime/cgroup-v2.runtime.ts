// cgroup v2 back-end: plain file writes under one root directory, <root>/<name> per sandbox.
// The root must be delegated to this process (controllers listed in its parent's
// cgroup.controllers); enableV2Delegation() in v2-delegation.ts prepares that on a real host.
import fs from "node:fs/promises";
import path from "node:path";
import { NotFoundError } from "../domain/errors.ts";
import {
  exists,
  IsolationError,
  join,
  killAllAndRemove,
  readKeyed,
  readNumber,
  readPids,
  readText,
  removeCgroupDir,
  subdirs,
  writeValue,
} from "./cgroup-fs.ts";
import { assertCpusFree } from "./cpuset-guard.ts";
import { assertSandboxName, CPU_PERIOD_US, formatCpuList, quotaMicros, validateLimits } from "./limits.ts";
import { V2_CONTROLLERS, type V2Controller } from "./probe-facts.ts";
import type {
  IoLimit,
  IsolationRuntime,
  LimitName,
  RemoveOptions,
  SandboxInfo,
  SandboxLimits,
  SandboxUsage,
} from "./types.ts";

export interface CgroupV2Options {
  /** Directory holding the sandboxes, e.g. /sys/fs/cgroup/<own path>/cellar; created when missing. */
  root: string;
  /** Controllers the root's parent offers (IsolationProbe.v2Controllers). */
  controllers: readonly string[];
  /** Kernel has cgroup.kill (>= 5.14); otherwise processes are killed one by one. */
  cgroupKill: boolean;
}

const CGROUP2_SUPER_MAGIC = 0x63677270;
const IO_KEYS = { readIops: "riops", writeIops: "wiops", readBps: "rbps", writeBps: "wbps" } as const;

export class CgroupV2Runtime implements IsolationRuntime {
  readonly kind = "cgroup-v2";
  private readonly root: string;
  private readonly controllers: V2Controller[];
  private readonly cgroupKill: boolean;
  private realFs: boolean | undefined;

  constructor(opts: CgroupV2Options) {
    this.root = path.resolve(opts.root);
    this.controllers = V2_CONTROLLERS.filter((c) => opts.controllers.includes(c));
    this.cgroupKill = opts.cgroupKill;
  }

  private dir(name: string): string {
    return join(this.root, assertSandboxName(name));
  }

  procsFiles(name: string): string[] {
    return [join(this.dir(name), "cgroup.procs")];
  }

  async ensureSandbox(name: string, limits: SandboxLimits): Promise<SandboxInfo> {
    const dir = this.dir(name);
    validateLimits(limits);
    await this.ensureRoot();
    if (limits.cpus && this.has("cpuset")) {
      await assertCpusFree(this.root, name, limits.cpus, "cpuset.cpus", "cpuset.cpus.effective");
    }
    await fs.mkdir(dir, { recursive: true });
    return this.apply(name, dir, limits);
  }

  async updateLimits(name: string, limits: SandboxLimits): Promise<SandboxInfo> {
    await this.mustExist(name);
    return this.ensureSandbox(name, limits);
  }

  async addProcess(name: string, pid: number): Promise<void> {
    await this.mustExist(name);
    await writeValue(this.procsFiles(name)[0]!, String(pid));
  }

  async processes(name: string): Promise<number[]> {
    return (await readPids(this.procsFiles(name)[0]!)).sort((a, b) => a - b);
  }

  async usage(name: string): Promise<SandboxUsage> {
    await this.mustExist(name);
    const dir = this.dir(name);
    // cpu.stat (usage_usec) exists in every v2 cgroup, even without the cpu controller.
    const cpu = await readKeyed(join(dir, "cpu.stat"));
    const usageUs = cpu.get("usage_usec");
    const throttledUs = cpu.get("throttled_usec");
    const mem = this.has("memory");
    return {
      cpuSeconds: usageUs === undefined ? null : usageUs / 1e6,
      cpuThrottledSeconds: throttledUs === undefined ? null : throttledUs / 1e6,
      memoryBytes: mem ? await readNumber(join(dir, "memory.current")) : null,
      memoryLimitBytes: mem ? await readNumber(join(dir, "memory.max")) : null,
      memoryPeakBytes: mem ? await readNumber(join(dir, "memory.peak")) : null,
      oomKills: mem ? ((await readKeyed(join(dir, "memory.events"))).get("oom_kill") ?? null) : null,
      pids: this.has("pids") ? await readNumber(join(dir, "pids.current")) : null,
    };
  }

  async listSandboxes(): Promise<string[]> {
    return (await subdirs(this.root)).sort();
  }

  async removeSandbox(name: string, opts: RemoveOptions = {}): Promise<void> {
    const dir = this.dir(name);
    if (!(await exists(dir))) return;
    const timeoutMs = opts.timeoutMs ?? 10_000;
    // cgroup.kill also catches processes forking while we kill; the loop below is the fallback.
    if (this.cgroupKill) await writeValue(join(dir, "cgroup.kill"), "1");
    await killAllAndRemove(this.procsFiles(name), [], timeoutMs);
    if (await this.onCgroupFs()) await removeCgroupDir(dir, timeoutMs);
    // A stand-in tree (tests) holds ordinary files, which rmdir refuses.
    else await fs.rm(dir, { recursive: true, force: true });
  }

  private has(c: V2Controller): boolean {
    return this.controllers.includes(c);
  }

  private async onCgroupFs(): Promise<boolean> {
    this.realFs ??= (await fs.statfs(this.root)).type === CGROUP2_SUPER_MAGIC;
    return this.realFs;
  }

  private async mustExist(name: string): Promise<void> {
    if (!(await exists(this.dir(name)))) throw new NotFoundError(`sandbox ${name}`);
  }

  /** Controllers must be enabled in the parent's and the root's subtree_control to reach sandboxes. */
  private async ensureRoot(): Promise<void> {
    await fs.mkdir(this.root, { recursive: true });
    if (this.controllers.length === 0) return;
    const wanted = this.controllers.map((c) => `+${c}`).join(" ");
    await writeValue(join(this.root, "..", "cgroup.subtree_control"), wanted);
    await writeValue(join(this.root, "cgroup.subtree_control"), wanted);
  }

  private async apply(name: string, dir: string, limits: SandboxLimits): Promise<SandboxInfo> {
    const enforced: LimitName[] = [];
    const notes: string[] = [];
    const step = async (limit: LimitName, requested: boolean, c: V2Controller, fn: () => Promise<void>) => {
      if (!this.has(c)) {
        if (requested)
          notes.push(`${limit} not enforced: ${c} controller not available in ${this.root} (cgroup v2)`);
        return;
      }
      await fn();
      if (requested) enforced.push(limit);
    };
    await step("memory", limits.memoryBytes !== undefined, "memory", async () => {
      const value = limits.memoryBytes === undefined ? "max" : String(limits.memoryBytes);
      await writeValue(join(dir, "memory.max"), value);
      // Without swap accounting the file is absent: nothing to swap into beyond the limit anyway.
      const swap = join(dir, "memory.swap.max");
      if (await exists(swap)) await writeValue(swap, limits.memoryBytes === undefined ? "max" : "0");
    });
    await step("cpuQuota", limits.cpuQuota !== undefined, "cpu", () => {
      const quota = limits.cpuQuota === undefined ? "max" : String(quotaMicros(limits.cpuQuota));
      return writeValue(join(dir, "cpu.max"), `${quota} ${CPU_PERIOD_US}`);
    });
    await step("cpuWeight", limits.cpuWeight !== undefined, "cpu", () =>
      writeValue(join(dir, "cpu.weight"), String(limits.cpuWeight ?? 100)),
    );
    await step("cpus", limits.cpus !== undefined, "cpuset", async () => {
      const note = await applyCpuset(dir, limits.cpus);
      if (note) notes.push(note);
    });
    await step("pids", limits.pidsMax !== undefined, "pids", () =>
      writeValue(join(dir, "pids.max"), limits.pidsMax === undefined ? "max" : String(limits.pidsMax)),
    );
    await step("io", (limits.io?.length ?? 0) > 0, "io", () => applyIo(dir, limits.io ?? []));
    return { name, enforced, notes };
  }
}

/**
 * Pins the sandbox to its CPUs and asks for a partition of its own, which takes them away from
 * every other cgroup. The kernel only grants it when the parents allow (partition roots or
 * cpuset.cpus.exclusive up the tree); otherwise the CPUs stay pinned but shared, and we say so.
 */
async function applyCpuset(dir: string, cpus: readonly number[] | undefined): Promise<string | null> {
  const partition = join(dir, "cpuset.cpus.partition");
  const exclusive = join(dir, "cpuset.cpus.exclusive");
  if (cpus === undefined) {
    if (await exists(partition)) await writeValue(partition, "member");
    if (await exists(exclusive)) await writeValue(exclusive, "");
    await writeValue(join(dir, "cpuset.cpus"), "");
    return null;
  }
  const list = formatCpuList(cpus);
  await writeValue(join(dir, "cpuset.cpus"), list);
  try {
    if (await exists(exclusive)) await writeValue(exclusive, list);
    await writeValue(partition, "root");
  } catch (err) {
    if (!(err instanceof IsolationError)) throw err;
    return `cpus ${list} pinned but not exclusive: ${err.message}`;
  }
  const state = (await readText(partition)) ?? "";
  if (state.includes("invalid")) {
    await writeValue(partition, "member");
    return `cpus ${list} pinned but not exclusive: kernel says "${state}"`;
  }
  return null;
}

/** io.max takes one device per write; devices no longer wanted are reset to "max". */
async function applyIo(dir: string, io: readonly IoLimit[]): Promise<void> {
  const file = join(dir, "io.max");
  const lines = new Map<string, string>();
  for (const line of ((await readText(file)) ?? "").split("\n")) {
    const device = line.split(" ")[0];
    if (device) lines.set(device, `${device} riops=max wiops=max rbps=max wbps=max`);
  }
  for (const l of io) {
    const parts = (Object.entries(IO_KEYS) as [keyof typeof IO_KEYS, string][]).map(
      ([k, key]) => `${key}=${l[k] ?? "max"}`,
    );
    lines.set(l.device, `${l.device} ${parts.join(" ")}`);
  }
  for (const line of lines.values()) await writeValue(file, line);
}
