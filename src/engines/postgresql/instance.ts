// One PostgreSQL node on this host: its directories, configuration and process.
// Every step is idempotent, so an agent that died mid-way simply calls it again.
//
// Layout under baseDir (all owned by the postgres OS user, 0700):
//   pgdata/      the data directory (pgdata.init/ while it is being built)
//   run/         the unix socket (superuser access for the agent)
//   tls/         server.crt, server.key, ca.crt
//   log/         startup.log (pg_ctl -l) and the collector's postgresql-*.log files
import fs from "node:fs/promises";
import path from "node:path";
import type pg from "pg";
import { type CertificateAuthority, type CertificateNames, issueServerCert } from "../tls/certificates.ts";
import type { ArchiveSettings } from "./backup/pgbackrest-config.ts";
import { ensureDir, postgresUser, runCommand, runPgBinary, writeFileAtomic } from "./command.ts";
import { buildDataDirAtomically, isDataDir, pathExists, type PgTemplate, runInitdb } from "./data-dir.ts";
import { CommandFailedError, EngineError, PortInUseError } from "./errors.ts";
import { PG_BIN_DIR, PG_OS_USER } from "./local-cluster.ts";
import { renderCellarConf, renderPgHba } from "./pg-config.ts";
import type { PlanSettings } from "./plan-settings.ts";
import { isProcessAlive, livePidsTitled, processCommandLine, waitFor } from "./process-watch.ts";
import { ensureRoleAndDatabase, type RoleAndDatabase } from "./roles.ts";
import { queryOnce } from "./superuser.ts";

export interface PostgresInstanceOptions {
  /** The instance id (inst-...): shown in process titles as cluster_name. */
  id: string;
  /** Deterministic from the id, e.g. <host data dir>/instances/<id>. */
  baseDir: string;
  listenAddress: string;
  port: number;
  /**
   * Where the unix socket goes (default <baseDir>/run). Socket paths are limited to ~107
   * bytes, so agents with deep data directories pass a short directory here.
   */
  socketDir?: string;
  /**
   * Wraps the argv that starts the server (e.g. to join an isolation sandbox before exec),
   * so the postmaster and everything it forks are born inside. When set, the privileges
   * are dropped inside the wrapped command (runuser), not by the caller.
   */
  wrapStart?: (argv: string[]) => string[];
}

export interface ConfigureOptions {
  /** Refuse non-TLS connections (the force-ssl feature; default on Dedicated). */
  forceTls: boolean;
  /** WAL archiving into the node's backup repository (backup/pgbackrest-config.ts). */
  archive?: ArchiveSettings | undefined;
}

const START_TIMEOUT_S = 60;
/** pg_file_settings' word for a restart-only setting no longer in any file (its name column is null). */
const REMOVED_NEEDS_RESTART = /^parameter "([^"]+)" cannot be changed without restarting the server$/;
/**
 * Settings that only act while a server recovers: a restore's (data-swap.ts), reset in the
 * files of the promoted server. They stay in its memory, inert, until its next restart, and
 * their removal is no reason for one.
 */
export const RECOVERY_ONLY_SETTINGS = [
  "restore_command",
  "recovery_target_time",
  "recovery_target_action",
  "recovery_target_timeline",
  "hot_standby",
];
const CONF_INCLUDE = "include 'cellar.conf'";

export class PostgresInstance {
  readonly baseDir: string;
  readonly dataDir: string;
  readonly socketDir: string;
  readonly tlsDir: string;
  readonly logDir: string;
  readonly startupLog: string;

  constructor(readonly opts: PostgresInstanceOptions) {
    this.baseDir = path.resolve(opts.baseDir);
    this.dataDir = path.join(this.baseDir, "pgdata");
    this.socketDir = opts.socketDir ?? path.join(this.baseDir, "run");
    this.tlsDir = path.join(this.baseDir, "tls");
    this.logDir = path.join(this.baseDir, "log");
    this.startupLog = path.join(this.logDir, "startup.log");
  }

  get port(): number {
    return this.opts.port;
  }

  /** Connection settings for the superuser over the unix socket (trust, 0700 socket dir). */
  superuserConfig(database = "postgres"): pg.ClientConfig {
    return { host: this.socketDir, port: this.opts.port, user: PG_OS_USER, database };
  }

