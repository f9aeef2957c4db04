// A point-in-time restore of a node in place. Its progress is kept in a state file, so an
// agent killed at any step resumes where it was: the restore is redone into a side
// directory, swapped in with the original kept aside, and the original comes back if the
// restored server does not become a primary (data-swap.ts).
//
//   prepared   a backup set is chosen, a commit past the target is made (node runs)
//   restoring  pgBackRest restores into <pgdata>.restore while the node still serves; then the
//              node stops and the WAL its archive may lack yet is copied beside the restore
//   swapping   <pgdata> -> <pgdata>.pre-restore, <pgdata>.restore -> <pgdata>
//   swapped    the restored server replays up to the target and promotes
import fs from "node:fs/promises";
import path from "node:path";
import { ensureDir, postgresUser, writeFileAtomic } from "../command.ts";
import { EngineError } from "../errors.ts";
import type { PostgresInstance } from "../instance.ts";
import { queryEach } from "../superuser.ts";
import { readArchiveStatus } from "./archive-status.ts";
import { chooseBackupSet, parseSegment } from "./backup-info.ts";
import { DataDirSwap } from "./data-swap.ts";
import type { PgBackRest } from "./pgbackrest.ts";
import type { RestoreOutcome } from "./types.ts";

export interface RestoreTarget {
  id: string;
  targetTime: Date;
}

type Phase = "prepared" | "restoring" | "swapping" | "swapped";

interface Progress {
  id: string;
  targetTime: string;
  set: string;
  phase: Phase;
  /** The timeline recovery follows: the node's, whose history may pass through the set's. */
  timeline?: number;
  /** How long each step took so far (kept across an agent restart). */
  steps?: RestoreStep[];
  /** The WAL segment holding the commit past the target (absent: a restore of an older agent). */
  walEnd?: string;
}

/** One step of a restore: when it started and how long it took. */
export interface RestoreStep {
  step: string;
  at: string;
  ms: number;
}

interface StateFile {
  current: Progress | null;
  outcomes: RestoreOutcome[];
  /** The steps of the last restore that ended, for whoever wants to know where its time went. */
  lastSteps?: { id: string; steps: RestoreStep[] };
}

export interface InPlaceRestoreOptions {
  node: PostgresInstance;
  pgbackrest: PgBackRest;
  /** Kept beside the node (not in its data dir, which is swapped). */
  stateFile: string;
  /** Writes the node's configuration files (the restored dir holds those of the backup). */
  reconfigure: () => Promise<unknown>;
  now?: () => Date;
  /** How long the restored server may replay WAL before the restore is given up. */
  promoteTimeoutMs?: number;
  /** Told of each step as it ends (the agent logs it). */
  onStep?: (step: RestoreStep) => void;
}

/** Outcomes remembered, so a request seen again is not run twice. */
const KEPT_OUTCOMES = 20;

class RestoreRefused extends EngineError {}

export class InPlaceRestore {
  private readonly swap: DataDirSwap;

  constructor(private readonly opts: InPlaceRestoreOptions) {
    this.swap = new DataDirSwap(opts.node, {
      reconfigure: opts.reconfigure,
      ...(opts.promoteTimeoutMs !== undefined ? { promoteTimeoutMs: opts.promoteTimeoutMs } : {}),
    });
  }

  private now(): Date {
    return this.opts.now?.() ?? new Date();
  }

  async read(): Promise<StateFile> {
    const text = await fs.readFile(this.opts.stateFile, "utf8").catch(() => null);
    return text ? (JSON.parse(text) as StateFile) : { current: null, outcomes: [] };
  }

  private async save(state: StateFile): Promise<void> {
    await writeFileAtomic(this.opts.stateFile, JSON.stringify(state), 0o600, undefined);
  }

  /** The outcome of the last restore this node finished, if any. */
  async lastOutcome(): Promise<RestoreOutcome | null> {
    return (await this.read()).outcomes.at(-1) ?? null;
  }

  /** Whether a restore is under way (the node must not be started by anyone else then). */
  async inProgress(): Promise<boolean> {
    return (await this.read()).current !== null;
  }

