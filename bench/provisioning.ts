// Provisioning latency, Cellar against the floor, side by side in one run.
//   floor:  a plain script: initdb, server certificate + TLS config, pg_ctl start, first
//           verify-full query (bench/support/floor.ts)
//   Cellar: POST /v1/apps/:app/addons (Starter) -> poll the add-on until running -> read
//           SCALINGO_POSTGRESQL_URL from the app's variables -> first verify-full query
// Rounds alternate which side goes first, so load drift hits both alike.
// Usage: npx tsx bench/provisioning.ts [--runs=20] [--keep] [--poll-ms=10] [--plan=postgresql-starter-512]
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import {
  deleteAddons,
  freePort,
  provisionAddon,
  queryOverTls,
  startBenchCellar,
  type BenchCellar,
} from "./support/cellar.ts";
import { Floor, type FloorRun } from "./support/floor.ts";
import {
  cleanupOnSignal,
  intFlag,
  machineFacts,
  mean,
  ms,
  parseFlags,
  percentile,
  sampleLoad,
} from "./support/stats.ts";

const flags = parseFlags(process.argv.slice(2));
const RUNS = intFlag(flags, "runs", 20);
const POLL_MS = intFlag(flags, "poll-ms", 10);
const PLAN = flags.get("plan") ?? "postgresql-starter-512";
// By default each add-on is deleted after its round, as the floor's instance is; --keep
// leaves them all running, so round n provisions on a host already holding n - 1.
const KEEP = flags.has("keep");
// Loopback addresses of this benchmark only (cellar up uses 127.20/127.21, tests 127.4x).
const SUBNET = 91;
const FLOOR_ADDRESS = `127.${SUBNET}.9.1`;
const ADDON_TIMEOUT_MS = 120_000;

interface CellarRun {
  totalMs: number;
  runningMs: number;
}

async function cellarOnce(c: BenchCellar, app: string): Promise<CellarRun & { addonId: string }> {
  const created = await c.api("POST", "/v1/apps", { app: { name: app } });
  if (created.status !== 201) throw new Error(`creating app ${app}: ${created.status}`);
  const t0 = performance.now();
  const p = await provisionAddon(c, app, PLAN, { timeoutMs: ADDON_TIMEOUT_MS, pollMs: POLL_MS });
  await queryOverTls(p.url, c.regionCa);
  return { totalMs: performance.now() - t0, runningMs: p.runningMs, addonId: p.addonId };
}

function summary(name: string, values: number[]): string {
  return `${name.padEnd(34)} p50 ${ms(percentile(values, 50)).padStart(8)}   p95 ${ms(percentile(values, 95)).padStart(8)}   mean ${ms(mean(values)).padStart(8)}   min ${ms(Math.min(...values)).padStart(8)}   max ${ms(Math.max(...values)).padStart(8)}`;
}

async function main(): Promise<void> {
  console.log(
    `machine: ${machineFacts()}; load average at start ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
  );
  console.log(
    `runs: ${RUNS} per side (+1 warm-up each, not counted), plan ${PLAN}, poll every ${POLL_MS} ms`,
  );
  const startedAt = performance.now();
  const cellar = await startBenchCellar({
    subnet: SUBNET,
    hosts: [
      {
        name: "bench-prov-s1",
        pool: "shared",
        vcpu: os.cpus().length,
        ramMb: Math.floor(os.totalmem() / 1024 / 1024),
        diskGb: 200,
      },
    ],
  });
  console.log(`Cellar up in ${ms(performance.now() - startedAt)} (data dir ${cellar.dataDir})`);
  const floorDir = path.join(cellar.dataDir, "floor");
  await fs.mkdir(floorDir, { mode: 0o755 });
  const floor = new Floor(floorDir, FLOOR_ADDRESS);
  const addons: Array<{ app: string; addonId: string }> = [];
  let floorLive: number | null = null;

  let cleaned: Promise<void> | null = null;
  const cleanup = () =>
    (cleaned ??= (async () => {
      if (floorLive !== null) await floor.remove(floorLive);
      if (addons.length) {
        const del = await deleteAddons(cellar, addons, 120_000);
        console.log(`deleted ${addons.length - del.left}/${addons.length} add-ons in ${ms(del.ms)}`);
      }
      await cellar.close();
    })());
  const unregister = cleanupOnSignal(cleanup);

  const floorRuns: FloorRun[] = [];
  const cellarRuns: CellarRun[] = [];
  const load = sampleLoad();
  try {
    for (let i = 0; i <= RUNS; i++) {
      const floorSide = async () => {
        floorLive = i;
        const r = await floor.once(i, await freePort(FLOOR_ADDRESS));
        await floor.remove(i);
        floorLive = null;
        return r;
      };
      const cellarSide = async () => {
        const r = await cellarOnce(cellar, `bench-prov-${i}`);
        const addon = { app: `bench-prov-${i}`, addonId: r.addonId };
        addons.push(addon);
        if (!KEEP) {
          // Like the floor's instance: gone before the next round (not timed).
          const del = await deleteAddons(cellar, [addon], 120_000);
          if (del.left === 0) addons.pop();
        }
        return r;
      };
      let f: FloorRun;
      let c: CellarRun;
      if (i % 2 === 0) {
        f = await floorSide();
        c = await cellarSide();
      } else {
        c = await cellarSide();
        f = await floorSide();
      }
      const label = i === 0 ? "warm-up" : `run ${String(i).padStart(2)}`;
      console.log(
        `${label}: floor ${ms(f.totalMs).padStart(8)}   Cellar ${ms(c.totalMs).padStart(8)} (running after ${ms(c.runningMs)})`,
      );
      if (i === 0) continue;
      floorRuns.push(f);
      cellarRuns.push(c);
    }
  } finally {
    const l = load.stop();
    console.log(
      `load average (1 min) during the runs: min ${l.min.toFixed(2)}, mean ${l.mean.toFixed(2)}, max ${l.max.toFixed(2)}`,
    );
    await cleanup();
    unregister();
  }

  const floorTotals = floorRuns.map((r) => r.totalMs);
  const cellarTotals = cellarRuns.map((r) => r.totalMs);
  console.log("\n== results (API call or script start -> first successful verify-full TLS query)");
  console.log(summary("floor (plain script)", floorTotals));
  for (const step of Object.keys(floorRuns[0]?.steps ?? {})) {
    console.log(
      summary(
        `  floor step: ${step}`,
        floorRuns.map((r) => r.steps[step]!),
      ),
    );
  }
  console.log(summary("Cellar (POST add-on -> query)", cellarTotals));
  console.log(
    summary(
      "  Cellar: POST -> status running",
      cellarRuns.map((r) => r.runningMs),
    ),
  );
  const r50 = percentile(cellarTotals, 50) / percentile(floorTotals, 50);
  const r95 = percentile(cellarTotals, 95) / percentile(floorTotals, 95);
  console.log(
    `ratio Cellar/floor: p50 ${r50.toFixed(2)}x, p95 ${r95.toFixed(2)}x (target <= 1.5x, stretch < 1x)`,
  );
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    console.error(`provisioning benchmark failed: ${err.stack ?? err.message}`);
    process.exit(1);
  },
);
