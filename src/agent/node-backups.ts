// What the agent does for the backups of its nodes. Before a node starts: its pgBackRest
// config, and a restore its spec asks for (restore.ts, resumable). While it runs, in the
// background: the stanza, a full backup when one is due (none yet, a new timeline, or the
// newest too old), and how far the archive reaches. What it finds goes into the node's
// report; the repository is the source of truth, so a killed agent simply looks again.
import fs from "node:fs/promises";
import path from "node:path";
import { ensureDir, postgresUser, writeFileAtomic } from "../engines/postgresql/command.ts";
import type { PostgresInstance } from "../engines/postgresql/instance.ts";
import { readArchiveStatus, type ArchiveStatus } from "../engines/postgresql/backup/archive-status.ts";
import {
  backupReportOf,
  fullBackupDue,
  parseSegment,
  VERIFY_ANNOTATIONS,
  type StanzaInfo,
} from "../engines/postgresql/backup/backup-info.ts";
import { ensureRepository, PgBackRest, PgBackRestError } from "../engines/postgresql/backup/pgbackrest.ts";
import {
  archiveSettings,
  renderPgBackRestConf,
  seedSourceSpec,
  type ArchiveSettings,
  type NodeBackupPaths,
} from "../engines/postgresql/backup/pgbackrest-config.ts";
import { InPlaceRestore } from "../engines/postgresql/backup/restore.ts";
import { SeedFromBackup } from "../engines/postgresql/backup/seed.ts";
import type { VerifyOutcome } from "../engines/postgresql/backup/verify.ts";
import type { Logger } from "../log.ts";
import { BackupVerifications, type VerificationScratch } from "./backup-verifications.ts";
import type {
  BackupReport,
  NodeBackupSpec,
  NodeSeedSpec,
  RestoreOutcome,
} from "../engines/postgresql/backup/types.ts";

/** The stanza's backup list is re-read at least this often (it changes only with backups). */
const INFO_REFRESH_MS = 10 * 60_000;
/** Longest wait before a failed check or backup is tried again. */
const MAX_RETRY_MS = 30 * 60_000;

interface Tracked {
  id: string;
  spec: NodeBackupSpec;
  node: PostgresInstance;
  report: BackupReport | null;
  stanzaReady: boolean;
  info: StanzaInfo | null;
  infoAt: number;
  nextAt: number;
  failures: number;
  failure: BackupReport["failure"];
  restore: RestoreOutcome | null;
  restoring: boolean;
  job: { done: Promise<void>; abort: AbortController } | null;
  /** The timelines whose backups count, read for `timeline` (a history never changes). */
  lineage: { timeline: number; timelines: number[] } | null;
}

export interface NodeBackupsOptions {
  /** The instance's directory (<stateDir>/instances/<id>): backup files go beside the node. */
  dirOf(id: string): string;
  now?: () => Date;
  /** Full backups at once on this host (each reads a whole data dir). */
  maxConcurrentBackups?: number;
  /** Where backups are verified: a sandbox and socket root of the host (backup-verifications.ts). */
  scratch?: () => VerificationScratch;
  /** Each step of a restore is logged with its duration. */
  log?: Logger;
  /** A backup landed or got its verdict: the controller should learn it before the next heartbeat. */
  onNews?: () => void;
}

export class NodeBackups {
  private readonly nodes = new Map<string, Tracked>();
  /** Nodes of HA clusters (Patroni runs them): observed through observeHa only. */
  private readonly ha = new Set<string>();
  private readonly slots: Slots;
  private readonly verifications: BackupVerifications;

  constructor(private readonly opts: NodeBackupsOptions) {
    this.slots = new Slots(opts.maxConcurrentBackups ?? 1);
    this.verifications = new BackupVerifications({
      dirOf: (id) => opts.dirOf(id),
      ...(opts.scratch ? { scratch: opts.scratch } : {}),
      ...(opts.now ? { now: opts.now } : {}),
    });
  }

  private now(): Date {
    return this.opts.now?.() ?? new Date();
  }

  paths(id: string): NodeBackupPaths & { seedConfigFile: string } {
    const work = path.join(this.opts.dirOf(id), "backup");
    return {
      configFile: path.join(work, "pgbackrest.conf"),
      seedConfigFile: path.join(work, "seed.conf"),
      lockDir: path.join(work, "lock"),
      logDir: path.join(work, "log"),
    };
  }

  private stateFile(id: string): string {
    return path.join(this.opts.dirOf(id), "backup-restore.json");
  }

