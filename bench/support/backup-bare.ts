// The bare side of the backup benchmark: plain pgBackRest and pg_ctl commands, as an operator
// would type them, on the same data as Cellar's database. Restores read Cellar's repository
// (read-only: archiving is off on every restored copy); backups go to a repository of their
// own with the same options Cellar uses (lz4, one process, aes-256-cbc, start-fast).
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import pg from "pg";
import {
  ensureDir,
  postgresUser,
  runCommand,
  runPgBinary,
  writeFileAtomic,
} from "../../src/engines/postgresql/command.ts";
import { pgTimestamp } from "../../src/engines/postgresql/backup/pgbackrest.ts";
import { waitUntil } from "./stats.ts";

const HOUR = 3_600_000;

/** Runs pgbackrest as the postgres OS user; stdout. */
export async function pgbackrest(args: string[]): Promise<string> {
  const { stdout } = await runCommand("pgbackrest", args, { as: postgresUser(), timeoutMs: 2 * HOUR });
  return stdout;
}

/** A bare PostgreSQL restored from a stanza: its data dir, socket and port. */
export class BareServer {
  readonly pgdata: string;
  readonly socketDir: string;

  constructor(
    readonly dir: string,
    readonly port: number,
  ) {
    this.pgdata = path.join(dir, "pgdata");
    this.socketDir = path.join(dir, "run");
  }

  client(database = "postgres"): pg.ClientConfig {
    return { host: this.socketDir, port: this.port, user: "postgres", database };
  }

  async query<R extends pg.QueryResultRow>(sql: string, database = "postgres"): Promise<R[]> {
    const c = new pg.Client({ ...this.client(database), query_timeout: HOUR });
    c.on("error", () => undefined);
    await c.connect();
    try {
      return (await c.query<R>(sql)).rows;
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  /**
   * pgbackrest restore of `stanza` (its config names Cellar's repository) to `target`
   * (null: the archive's end), then pg_ctl start and wait until it promoted.
   */
  async restoreAndPromote(
    configFile: string,
    stanza: string,
    target: Date | null,
  ): Promise<{ restoreMs: number; startMs: number; promoteMs: number }> {
    const t0 = performance.now();
    const owner = postgresUser();
    await fs.rm(this.dir, { recursive: true, force: true });
    await ensureDir(this.dir, 0o755, owner);
    await ensureDir(this.pgdata, 0o700, owner);
    await ensureDir(this.socketDir, 0o700, owner);
    const restoreCommand = `pgbackrest --config=${configFile} --stanza=${stanza} --pg1-path=${this.pgdata} archive-get %f "%p"`;
    await pgbackrest([
      `--config=${configFile}`,
      `--stanza=${stanza}`,
      `--pg1-path=${this.pgdata}`,
      ...(target
        ? ["--type=time", `--target=${pgTimestamp(target)}`, "--target-action=promote"]
        : ["--type=default"]),
      "--target-timeline=current",
      "--archive-mode=off",
      `--recovery-option=restore_command=${restoreCommand}`,
      "restore",
    ]);
    const t1 = performance.now();
    await this.start();
    const t2 = performance.now();
    let stopped = false;
    await waitUntil(
      "the bare restored server to promote",
      2 * HOUR,
      async () => {
        // A server that ran out of WAL before the target shuts down (and removes its pid file).
        stopped = !(await fs.access(path.join(this.pgdata, "postmaster.pid")).then(
          () => true,
          () => false,
        ));
        return (
          stopped || (await this.query<{ r: boolean }>("SELECT pg_is_in_recovery() AS r"))[0]?.r === false
        );
      },
      100,
    );
    if (stopped) {
      const log = await fs.readFile(path.join(this.dir, "log"), "utf8").catch(() => "");
      throw new Error(`the bare restored server stopped: ${log.trim().split("\n").slice(-3).join(" | ")}`);
    }
    return { restoreMs: t1 - t0, startMs: t2 - t1, promoteMs: performance.now() - t2 };
  }

  /** Starts it on its own socket only (no TCP), its logs in its dir. */
  async start(extra: string[] = []): Promise<void> {
    const opts = [
      "-c listen_addresses=''",
      `-c port=${this.port}`,
      `-c unix_socket_directories=${this.socketDir}`,
      "-c ssl=off",
      "-c logging_collector=off",
      `-c hba_file=${path.join(this.dir, "hba.conf")}`,
      ...extra,
    ].join(" ");
    await writeFileAtomic(
      path.join(this.dir, "hba.conf"),
      "local all postgres trust\n",
      0o600,
      postgresUser(),
    );
    await runPgBinary("pg_ctl", [
      "start",
      "-w",
      "-t",
      "3600",
      "-D",
      this.pgdata,
      "-l",
      path.join(this.dir, "log"),
      "-o",
      opts,
    ]);
  }

  async stop(): Promise<void> {
    await runPgBinary("pg_ctl", ["stop", "-m", "immediate", "-D", this.pgdata]).catch(() => undefined);
  }

  async destroy(): Promise<void> {
    await this.stop();
    await fs.rm(this.dir, { recursive: true, force: true });
  }
}

/**
 * A repository of the bare server's own, configured as Cellar configures a node's (same
 * compression, cipher, process count, fast start). Archiving into it is turned on, so the
 * full backup below is complete and restorable, as Cellar's are.
 */
export class BareRepo {
  readonly configFile: string;
  readonly stanza = "bare";

  constructor(
    readonly dir: string,
    private readonly server: BareServer,
  ) {
    this.configFile = path.join(dir, "pgbackrest.conf");
  }

  async ensure(): Promise<void> {
    const owner = postgresUser();
    await ensureDir(this.dir, 0o750, owner);
    for (const d of ["repo", "lock", "log"]) await ensureDir(path.join(this.dir, d), 0o750, owner);
    const conf = [
      "[global]",
      `repo1-path=${path.join(this.dir, "repo")}`,
      "repo1-cipher-type=aes-256-cbc",
      `repo1-cipher-pass=${randomBytes(32).toString("hex")}`,
      "compress-type=lz4",
      "start-fast=y",
      "process-max=1",
      `lock-path=${path.join(this.dir, "lock")}`,
      `log-path=${path.join(this.dir, "log")}`,
      "log-level-console=warn",
      "",
      `[${this.stanza}]`,
      `pg1-path=${this.server.pgdata}`,
      `pg1-port=${this.server.port}`,
      `pg1-socket-path=${this.server.socketDir}`,
      "",
    ].join("\n");
    await writeFileAtomic(this.configFile, conf, 0o600, owner);
    const archive = `pgbackrest --config=${this.configFile} --stanza=${this.stanza} archive-push %p`;
    await this.server.query(`ALTER SYSTEM SET archive_mode = 'on'`);
    await this.server.query(`ALTER SYSTEM SET archive_command = '${archive}'`);
    await this.server.stop();
    await this.server.start();
    await pgbackrest([`--config=${this.configFile}`, `--stanza=${this.stanza}`, "stanza-create"]);
  }

  async backupFull(): Promise<void> {
    await pgbackrest([`--config=${this.configFile}`, `--stanza=${this.stanza}`, "--type=full", "backup"]);
  }
}
