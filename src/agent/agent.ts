// The host agent: registers its host, long-polls the instances the controller wants here,
// converges each one through the engine driver, and reports what it observes (heartbeats.ts).
// Convergence is idempotent, so an agent killed at any point simply converges again.
import fs from "node:fs/promises";
import path from "node:path";
import type { Logger } from "../log.ts";
import { ControllerClient, ControllerError } from "./controller-client.ts";
import type { DesiredInstance, InstanceDriver, Observation } from "./driver.ts";
import { Heartbeats } from "./heartbeats.ts";
import { DEFAULT_RETRY_POLICY, RetryBackoff, type RetryPolicy } from "./retry-backoff.ts";

export interface AgentOptions {
  name: string;
  region: string;
  az: string;
  pool: "shared" | "dedicated";
  address: string;
  capacity: { vcpu: number; ramMb: number; diskGb: number };
  isolation: Record<string, unknown>;
  /** Keeps the host token between runs. */
  stateDir: string;
  controller: ControllerClient;
  joinToken: string;
  driver: InstanceDriver;
  log: Logger;
  heartbeatMs?: number;
  /** Back-off of an instance that fails to converge (default 1 s doubling to 60 s). */
  retryPolicy?: RetryPolicy;
}

/** Key of the back-off entry for a removal of something the controller no longer knows. */
const ORPHAN = "orphan";
/** What the controller asks of an instance: a change of it retries a failed instance at once. */
const askOf = (inst: DesiredInstance) => `${inst.specGeneration}:${inst.desiredState}`;
/**
 * All the controller hands over with an instance but its spec (which changes with its
 * generation), e.g. a switchover order: a change of it is work for the instance.
 */
const settledKeyOf = (inst: DesiredInstance) =>
  JSON.stringify({ ...inst, spec: undefined, encryptionKey: undefined });

interface DesiredResponse {
  version: string;
  instances: Array<{
    id: string;
    database_id: string;
    kind: DesiredInstance["kind"];
    port: number;
    spec: Record<string, unknown>;
    spec_generation: number;
    desired_state: DesiredInstance["desiredState"];
    switchover?: DesiredInstance["switchover"];
    encryption_key?: string;
  }>;
}

export class Agent {
  private stopped = false;
  private desired = new Map<string, DesiredInstance>();
  private version = "";
  private pollAbort: Promise<void> | null = null;
  private readonly retries: RetryBackoff;
  private retryTimer: NodeJS.Timeout | undefined;
  /** Convergences and orphan removals under way, one per instance id at most. */
  private readonly inFlight = new Map<string, Promise<void>>();
  /** What each instance in flight was launched for (settledKeyOf). */
  private readonly launchedFor = new Map<string, string>();
  /** Instances in flight whose ask changed (or a full look came): looked at again once done. */
  private readonly rerun = new Set<string>();
  /** What each instance was last brought to (settledKeyOf); a change of it means work. */
  private readonly settled = new Map<string, string>();
  private sweep: { full: boolean } | null = null;
  private readonly heartbeats: Heartbeats;

  constructor(private readonly opts: AgentOptions) {
    this.retries = new RetryBackoff(opts.retryPolicy ?? DEFAULT_RETRY_POLICY);
    this.heartbeats = new Heartbeats({
      intervalMs: opts.heartbeatMs ?? 2000,
      controller: opts.controller,
      driver: opts.driver,
      log: opts.log,
      instances: () => [...this.desired.values()],
      observable: (inst) =>
        !this.inFlight.has(inst.id) &&
        inst.desiredState !== "deleted" &&
        // A failed instance keeps its failure and message until its retry falls due.
        !this.retries.waiting(inst.id, askOf(inst)),
      onNeedsConverge: () => this.kickConverge(),
    });
  }

  get log(): Logger {
    return this.opts.log;
  }