  /** The archive settings of a node's configuration (none without a backup spec). */
  archiveOf(id: string, spec: NodeBackupSpec | undefined): ArchiveSettings | undefined {
    return spec ? archiveSettings(spec, this.paths(id)) : undefined;
  }

  private track(id: string, spec: NodeBackupSpec, node: PostgresInstance): Tracked {
    let t = this.nodes.get(id);
    if (!t) {
      t = {
        id,
        spec,
        node,
        report: null,
        stanzaReady: false,
        info: null,
        infoAt: 0,
        nextAt: 0,
        failures: 0,
        failure: null,
        restore: null,
        restoring: false,
        job: null,
        lineage: null,
      };
      this.nodes.set(id, t);
    }
    if (JSON.stringify(t.spec) !== JSON.stringify(spec)) t.nextAt = 0;
    t.spec = spec;
    t.node = node;
    return t;
  }

  private async writeConfig(t: Tracked): Promise<void> {
    const owner = postgresUser();
    const paths = this.paths(t.id);
    for (const dir of [path.dirname(paths.configFile), paths.lockDir, paths.logDir]) {
      await ensureDir(dir, 0o700, owner);
    }
    await writeFileAtomic(paths.configFile, renderPgBackRestConf(t.spec, t.node, paths), 0o600, owner);
  }

  /**
   * Before the node starts (after its configuration is written): the pgBackRest config, and
   * the restore its spec asks for, run to the end. `reconfigure` writes the node's
   * configuration again (into the restored data dir).
   */
  async beforeStart(
    id: string,
    node: PostgresInstance,
    spec: NodeBackupSpec | undefined,
    reconfigure: () => Promise<unknown>,
  ): Promise<void> {
    // Business -> Starter: the node is a single one again.
    this.ha.delete(id);
    if (!spec) return;
    const t = this.track(id, spec, node);
    await this.writeConfig(t);
    // What is restored may come from an HA cluster's backups: a single node runs without Patroni's files.
    const single = () => asSingleNode(node.dataDir).then(reconfigure);
    if (spec.seed) await this.seed(t, spec.seed, single);
    await this.restoreAsAsked(t, single);
  }

  /**
   * An HA node, before Patroni starts it: the pgBackRest config its archive_command names.
   * Its backups are the leader's work (observeHa); a restore is sequenced by ha-restore.ts.
   */
  async prepareHa(id: string, node: PostgresInstance, spec: NodeBackupSpec | undefined): Promise<void> {
    this.ha.add(id);
    if (!spec) return;
    await this.writeConfig(this.track(id, spec, node));
  }

  /** Whether beforeStart has a restore in place to run or to finish for this spec. */
  async restoreDue(id: string, spec: NodeBackupSpec | undefined): Promise<boolean> {
    if (!spec) return false;
    const state = await this.restoreState(id);
    const asked = spec.restore?.id;
    return state.current || (asked !== undefined && !state.outcomes.some((o) => o.id === asked));
  }

  /** Whether this node already ran the restore `restoreId` (its outcome is in its state file). */
  async restoreOutcome(id: string, restoreId: string): Promise<RestoreOutcome | null> {
    return (await this.restoreState(id)).outcomes.find((o) => o.id === restoreId) ?? null;
  }

  /** The node's restore state file, as far as the agent needs it (restore.ts owns it). */
  private async restoreState(id: string): Promise<{ current: boolean; outcomes: RestoreOutcome[] }> {
    const text = await fs.readFile(this.stateFile(id), "utf8").catch(() => null);
    const state = text ? (JSON.parse(text) as { current?: unknown; outcomes?: RestoreOutcome[] }) : {};
    return { current: Boolean(state.current), outcomes: state.outcomes ?? [] };
  }

  /**
   * The HA cluster's restorer, its Patroni stopped: the restore of its spec, run to the end
   * on the node as a plain primary (restore.ts). Returns its outcome.
   */
  async restoreHa(
    id: string,
    node: PostgresInstance,
    spec: NodeBackupSpec,
    reconfigure: () => Promise<unknown>,
  ): Promise<RestoreOutcome | null> {
    const t = this.track(id, spec, node);
    await this.writeConfig(t);
    await this.restoreAsAsked(t, reconfigure);
    return t.restore;
  }

  /** An HA restore that could not start (the cluster did not stop): failed, nothing touched. */
  async refuseRestore(id: string, spec: NodeBackupSpec, message: string): Promise<RestoreOutcome | null> {
    const t = this.nodes.get(id);
    if (!spec.restore || !t) return null;
    const target = { id: spec.restore.id, targetTime: new Date(spec.restore.targetTime) };
    t.restore = await this.restorer(t, () => Promise.resolve()).refuse(target, message);
    return t.restore;
  }

