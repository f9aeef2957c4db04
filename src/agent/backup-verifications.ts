// Verified backups on a host: every full backup of a node's current timeline is restored
// into a scratch instance and checked (engines/postgresql/backup/verify.ts), one at a time
// per host, inside a small sandbox of its own (never the node's, whose memory limit a
// restore would eat into). The outcome is written into the backup's annotations, so the
// repository says which backups are verified; a killed agent finds the backup still pending
// and verifies it again, after removing what the killed one left.
import path from "node:path";
import {
  backupToVerify,
  type BackupSet,
  type Lineage,
  VERIFY_ANNOTATIONS,
} from "../engines/postgresql/backup/backup-info.ts";
import { PgBackRest, type WrapArgv } from "../engines/postgresql/backup/pgbackrest.ts";
import {
  removeScratch,
  ScratchVerification,
  type VerifyOutcome,
} from "../engines/postgresql/backup/verify.ts";
import { assertSandboxName } from "../runtime/limits.ts";
import { wrapCommand } from "../runtime/spawn.ts";
import type { IsolationRuntime, SandboxLimits } from "../runtime/types.ts";

/** The verification sandbox: enough for a restore and a 32 MB-buffer server, little CPU. */
export const VERIFY_LIMITS: SandboxLimits = { memoryBytes: 512 * 1024 * 1024, cpuQuota: 0.5, pidsMax: 64 };
/** A verification that could not run (aborted, annotation refused) is tried again this late. */
const RETRY_MS = 5 * 60_000;

export interface VerificationScratch {
  runtime: IsolationRuntime;
  /** The host's short directory for sockets. */
  runDir: string;
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
    const name = BackupVerifications.sandboxName(r.id);
    let wrap: WrapArgv | undefined;
    if (env) {
      await env.runtime.ensureSandbox(name, this.opts.limits ?? VERIFY_LIMITS);
      wrap = ([cmd, ...args]) => wrapCommand(env.runtime, name, cmd!, args);
    }
    try {
      const br = new PgBackRest(r.configFile, r.stanza, "pgbackrest", wrap);
      const scratch = new ScratchVerification({
        pgbackrest: br,
        ...this.dirs(r.id),
        ...(wrap ? { wrap } : {}),
        ...(this.opts.timeoutMs !== undefined ? { timeoutMs: this.opts.timeoutMs } : {}),
        ...(this.opts.now ? { now: this.opts.now } : {}),
      });
      const outcome = await scratch.run(set, signal);
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

  private dirs(id: string): { workDir: string; socketDir: string } {
    const workDir = path.join(this.opts.dirOf(id), "backup", "verify");
    const env = this.opts.scratch?.();
    const socketDir = env ? path.join(env.runDir, `v${id.replace(/^inst-/, "")}`) : path.join(workDir, "run");
    return { workDir, socketDir };
  }

  /** Kills whatever runs in the node's verification sandbox; removes it and the scratch dirs. */
  private async sweep(id: string): Promise<void> {
    const env = this.opts.scratch?.();
    if (env) await env.runtime.removeSandbox(BackupVerifications.sandboxName(id));
    await removeScratch(this.dirs(id));
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