  isInitialised(): Promise<boolean> {
    return isDataDir(this.dataDir);
  }

  /**
   * Creates the data directory once, from `template` when given (fast copy with a fresh
   * system identifier) or by initdb. A half-built directory is wiped and rebuilt.
   */
  async ensureInitialised(opts: { template?: PgTemplate } = {}): Promise<"existing" | "initdb" | "template"> {
    if (await this.isInitialised()) return "existing";
    const template = opts.template;
    await buildDataDirAtomically(this.dataDir, async (tmp) => {
      if (template) await template.cloneInto(tmp);
      else await runInitdb(tmp);
    });
    return template ? "template" : "initdb";
  }

  /**
   * Server certificate in tls/. Clients verify the name they dialled, and TLS passes
   * through the gateway, so `names` must hold the gateway's address and hostname too.
   */
  async ensureServerCertificate(ca: CertificateAuthority, names: CertificateNames): Promise<boolean> {
    const owner = postgresUser();
    await ensureDir(this.tlsDir, 0o700, owner);
    const issued = await issueServerCert(ca, names, this.tlsDir, { owner });
    return issued.changed;
  }

  /** Writes cellar.conf and pg_hba.conf; returns whether anything changed (then reload). */
  async configure(settings: PlanSettings, opts: ConfigureOptions): Promise<{ changed: boolean }> {
    if (!(await this.isInitialised())) throw new EngineError(`instance ${this.opts.id} is not initialised`);
    const owner = postgresUser();
    await ensureDir(this.logDir, 0o700, owner);
    const conf = renderCellarConf({
      settings,
      listenAddress: this.opts.listenAddress,
      port: this.opts.port,
      socketDir: this.socketDir,
      logDir: this.logDir,
      tls: {
        certFile: path.join(this.tlsDir, "server.crt"),
        keyFile: path.join(this.tlsDir, "server.key"),
        caFile: path.join(this.tlsDir, "ca.crt"),
      },
      clusterName: this.opts.id,
      archive: opts.archive,
    });
    const confChanged = await writeFileAtomic(path.join(this.dataDir, "cellar.conf"), conf, 0o600, owner);
    const hbaChanged = await writeFileAtomic(
      path.join(this.dataDir, "pg_hba.conf"),
      renderPgHba({ forceTls: opts.forceTls }),
      0o600,
      owner,
    );
    const mainConf = path.join(this.dataDir, "postgresql.conf");
    const main = await fs.readFile(mainConf, "utf8");
    // Included last, so Cellar's values win over initdb's defaults above it.
    const includeAdded = !main.includes(CONF_INCLUDE);
    if (includeAdded) await writeFileAtomic(mainConf, `${main}\n${CONF_INCLUDE}\n`, 0o600, owner);
    return { changed: confChanged || hbaChanged || includeAdded };
  }

