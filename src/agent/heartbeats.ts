// The agent's heartbeat. Every interval it reports the latest observation of each instance
// (the report is the heartbeat) and observes the instances that are not converging, one
// after the other. Neither waits for a convergence, and a report never waits for a slow
// observation of a full host: on such a host the controller used to mark the host
// unreachable while the agent was busy setting up new databases.
import type { Logger } from "../log.ts";
import type { ControllerClient } from "./controller-client.ts";
import type { DesiredInstance, InstanceDriver, Observation } from "./driver.ts";

/** Lines of a node's log sent when the controller asks for them. */
const LOG_TAIL_LINES = 1000;
/** Changes are reported this soon after they happen (several changes go in one report). */
const REPORT_SOON_MS = 100;

export interface HeartbeatsOptions {
  intervalMs: number;
  controller: ControllerClient;
  driver: InstanceDriver;
  log: Logger;
  /** What the controller wants on this host now. */
  instances(): DesiredInstance[];
  /** May this instance be observed now (not converging, not waiting for a retry)? */
  observable(inst: DesiredInstance): boolean;
  /** An observation found an instance that should run and does not. */
  onNeedsConverge(): void;
}

export class Heartbeats {
  private readonly observations = new Map<string, Observation>();
  /** Bumped on every observation recorded by a convergence: an older look is then dropped. */
  private readonly stamps = new Map<string, number>();
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private soonTimer: NodeJS.Timeout | undefined;
  private observing: Promise<void> | null = null;
  private reporting: { done: Promise<void>; startedAt: number } | null = null;
  private reportAgain = false;
  private observeAgain = false;

  constructor(private readonly opts: HeartbeatsOptions) {}

  start(): void {
    this.timer = setInterval(() => this.tick(), this.opts.intervalMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.soonTimer);
    // A report in flight is not waited for: the controller may be gone (its timeout is 40 s).
    await this.observing;
  }

  get observed(): ReadonlyMap<string, Observation> {
    return this.observations;
  }

  /** What a convergence (or removal) just found. */
  record(id: string, obs: Observation): void {
    this.stamps.set(id, (this.stamps.get(id) ?? 0) + 1);
    this.observations.set(id, obs);
  }

  forget(id: string): void {
    this.stamps.delete(id);
    this.observations.delete(id);
  }

  /** A report shortly (a convergence ended): the controller learns of a new database at once. */
  reportSoon(): void {
    if (this.stopped || this.soonTimer) return;
    this.soonTimer = setTimeout(() => {
      this.soonTimer = undefined;
      this.report({ again: true });
    }, REPORT_SOON_MS);
  }

  /** A look and a report shortly, before the next heartbeat (news such as a backup landed). */
  observeSoon(): void {
    if (!this.stopped) setImmediate(() => this.tick({ news: true }));
  }

  /** A look, then a report; news is reported even if another report is in flight (after it). */
  private tick(opts: { news: boolean } = { news: false }): void {
    if (this.stopped) return;
    if (this.observing) {
      // News: once this look ends, another one (it may have passed the instance already).
      if (opts.news) this.observeAgain = true;
      // The host's last look still runs (a full host under load): report what is known.
      else this.report({ again: false });
      return;
    }
    this.observing = this.observeAll()
      .catch((err: Error) => this.opts.log.warn("observation failed", { err: err.message }))
      .finally(() => {
        this.observing = null;
        this.report({ again: opts.news });
        if (this.observeAgain) {
          this.observeAgain = false;
          this.observeSoon();
        }
      });
  }

  /** Refreshes status and usage; a node found down is converged again. */
  private async observeAll(): Promise<void> {
    let needsConverge = false;
    for (const inst of this.opts.instances()) {
      if (this.stopped) return;
      if (!this.opts.observable(inst)) continue;
      const stamp = this.stamps.get(inst.id);
      const obs = await this.opts.driver.observe(inst).catch((err: Error) => failed(err));
      // A convergence started or ended meanwhile: what it found is newer than this look.
      if (this.stamps.get(inst.id) !== stamp || !this.opts.observable(inst)) continue;
      this.observations.set(inst.id, obs);
      if (obs.status !== "running" && inst.desiredState === "running") needsConverge = true;
    }
    if (needsConverge) this.opts.onNeedsConverge();
  }

  /**
   * One report in flight at a time: a heartbeat due meanwhile is that report; a change
   * (`again`) is sent once it returns. A report stuck far longer than a heartbeat interval
   * (a dead socket) does not silence the host: another one goes out beside it.
   */
  private report(opts: { again: boolean }): void {
    if (this.stopped) return;
    const current = this.reporting;
    if (current && performance.now() - current.startedAt < 3 * this.opts.intervalMs) {
      if (opts.again) this.reportAgain = true;
      return;
    }
    const done = this.sendReport()
      .catch((err: Error) => this.opts.log.warn("report failed", { err: err.message }))
      .finally(() => {
        if (this.reporting?.done !== done) return;
        this.reporting = null;
        if (this.reportAgain) {
          this.reportAgain = false;
          this.report({ again: false });
        }
      });
    this.reporting = { done, startedAt: performance.now() };
  }

  private async sendReport(): Promise<void> {
    const wanted = new Set(this.opts.instances().map((i) => i.id));
    const instances = [...this.observations.entries()]
      .filter(([id]) => wanted.has(id))
      .map(([id, o]) => ({
        id,
        status: o.status,
        status_message: o.message,
        role: o.role,
        observed_generation: o.observedGeneration,
        usage: o.usage,
        ...(o.backup ? { backup: o.backup } : {}),
        ...(o.atRest ? { at_rest: o.atRest } : {}),
      }));
    const res = await this.opts.controller.request<{ logs_wanted?: unknown }>("POST", "/hosts/self/report", {
      instances,
    });
    if (Array.isArray(res?.logs_wanted)) await this.sendLogTails(res.logs_wanted);
  }

  /** Agents have no listener: the controller asks for log tails in its answer to a report. */
  private async sendLogTails(wanted: unknown[]): Promise<void> {
    const { driver } = this.opts;
    if (!driver.logTail) return;
    const nodes = new Set(
      this.opts
        .instances()
        .filter((i) => i.kind === "node")
        .map((i) => i.id),
    );
    const logs: Array<{ id: string; text: string }> = [];
    for (const id of wanted) {
      if (typeof id !== "string" || !nodes.has(id)) continue;
      const text = await driver.logTail(id, LOG_TAIL_LINES).catch(() => null);
      logs.push({ id, text: text ?? "" });
    }
    // One node per request: a tail may be a few hundred kilobytes.
    for (const log of logs) await this.opts.controller.request("POST", "/hosts/self/logs", { logs: [log] });
  }
}

const failed = (err: Error): Observation => ({
  status: "failed",
  message: err.message,
  role: "",
  observedGeneration: 0,
  usage: {},
});
