// A throwaway Cellar for benchmarks: a controller with its own embedded store, data dir and
// ports, and local agents on loopback addresses of the benchmark's own (never the defaults
// of `cellar up`). close() deletes what is left and removes everything it made.
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { loadConfig } from "../../src/config.ts";
import { INTERNAL_CA } from "../../src/engines/tls/pki.ts";
import { createLogger } from "../../src/log.ts";
import { startController, type Controller } from "../../src/main/controller.ts";
import { startLocalFleet, type Fleet, type LocalHost } from "../../src/main/fleet.ts";
import { createIsolationRuntime } from "../../src/runtime/factory.ts";
import { sandboxNameFor } from "../../src/runtime/limits.ts";
import { probeIsolation } from "../../src/runtime/probe.ts";
import { insertToken, insertUser } from "../../src/store/users.store.ts";
import { waitUntil } from "./stats.ts";

export interface BenchHost {
  name: string;
  pool: "shared" | "dedicated";
  vcpu: number;
  ramMb: number;
  diskGb: number;
}

export interface ApiResult {
  status: number;
  json: any;
}

export interface BenchCellar {
  dataDir: string;
  controller: Controller;
  fleet: Fleet;
  hosts: LocalHost[];
  /** The region CA, as a client downloads it to verify servers. */
  regionCa: string;
  api(method: string, p: string, body?: unknown): Promise<ApiResult>;
  stateDirOf(host: string): string;
  close(): Promise<void>;
}

export async function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, host, () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export const templateReady = (stateDir: string): Promise<boolean> =>
  fs.access(path.join(stateDir, "templates", "postgresql-15", "pgdata", "global", "pg_control")).then(
    () => true,
    () => false,
  );

