// Verifying one full backup: pgBackRest restores it into a scratch directory, a PostgreSQL
// of its own replays it to the backup's consistency point and pauses there (read-only, no
// TCP listener, a socket directory nobody else uses, archiving off), every database is
// read, then the server is stopped and everything removed. The caller puts the commands in
// a small sandbox (`wrap`) and runs one verification at a time per host.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import pg from "pg";
import { ensureDir, postgresUser, writeFileAtomic } from "../command.ts";
import { PG_BIN_DIR } from "../local-cluster.ts";
import { dropTo, type PgBackRest, type WrapArgv } from "./pgbackrest.ts";

/** Names the socket file only: the scratch server has no TCP listener. */
const SCRATCH_PORT = 65432;
const POLL_MS = 250;

export interface VerifyOutcome {
  status: "verified" | "failed";
  /** What was checked ("2 databases, 312 relations, 10500 rows read"), or why it failed. */
  detail: string;
  at: string;
}

export interface ScratchVerificationOptions {
  /** pgBackRest on the node's stanza (wrapped into the verification sandbox by the caller). */
  pgbackrest: PgBackRest;
  /** Emptied before and removed after: the restored data dir, its log and hba file. */
  workDir: string;
  /** A short directory for the scratch server's socket (paths are limited to ~100 bytes). */
  socketDir: string;
  wrap?: WrapArgv;
  /** Restore, replay and checks together; past it the verification fails. */
  timeoutMs?: number;
  now?: () => Date;
}

/** A failed step of a verification: its message is what the backup shows. */
class VerificationFailed extends Error {}

export class ScratchVerification {
  private readonly pgdata: string;
  private readonly log: string;

  constructor(private readonly opts: ScratchVerificationOptions) {
    this.pgdata = path.join(opts.workDir, "pgdata");
    this.log = path.join(opts.workDir, "server.log");
  }

  /**
   * Verifies `set`. Resolves with the outcome (a broken backup is an outcome, not an error);
   * rejects only when aborted, leaving nothing behind either way.
   */
  async run(set: string, signal: AbortSignal): Promise<VerifyOutcome> {
    const started = Date.now();
    const deadline = started + (this.opts.timeoutMs ?? 2 * 3_600_000);
    let server: ChildProcess | null = null;
    try {
      await this.clean();
      const owner = postgresUser();
      await ensureDir(this.opts.workDir, 0o700, owner);
      await ensureDir(this.pgdata, 0o700, owner);
      await ensureDir(this.opts.socketDir, 0o700, owner);
      await step("restore", () => this.opts.pgbackrest.restoreScratch(this.pgdata, set, signal));
      const hba = path.join(this.opts.workDir, "verify_hba.conf");
      await writeFileAtomic(hba, "local all postgres trust\n", 0o600, owner);
      server = await this.start(hba);
      const s = server;
      await step("replay", () => this.waitPaused(s, deadline, signal));
      const detail = await step("check", () => this.check(deadline));
      const secs = Math.round((Date.now() - started) / 100) / 10;
      return this.outcome("verified", `${detail} in ${secs} s`);
    } catch (err) {
      if (signal.aborted) throw err;
      return this.outcome("failed", (err as Error).message);
    } finally {
      if (server) await stopServer(server);
      await this.clean();
    }
  }

  private outcome(status: VerifyOutcome["status"], detail: string): VerifyOutcome {
    const at = (this.opts.now?.() ?? new Date()).toISOString();
    return { status, detail: oneLine(detail), at };
  }

  private clean(): Promise<void> {
    return removeScratch(this.opts);
  }

  /** The scratch server, a direct child that dies with the agent (SIGQUIT: immediate shutdown). */
  private async start(hbaFile: string): Promise<ChildProcess> {
    const owner = postgresUser();
    const settings: Record<string, string> = {
      // Overrides of the restored configuration (the node's): command-line settings win.
      listen_addresses: "",
      port: String(SCRATCH_PORT),
      unix_socket_directories: this.opts.socketDir,
      unix_socket_permissions: "0700",
      hba_file: hbaFile,
      ssl: "off",
      logging_collector: "off",
      log_destination: "stderr",
      archive_mode: "off",
      hot_standby: "on",
      shared_buffers: "32MB",
      // Thrown away afterwards: nothing it writes needs to reach the disk.
      fsync: "off",
      cluster_name: "cellar-verify",
    };
    const args = ["-D", this.pgdata, ...Object.entries(settings).flatMap(([k, v]) => ["-c", `${k}=${v}`])];
    const argv = [
      "setpriv",
      ...(owner ? dropTo(owner) : []),
      "--pdeathsig",
      "QUIT",
      "--",
      path.join(PG_BIN_DIR, "postgres"),
      ...args,
    ];
    const [file, ...rest] = this.opts.wrap ? this.opts.wrap(argv) : argv;
    const out = await fs.open(this.log, "a", 0o600);
    try {
      const child = spawn(file!, rest, { cwd: "/", stdio: ["ignore", out.fd, out.fd] });
      child.on("error", () => undefined);
      return child;
    } finally {
      await out.close();
    }
  }

  private clientConfig(database: string, timeoutMs: number): pg.ClientConfig {
    return {
      host: this.opts.socketDir,
      port: SCRATCH_PORT,
      user: "postgres",
      database,
      connectionTimeoutMillis: Math.max(1000, Math.min(timeoutMs, 10_000)),
      query_timeout: Math.max(1000, timeoutMs),
    };
  }

