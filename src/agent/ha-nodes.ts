// The agent's side of HA clusters: each node's Patroni is started and watched here. A
// Patroni that dies leaves its leader key in etcd until the key's TTL runs out (10 s),
// and the standbys wait that long. The agent sees the death within WATCH_MS, fences the
// orphaned PostgreSQL (a primary nobody supervises must not take writes), hands the
// leader key back if this member held it, so a standby takes over at once, and has the
// node converged again: Patroni restarts and rejoins as a standby (pg_rewind).
import { EtcdClient } from "../engines/etcd/etcd-client.ts";
import type { PostgresInstance } from "../engines/postgresql/instance.ts";
import type { HaSpec } from "../engines/postgresql/patroni-config.ts";
import { PatroniNode, type PatroniState } from "../engines/postgresql/patroni-node.ts";
import { findProcessesUsing, signalProcess, waitFor } from "../engines/postgresql/process-watch.ts";
import type { Logger } from "../log.ts";
import type { NodeSpec } from "../reconciler/instance-spec.ts";
import type { DriverEvents, Observation } from "./driver.ts";
import fs from "node:fs/promises";
import path from "node:path";
import { PatroniRest } from "../engines/postgresql/patroni-rest.ts";
import { queryOnce } from "../engines/postgresql/superuser.ts";
import { releaseOnCleanShutdown } from "./switchover-release.ts";
import type { SwitchoverOrder } from "../store/switchovers.store.ts";
import type { ArchiveSettings } from "../engines/postgresql/backup/pgbackrest-config.ts";
import type { NodeBackupSpec } from "../engines/postgresql/backup/types.ts";
import { HaRestores, seedForkNode, type HaRestoreNode } from "./ha-restore.ts";
import type { NodeBackups } from "./node-backups.ts";
import {
  applySettings,
  ensureAdoptedClusterRoles,
  ensureSynchronousMode,
  handOverToPatroni,
  restartIfPending,
  restOf,
  switchoverCandidate,
  takeBackFromPatroni,
} from "./ha-changes.ts";

const WATCH_MS = 250;
/** A first bootstrap (initdb) or a replica's clone of a small database takes seconds. */
const RUNNING_TIMEOUT_MS = 120_000;

interface Watched {
  patroni: PatroniNode;
  ha: HaSpec;
  caPem: string;
  /** Set while the agent itself stops or removes the node. */
  stopping: boolean;
  /** The loss was handled; cleared when the node is converged again. */
  lost: boolean;
  /** The loss's fencing and leader key release, while they run (a restart waits for them). */
  fencing: Promise<void> | null;
}

export class HaNodes {
  private readonly watched = new Map<string, Watched>();
  private timer: NodeJS.Timeout | undefined;
  private events: Pick<DriverEvents, "converge" | "observed"> | null = null;
  /** Switchovers this agent already asked Patroni for (one attempt each). */
  private readonly switchoversAsked = new Set<string>();

  /** Point-in-time restores of the clusters of this host's nodes (ha-restore.ts). */
  private readonly restores: HaRestores | null;

  constructor(
    private readonly log: Logger | null,
    /** Continuous backups: archiving on every member, checks and full backups on the leader. */
    private readonly backups: { nodes: NodeBackups; dirOf: (id: string) => string } | null = null,
  ) {
    this.restores = backups ? new HaRestores({ backups: backups.nodes, dirOf: backups.dirOf, log }) : null;
  }

  static applies(spec: NodeSpec): spec is NodeSpec & { ha: HaSpec } {
    return spec.ha !== undefined;
  }

  /** Starts watching; a loss is told (`observed`) and the node converged again (`converge`). */
  watch(events: Pick<DriverEvents, "converge" | "observed">): void {
    this.events = events;
    this.timer ??= setInterval(() => void this.check(), WATCH_MS);
    this.timer.unref();
  }

