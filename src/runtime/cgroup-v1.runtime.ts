// cgroup v1 back-end: one directory per hierarchy (cpu, cpuacct, cpuset, memory, blkio, pids),
// each created under this process's own cgroup in that hierarchy: <own>/<parent>/<name>.
import fs from "node:fs/promises";
import { NotFoundError, ValidationError } from "../domain/errors.ts";
import {
  exists,
  join,
  killAllAndRemove,
  readKeyed,
  readNumber,
  readPids,
  readText,
  subdirs,
  writeValue,
} from "./cgroup-fs.ts";
import { assertCpusFree } from "./cpuset-guard.ts";
import {
  assertSandboxName,
  formatCpuList,
  quotaMicros,
  validateLimits,
  weightToShares,
  CPU_PERIOD_US,
} from "./limits.ts";
import type { V1Controller } from "./probe-facts.ts";
import type {
  IoLimit,
  IsolationRuntime,
  LimitName,
  RemoveOptions,
  SandboxInfo,
  SandboxLimits,
  SandboxUsage,
} from "./types.ts";

export interface CgroupV1Options {
  /** This process's own cgroup directory per mounted controller (IsolationProbe.layout.v1). */
  dirs: Partial<Record<V1Controller, string>>;
  /** Directory created under each own directory to hold the sandboxes; default "cellar". */
  parent?: string;
}

/** memory.limit_in_bytes reads back as a page-rounded LONG_MAX when unlimited. */
const UNLIMITED_THRESHOLD = 2 ** 62;
const IO_FILES = {
  readIops: "blkio.throttle.read_iops_device",
  writeIops: "blkio.throttle.write_iops_device",
  readBps: "blkio.throttle.read_bps_device",
  writeBps: "blkio.throttle.write_bps_device",
} as const;

export class CgroupV1Runtime implements IsolationRuntime {
  readonly kind = "cgroup-v1";
  private readonly bases: Partial<Record<V1Controller, string>> = {};

  constructor(opts: CgroupV1Options) {
    const parent = assertSandboxName(opts.parent ?? "cellar");
    for (const [c, dir] of Object.entries(opts.dirs) as [V1Controller, string][]) {
      this.bases[c] = join(dir, parent);
    }
  }

  private dir(c: V1Controller, name: string): string | null {
    const base = this.bases[c];
    return base === undefined ? null : join(base, name);
  }

  /** Sandbox directories, one per hierarchy (co-mounted controllers share one). */
  private dirs(name: string): string[] {
    return [...new Set(Object.values(this.bases).map((b) => join(b, name)))];
  }

  procsFiles(name: string): string[] {
    return this.dirs(assertSandboxName(name)).map((d) => join(d, "cgroup.procs"));
  }

  async ensureSandbox(name: string, limits: SandboxLimits): Promise<SandboxInfo> {
    assertSandboxName(name);
    validateLimits(limits);
    await this.ensureBases();
    if (limits.cpus && this.bases.cpuset) await assertCpusFree(this.bases.cpuset, name, limits.cpus);
    for (const d of this.dirs(name)) await fs.mkdir(d, { recursive: true });
    return this.apply(name, limits);
  }

  async updateLimits(name: string, limits: SandboxLimits): Promise<SandboxInfo> {
    await this.mustExist(name);
    return this.ensureSandbox(name, limits);
  }

  async addProcess(name: string, pid: number): Promise<void> {
    await this.mustExist(name);
    for (const f of this.procsFiles(name)) await writeValue(f, String(pid));
  }

  async processes(name: string): Promise<number[]> {
    const all = await Promise.all(this.procsFiles(name).map(readPids));
    return [...new Set(all.flat())].sort((a, b) => a - b);
  }

  async usage(name: string): Promise<SandboxUsage> {
    await this.mustExist(name);
    const mem = this.dir("memory", name);
    const cpuacct = this.dir("cpuacct", name);
    const cpu = this.dir("cpu", name);
    const pids = this.dir("pids", name);
    const limit = mem ? await readNumber(join(mem, "memory.limit_in_bytes")) : null;
    const usageNs = cpuacct ? await readNumber(join(cpuacct, "cpuacct.usage")) : null;
    const throttledNs = cpu ? (await readKeyed(join(cpu, "cpu.stat"))).get("throttled_time") : undefined;
    return {
      cpuSeconds: usageNs === null ? null : usageNs / 1e9,
      cpuThrottledSeconds: throttledNs === undefined ? null : throttledNs / 1e9,
      memoryBytes: mem ? await readNumber(join(mem, "memory.usage_in_bytes")) : null,
      memoryLimitBytes: limit === null || limit >= UNLIMITED_THRESHOLD ? null : limit,
      memoryPeakBytes: mem ? await readNumber(join(mem, "memory.max_usage_in_bytes")) : null,
      oomKills: mem ? ((await readKeyed(join(mem, "memory.oom_control"))).get("oom_kill") ?? null) : null,
      pids: pids ? await readNumber(join(pids, "pids.current")) : null,
    };
  }

  async listSandboxes(): Promise<string[]> {
    const names = await Promise.all(Object.values(this.bases).map((b) => subdirs(b)));
    return [...new Set(names.flat())].sort();
  }

