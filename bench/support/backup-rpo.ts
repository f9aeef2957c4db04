// RPO of a Starter: the data-loss window when its host dies with its data dir. A writer commits
// a row every 100 ms through the database's URL; the agent and the postmaster are killed -9 and
// the data dir is treated as lost; what the repository holds is restored (bare pgBackRest, to
// the archive's end) and its newest row compared with the last acknowledged one.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { BenchCellar } from "./cellar.ts";
import { BareServer } from "./backup-bare.ts";
import { clientOf, type Addon, type CellarBackups } from "./backup-cellar.ts";
import { waitUntil } from "./stats.ts";

export interface RpoRound {
  killAfterMs: number;
  lastAckId: number;
  restoredId: number;
  /** Acknowledgement time of the last write minus that of the newest restored one. */
  lossMs: number;
  /** How old Cellar's latest recoverable point was when the host died. */
  claimAgeMs: number;
  /** Every write acknowledged before the claimed point was restored. */
  claimSafe: boolean;
}

const WRITE_EVERY_MS = 100;

/** Commits a row every 100 ms until stopped or until a write fails (the crash). */
function startWriter(a: Addon, ca: string, firstId: number) {
  const acks = new Map<number, number>();
  let stopped = false;
  const done = (async () => {
    const c = clientOf(a.url, ca);
    await c.connect();
    try {
      for (let id = firstId; !stopped; id++) {
        await c.query("INSERT INTO w (id) VALUES ($1)", [id]);
        acks.set(id, Date.now());
        await new Promise((r) => setTimeout(r, WRITE_EVERY_MS));
      }
    } catch {
      // The server died under it: what was acknowledged is in `acks`.
    } finally {
      await c.end().catch(() => undefined);
    }
  })();
  return {
    acks,
    stop: async () => {
      stopped = true;
      await done;
    },
    done,
  };
}

export async function measureRpo(
  c: BenchCellar,
  cb: CellarBackups,
  host: string,
  a: Addon,
  round: number,
): Promise<RpoRound> {
  await cb.sql(a, "CREATE TABLE IF NOT EXISTS w (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())");
  await waitUntil(
    "a recovery window",
    10 * 60_000,
    async () => (await cb.window(a)).earliest !== undefined,
    500,
  );
  const firstId =
    Number((await cb.sql<{ m: string | null }>(a, "SELECT max(id) AS m FROM w"))[0]!.m ?? 0) + 1;
  const writer = startWriter(a, c.regionCa, firstId);
  // Anywhere in an archive_timeout cycle: 20 to 80 s of writes.
  const killAfterMs = 20_000 + Math.round(Math.random() * 60_000);
  const t0 = Date.now();
  await Promise.race([new Promise((r) => setTimeout(r, killAfterMs)), writer.done]);
  const claimed = Date.parse((await cb.window(a)).latest ?? "1970-01-01T00:00:00Z");
  const nodeDir = await cb.nodeDirOf(a);
  const agent = c.fleet.processOf(host)!;
  const exited = new Promise((resolve) => agent.once("exit", resolve));
  agent.kill("SIGKILL");
  await exited;
  const pid = Number(
    (await fs.readFile(path.join(nodeDir, "node", "pgdata", "postmaster.pid"), "utf8")).split("\n")[0],
  );
  process.kill(pid, "SIGKILL");
  const killedAt = Date.now();
  await writer.stop();
  const ids = [...writer.acks.keys()];
  const lastAckId = Math.max(firstId - 1, ...ids);

  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-bench-rpo-"));
  await fs.chmod(dir, 0o755);
  const bare = new BareServer(path.join(dir, "server"), 59_433 + round);
  let restoredId = 0;
  try {
    await bare.restoreAndPromote(cb.configFileOfDir(nodeDir), a.id, null);
    const rows = await bare.query<{ m: string | null }>("SELECT max(id) AS m FROM w", a.dbname);
    restoredId = Number(rows[0]?.m ?? 0);
  } finally {
    await bare.destroy();
    await fs.rm(dir, { recursive: true, force: true });
  }
  const ackOf = (id: number) => writer.acks.get(id) ?? t0;
  const lossMs = restoredId >= lastAckId ? 0 : ackOf(lastAckId) - ackOf(Math.max(restoredId, firstId - 1));
  const ackedBeforeClaim = ids.filter((id) => ackOf(id) <= claimed);
  const claimSafe = ackedBeforeClaim.every((id) => id <= restoredId);

  // The host comes back with its data dir (this run only pretended it was lost).
  c.fleet.startAgent(host);
  await waitUntil(
    "the database to serve again",
    10 * 60_000,
    async () => {
      await cb.sql(a, "SELECT 1");
      return true;
    },
    500,
  );
  return { killAfterMs, lastAckId, restoredId, lossMs, claimAgeMs: killedAt - claimed, claimSafe };
}
