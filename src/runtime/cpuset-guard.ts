// Defence behind allocateCpus(): before pinning a sandbox to CPUs, make sure no other pinned
// sandbox under the same parent holds any of them. Read from the cgroup files, so it also
// holds after an agent restart.
import { ConflictError, ValidationError } from "../domain/errors.ts";
import { join, readText, subdirs } from "./cgroup-fs.ts";
import { formatCpuList, parseCpuList } from "./limits.ts";

/**
 * A sibling counts as pinned when its cpuset differs from the parent's full set (unpinned
 * sandboxes inherit the full set). `cpusFile` is "cpuset.cpus" on both versions.
 */
export async function assertCpusFree(
  parentDir: string,
  name: string,
  wanted: readonly number[],
  cpusFile = "cpuset.cpus",
  parentCpusFile = cpusFile,
): Promise<void> {
  const parentText = await readText(join(parentDir, parentCpusFile));
  const all = parentText ? parseCpuList(parentText) : [];
  const outside = wanted.filter((c) => all.length > 0 && !all.includes(c));
  if (outside.length > 0) {
    throw ValidationError.field(
      "cpus",
      `CPUs ${formatCpuList(outside)} are not available to Cellar on this host (CPUs ${formatCpuList(all)})`,
    );
  }
  const allKey = formatCpuList(all);
  for (const sibling of await subdirs(parentDir)) {
    if (sibling === name) continue;
    const text = await readText(join(parentDir, sibling, cpusFile));
    if (!text || text === allKey) continue;
    const theirs = parseCpuList(text);
    const clash = wanted.filter((c) => theirs.includes(c));
    if (clash.length > 0) {
      throw new ConflictError(
        `CPUs ${formatCpuList(clash)} are already given exclusively to sandbox ${sibling}: exclusive CPUs are never shared`,
      );
    }
  }
}