  private restorer(t: Tracked, reconfigure: () => Promise<unknown>): InPlaceRestore {
    return new InPlaceRestore({
      node: t.node,
      pgbackrest: new PgBackRest(this.paths(t.id).configFile, t.spec.stanza),
      stateFile: this.stateFile(t.id),
      reconfigure,
      now: () => this.now(),
      onStep: (s) => this.opts.log?.info("restore step", { inst: t.id, step: s.step, ms: s.ms }),
    });
  }

  /** The restore the spec asks for, resumed or run to the end; nothing when none is asked. */
  private async restoreAsAsked(t: Tracked, reconfigure: () => Promise<unknown>): Promise<void> {
    const { spec } = t;
    const restorer = this.restorer(t, reconfigure);
    const target = spec.restore
      ? { id: spec.restore.id, targetTime: new Date(spec.restore.targetTime) }
      : null;
    const state = await restorer.read();
    const known = target && state.outcomes.some((o) => o.id === target.id);
    if (!state.current && (!target || known)) {
      t.restore = state.outcomes.at(-1) ?? null;
      return;
    }
    // A backup running against the server that is about to be stopped would only fail.
    await this.cancel(t);
    t.restoring = true;
    try {
      t.restore = await restorer.ensure(target);
    } finally {
      t.restoring = false;
      // The restore may have started a new timeline: look at the stanza again at once.
      t.info = null;
      t.lineage = null;
      t.nextAt = 0;
    }
  }

  /** A fork's node takes its data from the source's backups before it first starts. */
  private async seed(t: Tracked, seed: NodeSeedSpec, reconfigure: () => Promise<unknown>): Promise<void> {
    const seeder = new SeedFromBackup({
      node: t.node,
      source: new PgBackRest(this.paths(t.id).seedConfigFile, seed.stanza),
      stateFile: path.join(this.opts.dirOf(t.id), "backup-seed.json"),
      reconfigure,
    });
    if (await seeder.isDone(seed.id)) return;
    await this.cancel(t);
    const paths = this.paths(t.id);
    // The source's repository and key, for restore and archive-get only (never a backup,
    // so the retention below is never applied to the source).
    const conf = renderPgBackRestConf(seedSourceSpec(t.spec, seed), t.node, paths);
    await writeFileAtomic(paths.seedConfigFile, conf, 0o600, postgresUser());
    t.restoring = true;
    try {
      await seeder.ensure(seed);
      await fs.rm(paths.seedConfigFile, { force: true });
    } finally {
      t.restoring = false;
      t.nextAt = 0;
    }
  }

  /**
   * The heartbeat's look (no I/O): starts a background check when one is due on a running
   * node, and returns the last report with the last restore's outcome.
   */
  observe(
    id: string,
    node: PostgresInstance,
    spec: NodeBackupSpec | undefined,
    running: boolean,
  ): BackupReport | undefined {
    // An HA node is observed through observeHa (the driver looks at every node this way too).
    if (!spec || this.ha.has(id)) return undefined;
    return this.look(id, node, spec, running);
  }

  private look(id: string, node: PostgresInstance, spec: NodeBackupSpec, running: boolean) {
    const t = this.track(id, spec, node);
    if (running && !t.job && !t.restoring && this.now().getTime() >= t.nextAt) this.startCheck(t);
    // Between checks: a backup running would hold the stanza's lock the verdict is written under.
    if (running && !t.job && !t.restoring && t.info && spec.verify !== false) this.verifyNext(t);
    return t.report ? { ...t.report, restore: t.restore, failure: t.failure } : undefined;
  }

  /**
   * The heartbeat's look at an HA node: only the leader checks, backs up and reports (the
   * stanza is the cluster's, and a standby's view of it would be stale). A node that stops
   * leading drops its work and its report; it looks afresh if it leads again.
   */
  observeHa(
    id: string,
    node: PostgresInstance,
    spec: NodeBackupSpec | undefined,
    running: boolean,
    leading: boolean,
  ): BackupReport | undefined {
    this.ha.add(id);
    if (!spec) return undefined;
    if (leading) return this.look(id, node, spec, running);
    const t = this.nodes.get(id);
    if (t) {
      t.job?.abort.abort();
      Object.assign(t, {
        report: null,
        failure: null,
        info: null,
        lineage: null,
        stanzaReady: false,
        nextAt: 0,
      });
    }
    return undefined;
  }

