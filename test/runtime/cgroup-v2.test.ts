// The cgroup v2 back-end. This machine's v2 tree has no cpu/memory controllers, so limits are
// checked at file level against a temporary directory standing in for the cgroup2 mount; what
// the real v2 tree does offer here (placement, cgroup.kill, CPU accounting) is tested for real.
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { ConflictError, NotFoundError } from "../../src/domain/errors.ts";
import { waitFor } from "../../src/runtime/cgroup-fs.ts";
import { CgroupV2Runtime } from "../../src/runtime/cgroup-v2.runtime.ts";
import { enableV2Delegation } from "../../src/runtime/factory.ts";
import { probeIsolation } from "../../src/runtime/probe.ts";
import { spawnInSandbox, wrapCommand } from "../../src/runtime/spawn.ts";

const ALL = ["cpuset", "cpu", "io", "memory", "pids"];
const MiB = 1024 * 1024;

describe("CgroupV2Runtime, file-level behaviour against a stand-in directory (not a kernel)", () => {
  let mount: string;
  let rt: CgroupV2Runtime;
  const read = (...p: string[]) => fs.readFile(path.join(mount, "cellar", ...p), "utf8");

  before(async () => {
    mount = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-v2-"));
    await fs.mkdir(path.join(mount, "cellar"));
    await fs.writeFile(path.join(mount, "cellar", "cpuset.cpus.effective"), "0-3\n");
    rt = new CgroupV2Runtime({ root: path.join(mount, "cellar"), controllers: ALL, cgroupKill: true });
  });
  after(async () => fs.rm(mount, { recursive: true, force: true }));

  it("enables the controllers for the root and writes every limit in v2 syntax", async () => {
    const info = await rt.ensureSandbox("a", {
      memoryBytes: 64 * MiB,
      cpuQuota: 0.25,
      cpuWeight: 200,
      cpus: [1],
      pidsMax: 100,
      io: [{ device: "7:0", writeIops: 100, readBps: 1_000_000 }],
    });
    assert.deepEqual(info.notes, []);
    assert.deepEqual(info.enforced.sort(), ["cpuQuota", "cpuWeight", "cpus", "io", "memory", "pids"]);
    const enabled = "+cpu +cpuset +memory +io +pids";
    assert.equal(await fs.readFile(path.join(mount, "cgroup.subtree_control"), "utf8"), enabled);
    assert.equal(await read("cgroup.subtree_control"), enabled);
    assert.equal(await read("a", "memory.max"), String(64 * MiB));
    assert.equal(await read("a", "cpu.max"), "25000 100000");
    assert.equal(await read("a", "cpu.weight"), "200");
    assert.equal(await read("a", "cpuset.cpus"), "1");
    assert.equal(await read("a", "cpuset.cpus.partition"), "root");
    assert.equal(await read("a", "pids.max"), "100");
    assert.equal(await read("a", "io.max"), "7:0 riops=max wiops=100 rbps=1000000 wbps=max");
  });

  it("a limit left out is reset: max, default weight, no pinning, io rule lifted", async () => {
    await rt.updateLimits("a", {});
    assert.equal(await read("a", "memory.max"), "max");
    assert.equal(await read("a", "cpu.max"), "max 100000");
    assert.equal(await read("a", "cpu.weight"), "100");
    assert.equal(await read("a", "cpuset.cpus"), "");
    assert.equal(await read("a", "cpuset.cpus.partition"), "member");
    assert.equal(await read("a", "pids.max"), "max");
    assert.equal(await read("a", "io.max"), "7:0 riops=max wiops=max rbps=max wbps=max");
    await assert.rejects(rt.updateLimits("ghost", {}), NotFoundError);
  });

  it("refuses CPUs another sandbox holds, and CPUs outside the root's set", async () => {
    await rt.ensureSandbox("a", { cpus: [2, 3] });
    await assert.rejects(rt.ensureSandbox("b", { cpus: [3] }), ConflictError);
    await assert.rejects(
      rt.ensureSandbox("b", { cpus: [7] }),
      /not available to Cellar on this host \(CPUs 0-3\)/,
    );
    await rt.ensureSandbox("b", { cpus: [1] });
  });

  it("reads usage from cpu.stat, memory.* and pids.current", async () => {
    const dir = path.join(mount, "cellar", "a");
    await fs.writeFile(
      path.join(dir, "cpu.stat"),
      "usage_usec 2500000\nuser_usec 2000000\nthrottled_usec 500000\n",
    );
    await fs.writeFile(path.join(dir, "memory.current"), "1048576\n");
    await fs.writeFile(path.join(dir, "memory.max"), "67108864\n");
    await fs.writeFile(path.join(dir, "memory.peak"), "2097152\n");
    await fs.writeFile(path.join(dir, "memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
    await fs.writeFile(path.join(dir, "pids.current"), "4\n");
    assert.deepEqual(await rt.usage("a"), {
      cpuSeconds: 2.5,
      cpuThrottledSeconds: 0.5,
      memoryBytes: 1048576,
      memoryLimitBytes: 64 * MiB,
      memoryPeakBytes: 2097152,
      oomKills: 1,
      pids: 4,
    });
  });

  it("wraps a command so that it writes its pid into the one cgroup.procs first", () => {
    const argv = wrapCommand(rt, "a", "pg_ctl", ["start", "-D", "/data dir"]);
    const procs = path.join(mount, "cellar", "a", "cgroup.procs");
    assert.deepEqual(argv.slice(0, 2), ["/bin/sh", "-c"]);
    assert.deepEqual(argv.slice(3), ["cellar-sandbox", "1", procs, "pg_ctl", "start", "-D", "/data dir"]);
  });

  it("lists and removes sandboxes", async () => {
    assert.deepEqual(await rt.listSandboxes(), ["a", "b"]);
    await rt.removeSandbox("a");
    await rt.removeSandbox("b");
    await rt.removeSandbox("b");
    assert.deepEqual(await rt.listSandboxes(), []);
  });

  it("a controller the parent does not offer is reported, not written", async () => {
    const partial = new CgroupV2Runtime({
      root: path.join(mount, "partial"),
      controllers: ["cpu"],
      cgroupKill: true,
    });
    const info = await partial.ensureSandbox("x", { memoryBytes: 64 * MiB, cpuQuota: 0.5 });
    assert.deepEqual(info.enforced, ["cpuQuota"]);
    assert.match(info.notes.join("\n"), /memory not enforced: memory controller not available/);
    await assert.rejects(fs.access(path.join(mount, "partial", "x", "memory.max")), /ENOENT/);
  });

  it("enableV2Delegation writes the controllers into the own cgroup's subtree_control", async () => {
    const own = path.join(mount, "own");
    await fs.mkdir(own);
    await enableV2Delegation(own, ["cpu", "memory"], "cellar-agent");
    assert.equal(await fs.readFile(path.join(own, "cgroup.subtree_control"), "utf8"), "+cpu +memory");
  });
});

const probe = await probeIsolation();
const v2 = probe.layout.v2;
const realSkip =
  probe.root && v2 && probe.cgroupKill && probe.cgroupMode === "hybrid"
    ? false
    : "needs root on a hybrid host whose cgroup2 tree is writable (cgroup.kill)";

describe(
  "CgroupV2Runtime on this machine's cgroup2 tree without controllers (real kernel)",
  { skip: realSkip },
  () => {
    const PARENT = `cellar-test-${process.pid}`;
    const root = path.join(v2?.ownDir ?? "/nonexistent", PARENT);
    // No controllers: on a hybrid host the v2 tree has none to give, so only grouping is real here.
    const rt = new CgroupV2Runtime({ root, controllers: [], cgroupKill: true });
    const children: ChildProcess[] = [];

    after(async () => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
      for (const name of await rt.listSandboxes()) await rt.removeSandbox(name);
      await fs.rmdir(root).catch(() => {});
    });

    it("says limits are not enforced, places a process tree, counts its CPU and kills it with cgroup.kill", async () => {
      const info = await rt.ensureSandbox("k", { memoryBytes: 64 * MiB });
      assert.deepEqual(info.enforced, []);
      assert.match(info.notes[0] ?? "", /memory not enforced/);
      const child = spawnInSandbox(
        rt,
        "k",
        "sh",
        ["-c", "sleep 60 & i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; wait"],
        {
          stdio: "ignore",
        },
      );
      children.push(child);
      const exited = new Promise((resolve) => child.on("close", (_code, signal) => resolve(signal)));
      assert.ok(await waitFor(async () => (await rt.processes("k")).length === 2, 5000));
      assert.ok(await waitFor(async () => ((await rt.usage("k")).cpuSeconds ?? 0) > 0, 5000));
      await rt.removeSandbox("k");
      assert.equal(await exited, "SIGKILL");
      await assert.rejects(fs.access(path.join(root, "k")), /ENOENT/);
    });
  },
);
