// Crash-test helpers: precise waits, process signals, and the "converged exactly once"
// invariants of a host read from the machine itself (/proc, cgroups, directories).
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { HostLayout } from "../../src/engines/postgresql/host-layout.ts";
import { shortRunDir } from "../../src/main/agent-main.ts";
import { createIsolationRuntime } from "../../src/runtime/factory.ts";
import { sandboxNameFor } from "../../src/runtime/limits.ts";
import { probeIsolation } from "../../src/runtime/probe.ts";
import type { Queryable } from "../../src/store/db.ts";
import { instancesOf } from "./crash-db.ts";

const execFileAsync = promisify(execFile);

/** Polls `check` every `intervalMs` until it returns something other than undefined/false. */
export async function waitUntil<T>(
  what: string,
  check: () => Promise<T | undefined | false>,
  opts: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 50));
  }
}

export const pathExists = (p: string) =>
  fs.access(p).then(
    () => true,
    () => false,
  );

/** SIGKILLs a child and waits until Node has reaped it. */
export async function killNow(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGKILL");
  await exited;
}

/** Sends a signal to a pid; a process already gone is fine (cleanup paths call this). */
export function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
  }
}

export interface ProcInfo {
  pid: number;
  ppid: number;
  state: string;
  argv: string[];
  cwd: string;
}

async function readProc(pid: number): Promise<ProcInfo | null> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, "utf8").catch(() => null);
  if (stat === null) return null;
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const state = rest[0] ?? "";
  // Zombies are dead: they hold no port and no file (and kill -0 would lie about them).
  if (state === "Z" || state === "X") return null;
  const raw = await fs.readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
  const cwd = await fs.readlink(`/proc/${pid}/cwd`).catch(() => "");
  return { pid, ppid: Number(rest[1]), state, argv: raw.replace(/\0$/, "").split("\0"), cwd };
}

/** Alive, not a zombie (kill -0 would say yes to a zombie). */
export async function isAlive(pid: number): Promise<boolean> {
  return (await readProc(pid)) !== null;
}

/** Every live process of the machine. */
export async function processes(): Promise<ProcInfo[]> {
  const pids = (await fs.readdir("/proc")).filter((e) => /^\d+$/.test(e)).map(Number);
  const all = await Promise.all(pids.map(readProc));
  return all.filter((p): p is ProcInfo => p !== null && p.pid !== process.pid);
}

const within = (dir: string) => (p: string) => p === dir || p.startsWith(dir + "/");

/** Live processes with an argument naming something under `dir`, or working inside it. */
export async function processesUsing(dir: string): Promise<ProcInfo[]> {
  const inside = within(path.resolve(dir));
  return (await processes()).filter((p) => p.argv.some(inside) || inside(p.cwd));
}

/** After a cluster is closed: kills whatever still runs in its files, and fails naming it. */
export async function assertNothingLeft(dir: string): Promise<void> {
  const left = await processesUsing(dir);
  for (const p of left) signal(p.pid, "SIGKILL");
  assert.deepEqual(
    left.map((p) => `${p.pid} ${p.argv.join(" ")}`),
    [],
    `processes left in ${dir} after the cluster closed`,
  );
}

/**
 * What a closed cluster leaves of a host by design (sandboxes outlive their agent): its
 * empty parent cgroups and its run directory. Call after the cluster's own close.
 */
export async function removeHostResidue(stateDir: string, hostName: string): Promise<void> {
  const runtime = await createIsolationRuntime(await probeIsolation(), { parent: `cellar-${hostName}` });
  for (const name of await runtime.listSandboxes()) await runtime.removeSandbox(name);
  // rmdir refuses a cgroup that still holds one: only empty parents go.
  for (const file of runtime.procsFiles(sandboxNameFor("inst-x"))) {
    await fs.rmdir(path.dirname(path.dirname(file))).catch(() => undefined);
  }
  await fs.rm(shortRunDir(stateDir), { recursive: true, force: true });
}

/** Postmasters of a data directory (PostgreSQL's children rename themselves, the postmaster does not). */
export async function postmastersOf(dataDir: string): Promise<ProcInfo[]> {
  return (await processes()).filter(
    (p) => p.argv[0]?.endsWith("/postgres") && p.argv.includes(dataDir) && !p.argv.includes("--single"),
  );
}

