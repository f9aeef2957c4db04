// A PostgreSQL cluster on this machine, driven through the Debian binaries.
// Used for Cellar's own embedded metadata store and by the test harness.
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

export const PG_BIN_DIR = process.env.CELLAR_PG_BIN_DIR_OVERRIDE || "/usr/lib/postgresql/15/bin";

export const isRoot = (): boolean => typeof process.getuid === "function" && process.getuid() === 0;

/** PostgreSQL refuses to run as root: when we are root, run its binaries as `postgres`. */
export const PG_OS_USER = "postgres";

export function asPostgresUser(bin: string, args: string[]): [string, string[]] {
  const full = path.join(PG_BIN_DIR, bin);
  return isRoot() ? ["runuser", ["-u", PG_OS_USER, "--", full, ...args]] : [full, args];
}

async function run(bin: string, args: string[]): Promise<string> {
  const [cmd, argv] = asPostgresUser(bin, args);
  try {
    const { stdout } = await execFileAsync(cmd, argv, { maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${bin} failed: ${(e.stderr || e.message).trim()}`);
  }
}

/** Gives a directory to the postgres OS user (only meaningful as root). */
export async function chownToPostgres(dir: string): Promise<void> {
  if (!isRoot()) return;
  await execFileAsync("chown", ["-R", `${PG_OS_USER}:${PG_OS_USER}`, dir]);
}

export interface LocalClusterOptions {
  /** Holds pgdata/, run/ (the socket) and the server log. */
  baseDir: string;
  port: number;
  /** Extra postgresql.conf lines. */
  settings?: Record<string, string | number>;
}

export class LocalCluster {
  readonly dataDir: string;
  readonly socketDir: string;
  readonly logFile: string;

  constructor(readonly opts: LocalClusterOptions) {
    this.dataDir = path.join(opts.baseDir, "pgdata");
    this.socketDir = path.join(opts.baseDir, "run");
    this.logFile = path.join(opts.baseDir, "postgresql.log");
  }

  get port(): number {
    return this.opts.port;
  }

  /** Connection settings for `pg` (unix socket, trust for the socket's owner). */
  connectionConfig(database = "postgres"): { host: string; port: number; user: string; database: string } {
    return { host: this.socketDir, port: this.opts.port, user: PG_OS_USER, database };
  }

  async isInitialised(): Promise<boolean> {
    return fs
      .access(path.join(this.dataDir, "PG_VERSION"))
      .then(() => true)
      .catch(() => false);
  }

  /** initdb once; a half-done initdb (no PG_VERSION) is wiped and redone. */
  async ensureInitialised(): Promise<void> {
    if (await this.isInitialised()) return;
    await fs.rm(this.dataDir, { recursive: true, force: true });
    await fs.mkdir(this.opts.baseDir, { recursive: true });
    await fs.mkdir(this.dataDir, { recursive: true, mode: 0o700 });
    await fs.mkdir(this.socketDir, { recursive: true, mode: 0o700 });
    await chownToPostgres(this.opts.baseDir);
    await run("initdb", [
      "-D",
      this.dataDir,
      "-U",
      PG_OS_USER,
      "--auth-local=trust",
      "--auth-host=reject",
      "-E",
      "UTF8",
      "--locale=C.UTF-8",
      "-N",
    ]);
    const settings: Record<string, string | number> = {
      listen_addresses: "''",
      port: this.opts.port,
      unix_socket_directories: `'${this.socketDir}'`,
      unix_socket_permissions: "0700",
      max_connections: 100,
      shared_buffers: "'32MB'",
      fsync: "on",
      logging_collector: "off",
      ...this.opts.settings,
    };
    const lines = Object.entries(settings).map(([k, v]) => `${k} = ${v}`);
    await fs.appendFile(path.join(this.dataDir, "postgresql.conf"), `\n# Cellar\n${lines.join("\n")}\n`);
    await chownToPostgres(this.opts.baseDir);
  }

  /** Answers queries on its socket? (a live postmaster, not a zombie pid). */
  async isReady(): Promise<boolean> {
    try {
      await run("pg_isready", ["-q", "-h", this.socketDir, "-p", String(this.opts.port)]);
      return true;
    } catch {
      return false;
    }
  }

  /** Starts the server; returns false when it was already running (someone else owns it). */
  async start(): Promise<boolean> {
    if (await this.isReady()) return false;
    await fs.mkdir(this.socketDir, { recursive: true, mode: 0o700 });
    await chownToPostgres(this.socketDir);
    await run("pg_ctl", ["start", "-w", "-t", "60", "-D", this.dataDir, "-l", this.logFile, "-s"]).catch(
      async (err: Error) => {
        const tail = await fs.readFile(this.logFile, "utf8").catch(() => "");
        throw new Error(`${err.message}\n${tail.split("\n").slice(-10).join("\n")}`);
      },
    );
    return true;
  }

  async stop(mode: "fast" | "immediate" = "fast"): Promise<void> {
    if (!(await this.isInitialised())) return;
    await run("pg_ctl", ["stop", "-w", "-t", "60", "-m", mode, "-D", this.dataDir, "-s"]).catch(() => {
      // Not running: nothing to stop.
    });
  }

  /** Stops the server and removes every file it had. */
  async destroy(): Promise<void> {
    await this.stop("immediate");
    await fs.rm(this.opts.baseDir, { recursive: true, force: true });
  }
}
