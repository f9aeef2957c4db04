// Composition root of the control plane: store, API server and reconcile loop.
import fs from "node:fs";
import path from "node:path";
import { serve, type ServerType } from "@hono/node-server";
import type { Config } from "../config.ts";
import { createApp } from "../api/app.ts";
import { HostSignals } from "../reconciler/host-signals.ts";
import type { Deps } from "../api/deps.ts";
import { parseCatalog, type Catalog } from "../domain/catalog.ts";
import type { Logger } from "../log.ts";
import { reconcileDatabase } from "../reconciler/database.reconciler.ts";
import { startReconcileLoop, type ReconcileLoop } from "../reconciler/loop.ts";
import { startLogicalBackupScheduler } from "../reconciler/logical-backup.scheduler.ts";
import { openStore, type Store } from "../store/open.ts";
import { loadPki } from "../engines/tls/pki.ts";
import { agentUrlOf, listenForAgents, startHostSweep } from "./agent-listener.ts";
import { bootstrapStore, ensureAgentJoinToken, ensureMasterKey } from "./bootstrap.ts";

export interface Controller {
  url: string;
  /** Where agents reach the controller (TLS, signed by the internal CA). */
  agentUrl: string;
  deps: Deps;
  loop: ReconcileLoop;
  stop(): Promise<void>;
}

export function loadCatalogFile(file: string): Catalog {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (err) {
    throw new Error(`cannot read the catalog ${file}: ${(err as Error).message}`);
  }
  return parseCatalog(raw);
}

const heldHere = new Set<string>();

/**
 * Guards the data directory against a second controller: the embedded store and host
 * state must have one owner. A lock left by a dead process is taken over.
 */
export function lockDataDir(dataDir: string): () => void {
  fs.mkdirSync(dataDir, { recursive: true });
  const file = path.join(dataDir, "controller.pid");
  // A file with our own pid is stale (a recycled pid, e.g. 1 in a container) unless this
  // process holds the lock itself: a second controller in one process is refused too.
  if (heldHere.has(file)) {
    throw new Error(`another Cellar controller (in this process) is using ${dataDir}; stop it first`);
  }
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, String(process.pid), { flag: "wx" });
      heldHere.add(file);
      return () => {
        heldHere.delete(file);
        fs.rmSync(file, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const pid = Number(fs.readFileSync(file, "utf8"));
      if (pid && pid !== process.pid && isAlive(pid)) {
        throw new Error(`another Cellar controller (pid ${pid}) is using ${dataDir}; stop it first`);
      }
      fs.rmSync(file, { force: true });
    }
  }
  throw new Error(`cannot lock ${dataDir}`);
}

function isAlive(pid: number): boolean {
  try {
    // A zombie still answers kill -0: read its state instead.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
}

export async function startController(
  config: Config,
  log: Logger,
  opts: { listen?: boolean; background?: boolean } = {},
): Promise<Controller> {
  const catalog = loadCatalogFile(config.catalogPath);
  const unlock = config.databaseUrl ? () => undefined : lockDataDir(config.dataDir);
  let store: Store | undefined;
  let server: ServerType | undefined;
  let agentServer: ServerType | undefined;
  try {
    store = await openStore(config, log, { ownsDataDir: !config.databaseUrl });
    const { db } = store;
    const jwtSecret = await bootstrapStore(db, config, log);
    const pki = await loadPki(
      db,
      path.join(config.dataDir, "pki"),
      config.regions.map((r) => r.name),
    );
    const joinToken = await ensureAgentJoinToken(db, config.dataDir);
    const masterKey = await ensureMasterKey(db, config.masterKeyFile);
    const deps: Deps = {
      db,
      config,
      catalog,
      log,
      jwtSecret,
      now: () => new Date(),
      kickReconciler: () => loop.kick(),
      hostSignals: new HostSignals(),
      pki,
      masterKey,
    };
    const loop = startReconcileLoop({
      db,
      log: log.child({ component: "reconciler" }),
      pollMs: config.reconcileIntervalMs,
      pass: (id) => reconcileDatabase(deps, id),
      background: opts.background ?? true,
    });
    const app = createApp(deps);
    if (opts.listen !== false) {
      server = await new Promise<ServerType>((resolve, reject) => {
        const s = serve({ fetch: app.fetch, hostname: config.listenHost, port: config.port }, () =>
          resolve(s),
        );
        s.once("error", reject);
      });
      log.info("API listening", { url: config.publicUrl });
      agentServer = await listenForAgents(deps, joinToken);
    }
    const sweep = startHostSweep(deps);
    const logicalBackups = startLogicalBackupScheduler(deps);
    const activeStore = store;
    return {
      url: config.publicUrl,
      deps,
      loop,
      agentUrl: agentUrlOf(config),
      async stop() {
        sweep.stop();
        await logicalBackups.stop();
        deps.hostSignals.close();
        await loop.stop();
        await closeServer(agentServer);
        await closeServer(server);
        await activeStore.close();
        unlock();
      },
    };
  } catch (err) {
    server?.close();
    agentServer?.close();
    await store?.close().catch(() => undefined);
    unlock();
    throw err;
  }
}

function closeServer(server: ServerType | undefined): Promise<void> {
  return new Promise<void>((resolve) => {
    if (!server) return resolve();
    // Long-polling agents hold connections open: end them rather than wait 25 s.
    (server as { closeAllConnections?: () => void }).closeAllConnections?.();
    server.close(() => resolve());
  });
}
