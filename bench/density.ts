// Density: how many idle Starter databases one shared host holds on this machine, and what
// each costs in memory as PSS (all postgres + HAProxy processes of the instances, from
// /proc/<pid>/smaps_rollup). Every database must still answer a verify-full TLS query at the
// end. Stops by itself (a provisioning budget, bounded waits) and removes all it made.
// Usage: npx tsx bench/density.ts [--count=300 | --quick] [--concurrency=25] [--settle-s=60]
//                   [--budget-min=15] [--max-failures=10] [--plan=postgresql-starter-512]
//                   [--profile-at=N [--profile-s=40]]  (CPU profile of the agent once N run)
//                   [--backups-settled-min=N]  (first wait up to N min for every first full
//                   backup to be taken and verified: the idle minute is then the steady state)
import os from "node:os";
import { loadConfig } from "../src/config.ts";
import { findPlan } from "../src/domain/catalog.ts";
import { loadCatalogFile } from "../src/main/controller.ts";
import {
  deleteAddons,
  sandboxesCpuSeconds,
  provisionAddon,
  queryOverTls,
  startBenchCellar,
  type BenchCellar,
  type Provisioned,
} from "./support/cellar.ts";
import { instancesMemory, processMemory } from "./support/memory.ts";
import { printSummary, profileProcess } from "./support/density-profile.ts";
import { processCpuSeconds, watchHeartbeats } from "./support/density-watch.ts";
import {
  cleanupOnSignal,
  intFlag,
  machineFacts,
  mapLimit,
  memAvailableBytes,
  mib,
  ms,
  parseFlags,
  percentile,
  sampleLoad,
} from "./support/stats.ts";

const flags = parseFlags(process.argv.slice(2));
const COUNT = flags.has("quick") ? 20 : intFlag(flags, "count", 300);
const CONCURRENCY = intFlag(flags, "concurrency", 25);
const SETTLE_S = intFlag(flags, "settle-s", 60, 0);
const BUDGET_MS = intFlag(flags, "budget-min", 15) * 60_000;
// A saturated host fails more and more: stop adding databases once this many failed.
const MAX_FAILURES = intFlag(flags, "max-failures", 10);
const PLAN_ID = flags.get("plan") ?? "postgresql-starter-512";
const PROFILE_AT = flags.has("profile-at") ? intFlag(flags, "profile-at", 0) : null;
const PROFILE_S = intFlag(flags, "profile-s", 40);
const BACKUPS_SETTLED_MS = intFlag(flags, "backups-settled-min", 0, 0) * 60_000;
const OVERCOMMIT = 8;
const SUBNET = 92;
const HOST = "bench-dens-s1";

/** Capacity flags of the one host, so that COUNT databases of the plan fit its pool. */
function hostCapacity() {
  const plan = findPlan(loadCatalogFile(loadConfig({}).catalogPath), PLAN_ID);
  if (!plan) throw new Error(`--plan=${PLAN_ID} is not in the catalog`);
  const totalMb = Math.floor(os.totalmem() / 1024 / 1024);
  // Placement: used + plan <= capacity x CELLAR_SHARED_OVERCOMMIT, for RAM and disk.
  const ramMb = Math.max(totalMb, Math.ceil((COUNT * plan.ramMb) / OVERCOMMIT));
  const diskGb = Math.max(200, Math.ceil((COUNT * plan.storageGb) / OVERCOMMIT));
  return { plan, ramMb, diskGb };
}

interface Tracked {
  /** Every add-on created (deleted at the end, running or not). */
  created: Array<{ app: string; addonId: string }>;
  running: Provisioned[];
  profiling?: Promise<void>;
}

/**
 * Waits until every running database has a verified (or failed) full backup, printing
 * progress every 30 s, at most --backups-settled-min: each new database's first full backup
 * and its verification (one at a time per host) otherwise run through the idle minute.
 */
async function waitBackupsSettled(c: BenchCellar, running: Provisioned[]): Promise<void> {
  const ids = running.map((p) => p.addonId);
  const started = performance.now();
  let lastPrint = 0;
  for (;;) {
    const { rows } = await c.controller.deps.db.query<{ n: number }>(
      `SELECT count(DISTINCT database_id)::int AS n FROM base_backups
       WHERE database_id = ANY($1) AND verification_status <> 'pending'`,
      [ids],
    );
    const settled = rows[0]!.n;
    const elapsed = performance.now() - started;
    const done = settled >= ids.length || elapsed > BACKUPS_SETTLED_MS;
    if (done || elapsed - lastPrint > 30_000) {
      console.log(`first full backups verified: ${settled}/${ids.length} after ${ms(elapsed)}`);
      lastPrint = elapsed;
    }
    if (done) return;
    await new Promise((r) => setTimeout(r, 2000));
  }
}

