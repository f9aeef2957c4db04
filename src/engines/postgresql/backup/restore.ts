// A point-in-time restore of a node in place. Its progress is kept in a state file, so an
// agent killed at any step resumes where it was: the restore is redone into a side
// directory, swapped in with the original kept aside, and the original comes back if the
// restored server does not become a primary.
//
//   prepared   a backup set is chosen, a commit past the target is archived (node runs)
//   restoring  node stopped; pgBackRest restores into <pgdata>.restore
//   swapping   <pgdata> -> <pgdata>.pre-restore, <pgdata>.restore -> <pgdata>
//   swapped    the restored server replays up to the target and promotes
import fs from "node:fs/promises";
import { ensureDir, postgresUser, writeFileAtomic } from "../command.ts";
import { pathExists } from "../data-dir.ts";
import { EngineError } from "../errors.ts";
import type { PostgresInstance } from "../instance.ts";
import { queryOnce } from "../superuser.ts";
import { readArchiveStatus } from "./archive-status.ts";
import { chooseBackupSet } from "./backup-info.ts";
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
  private readonly side: string;
  private readonly aside: string;

  constructor(private readonly opts: InPlaceRestoreOptions) {
    this.side = `${opts.node.dataDir}.restore`;
    this.aside = `${opts.node.dataDir}.pre-restore`;
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
    const set = chooseBackupSet((await pgbackrest.info()).backups, timeline, target.targetTime);
    if (!set) {
      throw new RestoreRefused(
        `no backup of timeline ${timeline} ended by ${target.targetTime.toISOString()}: nothing to restore from`,
      );
    }
    // Recovery stops at the first commit after the target; without one in the archive it
    // would run out of WAL before the target and refuse to promote. This commit is that one,
    // and check archives the segment holding it.
    await queryOnce(node.superuserConfig(), "SELECT txid_current()");
    await pgbackrest.check();
    return { id: target.id, targetTime: target.targetTime.toISOString(), set: set.label, phase: "prepared" };
  }

  private async advance(state: StateFile): Promise<RestoreOutcome> {
    const cur = state.current!;
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
        await this.restoreIntoSide(cur);
        await step("swapping");
      }
      if (cur.phase === "swapping") {
        await this.swap();
        await step("swapped");
      }
      await this.promote();
      await fs.rm(this.aside, { recursive: true, force: true });
      return await this.finish(state, cur.id, null);
    } catch (err) {
      await this.rollBack();
      return this.finish(state, cur.id, (err as Error).message);
    }
  }

  private async restoreIntoSide(cur: Progress): Promise<void> {
    await this.opts.node.stop("fast");
    await fs.rm(this.side, { recursive: true, force: true });
    await ensureDir(this.side, 0o700, postgresUser());
    await this.opts.pgbackrest.restore({
      into: this.side,
      set: cur.set,
      targetTime: new Date(cur.targetTime),
    });
  }

  /** Idempotent: `aside` exists only once the original was moved there. */
  private async swap(): Promise<void> {
    const data = this.opts.node.dataDir;
    if (!(await pathExists(this.side))) return;
    if (!(await pathExists(this.aside))) {
      await fs.rename(data, this.aside);
    } else {
      // Whatever is at pgdata now was made while the original was aside (a crash between renames).
      await fs.rm(data, { recursive: true, force: true });
    }
    await fs.rename(this.side, data);
  }

  /** Starts the restored server and waits until it replayed up to the target and promoted. */
  private async promote(): Promise<void> {
    const { node } = this.opts;
    await this.opts.reconfigure();
    if (!(await node.seemsReady()) && !(await this.postmasterRuns())) await node.start();
    const deadline = Date.now() + (this.opts.promoteTimeoutMs ?? 60 * 60_000);
    for (;;) {
      if (await node.seemsReady()) {
        const rows = await queryOnce<{ r: boolean }>(
          node.superuserConfig(),
          "SELECT pg_is_in_recovery() AS r",
        );
        if (rows[0]?.r === false) break;
      } else if (!(await this.postmasterRuns())) {
        throw new EngineError(`the restored server stopped before it promoted: ${await this.logTail()}`);
      }
      if (Date.now() > deadline) throw new EngineError("the restored server did not promote in time");
      await new Promise((r) => setTimeout(r, 250));
    }
    // The recovery settings pgBackRest wrote are inert on a primary: removed all the same.
    const written = [
      "restore_command",
      "recovery_target_time",
      "recovery_target_action",
      "recovery_target_timeline",
    ];
    for (const name of [...written, "hot_standby"]) {
      await queryOnce(node.superuserConfig(), `ALTER SYSTEM RESET ${name}`);
    }
  }

  private async postmasterRuns(): Promise<boolean> {
    const pid = await this.opts.node.postmasterPid();
    if (pid === null) return false;
    const stat = await fs.readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "" && state !== "Z" && state !== "X";
  }

  private async logTail(): Promise<string> {
    const file = (await this.opts.node.currentLogFile()) ?? this.opts.node.startupLog;
    const text = await fs.readFile(file, "utf8").catch(() => "");
    const lines = text.trim().split("\n");
    return (
      lines
        .filter((l) => /FATAL|PANIC|ERROR/.test(l))
        .slice(-3)
        .join(" | ") || lines.slice(-3).join(" | ")
    );
  }

  /** Back to the data the node had before the restore (untouched while aside). */
  private async rollBack(): Promise<void> {
    const { node } = this.opts;
    await node.stop("immediate").catch(() => undefined);
    if (await pathExists(this.aside)) {
      await fs.rm(node.dataDir, { recursive: true, force: true });
      await fs.rename(this.aside, node.dataDir);
    }
    await fs.rm(this.side, { recursive: true, force: true });
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
