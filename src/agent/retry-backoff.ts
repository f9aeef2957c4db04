// Per-instance retry schedule of the agent: an instance that fails to converge is tried
// again after 1 s, 2 s, 4 s... up to a ceiling, not on every heartbeat; a success, or a
// new spec or desired state from the controller, starts the schedule over.

export interface RetryPolicy {
  firstMs: number;
  maxMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { firstMs: 1000, maxMs: 60_000 };

interface Entry {
  /** What was asked when it failed (spec generation and desired state). */
  ask: string;
  failures: number;
  retryAt: number;
}

export interface Failure {
  failures: number;
  delayMs: number;
}

/** The delay after the n-th consecutive failure (n >= 1). */
export function retryDelayMs(policy: RetryPolicy, failures: number): number {
  return Math.min(policy.maxMs, policy.firstMs * 2 ** Math.min(Math.max(failures - 1, 0), 30));
}

export class RetryBackoff {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    private readonly now: () => number = Date.now,
  ) {}

  /** May `id` be tried now? Yes unless it failed on this very `ask` and its delay runs. */
  due(id: string, ask: string): boolean {
    const e = this.entries.get(id);
    return !e || e.ask !== ask || this.now() >= e.retryAt;
  }

  /** Is `id` waiting for a retry (its last attempt on this `ask` failed)? */
  waiting(id: string, ask: string): boolean {
    const e = this.entries.get(id);
    return e !== undefined && e.ask === ask;
  }

  failed(id: string, ask: string): Failure {
    const prev = this.entries.get(id);
    const failures = prev && prev.ask === ask ? prev.failures + 1 : 1;
    const delayMs = retryDelayMs(this.policy, failures);
    this.entries.set(id, { ask, failures, retryAt: this.now() + delayMs });
    return { failures, delayMs };
  }

  succeeded(id: string): void {
    this.entries.delete(id);
  }

  /** Drops what is not in `keep` (instances the controller no longer asks for). */
  retain(keep: (id: string) => boolean): void {
    for (const id of this.entries.keys()) if (!keep(id)) this.entries.delete(id);
  }

  /**
   * Milliseconds until the earliest retry falls due, or null when nothing waits. `skip`
   * leaves out instances being tried right now (their due retry is under way).
   */
  nextDueInMs(skip: (id: string) => boolean = () => false): number | null {
    let next: number | null = null;
    for (const [id, e] of this.entries) {
      if (!skip(id)) next = next === null ? e.retryAt : Math.min(next, e.retryAt);
    }
    return next === null ? null : Math.max(0, next - this.now());
  }
}
