// What this host can isolate. The agent prints describe() at start and puts it in the host's
// status, so an unavailable primitive is always said, with its reason, never silently skipped.
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import {
  cgroupLayout,
  mountOf,
  parseMountinfo,
  parseSelfCgroup,
  type CgroupLayout,
  type Mount,
  type V1Controller,
  type V2Controller,
} from "./probe-facts.ts";
import type { RuntimeKind } from "./types.ts";

export type CgroupMode = "v1" | "v2" | "hybrid" | "none";
export type Primitive = "cpu" | "cpuset" | "memory" | "io" | "pids";
export const PRIMITIVES: readonly Primitive[] = ["cpu", "cpuset", "memory", "io", "pids"];

export interface Availability {
  ok: boolean;
  /** What is used when ok, why not otherwise. */
  detail: string;
}

/** Everything gathered from the host; interpretProbe() turns it into decisions without I/O. */
export interface ProbeFacts {
  uid: number;
  layout: CgroupLayout;
  /** Writable own cgroup directories (v1 per controller, and the v2 one). */
  writableDirs: ReadonlySet<string>;
  /** Contents of cgroup.controllers of the own v2 directory. */
  v2Controllers: readonly string[];
  v2CgroupKill: boolean;
  commands: ReadonlySet<string>;
  loopControl: boolean;
  losetupFree: boolean;
  netnsWorks: boolean;
  /** The mount holding the volumes directory. */
  volumesMount: Mount | null;
}

export interface IsolationProbe {
  root: boolean;
  cgroupMode: CgroupMode;
  backend: RuntimeKind;
  layout: CgroupLayout;
  v2Controllers: readonly string[];
  limits: Record<Primitive, Availability>;
  cgroupKill: boolean;
  netns: Availability;
  loopVolumes: Availability;
  volumeQuota: Availability;
}

const V1_NAME: Record<Primitive, V1Controller> = {
  cpu: "cpu",
  cpuset: "cpuset",
  memory: "memory",
  io: "blkio",
  pids: "pids",
};
const V2_NAME: Record<Primitive, V2Controller> = {
  cpu: "cpu",
  cpuset: "cpuset",
  memory: "memory",
  io: "io",
  pids: "pids",
};

function modeOf(layout: CgroupLayout): CgroupMode {
  const hasV1 = Object.keys(layout.v1).length > 0;
  if (layout.v2 && hasV1) return "hybrid";
  if (layout.v2) return "v2";
  return hasV1 ? "v1" : "none";
}

function v2Availability(facts: ProbeFacts, p: Primitive): Availability {
  const v2 = facts.layout.v2;
  if (!v2) return { ok: false, detail: "no cgroup2 mount" };
  if (!facts.v2Controllers.includes(V2_NAME[p])) {
    return { ok: false, detail: `${V2_NAME[p]} controller not enabled for ${v2.ownDir} (cgroup v2)` };
  }
  if (!facts.writableDirs.has(v2.ownDir)) {
    return { ok: false, detail: `not root and ${v2.ownDir} not writable: cannot create cgroups` };
  }
  return { ok: true, detail: `cgroup v2 ${V2_NAME[p]} under ${v2.ownDir}` };
}

function v1Availability(facts: ProbeFacts, p: Primitive): Availability {
  const dir = facts.layout.v1[V1_NAME[p]];
  if (dir === undefined) return { ok: false, detail: `${V1_NAME[p]} controller not mounted (cgroup v1)` };
  if (!facts.writableDirs.has(dir)) {
    return { ok: false, detail: `not root and ${dir} not writable: cannot create cgroups` };
  }
  let detail = `cgroup v1 ${V1_NAME[p]} under ${dir}`;
  if (p === "cpuset")
    detail += "; exclusive among Cellar sandboxes, host processes outside them may still use these CPUs";
  if (p === "io") detail += "; throttles direct and read I/O only, buffered writeback is not charged on v1";
  if (p === "cpu" && facts.layout.v1.cpuacct === undefined) detail += "; no cpuacct: CPU usage unknown";
  return { ok: true, detail };
}

