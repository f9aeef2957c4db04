// Verified backups on a host: every full backup of a node's current timeline is restored
// into a scratch instance and checked (engines/postgresql/backup/verify.ts), one at a time
// per host, inside a small sandbox of its own (never the node's, whose memory limit a
// restore would eat into). The outcome is written into the backup's annotations, so the
// repository says which backups are verified; a killed agent finds the backup still pending
// and verifies it again, after removing what the killed one left.
//
// A node whose data is encrypted at rest gets its scratch copy encrypted too, under the same
// key: the restore goes into a throwaway sparse loop volume (ext4 -O encrypt) mounted at
// <inst>/backup/verify, whose directory enc/ carries the policy; the volume, its loop device
// and its image go when the verification ends (and at the next start after a crash). Never on
// the host's filesystem, even one that can encrypt: the node's key there would be the same
// entry of the same keyring, and removing it for the copy would lock the node. When no such
// volume can be made, the backup is failed with the reason and nothing is restored: no
// plaintext copy of an encrypted node is ever written.
import fs from "node:fs/promises";
import path from "node:path";
import {
  backupToVerify,
  type BackupSet,
  type Lineage,
  VERIFY_ANNOTATIONS,
} from "../engines/postgresql/backup/backup-info.ts";
import { PgBackRest, type WrapArgv } from "../engines/postgresql/backup/pgbackrest.ts";
import {
  oneLine,
  removeScratch,
  ScratchVerification,
  type VerifyOutcome,
} from "../engines/postgresql/backup/verify.ts";
import { ensureDir, postgresUser } from "../engines/postgresql/command.ts";
import { describeEncryption, isUnlocked, lockDir, unlockDir } from "../runtime/fscrypt.ts";
import { assertSandboxName } from "../runtime/limits.ts";
import { wrapCommand } from "../runtime/spawn.ts";
import type { IsolationRuntime, SandboxLimits } from "../runtime/types.ts";
import { ensureVolume, imagePathOf, removeVolume } from "../runtime/volume.ts";
import type { CopyKey } from "./node-encryption.ts";

/** The verification sandbox: enough for a restore and a 32 MB-buffer server, little CPU. */
export const VERIFY_LIMITS: SandboxLimits = { memoryBytes: 512 * 1024 * 1024, cpuQuota: 0.5, pidsMax: 64 };
/** A verification that could not run (aborted, annotation refused) is tried again this late. */
const RETRY_MS = 5 * 60_000;
/** An encrypted scratch volume: the backup's size plus a quarter, plus room for WAL and logs. */
const VOLUME_SLACK_BYTES = 512 * 1024 ** 2;
/** On the scratch volume: the directory with the policy, and the work dir inside it. */
const ENCRYPTED = "enc";
const WORK = "work";

interface ScratchDirs {
  workDir: string;
  socketDir: string;
}

export interface VerificationScratch {
  runtime: IsolationRuntime;
  /** The host's short directory for sockets. */
  runDir: string;
  /** Whether the node's data is encrypted, and its key (absent: the node is plain). */
  copyKey?: (id: string) => Promise<CopyKey>;
}

export interface BackupVerificationsOptions {
  /** The instance's directory: the scratch data dir goes under <dir>/backup/verify. */
  dirOf(id: string): string;
  /** Sandbox and socket root; without it (tests) commands run unconfined, sockets in the dir. */
  scratch?: () => VerificationScratch;
  limits?: SandboxLimits;
  timeoutMs?: number;
  now?: () => Date;
}

export interface VerifyRequest {
  id: string;
  configFile: string;
  stanza: string;
  backups: BackupSet[];
  /** The timelines whose backups count (backup-info.ts lineageOf). */
  timeline: Lineage;
  /** The backup's annotations changed: the stanza's info should be read again. */
  onDone: (set: string, outcome: VerifyOutcome) => void;
}

