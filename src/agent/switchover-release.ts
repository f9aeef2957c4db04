// The fast end of a planned switchover. Patroni's graceful demote releases the leader key
// once pg_control says "shut down" and the candidate has the shutdown checkpoint, but it
// finds out slowly: pg_controldata every 0.1 s, then pg_controldata and pg_waldump again
// and a REST call, all from the node's sandbox while PostgreSQL shuts down beside it (0.4 s
// to over 1 s of the switchover's write pause). The leader's agent watches the same two
// facts itself, pg_control's bytes and the candidate's WAL position, and hands the key over
// as soon as both hold. The condition is Patroni's own, so nothing is given up for it:
// - a cleanly shut-down primary accepts no more commits, and everything it acknowledged
//   precedes its shutdown checkpoint;
// - a candidate on that timeline whose WAL reaches the checkpoint record has all of it (with
//   archiving on, the record opens a new segment the stream never sends: the candidate's
//   WAL then ends at the segment boundary just before it, which is enough, as for Patroni).
// Patroni's own release still runs; it finds the key gone or no longer its own and leaves it.
import type { EtcdClient } from "../engines/etcd/etcd-client.ts";
import { readControlState, walEndBefore, type ControlState } from "../engines/postgresql/pg-control.ts";
import type { PatroniRest } from "../engines/postgresql/patroni-rest.ts";
import { waitFor } from "../engines/postgresql/process-watch.ts";

/** pg_control is a file read; the candidate is a TLS request to its Patroni, asked less often. */
const POLL_MS = 20;
const CANDIDATE_POLL_MS = 50;
/** A demote's shutdown takes about a second; past this the fast path gives up to Patroni. */
const SHUTDOWN_WAIT_MS = 30_000;
/** The candidate receives the checkpoint record within moments of the shutdown, or not soon. */
const CANDIDATE_WAIT_MS = 3_000;

export interface SwitchoverRelease {
  /** The old leader's data dir (its pg_control is read, never written). */
  dataDir: string;
  /** The candidate's Patroni REST API. */
  candidate: PatroniRest;
  etcd: EtcdClient;
  /** The cluster's leader key and the old leader's member name (the key's value). */
  leaderKey: string;
  member: string;
  /** Ends the watch early: the switchover finished (or failed) without it. */
  done: () => boolean;
}

export type ReleaseOutcome =
  | { released: true; checkpointLsn: bigint; shutdownMs: number; candidateMs: number }
  | { released: false; why: string };

/**
 * Watches the old leader's shutdown and releases the leader key once the candidate has the
 * shutdown checkpoint. Only a shutdown seen after the server was in production counts.
 */
export async function releaseOnCleanShutdown(r: SwitchoverRelease): Promise<ReleaseOutcome> {
  const started = performance.now();
  let sawProduction = false;
  let shutDown: ControlState | null = null;
  const settled = await waitFor(
    "the old leader's clean shutdown",
    async () => {
      if (r.done()) return true;
      const control = await readControlState(r.dataDir);
      if (control?.state === "in production") sawProduction = true;
      else if (control?.state === "shut down" && sawProduction) shutDown = control;
      return shutDown !== null;
    },
    SHUTDOWN_WAIT_MS,
    POLL_MS,
  ).then(
    () => true,
    () => false,
  );
  const checkpoint = shutDown as ControlState | null;
  if (!settled || checkpoint === null) return { released: false, why: "no clean shutdown seen" };
  const shutdownMs = Math.round(performance.now() - started);

  let last = "no answer";
  const reached = await waitFor(
    "the candidate to reach the shutdown checkpoint",
    async () => {
      if (r.done()) return true;
      const details = await r.candidate.details(1000);
      if (details) last = `timeline ${details.timeline}, WAL at ${details.walPosition}`;
      return (
        details !== null &&
        details.timeline === checkpoint.timeline &&
        details.walPosition !== null &&
        details.walPosition >= walEndBefore(checkpoint.checkpointLsn)
      );
    },
    CANDIDATE_WAIT_MS,
    CANDIDATE_POLL_MS,
  ).then(
    () => !r.done(),
    () => false,
  );
  if (!reached)
    return {
      released: false,
      why: `the candidate did not report the shutdown checkpoint ${checkpoint.checkpointLsn} (timeline ${checkpoint.timeline}): ${last}`,
    };
  const candidateMs = Math.round(performance.now() - started) - shutdownMs;
  if (!(await r.etcd.deleteIfValue(r.leaderKey, r.member)))
    return { released: false, why: "the leader key was already released" };
  return { released: true, checkpointLsn: checkpoint.checkpointLsn, shutdownMs, candidateMs };
}
