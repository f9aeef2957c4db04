// Creating data directories: by initdb, or by copying a pre-initialised template and
// giving the copy its own identity (several times faster than initdb on this machine).
import fs from "node:fs/promises";
import path from "node:path";
import { ensureDir, postgresUser, runCommand, runPgBinary } from "./command.ts";
import { PG_OS_USER } from "./local-cluster.ts";
import { giveNewIdentity } from "./pg-control.ts";
import { findProcessesUsing, signalProcess, waitFor } from "./process-watch.ts";
import { SPARE_DATABASE } from "./roles.ts";
import { queryOnce } from "./superuser.ts";

export const pathExists = (p: string): Promise<boolean> =>
  fs.access(p).then(
    () => true,
    () => false,
  );

/** A data dir is complete once pg_control exists and it was moved to its final name. */
export const isDataDir = (dir: string): Promise<boolean> =>
  pathExists(path.join(dir, "global", "pg_control"));

/** initdb into `dir` (which must not exist): UTF8, C.UTF-8, SCRAM, no fsync (-N). */
export async function runInitdb(dir: string): Promise<void> {
  await runPgBinary("initdb", [
    "-D",
    dir,
    "-U",
    PG_OS_USER,
    "--auth-local=trust",
    "--auth-host=scram-sha-256",
    "-E",
    "UTF8",
    "--locale=C.UTF-8",
    "-N",
  ]);
}

/**
 * Builds a data dir at `target` atomically: `build` fills `<target>.init`, which is then
 * renamed. A crash mid-way leaves only `.init`, which the next call wipes and redoes.
 */
export async function buildDataDirAtomically(target: string, build: (tmp: string) => Promise<void>) {
  const tmp = `${target}.init`;
  if (await pathExists(tmp)) await stopLeftoverBuilders(tmp);
  await fs.rm(tmp, { recursive: true, force: true });
  await ensureDir(path.dirname(target), 0o700, postgresUser());
  await build(tmp);
  await fs.rename(tmp, target);
}

/**
 * An agent killed mid-build leaves its initdb (or copy) running on `tmp`: it would keep
 * writing into the rebuilt directory, or remove it when it fails. Kill it first.
 */
async function stopLeftoverBuilders(tmp: string): Promise<void> {
  const left = await findProcessesUsing(tmp);
  if (left.length === 0) return;
  for (const pid of left) signalProcess(pid, "SIGKILL");
  await waitFor(
    `leftover processes ${left.join(", ")} on ${tmp} to exit`,
    async () => (await findProcessesUsing(tmp)).length === 0,
    10_000,
  );
}

/**
 * One initdb'd data dir per host and PostgreSQL version, copied for each new instance.
 * It also holds an empty spare database: renaming it is instant, while CREATE DATABASE
 * copies template1 through the WAL (the slowest step of provisioning otherwise).
 * One agent process owns a template directory (concurrent calls in it are serialised).
 */
export class PgTemplate {
  readonly dataDir: string;
  private ready: Promise<void> | null = null;

  constructor(readonly dir: string) {
    this.dir = path.resolve(dir);
    this.dataDir = path.join(this.dir, "pgdata");
  }

  ensure(): Promise<void> {
    this.ready ??= (async () => {
      if (await isDataDir(this.dataDir)) return;
      await buildDataDirAtomically(this.dataDir, async (tmp) => {
        await runInitdb(tmp);
        await this.addSpareDatabase(tmp);
      });
    })().finally(() => {
      this.ready = null;
    });
    return this.ready;
  }

  /** Starts the fresh cluster on a private socket only (no TCP), adds the spare, stops cleanly. */
  private async addSpareDatabase(dataDir: string): Promise<void> {
    const socketDir = path.join(this.dir, "run");
    await ensureDir(socketDir, 0o700, postgresUser());
    const options = `-c listen_addresses='' -c unix_socket_directories='${socketDir}' -c port=5432`;
    const log = path.join(this.dir, "template-build.log");
    await runPgBinary("pg_ctl", ["start", "-w", "-s", "-D", dataDir, "-l", log, "-o", options]);
    try {
      await queryOnce(
        { host: socketDir, port: 5432, user: PG_OS_USER, database: "postgres" },
        `CREATE DATABASE ${SPARE_DATABASE}`,
      );
    } finally {
      // A clean shutdown: clones go through pg_resetwal, which refuses anything else.
      await runPgBinary("pg_ctl", ["stop", "-w", "-s", "-m", "fast", "-D", dataDir]);
    }
  }

  /** Copies the template to `target` (absent) with a fresh system identifier; returns it. */
  async cloneInto(target: string): Promise<bigint> {
    await this.ensure();
    const owner = postgresUser();
    await ensureDir(target, 0o700, owner);
    // pg_wal is left out (a third of the bytes): pg_resetwal below writes fresh WAL anyway.
    const entries = (await fs.readdir(this.dataDir)).filter((e) => e !== "pg_wal");
    // cp -a keeps the postgres owner and modes; reflink where the filesystem allows.
    const sources = entries.map((e) => path.join(this.dataDir, e));
    await runCommand("cp", ["-a", "--reflink=auto", ...sources, target]);
    await ensureDir(path.join(target, "pg_wal"), 0o700, owner);
    await ensureDir(path.join(target, "pg_wal", "archive_status"), 0o700, owner);
    // Files of the template's one short run that mean nothing in a new instance.
    await fs.rm(path.join(target, "postmaster.opts"), { force: true });
    return giveNewIdentity(target);
  }
}
