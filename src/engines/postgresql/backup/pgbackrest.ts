// The pgBackRest commands Cellar runs for one node, as the postgres OS user, each with
// the node's own config file and stanza. Every command can be aborted (agent stop, node
// removal); an aborted backup is resumed or cleaned up by the next one.
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { ensureDir, postgresUser } from "../command.ts";
import { CommandFailedError } from "../errors.ts";
import { lineageOf, parseStanzaInfo, parseTimelineHistory, type StanzaInfo } from "./backup-info.ts";
import { pgBackRestArgs, restoreCommand } from "./pgbackrest-config.ts";
import type { S3RepoSpec } from "./types.ts";

/** pgBackRest's error code for a lock held by another pgBackRest process. */
const LOCK_ACQUIRE_ERROR = 50;

export class PgBackRestError extends CommandFailedError {
  override name = "PgBackRestError";
  constructor(
    command: string,
    detail: string,
    /** pgBackRest's numeric error code ("ERROR: [050]: ..."), when it printed one. */
    readonly code: number | null,
  ) {
    super(`pgbackrest ${command}`, detail);
  }

  /** Another pgBackRest command of this stanza runs (e.g. one left by a killed agent). */
  get isLockConflict(): boolean {
    return this.code === LOCK_ACQUIRE_ERROR;
  }
}

/**
 * The database's repository directory, owned by the postgres OS user; the directories above
 * it are made traversable (0755), as pgBackRest runs as that user. In S3 there is nothing to
 * make: the bucket is the operator's, and pgBackRest writes objects under any path.
 */
export async function ensureRepository(repoPath: string, s3?: S3RepoSpec): Promise<void> {
  if (s3) return;
  await fs.mkdir(path.dirname(repoPath), { recursive: true, mode: 0o755 });
  await ensureDir(repoPath, 0o750, postgresUser());
}

export interface RestoreRequest {
  /** An empty directory to restore into. */
  into: string;
  set: string;
  /** Where recovery stops; null: at the end of the archived WAL. */
  targetTime: Date | null;
  /**
   * The timeline recovery follows (its history names the ancestors it passes through, e.g.
   * an HA cluster's failovers); absent: the backup's own.
   */
  timeline?: number;
}

const MINUTE = 60_000;

/** setpriv options that run the rest of its command line as `owner`. */
export function dropTo(owner: { uid: number; gid: number }): string[] {
  return [`--reuid=${owner.uid}`, `--regid=${owner.gid}`, "--clear-groups"];
}

/** A time as PostgreSQL reads recovery_target_time: "2026-01-31 12:00:00.123+00". */
export function pgTimestamp(t: Date): string {
  return t.toISOString().replace("T", " ").replace("Z", "+00");
}

/** Puts a command's argv inside a sandbox (runtime/spawn.ts wrapCommand); it runs as root. */
export type WrapArgv = (argv: string[]) => string[];

export class PgBackRest {
  constructor(
    readonly configFile: string,
    readonly stanza: string,
    private readonly bin = "pgbackrest",
    /** Runs every command inside this wrapper (privileges dropped inside it). */
    private readonly wrap?: WrapArgv,
  ) {}

  /** Runs one command; stdout on success. */
  run(
    command: string,
    extra: string[],
    opts: { timeoutMs: number; signal?: AbortSignal; params?: string[] },
  ): Promise<string> {
    const owner = postgresUser();
    const args = [...pgBackRestArgs(this.configFile, this.stanza), ...extra, command, ...(opts.params ?? [])];
    // Dies with the agent: a backup left running by a killed agent would hold the
    // stanza's lock and outlive everything else of its host.
    const setpriv = ["--pdeathsig", "TERM", "--", this.bin, ...args];
    // A wrapper joins its sandbox as root: the user is dropped by setpriv after it (which
    // sets the death signal after the change, so the change does not clear it).
    const [file, ...argv] = this.wrap
      ? this.wrap(["setpriv", ...(owner ? dropTo(owner) : []), ...setpriv])
      : ["setpriv", ...setpriv];
    return new Promise((resolve, reject) => {
      execFile(
        file!,
        argv,
        {
          cwd: "/",
          maxBuffer: 16 * 1024 * 1024,
          timeout: opts.timeoutMs,
          ...(opts.signal ? { signal: opts.signal } : {}),
          ...(owner && !this.wrap ? { uid: owner.uid, gid: owner.gid } : {}),
        },
        (err, stdout, stderr) => {
          if (!err) return resolve(stdout);
          const detail = (stderr || stdout || err.message).trim();
          const code = /ERROR: \[(\d+)\]/.exec(detail)?.[1];
          reject(new PgBackRestError(command, detail, code ? Number(code) : null));
        },
      );
    });
  }

  /** Creates the stanza, or checks that the existing one belongs to this cluster. Idempotent. */
  async stanzaCreate(signal?: AbortSignal): Promise<void> {
    await this.run("stanza-create", [], { timeoutMs: 5 * MINUTE, ...(signal ? { signal } : {}) });
  }

  /**
   * Removes the stanza's archive and backups from the repository, with no server: `pg1Path`
   * is any empty directory (pgBackRest requires one). Stops the stanza first, as it asks.
   */
  async stanzaDelete(pg1Path: string, signal?: AbortSignal): Promise<void> {
    const opts = { timeoutMs: 30 * MINUTE, ...(signal ? { signal } : {}) };
    await this.run("stop", [], opts);
    await this.run("stanza-delete", [`--pg1-path=${pg1Path}`, "--force"], opts);
  }

