// Pure reading of /proc/self/mountinfo and /proc/self/cgroup: where each cgroup hierarchy is
// mounted and where this process sits in it. No I/O here so every layout can be table-tested.

/** Controllers Cellar uses for limits. `io` is `blkio` on cgroup v1. */
export const V1_CONTROLLERS = ["cpu", "cpuacct", "cpuset", "memory", "blkio", "pids"] as const;
export type V1Controller = (typeof V1_CONTROLLERS)[number];
export const V2_CONTROLLERS = ["cpu", "cpuset", "memory", "io", "pids"] as const;
export type V2Controller = (typeof V2_CONTROLLERS)[number];

export interface Mount {
  /** Path inside the filesystem that is mounted (not "/" in a cgroup namespace or a bind). */
  root: string;
  mountPoint: string;
  fsType: string;
  source: string;
  /** Per-mount and per-superblock options, e.g. ["rw", "cpu", "cpuacct"] or ["prjquota"]. */
  options: string[];
}

/** The file `/proc/self/mountinfo` escapes spaces and such as \040: undo that. */
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export function parseMountinfo(text: string): Mount[] {
  const mounts: Mount[] = [];
  for (const line of text.split("\n")) {
    const fields = line.trim().split(" ");
    const sep = fields.indexOf("-");
    if (sep < 6 || fields.length < sep + 3) continue;
    mounts.push({
      root: unescape(fields[3]!),
      mountPoint: unescape(fields[4]!),
      fsType: fields[sep + 1]!,
      source: unescape(fields[sep + 2]!),
      options: [...fields[5]!.split(","), ...(fields[sep + 3] ?? "").split(",")].filter(Boolean),
    });
  }
  return mounts;
}

/** /proc/self/cgroup lines "id:controllers:path" → controllers (or "" for v2) → path. */
export function parseSelfCgroup(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
    if (!m) continue;
    const controllers = m[2]!;
    if (controllers === "") out.set("", m[3]!);
    for (const c of controllers.split(",")) if (c) out.set(c, m[3]!);
  }
  return out;
}

/** Joins a mount point with this process's path inside the hierarchy, minus the mount's own root. */
function ownDir(mount: Mount, cgroupPath: string): string {
  let rel = cgroupPath;
  if (mount.root !== "/" && (rel === mount.root || rel.startsWith(mount.root + "/"))) {
    rel = rel.slice(mount.root.length);
  }
  const dir = `${mount.mountPoint}/${rel}`.replace(/\/+/g, "/");
  return dir.length > 1 && dir.endsWith("/") ? dir.slice(0, -1) : dir;
}

export interface CgroupLayout {
  /** This process's cgroup directory per mounted v1 controller. */
  v1: Partial<Record<V1Controller, string>>;
  /** The cgroup2 mount and this process's directory in it. */
  v2: { mount: string; ownDir: string } | null;
  /** True when /sys/fs/cgroup itself is the cgroup2 mount (pure v2 host). */
  v2IsPrimary: boolean;
}

export function cgroupLayout(mounts: readonly Mount[], selfCgroup: Map<string, string>): CgroupLayout {
  const v1: Partial<Record<V1Controller, string>> = {};
  let v2: CgroupLayout["v2"] = null;
  let v2IsPrimary = false;
  for (const m of mounts) {
    if (m.fsType === "cgroup") {
      for (const c of V1_CONTROLLERS) {
        const own = selfCgroup.get(c);
        if (m.options.includes(c) && own !== undefined && v1[c] === undefined) v1[c] = ownDir(m, own);
      }
    } else if (m.fsType === "cgroup2" && v2 === null) {
      v2 = { mount: m.mountPoint, ownDir: ownDir(m, selfCgroup.get("") ?? "/") };
      v2IsPrimary = m.mountPoint === "/sys/fs/cgroup";
    }
  }
  return { v1, v2, v2IsPrimary };
}

/** The mount holding `target` (longest mount point that is a prefix of it). */
export function mountOf(mounts: readonly Mount[], target: string): Mount | null {
  let best: Mount | null = null;
  for (const m of mounts) {
    const prefix = m.mountPoint === "/" ? "/" : m.mountPoint + "/";
    if (
      (target === m.mountPoint || target.startsWith(prefix)) &&
      m.mountPoint.length >= (best?.mountPoint.length ?? 0)
    ) {
      best = m;
    }
  }
  return best;
}
