// The PostgreSQL driver of the host agent: converges nodes (PostgreSQL in a sandbox) and
// gateways (HAProxy) from their specs. Each instance lives in <stateDir>/instances/<id>/.
import fs from "node:fs/promises";
import path from "node:path";
import { ensureDir, postgresUser, writeFileAtomic } from "../engines/postgresql/command.ts";
import { PgTemplate } from "../engines/postgresql/data-dir.ts";
import { Gateway } from "../engines/postgresql/gateway.ts";
import { HostLayout } from "../engines/postgresql/host-layout.ts";
import { PostgresInstance } from "../engines/postgresql/instance.ts";
import type { HaSpec } from "../engines/postgresql/patroni-config.ts";
import { PatroniNode } from "../engines/postgresql/patroni-node.ts";
import { cpuPercentBetween, type CpuSample } from "../domain/instance-views.ts";
import type { GatewaySpecJson, NodeSpec } from "../reconciler/instance-spec.ts";
import { sandboxNameFor } from "../runtime/limits.ts";
import { wrapCommand } from "../runtime/spawn.ts";
import { ensureServiceAddress, removeServiceAddress } from "../runtime/netns.ts";
import { waitFor } from "../engines/postgresql/process-watch.ts";
import type { IsolationRuntime, SandboxLimits } from "../runtime/types.ts";
import type { DesiredInstance, DriverEvents, InstanceDriver, Observation } from "./driver.ts";
import { NodeIsolation, type NodePlacement } from "./node-isolation.ts";
import { NodeBackups } from "./node-backups.ts";
import { DiskUsage } from "./disk-usage.ts";
import { HaNodes } from "./ha-nodes.ts";
import { EtcdMember, type EtcdMemberSpec } from "../engines/etcd/etcd-member.ts";
import type { Logger } from "../log.ts";

const META = "cellar-instance.json";
const INSTANCE_ID = /^inst-[a-z0-9]+$/;
/** How long a starting etcd member waits for its peers before it reports itself. */
const ETCD_QUORUM_WAIT_MS = 30_000;
/** CPU quota of a new node while it is set up, before its plan's own quota applies. */
const BURST_VCPU = 2;

/** A quota below BURST_VCPU raised to it (setup, switchovers); pinned CPUs stay as they are. */
function withSpareCpu(limits: SandboxLimits): SandboxLimits {
  const low = limits.cpuQuota !== undefined && limits.cpuQuota < BURST_VCPU;
  return low ? { ...limits, cpuQuota: BURST_VCPU } : limits;
}

/** At most this much of the end of a log file is read for a tail. */
const LOG_TAIL_BYTES = 256 * 1024;

interface Meta {
  id: string;
  kind: DesiredInstance["kind"];
  /** Spec generation last applied in full. */
  applied: number;
}

export interface PostgresDriverOptions {
  stateDir: string;
  /** Short directory for unix sockets (their paths are limited to ~100 bytes). */
  runDir: string;
  runtime: IsolationRuntime;
  /** CPUs this host may hand out exclusively to Dedicated nodes. */
  exclusiveCpus: number[];
  log?: Logger;
}

export class PostgresDriver implements InstanceDriver {
  private readonly instancesDir: string;
  /** Disk usage of each instance directory, in-process (disk-usage.ts). */
  private readonly disk = new DiskUsage();
  /** Last CPU counter reading of each node and the percentage computed at that reading. */
  private readonly cpu = new Map<string, CpuSample & { percent: number | null }>();
  /** Pre-initialised data dir of this host: new nodes are copies of it (~5x faster than initdb). */
  private readonly template: PgTemplate;
  private templateError: Error | null = null;
  /** Dedicated nodes: own volume and network namespace (node-isolation.ts). */
  private readonly isolation: NodeIsolation;
  /** Continuous backups and restores of single-node databases (node-backups.ts). */
  private readonly backups: NodeBackups;
  /** Nodes of HA clusters: Patroni started and watched (ha-nodes.ts). */
  private readonly ha: HaNodes;
  /** The spec each node last converged in full with, as received (its JSON). */
  private readonly appliedSpecs = new Map<string, string>();
  /** HA nodes' CPU: whether their sandbox was last given the switchover's spare CPU. */
  private readonly boosted = new Map<string, boolean>();
  /** What the agent gave watch() to call when a report should go before the next heartbeat. */
  private news: (() => void) | null = null;