/** A CPU profile of the agent while provisioning goes on (where its main thread's time goes). */
async function profileAgent(c: BenchCellar): Promise<void> {
  const pid = c.fleet.processOf(HOST)?.pid;
  if (!pid) return;
  const out = `${os.tmpdir()}/density-agent-${Date.now()}.cpuprofile`;
  console.log(`  profiling the agent for ${PROFILE_S} s (${out})`);
  try {
    printSummary(await profileProcess(pid, PROFILE_S, out));
  } catch (err) {
    console.log(`  profile failed: ${(err as Error).message}`);
  }
}

async function provisionAll(c: BenchCellar, t: Tracked) {
  const failures: string[] = [];
  let skipped = 0;
  let unfinished = 0;
  const t0 = performance.now();
  const indexes = Array.from({ length: COUNT }, (_, i) => i + 1);
  await mapLimit(indexes, CONCURRENCY, async (i) => {
    if (performance.now() - t0 > BUDGET_MS || failures.length >= MAX_FAILURES) {
      skipped++;
      return;
    }
    const app = `bench-dens-${i}`;
    try {
      const created = await c.api("POST", "/v1/apps", { app: { name: app } });
      if (created.status !== 201) throw new Error(`creating app: HTTP ${created.status}`);
      const left = Math.max(60_000, BUDGET_MS - (performance.now() - t0));
      const onCreated = (a: { app: string; addonId: string }) => t.created.push(a);
      t.running.push(await provisionAddon(c, app, PLAN_ID, { timeoutMs: left, pollMs: 1000, onCreated }));
      if (t.running.length % 10 === 0) {
        const s = (performance.now() - t0) / 1000;
        console.log(`  ${t.running.length} running after ${s.toFixed(0)} s`);
      }
      if (t.running.length === PROFILE_AT) t.profiling = profileAgent(c);
    } catch (err) {
      // Cut short by the end of the budget: not a failure of the database itself.
      if (performance.now() - t0 > BUDGET_MS) unfinished++;
      else failures.push(`${app}: ${(err as Error).message}`);
    }
  });
  return { ms: performance.now() - t0, failures, skipped, unfinished };
}