/** `subnet` picks the hosts' loopback addresses 127.<subnet>.0.<n>. */
export async function startBenchCellar(opts: {
  subnet: number;
  hosts: BenchHost[];
  env?: Record<string, string>;
}): Promise<BenchCellar> {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-bench-"));
  // The postgres and haproxy users traverse it to reach their own directories.
  await fs.chmod(dataDir, 0o755);
  // Agents are child processes that read their log level from the environment.
  process.env.CELLAR_LOG_LEVEL ??= "warn";
  const config = loadConfig({
    CELLAR_DATA_DIR: dataDir,
    CELLAR_PORT: String(await freePort()),
    CELLAR_AGENT_PORT: String(await freePort()),
    CELLAR_RATE_LIMIT_PER_MINUTE: "1000000",
    CELLAR_LOCAL_FLEET: "off",
    CELLAR_LOG_LEVEL: process.env.CELLAR_LOG_LEVEL,
    ...opts.env,
  });
  const log = createLogger(config.logLevel);
  let controller: Controller | undefined;
  let fleet: Fleet | undefined;
  const region = config.regions[0]!;
  const hosts: LocalHost[] = opts.hosts.map((h, i) => ({
    ...h,
    region: region.name,
    az: region.azs[0]!,
    address: `127.${opts.subnet}.0.${i + 1}`,
  }));
  const stateDirOf = (name: string) => path.join(dataDir, "hosts", name);

  const close = async () => {
    await fleet?.stop().catch((err: Error) => console.error(`stopping agents: ${err.message}`));
    await controller?.stop().catch((err: Error) => console.error(`stopping controller: ${err.message}`));
    // Sandboxes (cgroups) outlive a stopped agent by design: remove this run's.
    const probe = await probeIsolation();
    for (const h of hosts) {
      const runtime = await createIsolationRuntime(probe, { parent: `cellar-${h.name}` });
      for (const name of await runtime.listSandboxes().catch(() => [] as string[])) {
        await runtime.removeSandbox(name).catch(() => undefined);
      }
      // The host's parent cgroups, now empty (rmdir refuses a cgroup that is not).
      for (const file of runtime.procsFiles(sandboxNameFor("inst-bench"))) {
        await fs.rmdir(path.dirname(path.dirname(file))).catch(() => undefined);
      }
      await fs.rm(shortRunDir(stateDirOf(h.name)), { recursive: true, force: true });
    }
    const leftovers = await stopLeftovers(dataDir);
    if (leftovers)
      console.error(`warning: processes of this run outlived their agent (${leftovers}); stopped them`);
    await fs.rm(dataDir, { recursive: true, force: true });
  };

  try {
    controller = await startController(config, log);
    fleet = startLocalFleet(config, log, {
      controllerUrl: controller.agentUrl,
      caFile: path.join(dataDir, "pki", INTERNAL_CA, "ca.crt"),
      joinTokenFile: path.join(dataDir, "agent-join-token"),
      hosts,
    });
    const bearer = await bearerOf(controller);
    const db = controller.deps.db;
    await waitUntil("hosts to be ready", 60_000, async () => {
      const { rows } = await db.query("SELECT count(*)::int AS n FROM hosts WHERE status = 'ready'");
      return rows[0].n === hosts.length;
    });
    // The template is built once per host at agent start: measure provisioning, not that.
    await waitUntil("host templates", 60_000, async () => {
      const ready = await Promise.all(hosts.map((h) => templateReady(stateDirOf(h.name))));
      return ready.every(Boolean);
    }).catch(() => console.error("warning: no template data dir yet; nodes may be made by initdb"));
    const url = controller.url;
    const api = async (method: string, p: string, body?: unknown): Promise<ApiResult> => {
      const res = await fetch(`${url}${p}`, {
        method,
        headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json" },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      const text = await res.text();
      return { status: res.status, json: text ? JSON.parse(text) : null };
    };
    const regionCa = await fs.readFile(path.join(dataDir, "pki", region.name, "ca.crt"), "utf8");
    return { dataDir, controller, fleet, hosts, regionCa, api, stateDirOf, close };
  } catch (err) {
    await close();
    throw err;
  }
}

async function bearerOf(controller: Controller): Promise<string> {
  const user = await insertUser(controller.deps.db, { username: "bench", email: "bench@example.test" });
  const { secret } = await insertToken(controller.deps.db, user.id, "bench");
  const res = await fetch(`${controller.url}/v1/tokens/exchange`, {
    method: "POST",
    headers: { authorization: `Basic ${Buffer.from(`:${secret}`).toString("base64")}` },
  });
  return ((await res.json()) as { token: string }).token;
}

/** CPU seconds used so far by all instance sandboxes of a host (cgroup accounting). */
export async function sandboxesCpuSeconds(host: string): Promise<{ sandboxes: number; cpuSeconds: number }> {
  const runtime = await createIsolationRuntime(await probeIsolation(), { parent: `cellar-${host}` });
  let cpuSeconds = 0;
  const names = await runtime.listSandboxes();
  for (const name of names) cpuSeconds += (await runtime.usage(name).catch(() => null))?.cpuSeconds ?? 0;
  return { sandboxes: names.length, cpuSeconds };
}

/** Pids whose command line names `dir` (only this run's processes: the dir is a fresh temp dir). */
async function processesUnder(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = await fs.readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
    if (cmdline.includes(dir)) pids.push(Number(entry));
  }
  return pids;
}

/**
 * Safety net: daemons are detached by design (they survive an agent restart), so any that
 * an agent failed to stop would outlive the run. SIGTERM, then SIGKILL after 10 s.
 */
async function stopLeftovers(dir: string): Promise<string> {
  const pids = await processesUnder(dir);
  const names = new Map<string, number>();
  for (const pid of pids) {
    const comm = (await fs.readFile(`/proc/${pid}/comm`, "utf8").catch(() => "?")).trim();
    names.set(comm, (names.get(comm) ?? 0) + 1);
  }
  const signal = (sig: NodeJS.Signals) => (pid: number) => {
    try {
      process.kill(pid, sig);
    } catch {
      // already gone
    }
  };
  pids.forEach(signal("SIGTERM"));
  await waitUntil(
    "leftover processes to exit",
    10_000,
    async () => (await processesUnder(dir)).length === 0,
  ).catch(async () => (await processesUnder(dir)).forEach(signal("SIGKILL")));
  return [...names].map(([name, n]) => `${n} ${name}`).join(", ");
}

/** The agent's socket directory (mirrors src/main/agent-main.ts), removed at the end. */
function shortRunDir(stateDir: string): string {
  const isRoot = process.getuid?.() === 0;
  const base = isRoot ? "/run/cellar" : path.join(os.tmpdir(), "cellar-run");
  return path.join(base, createHash("sha256").update(path.resolve(stateDir)).digest("hex").slice(0, 10));
}

/** Connects with a database URL's credentials, verifying the server certificate (verify-full). */
export async function queryOverTls(url: string, ca: string): Promise<void> {
  const u = new URL(url);
  const client = new pg.Client({
    host: u.hostname,
    port: Number(u.port),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    database: u.pathname.slice(1),
    ssl: { ca, rejectUnauthorized: true },
    connectionTimeoutMillis: 10_000,
  });
  await client.connect();
  try {
    await client.query("SELECT 1");
  } finally {
    await client.end();
  }
}

export interface Provisioned {
  app: string;
  addonId: string;
  /** From the POST to the add-on reading `running`. */
  runningMs: number;
  url: string;
}

/**
 * Adds a Starter add-on to `app` and waits until the API says running, then reads the URL
 * from the app's variables. `t0` is taken right before the POST.
 */
export async function provisionAddon(
  c: BenchCellar,
  app: string,
  planId: string,
  opts: {
    timeoutMs: number;
    pollMs: number;
    /** Called once the add-on exists, so that a caller can delete it even if it never runs. */
    onCreated?: (addon: { app: string; addonId: string }) => void;
  },
): Promise<Provisioned> {
  const t0 = performance.now();
  const res = await c.api("POST", `/v1/apps/${app}/addons`, {
    addon: { addon_provider_id: "postgresql", plan_id: planId },
  });
  if (res.status !== 201) throw new Error(`POST addon on ${app}: ${res.status} ${JSON.stringify(res.json)}`);
  const addonId: string = res.json.addon.id;
  opts.onCreated?.({ app, addonId });
  let last = "";
  await waitUntil(
    `add-on ${addonId} of ${app} to run`,
    opts.timeoutMs,
    async () => {
      const a = await c.api("GET", `/v1/apps/${app}/addons/${addonId}`);
      last = a.json?.addon?.status ?? `HTTP ${a.status}`;
      return last === "running";
    },
    opts.pollMs,
    () => `last status ${last}`,
  );
  const runningMs = performance.now() - t0;
  const vars = await c.api("GET", `/v1/apps/${app}/variables`);
  const url = (vars.json.variables as Array<{ name: string; value: string }>).find(
    (v) => v.name === "SCALINGO_POSTGRESQL_URL",
  )?.value;
  if (!url) throw new Error(`${app} runs but has no SCALINGO_POSTGRESQL_URL`);
  return { app, addonId, runningMs, url };
}

/** Deletes add-ons through the API and waits until they are gone (bounded). */
export async function deleteAddons(
  c: BenchCellar,
  addons: Array<{ app: string; addonId: string }>,
  timeoutMs: number,
): Promise<{ ms: number; left: number }> {
  const t0 = performance.now();
  for (const a of addons) await c.api("DELETE", `/v1/apps/${a.app}/addons/${a.addonId}`);
  let left = addons.length;
  await waitUntil(
    "add-ons to be deleted",
    timeoutMs,
    async () => {
      const { rows } = await c.controller.deps.db.query(
        "SELECT count(*)::int AS n FROM databases WHERE id = ANY($1) AND deleted_at IS NULL",
        [addons.map((a) => a.addonId)],
      );
      left = rows[0].n;
      return left === 0;
    },
    500,
  ).catch((err: Error) => console.error(`warning: ${err.message}`));
  return { ms: performance.now() - t0, left };
}
