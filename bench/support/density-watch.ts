// What the density benchmark watches besides the databases: the host's heartbeats in the
// store (longest silence, times marked unreachable) and the agent process's own CPU time.
import fs from "node:fs/promises";
import type { Queryable } from "../../src/store/db.ts";

export interface HeartbeatWatch {
  stop(): { maxSilenceS: number; unreachable: number };
}

export function watchHeartbeats(db: Queryable, hostName: string, everyMs = 500): HeartbeatWatch {
  let maxSilenceS = 0;
  let unreachable = 0;
  let last: string | null = null;
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    db.query<{ status: string; silence: number }>(
      `SELECT status, extract(epoch FROM now() - last_heartbeat_at)::float8 AS silence
         FROM hosts WHERE name = $1`,
      [hostName],
    )
      .then(({ rows }) => {
        const row = rows[0];
        if (!row) return;
        maxSilenceS = Math.max(maxSilenceS, row.silence);
        if (row.status === "unreachable" && last !== "unreachable") unreachable++;
        last = row.status;
      })
      .catch(() => undefined)
      .finally(() => {
        busy = false;
      });
  }, everyMs);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      return { maxSilenceS, unreachable };
    },
  };
}

/** CPU seconds of a process itself and of the children it reaped (du, cp, pg_ctl...). */
export async function processCpuSeconds(pid: number): Promise<{ own: number; children: number } | null> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, "utf8").catch(() => null);
  if (!stat) return null;
  // Fields after the command name (which may hold spaces): state is field 3, utime 14.
  const f = stat
    .slice(stat.lastIndexOf(")") + 2)
    .split(" ")
    .map(Number);
  const tick = 100; // USER_HZ on Linux
  const at = (i: number) => (f[i - 3] ?? 0) / tick;
  return { own: at(14) + at(15), children: at(16) + at(17) };
}
