// Replacing a node's data directory by a restored one, safely: the restore goes into a side
// directory, is swapped in with the original kept aside, and the original comes back if the
// restored server does not become a primary. Every step is idempotent (a killed agent
// repeats it). Used by the in-place restore and by forks.
import fs from "node:fs/promises";
import { ensureDir, postgresUser } from "../command.ts";
import { pathExists } from "../data-dir.ts";
import { EngineError } from "../errors.ts";
import { RECOVERY_ONLY_SETTINGS, type PostgresInstance } from "../instance.ts";
import { queryEach, queryOnce } from "../superuser.ts";

/** PostgreSQL ran out of archived WAL before it saw a commit past the recovery target. */
export class TargetNotReachedError extends EngineError {
  override name = "TargetNotReachedError";
}

const NOT_REACHED = "recovery ended before configured recovery target was reached";
/** The promotion is watched in postmaster.pid (a file read, no connection) this often. */
const PROMOTE_POLL_MS = 50;

export interface DataDirSwapOptions {
  /** Writes the node's configuration files (the restored dir holds those of the backup). */
  reconfigure: () => Promise<unknown>;
  /** How long the restored server may replay WAL before it is given up. */
  promoteTimeoutMs?: number;
}

export class DataDirSwap {
  readonly side: string;
  readonly aside: string;

  constructor(
    private readonly node: PostgresInstance,
    private readonly opts: DataDirSwapOptions,
  ) {
    this.side = `${node.dataDir}.restore`;
    this.aside = `${node.dataDir}.pre-restore`;
  }

  /** An empty side directory to restore into (the node may run meanwhile). */
  async freshSide(): Promise<string> {
    await fs.rm(this.side, { recursive: true, force: true });
    await ensureDir(this.side, 0o700, postgresUser());
    return this.side;
  }

  /** Stops the node and swaps. Idempotent: `aside` exists only once the original was moved there. */
  async swap(): Promise<void> {
    const data = this.node.dataDir;
    if (!(await pathExists(this.side))) return;
    await this.node.stop("fast");
    if (!(await pathExists(this.aside))) {
      await fs.rename(data, this.aside);
    } else {
      // Whatever is at pgdata now was made while the original was aside (a crash between renames).
      await fs.rm(data, { recursive: true, force: true });
    }
    await fs.rename(this.side, data);
  }

  /** Starts the restored server and waits until it replayed its WAL and promoted. */
  async promote(): Promise<void> {
    await this.startRestored();
    await this.waitPromoted();
    await this.resetRecoverySettings();
  }

  /** The node's configuration into the restored dir, and its server started (it replays). */
  async startRestored(): Promise<void> {
    const { node } = this;
    await this.opts.reconfigure();
    try {
      if (!(await node.seemsReady()) && !(await this.postmasterRuns())) await node.start();
    } catch (err) {
      throw await this.explained(err);
    }
  }

  /** Waits until the restored server replayed its WAL and promoted. */
  async waitPromoted(): Promise<void> {
    const { node } = this;
    try {
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
        await new Promise((r) => setTimeout(r, PROMOTE_POLL_MS));
      }
    } catch (err) {
      throw await this.explained(err);
    }
  }

  /** A server that ran out of WAL before its target says so in its log. */
  private async explained(err: unknown): Promise<unknown> {
    if ((await this.logTail()).includes(NOT_REACHED)) return new TargetNotReachedError(NOT_REACHED);
    return err;
  }

  /** pgBackRest's recovery settings are inert on a primary: removed all the same. */
  async resetRecoverySettings(): Promise<void> {
    // pgBackRest wrote them into postgresql.auto.conf.
    const resets = RECOVERY_ONLY_SETTINGS.map((name) => `ALTER SYSTEM RESET ${name}`);
    await queryEach(this.node.superuserConfig(), resets);
  }

  /** The restored server is a primary: the original is no longer needed. */
  async dropAside(): Promise<void> {
    await fs.rm(this.aside, { recursive: true, force: true });
  }

  /** Back to the data the node had before (untouched while aside). */
  async rollBack(): Promise<void> {
    await this.node.stop("immediate").catch(() => undefined);
    if (await pathExists(this.aside)) {
      await fs.rm(this.node.dataDir, { recursive: true, force: true });
      await fs.rename(this.aside, this.node.dataDir);
    }
    await fs.rm(this.side, { recursive: true, force: true });
  }

  private async postmasterRuns(): Promise<boolean> {
    const pid = await this.node.postmasterPid();
    if (pid === null) return false;
    const stat = await fs.readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "" && state !== "Z" && state !== "X";
  }

  /** The server's last errors (its collector's file, else pg_ctl's startup log). */
  private async logTail(): Promise<string> {
    const file = (await this.node.currentLogFile()) ?? this.node.startupLog;
    const text = await fs.readFile(file, "utf8").catch(() => "");
    const lines = text.trim().split("\n");
    const errors = lines.filter((l) => /FATAL|PANIC|ERROR/.test(l)).slice(-3);
    return (errors.length ? errors : lines.slice(-3)).join(" | ");
  }
}
