// Failover and switchover of a Business PostgreSQL add-on, Cellar's timing against Patroni's
// defaults, side by side in one run: two throwaway Cellars (own controller, store, agents and
// loopback range each), one per CELLAR_HA_TIMING, each with a Business add-on on 3 hosts.
//   failover:   kill the leader's Patroni + postmaster (SIGKILL) -> first acknowledged INSERT
//               through the gateway (connect + insert retried every 50 ms)
//   switchover: Cellar's planned switchover (as a plan change asks for it; --via=patroni: a bare
//               POST /switchover on the leader's REST API) while a writer inserts every 20 ms;
//               the pause is the longest gap between two acknowledged inserts
//   false failovers: pgbench through the gateway of the Cellar-timing add-on, leader changes
//               counted by polling every node's Patroni (and by timelines)
// Rounds alternate which side goes first, so load drift hits both alike.
// Usage: npx tsx bench/failover.ts [--rounds=10] [--duration=300] [--clients=4] [--logs=DIR] [--phases]
//                                  [--plan=postgresql-business-512] [--via=cellar|patroni]
//                                  [--only=failover|switchover]
//   --logs=DIR keeps every node's Patroni and PostgreSQL logs there (the run's dirs are removed)
//   --phases   also polls the candidate's Patroni to time its promotion (adds CPU in its sandbox)
import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { startBenchCellar, type BenchCellar } from "./support/cellar.ts";
import {
  createProbeTables,
  failoverOnce,
  keepLogs,
  nodesCpu,
  nodesOf,
  switchoverOnce,
  waitHealthy,
  watchLeader,
  type FailoverRun,
  type HaTarget,
  type SwitchoverRun,
} from "./support/failover.ts";
import {
  cleanupOnSignal,
  intFlag,
  machineFacts,
  mean,
  ms,
  parseFlags,
  percentile,
  sampleLoad,
  waitUntil,
} from "./support/stats.ts";

const flags = parseFlags(process.argv.slice(2));
const ROUNDS = intFlag(flags, "rounds", 10);
const PGBENCH_SECONDS = intFlag(flags, "duration", 300);
const PGBENCH_CLIENTS = intFlag(flags, "clients", 4);
const LOGS_DIR = flags.get("logs");
const PHASES = flags.has("phases");
// cellar: the switchover a plan change makes (its agents add spare CPU); patroni: a bare POST.
const VIA = flags.get("via") === "patroni" ? "patroni" : "cellar";
// --only=failover or --only=switchover: that measure alone, without the pgbench watch.
const ONLY = flags.get("only");
if (ONLY !== undefined && ONLY !== "failover" && ONLY !== "switchover")
  throw new Error(`--only=${ONLY}: use failover or switchover`);
// A plan with more vCPU shows how much of each figure is the sandbox's CPU quota.
const PLAN = flags.get("plan") ?? "postgresql-business-512";
const PGBENCH = "/usr/lib/postgresql/15/bin/pgbench";
// Loopback ranges of this benchmark only (cellar up 127.20/21, tests 127.4x-8x, benches 91-93).
// Each side names its region differently: src/reconciler/dcs.ts caches the controller's etcd
// client certificate per region name in a module-level map, so two controllers of one
// process sharing a region name would present one's certificate to the other's etcd.
const SIDES = [
  { label: "Cellar timing", timing: "cellar", subnet: 94, region: "bench-ha-cellar" },
  { label: "Patroni defaults", timing: "patroni-defaults", subnet: 95, region: "bench-ha-patroni" },
] as const;
const STEP_TIMEOUT_MS = 180_000;
const IDLE_MS = 30_000;

const uptime = () =>
  `load average ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(" ")}`;

/** The repo's catalog, with every plan of osc-fr1 offered in the sides' regions too. */
async function benchCatalog(dir: string): Promise<string> {
  const file = path.join(dir, "catalog.json");
  const source = await fs.readFile(path.join(import.meta.dirname, "..", "config", "catalog.json"), "utf8");
  const regions = ["osc-fr1", ...SIDES.map((s) => s.region)].map((r) => JSON.stringify(r)).join(", ");
  await fs.writeFile(file, source.replaceAll('"osc-fr1"', regions));
  return file;
}

