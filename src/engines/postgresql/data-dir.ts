// Creating data directories: by initdb, or by copying a pre-initialised template and
// giving the copy its own identity (several times faster than initdb on this machine).
import fs from "node:fs/promises";
import path from "node:path";
import { ensureDir, postgresUser, runCommand, runPgBinary } from "./command.ts";
import { PG_BIN_DIR, PG_OS_USER } from "./local-cluster.ts";
import { withNewIdentity } from "./pg-control.ts";
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

  /** The template's pg_control, read once (the template never changes once built). */
  private controlFile: Promise<Buffer> | null = null;

  /**
   * Copies the template to `target` (absent) with a fresh system identifier; returns it.
   * One process does the copy, the new pg_control and pg_resetwal: each process an agent
   * starts blocks its event loop until the child has exec'd, which takes long on a busy
   * host (spawns were half of a full host's agent time).
   */
  async cloneInto(target: string): Promise<bigint> {
    await this.ensure();
    const owner = postgresUser();
    await ensureDir(target, 0o700, owner);
    this.controlFile ??= fs.readFile(path.join(this.dataDir, "global", "pg_control"));
    const { id, control } = withNewIdentity(await this.controlFile);
    const newControl = path.join(target, NEW_CONTROL);
    await fs.writeFile(newControl, control, { mode: 0o600 });
    if (owner) await fs.chown(newControl, owner.uid, owner.gid);
    // pg_wal is left out (a third of the bytes): pg_resetwal writes fresh WAL anyway; and
    // postmaster.opts, from the template's one short run, means nothing in a new instance.
    const entries = (await fs.readdir(this.dataDir)).filter((e) => e !== "pg_wal" && e !== "postmaster.opts");
    const sources = entries.map((e) => path.join(this.dataDir, e));
    const resetwal = path.join(PG_BIN_DIR, "pg_resetwal");
    await runCommand("/bin/sh", ["-c", CLONE_SCRIPT, "cellar-clone", resetwal, target, ...sources], {
      as: owner,
    });
    return id;
  }
}

/** The new pg_control waits in the clone's top directory until the copy is done. */
const NEW_CONTROL = "pg_control.new";

// $1 = pg_resetwal, $2 = the clone, then the template's entries. As the postgres user:
// cp -a keeps modes and the owner; reflink where the filesystem allows. No -f for
// pg_resetwal: it refuses a data dir that was not shut down cleanly, which is our guard.
const CLONE_SCRIPT = [
  "set -e",
  'resetwal="$1"; target="$2"; shift 2',
  'cp -a --reflink=auto "$@" "$target"',
  'mkdir -m 700 "$target/pg_wal" "$target/pg_wal/archive_status"',
  `mv "$target/${NEW_CONTROL}" "$target/global/pg_control"`,
  'exec "$resetwal" -D "$target"',
].join("\n");