function chooseBackend(
  v2: Record<Primitive, Availability>,
  v1: Record<Primitive, Availability>,
): RuntimeKind {
  if (v2.cpu.ok || v2.memory.ok) return "cgroup-v2";
  if (v1.cpu.ok || v1.memory.ok) return "cgroup-v1";
  return "none";
}

const LOOP_COMMANDS = ["losetup", "mkfs.ext4", "blkid", "dumpe2fs", "e2fsck", "resize2fs", "mount", "umount"];

function volumeFacts(facts: ProbeFacts, root: boolean): Pick<IsolationProbe, "loopVolumes" | "volumeQuota"> {
  const missing = LOOP_COMMANDS.filter((c) => !facts.commands.has(c));
  let loopVolumes: Availability;
  if (!root) loopVolumes = { ok: false, detail: "not root: cannot attach loop devices or mount" };
  else if (missing.length) loopVolumes = { ok: false, detail: `missing commands: ${missing.join(", ")}` };
  else if (!facts.loopControl)
    loopVolumes = { ok: false, detail: "/dev/loop-control absent: no loop devices" };
  else if (!facts.losetupFree) loopVolumes = { ok: false, detail: "losetup -f found no free loop device" };
  else
    loopVolumes = {
      ok: true,
      detail: "sparse file + ext4 loop mount per volume; size enforced by the filesystem",
    };

  const m = facts.volumesMount;
  const prj = m?.options.some((o) => o === "prjquota" || o === "pquota" || o === "prjjquota") ?? false;
  let volumeQuota: Availability;
  if (loopVolumes.ok) volumeQuota = { ok: true, detail: "enforced by each volume's own loop filesystem" };
  else if (prj) {
    volumeQuota = {
      ok: false,
      detail: `volume quota not enforced: plain directory (${m?.mountPoint} has project quota, which Cellar does not drive yet)`,
    };
  } else {
    const where = m ? ` (${m.fsType} on ${m.mountPoint} without project quota)` : "";
    volumeQuota = { ok: false, detail: `volume quota not enforced: plain directory${where}` };
  }
  return { loopVolumes, volumeQuota };
}

export function interpretProbe(facts: ProbeFacts): IsolationProbe {
  const root = facts.uid === 0;
  const v1 = {} as Record<Primitive, Availability>;
  const v2 = {} as Record<Primitive, Availability>;
  for (const p of PRIMITIVES) {
    v1[p] = v1Availability(facts, p);
    v2[p] = v2Availability(facts, p);
  }
  const backend = chooseBackend(v2, v1);
  const limits = {} as Record<Primitive, Availability>;
  for (const p of PRIMITIVES) {
    const chosen = backend === "cgroup-v2" ? v2[p] : v1[p];
    limits[p] = backend === "none" ? { ok: false, detail: `${v1[p].detail}; ${v2[p].detail}` } : chosen;
  }
  const missingIp = !facts.commands.has("ip");
  const netns: Availability = !root
    ? { ok: false, detail: "not root: cannot create network namespaces" }
    : missingIp
      ? { ok: false, detail: "ip (iproute2) not installed" }
      : facts.netnsWorks
        ? { ok: true, detail: "a test namespace could be created; ip netns usable" }
        : { ok: false, detail: "unshare --net failed: network namespaces not permitted here" };
  return {
    root,
    cgroupMode: modeOf(facts.layout),
    backend,
    layout: facts.layout,
    v2Controllers: facts.v2Controllers,
    limits,
    cgroupKill: facts.v2CgroupKill,
    netns,
    ...volumeFacts(facts, root),
  };
}

const LABEL: Record<Primitive, string> = {
  cpu: "cpu quota/weight",
  cpuset: "exclusive cpus",
  memory: "memory limit",
  io: "io limit",
  pids: "pids limit",
};

/** What a host without network namespaces does instead (docs/networking.md). */
const NO_NETWORKS =
  ": Dedicated databases get no network of their own here; their gateways listen on the host's address and enforce the firewall rules alone; Shared hosts publish nothing on the public side or the region's private network";