/** A side's Cellar, started again when its hosts miss the readiness bound on a loaded machine. */
async function benchCellarOf(side: (typeof SIDES)[number], catalog: string): Promise<BenchCellar> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startBenchCellar({
        subnet: side.subnet,
        hosts: [1, 2, 3].map((i) => ({
          name: `bench-ha${side.subnet}-s${i}`,
          pool: "shared" as const,
          vcpu: 2,
          ramMb: 8192,
          diskGb: 100,
        })),
        env: {
          CELLAR_HA_TIMING: side.timing,
          CELLAR_REGIONS: side.region,
          CELLAR_CATALOG: catalog,
          // Shared add-ons get a public address: each side hands out its own.
          CELLAR_PUBLIC_NETWORK: `198.19.${side.subnet}.0/24`,
        },
      });
    } catch (err) {
      // startBenchCellar removed what it made; only a slow start is worth another try.
      const message = (err as Error).message;
      if (attempt === 3 || !message.includes("hosts to be ready")) throw err;
      console.log(`${side.label}: ${message} (${uptime()}); starting it again`);
    }
  }
}

async function startSide(
  side: (typeof SIDES)[number],
  catalog: string,
  onCellar: (c: BenchCellar) => void,
): Promise<HaTarget> {
  const cellar = await benchCellarOf(side, catalog);
  onCellar(cellar);
  const app = `bench-ha-${side.subnet}`;
  if ((await cellar.api("POST", "/v1/apps", { app: { name: app } })).status !== 201)
    throw new Error(`app ${app}`);
  const res = await cellar.api("POST", `/v1/apps/${app}/addons`, {
    addon: { addon_provider_id: "postgresql", plan_id: PLAN },
  });
  if (res.status !== 201)
    throw new Error(`${side.label}: POST add-on ${res.status} ${JSON.stringify(res.json)}`);
  const databaseId: string = res.json.addon.id;
  const t0 = performance.now();
  await waitUntil(`${side.label}: the add-on to run`, 300_000, async () => {
    const a = await cellar.api("GET", `/v1/apps/${app}/addons/${databaseId}`);
    return a.json?.addon?.status === "running";
  });
  const vars = (await cellar.api("GET", `/v1/apps/${app}/variables`)).json.variables as Array<{
    name: string;
    value: string;
  }>;
  const url = vars.find((v) => v.name === "SCALINGO_POSTGRESQL_URL")!.value;
  const target = { label: side.label, cellar, databaseId, url };
  await waitHealthy(target, STEP_TIMEOUT_MS);
  await createProbeTables(target);
  console.log(`${side.label}: add-on running after ${ms(performance.now() - t0)}`);
  return target;
}

/** Runs `fn`, and says how much CPU the nodes' sandboxes used meanwhile and how long they were throttled. */
async function withCpu<T>(t: HaTarget, fn: () => Promise<T>): Promise<[T, string]> {
  const before = await nodesCpu(t);
  const started = performance.now();
  const result = await fn();
  const after = await nodesCpu(t);
  const wall = (performance.now() - started) / 1000;
  const used = after.cpuSeconds - before.cpuSeconds;
  const throttled = after.throttledSeconds - before.throttledSeconds;
  return [
    result,
    `nodes used ${used.toFixed(1)} CPU-s in ${wall.toFixed(1)} s, throttled ${throttled.toFixed(1)} s`,
  ];
}

function summary(name: string, values: number[]): string {
  const f = (v: number) => ms(v).padStart(9);
  return `${name.padEnd(34)} p50 ${f(percentile(values, 50))}   p95 ${f(percentile(values, 95))}   mean ${f(mean(values))}   min ${f(Math.min(...values))}   max ${f(Math.max(...values))}`;
}

