// A cluster whose controller runs in a process of its own (controller-runner.ts, against
// the test's store), so a test can kill -9 it and start it again on the same store and
// data dir, while the agents (started here, as `cellar up` would) keep running.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadConfig, REPO_ROOT } from "../../src/config.ts";
import { INTERNAL_CA } from "../../src/engines/tls/pki.ts";
import { createLogger } from "../../src/log.ts";
import { agentUrlOf } from "../../src/main/agent-listener.ts";
import { startLocalFleet, type Fleet, type LocalHost } from "../../src/main/fleet.ts";
import { createDb, type Db } from "../../src/store/db.ts";
import { insertToken, insertUser } from "../../src/store/users.store.ts";
import { freePort } from "./cluster.ts";
import { killNow, removeHostResidue, waitUntil } from "./crash.ts";
import { freshDb } from "./db.ts";

export interface ControllerProcess {
  readonly url: string;
  /** The running process, if any. */
  readonly child: ChildProcess | null;
  /** Starts it and resolves once it listens (rejects if it exits first). */
  start(): Promise<void>;
  /** kill -9, and waits until it is reaped. */
  kill(): Promise<void>;
  /** SIGTERM (a clean stop), and waits until it exits. */
  stop(): Promise<void>;
}

const RUNNER = fileURLToPath(new URL("./controller-runner.ts", import.meta.url));
const READY_LINE = "controller ready";
const START_TIMEOUT_MS = 60_000;

export function controllerProcess(env: Record<string, string>, url: string): ControllerProcess {
  let child: ChildProcess | null = null;
  return {
    url,
    get child() {
      return child;
    },
    async start() {
      if (child) throw new Error("the controller process is already running");
      // stdin is a pipe the runner watches: it stops with this process, however it ends.
      const proc = spawn(process.execPath, ["--import", "tsx", RUNNER], {
        cwd: REPO_ROOT,
        env: { ...process.env, ...env },
        stdio: ["pipe", "pipe", "inherit"],
      });
      child = proc;
      proc.once("exit", () => {
        if (child === proc) child = null;
      });
      await new Promise<void>((resolve, reject) => {
        let out = "";
        const fail = (why: string) => {
          clearTimeout(timer);
          reject(new Error(`the controller did not come up: ${why}: ${out}`));
        };
        const onExit = (code: number | null, sig: string | null) => fail(`exit code ${code}, signal ${sig}`);
        const timer = setTimeout(() => {
          proc.kill("SIGKILL");
          fail(`not ready after ${START_TIMEOUT_MS} ms`);
        }, START_TIMEOUT_MS);
        proc.once("exit", onExit);
        const onData = (d: Buffer) => {
          out += d.toString("utf8");
          if (!out.includes(READY_LINE)) return;
          clearTimeout(timer);
          proc.off("exit", onExit);
          proc.stdout.off("data", onData);
          proc.stdout.resume();
          resolve();
        };
        proc.stdout.on("data", onData);
      });
    },
    async kill() {
      if (child) await killNow(child);
    },
    async stop() {
      const proc = child;
      if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
      proc.kill("SIGTERM");
      await exited;
    },
  };
}

export interface SplitCluster {
  controller: ControllerProcess;
  fleet: Fleet;
  hosts: LocalHost[];
  dataDir: string;
  /** A pool on the store, for the test's own looks. */
  db: Db;
  api(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }>;
  regionCa(): Promise<string>;
  close(): Promise<void>;
}

export async function startSplitCluster(opts: {
  subnet: number;
  hosts: Array<Pick<LocalHost, "name" | "pool" | "az">>;
}): Promise<SplitCluster> {
  const tdb = await freshDb({ empty: true });
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-crash-"));
  await fs.chmod(dataDir, 0o755);
  const c = tdb.config;
  const [port, agentPort] = [await freePort(), await freePort()];
  const env = {
    CELLAR_DATA_DIR: dataDir,
    CELLAR_DATABASE_URL: `postgresql://${c.user}@/${c.database}?host=${c.host}&port=${c.port}`,
    CELLAR_PORT: String(port),
    CELLAR_AGENT_PORT: String(agentPort),
    CELLAR_RATE_LIMIT_PER_MINUTE: "100000",
    CELLAR_HOST_SILENCE_MS: "4000",
    CELLAR_LOG_LEVEL: process.env.CELLAR_TEST_LOG ? "debug" : "error",
  };
  const config = loadConfig(env);
  const controller = controllerProcess(env, config.publicUrl);
  let fleet: Fleet | null = null;
  const db = createDb(c);
  const region = config.regions[0]!;
  const hosts: LocalHost[] = opts.hosts.map((h, i) => ({
    ...h,
    region: region.name,
    address: `127.${opts.subnet}.0.${i + 1}`,
    vcpu: 2,
    ramMb: 8192,
    diskGb: 100,
  }));

  const close = async () => {
    await fleet?.stop();
    await controller.stop();
    // Sandboxes (cgroups) outlive a stopped agent by design: remove this cluster's.
    for (const h of hosts) await removeHostResidue(path.join(dataDir, "hosts", h.name), h.name);
    await db.close();
    await tdb.drop();
    await fs.rm(dataDir, { recursive: true, force: true });
  };

  try {
    await controller.start();
    // At warn: an agent that exits on its own is worth a line in the test output.
    fleet = startLocalFleet(config, createLogger("warn"), {
      controllerUrl: agentUrlOf(config),
      caFile: path.join(dataDir, "pki", INTERNAL_CA, "ca.crt"),
      joinTokenFile: path.join(dataDir, "agent-join-token"),
      hosts,
    });
    const user = await insertUser(db, { username: "owner", email: "owner@example.test" });
    const { secret } = await insertToken(db, user.id, "crash");
    const exchange = await fetch(`${config.publicUrl}/v1/tokens/exchange`, {
      method: "POST",
      headers: { authorization: `Basic ${Buffer.from(`:${secret}`).toString("base64")}` },
    });
    const bearer = ((await exchange.json()) as { token: string }).token;
    await waitUntil("hosts to be ready", async () => {
      const { rows } = await db.query("SELECT count(*)::int AS n FROM hosts WHERE status = 'ready'");
      return rows[0].n === hosts.length;
    });
    const started = fleet;
    return {
      controller,
      fleet: started,
      hosts,
      dataDir,
      db,
      async api(method, p, body) {
        const res = await fetch(`${config.publicUrl}${p}`, {
          method,
          headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json" },
          ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        });
        const text = await res.text();
        return { status: res.status, json: text ? JSON.parse(text) : null };
      },
      regionCa: () => fs.readFile(path.join(dataDir, "pki", region.name, "ca.crt"), "utf8"),
      close,
    };
  } catch (err) {
    await close().catch(() => undefined);
    throw err;
  }
}