  constructor(private readonly opts: PostgresDriverOptions) {
    this.instancesDir = path.join(opts.stateDir, "instances");
    this.template = new PgTemplate(new HostLayout(opts.stateDir).templateDir());
    this.backups = new NodeBackups({
      dirOf: (id) => this.dirOf(id),
      // Verifications of backups run in a small sandbox of their own, sockets under the run dir;
      // an encrypted node's scratch copy is encrypted under its key.
      scratch: () => ({
        runtime: opts.runtime,
        runDir: opts.runDir,
        copyKey: (id) => this.isolation.copyKey(id),
      }),
      ...(opts.log ? { log: opts.log } : {}),
      onNews: () => this.news?.(),
    });
    this.ha = new HaNodes(opts.log ?? null, { nodes: this.backups, dirOf: (id) => this.dirOf(id) });
    this.isolation = new NodeIsolation({ dirOf: (id) => this.dirOf(id), log: opts.log });
  }

  watch(events: DriverEvents): void {
    this.ha.watch(events);
    this.news = events.report;
  }

  unwatch(): void {
    this.news = null;
    this.ha.stopWatching();
  }

  /** Builds the template now rather than at the first provisioning; returns why it cannot be used. */
  async prepareTemplate(): Promise<Error | null> {
    await new HostLayout(this.opts.stateDir).ensure();
    return (await this.templateOrNone()).template ? null : this.templateError;
  }

  /**
   * The template is only a speed-up: if it cannot be built on this host (e.g. its socket path
   * is too long), nodes are made by initdb instead, and the build is not retried until restart.
   */
  private async templateOrNone(): Promise<{ template?: PgTemplate }> {
    if (this.templateError) return {};
    try {
      await this.template.ensure();
      return { template: this.template };
    } catch (err) {
      this.templateError = err as Error;
      return {};
    }
  }

  private dirOf(id: string): string {
    if (!/^inst-[a-z0-9]+$/.test(id)) throw new Error(`invalid instance id ${id}`);
    return path.join(this.instancesDir, id);
  }

  private async readMeta(id: string): Promise<Meta | null> {
    return fs.readFile(path.join(this.dirOf(id), META), "utf8").then(
      (t) => JSON.parse(t) as Meta,
      () => null,
    );
  }

  private async writeMeta(meta: Meta): Promise<void> {
    await writeFileAtomic(path.join(this.dirOf(meta.id), META), JSON.stringify(meta), 0o644, undefined);
  }

  async listLocal(): Promise<string[]> {
    const ids = new Set(await this.localDirs());
    // A node's sandbox left by a killed agent whose directory is gone still holds its CPUs
    // (a Dedicated node's exclusive ones): an orphan too.
    for (const name of await this.opts.runtime.listSandboxes().catch(() => [] as string[])) {
      const id = name.slice("cellar-".length);
      if (name === sandboxNameFor(id) && INSTANCE_ID.test(id)) ids.add(id);
    }
    return [...ids];
  }

  private async localDirs(): Promise<string[]> {
    const names = await fs.readdir(this.instancesDir).catch(() => [] as string[]);
    return names.filter((n) => INSTANCE_ID.test(n));
  }