/** TCP listeners of an IPv4 address: port -> number of listening sockets (from /proc/net/tcp). */
export async function listenersOn(address: string): Promise<Map<number, number>> {
  const text = await fs.readFile("/proc/net/tcp", "utf8");
  const out = new Map<number, number>();
  for (const line of text.split("\n").slice(1)) {
    const [, local, , st] = line.trim().split(/\s+/);
    if (!local || st !== "0A") continue; // 0A = LISTEN
    const [ipHex, portHex] = local.split(":") as [string, string];
    const ip = (ipHex.match(/../g) ?? [])
      .reverse()
      .map((h) => parseInt(h, 16))
      .join(".");
    if (ip !== address) continue;
    const port = parseInt(portHex, 16);
    out.set(port, (out.get(port) ?? 0) + 1);
  }
  return out;
}

/** Sandboxes (cgroups) the agent of `hostName` has made; agents share the test process's cgroup. */
export async function sandboxesOf(hostName: string): Promise<string[]> {
  const runtime = await createIsolationRuntime(await probeIsolation(), { parent: `cellar-${hostName}` });
  return runtime.listSandboxes();
}

export interface HostSite {
  /** The store (a pool of the test's own). */
  db: Queryable;
  /** The agent's state directory (<data dir>/hosts/<name>). */
  stateDir: string;
  name: string;
  address: string;
}

export const instanceDir = (site: HostSite, id: string) => path.join(site.stateDir, "instances", id);
export const nodeDataDir = (site: HostSite, id: string) => path.join(instanceDir(site, id), "node", "pgdata");
export const runDirOf = (site: HostSite, id: string) =>
  path.join(shortRunDir(site.stateDir), id.replace(/^inst-/, ""));

const sorted = <T>(xs: Iterable<T>) => [...xs].sort();

/**
 * What the store says the host runs is exactly what runs on it: one postmaster per node and
 * one HAProxy per gateway, each port listened on once and no other port, one directory and
 * one run directory per instance, one sandbox per node, and no other process in its files.
 */
export async function assertHostMatchesStore(site: HostSite): Promise<void> {
  const { rows } = await site.db.query<{ id: string; kind: string; port: number; status: string }>(
    `SELECT i.id, i.kind, i.port, i.status FROM instances i JOIN hosts h ON h.id = i.host_id
     WHERE h.name = $1 ORDER BY i.id`,
    [site.name],
  );
  for (const r of rows) assert.equal(r.status, "running", `instance ${r.id} (${r.kind}) is ${r.status}`);
  const ids = rows.map((r) => r.id);
  const local = await fs.readdir(path.join(site.stateDir, "instances")).catch(() => [] as string[]);
  assert.deepEqual(sorted(local), ids, "instance directories on the host");
  const runIds = ids.map((id) => id.replace(/^inst-/, ""));
  // A node's backup verification in flight has a socket dir of its own ("v" + the node's).
  const runDirs = (await fs.readdir(shortRunDir(site.stateDir)).catch(() => [] as string[])).filter(
    (d) => !(d.startsWith("v") && runIds.includes(d.slice(1))),
  );
  assert.deepEqual(sorted(runDirs), sorted(runIds), "run directories");
  const nodes = rows.filter((r) => r.kind === "node");
  // A node's backup verification in flight runs in a small sandbox of its own.
  const verifySandboxes = new Set(nodes.map((n) => `cellar-verify-${n.id.replace(/^inst-/, "")}`));
  assert.deepEqual(
    (await sandboxesOf(site.name)).filter((s) => !verifySandboxes.has(s)),
    sorted(nodes.map((n) => `cellar-${n.id}`)),
    "sandboxes (cgroups) of the host",
  );
  const expected = new Set<number>();
  for (const n of nodes) {
    const masters = await postmastersOf(nodeDataDir(site, n.id));
    assert.equal(masters.length, 1, `postmasters of ${n.id}: ${masters.map((m) => m.pid).join(", ")}`);
    expected.add(masters[0]!.pid);
  }
  const users = await processesUsing(site.stateDir);
  for (const p of users) if (expected.has(p.ppid)) expected.add(p.pid);
  for (const g of rows.filter((r) => r.kind === "gateway")) {
    const config = path.join(instanceDir(site, g.id), "gateway", "haproxy.cfg");
    const haproxies = users.filter((p) => p.argv[0] === "/usr/sbin/haproxy" && p.argv.includes(config));
    if (haproxies.length !== 1) {
      const log = await fs.readFile(path.join(path.dirname(config), "haproxy.log"), "utf8").catch(() => "");
      const who = haproxies.map((h) => `${h.pid} (${h.state}) ${h.argv.join(" ")}`).join("; ");
      assert.fail(`${haproxies.length} haproxy processes for gateway ${g.id}: ${who}\n${log.slice(-3000)}`);
    }
    expected.add(haproxies[0]!.pid);
  }
  const listeners = await listenersOn(site.address);
  assert.deepEqual(
    sorted([...listeners].map(([port, n]) => `${port}x${n}`)),
    sorted(rows.map((r) => `${r.port}x1`)),
    `TCP listeners on ${site.address} (port x sockets)`,
  );

  // A node's backup verification in flight runs a scratch PostgreSQL in the node's backup dir.
  const verifyDirs = nodes.map((n) => path.join(instanceDir(site, n.id), "backup", "verify"));
  const verifying = (p: ProcInfo) => verifyDirs.some((d) => within(d)(p.cwd) || p.argv.some(within(d)));
  const orphans = users.filter((p) => !expected.has(p.pid) && !verifying(p));
  assert.deepEqual(
    orphans.map((p) => `${p.pid} ${p.argv.join(" ")} (cwd ${p.cwd})`),
    [],
    "processes in the host's files that belong to no instance",
  );
}

