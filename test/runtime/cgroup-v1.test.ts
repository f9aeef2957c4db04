// The cgroup v1 back-end against the real kernel of this machine: limits are enforced, not just
// written. Runs as root on a host with v1 controllers; skipped with the reason elsewhere.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { ConflictError, NotFoundError, ValidationError } from "../../src/domain/errors.ts";
import { waitFor } from "../../src/runtime/cgroup-fs.ts";
import { CgroupV1Runtime } from "../../src/runtime/cgroup-v1.runtime.ts";
import { probeIsolation, type IsolationProbe } from "../../src/runtime/probe.ts";
import { spawnInSandbox, WRAPPER_FAILED_EXIT } from "../../src/runtime/spawn.ts";

const probe: IsolationProbe = await probeIsolation();
const skip =
  probe.backend === "cgroup-v1" && probe.limits.memory.ok && probe.limits.cpu.ok && probe.limits.cpuset.ok
    ? false
    : `needs root and cgroup v1 memory, cpu and cpuset: ${probe.limits.memory.detail}`;
const PARENT = `cellar-test-${process.pid}`;
const MiB = 1024 * 1024;

type Exit = { code: number | null; signal: NodeJS.Signals | null; stdout: string };

function exitOf(child: ChildProcess): Promise<Exit> {
  let stdout = "";
  child.stdout?.on("data", (d: Buffer) => (stdout += d.toString()));
  return new Promise((resolve) => child.on("close", (code, signal) => resolve({ code, signal, stdout })));
}