  /** Verifies the node's next unverified full backup (one at a time per host). */
  private verifyNext(t: Tracked): void {
    this.verifications.consider({
      id: t.id,
      configFile: this.paths(t.id).configFile,
      stanza: t.spec.stanza,
      backups: t.info?.backups ?? [],
      timeline: t.report?.timelines ?? t.report?.timeline ?? null,
      onDone: (label, outcome) => this.verified(t, label, outcome),
    });
  }

  /** The verdict is in the repository: the known backup list says so too, until the next info. */
  private verified(t: Tracked, label: string, outcome: VerifyOutcome): void {
    const set = t.info?.backups.find((b) => b.label === label);
    if (!set) return;
    set.annotations[VERIFY_ANNOTATIONS.status] = outcome.status;
    set.annotations[VERIFY_ANNOTATIONS.at] = outcome.at;
    set.annotations[VERIFY_ANNOTATIONS.detail] = outcome.detail;
    if (t.report) t.report = { ...t.report, backups: t.info!.backups.map(backupReportOf) };
    this.opts.onNews?.();
  }

  private startCheck(t: Tracked): void {
    const abort = new AbortController();
    const done = this.check(t, abort.signal).then(
      () => {
        t.failures = 0;
        t.nextAt = this.now().getTime() + t.spec.checkEveryS * 1000;
      },
      () => {
        t.failures++;
        const wait = Math.min(MAX_RETRY_MS, t.spec.checkEveryS * 1000 * 2 ** Math.min(t.failures, 10));
        t.nextAt = this.now().getTime() + wait;
      },
    );
    t.job = { done: done.finally(() => (t.job = null)), abort };
  }

  /**
   * One look at the node's backups; takes a full backup when one is due. Then what a finished
   * restore left goes: its original data dir, removed off the restore's path (for 1 GiB it
   * took ~0.8 s there, and as long again when run beside the node's first convergence, whose
   * commits wait on the same disk), after the new timeline's first backup.
   */
  private async check(t: Tracked, signal: AbortSignal): Promise<void> {
    try {
      await this.lookAndBackUp(t, signal);
    } finally {
      if (!signal.aborted) {
        await this.restorer(t, () => Promise.resolve())
          .dropLeftovers()
          .catch((err: Error) =>
            this.opts.log?.warn("cannot remove a restore's original data dir", {
              inst: t.id,
              err: err.message,
            }),
          );
      }
    }
  }

  private async lookAndBackUp(t: Tracked, signal: AbortSignal): Promise<void> {
    const startedAt = performance.now();
    const br = new PgBackRest(this.paths(t.id).configFile, t.spec.stanza);
    await this.writeConfig(t);
    if (!t.stanzaReady) {
      await this.recordingFailure(t, "stanza-create", signal, async () => {
        await ensureRepository(t.spec.repoPath, t.spec.s3);
        await br.stanzaCreate(signal);
      });
      t.stanzaReady = true;
    }
    if (!t.info || Date.now() - t.infoAt > INFO_REFRESH_MS) await this.refreshInfo(t, br, signal);
    if (!t.restore) t.restore = (await this.restoreState(t.id)).outcomes.at(-1) ?? null;
    let status = await readArchiveStatus(t.node.superuserConfig(), t.node.dataDir);
    if (t.lineage?.timeline !== status.timeline) {
      const timelines = await br.lineage(status.timeline, signal);
      // A promotion archives its history first: until then, no backup is decided on a guess.
      if (!timelines) throw new Error(`the history of timeline ${status.timeline} is not archived yet`);
      // A standby promoted here streamed segments its dead leader may not have archived.
      await pushAncestorSegments(br, t.node.dataDir, timelines.slice(1), signal);
      t.lineage = { timeline: status.timeline, timelines };
    }
    this.publish(t, status);
    const lineage = t.lineage.timelines;
    const reason = fullBackupDue(t.info!.backups, lineage, this.now(), t.spec.fullEveryHours);
    if (!reason) return;
    const queuedAt = performance.now();
    const began = await this.slots.run(async () => {
      const at = performance.now();
      await this.recordingFailure(t, "backup", signal, () =>
        br.backupFull({ "cellar-reason": reason }, signal),
      );
      return at;
    });
    t.failure = null;
    const listedAt = performance.now();
    await this.refreshInfo(t, br, signal);
    status = await readArchiveStatus(t.node.superuserConfig(), t.node.dataDir);
    this.publish(t, status);
    this.opts.onNews?.();
    // Where a backup's time went: the look before it, a slot, pgBackRest, the listing after it.
    this.opts.log?.info("full backup taken", {
      inst: t.id,
      reason,
      look_ms: Math.round(queuedAt - startedAt),
      slot_wait_ms: Math.round(began - queuedAt),
      backup_ms: Math.round(listedAt - began),
      list_ms: Math.round(performance.now() - listedAt),
    });
  }

