// Liveness checks that do not lie: `kill -0` succeeds on a zombie, and orphaned daemons
// stay zombies for a while on these hosts, so we read /proc or connect instead.
import fs from "node:fs/promises";
import net from "node:net";
import { EngineTimeoutError } from "./errors.ts";

/** True when the process exists and is not a zombie (state Z) or dead (X). */
export async function isProcessAlive(pid: number): Promise<boolean> {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  const stat = await fs.readFile(`/proc/${pid}/stat`, "utf8").catch(() => null);
  if (stat === null) return false;
  // The command name (2nd field) may contain spaces and parentheses: the state follows the last ")".
  const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  return state !== "Z" && state !== "X" && state !== "";
}

/** The process's command line, or null when it is gone. */
export async function processCommandLine(pid: number): Promise<string[] | null> {
  const raw = await fs.readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => null);
  return raw === null || raw === "" ? null : raw.replace(/\0$/, "").split("\0");
}

/** Live processes whose title (argv[0]) starts with `prefix`, e.g. a cluster's "postgres: inst-x: ". */
export async function livePidsTitled(prefix: string): Promise<number[]> {
  const found: number[] = [];
  for (const { pid, argv } of await scans.fresh()) {
    if (argv[0]?.startsWith(prefix) && (await isProcessAlive(pid))) found.push(pid);
  }
  return found;
}

/** Does something accept TCP connections on host:port? */
export function acceptsTcp(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

/** Polls `check` until it returns true; throws a timeout naming `what` after `timeoutMs`. */
export async function waitFor(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs: number,
  intervalMs = 25,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() >= deadline)
      throw new EngineTimeoutError(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Live processes running `bin` with `arg` among their arguments (scan of /proc). */
export async function findProcesses(bin: string, arg: string): Promise<number[]> {
  const found: number[] = [];
  for (const { pid, argv } of await scans.fresh()) {
    if (argv[0] === bin && argv.includes(arg) && (await isProcessAlive(pid))) found.push(pid);
  }
  return found;
}

/**
 * `check` on every item, PROC_BATCH at a time: a host with thousands of processes would
 * otherwise open a file descriptor per process at once (EMFILE on a full host).
 */
const PROC_BATCH = 64;
async function inBatches<T>(items: T[], check: (item: T) => Promise<boolean>): Promise<boolean[]> {
  const out: boolean[] = [];
  for (let i = 0; i < items.length; i += PROC_BATCH) {
    out.push(...(await Promise.all(items.slice(i, i + PROC_BATCH).map(check))));
  }
  return out;
}

interface ProcEntry {
  pid: number;
  argv: string[];
}

/** The command line of every process, read PROC_BATCH at a time. */
async function scanProc(): Promise<ProcEntry[]> {
  const pids = (await fs.readdir("/proc")).filter((e) => /^\d+$/.test(e)).map(Number);
  const argvs: Array<string[] | null> = [];
  for (let i = 0; i < pids.length; i += PROC_BATCH) {
    argvs.push(...(await Promise.all(pids.slice(i, i + PROC_BATCH).map(processCommandLine))));
  }
  return pids.flatMap((pid, i) => {
    const argv = argvs[i];
    return argv ? [{ pid, argv }] : [];
  });
}

/**
 * Scans of /proc shared by concurrent callers. A full host starts or removes hundreds of
 * gateways at once, and each looked for its HAProxy processes with a scan of its own
 * (~2,000 processes, two reads each): removing a full host stalled on them. A caller
 * joins a scan that starts after its call (never one already under way, which may have
 * passed a process started just before), so what it finds is as fresh as its own scan.
 */
class ProcScans {
  private running: Promise<ProcEntry[]> | null = null;
  private queued: Promise<ProcEntry[]> | null = null;

  fresh(): Promise<ProcEntry[]> {
    if (this.queued) return this.queued;
    if (!this.running) return this.begin();
    const queued = this.running
      .catch(() => undefined)
      .then(() => {
        this.queued = null;
        return this.begin();
      });
    this.queued = queued;
    return queued;
  }

  private begin(): Promise<ProcEntry[]> {
    const scan: Promise<ProcEntry[]> = scanProc().finally(() => {
      if (this.running === scan) this.running = null;
    });
    this.running = scan;
    return scan;
  }
}

const scans = new ProcScans();

/**
 * Live processes working in `dir`: an argument naming it (or a path below it) or a current
 * directory inside it (PostgreSQL's children chdir to their data directory).
 */
export async function findProcessesUsing(dir: string): Promise<number[]> {
  const inside = (p: string) => p === dir || p.startsWith(dir + "/");
  const pids = (await fs.readdir("/proc")).filter((e) => /^\d+$/.test(e)).map(Number);
  const matches = await inBatches(pids, async (pid) => {
    if (pid === process.pid) return false;
    const cmdline = await processCommandLine(pid);
    const cwd = await fs.readlink(`/proc/${pid}/cwd`).catch(() => "");
    const uses = (cmdline?.some(inside) ?? false) || inside(cwd);
    return uses && (await isProcessAlive(pid));
  });
  return pids.filter((_, i) => matches[i]);
}

/** Sends a signal; a process that is already gone is not an error. */
export function signalProcess(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
  }
}