  async start(): Promise<void> {
    await this.register();
    // Lost Patroni and the like: every instance is looked at again, as a full pass did.
    // A backup landed: observed and reported now, not at the next heartbeat.
    this.opts.driver.watch?.({
      converge: () => this.kickConverge({ full: true }),
      report: () => this.heartbeats.observeSoon(),
      // A node lost while it converges: its last report (a running leader) is not kept meanwhile.
      observed: (id, obs) => {
        this.heartbeats.record(id, obs);
        this.heartbeats.reportSoon();
      },
    });
    this.pollAbort = this.pollLoop();
    this.heartbeats.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.opts.driver.unwatch?.();
    clearTimeout(this.retryTimer);
    await this.heartbeats.stop();
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight.values()]);
  }

  private async register(): Promise<void> {
    const tokenFile = path.join(this.opts.stateDir, "host-token");
    const saved = await fs.readFile(tokenFile, "utf8").then(
      (t) => t.trim(),
      () => null,
    );
    const o = this.opts;
    const body = {
      name: o.name,
      region: o.region,
      az: o.az,
      pool: o.pool,
      address: o.address,
      capacity_vcpu: o.capacity.vcpu,
      capacity_ram_mb: o.capacity.ramMb,
      capacity_disk_gb: o.capacity.diskGb,
      isolation: o.isolation,
    };
    o.controller.setToken(saved ?? o.joinToken);
    const res = await o.controller.request<{ host: { id: string }; token?: string }>(
      "POST",
      "/register",
      body,
    );
    if (res.token) {
      await fs.mkdir(o.stateDir, { recursive: true });
      await fs.writeFile(tokenFile, res.token + "\n", { mode: 0o600 });
      o.controller.setToken(res.token);
    } else if (saved) {
      o.controller.setToken(saved);
    }
    this.log.info("agent registered", { host: res.host.id, name: o.name, az: o.az, pool: o.pool });
  }

  private async pollLoop(): Promise<void> {
    while (!this.stopped) {
      try {
        const res = await this.opts.controller.request<DesiredResponse>(
          "GET",
          `/hosts/self/desired?version=${this.version}&wait_ms=25000`,
        );
        if (res.version !== this.version) {
          this.version = res.version;
          this.desired = new Map(
            res.instances.map((i) => [
              i.id,
              {
                id: i.id,
                databaseId: i.database_id,
                kind: i.kind,
                port: i.port,
                spec: i.spec,
                specGeneration: i.spec_generation,
                desiredState: i.desired_state,
                ...(i.switchover ? { switchover: i.switchover } : {}),
                ...(i.encryption_key ? { encryptionKey: i.encryption_key } : {}),
              },
            ]),
          );
          this.kickConverge();
        }
      } catch (err) {
        if (this.stopped) return;
        this.log.warn("cannot reach the controller, retrying", { err: (err as Error).message });
        await new Promise((r) => setTimeout(r, err instanceof ControllerError ? 2000 : 1000));
      }
    }
  }

  /**
   * Looks at the instances soon (kicks in the same tick are one look). Each instance that
   * needs work starts converging on its own: a slow one holds up neither the others nor
   * the heartbeats. `full` also re-converges the instances that seem settled (each driver
   * call is then cheap for an instance already at its spec and running).
   */
  kickConverge(opts: { full?: boolean } = {}): void {
    // After stop, a late heartbeat or poll must not restart what stopAll is stopping.
    if (this.stopped) return;
    if (this.sweep) {
      this.sweep.full ||= opts.full === true;
      return;
    }
    const sweep = { full: opts.full === true };
    this.sweep = sweep;
    setImmediate(() => {
      this.sweep = null;
      this.convergeDue(sweep.full).catch((err: Error) =>
        this.log.error("converge failed", { err: err.message }),
      );
    });
  }

  private async convergeDue(full: boolean): Promise<void> {
    if (this.stopped) return;
    // Anything on disk that the controller no longer knows is an orphan: remove it.
    const local = await this.opts.driver.listLocal();
    for (const id of local) {
      if (this.desired.has(id) || this.inFlight.has(id) || !this.retries.due(id, ORPHAN)) continue;
      this.launch(id, () => this.removeOrphan(id));
    }
    this.retries.retain((id) => this.desired.has(id) || local.includes(id) || this.inFlight.has(id));
    for (const id of this.settled.keys()) if (!this.desired.has(id)) this.settled.delete(id);
    // etcd first (nodes of HA clusters need it), gateways after nodes (a gateway never
    // points at a node not yet created): each driver call starts in this order.
    const order = { etcd: 0, node: 1, gateway: 2 };
    const desired = [...this.desired.values()].sort((a, b) => order[a.kind] - order[b.kind]);
    for (const inst of desired) {
      if (this.inFlight.has(inst.id)) {
        if (full || this.launchedFor.get(inst.id) !== settledKeyOf(inst)) this.rerun.add(inst.id);
        continue;
      }
      if (!full && !this.needsWork(inst)) continue;
      this.launchedFor.set(inst.id, settledKeyOf(inst));
      this.launch(inst.id, () => this.convergeOne(inst));
    }
    this.scheduleRetry();
  }

  /** Not yet brought to what is asked now, or last seen otherwise than asked. */
  private needsWork(inst: DesiredInstance): boolean {
    if (this.settled.get(inst.id) !== settledKeyOf(inst)) return true;
    if (inst.desiredState !== "running") return false;
    return this.heartbeats.observed.get(inst.id)?.status !== "running";
  }

  /** Runs `work` as the one thing in flight for `id`; reports and re-looks when it ends. */
  private launch(id: string, work: () => Promise<void>): void {
    const run = work()
      .catch((err: Error) => this.log.error("converge failed", { inst: id, err: err.message }))
      .finally(() => {
        this.inFlight.delete(id);
        this.launchedFor.delete(id);
        this.heartbeats.reportSoon();
        this.scheduleRetry();
        if (this.rerun.delete(id)) this.kickConverge();
      });
    this.inFlight.set(id, run);
  }

  private async removeOrphan(id: string): Promise<void> {
    try {
      this.log.info("removing orphan instance", { inst: id });
      await this.opts.driver.remove(id);
      this.heartbeats.forget(id);
      this.retries.succeeded(id);
    } catch (err) {
      // One orphan that resists must not hold up every other instance of the host.
      const { failures, delayMs } = this.retries.failed(id, ORPHAN);
      this.log.warn("cannot remove orphan instance", {
        inst: id,
        err: (err as Error).message,
        failures,
        retry_in_ms: delayMs,
      });
    }
  }

  /** One attempt on one instance, unless it failed recently and its back-off still runs. */
  private async convergeOne(inst: DesiredInstance): Promise<void> {
    const ask = askOf(inst);
    if (!this.retries.due(inst.id, ask)) return;
    const heartbeats = this.heartbeats;
    let failure: string;
    try {
      if (inst.desiredState === "deleted") {
        await this.opts.driver.remove(inst.id);
        heartbeats.record(inst.id, removed(inst));
        this.succeeded(inst);
        return;
      }
      const obs = await this.opts.driver.converge(inst);
      heartbeats.record(inst.id, obs);
      if (inst.desiredState !== "running" || obs.status === "running") {
        this.succeeded(inst);
        return;
      }
      failure = obs.message || `${inst.kind} is ${obs.status} after converging`;
    } catch (err) {
      failure = (err as Error).message;
    }
    this.settled.delete(inst.id);
    const { failures, delayMs } = this.retries.failed(inst.id, ask);
    const message = `${failure} (attempt ${failures}, next in ${delayMs / 1000} s)`;
    this.log.warn("instance failed to converge", { inst: inst.id, err: message });
    heartbeats.record(inst.id, { status: "failed", message, role: "", observedGeneration: 0, usage: {} });
  }

  private succeeded(inst: DesiredInstance): void {
    this.retries.succeeded(inst.id);
    this.settled.set(inst.id, settledKeyOf(inst));
  }

  /** Wakes convergence when the earliest back-off ends: a failed instance heals unattended. */
  private scheduleRetry(): void {
    clearTimeout(this.retryTimer);
    // An instance being tried now is not waited for: its end looks again if need be.
    const ms = this.retries.nextDueInMs((id) => this.inFlight.has(id));
    if (ms === null || this.stopped) return;
    this.retryTimer = setTimeout(() => this.kickConverge(), ms);
  }
}

const removed = (inst: DesiredInstance): Observation => ({
  status: "removed",
  message: "",
  role: "",
  observedGeneration: inst.specGeneration,
  usage: {},
});
