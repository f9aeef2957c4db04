// Starting the control plane: two controllers at once on one external store, and the
// embedded store (a real PostgreSQL under the data directory) started and stopped with Cellar.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { createApp } from "../../src/api/app.ts";
import { loadConfig, type Config } from "../../src/config.ts";
import { LocalCluster } from "../../src/engines/postgresql/local-cluster.ts";
import { silentLogger } from "../../src/log.ts";
import { startController, type Controller } from "../../src/main/controller.ts";
import { loadMigrations } from "../../src/store/migrate.ts";
import { getUserByEmail, insertUser } from "../../src/store/users.store.ts";
import { freshDb, type TestDb } from "../support/db.ts";

const ADMIN_TOKEN = "tk-us-controller-start-test-0123456789";

const running = new Set<Controller>();
const tempDirs: string[] = [];
const dbs: TestDb[] = [];

async function start(config: Config): Promise<Controller> {
  const c = await startController(config, silentLogger, { listen: false, background: false });
  running.add(c);
  return c;
}
async function stop(c: Controller): Promise<void> {
  running.delete(c);
  await c.stop();
}

/** A temp dir the `postgres` OS user can traverse (the embedded store runs as it under root). */
async function tempDir(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-ctl-"));
  await fs.chmod(dir, 0o755);
  tempDirs.push(dir);
  return dir;
}

const embeddedCluster = (dataDir: string) =>
  new LocalCluster({ baseDir: path.join(dataDir, "store"), port: 5432 });

after(async () => {
  for (const c of running) await c.stop().catch(() => undefined);
  for (const dir of tempDirs) {
    await embeddedCluster(dir)
      .stop("immediate")
      .catch(() => undefined);
    await fs.rm(dir, { recursive: true, force: true });
  }
  for (const t of dbs) await t.drop().catch(() => undefined);
});

/** Exchanges an API token for a bearer through a controller's app. */
async function exchange(c: Controller, apiToken: string): Promise<string> {
  const res = await createApp(c.deps).request("/v1/tokens/exchange", {
    method: "POST",
    headers: { authorization: `Basic ${Buffer.from(`:${apiToken}`).toString("base64")}` },
  });
  assert.equal(res.status, 200);
  return ((await res.json()) as { token: string }).token;
}

async function whoAmI(c: Controller, bearer: string): Promise<string> {
  const res = await createApp(c.deps).request("/v1/users/self", {
    headers: { authorization: `Bearer ${bearer}` },
  });
  assert.equal(res.status, 200);
  return ((await res.json()) as { user: { username: string } }).user.username;
}