  /** Waits until the server replayed the backup's WAL and paused at its consistency point. */
  private async waitPaused(server: ChildProcess, deadline: number, signal: AbortSignal): Promise<void> {
    for (;;) {
      if (signal.aborted) throw new Error("aborted");
      if (server.exitCode !== null || server.signalCode !== null) {
        throw new VerificationFailed(`the restored server stopped: ${await this.logTail()}`);
      }
      const state = await this.query<{ r: boolean; s: string }>(
        "postgres",
        "SELECT pg_is_in_recovery() AS r, pg_get_wal_replay_pause_state() AS s",
        5000,
      ).catch(() => null);
      if (state?.[0]?.r === false) throw new VerificationFailed("the restored server left recovery");
      if (state?.[0]?.s === "paused") return;
      if (Date.now() > deadline) {
        throw new VerificationFailed(`not consistent in time: ${await this.logTail()}`);
      }
      await sleep(POLL_MS);
    }
  }

  /** Reads every database: its relations, every permanent table in full, amcheck if installed. */
  private async check(deadline: number): Promise<string> {
    const left = () => Math.max(1000, deadline - Date.now());
    const dbs = await this.query<{ datname: string }>(
      "postgres",
      "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname",
      left(),
    );
    let relations = 0;
    let rows = 0;
    let indexes = 0;
    for (const { datname } of dbs) {
      const client = new pg.Client(this.clientConfig(datname, left()));
      client.on("error", () => undefined);
      await client.connect();
      try {
        const count = async (sql: string) => Number((await client.query<{ n: string }>(sql)).rows[0]?.n);
        relations += await count("SELECT count(*) AS n FROM pg_class");
        // Unlogged relations cannot be read during recovery (and hold nothing after a restore).
        const tables = await client.query<{ name: string }>(
          `SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'm', 't') AND c.relpersistence = 'p' ORDER BY c.oid`,
        );
        for (const t of tables.rows) {
          rows += await count(`SELECT count(*) AS n FROM ${t.name}`);
        }
        const amcheck = await client.query("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'");
        if (amcheck.rowCount) {
          const checked = await client.query(
            `SELECT bt_index_check(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             JOIN pg_am am ON am.oid = c.relam
             WHERE am.amname = 'btree' AND c.relpersistence = 'p' AND i.indisvalid`,
          );
          indexes += checked.rowCount ?? 0;
        }
      } finally {
        await client.end().catch(() => undefined);
      }
    }
    if (!dbs.some((d) => d.datname === "postgres")) throw new VerificationFailed("no postgres database");
    const amcheck = indexes > 0 ? `, amcheck of ${indexes} indexes` : "";
    return `${dbs.length} databases, ${relations} relations, ${rows} rows read${amcheck}`;
  }

  private async query<R extends pg.QueryResultRow>(db: string, sql: string, timeoutMs: number): Promise<R[]> {
    const client = new pg.Client(this.clientConfig(db, timeoutMs));
    client.on("error", () => undefined);
    await client.connect();
    try {
      return (await client.query<R>(sql)).rows;
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  private async logTail(): Promise<string> {
    const text = await fs.readFile(this.log, "utf8").catch(() => "");
    const lines = text.trim().split("\n");
    const errors = lines.filter((l) => /FATAL|PANIC|ERROR/.test(l)).slice(-3);
    return (errors.length ? errors : lines.slice(-3)).join(" | ") || "no log";
  }
}

/** Removes what a verification leaves, including a server left by a killed agent. */
export async function removeScratch(dirs: { workDir: string; socketDir: string }): Promise<void> {
  const pid = await leftoverPostmaster(path.join(dirs.workDir, "pgdata"));
  if (pid !== null) {
    // Immediate shutdown first: it releases the server's shared memory.
    process.kill(pid, "SIGQUIT");
    const until = Date.now() + 5000;
    while ((await alive(pid)) && Date.now() < until) await sleep(100);
    if (await alive(pid)) process.kill(pid, "SIGKILL");
  }
  await fs.rm(dirs.workDir, { recursive: true, force: true });
  await fs.rm(dirs.socketDir, { recursive: true, force: true });
}

/** The postmaster of a scratch data dir, if one still runs (checked by its command line). */
async function leftoverPostmaster(pgdata: string): Promise<number | null> {
  const raw = await fs.readFile(path.join(pgdata, "postmaster.pid"), "utf8").catch(() => "");
  const pid = Number(raw.split("\n")[0]);
  if (!Number.isInteger(pid) || pid <= 0) return null;
  const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
  return cmdline.includes(pgdata) && (await alive(pid)) ? pid : null;
}

/** Runs one step; its failure message says which step failed. */
async function step<T>(name: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw new VerificationFailed(`${name}: ${(err as Error).message}`);
  }
}

async function stopServer(server: ChildProcess): Promise<void> {
  if (server.exitCode !== null || server.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => server.once("exit", () => resolve()));
  server.kill("SIGQUIT");
  const timer = setTimeout(() => server.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}

/** Running (a zombie is not: it is only waiting to be reaped). */
async function alive(pid: number): Promise<boolean> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  return state !== "" && state !== "Z" && state !== "X";
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Annotation values and report fields hold one line. */
export function oneLine(text: string, max = 500): string {
  return text.replace(/\s+/g, " ").trim().slice(0, max);
}