  async converge(inst: DesiredInstance): Promise<Observation> {
    const specKey = inst.kind === "node" ? JSON.stringify(inst.spec) : "";
    // A new generation that leaves a node's spec as it was (a firewall rule changes only its
    // gateways): no node work competes with the gateways' on the host's CPUs.
    const sameSpec = specKey !== "" && this.appliedSpecs.get(inst.id) === specKey;
    // Before any await: a gateway converging in parallel waits for this node's address.
    if (inst.kind === "node" && !sameSpec) this.isolation.begin(inst.id, inst.spec as unknown as NodeSpec);
    await ensureDir(this.dirOf(inst.id), 0o755, undefined);
    const meta = (await this.readMeta(inst.id)) ?? { id: inst.id, kind: inst.kind, applied: 0 };
    await this.writeMeta(meta);
    // Already at this generation and up: nothing to do (a pass converges every instance of
    // the host, so this keeps a full host's passes short).
    if (meta.applied === inst.specGeneration || sameSpec) {
      const seen = await this.observe(inst);
      if (seen.status === "running" && meta.applied === inst.specGeneration) return seen;
      if (seen.status === "running") {
        await this.writeMeta({ ...meta, applied: inst.specGeneration });
        return { ...seen, observedGeneration: inst.specGeneration };
      }
      if (sameSpec) this.isolation.begin(inst.id, inst.spec as unknown as NodeSpec);
    }
    if (inst.kind === "gateway") return this.convergeGateway(inst, meta);
    if (inst.kind === "etcd") return this.convergeEtcd(inst, meta);
    const spec = inst.spec as unknown as NodeSpec;
    const obs = await (HaNodes.applies(spec)
      ? this.convergeHaNode(inst, spec, meta)
      : this.convergeNode(inst, meta));
    if (obs.status === "running") this.appliedSpecs.set(inst.id, specKey);
    else this.appliedSpecs.delete(inst.id);
    return obs;
  }

  private limitsOf(spec: NodeSpec): SandboxLimits {
    const limits: SandboxLimits = {
      memoryBytes: spec.limits.memoryMb * 1024 * 1024,
      pidsMax: spec.settings.maxConnections + 64,
    };
    // Shared instances get a CPU quota; Dedicated nodes pinned CPUs when the host has them.
    if (spec.limits.exclusiveCpus && this.opts.exclusiveCpus.length >= spec.limits.vcpu) {
      limits.cpus = this.opts.exclusiveCpus.slice(0, Math.ceil(spec.limits.vcpu));
    } else {
      limits.cpuQuota = spec.limits.vcpu;
    }
    return limits;
  }

  private node(inst: DesiredInstance, spec: NodeSpec, placement?: NodePlacement): PostgresInstance {
    return new PostgresInstance({
      id: inst.id,
      baseDir: path.join(this.dirOf(inst.id), "node"),
      listenAddress: placement?.listenAddress ?? spec.listen.address,
      port: spec.listen.port,
      socketDir: this.runDirOf(inst.id),
      // Born inside its sandbox (and its network namespace): no window where PostgreSQL runs unlimited.
      wrapStart: (argv) => {
        const [cmd, ...args] = placement ? placement.wrap(argv) : argv;
        return wrapCommand(this.opts.runtime, sandboxNameFor(inst.id), cmd!, args);
      },
    });
  }

  private runDirOf(id: string): string {
    return path.join(this.opts.runDir, id.replace(/^inst-/, ""));
  }

  private gateway(id: string): Gateway {
    return new Gateway({ id, baseDir: path.join(this.dirOf(id), "gateway"), runDir: this.runDirOf(id) });
  }