  async removeSandbox(name: string, opts: RemoveOptions = {}): Promise<void> {
    assertSandboxName(name);
    const dirs: string[] = [];
    for (const d of this.dirs(name)) if (await exists(d)) dirs.push(d);
    const procs = dirs.map((d) => join(d, "cgroup.procs"));
    await killAllAndRemove(procs, dirs, opts.timeoutMs ?? 10_000);
  }

  private async mustExist(name: string): Promise<void> {
    assertSandboxName(name);
    const first = this.dirs(name)[0];
    if (first === undefined || !(await exists(first))) throw new NotFoundError(`sandbox ${name}`);
  }

  /** A new cpuset cgroup starts with empty cpus/mems and accepts no process until both are set. */
  private async ensureBases(): Promise<void> {
    for (const base of new Set(Object.values(this.bases))) await fs.mkdir(base, { recursive: true });
    const cs = this.bases.cpuset;
    if (cs === undefined) return;
    const up = join(cs, "..");
    for (const file of ["cpuset.cpus", "cpuset.mems"]) {
      if (!(await readText(join(cs, file))))
        await writeValue(join(cs, file), (await readText(join(up, file))) ?? "");
    }
  }

  private async apply(name: string, limits: SandboxLimits): Promise<SandboxInfo> {
    const enforced: LimitName[] = [];
    const notes: string[] = [];
    const step = async (
      limit: LimitName,
      requested: boolean,
      c: V1Controller,
      fn: (dir: string) => Promise<void>,
    ) => {
      const dir = this.dir(c, name);
      if (dir === null) {
        if (requested) notes.push(`${limit} not enforced: ${c} controller not mounted (cgroup v1)`);
        return;
      }
      await fn(dir);
      if (requested) enforced.push(limit);
    };
    await step("memory", limits.memoryBytes !== undefined, "memory", (d) =>
      applyMemory(d, limits.memoryBytes),
    );
    await step("cpuQuota", limits.cpuQuota !== undefined, "cpu", (d) => applyQuota(d, limits.cpuQuota));
    await step("cpuWeight", limits.cpuWeight !== undefined, "cpu", (d) =>
      writeValue(join(d, "cpu.shares"), String(weightToShares(limits.cpuWeight ?? 100))),
    );
    await step("cpus", limits.cpus !== undefined, "cpuset", async (d) => {
      const parent = this.bases.cpuset!;
      await writeValue(join(d, "cpuset.mems"), (await readText(join(parent, "cpuset.mems"))) ?? "");
      const cpus = limits.cpus
        ? formatCpuList(limits.cpus)
        : ((await readText(join(parent, "cpuset.cpus"))) ?? "");
      await writeValue(join(d, "cpuset.cpus"), cpus);
    });
    await step("pids", limits.pidsMax !== undefined, "pids", (d) =>
      writeValue(join(d, "pids.max"), limits.pidsMax === undefined ? "max" : String(limits.pidsMax)),
    );
    await step("io", (limits.io?.length ?? 0) > 0, "blkio", (d) => applyIo(d, limits.io ?? []));
    return { name, enforced, notes };
  }
}

/**
 * memsw (memory+swap) must stay >= the memory limit at every moment, so the order of the two
 * writes depends on the direction. Setting both to the same value means "no swap beyond the limit".
 */
async function applyMemory(dir: string, bytes: number | undefined): Promise<void> {
  const target = bytes === undefined ? "-1" : String(bytes);
  const limitFile = join(dir, "memory.limit_in_bytes");
  const memswFile = join(dir, "memory.memsw.limit_in_bytes");
  const hasMemsw = await exists(memswFile);
  const current = (await readNumber(limitFile)) ?? Number.MAX_SAFE_INTEGER;
  const growing = bytes === undefined || bytes >= current;
  if (hasMemsw && growing) await writeValue(memswFile, target);
  await writeValue(limitFile, target);
  if (hasMemsw && !growing) await writeValue(memswFile, target);
}

async function applyQuota(dir: string, quota: number | undefined): Promise<void> {
  await writeValue(join(dir, "cpu.cfs_period_us"), String(CPU_PERIOD_US));
  await writeValue(join(dir, "cpu.cfs_quota_us"), quota === undefined ? "-1" : String(quotaMicros(quota)));
}

/** Desired state: devices no longer listed get their throttle removed (value 0). */
async function applyIo(dir: string, io: readonly IoLimit[]): Promise<void> {
  for (const [key, file] of Object.entries(IO_FILES) as [keyof typeof IO_FILES, string][]) {
    const path = join(dir, file);
    const wanted = new Map(io.map((l) => [l.device, l[key] ?? 0]));
    for (const line of ((await readText(path)) ?? "").split("\n")) {
      const device = line.split(" ")[0];
      if (device && !wanted.has(device)) wanted.set(device, 0);
    }
    for (const [device, value] of wanted) {
      if (!/^\d+:\d+$/.test(device)) throw ValidationError.field("io.device", `bad device ${device}`);
      await writeValue(path, `${device} ${value}`);
    }
  }
}
