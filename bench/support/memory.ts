// Real memory of a host's instances as PSS (proportional set size): pages shared between
// processes (PostgreSQL's shared memory, the binaries' code) are divided among them, so
// totals neither double count like summed RSS nor miss private pages.
import fs from "node:fs/promises";
import path from "node:path";

export interface MemoryTotals {
  processes: number;
  pssBytes: number;
  rssBytes: number;
}

export interface InstancesMemory {
  /** Nodes whose postmaster was found, and gateways whose HAProxy was. */
  nodes: number;
  gateways: number;
  postgres: MemoryTotals;
  haproxy: MemoryTotals;
  /** Instances whose postmaster or HAProxy could not be found (counted as failures). */
  missing: string[];
}

async function readPid(file: string): Promise<number | null> {
  const text = await fs.readFile(file, "utf8").catch(() => "");
  const pid = Number(text.split("\n")[0]?.trim());
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

/** ppid -> children, from /proc/<pid>/stat (the command name may hold spaces and parens). */
async function childrenMap(): Promise<Map<number, number[]>> {
  const map = new Map<number, number[]>();
  for (const entry of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await fs.readFile(`/proc/${entry}/stat`, "utf8").catch(() => null);
    if (!stat) continue;
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    map.set(ppid, [...(map.get(ppid) ?? []), Number(entry)]);
  }
  return map;
}

function withDescendants(root: number, children: Map<number, number[]>): number[] {
  const out: number[] = [];
  const stack = [root];
  while (stack.length) {
    const pid = stack.pop()!;
    out.push(pid);
    stack.push(...(children.get(pid) ?? []));
  }
  return out;
}

/** Pss and Rss of one process from smaps_rollup, in bytes (null if it is gone). */
export async function processMemory(pid: number): Promise<{ pss: number; rss: number } | null> {
  const text = await fs.readFile(`/proc/${pid}/smaps_rollup`, "utf8").catch(() => null);
  if (!text) return null;
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0);
  return { pss: kb("Pss") * 1024, rss: kb("Rss") * 1024 };
}

async function totals(pids: number[]): Promise<MemoryTotals> {
  const t: MemoryTotals = { processes: 0, pssBytes: 0, rssBytes: 0 };
  for (const pid of pids) {
    const m = await processMemory(pid);
    if (!m) continue;
    t.processes++;
    t.pssBytes += m.pss;
    t.rssBytes += m.rss;
  }
  return t;
}

/**
 * Every postgres process (postmaster and all it forked) and every HAProxy of the instances
 * under `<stateDir>/instances`, found from their pid files.
 */
export async function instancesMemory(stateDir: string): Promise<InstancesMemory> {
  const dir = path.join(stateDir, "instances");
  const children = await childrenMap();
  const postgres: number[] = [];
  const haproxy: number[] = [];
  const missing: string[] = [];
  let nodes = 0;
  let gateways = 0;
  for (const id of await fs.readdir(dir).catch(() => [] as string[])) {
    const node = await readPid(path.join(dir, id, "node", "pgdata", "postmaster.pid"));
    const gateway = await readPid(path.join(dir, id, "gateway", "haproxy.pid"));
    if (node) {
      nodes++;
      postgres.push(...withDescendants(node, children));
    } else if (gateway) {
      gateways++;
      haproxy.push(...withDescendants(gateway, children));
    } else {
      missing.push(id);
    }
  }
  return { nodes, gateways, postgres: await totals(postgres), haproxy: await totals(haproxy), missing };
}