  private async convergeNode(inst: DesiredInstance, meta: Meta): Promise<Observation> {
    const spec = inst.spec as unknown as NodeSpec;
    const sandbox = sandboxNameFor(inst.id);
    const limits = this.limitsOf(spec);
    // A new node is set up with its host's spare CPU (start, role and database are CPU-bound
    // and take 3-4x longer under a Starter's quarter vCPU), and a restore in place replays
    // and promotes with it (its archive-get runs beside the replay, inside the sandbox too);
    // the plan's quota follows at once.
    const spare = withSpareCpu(limits);
    const setup = meta.applied === 0 || (await this.backups.restoreDue(inst.id, spec.backup));
    const burst = setup && spare !== limits;
    const info = await this.opts.runtime.ensureSandbox(sandbox, burst ? spare : limits);
    const placement = await this.isolation.prepare(
      inst.id,
      spec,
      () => this.nodeForCleanup(inst.id).stop(),
      inst.encryptionKey,
    );
    const pg = this.node(inst, spec, placement);
    // Business -> Starter: Patroni hands the running server over before it is configured here.
    await this.ha.release(inst.id, pg);
    await pg.ensureInitialised(await this.templateOrNone());
    const owner = postgresUser();
    await ensureDir(pg.tlsDir, 0o700, owner);
    const tlsChanged = [
      await writeFileAtomic(path.join(pg.tlsDir, "server.crt"), spec.tls.certPem, 0o644, owner),
      await writeFileAtomic(path.join(pg.tlsDir, "server.key"), spec.tls.keyPem, 0o600, owner),
      await writeFileAtomic(path.join(pg.tlsDir, "ca.crt"), spec.tls.caPem, 0o644, owner),
    ].some(Boolean);
    const archive = this.backups.archiveOf(inst.id, spec.backup);
    const configure = () => pg.configure(spec.settings, { forceTls: spec.forceTls, archive });
    const { changed } = await configure();
    // A restore the spec asks for runs before the node serves again.
    await this.backups.beforeStart(inst.id, pg, spec.backup, configure);
    const { started } = await pg.start();
    if (!started && (changed || tlsChanged)) {
      const { pendingRestart } = await pg.reload();
      // shared_buffers and max_connections only change with a restart: seconds of downtime.
      if (pendingRestart.length > 0) await pg.restart();
    }
    await pg.ensureRoleAndDatabase({
      user: spec.credentials.username,
      password: spec.credentials.password,
      database: spec.credentials.dbname,
    });
    if (burst) await this.opts.runtime.updateLimits(sandbox, limits);
    if (meta.applied !== inst.specGeneration) await this.writeMeta({ ...meta, applied: inst.specGeneration });
    const allNotes = [...info.notes, ...placement.notes];
    const notes = allNotes.length ? `isolation: ${allNotes.join("; ")}` : "";
    return { ...(await this.observeNode(inst, spec)), message: notes };
  }

  /** An HA node: Patroni runs PostgreSQL; the protected role is written on the leader. */
  private async convergeHaNode(
    inst: DesiredInstance,
    spec: NodeSpec & { ha: NonNullable<NodeSpec["ha"]> },
    meta: Meta,
  ): Promise<Observation> {
    const sandbox = sandboxNameFor(inst.id);
    const limits = this.haLimitsOf(inst, spec);
    // As for a single node: initdb or a standby's clone runs with spare CPU, then the plan's quota.
    const spare = withSpareCpu(limits);
    const burst = meta.applied === 0 && spare !== limits;
    const info = await this.opts.runtime.ensureSandbox(sandbox, burst ? spare : limits);
    // A bigger plan's volume grows offline here (no online resize2fs): Patroni first, or it
    // restarts its PostgreSQL and keeps its log open on the volume.
    const placement = await this.isolation.prepare(
      inst.id,
      spec,
      async () => {
        await this.stopPatroni(inst.id);
        await this.nodeForCleanup(inst.id).stop();
      },
      inst.encryptionKey,
    );
    const pg = this.node(inst, spec, placement);
    const patroni = this.ha.node(pg, spec, (argv) => {
      const [cmd, ...args] = placement.wrap(argv);
      return wrapCommand(this.opts.runtime, sandbox, cmd!, args);
    });
    const obs = await this.ha.converge(
      inst.id,
      spec,
      patroni,
      () =>
        pg.ensureRoleAndDatabase({
          user: spec.credentials.username,
          password: spec.credentials.password,
          database: spec.credentials.dbname,
        }),
      inst.specGeneration,
    );
    if (obs.status !== "running") return obs;
    if (burst) await this.opts.runtime.updateLimits(sandbox, limits);
    this.boosted.set(inst.id, inst.switchover !== undefined);
    if (meta.applied !== inst.specGeneration) await this.writeMeta({ ...meta, applied: inst.specGeneration });
    const allNotes = [...info.notes, ...placement.notes];
    return {
      ...obs,
      observedGeneration: inst.specGeneration,
      message: allNotes.length ? `isolation: ${allNotes.join("; ")}` : "",
    };
  }

