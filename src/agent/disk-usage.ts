// Disk usage of each instance directory, read in-process: a `du` per node per minute cost a
// process spawn each (the agent's main thread spent about a third of its time in them on a
// full host). A loop-mounted volume is asked through statfs (its caller passes that in); a
// plain directory is walked with synchronous lstat calls, one directory tree at a time
// (~1,300 entries and ~12 ms for a fresh PostgreSQL node), and the walks are spread out so
// that they take at most a small share of the agent's time however many nodes the host holds.
import fs from "node:fs";
import path from "node:path";

export interface DiskUsageOptions {
  /** A node's figure is not read again sooner than this. */
  refreshMs?: number;
  /** Longest share of wall-clock time spent walking trees (0.02: 12 ms of walk, then 600 ms of rest). */
  maxBusyShare?: number;
  now?: () => number;
}

interface Entry {
  bytes: number;
  at: number;
}

export class DiskUsage {
  private readonly entries = new Map<string, Entry>();
  private readonly refreshMs: number;
  private readonly maxBusyShare: number;
  private readonly now: () => number;
  /** No refreshing walk starts before this (first readings are never held back). */
  private restUntil = 0;

  constructor(opts: DiskUsageOptions = {}) {
    this.refreshMs = opts.refreshMs ?? 60_000;
    this.maxBusyShare = opts.maxBusyShare ?? 0.02;
    this.now = opts.now ?? (() => performance.now());
  }

  /**
   * Bytes used by instance `id` under `dir`: the cached figure while it is fresh, or while a
   * refresh must wait its turn. `volumeBytes` answers for a node on its own filesystem (null
   * when it has none), which is cheap and always read when the figure is due.
   */
  async bytes(id: string, dir: string, volumeBytes: () => Promise<number | null>): Promise<number> {
    const cached = this.entries.get(id);
    const now = this.now();
    if (cached && now - cached.at < this.refreshMs) return cached.bytes;
    const onVolume = await volumeBytes().catch(() => null);
    if (onVolume !== null) return this.store(id, onVolume);
    if (cached && now < this.restUntil) return cached.bytes;
    const started = this.now();
    const bytes = treeApparentBytes(dir);
    const took = this.now() - started;
    this.restUntil = this.now() + took / this.maxBusyShare;
    return this.store(id, bytes);
  }

  forget(id: string): void {
    this.entries.delete(id);
  }

  private store(id: string, bytes: number): number {
    this.entries.set(id, { bytes, at: this.now() });
    return bytes;
  }
}

/**
 * What `du -sb` says: the apparent sizes of every entry under `dir`, directories included,
 * a hard-linked file once. Entries that vanish during the walk count as 0 (a node writes
 * and removes WAL and temporary files all the time); a missing `dir` is 0.
 */
export function treeApparentBytes(dir: string): number {
  const seen = new Set<string>();
  let total = 0;
  const stack = [dir];
  for (let next = stack.pop(); next !== undefined; next = stack.pop()) {
    const st = fs.lstatSync(next, { throwIfNoEntry: false });
    if (!st) continue;
    if (st.nlink > 1 && !st.isDirectory()) {
      const key = `${st.dev}:${st.ino}`;
      if (seen.has(key)) continue;
      seen.add(key);
    }
    total += st.size;
    if (!st.isDirectory()) continue;
    let names: string[];
    try {
      names = fs.readdirSync(next);
    } catch {
      continue;
    }
    for (const name of names) stack.push(path.join(next, name));
  }
  return total;
}