describe("two controllers starting at once on one external store", () => {
  // A few rounds, each on a fresh empty database, to give the race several chances.
  for (let round = 1; round <= 3; round++) {
    it(`round ${round}: both start, migrations run once, one secret, one admin`, async () => {
      const t = await freshDb({ empty: true });
      dbs.push(t);
      const host = String(t.config.host);
      const url = `postgresql://postgres@/${t.name}?host=${encodeURIComponent(host)}&port=${String(t.config.port)}`;
      // Two controllers of one deployment: one store, each its own machine (data dir), one
      // master key file between them (made by whichever starts first).
      const masterKeyFile = path.join(await tempDir(), "master-key");
      const configOf = async () =>
        loadConfig({
          CELLAR_DATABASE_URL: url,
          CELLAR_DATA_DIR: await tempDir(),
          CELLAR_MASTER_KEY_FILE: masterKeyFile,
          CELLAR_ADMIN_TOKEN: ADMIN_TOKEN,
          CELLAR_LOCAL_FLEET: "off",
        });
      const [ca, cb] = [await configOf(), await configOf()];
      const [a, b] = await Promise.all([start(ca), start(cb)]);

      assert.ok(a.deps.jwtSecret.equals(b.deps.jwtSecret), "one JWT secret");
      for (const region of ["osc-fr1", "osc-secnum-fr1"]) {
        assert.equal(a.deps.pki.ca(region).certPem, b.deps.pki.ca(region).certPem, `one ${region} CA`);
      }
      const versions = (await loadMigrations()).map((m) => m.version);
      const { rows: applied } = await t.db.query<{ version: number }>(
        "SELECT version FROM cellar_migrations ORDER BY version",
      );
      assert.deepEqual(
        applied.map((r) => r.version),
        versions,
        "each migration once",
      );
      const { rows: admins } = await t.db.query<{ id: string }>("SELECT id FROM users WHERE is_admin");
      assert.deepEqual(
        admins.map((r) => r.id),
        ["us-admin"],
      );
      const { rows: tokens } = await t.db.query("SELECT 1 FROM api_tokens WHERE user_id = 'us-admin'");
      assert.equal(tokens.length, 1, "one admin token");
      const { rows: secrets } = await t.db.query("SELECT 1 FROM settings WHERE key = 'jwt_secret'");
      assert.equal(secrets.length, 1);

      assert.ok(a.deps.masterKey.equals(b.deps.masterKey), "one master key");
      assert.equal((await fs.stat(masterKeyFile)).mode & 0o777, 0o600);

      // A session opened on one controller is valid on the other.
      const bearer = await exchange(a, ADMIN_TOKEN);
      assert.equal(await whoAmI(b, bearer), "admin");
      await Promise.all([stop(a), stop(b)]);
      if (round === 1) {
        // A third controller with a master key of its own could not open the store's keys.
        const own = { ...(await configOf()), masterKeyFile: path.join(await tempDir(), "master-key") };
        await assert.rejects(start(own), /is not the one this store's encryption keys were sealed with/);
      }
    });
  }
});

describe("embedded store", () => {
  it("is created and started by Cellar, owned by one controller, stopped with it, and kept", async () => {
    const dataDir = await tempDir();
    const config = loadConfig({
      CELLAR_DATA_DIR: dataDir,
      CELLAR_ADMIN_TOKEN: ADMIN_TOKEN,
      CELLAR_LOCAL_FLEET: "off",
    });
    const cluster = embeddedCluster(dataDir);
    const socket = path.join(cluster.socketDir, ".s.PGSQL.5432");

    const first = await start(config);
    assert.ok(await cluster.isReady(), "embedded PostgreSQL answers on its socket");
    const { rows: listen } = await first.deps.db.query<{ listen_addresses: string }>("SHOW listen_addresses");
    assert.equal(listen[0]!.listen_addresses, "", "socket only, no TCP");
    assert.equal(await whoAmI(first, await exchange(first, ADMIN_TOKEN)), "admin");
    await insertUser(first.deps.db, { username: "kept", email: "kept@example.test" });

    await assert.rejects(start(config), /another Cellar controller .* is using .*; stop it first/);
    assert.ok(await cluster.isReady(), "the refused controller left the store alone");

    const secret = first.deps.jwtSecret;
    await stop(first);
    assert.equal(await cluster.isReady(), false, "stopped with Cellar");
    await assert.rejects(fs.access(socket), "socket gone");

    const again = await start(config);
    assert.ok(await getUserByEmail(again.deps.db, "kept@example.test"), "data survives a restart");
    assert.ok(again.deps.jwtSecret.equals(secret), "so do sessions' signing secret");
    await stop(again);
    assert.equal(await cluster.isReady(), false);
  });

  it("refuses a data dir locked by another live process, and takes over a dead one's lock", async () => {
    const dataDir = await tempDir();
    const config = loadConfig({ CELLAR_DATA_DIR: dataDir, CELLAR_LOCAL_FLEET: "off" });
    // Another process holding the lock: any live process will do.
    const other = spawn("sleep", ["60"], { stdio: "ignore" });
    const exited = new Promise((resolve) => other.once("exit", resolve));
    try {
      await fs.writeFile(path.join(dataDir, "controller.pid"), String(other.pid));
      await assert.rejects(start(config), new RegExp(`another Cellar controller \\(pid ${other.pid}\\)`));
      assert.equal(await embeddedCluster(dataDir).isReady(), false, "nothing started");
    } finally {
      other.kill("SIGKILL");
      await exited;
    }
    // Its process is gone (and reaped): the lock is stale.
    const c = await start(config);
    assert.equal(await fs.readFile(path.join(dataDir, "controller.pid"), "utf8"), String(process.pid));
    await stop(c);
    await assert.rejects(fs.access(path.join(dataDir, "controller.pid")), "lock released on stop");
  });
});
