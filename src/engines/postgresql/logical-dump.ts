// A logical backup of one database of a node: pg_dump in custom format through the node's
// unix socket (superuser), checked with pg_restore --list, packed as <name>.tar.gz holding
// <name>.pgsql (the reference's format: `tar -xzf`, then `pg_restore`). The archive appears
// under its final name only once complete and synced: a killed dump leaves `.partial` and
// `.work` files, never a file that looks whole.
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { ensureDir, postgresUser } from "./command.ts";
import { CommandFailedError } from "./errors.ts";
import { PG_BIN_DIR, PG_OS_USER } from "./local-cluster.ts";

/** The files of one archive: the archive, the tarball being written, the dump's directory. */
export function dumpFiles(archive: string): {
  archive: string;
  partial: string;
  work: string;
  all: string[];
} {
  const partial = `${archive}.partial`;
  const work = `${archive}.work`;
  return { archive, partial, work, all: [archive, partial, work] };
}

export interface DumpRequest {
  /** Final path, ending in .tar.gz. */
  archive: string;
  /** The name inside: <name>.pgsql. */
  name: string;
  socketDir: string;
  port: number;
  dbname: string;
  signal?: AbortSignal;
  /** pg_dump gives up when a table lock is not granted this soon (a long transaction holds it). */
  lockWaitTimeoutS?: number;
}

/** Bytes written so far (the dump, then the tarball), for progress reports. */
export async function dumpProgress(archive: string): Promise<number> {
  const f = dumpFiles(archive);
  for (const p of [f.archive, f.partial]) {
    const st = await fs.stat(p).catch(() => null);
    if (st) return st.size;
  }
  const names = await fs.readdir(f.work).catch(() => [] as string[]);
  let total = 0;
  for (const n of names) total += (await fs.stat(path.join(f.work, n)).catch(() => null))?.size ?? 0;
  return total;
}

export async function dumpToArchive(req: DumpRequest): Promise<{ sizeBytes: number }> {
  try {
    return await dumpOnce(req);
  } catch (err) {
    // A failed try leaves nothing behind (a killed one does: the next try starts clean).
    const f = dumpFiles(req.archive);
    for (const p of [f.partial, f.work])
      await fs.rm(p, { recursive: true, force: true }).catch(() => undefined);
    throw err;
  }
}

async function dumpOnce(req: DumpRequest): Promise<{ sizeBytes: number }> {
  const f = dumpFiles(req.archive);
  if (!req.archive.endsWith(".tar.gz") || !/^[A-Za-z0-9_.-]+$/.test(req.name)) {
    throw new CommandFailedError("pg_dump", `refusing archive ${req.archive} named ${req.name}`);
  }
  const owner = postgresUser();
  const dir = path.dirname(req.archive);
  await fs.mkdir(path.dirname(dir), { recursive: true, mode: 0o755 });
  await ensureDir(dir, 0o750, owner);
  // A previous try of this backup (a killed agent) may have left its pieces.
  await fs.rm(f.partial, { force: true });
  await fs.rm(f.work, { recursive: true, force: true });
  await ensureDir(f.work, 0o700, owner);
  const dumpFile = path.join(f.work, `${req.name}.pgsql`);
  const signal = req.signal ?? new AbortController().signal;
  // -Z0: the tarball's gzip compresses once (a second compression costs CPU and saves nothing).
  await run(
    path.join(PG_BIN_DIR, "pg_dump"),
    [
      "-Fc",
      "-Z0",
      `--lock-wait-timeout=${req.lockWaitTimeoutS ?? 60}s`,
      "-h",
      req.socketDir,
      "-p",
      String(req.port),
      "-U",
      PG_OS_USER,
      "-d",
      req.dbname,
      "-f",
      dumpFile,
    ],
    signal,
  );
  // A truncated or garbled dump fails here, not at the user's restore.
  await run(path.join(PG_BIN_DIR, "pg_restore"), ["--list", dumpFile], signal, 64 * 1024 * 1024);
  await run("tar", ["-czf", f.partial, "-C", f.work, `${req.name}.pgsql`], signal);
  const handle = await fs.open(f.partial, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(f.partial, req.archive);
  await fs.rm(f.work, { recursive: true, force: true });
  return { sizeBytes: (await fs.stat(req.archive)).size };
}

/**
 * Runs a tool as the postgres OS user, niced, dying with the agent (setpriv --pdeathsig):
 * a dump left running by a killed agent would race the next try on the same files.
 */
function run(cmd: string, args: string[], signal: AbortSignal, maxStdout = 1024 * 1024): Promise<void> {
  const owner = postgresUser();
  return new Promise((resolve, reject) => {
    execFile(
      "setpriv",
      ["--pdeathsig", "KILL", "--", "nice", "-n", "10", cmd, ...args],
      {
        cwd: "/",
        signal,
        maxBuffer: maxStdout,
        ...(owner ? { uid: owner.uid, gid: owner.gid } : {}),
      },
      (err, _stdout, stderr) => {
        if (!err) return resolve();
        const detail = signal.aborted ? "aborted" : (stderr || err.message).trim().slice(0, 1500);
        reject(new CommandFailedError(path.basename(cmd), detail));
      },
    );
  });
}
