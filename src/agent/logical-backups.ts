// The agent's logical backups: it long-polls the controller for dumps of the nodes it holds,
// runs each (engines/postgresql/logical-dump.ts) in the background, renews the job's lease
// with the bytes written so far, and reports the outcome. Nothing is remembered across
// restarts: the controller retries what a killed agent was running (the poll lists the jobs
// this agent runs), and a rerun starts from clean files.
import type { Logger } from "../log.ts";
import { dumpFiles, dumpProgress, dumpToArchive } from "../engines/postgresql/logical-dump.ts";
import type { ControllerClient } from "./controller-client.ts";
import fs from "node:fs/promises";

interface JobJson {
  id: string;
  attempt: number;
  instance_id: string;
  port: number;
  dbname: string;
  name: string;
  archive: string;
}

export interface LogicalBackupWorkerOptions {
  controller: ControllerClient;
  /** The unix socket directory of a node of this host. */
  socketDirOf(instanceId: string): string;
  log: Logger;
  /** Dumps at once on this host (each reads a whole database). */
  slots?: number;
  progressEveryMs?: number;
}

const POLL_WAIT_MS = 25_000;
const RETRY_MS = 2000;
/** A finished job's outcome is sent again for this long while the controller is unreachable. */
const REPORT_FOR_MS = 5 * 60_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class LogicalBackupWorker {
  private readonly running = new Map<string, { abort: AbortController; done: Promise<void> }>();
  private stopped = false;

  constructor(private readonly opts: LogicalBackupWorkerOptions) {}

  private get slots(): number {
    return this.opts.slots ?? 1;
  }

  /** Call once the agent is registered (the controller client holds the host token). */
  start(): void {
    void this.pollLoop().catch((err: Error) =>
      this.opts.log.error("logical backup loop", { err: err.message }),
    );
  }

  /** Agent shutdown: running dumps are stopped; the controller retries them with the next agent. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const r of this.running.values()) r.abort.abort();
    await Promise.all([...this.running.values()].map((r) => r.done));
  }

  private async pollLoop(): Promise<void> {
    while (!this.stopped) {
      const free = this.slots - this.running.size;
      if (free <= 0) {
        await Promise.race([...this.running.values()].map((r) => r.done));
        continue;
      }
      try {
        const ids = [...this.running.keys()].join(",");
        const res = await this.opts.controller.request<{ jobs?: JobJson[] }>(
          "GET",
          `/hosts/self/logical-backups?slots=${free}&running=${ids}&wait_ms=${POLL_WAIT_MS}`,
        );
        for (const job of res.jobs ?? []) if (!this.stopped) this.launch(job);
      } catch (err) {
        if (this.stopped) return;
        this.opts.log.warn("cannot poll for logical backups, retrying", { err: (err as Error).message });
        await sleep(RETRY_MS);
      }
    }
  }

  private launch(job: JobJson): void {
    if (this.running.has(job.id)) return;
    const abort = new AbortController();
    const done = this.run(job, abort)
      .catch((err: Error) => this.opts.log.error("logical backup job", { backup: job.id, err: err.message }))
      .finally(() => this.running.delete(job.id));
    this.running.set(job.id, { abort, done });
  }

  private async run(job: JobJson, abort: AbortController): Promise<void> {
    const log = this.opts.log.child({ backup: job.id, inst: job.instance_id });
    log.info("logical backup started", { attempt: job.attempt });
    const beat = setInterval(() => void this.progress(job, abort), this.opts.progressEveryMs ?? 5000);
    let outcome: Record<string, unknown>;
    try {
      const { sizeBytes } = await dumpToArchive({
        archive: job.archive,
        name: job.name,
        socketDir: this.opts.socketDirOf(job.instance_id),
        port: job.port,
        dbname: job.dbname,
        signal: abort.signal,
      });
      outcome = { status: "done", size: sizeBytes };
    } catch (err) {
      outcome = { status: "failed", error: (err as Error).message };
    } finally {
      clearInterval(beat);
    }
    // Stopping: the next agent's first poll hands the job back for another try.
    if (this.stopped) return;
    const accepted = await this.report(job, { attempt: job.attempt, ...outcome });
    log.info(`logical backup ${String(outcome.status)}`, outcome.error ? { err: outcome.error } : {});
    // No longer this agent's job (cancelled, or retried elsewhere): its files are not a backup.
    if (!accepted)
      for (const p of dumpFiles(job.archive).all) await fs.rm(p, { recursive: true, force: true });
  }

  private async progress(job: JobJson, abort: AbortController): Promise<void> {
    const bytes = await dumpProgress(job.archive);
    const res = await this.opts.controller
      .request<{ continue?: boolean }>("POST", `/hosts/self/logical-backups/${job.id}/progress`, {
        attempt: job.attempt,
        bytes,
      })
      .catch(() => null);
    if (res?.continue === false && !abort.signal.aborted) {
      this.opts.log.info("logical backup cancelled by the controller", { backup: job.id });
      abort.abort();
    }
  }

  /** Sends the outcome until the controller answers; false when it refused it. */
  private async report(job: JobJson, body: Record<string, unknown>): Promise<boolean> {
    const deadline = Date.now() + REPORT_FOR_MS;
    for (;;) {
      try {
        const res = await this.opts.controller.request<{ accepted?: boolean }>(
          "POST",
          `/hosts/self/logical-backups/${job.id}/finish`,
          body,
        );
        return res.accepted === true;
      } catch (err) {
        if (this.stopped || Date.now() > deadline) return true;
        this.opts.log.warn("cannot report a logical backup, retrying", { err: (err as Error).message });
        await sleep(RETRY_MS);
      }
    }
  }
}