async function main(): Promise<void> {
  const { plan, ramMb, diskGb } = hostCapacity();
  console.log(
    `machine: ${machineFacts()}; load average at start ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
  );
  console.log(
    `target: ${COUNT} x ${PLAN_ID} on one shared host declared with ${ramMb} MB RAM and ${diskGb} GB disk ` +
      `(CELLAR_SHARED_OVERCOMMIT=${OVERCOMMIT}: room for ${Math.floor((ramMb * OVERCOMMIT) / plan.ramMb)} by RAM, ` +
      `${Math.floor((diskGb * OVERCOMMIT) / plan.storageGb)} by disk); ${CONCURRENCY} in flight`,
  );
  const cellar = await startBenchCellar({
    subnet: SUBNET,
    hosts: [{ name: HOST, pool: "shared", vcpu: os.cpus().length, ramMb, diskGb }],
    env: { CELLAR_SHARED_OVERCOMMIT: String(OVERCOMMIT) },
  });
  const stateDir = cellar.stateDirOf(HOST);
  const tracked: Tracked = { created: [], running: [] };
  const { running, created } = tracked;
  let cleaned: Promise<void> | null = null;
  const cleanup = () =>
    (cleaned ??= (async () => {
      if (created.length) {
        console.log(`deleting ${created.length} add-ons...`);
        const del = await deleteAddons(cellar, created, 5 * 60_000);
        console.log(`deleted ${created.length - del.left}/${created.length} add-ons in ${ms(del.ms)}`);
      }
      await cellar.close();
    })());
  const unregister = cleanupOnSignal(cleanup);
  const availableBefore = memAvailableBytes();
  const load = sampleLoad();
  const heartbeats = watchHeartbeats(cellar.controller.deps.db, HOST);
  try {
    console.log(`provisioning (budget ${BUDGET_MS / 60_000} min)...`);
    const prov = await provisionAll(cellar, tracked);
    const latencies = running.map((p) => p.runningMs);
    console.log(
      `provisioned ${running.length}/${COUNT} in ${(prov.ms / 1000).toFixed(1)} s ` +
        `(${prov.failures.length} failed, ${prov.unfinished} unfinished and ${prov.skipped} not started when ` +
        `the budget or failure limit was reached); POST -> running ` +
        `p50 ${ms(percentile(latencies, 50))}, p95 ${ms(percentile(latencies, 95))}`,
    );
    for (const f of prov.failures.slice(0, 10)) console.log(`  failed: ${f}`);
    await tracked.profiling;
    if (BACKUPS_SETTLED_MS > 0) await waitBackupsSettled(cellar, running);

    console.log(`idle for ${SETTLE_S} s before measuring (CPU of the instances is counted meanwhile)...`);
    const agentPid = cellar.fleet.processOf(HOST)?.pid;
    const cpuBefore = await sandboxesCpuSeconds(HOST);
    const agentCpuBefore = agentPid ? await processCpuSeconds(agentPid) : null;
    const settleStart = performance.now();
    await new Promise((r) => setTimeout(r, SETTLE_S * 1000));
    const cpuAfter = await sandboxesCpuSeconds(HOST);
    const agentCpuAfter = agentPid ? await processCpuSeconds(agentPid) : null;
    const settledS = (performance.now() - settleStart) / 1000;
    const idleCpu = (cpuAfter.cpuSeconds - cpuBefore.cpuSeconds) / settledS;
    const mem = await instancesMemory(stateDir);
    const agentMem = agentPid ? await processMemory(agentPid) : null;
    const availableDrop = availableBefore - memAvailableBytes();

    const answerFailures: string[] = [];
    await mapLimit(running, 10, async (p) => {
      await queryOverTls(p.url, cellar.regionCa).catch((err: Error) =>
        answerFailures.push(`${p.app}: ${err.message}`),
      );
    });
    const l = load.stop();
    const hb = heartbeats.stop();

    // Failed add-ons may still have processes: divide by the nodes actually found.
    const n = mem.nodes;
    const pss = mem.postgres.pssBytes + mem.haproxy.pssBytes;
    const rss = mem.postgres.rssBytes + mem.haproxy.rssBytes;
    console.log("\n== results");
    console.log(
      `databases running: ${running.length} of ${COUNT}; answering a verify-full TLS query at the end: ` +
        `${running.length - answerFailures.length}`,
    );
    console.log(`measured: ${mem.nodes} PostgreSQL nodes and ${mem.gateways} gateways with live processes`);
    for (const f of answerFailures.slice(0, 10)) console.log(`  not answering: ${f}`);
    if (mem.missing.length) console.log(`instances without a process: ${mem.missing.length}`);
    console.log(
      `postgres: ${mem.postgres.processes} processes, PSS ${mib(mem.postgres.pssBytes)} (summed RSS ${mib(mem.postgres.rssBytes)})`,
    );
    console.log(
      `haproxy:  ${mem.haproxy.processes} processes, PSS ${mib(mem.haproxy.pssBytes)} (summed RSS ${mib(mem.haproxy.rssBytes)})`,
    );
    console.log(
      `total PSS ${mib(pss)}; per database ${mib(pss / Math.max(1, n))} (summed RSS would say ${mib(rss / Math.max(1, n))})`,
    );
    console.log(
      `cross-check: MemAvailable dropped by ${mib(availableDrop)} (${mib(availableDrop / Math.max(1, n))} per database, ` +
        "includes page tables, page cache and everything else on the machine)",
    );
    if (agentMem) console.log(`host agent process: PSS ${mib(agentMem.pss)}`);
    if (agentCpuBefore && agentCpuAfter) {
      const own = (agentCpuAfter.own - agentCpuBefore.own) / settledS;
      const children = (agentCpuAfter.children - agentCpuBefore.children) / settledS;
      console.log(
        `host agent CPU while idle: ${(own * 100).toFixed(1)}% of one vCPU itself, ` +
          `${(children * 100).toFixed(1)}% in the commands it ran`,
      );
    }
    console.log(
      `heartbeats: longest silence ${hb.maxSilenceS.toFixed(1)} s; host marked unreachable ${hb.unreachable} times`,
    );
    console.log(
      `idle CPU of the ${cpuAfter.sandboxes} node sandboxes: ${(idleCpu * 100).toFixed(1)}% of one vCPU in all, ` +
        `${((idleCpu * 100) / Math.max(1, cpuAfter.sandboxes)).toFixed(2)}% per database`,
    );
    console.log(
      `time to provision them all: ${(prov.ms / 1000).toFixed(1)} s; failures: ${prov.failures.length + answerFailures.length}`,
    );
    console.log(
      `load average (1 min) during the run: min ${l.min.toFixed(2)}, mean ${l.mean.toFixed(2)}, max ${l.max.toFixed(2)}`,
    );
  } finally {
    heartbeats.stop();
    await cleanup();
    unregister();
  }
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    console.error(`density benchmark failed: ${err.stack ?? err.message}`);
    process.exit(1);
  },
);
