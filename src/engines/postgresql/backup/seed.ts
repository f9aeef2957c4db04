// A fork's first data: the source database's backups restored to a point in time, in place
// of the freshly made data dir, then the source's protected user and database renamed to
// the fork's. Progress is kept in a state file: a killed agent resumes; a failure puts the
// fresh data dir back and throws (the agent retries the node later).
import fs from "node:fs/promises";
import pg from "pg";
import { writeFileAtomic } from "../command.ts";
import { EngineError } from "../errors.ts";
import type { PostgresInstance } from "../instance.ts";
import { queryOnce } from "../superuser.ts";
import { chooseBackupSet } from "./backup-info.ts";
import { DataDirSwap, TargetNotReachedError } from "./data-swap.ts";
import type { PgBackRest } from "./pgbackrest.ts";
import type { NodeSeedSpec } from "./types.ts";

type Phase = "choose" | "restoring" | "swapping" | "swapped" | "done";

interface SeedState {
  id: string;
  phase: Phase;
  set: string | null;
  /** Replay the whole archive: it holds no commit after the target (see below). */
  toEnd: boolean;
}

export interface SeedOptions {
  node: PostgresInstance;
  /** pgBackRest on the source's stanza (its repository and key), for this node's data dir. */
  source: PgBackRest;
  stateFile: string;
  reconfigure: () => Promise<unknown>;
}

export class SeedFromBackup {
  private readonly swap: DataDirSwap;

  constructor(private readonly opts: SeedOptions) {
    this.swap = new DataDirSwap(opts.node, { reconfigure: opts.reconfigure });
  }

  private async read(id: string): Promise<SeedState> {
    const text = await fs.readFile(this.opts.stateFile, "utf8").catch(() => null);
    const state = text ? (JSON.parse(text) as SeedState) : null;
    return state?.id === id ? state : { id, phase: "choose", set: null, toEnd: false };
  }

  private async save(state: SeedState): Promise<void> {
    await writeFileAtomic(this.opts.stateFile, JSON.stringify(state), 0o600, undefined);
  }

  async isDone(id: string): Promise<boolean> {
    return (await this.read(id)).phase === "done";
  }

  /** Brings the node's data to the seed's (idempotent; a finished seed is not run again). */
  async ensure(seed: NodeSeedSpec): Promise<void> {
    const state = await this.read(seed.id);
    if (state.phase === "done") return;
    const step = async (phase: Phase) => {
      state.phase = phase;
      await this.save(state);
    };
    if (state.phase === "choose") {
      const backups = (await this.opts.source.info()).backups;
      // An HA source's failovers continue its history: backups of earlier timelines count.
      const lineage = (await this.opts.source.lineage(seed.timeline)) ?? seed.timeline;
      const set = chooseBackupSet(backups, lineage, new Date(seed.targetTime));
      if (!set)
        throw new EngineError(`the source has no backup of timeline ${seed.timeline} by ${seed.targetTime}`);
      state.set = set.label;
      await step("restoring");
    }
    for (;;) {
      try {
        if (state.phase === "restoring") {
          const into = await this.swap.freshSide();
          const targetTime = state.toEnd ? null : new Date(seed.targetTime);
          await this.opts.source.restore({ into, set: state.set!, targetTime, timeline: seed.timeline });
          await step("swapping");
        }
        if (state.phase === "swapping") {
          await this.swap.swap();
          await step("swapped");
        }
        await this.swap.promote();
        await this.rename(seed.rename);
        await this.swap.dropAside();
        await step("done");
        return;
      } catch (err) {
        await this.swap.rollBack();
        // The target was checked against the source's archive: everything before it is
        // there, so an archive with no later commit ends exactly in the target's state.
        const again = err instanceof TargetNotReachedError && !state.toEnd;
        state.toEnd ||= again;
        await step("restoring");
        if (!again) throw err;
      }
    }
  }

  /** The source's protected user and database take the fork's names. Idempotent. */
  private async rename(r: NodeSeedSpec["rename"]): Promise<void> {
    const su = this.opts.node.superuserConfig();
    const exists = async (sql: string, name: string) => (await queryOnce(su, sql, [name])).length > 0;
    const DB = "SELECT 1 FROM pg_database WHERE datname = $1";
    const ROLE = "SELECT 1 FROM pg_roles WHERE rolname = $1";
    if (
      r.fromDatabase !== r.toDatabase &&
      (await exists(DB, r.fromDatabase)) &&
      !(await exists(DB, r.toDatabase))
    ) {
      const [from, to] = [pg.escapeIdentifier(r.fromDatabase), pg.escapeIdentifier(r.toDatabase)];
      await queryOnce(su, `ALTER DATABASE ${from} RENAME TO ${to}`);
    }
    if (r.fromUser !== r.toUser && (await exists(ROLE, r.fromUser)) && !(await exists(ROLE, r.toUser))) {
      const [from, to] = [pg.escapeIdentifier(r.fromUser), pg.escapeIdentifier(r.toUser)];
      await queryOnce(su, `ALTER ROLE ${from} RENAME TO ${to}`);
    }
  }
}