  /**
   * An HA node's limits: its plan's, and while its cluster switches over, spare CPU (as at
   * its first start). The writers' pause is the old leader's checkpoint and shutdown, then
   * the candidate's promotion, each run by Patroni and PostgreSQL inside the node's quota.
   */
  private haLimitsOf(inst: DesiredInstance, spec: NodeSpec): SandboxLimits {
    const limits = this.limitsOf(spec);
    return inst.switchover !== undefined ? withSpareCpu(limits) : limits;
  }

  /** Gives or takes back the switchover's spare CPU when the order came or went. */
  private async applySwitchoverCpu(inst: DesiredInstance, spec: NodeSpec): Promise<void> {
    const during = inst.switchover !== undefined;
    // Why: after an agent restart nothing is known, so the sandbox is set once either way.
    if (this.boosted.get(inst.id) === during) return;
    await this.opts.runtime.updateLimits(sandboxNameFor(inst.id), this.haLimitsOf(inst, spec));
    this.boosted.set(inst.id, during);
  }

  private etcdMember(id: string): EtcdMember {
    return new EtcdMember(path.join(this.dirOf(id), "etcd"));
  }

  /** A member of the region's etcd cluster: running once it is healthy (which needs a quorum). */
  private async convergeEtcd(inst: DesiredInstance, meta: Meta): Promise<Observation> {
    const spec = inst.spec as unknown as EtcdMemberSpec;
    const member = this.etcdMember(inst.id);
    await member.ensure(spec, await this.etcdServiceAddress(spec));
    if (meta.applied !== inst.specGeneration) await this.writeMeta({ ...meta, applied: inst.specGeneration });
    // Healthy needs a quorum: the other members start on their own hosts at the same time.
    await waitFor(
      `etcd member ${spec.name} to join its cluster`,
      () => member.healthy(spec),
      ETCD_QUORUM_WAIT_MS,
      250,
    ).catch(() => undefined);
    return this.observe(inst);
  }

  /** A loopback host's member also answers on its service address, for nodes in namespaces. */
  private async etcdServiceAddress(spec: EtcdMemberSpec): Promise<{ serviceAddress?: string }> {
    const service = spec.serviceAddress;
    if (!service || service === spec.address || !(await this.isolation.makesNetworks())) return {};
    await ensureServiceAddress(service);
    return { serviceAddress: service };
  }

  private async observeEtcd(inst: DesiredInstance): Promise<Observation> {
    const spec = inst.spec as unknown as EtcdMemberSpec;
    const member = this.etcdMember(inst.id);
    const meta = await this.readMeta(inst.id);
    if (!(await member.running())) {
      return {
        status: "stopped",
        message: "etcd is not running",
        role: "",
        observedGeneration: 0,
        usage: {},
      };
    }
    const healthy = await member.healthy(spec);
    return {
      status: healthy ? "running" : "booting",
      message: healthy ? "" : "etcd runs but reports no quorum yet",
      role: "",
      observedGeneration: healthy ? (meta?.applied ?? 0) : 0,
      usage: {},
    };
  }

  private async convergeGateway(inst: DesiredInstance, meta: Meta): Promise<Observation> {
    const spec = inst.spec as unknown as GatewaySpecJson;
    await this.gateway(inst.id).ensure(await this.isolation.gatewaySpec(spec, inst.id));
    if (meta.applied !== inst.specGeneration) await this.writeMeta({ ...meta, applied: inst.specGeneration });
    return this.observe(inst);
  }

