// The reconcile loop: claims due databases from the queue and runs one pass on each.
// A pass returns {requeueAfterMs?, message}; the message is logged (and shown as the reason).
import { randomBytes } from "node:crypto";
import type { Logger } from "../log.ts";
import type { Db } from "../store/db.ts";
import { claimNext, completeClaim, renewClaim } from "../store/reconcile-queue.store.ts";

export interface PassResult {
  /** Run again after this delay (work in progress, or waiting for something). */
  requeueAfterMs?: number;
  /** One sentence saying what the pass decided. */
  message: string;
}

export type ReconcilePass = (databaseId: string) => Promise<PassResult>;

export interface ReconcileLoop {
  /** Wakes the loop now instead of at its next poll. */
  kick(): void;
  /** Runs passes until nothing is due (tests use it to wait for convergence). */
  drain(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * A claim lasts this long unless renewed while its pass runs: a controller killed mid-pass
 * holds its databases back for at most this long, not for as long as the longest pass.
 */
const LEASE_MS = 10_000;
const MAX_BACKOFF_MS = 60_000;

export function backoffMs(attempts: number): number {
  return Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(attempts, 10));
}

export function startReconcileLoop(opts: {
  db: Db;
  pass: ReconcilePass;
  log: Logger;
  pollMs: number;
  /** false: no background polling (tests call drain()). */
  background?: boolean;
}): ReconcileLoop {
  const worker = `w-${process.pid}-${randomBytes(3).toString("hex")}`;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<number> | null = null;

  const runOne = async (): Promise<boolean> => {
    const item = await claimNext(opts.db, worker, LEASE_MS);
    if (!item) return false;
    const log = opts.log.child({ db: item.databaseId });
    const renew = setInterval(() => {
      renewClaim(opts.db, item, worker, LEASE_MS).catch((err: Error) =>
        log.warn("cannot renew the claim", { err: err.message }),
      );
    }, LEASE_MS / 3);
    try {
      const result = await opts.pass(item.databaseId);
      log.info(result.message);
      await completeClaim(opts.db, item, worker, result);
    } catch (err) {
      const delay = backoffMs(item.attempts);
      const message = `pass failed, retrying in ${Math.round(delay / 1000)} s: ${(err as Error).message}`;
      log.warn(message);
      await completeClaim(opts.db, item, worker, { requeueAfterMs: delay, message, failed: true });
    } finally {
      clearInterval(renew);
    }
    return true;
  };

  const drain = (): Promise<number> => {
    // One drain at a time: a kick during a drain is served by the drain in progress.
    running ??= (async () => {
      let n = 0;
      try {
        while (!stopped && (await runOne())) n++;
      } finally {
        running = null;
      }
      return n;
    })();
    return running;
  };

  const schedule = (ms: number) => {
    if (stopped || opts.background === false) return;
    clearTimeout(timer);
    timer = setTimeout(() => {
      drain()
        .catch((err: Error) => opts.log.error("reconcile loop error", { err: err.message }))
        .finally(() => schedule(opts.pollMs));
    }, ms);
  };
  schedule(0);

  return {
    kick: () => schedule(0),
    drain,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