  stopWatching(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private track(id: string, spec: NodeSpec & { ha: HaSpec }, patroni: PatroniNode): Watched {
    const current = this.watched.get(id);
    const entry: Watched = {
      patroni,
      ha: spec.ha,
      caPem: spec.tls.caPem,
      stopping: current?.stopping ?? false,
      lost: current?.lost ?? false,
      fencing: current?.fencing ?? null,
    };
    this.watched.set(id, entry);
    return entry;
  }

  node(
    pg: PostgresInstance,
    spec: NodeSpec & { ha: HaSpec },
    wrap: (argv: string[]) => string[],
  ): PatroniNode {
    return new PatroniNode(pg, spec.ha, spec.tls.caPem, wrap);
  }

  /** Starts (or reconfigures) Patroni and waits until it runs PostgreSQL as leader or standby. */
  async converge(
    id: string,
    spec: NodeSpec & { ha: HaSpec },
    patroni: PatroniNode,
    ensureRoles: () => Promise<void>,
    generation = 0,
  ): Promise<Observation> {
    // An HA fork: its first node takes the source's data as a single node, then as below.
    if (this.backups) {
      const ran = (await patroni.patroniPid()) !== null;
      await seedForkNode(id, patroni.pg, spec, this.backups.nodes, ran);
    }
    // Starter -> Business: Patroni adopts the node's running PostgreSQL and its data dir.
    const handedOver = await handOverToPatroni(patroni.pg, spec.ha, this.log);
    // Every member archives (its pgBackRest config first: archive_command names it).
    await this.backups?.nodes.prepareHa(id, patroni.pg, spec.backup);
    const archive = this.backups?.nodes.archiveOf(id, spec.backup);
    const start = { forceTls: spec.forceTls, archive };
    if (this.restores && spec.backup) {
      await this.restores.ensure(this.restoreNode(id, spec, patroni, spec.backup, start));
    }
    // Why: a Patroni started while its dead predecessor's leader key is still held takes
    // the key back and leads again, and the fencing's kill of the data dir's processes
    // would then hit the new server. The loss is dealt with first, whoever saw it.
    await this.fenceIfLost(id, patroni);
    const { started } = await patroni.ensure(spec.settings, spec.tls, start);
    // Watched from the moment it runs: its pid file exists now.
    const entry = this.track(id, spec, patroni);
    entry.stopping = false;
    entry.lost = false;
    let state: PatroniState | null = null;
    try {
      await waitFor(
        `patroni of ${id} to run PostgreSQL`,
        async () => {
          if ((await patroni.patroniPid()) === null)
            throw new Error(`patroni of ${id} exited: ${await patroni.logTail()}`);
          state = await patroni.state();
          // A data dir taken over is ready once Patroni holds the leader key for it.
          return state?.state === "running" && (!handedOver || state.role === "leader");
        },
        RUNNING_TIMEOUT_MS,
        200,
      );
    } catch (err) {
      // Why: a converge that sees Patroni die before the watcher does would start it again
      // on the node that still holds the leader key (seen once in 10 benchmark failovers:
      // the killed node led again after 17 s). Whoever sees the death first fences.
      await this.fenceIfLost(id, patroni);
      return {
        status: "failed",
        message: (err as Error).message,
        role: "",
        observedGeneration: 0,
        usage: {},
      };
    }
    try {
      // Roles are written on the leader; standbys receive them by replication.
      if ((state as PatroniState | null)?.role === "leader") {
        await ensureAdoptedClusterRoles(patroni.pg, spec.ha);
        await ensureRoles();
      }
      // A running Patroni re-read its changed config: a standby restarts with new settings.
      const rest = restOf(patroni.pg, spec.ha, spec.tls.caPem);
      if (!started) await applySettings(patroni.pg, rest, spec.settings, generation, this.log);
      const leads = (state as PatroniState | null)?.role === "leader";
      await ensureSynchronousMode(patroni.pg, rest, spec.ha.synchronous, generation, leads, this.log);
      // The adopted server still runs with a single node's start settings (no wal_log_hints
      // for pg_rewind, archiving on): the one restart of the switch to a cluster.
      if (handedOver) await restartIfPending(patroni.pg, rest, this.log);
    } catch (err) {
      return {
        status: "failed",
        message: (err as Error).message,
        role: "",
        observedGeneration: 0,
        usage: {},
      };
    }
    state = (await patroni.state()) ?? state;
    return this.observation(state, 0);
  }

  async observe(
    id: string,
    spec: NodeSpec & { ha: HaSpec },
    patroni: PatroniNode,
    applied: number,
    switchover?: SwitchoverOrder,
  ): Promise<Observation> {
    const alive = (await patroni.patroniPid()) !== null;
    // A restarted agent finds its running nodes here and watches them again.
    if (alive && !this.watched.has(id)) this.track(id, spec, patroni);
    const state = alive ? await patroni.state() : null;
    if (switchover && state?.role === "leader") this.switchOver(id, spec, patroni, switchover);
    const obs = this.observation(state, applied, alive);
    const leading = state?.role === "leader" && state.state === "running";
    const ready = leading && (await patroni.pg.seemsReady());
    const backup = this.backups?.nodes.observeHa(id, patroni.pg, spec.backup, ready, leading);
    if (alive && !leading && this.restores && HaRestores.pending(spec.backup)) {
      const node = this.restoreNode(id, spec, patroni, spec.backup!, { forceTls: spec.forceTls });
      // The restorer asked the cluster to stop: this standby's convergence then waits for it.
      void this.restores.stopIfAsked(node).then(
        (stopped) => stopped && this.events?.converge(),
        (err: Error) =>
          this.log?.warn("cannot stop for the cluster's restore", { inst: id, err: err.message }),
      );
    }
    return backup ? { ...obs, backup } : obs;
  }

  /** What ha-restore.ts needs of a node: its cluster, its backups, Patroni stopped and started. */
  private restoreNode(
    id: string,
    spec: NodeSpec & { ha: HaSpec },
    patroni: PatroniNode,
    backup: NodeBackupSpec,
    start: { forceTls: boolean; archive?: ArchiveSettings | undefined },
  ): HaRestoreNode {
    return {
      id,
      ha: spec.ha,
      caPem: spec.tls.caPem,
      backup,
      patroni,
      stopPatroni: () => this.stop(id, patroni),
      startPatroni: async () => {
        await patroni.ensure(spec.settings, spec.tls, start);
        this.track(id, spec, patroni).stopping = false;
        await waitFor(
          `patroni of ${id} to run PostgreSQL`,
          async () => (await patroni.state())?.state === "running",
          RUNNING_TIMEOUT_MS,
          200,
        );
      },
    };
  }

  /**
   * A planned switchover the controller asks of this leader: Patroni's REST API does it and
   * answers once the candidate leads. In the background (it takes seconds); asked once.
   */
  private switchOver(
    id: string,
    spec: NodeSpec & { ha: HaSpec },
    patroni: PatroniNode,
    order: SwitchoverOrder,
  ) {
    if (order.leader !== spec.ha.member || this.switchoversAsked.has(order.id)) return;
    this.switchoversAsked.add(order.id);
    const started = performance.now();
    this.log?.info("switching over", { inst: id, to: order.candidate, switchover: order.id });
    const rest = restOf(patroni.pg, spec.ha, spec.tls.caPem);
    let finished = false;
    // A checkpoint now leaves little for the demotion's own checkpoint and shutdown
    // checkpoint to write: those happen while no write is accepted.
    void queryOnce(patroni.pg.superuserConfig(), "CHECKPOINT", [], 30_000)
      .catch(() => undefined)
      .then(async () => {
        const candidate = await switchoverCandidate(rest, order.candidate, this.log);
        if (spec.ha.releaseLeaderOnLoss)
          void this.releaseEarly(id, spec, patroni, rest, candidate, () => finished);
        return rest.switchover(order.leader, candidate);
      })
      .then(
        (res) => {
          const ms = Math.round(performance.now() - started);
          if (res.status === 200) this.log?.info("switched over", { inst: id, to: order.candidate, ms });
          else
            this.log?.warn("switchover refused", {
              inst: id,
              status: res.status,
              why: res.body.slice(0, 300),
            });
        },
        (err: Error) => this.log?.warn("switchover failed", { inst: id, err: err.message }),
      )
      .finally(() => {
        finished = true;
        // The roles changed: converge and report now rather than at the next heartbeat.
        this.events?.converge();
      });
  }

  /**
   * Hands the leader key to the candidate as soon as this node is cleanly shut down and the
   * candidate has its shutdown checkpoint (switchover-release.ts), ahead of Patroni's own
   * slower check. Anything unexpected leaves the release to Patroni, as before.
   */
  private async releaseEarly(
    id: string,
    spec: NodeSpec & { ha: HaSpec },
    patroni: PatroniNode,
    rest: PatroniRest,
    candidate: string,
    done: () => boolean,
  ): Promise<void> {
    const { ha } = spec;
    // The candidate is dialled where its peers dial it; a node in another database network
    // (Dedicated) is out of this host's reach, and Patroni's own release stands.
    const candidateRest = await rest.member(candidate, ha.restPassword).catch(() => null);
    if (candidateRest === null || (await candidateRest.details(1000)) === null) {
      this.log?.info("switchover: Patroni releases the leader key", {
        inst: id,
        why: "the candidate's REST API does not answer from this host",
      });
      return;
    }
    const outcome = await releaseOnCleanShutdown({
      dataDir: patroni.pg.dataDir,
      candidate: candidateRest,
      etcd: this.etcdOf(ha, spec.tls.caPem),
      leaderKey: leaderKeyOf(ha),
      member: ha.member,
      done,
    }).catch((err: Error) => ({ released: false as const, why: err.message }));
    if (outcome.released)
      this.log?.info("switchover: leader key handed to the candidate at its shutdown checkpoint", {
        inst: id,
        to: candidate,
        shutdownMs: outcome.shutdownMs,
        candidateMs: outcome.candidateMs,
      });
    else this.log?.info("switchover: Patroni releases the leader key", { inst: id, why: outcome.why });
  }

  /**
   * Business -> Starter: the node's spec has no HA section any more. When Patroni still runs
   * it (found by its config file), it is paused and stopped without stopping PostgreSQL.
   */
  async release(id: string, pg: PostgresInstance): Promise<void> {
    const configFile = path.join(pg.baseDir, "patroni.json");
    const raw = await fs.readFile(configFile, "utf8").catch(() => null);
    if (raw === null) return;
    const entry = this.watched.get(id);
    if (entry) entry.stopping = true;
    const config = JSON.parse(raw) as {
      restapi: { connect_address: string; cafile: string; authentication: { password: string } };
    };
    const restPort = Number(config.restapi.connect_address.split(":").at(-1));
    const caPem = await fs.readFile(config.restapi.cafile, "utf8");
    const rest = new PatroniRest(
      pg.opts.listenAddress,
      { restPort, restPassword: config.restapi.authentication.password },
      caPem,
    );
    const patroni = new PatroniNode(pg, { restPort } as HaSpec, caPem, (a) => a);
    const stopOnlyPatroni = async () => {
      const pid = await patroni.patroniPid();
      if (pid !== null) process.kill(pid, "SIGTERM");
      await waitFor(
        `patroni of ${id} to exit`,
        async () => (await patroni.patroniPid()) === null,
        30_000,
        100,
      );
    };
    await takeBackFromPatroni(pg, rest, stopOnlyPatroni, this.log);
    this.forget(id);
    await fs.rm(configFile, { force: true });
  }

  private observation(state: PatroniState | null, applied: number, alive = false): Observation {
    if (!state) {
      return {
        status: "stopped",
        // A Patroni cut off from the network, or too busy to answer, is not a stopped one.
        message: alive ? "patroni runs but its REST API does not answer" : "patroni is not running",
        role: "",
        observedGeneration: 0,
        usage: {},
      };
    }
    const running = state.state === "running";
    return {
      status: running ? "running" : "booting",
      message: running ? "" : `patroni: ${state.state}`,
      role: state.role === "leader" ? "leader" : "follower",
      observedGeneration: running ? applied : 0,
      usage: {},
    };
  }

  /** The agent stops or removes the node itself: no failover handling for it. */
  async stop(id: string, patroni: PatroniNode | null): Promise<void> {
    const entry = this.watched.get(id);
    if (entry) entry.stopping = true;
    await (patroni ?? entry?.patroni)?.stop();
  }

  forget(id: string): void {
    this.watched.delete(id);
    this.restores?.forget(id);
  }

  private async check(): Promise<void> {
    for (const [id, entry] of this.watched) {
      if (entry.stopping || entry.lost) continue;
      if ((await entry.patroni.patroniPid()) !== null) continue;
      void this.startFencing(id, entry);
    }
  }

  /**
   * A watched node whose Patroni is gone (and that the agent did not stop) is fenced now,
   * unless that already happened; resolves once any fencing of it has finished.
   */
  private async fenceIfLost(id: string, patroni: PatroniNode): Promise<void> {
    const entry = this.watched.get(id);
    if (!entry) return;
    if (!entry.lost && !entry.stopping && (await patroni.patroniPid()) === null) {
      // The watcher may have seen it meanwhile: then its fencing is the one waited for.
      if (!entry.lost) void this.startFencing(id, entry);
    }
    await entry.fencing;
  }

  private startFencing(id: string, entry: Watched): Promise<void> {
    entry.lost = true;
    const fencing = this.handleLoss(id, entry)
      .catch((err: Error) => this.log?.warn("fencing failed", { inst: id, err: err.message }))
      .finally(() => {
        if (entry.fencing === fencing) entry.fencing = null;
      });
    entry.fencing = fencing;
    return fencing;
  }

  private async handleLoss(id: string, entry: Watched): Promise<void> {
    this.log?.warn("patroni died: fencing the node and handing its leader key back", { inst: id });
    // A primary without its Patroni would keep taking writes nobody can fail over.
    await entry.patroni.pg.stop("immediate").catch(() => undefined);
    // A postmaster killed outright leaves its backends for a moment, and they can still
    // commit and acknowledge: kill them too (found by their working directory, the data dir).
    for (const pid of await findProcessesUsing(entry.patroni.pg.dataDir)) signalProcess(pid, "SIGKILL");
    // Told now: a convergence in flight would otherwise leave it reported as it was (a leader).
    this.events?.observed(id, {
      status: "restarting",
      message: "patroni died: the node was fenced and is started again",
      role: "",
      observedGeneration: 0,
      usage: {},
    });
    const { ha } = entry;
    if (!ha.releaseLeaderOnLoss) return this.events?.converge();
    try {
      const etcd = this.etcdOf(ha, entry.caPem);
      const released = await etcd.deleteIfValue(leaderKeyOf(ha), ha.member);
      if (released) {
        this.log?.info("leader key released: a standby takes over", { inst: id });
        await this.awaitNewLeader(id, ha, etcd);
      }
    } catch (err) {
      this.log?.warn("could not release the leader key; the standbys wait for its TTL", {
        inst: id,
        err: (err as Error).message,
      });
    }
    this.events?.converge();
  }

  /**
   * Why: a Patroni that starts while no member holds the leader key sets its server up as a
   * standby with nobody to follow, and Patroni puts no time limit on a standby's start (an
   * old leader was seen "still starting up as a standby" 100 s on, most likely so). The lost
   * node is started again once a standby leads, or after a TTL and a loop if none does
   * (it may then lead again itself).
   */
  private async awaitNewLeader(id: string, ha: HaSpec, etcd: EtcdClient): Promise<void> {
    const started = performance.now();
    let holder = null as string | null;
    try {
      await waitFor(
        "a standby to hold the leader key",
        async () => {
          holder = await etcd.get(leaderKeyOf(ha)).catch(() => null);
          return holder !== null && holder !== ha.member;
        },
        (ha.timing.ttl + ha.timing.loopWait) * 1000,
        100,
      );
    } catch {
      this.log?.warn("no standby took the leader key: the lost node starts again without waiting", {
        inst: id,
      });
      return;
    }
    const ms = Math.round(performance.now() - started);
    this.log?.info("a standby leads: the lost node follows it", { inst: id, leader: holder, ms });
  }

  private etcdOf(ha: HaSpec, caPem: string): EtcdClient {
    return new EtcdClient({
      endpoints: ha.dcs.endpoints,
      tls: { caPem, certPem: ha.dcs.certPem, keyPem: ha.dcs.keyPem },
      auth: { user: ha.dcs.user, password: ha.dcs.password },
    });
  }
}

/** The cluster's leader key in the DCS (its value is the leading member's name). */
const leaderKeyOf = (ha: HaSpec) => `${ha.namespace}${ha.scope}/leader`;