  async observe(inst: DesiredInstance): Promise<Observation> {
    if (inst.kind === "gateway") {
      const running = await this.gateway(inst.id).isRunning();
      const meta = await this.readMeta(inst.id);
      return {
        status: running ? "running" : "stopped",
        message: running ? "" : "haproxy is not running",
        role: "",
        observedGeneration: meta?.applied ?? 0,
        usage: {},
      };
    }
    if (inst.kind === "etcd") return this.observeEtcd(inst);
    const spec = inst.spec as unknown as NodeSpec;
    if (HaNodes.applies(spec)) return this.observeHaNode(inst, spec);
    return this.observeNode(inst, spec);
  }

  private async observeHaNode(
    inst: DesiredInstance,
    spec: NodeSpec & { ha: NonNullable<NodeSpec["ha"]> },
  ): Promise<Observation> {
    const meta = await this.readMeta(inst.id);
    // A node in a namespace answers on its link's address, not its host's.
    const listenAddress = await this.isolation.listenAddress(inst.id, spec);
    const pg = this.node(inst, spec, { listenAddress, wrap: (a) => a, notes: [] });
    const patroni = this.ha.node(pg, spec, (a) => a);
    await this.applySwitchoverCpu(inst, spec).catch((err: Error) =>
      this.opts.log?.warn("could not change the node's CPU for a switchover", {
        inst: inst.id,
        err: err.message,
      }),
    );
    const obs = await this.ha.observe(inst.id, spec, patroni, meta?.applied ?? 0, inst.switchover);
    const base = await this.observeNode(inst, spec);
    return { ...obs, usage: base.usage, atRest: base.atRest };
  }

  private async observeNode(inst: DesiredInstance, spec: NodeSpec): Promise<Observation> {
    const pg = this.node(inst, spec);
    const ready = await pg.seemsReady();
    const meta = await this.readMeta(inst.id);
    const usage = await this.opts.runtime.usage(sandboxNameFor(inst.id)).catch(() => null);
    const numbers: Record<string, number> = {};
    if (usage?.cpuSeconds != null) numbers.cpu_seconds = usage.cpuSeconds;
    if (usage?.memoryBytes != null) numbers.memory_bytes = usage.memoryBytes;
    if (usage?.memoryLimitBytes != null) numbers.memory_limit_bytes = usage.memoryLimitBytes;
    if (usage?.memoryPeakBytes != null) numbers.memory_peak_bytes = usage.memoryPeakBytes;
    const cpuPercent = this.cpuPercent(inst.id, usage?.cpuSeconds ?? null, spec.limits.vcpu);
    if (cpuPercent !== null) numbers.cpu_percent = cpuPercent;
    numbers.disk_bytes = await this.diskBytes(inst.id);
    return {
      status: ready ? "running" : "stopped",
      message: ready ? this.isolation.statusNote(inst.id) : "postgresql does not accept connections",
      role: "leader",
      observedGeneration: ready ? (meta?.applied ?? 0) : 0,
      usage: numbers,
      backup: this.backups.observe(inst.id, pg, spec.backup, ready),
      atRest: await this.isolation.atRest(inst.id),
    };
  }

  /** CPU use since the previous reading (at least a second ago), in percent of the plan's vCPU. */
  private cpuPercent(id: string, cpuSeconds: number | null, vcpu: number): number | null {
    if (cpuSeconds === null) return null;
    const now = performance.now();
    const prev = this.cpu.get(id);
    // Converge and heartbeat may observe moments apart: too short a window is all noise.
    if (prev && now - prev.atMs < 1000) return prev.percent;
    const percent = prev ? cpuPercentBetween(prev, { cpuSeconds, atMs: now }, vcpu) : null;
    this.cpu.set(id, { cpuSeconds, atMs: now, percent });
    return percent;
  }

