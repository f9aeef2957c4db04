// The host agent: registers its host, long-polls the instances the controller wants here,
// converges each one through the engine driver, and reports what it observes.
// Convergence is idempotent, so an agent killed at any point simply converges again.
import fs from "node:fs/promises";
import path from "node:path";
import type { Logger } from "../log.ts";
import { ControllerClient, ControllerError } from "./controller-client.ts";
import type { DesiredInstance, InstanceDriver, Observation } from "./driver.ts";
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

/** Lines of a node's log sent when the controller asks for them. */
const LOG_TAIL_LINES = 1000;

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
  }>;
}

export class Agent {
  private stopped = false;
  private desired = new Map<string, DesiredInstance>();
  private observed = new Map<string, Observation>();
  private version = "";
  private converging: Promise<void> | null = null;
  private again = false;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private pollAbort: Promise<void> | null = null;
  private readonly retries: RetryBackoff;
  private retryTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: AgentOptions) {
    this.retries = new RetryBackoff(opts.retryPolicy ?? DEFAULT_RETRY_POLICY);
  }

  get log(): Logger {
    return this.opts.log;
  }

  async start(): Promise<void> {
    await this.register();
    this.opts.driver.watch?.(() => this.kickConverge());
    this.pollAbort = this.pollLoop();
    this.heartbeatTimer = setInterval(() => void this.heartbeat(), this.opts.heartbeatMs ?? 2000);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.opts.driver.unwatch?.();
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.retryTimer);
    await this.converging;
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

  /** Converges in the background; a kick during a pass schedules one more pass. */
  kickConverge(): void {
    // After stop, a late heartbeat or poll must not restart what stopAll is stopping.
    if (this.stopped) return;
    if (this.converging) {
      this.again = true;
      return;
    }
    this.converging = (async () => {
      do {
        this.again = false;
        await this.convergeAll();
        await this.report().catch((err: Error) => this.log.warn("report failed", { err: err.message }));
      } while (this.again && !this.stopped);
    })()
      .catch((err: Error) => this.log.error("converge failed", { err: err.message }))
      .finally(() => {
        this.converging = null;
      });
  }

  private async convergeAll(): Promise<void> {
    const { driver } = this.opts;
    const desired = [...this.desired.values()];
    // Anything on disk that the controller no longer knows is an orphan: remove it.
    const local = await driver.listLocal();
    for (const id of local) {
      if (this.desired.has(id) || !this.retries.due(id, ORPHAN)) continue;
      try {
        this.log.info("removing orphan instance", { inst: id });
        await driver.remove(id);
        this.observed.delete(id);
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
    this.retries.retain((id) => this.desired.has(id) || local.includes(id));
    // etcd first (nodes of HA clusters need it), gateways after nodes (a gateway never
    // points at a node not yet created).
    const order = { etcd: 0, node: 1, gateway: 2 };
    desired.sort((a, b) => order[a.kind] - order[b.kind]);
    await Promise.all(desired.map((inst) => this.convergeOne(inst)));
    this.scheduleRetry();
  }

  /** One attempt on one instance, unless it failed recently and its back-off still runs. */
  private async convergeOne(inst: DesiredInstance): Promise<void> {
    const ask = askOf(inst);
    if (!this.retries.due(inst.id, ask)) return;
    let failure: string;
    try {
      if (inst.desiredState === "deleted") {
        await this.opts.driver.remove(inst.id);
        this.observed.set(inst.id, removed(inst));
        this.retries.succeeded(inst.id);
        return;
      }
      const obs = await this.opts.driver.converge(inst);
      this.observed.set(inst.id, obs);
      if (inst.desiredState !== "running" || obs.status === "running") {
        this.retries.succeeded(inst.id);
        return;
      }
      failure = obs.message || `${inst.kind} is ${obs.status} after converging`;
    } catch (err) {
      failure = (err as Error).message;
    }
    const { failures, delayMs } = this.retries.failed(inst.id, ask);
    const message = `${failure} (attempt ${failures}, next in ${delayMs / 1000} s)`;
    this.log.warn("instance failed to converge", { inst: inst.id, err: message });
    this.observed.set(inst.id, { status: "failed", message, role: "", observedGeneration: 0, usage: {} });
  }

  /** Wakes convergence when the earliest back-off ends: a failed instance heals unattended. */
  private scheduleRetry(): void {
    clearTimeout(this.retryTimer);
    const ms = this.retries.nextDueInMs();
    if (ms === null || this.stopped) return;
    this.retryTimer = setTimeout(() => this.kickConverge(), ms);
  }

  private async heartbeat(): Promise<void> {
    if (this.stopped) return;
    // Observation refreshes status and usage; a node found down is converged again.
    let needsConverge = false;
    if (!this.converging) {
      for (const inst of this.desired.values()) {
        if (inst.desiredState === "deleted") continue;
        // A failed instance keeps its failure and message until its retry falls due.
        if (this.retries.waiting(inst.id, askOf(inst))) continue;
        const obs = await this.opts.driver.observe(inst).catch((err: Error) => failed(err));
        if (obs.status !== "running" && inst.desiredState === "running") needsConverge = true;
        this.observed.set(inst.id, obs);
      }
    }
    await this.report().catch((err: Error) => this.log.warn("report failed", { err: err.message }));
    if (needsConverge) this.kickConverge();
  }

  private async report(): Promise<void> {
    const instances = [...this.observed.entries()]
      .filter(([id]) => this.desired.has(id))
      .map(([id, o]) => ({
        id,
        status: o.status,
        status_message: o.message,
        role: o.role,
        observed_generation: o.observedGeneration,
        usage: o.usage,
        ...(o.backup ? { backup: o.backup } : {}),
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
    const logs: Array<{ id: string; text: string }> = [];
    for (const id of wanted) {
      if (typeof id !== "string" || this.desired.get(id)?.kind !== "node") continue;
      const text = await driver.logTail(id, LOG_TAIL_LINES).catch(() => null);
      logs.push({ id, text: text ?? "" });
    }
    // One node per request: a tail may be a few hundred kilobytes.
    for (const log of logs) await this.opts.controller.request("POST", "/hosts/self/logs", { logs: [log] });
  }
}

const removed = (inst: DesiredInstance): Observation => ({
  status: "removed",
  message: "",
  role: "",
  observedGeneration: inst.specGeneration,
  usage: {},
});

const failed = (err: Error): Observation => ({
  status: "failed",
  message: err.message,
  role: "",
  observedGeneration: 0,
  usage: {},
});