export class BackupVerifications {
  private readonly jobs = new Map<string, { abort: AbortController; done: Promise<void> }>();
  private readonly retryAt = new Map<string, number>();
  /** Nodes whose leftovers of an earlier agent were removed. */
  private readonly swept = new Set<string>();
  /** One verification at a time on this host: each task waits for the one before. */
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly opts: BackupVerificationsOptions) {}

  static sandboxName(id: string): string {
    return assertSandboxName(`cellar-verify-${id.replace(/^inst-/, "")}`);
  }

  /** Whether a verification of this node runs or waits its turn. */
  busy(id: string): boolean {
    return this.jobs.has(id);
  }

  /**
   * Queues the verification of the node's next unverified full backup, if there is one; the
   * first call for a node after an agent start removes what a killed agent left.
   */
  consider(r: VerifyRequest): void {
    if (this.jobs.has(r.id) || Date.now() < (this.retryAt.get(r.id) ?? 0)) return;
    const set = backupToVerify(r.backups, r.timeline);
    if (!set && this.swept.has(r.id)) return;
    const abort = new AbortController();
    const task: Promise<VerifyOutcome | null> = this.queue.then(() =>
      set ? this.verify(r, set.label, abort.signal) : this.sweep(r.id).then(() => null),
    );
    this.queue = task.then(
      () => undefined,
      () => undefined,
    );
    const done = task.then(
      (outcome) => {
        if (set && outcome) r.onDone(set.label, outcome);
      },
      () => {
        this.retryAt.set(r.id, Date.now() + RETRY_MS);
      },
    );
    this.jobs.set(r.id, { abort, done: done.finally(() => this.jobs.delete(r.id)) });
  }

  private async verify(r: VerifyRequest, set: string, signal: AbortSignal): Promise<VerifyOutcome> {
    if (signal.aborted) throw new Error("aborted");
    await this.sweep(r.id);
    const env = this.opts.scratch?.();
    const atRest: CopyKey = (await env?.copyKey?.(r.id)) ?? { encrypted: false };
    const name = BackupVerifications.sandboxName(r.id);
    let wrap: WrapArgv | undefined;
    if (env) {
      await env.runtime.ensureSandbox(name, this.opts.limits ?? VERIFY_LIMITS);
      wrap = ([cmd, ...args]) => wrapCommand(env.runtime, name, cmd!, args);
    }
    try {
      const br = new PgBackRest(r.configFile, r.stanza, "pgbackrest", wrap);
      const dirs = await this.scratchDirs(r, set, atRest);
      const outcome =
        typeof dirs === "string"
          ? this.refused(dirs)
          : await new ScratchVerification({
              pgbackrest: br,
              ...dirs,
              ...(wrap ? { wrap } : {}),
              ...(this.opts.timeoutMs !== undefined ? { timeoutMs: this.opts.timeoutMs } : {}),
              ...(this.opts.now ? { now: this.opts.now } : {}),
            }).run(set, signal);
      await br.annotate(
        set,
        {
          [VERIFY_ANNOTATIONS.status]: outcome.status,
          [VERIFY_ANNOTATIONS.at]: outcome.at,
          [VERIFY_ANNOTATIONS.detail]: outcome.detail,
        },
        signal,
      );
      return outcome;
    } finally {
      await this.sweep(r.id);
    }
  }

  /**
   * Where the restore goes: the plain scratch dirs for a plain node; for an encrypted one, a
   * work dir on a new encrypted volume, or why none could be made (nothing is restored then).
   */
  private async scratchDirs(r: VerifyRequest, set: string, atRest: CopyKey): Promise<ScratchDirs | string> {
    const plain = this.dirs(r.id);
    if (!atRest.encrypted) return plain;
    if (atRest.key === null) return "this agent was not given the node's key";
    const bytes = (r.backups.find((b) => b.label === set)?.size ?? 0) * 1.25 + VOLUME_SLACK_BYTES;
    const encrypted = path.join(plain.workDir, ENCRYPTED);
    try {
      await ensureVolume(plain.workDir, bytes / 1024 ** 3, { loop: true, encrypt: true });
      await ensureDir(encrypted, 0o700, postgresUser());
      const found = await unlockDir(encrypted, atRest.key);
      if (!isUnlocked(found)) return describeEncryption(found);
    } catch (err) {
      return `no encrypted scratch volume: ${(err as Error).message}`;
    }
    return { ...plain, workDir: path.join(encrypted, WORK) };
  }

  /** An encrypted node's backup that could not be verified without a plaintext copy. */
  private refused(why: string): VerifyOutcome {
    const detail =
      `not verified: the node's data is encrypted at rest and its scratch copy could not be (${why}); ` +
      "nothing was restored, so no plaintext copy was written";
    return { status: "failed", detail: oneLine(detail), at: (this.opts.now?.() ?? new Date()).toISOString() };
  }

  private dirs(id: string): ScratchDirs {
    const workDir = path.join(this.opts.dirOf(id), "backup", "verify");
    const env = this.opts.scratch?.();
    const socketDir = env ? path.join(env.runDir, `v${id.replace(/^inst-/, "")}`) : path.join(workDir, "run");
    return { workDir, socketDir };
  }

  /**
   * Kills whatever runs in the node's verification sandbox; removes it, the scratch dirs, and
   * an encrypted scratch volume (its key out of the keyring, unmounted, detached, deleted).
   */
  private async sweep(id: string): Promise<void> {
    const env = this.opts.scratch?.();
    if (env) await env.runtime.removeSandbox(BackupVerifications.sandboxName(id));
    const dirs = this.dirs(id);
    if (await exists(imagePathOf(dirs.workDir))) {
      const encrypted = path.join(dirs.workDir, ENCRYPTED);
      // A server left by a killed agent holds the volume: stopped first (its pid file is there).
      await removeScratch({ ...dirs, workDir: path.join(encrypted, WORK) });
      // The unmount drops the volume's keyring anyway; an unmounted volume has no enc/ to lock.
      await lockDir(encrypted).catch(() => null);
      await removeVolume(dirs.workDir);
    }
    await removeScratch(dirs);
    this.swept.add(id);
  }

  private async cancel(id: string): Promise<void> {
    const job = this.jobs.get(id);
    if (!job) return;
    job.abort.abort();
    await job.done;
  }

  /** The node is gone: its verification stops and leaves nothing. */
  async forget(id: string): Promise<void> {
    await this.cancel(id);
    await this.sweep(id);
    this.swept.delete(id);
    this.retryAt.delete(id);
  }

  /** Agent shutdown: verifications stop and clean up (the next agent verifies again). */
  async stop(): Promise<void> {
    await Promise.all([...this.jobs.keys()].map((id) => this.forget(id)));
  }
}

const exists = (p: string) =>
  fs.access(p).then(
    () => true,
    () => false,
  );