  /** The postmaster's pid from postmaster.pid, or null. */
  async postmasterPid(): Promise<number | null> {
    const raw = await fs.readFile(path.join(this.dataDir, "postmaster.pid"), "utf8").catch(() => null);
    const pid = Number(raw?.split("\n")[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  }

  /** A live postmaster of this data dir (not a zombie, not a recycled pid)? */
  private async postmasterAlive(): Promise<boolean> {
    const pid = await this.postmasterPid();
    if (pid === null || !(await isProcessAlive(pid))) return false;
    const cmdline = await processCommandLine(pid);
    return cmdline?.some((arg) => arg.includes("postgres")) ?? false;
  }

  /**
   * The heartbeat's look: postmaster.pid says the server is ready and its postmaster is alive.
   * No connection is made, so an idle node is not woken (each connection forks a backend
   * inside the node's CPU quota). Start, restart and the controller's check still connect.
   */
  async seemsReady(): Promise<boolean> {
    const raw = await fs.readFile(path.join(this.dataDir, "postmaster.pid"), "utf8").catch(() => "");
    // Line 8 of postmaster.pid is the server's state: "starting", "ready", "stopping".
    return raw.split("\n")[7]?.trim() === "ready" && (await this.postmasterAlive());
  }

  /** Answers a query on its socket (a connection, not kill -0: zombies pass kill -0). */
  async isReady(): Promise<boolean> {
    return queryOnce(this.superuserConfig(), "SELECT 1").then(
      () => true,
      () => false,
    );
  }

  /** Starts the server and returns once it accepts connections; started=false if it already ran. */
  async start(): Promise<{ started: boolean }> {
    if (await this.isReady()) return { started: false };
    // An earlier call (before an agent restart) may have left a postmaster still starting up.
    if (await this.postmasterAlive()) {
      await waitFor(
        `instance ${this.opts.id} to accept connections`,
        () => this.isReady(),
        START_TIMEOUT_S * 1000,
      );
      await this.wakeCheckpointer();
      return { started: false };
    }
    if ((await this.postmasterPid()) !== null) await this.clearCrashedPostmaster();
    const owner = postgresUser();
    await ensureDir(this.socketDir, 0o700, owner);
    await ensureDir(this.logDir, 0o700, owner);
    const since = Date.now();
    const logOffset = await fs.stat(this.startupLog).then(
      (s) => s.size,
      () => 0,
    );
    try {
      const args = [
        "start",
        "-w",
        "-t",
        String(START_TIMEOUT_S),
        "-s",
        "-D",
        this.dataDir,
        "-l",
        this.startupLog,
      ];
      if (this.opts.wrapStart) {
        const pgCtl = path.join(PG_BIN_DIR, "pg_ctl");
        const argv = this.opts.wrapStart(
          owner ? ["runuser", "-u", PG_OS_USER, "--", pgCtl, ...args] : [pgCtl, ...args],
        );
        await runCommand(argv[0]!, argv.slice(1), { timeoutMs: (START_TIMEOUT_S + 10) * 1000 });
      } else {
        await runPgBinary("pg_ctl", args);
      }
    } catch (err) {
      throw await this.explainStartFailure(err, logOffset, since);
    }
    await this.wakeCheckpointer();
    return { started: true };
  }

  /**
   * PostgreSQL 15 runs its checkpointer during crash recovery; after the end-of-recovery
   * checkpoint it goes to sleep for checkpoint_timeout, timed as if still in recovery, where
   * archive_timeout does not count. Until something wakes it, a server back from a crash
   * never switches WAL segment on archive_timeout, and its archive stops short of what it
   * committed (seen: no WAL archived for over 60 s of writes with archive_timeout 30 s;
   * on a bare server, none in 8 s with archive_timeout 2 s, 4 crashes out of 4). A reload
   * wakes it, and it times its sleep again, archive_timeout included.
   */
  private async wakeCheckpointer(): Promise<void> {
    await runPgBinary("pg_ctl", ["reload", "-s", "-D", this.dataDir]).catch(() => undefined);
  }

  /**
   * After a postmaster was killed outright: its children linger a moment, still attached to
   * its shared memory, and the dead postmaster may stay a zombie, which PostgreSQL's own
   * lock-file check (kill -0) takes for a running server. Once the children are gone, the
   * stale postmaster.pid is removed. (A clean stop removes that file, so only a crash pays
   * for this scan of /proc.)
   */
  private async clearCrashedPostmaster(): Promise<void> {
    await waitFor(
      `the processes of the previous postmaster of ${this.opts.id} to exit`,
      async () => (await livePidsTitled(`postgres: ${this.opts.id}: `)).length === 0,
      START_TIMEOUT_S * 1000,
    );
    const pid = await this.postmasterPid();
    if (pid === null || (await this.postmasterAlive())) return;
    // The socket's lock file names the same dead postmaster: it goes too, with its socket.
    for (const name of await fs.readdir(this.socketDir).catch(() => [] as string[])) {
      if (!/^\.s\.PGSQL\.\d+\.lock$/.test(name)) continue;
      const lock = path.join(this.socketDir, name);
      const owner = Number((await fs.readFile(lock, "utf8").catch(() => "")).split("\n")[0]);
      if (owner !== pid) continue;
      await fs.rm(lock.replace(/\.lock$/, ""), { force: true });
      await fs.rm(lock, { force: true });
    }
    await fs.rm(path.join(this.dataDir, "postmaster.pid"), { force: true });
  }

  private async explainStartFailure(err: unknown, logOffset: number, since: number): Promise<Error> {
    const startup = await fs.readFile(this.startupLog).then(
      (b) => b.subarray(logOffset).toString("utf8"),
      () => "",
    );
    // The collector starts before the listen sockets: bind errors land in its files.
    const log = startup + (await this.logWrittenSince(since));
    if (/could not bind .* Address already in use/.test(log)) {
      return new PortInUseError("postgresql", this.opts.listenAddress, this.opts.port);
    }
    const tail = log.trim().split("\n").slice(-8).join("\n");
    return new CommandFailedError("pg_ctl start", `${(err as Error).message}\n${tail}`.trim());
  }

  /** The collector's log files changed since `since` (ms epoch), concatenated (last 64 kB each). */
  private async logWrittenSince(since: number): Promise<string> {
    const names = await fs.readdir(this.logDir).catch(() => [] as string[]);
    let text = "";
    for (const name of names.filter((n) => n.startsWith("postgresql-")).sort()) {
      const file = path.join(this.logDir, name);
      const stat = await fs.stat(file).catch(() => null);
      if (!stat || stat.mtimeMs < since - 1000) continue;
      const content = await fs.readFile(file);
      text += content.subarray(Math.max(0, content.length - 65536)).toString("utf8");
    }
    return text;
  }

  async stop(mode: "fast" | "immediate" = "fast"): Promise<void> {
    if (!(await this.postmasterAlive())) return;
    await runPgBinary("pg_ctl", [
      "stop",
      "-w",
      "-t",
      String(START_TIMEOUT_S),
      "-s",
      "-m",
      mode,
      "-D",
      this.dataDir,
    ]).catch(async (err: unknown) => {
      // It may have exited between our look and pg_ctl's: only a survivor is a failure.
      if (await this.postmasterAlive()) throw err;
    });
  }

  async restart(): Promise<void> {
    await this.stop("fast");
    await this.start();
  }

  /**
   * Applies the configuration files to the running server. Returns the settings that
   * only take effect after a restart (shared_buffers, max_connections...), read from
   * pg_file_settings, which parses the files at query time (no race with the SIGHUP).
   */
  async reload(): Promise<{ pendingRestart: string[] }> {
    await runPgBinary("pg_ctl", ["reload", "-s", "-D", this.dataDir]);
    const rows = await queryOnce<{ name: string | null; error: string }>(
      this.superuserConfig(),
      "SELECT name, error FROM pg_file_settings WHERE error IS NOT NULL",
    );
    const pending = new Set<string>();
    const invalid: string[] = [];
    for (const r of rows) {
      const removed = REMOVED_NEEDS_RESTART.exec(r.error)?.[1];
      if (r.name !== null && r.error === "setting could not be applied") pending.add(r.name);
      else if (removed === undefined) invalid.push(`${r.name ?? "?"}: ${r.error}`);
      else if (!RECOVERY_ONLY_SETTINGS.includes(removed)) pending.add(removed);
    }
    if (invalid.length > 0) throw new CommandFailedError("postgresql.conf", invalid.join("; "));
    return { pendingRestart: [...pending].sort() };
  }

  /** The protected user and its database (password set on every call). */
  ensureRoleAndDatabase(spec: RoleAndDatabase): Promise<void> {
    return ensureRoleAndDatabase(this.superuserConfig(), spec);
  }

  /** The log file the collector writes now (null before the first start). */
  async currentLogFile(): Promise<string | null> {
    const raw = await fs.readFile(path.join(this.dataDir, "current_logfiles"), "utf8").catch(() => null);
    const file = raw?.match(/^stderr (.+)$/m)?.[1];
    return file ? path.resolve(this.dataDir, file) : null;
  }

  /** Stops the server and removes every file; refuses to delete under a live server. */
  async destroy(): Promise<void> {
    await this.stop("immediate");
    if (await this.postmasterAlive()) {
      throw new EngineError(`instance ${this.opts.id} is still running; its files were kept`);
    }
    await fs.rm(this.baseDir, { recursive: true, force: true });
  }

  /** Whether anything of this instance is on disk (for orphan sweeps). */
  exists(): Promise<boolean> {
    return pathExists(this.baseDir);
  }
}