export const templateDirOf = (site: HostSite) => new HostLayout(site.stateDir).templateDir();

/**
 * Restarts the agent of `site` without its template data dir and stops (SIGSTOP) the
 * initdb that rebuilds it: the host's next node then waits on a running initdb. Returns
 * initdb's pid; the caller lets it go (SIGCONT) or kills it.
 */
export async function holdTemplateInitdb(
  site: HostSite,
  agent: { kill(): Promise<void>; start(): ChildProcess },
): Promise<number> {
  const template = templateDirOf(site);
  await waitUntil("the host's first template", async () => {
    const built = await pathExists(path.join(template, "pgdata", "global", "pg_control"));
    return built && (await processesUsing(template)).length === 0;
  });
  await agent.kill();
  await fs.rm(template, { recursive: true, force: true });
  const fresh = agent.start();
  const building = path.join(template, "pgdata.init");
  // Mid-way: the new agent's initdb runs and has made its directory.
  const initdb = await waitUntil(
    "the template's initdb",
    async () => {
      const found = (await processesUsing(building)).find(
        (p) => p.argv[0]?.endsWith("/initdb") && p.ppid === fresh.pid,
      );
      return found && (await pathExists(building)) ? found : undefined;
    },
    { intervalMs: 5, timeoutMs: 30_000 },
  );
  signal(initdb.pid, "SIGSTOP");
  return initdb.pid;
}

const BALLAST_FILES = 30_000;

/**
 * Many small files in a node's directory: removing them takes the agent a moment, in which
 * a test can see the node stopped but its files still there (a delete under way), without
 * touching anything the agent observes.
 */
export async function addBallast(site: HostSite, nodeId: string): Promise<string> {
  const dir = path.join(instanceDir(site, nodeId), "node", "ballast");
  await fs.mkdir(dir);
  await execFileAsync("sh", ["-c", `cd "$1" && seq 1 ${BALLAST_FILES} | xargs touch`, "ballast", dir]);
  return dir;
}

/** Waits until the agent has stopped `postmasterPid` and is removing the node's files. */
export async function waitNodeBeingRemoved(postmasterPid: number, ballast: string): Promise<void> {
  await waitUntil(
    "the agent to remove the node's files",
    async () => !(await isAlive(postmasterPid)) && (await pathExists(ballast)),
    { intervalMs: 5 },
  );
}

/** Waits until the host's agent works on a new node that waits for the template. */
export async function nodeWaitingForTemplate(
  site: HostSite,
  db: Queryable,
  databaseId: string,
): Promise<void> {
  const { node } = await waitUntil("placement", () => instancesOf(db, databaseId), { intervalMs: 10 });
  await waitUntil("the agent to work on the node", () => pathExists(instanceDir(site, node.id)), {
    intervalMs: 10,
  });
  assert.equal(await pathExists(nodeDataDir(site, node.id)), false, "the node waits for the template");
  assert.equal(await pathExists(path.join(templateDirOf(site), "pgdata.init")), true, "initdb is under way");
}
