// A long-running server process the agent starts detached (etcd, Patroni): it survives an
// agent restart, is found again through its pid file, and is only taken for alive when the
// pid still names a live process whose command line holds the daemon's marker (pids are
// recycled, and zombies pass kill -0).
import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import { CommandFailedError } from "./postgresql/errors.ts";
import { isProcessAlive, processCommandLine, waitFor } from "./postgresql/process-watch.ts";

export interface DaemonOptions {
  /** For messages: "etcd member inst-x". */
  what: string;
  pidFile: string;
  logFile: string;
  /** A string that only this daemon's command line holds (its config or data path). */
  marker: string;
}

export class Daemon {
  constructor(private readonly opts: DaemonOptions) {}

  /** The live daemon's pid, or null. */
  async pid(): Promise<number | null> {
    const text = await fs.readFile(this.opts.pidFile, "utf8").catch(() => "");
    const pid = Number(text.trim());
    if (!Number.isInteger(pid) || pid <= 0 || !(await isProcessAlive(pid))) return null;
    // The command line reads empty for a moment while the process execs (the sandbox's shell
    // becomes setpriv, then the daemon): seen once as a Patroni "exited" right after its start.
    let argv = await processCommandLine(pid);
    for (let i = 0; argv === null && i < 20 && (await isProcessAlive(pid)); i++) {
      await new Promise((r) => setTimeout(r, 10));
      argv = await processCommandLine(pid);
    }
    return argv?.some((a) => a.includes(this.opts.marker)) ? pid : null;
  }

  /** Spawns argv detached, output appended to the log file; returns once it was spawned. */
  async start(argv: string[]): Promise<number> {
    const log = await fs.open(this.opts.logFile, "a", 0o600);
    let pid: number | undefined;
    try {
      const child = spawn(argv[0]!, argv.slice(1), {
        cwd: "/",
        detached: true,
        stdio: ["ignore", log.fd, log.fd],
      });
      child.on("error", () => undefined);
      child.unref();
      pid = child.pid;
    } finally {
      await log.close();
    }
    if (pid === undefined) throw new CommandFailedError(this.opts.what, "could not be spawned");
    await fs.writeFile(this.opts.pidFile, `${pid}\n`, { mode: 0o644 });
    return pid;
  }

  /** SIGTERM, then SIGKILL after `graceMs`; returns once the process is gone. */
  async stop(graceMs = 15_000): Promise<void> {
    const pid = await this.pid();
    if (pid === null) return;
    signal(pid, "SIGTERM");
    const gone = async () => !(await isProcessAlive(pid));
    try {
      await waitFor(`${this.opts.what} to stop`, gone, graceMs, 50);
    } catch {
      signal(pid, "SIGKILL");
      await waitFor(`${this.opts.what} to die`, gone, 10_000, 50);
    }
  }

  /** The last lines of its log (for error messages). */
  async logTail(lines = 15): Promise<string> {
    const text = await fs.readFile(this.opts.logFile, "utf8").catch(() => "");
    return text.trim().split("\n").slice(-lines).join("\n");
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}