/** One line per primitive, e.g. "memory limit: yes (cgroup v1 memory under ...)". */
export function describeIsolation(probe: IsolationProbe): string[] {
  const line = (label: string, a: Availability) => `${label}: ${a.ok ? "yes" : "NO"} (${a.detail})`;
  const backend = probe.backend === "none" ? "none: processes run without resource limits" : probe.backend;
  const v2 = probe.layout.v2;
  const v2Text = v2 ? `; v2 at ${v2.ownDir} offers: ${probe.v2Controllers.join(" ") || "no controller"}` : "";
  return [
    `privileges: ${probe.root ? "root" : "not root"}`,
    `cgroups: ${probe.cgroupMode}${v2Text}; isolation back-end: ${backend}`,
    ...PRIMITIVES.map((p) => line(LABEL[p], probe.limits[p])),
    line("network namespaces", probe.netns) + (probe.netns.ok ? "" : NO_NETWORKS),
    line("loop volumes", probe.loopVolumes),
    line("volume quota", probe.volumeQuota),
  ];
}

// ---- gathering (I/O) ----

function run(cmd: string, args: string[]): Promise<{ ok: boolean; stdout: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 5000 }, (err, stdout) => resolve({ ok: !err, stdout: String(stdout) }));
  });
}

async function findCommands(names: readonly string[]): Promise<Set<string>> {
  const dirs = [...(process.env.PATH ?? "").split(":"), "/usr/sbin", "/sbin", "/usr/bin", "/bin"];
  const found = new Set<string>();
  for (const name of names) {
    for (const dir of dirs.filter(Boolean)) {
      if (
        await fs.access(path.join(dir, name), fs.constants.X_OK).then(
          () => true,
          () => false,
        )
      ) {
        found.add(name);
        break;
      }
    }
  }
  return found;
}

async function writable(dir: string): Promise<boolean> {
  return fs.access(dir, fs.constants.W_OK).then(
    () => true,
    () => false,
  );
}

export interface ProbeOptions {
  /** Directory where volumes will live; its filesystem is checked for project quota. Default "/". */
  volumesDir?: string;
}

export async function probeIsolation(opts: ProbeOptions = {}): Promise<IsolationProbe> {
  const mounts = parseMountinfo(await fs.readFile("/proc/self/mountinfo", "utf8"));
  const layout = cgroupLayout(mounts, parseSelfCgroup(await fs.readFile("/proc/self/cgroup", "utf8")));
  const dirs = [...Object.values(layout.v1), ...(layout.v2 ? [layout.v2.ownDir] : [])];
  const writableDirs = new Set<string>();
  for (const d of dirs) if (await writable(d)) writableDirs.add(d);
  const v2Dir = layout.v2?.ownDir;
  const controllersText = v2Dir
    ? await fs.readFile(path.join(v2Dir, "cgroup.controllers"), "utf8").catch(() => "")
    : "";
  const commands = await findCommands(["ip", "unshare", ...LOOP_COMMANDS]);
  const uid = process.getuid?.() ?? -1;
  const loopControl = await fs.access("/dev/loop-control").then(
    () => true,
    () => false,
  );
  const volumesDir = path.resolve(opts.volumesDir ?? "/");
  return interpretProbe({
    uid,
    layout,
    writableDirs,
    v2Controllers: controllersText.split(/\s+/).filter(Boolean),
    // The root cgroup has no cgroup.kill: the file of a child (created on v2 >= 5.14) is what counts.
    v2CgroupKill: v2Dir ? await hasCgroupKill(v2Dir) : false,
    commands,
    loopControl,
    losetupFree: uid === 0 && commands.has("losetup") && loopControl && (await run("losetup", ["-f"])).ok,
    netnsWorks: uid === 0 && commands.has("unshare") && (await run("unshare", ["--net", "true"])).ok,
    volumesMount: mountOf(mounts, volumesDir),
  });
}

async function hasCgroupKill(dir: string): Promise<boolean> {
  if (
    await fs.access(path.join(dir, "cgroup.kill")).then(
      () => true,
      () => false,
    )
  )
    return true;
  // Kernel >= 5.14 exposes cgroup.kill in every non-root cgroup; the root lacks it, so look at the version.
  const release = (await fs.readFile("/proc/sys/kernel/osrelease", "utf8").catch(() => "0.0")).split(".");
  const [major, minor] = [Number(release[0]), Number(release[1])];
  return major > 5 || (major === 5 && minor >= 14);
}