  private async refreshInfo(t: Tracked, br: PgBackRest, signal: AbortSignal): Promise<void> {
    t.info = await br.info(signal);
    t.infoAt = Date.now();
  }

  /**
   * Runs a step whose failure is a failed backup (reported, and an event for the user).
   * Another pgBackRest of this stanza holding the lock (one left by a killed agent) is not.
   */
  private async recordingFailure(
    t: Tracked,
    what: string,
    signal: AbortSignal,
    step: () => Promise<void>,
  ): Promise<void> {
    try {
      await step();
    } catch (err) {
      const busy = err instanceof PgBackRestError && err.isLockConflict;
      if (!busy && !signal.aborted) {
        t.failure = {
          at: this.now().toISOString(),
          message: `${what}: ${(err as Error).message}`.slice(0, 1000),
        };
      }
      throw err;
    }
  }

  private publish(t: Tracked, status: ArchiveStatus): void {
    t.report = {
      stanza: t.spec.stanza,
      timeline: status.timeline,
      ...(t.lineage?.timeline === status.timeline ? { timelines: t.lineage.timelines } : {}),
      backups: (t.info?.backups ?? []).map(backupReportOf),
      archived_until: status.archivedUntil?.toISOString() ?? null,
      archive_error: status.error,
      failure: t.failure,
      restore: t.restore,
      checked_at: this.now().toISOString(),
    };
  }

  private async cancel(t: Tracked): Promise<void> {
    if (!t.job) return;
    t.job.abort.abort();
    await t.job.done;
  }

  /** The node is gone from this host: its background work stops (the repository stays). */
  async forget(id: string): Promise<void> {
    await this.verifications.forget(id);
    this.ha.delete(id);
    const t = this.nodes.get(id);
    if (!t) return;
    await this.cancel(t);
    this.nodes.delete(id);
  }

  /** Agent shutdown: running pgBackRest commands are stopped (the next agent resumes). */
  async stop(): Promise<void> {
    await Promise.all([...this.nodes.values()].map((t) => this.cancel(t)));
    await this.verifications.stop();
  }
}

/**
 * The complete segments of earlier timelines of the lineage still in pg_wal, pushed into the
 * archive (pgBackRest skips those already there with the same checksum). A leader killed
 * before its archiver pushed its last segments would otherwise leave a gap in the history a
 * restore replays; the promoted standby received them by streaming but, with archive_mode
 * `on`, never archives them itself (PostgreSQL marks them done).
 */
async function pushAncestorSegments(
  br: PgBackRest,
  dataDir: string,
  timelines: number[],
  signal: AbortSignal,
): Promise<void> {
  if (timelines.length === 0) return;
  const names = await fs.readdir(path.join(dataDir, "pg_wal")).catch(() => [] as string[]);
  for (const name of names.sort()) {
    const timeline = parseSegment(name)?.timeline;
    if (timeline !== undefined && timelines.includes(timeline)) {
      await br.archivePush(path.join(dataDir, "pg_wal", name), signal);
    }
  }
}

/**
 * A data dir restored from a backup of an HA cluster's node holds Patroni's files: its
 * generated postgresql.conf (including the original, kept as postgresql.base.conf), its
 * cached dynamic configuration. A single node gets the original back; Patroni, if it takes
 * the node over later (ha-changes.ts), sees a single node's data dir.
 */
async function asSingleNode(dataDir: string): Promise<void> {
  const base = path.join(dataDir, "postgresql.base.conf");
  const patronis = await fs.access(base).then(
    () => true,
    () => false,
  );
  if (patronis) await fs.rename(base, path.join(dataDir, "postgresql.conf"));
  for (const name of ["patroni.dynamic.json", "standby.signal"]) {
    await fs.rm(path.join(dataDir, name), { force: true });
  }
}

/** At most `size` tasks at once; the others wait their turn. */
class Slots {
  private busy = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly size: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    // A finishing task hands its slot straight to the next in line.
    if (this.busy >= this.size) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.busy++;
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.busy--;
    }
  }
}
