// End-to-end fixture: a real controller (store in the test PostgreSQL), real agents as
// child processes on loopback addresses of their own, real PostgreSQL and HAProxy.
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import type pg from "pg";
import { loadConfig } from "../../src/config.ts";
import { INTERNAL_CA } from "../../src/engines/tls/pki.ts";
import { createLogger } from "../../src/log.ts";
import { startController, type Controller } from "../../src/main/controller.ts";
import { startLocalFleet, type Fleet, type LocalHost } from "../../src/main/fleet.ts";
import { createIsolationRuntime } from "../../src/runtime/factory.ts";
import { probeIsolation } from "../../src/runtime/probe.ts";
import { insertToken, insertUser } from "../../src/store/users.store.ts";
import { freshDb, type TestDb } from "./db.ts";
import { connectOnce } from "./ha.ts";

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

export interface Cluster {
  controller: Controller;
  fleet: Fleet;
  dataDir: string;
  /** Bearer of a fresh user (owner of what the test creates). */
  bearer: string;
  api(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }>;
  /** Polls until `check` returns a value (not undefined), failing after `ms` with the last state. */
  waitFor<T>(what: string, check: () => Promise<T | undefined>, ms?: number): Promise<T>;
  regionCa(): Promise<string>;
  /** The latest lines the agents wrote (their log, at the agents' level). */
  agentLines: string[];
  close(): Promise<void>;
}

const KEPT_LOG_LINES = 5000;

/**
 * `subnet` picks the loopback addresses (127.<subnet>.x.y) so parallel test files never
 * share an address: give each file its own.
 */
export async function startCluster(opts: {
  subnet: number;
  hosts: Array<Pick<LocalHost, "name" | "pool" | "az"> & Partial<Pick<LocalHost, "diskGb">>>;
  /** Extra controller settings (CELLAR_*), e.g. shorter backup checks. */
  env?: Record<string, string>;
}): Promise<Cluster> {
  const tdb: TestDb = await freshDb({ empty: true });
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-e2e-"));
  await fs.chmod(dataDir, 0o755);
  const c = tdb.config;
  const [port, agentPort] = [await freePort(), await freePort()];
  const config = loadConfig({
    CELLAR_DATA_DIR: dataDir,
    CELLAR_DATABASE_URL: `postgresql://${c.user}@/${c.database}?host=${c.host}&port=${c.port}`,
    CELLAR_PORT: String(port),
    CELLAR_AGENT_PORT: String(agentPort),
    CELLAR_RATE_LIMIT_PER_MINUTE: "100000",
    CELLAR_HOST_SILENCE_MS: "4000",
    // Each cluster's public side of its own: parallel files never hand out the same address.
    CELLAR_PUBLIC_NETWORK: `198.19.${opts.subnet}.0/24`,
    CELLAR_PRIVATE_NETWORK: `172.30.${opts.subnet}.0/24`,
    CELLAR_LOG_LEVEL: process.env.CELLAR_TEST_LOG ? "debug" : "error",
    ...opts.env,
  });
  const log = createLogger(config.logLevel);
  // Kept for tests that check what the agents did.
  const agentLines: string[] = [];
  const onAgentLine = (_host: string, line: string) => {
    agentLines.push(line);
    if (agentLines.length > KEPT_LOG_LINES) agentLines.splice(0, agentLines.length - KEPT_LOG_LINES);
  };
  const controller = await startController(config, log);
  const region = config.regions[0]!;
  const hosts: LocalHost[] = opts.hosts.map((h, i) => ({
    ...h,
    region: region.name,
    address: `127.${opts.subnet}.0.${i + 1}`,
    vcpu: 2,
    ramMb: 8192,
    diskGb: h.diskGb ?? 100,
  }));
  const fleet = startLocalFleet(config, log, {
    controllerUrl: controller.agentUrl,
    caFile: path.join(dataDir, "pki", INTERNAL_CA, "ca.crt"),
    joinTokenFile: path.join(dataDir, "agent-join-token"),
    hosts,
    onAgentLine,
  });
  const user = await insertUser(controller.deps.db, { username: "owner", email: "owner@example.test" });
  const { secret } = await insertToken(controller.deps.db, user.id, "e2e");
  const exchange = await fetch(`${controller.url}/v1/tokens/exchange`, {
    method: "POST",
    headers: { authorization: `Basic ${Buffer.from(`:${secret}`).toString("base64")}` },
  });
  const bearer = ((await exchange.json()) as { token: string }).token;

  const api: Cluster["api"] = async (method, p, body) => {
    const res = await fetch(`${controller.url}${p}`, {
      method,
      headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json" },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null };
  };

  const waitFor: Cluster["waitFor"] = async (what, check, ms = 90_000) => {
    const deadline = Date.now() + ms;
    let last: unknown;
    for (;;) {
      try {
        const v = await check();
        if (v !== undefined) return v;
      } catch (err) {
        last = err;
      }
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ""}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  // Every host registered and heartbeating before the test starts.
  await waitFor(
    "hosts to be ready",
    async () => {
      const { rows } = await controller.deps.db.query(
        "SELECT count(*)::int AS n FROM hosts WHERE status = 'ready'",
      );
      return rows[0].n === hosts.length ? true : undefined;
    },
    // Each agent is a process of its own: on a loaded 2-core machine they take a while to start.
    120_000,
  );

  return {
    controller,
    fleet,
    dataDir,
    bearer,
    api,
    waitFor,
    regionCa: () => fs.readFile(path.join(dataDir, "pki", region.name, "ca.crt"), "utf8"),
    agentLines,
    async close() {
      // Agents stop their instances; then every instance directory is removed with the data dir.
      await fleet.stop();
      await controller.stop();
      // Sandboxes (cgroups) outlive a stopped agent by design: remove those of this test.
      const runtimeProbe = await probeIsolation();
      for (const h of hosts) {
        const runtime = await createIsolationRuntime(runtimeProbe, { parent: `cellar-${h.name}` });
        for (const name of await runtime.listSandboxes()) await runtime.removeSandbox(name);
      }
      await tdb.drop();
      await fs.rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Connects with the URL's credentials, verifying the server certificate against the CA. */
export const connectVerified = (url: string, ca: string): Promise<pg.Client> =>
  connectOnce(url, ca, 5000, null);