  /**
   * Brings the node to `target` (null: no restore asked). A restore already under way is
   * finished first; one already finished is not run again. Returns its outcome.
   */
  async ensure(target: RestoreTarget | null): Promise<RestoreOutcome | null> {
    const state = await this.read();
    if (state.current && state.current.id !== target?.id) await this.advance(state);
    if (!target) return state.outcomes.at(-1) ?? null;
    const known = state.outcomes.find((o) => o.id === target.id);
    if (known) return known;
    if (!state.current) {
      // A previous restore's original must not pass for this one's (swap.ts keeps `aside`).
      await this.swap.dropAside();
      try {
        state.current = await this.prepare(target);
      } catch (err) {
        return this.finish(state, target.id, (err as Error).message);
      }
      await this.save(state);
    }
    return this.advance(state);
  }

  /** Runs `fn` as the restore's step `step`: how long it took goes into `steps`. */
  private async timed<T>(steps: RestoreStep[], step: string, fn: () => Promise<T>): Promise<T> {
    const at = this.now().toISOString();
    const t0 = performance.now();
    try {
      return await fn();
    } finally {
      const done = { step, at, ms: Math.round(performance.now() - t0) };
      steps.push(done);
      this.opts.onStep?.(done);
    }
  }

  /**
   * The node's timeline (it is started if need be) and the timelines whose backups lead to
   * it: an HA cluster's failovers continue the history, so backups of earlier ones count.
   */
  private async lineage(): Promise<{ timeline: number; lineage: number[] }> {
    await this.opts.node.start();
    const { timeline } = await readArchiveStatus(this.opts.node.superuserConfig());
    return { timeline, lineage: (await this.opts.pgbackrest.lineage(timeline)) ?? [timeline] };
  }

  /** Runs with the node up: nothing is touched if the target cannot be reached. */
  private async prepare(target: RestoreTarget): Promise<Progress> {
    const { node, pgbackrest } = this.opts;
    if (target.targetTime > this.now()) {
      throw new RestoreRefused(`the target ${target.targetTime.toISOString()} is in the future`);
    }
    const steps: RestoreStep[] = [];
    const timed = <T>(step: string, fn: () => Promise<T>) => this.timed(steps, step, fn);
    const [{ timeline, lineage }, info] = await timed(
      "node's timeline and lineage; the stanza's backups",
      () => Promise.all([this.lineage(), pgbackrest.info()]),
    );
    const set = chooseBackupSet(info.backups, lineage, target.targetTime);
    if (!set) {
      throw new RestoreRefused(
        `no backup of timeline ${lineage.join(", ")} ended by ${target.targetTime.toISOString()}: nothing to restore from`,
      );
    }
    // Recovery stops at the first commit after the target; without one it would run out of
    // WAL before the target and refuse to promote. This commit is that one. It need not be
    // archived: the segment holding it is copied into the restored dir once the node stopped
    // (carryWal). It writes no WAL before its commit record, so it commits asynchronously
    // (the stop flushes it): an Enterprise restorer, its standbys stopped and
    // synchronous_standby_names still in Patroni's config, does not wait for them.
    const walEnd = await timed("commit past the target", async () => {
      const results = await queryEach(node.superuserConfig(), [
        "SELECT txid_current()",
        "SELECT pg_walfile_name(pg_current_wal_insert_lsn()) AS wal",
      ]);
      return String(results[1]![0]!.wal);
    });
    return {
      id: target.id,
      targetTime: target.targetTime.toISOString(),
      set: set.label,
      phase: "prepared",
      timeline,
      steps,
      walEnd,
    };
  }

  /**
   * Removes the original data dir a finished restore kept aside (nothing while a restore is
   * under way: it may still need it). The caller runs it once the outcome is told and the
   * node's first backup is taken (node-backups.ts).
   */
  async dropLeftovers(): Promise<void> {
    if ((await this.read()).current) return;
    await this.swap.dropAside();
  }

  /** A checkpoint of the running node; a node already stopped (a resumed restore) needs none. */
  private async checkpoint(): Promise<void> {
    if (!(await this.opts.node.isReady())) return;
    await queryEach(this.opts.node.superuserConfig(), ["CHECKPOINT"], 10 * 60_000).catch(() => undefined);
  }