describe("CgroupV1Runtime on this machine (real kernel)", { skip }, () => {
  const rt = new CgroupV1Runtime({ dirs: probe.layout.v1, parent: PARENT });
  const children: ChildProcess[] = [];
  const run = (name: string, cmd: string, args: string[]) => {
    const child = spawnInSandbox(rt, name, cmd, args, { stdio: ["ignore", "pipe", "inherit"] });
    children.push(child);
    return child;
  };

  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    for (const name of await rt.listSandboxes()) await rt.removeSandbox(name);
    for (const dir of new Set(Object.values(probe.layout.v1)))
      await fs.rmdir(path.join(dir, PARENT)).catch(() => {});
  });

  it("a process allocating 200 MB in a 64 MiB sandbox is OOM-killed, and usage shows it", async () => {
    await rt.ensureSandbox("mem", { memoryBytes: 64 * MiB });
    const exit = await exitOf(
      run("mem", "python3", ["-c", "b = bytearray(200 * 1024 * 1024); print('survived', len(b))"]),
    );
    assert.equal(exit.signal, "SIGKILL");
    assert.doesNotMatch(exit.stdout, /survived/);
    const u = await rt.usage("mem");
    assert.equal(u.memoryLimitBytes, 64 * MiB);
    assert.ok((u.oomKills ?? 0) >= 1, `oom kills ${u.oomKills}`);
    assert.ok((u.memoryPeakBytes ?? Infinity) <= 64 * MiB);
  });

  it("a CPU quota of 0.25 is written as 25000/100000 and holds a spinning shell to at most a quarter CPU", async () => {
    await rt.ensureSandbox("cpu", { cpuQuota: 0.25, cpuWeight: 50 });
    const dir = path.join(probe.layout.v1.cpu!, PARENT, "cpu");
    assert.equal((await fs.readFile(path.join(dir, "cpu.cfs_quota_us"), "utf8")).trim(), "25000");
    assert.equal((await fs.readFile(path.join(dir, "cpu.cfs_period_us"), "utf8")).trim(), "100000");
    assert.equal((await fs.readFile(path.join(dir, "cpu.shares"), "utf8")).trim(), "512");
    const stat = async () => {
      const text = await fs.readFile(path.join(dir, "cpu.stat"), "utf8");
      const get = (k: string) => Number(new RegExp(`${k} (\\d+)`).exec(text)?.[1]);
      return {
        periods: get("nr_periods"),
        throttled: get("nr_throttled"),
        cpu: (await rt.usage("cpu")).cpuSeconds!,
      };
    };
    const busy = run("cpu", "sh", ["-c", "while :; do :; done"]);
    // Measure over 10 CFS periods of a spinning shell, counted by the kernel (no wall-clock sleep).
    assert.ok(await waitFor(async () => (await stat()).periods >= 2, 10_000));
    const start = await stat();
    assert.ok(await waitFor(async () => (await stat()).periods >= start.periods + 10, 10_000));
    const end = await stat();
    busy.kill("SIGKILL");
    const periods = end.periods - start.periods;
    const perPeriod = (end.cpu - start.cpu) / periods;
    // At most the quota (plus scheduler slack); less when other load on the host takes the CPU.
    assert.ok(perPeriod > 0 && perPeriod < 0.03, `CPU per 100 ms period: ${perPeriod} s, quota 0.025`);
    assert.ok(end.throttled > start.throttled, `throttled ${end.throttled - start.throttled}/${periods}`);
    assert.ok((await rt.usage("cpu")).cpuThrottledSeconds! > 0);
  });

  it("updateLimits changes limits in place, and a limit left out goes back to unlimited", async () => {
    await rt.ensureSandbox("upd", { memoryBytes: 64 * MiB, cpuQuota: 0.5, pidsMax: 50 });
    await rt.updateLimits("upd", { memoryBytes: 128 * MiB });
    const u = await rt.usage("upd");
    assert.equal(u.memoryLimitBytes, 128 * MiB);
    const cpuDir = path.join(probe.layout.v1.cpu!, PARENT, "upd");
    assert.equal((await fs.readFile(path.join(cpuDir, "cpu.cfs_quota_us"), "utf8")).trim(), "-1");
    await assert.rejects(rt.updateLimits("nope", {}), NotFoundError);
  });

  it("an exclusive cpuset pins the process (Cpus_allowed_list) and is never given twice", async () => {
    const cpu = os.availableParallelism() - 1;
    const info = await rt.ensureSandbox("pinned", { cpus: [cpu] });
    assert.ok(info.enforced.includes("cpus"));
    const exit = await exitOf(run("pinned", "grep", ["Cpus_allowed_list", "/proc/self/status"]));
    assert.match(exit.stdout, new RegExp(`Cpus_allowed_list:\\s+${cpu}\\n`));
    await assert.rejects(rt.ensureSandbox("thief", { cpus: [cpu] }), ConflictError);
    await assert.rejects(rt.ensureSandbox("thief", { cpus: [4095] }), ValidationError);
    // The same sandbox may re-apply its own CPUs (idempotent).
    await rt.ensureSandbox("pinned", { cpus: [cpu] });
  });

  it("forked children inherit the sandbox; removeSandbox kills them all and leaves no cgroup", async () => {
    await rt.ensureSandbox("tree", { pidsMax: 20 });
    const child = run("tree", "sh", ["-c", "sleep 60 & sleep 60 & wait"]);
    const exited = exitOf(child);
    assert.ok(await waitFor(async () => (await rt.processes("tree")).length === 3, 5000));
    assert.ok((await rt.processes("tree")).includes(child.pid!));
    assert.equal((await rt.usage("tree")).pids, 3);
    await rt.removeSandbox("tree");
    assert.equal((await exited).signal, "SIGKILL");
    assert.deepEqual(await rt.processes("tree"), []);
    for (const dir of new Set(Object.values(probe.layout.v1))) {
      await assert.rejects(fs.access(path.join(dir, PARENT, "tree")), /ENOENT/);
    }
    assert.ok(!(await rt.listSandboxes()).includes("tree"));
    await rt.removeSandbox("tree"); // already gone: no-op
  });

  it("addProcess moves a running process into every hierarchy of the sandbox", async () => {
    await rt.ensureSandbox("adopt", {});
    const sleeper = spawn("sleep", ["60"], { stdio: "ignore" });
    children.push(sleeper);
    await rt.addProcess("adopt", sleeper.pid!);
    const cgroups = await fs.readFile(`/proc/${sleeper.pid}/cgroup`, "utf8");
    for (const c of ["memory", "cpu", "cpuset", "pids"]) {
      assert.match(cgroups, new RegExp(`:${c}:.*/${PARENT}/adopt\\n`), c);
    }
    await rt.removeSandbox("adopt");
    assert.ok(await waitFor(() => Promise.resolve(sleeper.signalCode === "SIGKILL"), 5000));
  });

  it("the wrapper refuses to run the command when it cannot join the sandbox", async () => {
    const marker = path.join(os.tmpdir(), `cellar-wrapper-${process.pid}`);
    const exit = await exitOf(run("missing", "touch", [marker]));
    assert.equal(exit.code, WRAPPER_FAILED_EXIT);
    await assert.rejects(fs.access(marker), /ENOENT/);
  });
});
