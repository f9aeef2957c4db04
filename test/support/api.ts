// In-process API harness: the real Hono app on a fresh real store, without a listener.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { loadPki } from "../../src/engines/tls/pki.ts";
import { createApp } from "../../src/api/app.ts";
import { HostSignals } from "../../src/reconciler/host-signals.ts";
import type { Deps } from "../../src/api/deps.ts";
import { loadConfig, type Config } from "../../src/config.ts";
import { ensureJwtSecret, ensureMasterKey } from "../../src/main/bootstrap.ts";
import { loadCatalogFile } from "../../src/main/controller.ts";
import { reconcileDatabase } from "../../src/reconciler/database.reconciler.ts";
import { startReconcileLoop, type ReconcileLoop } from "../../src/reconciler/loop.ts";
import { silentLogger } from "../../src/log.ts";
import { insertToken, insertUser, type User } from "../../src/store/users.store.ts";
import { freshDb, type TestDb } from "./db.ts";

export interface Session {
  user: User;
  apiToken: string;
  bearer: string;
}

export interface Harness {
  deps: Deps;
  tdb: TestDb;
  loop: ReconcileLoop;
  app: ReturnType<typeof createApp>;
  /** Sends a request; `json` is the parsed body (or null). */
  call(
    method: string,
    path: string,
    opts?: { body?: unknown; raw?: string; bearer?: string | null; headers?: Record<string, string> },
  ): Promise<{ status: number; json: any; headers: Headers }>;
  /** A new user with an API token and a bearer session. */
  user(name: string, opts?: { admin?: boolean }): Promise<Session>;
  close(): Promise<void>;
}

export async function startHarness(env: Record<string, string> = {}): Promise<Harness> {
  const tdb = await freshDb();
  const config: Config = loadConfig({ CELLAR_DATA_DIR: "/nonexistent-cellar-test", ...env });
  const jwtSecret = await ensureJwtSecret(tdb.db, config);
  const pkiDir = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-test-pki-"));
  const deps: Deps = {
    db: tdb.db,
    config,
    catalog: loadCatalogFile(config.catalogPath),
    log: silentLogger,
    jwtSecret,
    now: () => new Date(),
    kickReconciler: () => undefined,
    hostSignals: new HostSignals(),
    pki: await loadPki(
      tdb.db,
      pkiDir,
      config.regions.map((r) => r.name),
    ),
    masterKey: await ensureMasterKey(tdb.db, path.join(pkiDir, "master-key")),
  };
  const loop = startReconcileLoop({
    db: tdb.db,
    log: silentLogger,
    pollMs: 1000,
    pass: (id) => reconcileDatabase(deps, id),
    background: false,
  });
  const app = createApp(deps);

  const call: Harness["call"] = async (method, path, opts = {}) => {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.bearer) headers.authorization = `Bearer ${opts.bearer}`;
    let body: string | undefined;
    if (opts.raw !== undefined) body = opts.raw;
    else if (opts.body !== undefined) body = JSON.stringify(opts.body);
    if (body !== undefined) headers["content-type"] ??= "application/json";
    const res = await app.request(path, { method, headers, ...(body !== undefined ? { body } : {}) });
    const text = await res.text();
    let json: unknown = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = text;
    }
    return { status: res.status, json, headers: res.headers };
  };

  const user: Harness["user"] = async (name, opts = {}) => {
    const u = await insertUser(tdb.db, {
      username: name,
      email: `${name}@example.test`,
      isAdmin: opts.admin ?? false,
    });
    const { secret } = await insertToken(tdb.db, u.id, "test");
    const res = await call("POST", "/v1/tokens/exchange", {
      headers: { authorization: `Basic ${Buffer.from(`:${secret}`).toString("base64")}` },
    });
    if (res.status !== 200) throw new Error(`exchange failed: ${res.status} ${JSON.stringify(res.json)}`);
    return { user: u, apiToken: secret, bearer: (res.json as { token: string }).token };
  };

  return {
    deps,
    tdb,
    loop,
    app,
    call,
    user,
    async close() {
      await loop.stop();
      await tdb.drop();
      await fs.rm(pkiDir, { recursive: true, force: true });
    },
  };
}