/** Runs pgbench through the gateway; resolves with its summary lines. */
async function pgbench(t: HaTarget, seconds: number, clients: number): Promise<string> {
  const caFile = path.join(t.cellar.dataDir, "bench-region-ca.crt");
  await fs.writeFile(caFile, t.cellar.regionCa);
  const env = { ...process.env, PGSSLMODE: "verify-full", PGSSLROOTCERT: caFile, PGCONNECT_TIMEOUT: "5" };
  const run = (args: string[]) =>
    new Promise<string>((resolve, reject) => {
      const child = spawn(PGBENCH, [...args, t.url], { env, stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      child.stdout.on("data", (d: Buffer) => (out += d.toString()));
      child.stderr.on("data", (d: Buffer) => (out += d.toString()));
      child.on("error", reject);
      child.on("close", (code) =>
        code === 0
          ? resolve(out)
          : reject(new Error(`pgbench ${args[0]} exited ${code}: ${out.slice(-2000)}`)),
      );
    });
  await run(["--initialize", "--scale=1", "--quiet"]);
  const out = await run([`--client=${clients}`, "--jobs=2", `--time=${seconds}`, "--progress=60"]);
  return out
    .split("\n")
    .filter((l) => /^(progress|number of (transactions|failed)|latency average|tps)/.test(l))
    .join("\n");
}

async function main(): Promise<void> {
  console.log(`machine: ${machineFacts()}; ${uptime()} at start`);
  console.log(
    `rounds: ${ROUNDS} per side and measure, plan ${PLAN}; pgbench ${PGBENCH_SECONDS} s, ${PGBENCH_CLIENTS} clients`,
  );
  const cellars: BenchCellar[] = [];
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-bench-failover-"));
  let cleaned: Promise<void> | null = null;
  const cleanup = () =>
    (cleaned ??= Promise.all(cellars.map((c) => c.close())).then(() =>
      fs.rm(tmp, { recursive: true, force: true }),
    ));
  const unregister = cleanupOnSignal(cleanup);
  // An 'error' event nobody listens to (in the in-process controller, say) would end the run
  // with six agents and their daemons left behind: clean up first, then fail.
  process.on("uncaughtException", (err) => {
    console.error(`uncaught exception: ${err.stack ?? err.message}; cleaning up...`);
    void cleanup().finally(() => process.exit(1));
  });
  const load = sampleLoad();
  const failovers = new Map<string, FailoverRun[]>(SIDES.map((s) => [s.label, []]));
  const switchovers = new Map<string, SwitchoverRun[]>(SIDES.map((s) => [s.label, []]));
  let watch: Awaited<ReturnType<ReturnType<typeof watchLeader>["stop"]>> | null = null;
  let bench = "";
  const sides: HaTarget[] = [];
  const refused = new Map<string, number>(SIDES.map((s) => [s.label, 0]));
  try {
    const catalog = await benchCatalog(tmp);
    // One side after the other: six agents and two controllers starting at once on a loaded
    // machine missed the hosts' 60 s readiness bound (load average 80 during one start).
    for (const s of SIDES) sides.push(await startSide(s, catalog, (c) => cellars.push(c)));
    const ordered = (i: number) => (i % 2 === 0 ? sides : [...sides].reverse());
    // What the nodes cost doing nothing (Patroni's loop, the gateways' health checks, etcd).
    const idle = await Promise.all(
      sides.map((t) => withCpu(t, () => new Promise((r) => setTimeout(r, IDLE_MS)))),
    );
    sides.forEach((t, i) => console.log(`idle ${t.label.padEnd(16)}: ${idle[i]![1]}`));
    for (let i = 1; i <= (ONLY === "switchover" ? 0 : ROUNDS); i++) {
      for (const t of ordered(i)) {
        const [r, cpu] = await withCpu(t, () =>
          failoverOnce(t, { everyMs: 50, timeoutMs: STEP_TIMEOUT_MS, phases: PHASES }),
        );
        failovers.get(t.label)!.push(r);
        console.log(
          `failover ${String(i).padStart(2)} ${t.label.padEnd(16)}: killed at ${r.killedAt}, ${PHASES ? `standby primary ${ms(r.promotedMs).padStart(8)}, ` : ""}first write ${ms(r.writeMs).padStart(8)}, healthy again ${ms(r.healthyMs).padStart(8)}, ${r.moved ? "standby took over" : "killed node leads again"}; ${cpu} (${uptime()})`,
        );
      }
    }
    for (let i = 1; i <= (ONLY === "failover" ? 0 : ROUNDS); i++) {
      for (const t of ordered(i)) {
        const attempt = await withCpu(t, () =>
          switchoverOnce(t, { writeEveryMs: 20, timeoutMs: STEP_TIMEOUT_MS, phases: PHASES, via: VIA }),
        ).catch((err: Error) => {
          // Patroni refuses when it finds the candidate unfit (lagging, or too slow to answer
          // on a loaded machine): a refusal, not a pause; counted apart, the round goes on.
          if (!err.message.includes("answered 412")) throw err;
          refused.set(t.label, refused.get(t.label)! + 1);
          console.log(`switchover ${String(i).padStart(2)} ${t.label.padEnd(16)}: refused, ${err.message}`);
          return null;
        });
        if (!attempt) continue;
        const [r, cpu] = attempt;
        switchovers.get(t.label)!.push(r);
        console.log(
          `switchover ${String(i).padStart(2)} ${t.label.padEnd(16)}: POST at ${r.postedAt}, write pause ${ms(r.pauseMs).padStart(8)} (last write on the old leader at +${ms(r.lastOldMs)}${PHASES ? `, candidate primary at +${ms(r.promotedMs)}` : ""}), request ${ms(r.requestMs).padStart(8)}, ${r.failedInserts} failed inserts; ${cpu}`,
        );
      }
    }
    const cellarSide = sides[0]!;
    if (!ONLY) {
      await waitHealthy(cellarSide, STEP_TIMEOUT_MS);
      console.log(`pgbench on ${cellarSide.label} for ${PGBENCH_SECONDS} s (${uptime()})`);
      const watcher = watchLeader(cellarSide, await nodesOf(cellarSide));
      let cpu = "";
      try {
        [bench, cpu] = await withCpu(cellarSide, () => pgbench(cellarSide, PGBENCH_SECONDS, PGBENCH_CLIENTS));
      } finally {
        watch = await watcher.stop();
      }
      console.log(`pgbench done; ${cpu} (${uptime()})`);
    }
  } finally {
    // Kept even when a step failed: the logs are what explains it.
    if (LOGS_DIR)
      for (const t of sides)
        await keepLogs(t, LOGS_DIR).catch((err: Error) => console.error(`keeping logs: ${err.message}`));
    const l = load.stop();
    console.log(
      `load average (1 min) during the run: min ${l.min.toFixed(2)}, mean ${l.mean.toFixed(2)}, max ${l.max.toFixed(2)}`,
    );
    await cleanup();
    unregister();
  }

  console.log(
    "\n== failover: kill of the leader's Patroni + postmaster -> first acknowledged INSERT via the gateway",
  );
  const p50 = (values: number[]) => ms(percentile(values.filter(Number.isFinite), 50));
  for (const [label, runs] of failovers) {
    console.log(
      summary(
        label,
        runs.map((r) => r.writeMs),
      ),
    );
    const standby = runs.filter((r) => r.moved);
    console.log(
      `  ${standby.length}/${runs.length} taken over by the standby` +
        (PHASES ? `; kill -> standby's Patroni primary p50 ${p50(standby.map((r) => r.promotedMs))}` : "") +
        `; kill -> both nodes healthy again p50 ${p50(runs.map((r) => r.healthyMs))}`,
    );
  }
  console.log("\n== planned switchover: longest gap between acknowledged inserts (writer every 20 ms)");
  for (const [label, runs] of switchovers) {
    console.log(
      summary(
        label,
        runs.map((r) => r.pauseMs),
      ),
    );
    console.log(
      `  POST -> last write on the old leader p50 ${p50(runs.map((r) => r.lastOldMs))}; ` +
        (PHASES ? `POST -> candidate's Patroni primary p50 ${p50(runs.map((r) => r.promotedMs))}; ` : "") +
        `POST answered p50 ${p50(runs.map((r) => r.requestMs))}; ${refused.get(label)} refused by Patroni (412)`,
    );
  }
  console.log(
    `\n== false failovers under pgbench (${PGBENCH_SECONDS} s, ${PGBENCH_CLIENTS} clients, Cellar timing)`,
  );
  console.log(bench);
  if (watch) {
    console.log(
      `leader changes: ${watch.changes}; polls ${watch.polls} (${watch.leaderless} without exactly one leader); timelines seen ${watch.timelines.join(", ")}`,
    );
  }
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    console.error(`failover benchmark failed: ${err.stack ?? err.message}`);
    process.exit(1);
  },
);
