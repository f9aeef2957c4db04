// Running external programs, as a daemon's OS user when we are root.
// Spawning with uid/gid is ~35 ms cheaper per call than `runuser` (no PAM session),
// which adds up over the several pg_ctl/initdb calls of a provisioning.
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { CommandFailedError } from "./errors.ts";
import { isRoot, PG_BIN_DIR, PG_OS_USER } from "./local-cluster.ts";

export interface OsUser {
  name: string;
  uid: number;
  gid: number;
}

const users = new Map<string, OsUser>();

/** Looks a user up in /etc/passwd (no NSS on these hosts beyond files). */
export function lookupOsUser(name: string): OsUser {
  const cached = users.get(name);
  if (cached) return cached;
  for (const line of readFileSync("/etc/passwd", "utf8").split("\n")) {
    const [user, , uid, gid] = line.split(":");
    if (user === name && uid !== undefined && gid !== undefined) {
      const found = { name, uid: Number(uid), gid: Number(gid) };
      users.set(name, found);
      return found;
    }
  }
  throw new CommandFailedError("user lookup", `OS user "${name}" does not exist; install its package first`);
}

/** The user a daemon runs as: `name` when we are root, else ourselves (undefined). */
export function daemonUser(name: string): OsUser | undefined {
  return isRoot() ? lookupOsUser(name) : undefined;
}

export const postgresUser = (): OsUser | undefined => daemonUser(PG_OS_USER);

export interface RunOptions {
  as?: OsUser | undefined;
  timeoutMs?: number;
}

export async function runCommand(
  cmd: string,
  args: string[],
  opts: RunOptions = {},
): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      {
        // cwd "/" because the caller's cwd may be unreadable by the daemon user, and PostgreSQL tools fail on that.
        cwd: "/",
        maxBuffer: 16 * 1024 * 1024,
        timeout: opts.timeoutMs ?? 120_000,
        ...(opts.as ? { uid: opts.as.uid, gid: opts.as.gid } : {}),
      },
      (err, stdout, stderr) => {
        if (err) {
          const detail = (stderr || stdout || err.message).trim();
          reject(new CommandFailedError(path.basename(cmd), detail));
        } else resolve({ stdout, stderr });
      },
    );
  });
}

/** Runs a PostgreSQL server binary (initdb, pg_ctl, pg_resetwal...) as the postgres OS user. */
export async function runPgBinary(bin: string, args: string[], timeoutMs?: number): Promise<string> {
  const opts: RunOptions = { as: postgresUser() };
  if (timeoutMs !== undefined) opts.timeoutMs = timeoutMs;
  const { stdout } = await runCommand(path.join(PG_BIN_DIR, bin), args, opts);
  return stdout;
}

/** Creates a directory (mode applied even if it existed) owned by `owner` when given. */
export async function ensureDir(dir: string, mode: number, owner: OsUser | undefined): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode });
  await fs.chmod(dir, mode);
  if (owner) await fs.chown(dir, owner.uid, owner.gid);
}

/** Writes a file atomically (temp + rename) with a mode and owner; returns false when unchanged. */
export async function writeFileAtomic(
  file: string,
  content: string,
  mode: number,
  owner: OsUser | undefined,
): Promise<boolean> {
  const current = await fs.readFile(file, "utf8").catch(() => null);
  if (current === content) return false;
  const tmp = `${file}.tmp-${process.pid}`;
  await fs.writeFile(tmp, content, { mode });
  await fs.chmod(tmp, mode);
  if (owner) await fs.chown(tmp, owner.uid, owner.gid);
  await fs.rename(tmp, file);
  return true;
}