  /** Switches WAL and waits until the segment is in the repository: archiving works end to end. */
  async check(signal?: AbortSignal): Promise<void> {
    await this.run("check", [], { timeoutMs: 5 * MINUTE, ...(signal ? { signal } : {}) });
  }

  /** A full backup; expire runs after it by itself (retention). */
  async backupFull(annotations: Record<string, string>, signal?: AbortSignal): Promise<void> {
    const extra = ["--type=full", ...Object.entries(annotations).map(([k, v]) => `--annotation=${k}=${v}`)];
    await this.run("backup", extra, { timeoutMs: 24 * 60 * MINUTE, ...(signal ? { signal } : {}) });
  }

  async info(signal?: AbortSignal): Promise<StanzaInfo> {
    const out = await this.run("info", ["--output=json"], {
      timeoutMs: 2 * MINUTE,
      ...(signal ? { signal } : {}),
    });
    return parseStanzaInfo(out, this.stanza);
  }

  /**
   * The history file of `timeline` as archived in the stanza (null: not archived, or
   * timeline 1, which has none). Read from the repository, so no server is needed.
   */
  async timelineHistory(timeline: number, signal?: AbortSignal): Promise<string | null> {
    if (timeline <= 1) return null;
    const opts = { timeoutMs: 2 * MINUTE, ...(signal ? { signal } : {}) };
    const listing = await this.run("repo-ls", ["--output=json"], {
      ...opts,
      params: [`archive/${this.stanza}`],
    });
    // One directory per database version and stanza upgrade ("15-1"): the newest holds it.
    const ids = Object.keys(JSON.parse(listing) as Record<string, unknown>)
      .filter((n) => /^\d+-\d+$/.test(n))
      .sort((a, b) => Number(b.split("-")[1]) - Number(a.split("-")[1]));
    const name = `${timeline.toString(16).toUpperCase().padStart(8, "0")}.history`;
    for (const id of ids) {
      const file = `archive/${this.stanza}/${id}/${name}`;
      const text = await this.run("repo-get", ["--ignore-missing"], { ...opts, params: [file] }).catch(
        (err: unknown) => {
          // --ignore-missing: a missing file exits with 1 and no error message.
          if (err instanceof PgBackRestError && err.code === null) return null;
          throw err;
        },
      );
      if (text) return text;
    }
    return null;
  }

  /**
   * The timelines whose backups lead to `timeline` (backup-info.ts lineageOf); null while its
   * history file is not archived yet (a promotion archives it first, within seconds).
   */
  async lineage(timeline: number, signal?: AbortSignal): Promise<number[] | null> {
    if (timeline <= 1) return [timeline];
    const text = await this.timelineHistory(timeline, signal);
    return text === null ? null : lineageOf(timeline, parseTimelineHistory(text));
  }

  /** Pushes one WAL file into the archive; one already there with the same checksum is fine. */
  async archivePush(file: string, signal?: AbortSignal): Promise<void> {
    await this.run("archive-push", [], {
      timeoutMs: 5 * MINUTE,
      params: [file],
      ...(signal ? { signal } : {}),
    });
  }

  /** Sets annotations of a backup set (an empty value removes the key). */
  async annotate(set: string, annotations: Record<string, string>, signal?: AbortSignal): Promise<void> {
    const extra = [`--set=${set}`, ...Object.entries(annotations).map(([k, v]) => `--annotation=${k}=${v}`)];
    await this.run("annotate", extra, { timeoutMs: 2 * MINUTE, ...(signal ? { signal } : {}) });
  }

  /**
   * Restores `set` into an empty directory as a scratch copy: recovery stops as soon as the
   * backup is consistent and pauses there, read-only, archiving off (it must never push WAL
   * or a timeline history into the stanza it came from).
   */
  async restoreScratch(into: string, set: string, signal?: AbortSignal): Promise<void> {
    await this.run(
      "restore",
      [
        `--pg1-path=${into}`,
        `--set=${set}`,
        "--type=immediate",
        "--target-action=pause",
        "--archive-mode=off",
        "--recovery-option=hot_standby=on",
        `--recovery-option=restore_command=${restoreCommand(this.configFile, this.stanza, into)}`,
      ],
      { timeoutMs: 24 * 60 * MINUTE, ...(signal ? { signal } : {}) },
    );
  }

  /**
   * Restores `set` into an empty directory, to stop at `targetTime` (or the archive's end)
   * and promote. Hot standby
   * is off during the replay, so the server accepts connections only once it is a primary.
   */
  async restore(r: RestoreRequest): Promise<void> {
    await this.run(
      "restore",
      [
        `--pg1-path=${r.into}`,
        `--set=${r.set}`,
        ...(r.targetTime
          ? ["--type=time", `--target=${pgTimestamp(r.targetTime)}`, "--target-action=promote"]
          : ["--type=default"]),
        `--target-timeline=${r.timeline ?? "current"}`,
        "--recovery-option=hot_standby=off",
        `--recovery-option=restore_command=${restoreCommand(this.configFile, this.stanza)}`,
      ],
      { timeoutMs: 24 * 60 * MINUTE },
    );
  }
}
