// A point-in-time restore of a node in place. Its progress is kept in a state file, so an
// agent killed at any step resumes where it was: the restore is redone into a side
// directory, swapped in with the original kept aside, and the original comes back if the
// restored server does not become a primary (data-swap.ts).
//
//   prepared   a backup set is chosen, a commit past the target is archived (node runs)
//   restoring  node stopped; pgBackRest restores into <pgdata>.restore
//   swapping   <pgdata> -> <pgdata>.pre-restore, <pgdata>.restore -> <pgdata>
//   swapped    the restored server replays up to the target and promotes
import fs from "node:fs/promises";
import { writeFileAtomic } from "../command.ts";
import { EngineError } from "../errors.ts";
import type { PostgresInstance } from "../instance.ts";
import { queryOnce } from "../superuser.ts";
import { readArchiveStatus } from "./archive-status.ts";
import { chooseBackupSet } from "./backup-info.ts";
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
}

interface StateFile {
  current: Progress | null;
  outcomes: RestoreOutcome[];
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
      try {
        state.current = await this.prepare(target);
      } catch (err) {
        return this.finish(state, target.id, (err as Error).message);
      }
      await this.save(state);
    }
    return this.advance(state);
  }

  /** Runs with the node up: nothing is touched if the target cannot be reached. */
  private async prepare(target: RestoreTarget): Promise<Progress> {
    const { node, pgbackrest } = this.opts;
    if (target.targetTime > this.now()) {
      throw new RestoreRefused(`the target ${target.targetTime.toISOString()} is in the future`);
    }
    await node.start();
    const { timeline } = await readArchiveStatus(node.superuserConfig());
    // An HA cluster's failovers continue the history: backups of earlier timelines count.
    const lineage = (await pgbackrest.lineage(timeline)) ?? [timeline];
    const set = chooseBackupSet((await pgbackrest.info()).backups, lineage, target.targetTime);
    if (!set) {
      throw new RestoreRefused(
        `no backup of timeline ${lineage.join(", ")} ended by ${target.targetTime.toISOString()}: nothing to restore from`,
      );
    }
    // Recovery stops at the first commit after the target; without one in the archive it
    // would run out of WAL before the target and refuse to promote. This commit is that one,
    // and check archives the segment holding it. It writes no WAL before its commit record,
    // so it commits asynchronously: an Enterprise restorer, its standbys stopped and
    // synchronous_standby_names still in Patroni's config, does not wait for them.
    await queryOnce(node.superuserConfig(), "SELECT txid_current()");
    await pgbackrest.check();
    return {
      id: target.id,
      targetTime: target.targetTime.toISOString(),
      set: set.label,
      phase: "prepared",
      timeline,
    };
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
    try {
      if (cur.phase === "prepared") {
        await this.opts.node.stop("fast");
        await step("restoring");
      }
      if (cur.phase === "restoring") {
        const into = await swap.freshSide();
        await this.opts.pgbackrest.restore({
          into,
          set: cur.set,
          targetTime: new Date(cur.targetTime),
          ...(cur.timeline !== undefined ? { timeline: cur.timeline } : {}),
        });
        await step("swapping");
      }
      if (cur.phase === "swapping") {
        await swap.swap();
        await step("swapped");
      }
      await swap.promote();
      await swap.dropAside();
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
    state.current = null;
    state.outcomes = [...state.outcomes.filter((o) => o.id !== id), outcome].slice(-KEPT_OUTCOMES);
    await this.save(state);
    return outcome;
  }
}
