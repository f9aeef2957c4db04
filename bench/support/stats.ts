// Small helpers shared by the benchmarks: percentiles, bounded waits, machine facts, flags.
import fs from "node:fs";
import os from "node:os";

/** Nearest-rank percentile (p in 0..100) of a non-empty list. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1]!;
}

export const mean = (values: number[]): number =>
  values.length ? values.reduce((a, b) => a + b, 0) / values.length : NaN;

export const ms = (v: number): string => `${Math.round(v)} ms`;
export const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

/** Polls `check` until true; fails after `timeoutMs` with `detail()` (no fixed sleeps). */
export async function waitUntil(
  what: string,
  timeoutMs: number,
  check: () => Promise<boolean>,
  pollMs = 100,
  detail: () => string = () => "",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError = "";
  for (;;) {
    try {
      if (await check()) return;
    } catch (err) {
      lastError = (err as Error).message;
    }
    if (Date.now() > deadline) {
      const why = [detail(), lastError].filter(Boolean).join("; ");
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why ? ` (${why})` : ""}`);
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** Samples the 1-minute load average every few seconds while a benchmark runs. */
export function sampleLoad(everyMs = 5000): { stop(): { min: number; max: number; mean: number } } {
  const samples = [os.loadavg()[0]!];
  const timer = setInterval(() => samples.push(os.loadavg()[0]!), everyMs);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      samples.push(os.loadavg()[0]!);
      return { min: Math.min(...samples), max: Math.max(...samples), mean: mean(samples) };
    },
  };
}

export function machineFacts(): string {
  const memGiB = os.totalmem() / 1024 ** 3;
  const cpu = os.cpus()[0]?.model ?? "unknown CPU";
  return `${os.cpus().length} vCPU (${cpu}), ${memGiB.toFixed(1)} GiB RAM, ${os.type()} ${os.release()}`;
}

/** MemAvailable of /proc/meminfo in bytes (a cross-check of the PSS totals). */
export function memAvailableBytes(): number {
  const line = fs
    .readFileSync("/proc/meminfo", "utf8")
    .split("\n")
    .find((l) => l.startsWith("MemAvailable:"));
  return Number(line?.split(/\s+/)[1] ?? 0) * 1024;
}

/** `--name=value` flags; `--flag` alone is "true". */
export function parseFlags(argv: string[]): Map<string, string> {
  const flags = new Map<string, string>();
  for (const arg of argv) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (!m) throw new Error(`unknown argument ${arg} (flags look like --name=value)`);
    flags.set(m[1]!, m[2] ?? "true");
  }
  return flags;
}

export function intFlag(flags: Map<string, string>, name: string, fallback: number, min = 1): number {
  const raw = flags.get(name);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name}=${raw}: expected an integer >= ${min}`);
  return n;
}

/** Runs `fn` on each item with at most `limit` in flight. */
export async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T, i: number) => Promise<R>) {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** Runs `cleanup` once on SIGINT/SIGTERM (then exits 130), so an interrupted run leaves nothing. */
export function cleanupOnSignal(cleanup: () => Promise<void>): () => void {
  const handler = (signal: NodeJS.Signals) => {
    console.error(`\n${signal}: cleaning up...`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once("SIGINT", handler);
  process.once("SIGTERM", handler);
  return () => {
    process.off("SIGINT", handler);
    process.off("SIGTERM", handler);
  };
}
