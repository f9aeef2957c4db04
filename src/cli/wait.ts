// `--wait`: poll until a database reaches what the user asked for, telling each change of
// state on stderr with the elapsed time and the reason the platform gives.
import { CliError } from "./http.ts";

export interface Observation {
  /** Short state word shown to the user (provisioning, running, deleted...). */
  state: string;
  /** The platform's explanation of the state, when it gives one. */
  reason?: string;
  /** The goal is reached. */
  done: boolean;
  /** The platform reports a failure: waiting stops with this message. */
  failed?: string;
}

export interface WaitOptions {
  /** What is waited for, as shown in messages ("add-on ad-... to be running"). */
  label: string;
  timeoutMs: number;
  intervalMs?: number;
  observe: () => Promise<Observation>;
  note: (line: string) => void;
  /** Added to the timeout message: how to check on it later. */
  hint?: string;
}

const DEFAULT_INTERVAL_MS = 1000;

/** `2s`, `90`, `10m`, `1h` → milliseconds. */
export function parseDuration(raw: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(raw.trim());
  if (!m) throw new CliError(`--timeout ${raw} is not a duration: use e.g. 90s, 10m or 1h`);
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? "s") as "ms" | "s" | "m" | "h"];
  const ms = n * unit;
  if (ms <= 0) throw new CliError(`--timeout ${raw} must be more than zero`);
  return ms;
}

const describe = (o: Observation) => (o.reason ? `${o.state}: ${o.reason}` : o.state);

export async function waitFor(opts: WaitOptions): Promise<Observation> {
  const started = Date.now();
  const deadline = started + opts.timeoutMs;
  const elapsed = () => `${Math.round((Date.now() - started) / 1000)}s`.padStart(5);
  let last = "";
  opts.note(`Waiting for ${opts.label} (timeout ${Math.round(opts.timeoutMs / 1000)}s)`);
  for (;;) {
    const seen = await opts.observe();
    const text = describe(seen);
    if (text !== last) {
      opts.note(`[${elapsed()}] ${text}`);
      last = text;
    }
    if (seen.failed) throw new CliError(`${opts.label} failed: ${seen.failed}`);
    if (seen.done) return seen;
    const left = deadline - Date.now();
    if (left <= 0) {
      const waited = Math.round((Date.now() - started) / 1000);
      throw new CliError(
        `timed out after ${waited}s waiting for ${opts.label}: still ${text}` +
          (opts.hint ? `\n${opts.hint}` : ""),
      );
    }
    await new Promise((r) => setTimeout(r, Math.min(opts.intervalMs ?? DEFAULT_INTERVAL_MS, left)));
  }
}