  /** Records `target` as failed without touching anything (it could not be started). */
  async refuse(target: RestoreTarget, message: string): Promise<RestoreOutcome> {
    const state = await this.read();
    return state.outcomes.find((o) => o.id === target.id) ?? this.finish(state, target.id, message);
  }

  private async advance(state: StateFile): Promise<RestoreOutcome> {
    const cur = state.current!;
    const swap = this.swap;
    const step = async (phase: Phase) => {
      cur.phase = phase;
      await this.save(state);
    };
    cur.steps ??= [];
    const timed = <T>(name: string, fn: () => Promise<T>) => this.timed(cur.steps!, name, fn);
    try {
      if (cur.phase === "prepared") await step("restoring");
      if (cur.phase === "restoring") {
        const into = await timed("side dir emptied", () => swap.freshSide());
        await timed("pgbackrest restore (the node still serves)", () =>
          Promise.all([
            this.opts.pgbackrest.restore({
              into,
              set: cur.set,
              targetTime: new Date(cur.targetTime),
              ...(cur.timeline !== undefined ? { timeline: cur.timeline } : {}),
            }),
            // Meanwhile, so that the fast shutdown below has little left to write.
            this.checkpoint(),
          ]),
        );
        await timed("node stopped", () => this.opts.node.stop("fast"));
        const walEnd = cur.walEnd;
        if (walEnd)
          await timed("unarchived WAL copied", () => carryWal(this.opts.node.dataDir, into, walEnd));
        await step("swapping");
      }
      if (cur.phase === "swapping") {
        await timed("data dirs swapped", () => swap.swap());
        await step("swapped");
      }
      await timed("restored server started", () => swap.startRestored());
      await timed("replayed and promoted", () => swap.waitPromoted());
      await timed("recovery settings reset", () => swap.resetRecoverySettings());
      // The original stays aside until dropLeftovers: removing a big one takes seconds.
      return await this.finish(state, cur.id, null);
    } catch (err) {
      await swap.rollBack();
      return this.finish(state, cur.id, (err as Error).message);
    }
  }

  private async finish(state: StateFile, id: string, error: string | null): Promise<RestoreOutcome> {
    const outcome: RestoreOutcome = {
      id,
      status: error === null ? "done" : "failed",
      error,
      at: this.now().toISOString(),
    };
    if (state.current?.id === id) state.lastSteps = { id, steps: state.current.steps ?? [] };
    state.current = null;
    state.outcomes = [...state.outcomes.filter((o) => o.id !== id), outcome].slice(-KEPT_OUTCOMES);
    await this.save(state);
    return outcome;
  }
}

/**
 * Copies from the stopped node's pg_wal into the restored dir's the segments of its timeline
 * up to `walEnd` (the one holding the commit past the target) that are not archived yet:
 * the last one, still incomplete, and any the archiver had not pushed. Recovery reads pg_wal
 * when archive-get finds nothing, so the target is reached without waiting for the archive;
 * the restored server archives what it did not get from there (the old timeline's last
 * segment as `.partial` at its promotion, complete ones at its first checkpoint).
 */
export async function carryWal(dataDir: string, into: string, walEnd: string): Promise<void> {
  const timeline = walEnd.slice(0, 8);
  const from = path.join(dataDir, "pg_wal");
  const to = path.join(into, "pg_wal");
  const owner = postgresUser();
  await ensureDir(to, 0o700, owner);
  for (const name of await fs.readdir(from)) {
    if (!parseSegment(name) || !name.startsWith(timeline) || name > walEnd) continue;
    const archived = await fs.access(path.join(from, "archive_status", `${name}.done`)).then(
      () => true,
      () => false,
    );
    if (archived) continue;
    await fs.copyFile(path.join(from, name), path.join(to, name));
    if (owner) await fs.chown(path.join(to, name), owner.uid, owner.gid);
    // A complete one is archived by the restored server at once (never the last: the
    // original, should it come back, goes on writing it).
    if (name < walEnd) await markReady(to, name, owner);
  }
}

async function markReady(walDir: string, segment: string, owner: ReturnType<typeof postgresUser>) {
  const status = path.join(walDir, "archive_status");
  await ensureDir(status, 0o700, owner);
  await writeFileAtomic(path.join(status, `${segment}.ready`), "", 0o600, owner);
}