  /** The last lines of a node's current PostgreSQL log; null when it has none yet. */
  async logTail(id: string, maxLines: number): Promise<string | null> {
    const node = this.nodeForCleanup(id);
    const file = await node.currentLogFile();
    // current_logfiles is written by the server: only a file of its own log dir is read.
    if (!file || path.dirname(file) !== path.resolve(node.logDir)) return null;
    const handle = await fs.open(file, "r").catch(() => null);
    if (!handle) return null;
    try {
      const { size } = await handle.stat();
      const length = Math.min(size, LOG_TAIL_BYTES);
      const buf = Buffer.alloc(length);
      await handle.read(buf, 0, length, size - length);
      const lines = buf.toString("utf8").split("\n");
      if (length < size) lines.shift(); // cut mid-line
      if (lines.at(-1) === "") lines.pop();
      return lines.slice(-maxLines).join("\n") + "\n";
    } finally {
      await handle.close();
    }
  }

  private diskBytes(id: string): Promise<number> {
    // A node on its own volume: its filesystem's figure (a walk would count a sparse image in full).
    return this.disk.bytes(id, this.dirOf(id), () => this.isolation.usedBytes(id));
  }

  async remove(id: string): Promise<void> {
    this.appliedSpecs.delete(id);
    await this.backups.forget(id);
    const dir = this.dirOf(id);
    const meta = await this.readMeta(id);
    if (meta?.kind === "gateway" || (await exists(path.join(dir, "gateway")))) {
      await this.gateway(id).destroy();
    }
    if (await exists(path.join(dir, "etcd"))) await this.stopEtcd(id, { destroy: true });
    await this.stopPatroni(id);
    this.ha.forget(id);
    const stopNode = () => this.nodeForCleanup(id).stop("immediate");
    await this.isolation.release(id, stopNode, { keepData: false });
    if (await exists(path.join(dir, "node"))) await this.nodeForCleanup(id).destroy();
    await this.opts.runtime.removeSandbox(sandboxNameFor(id));
    await fs.rm(dir, { recursive: true, force: true });
    await fs.rm(this.runDirOf(id), { recursive: true, force: true });
    this.disk.forget(id);
    this.cpu.delete(id);
    this.boosted.delete(id);
  }

  /** Stops (or removes) a member; its service address goes with it, put back at its next start. */
  private async stopEtcd(id: string, opts: { destroy: boolean }): Promise<void> {
    const member = this.etcdMember(id);
    const service = await member.serviceAddress();
    await (opts.destroy ? member.destroy() : member.stop());
    if (service) await removeServiceAddress(service);
  }

  /** Stops an HA node's Patroni (found by its pid file) before its PostgreSQL is touched. */
  private async stopPatroni(id: string): Promise<void> {
    if (!(await exists(path.join(this.dirOf(id), "node", "patroni.pid")))) return;
    const pg = this.nodeForCleanup(id);
    // Only the pid file and config path matter to stop it; the spec is not needed.
    const patroni = new PatroniNode(pg, { restPort: 1 } as HaSpec, "", (a) => a);
    await this.ha.stop(id, patroni);
  }

  /** Enough of an instance to stop or destroy it (address and port do not matter then). */
  private nodeForCleanup(id: string): PostgresInstance {
    return new PostgresInstance({
      id,
      baseDir: path.join(this.dirOf(id), "node"),
      listenAddress: "127.0.0.1",
      port: 1,
      socketDir: this.runDirOf(id),
    });
  }

  /** Stops every local instance cleanly (agent shutdown); data stays. */
  async stopAll(): Promise<void> {
    await this.backups.stop();
    for (const id of await this.localDirs()) {
      const dir = this.dirOf(id);
      if (await exists(path.join(dir, "gateway"))) await this.gateway(id).stop();
      if (await exists(path.join(dir, "etcd"))) await this.stopEtcd(id, { destroy: false });
      // A Patroni stopped cleanly hands its leader key over: a standby elsewhere takes over.
      await this.stopPatroni(id);
      if (await exists(path.join(dir, "node"))) await this.nodeForCleanup(id).stop();
      // Mounts and namespaces are the host's: given back, re-made by the next converge.
      await this.isolation.release(id, () => this.nodeForCleanup(id).stop(), { keepData: true });
    }
  }
}

const exists = (p: string) =>
  fs.access(p).then(
    () => true,
    () => false,
  );
