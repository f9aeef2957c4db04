// Picks the isolation back-end the probe found best and builds it.
import fs from "node:fs/promises";
import { IsolationError, join, readPids, writeValue } from "./cgroup-fs.ts";
import { CgroupV1Runtime } from "./cgroup-v1.runtime.ts";
import { CgroupV2Runtime } from "./cgroup-v2.runtime.ts";
import { NoopRuntime } from "./noop.runtime.ts";
import { V2_CONTROLLERS } from "./probe-facts.ts";
import { PRIMITIVES, type IsolationProbe } from "./probe.ts";
import type { IsolationRuntime } from "./types.ts";

export interface RuntimeOptions {
  /** Name of the directory holding the sandboxes under this process's cgroup; default "cellar". */
  parent?: string;
  /** cgroup v2: leaf this process moves into when its own cgroup must delegate controllers. */
  agentLeaf?: string;
}

export async function createIsolationRuntime(
  probe: IsolationProbe,
  opts: RuntimeOptions = {},
): Promise<IsolationRuntime> {
  const parent = opts.parent ?? "cellar";
  if (probe.backend === "cgroup-v1") return new CgroupV1Runtime({ dirs: probe.layout.v1, parent });
  const v2 = probe.layout.v2;
  if (probe.backend === "cgroup-v2" && v2) {
    const controllers = V2_CONTROLLERS.filter((c) => probe.v2Controllers.includes(c));
    await enableV2Delegation(v2.ownDir, controllers, opts.agentLeaf ?? "cellar-agent");
    return new CgroupV2Runtime({ root: join(v2.ownDir, parent), controllers, cgroupKill: probe.cgroupKill });
  }
  const reasons = PRIMITIVES.map((p) => `${p}: ${probe.limits[p].detail}`).join("; ");
  return new NoopRuntime(reasons);
}

/**
 * cgroup v2 lets a cgroup hand controllers to children only when it holds no process itself
 * ("no internal processes"). When this agent sits in its own cgroup (a systemd service with
 * Delegate=yes, a container), move the processes there into a leaf first, then enable.
 */
export async function enableV2Delegation(
  ownDir: string,
  controllers: readonly string[],
  leaf: string,
): Promise<void> {
  if (controllers.length === 0) return;
  const file = join(ownDir, "cgroup.subtree_control");
  const wanted = controllers.map((c) => `+${c}`).join(" ");
  try {
    await writeValue(file, wanted);
    return;
  } catch (err) {
    if (!(err instanceof IsolationError) || err.errno !== "EBUSY") throw err;
  }
  const leafDir = join(ownDir, leaf);
  await fs.mkdir(leafDir, { recursive: true });
  for (const pid of await readPids(join(ownDir, "cgroup.procs"))) {
    await writeValue(join(leafDir, "cgroup.procs"), String(pid)).catch((err: unknown) => {
      // A process that exited meanwhile cannot be moved, and need not be.
      if (!(err instanceof IsolationError && err.errno === "ESRCH")) throw err;
    });
  }
  await writeValue(file, wanted);
}
