// Forks on the controller, on a real store: `restore_from` on add-on and Dedicated creation
// is checked in the creating transaction (a refusal creates nothing), recorded as a seed the
// fork's node spec carries, done once the fork runs; the source's repository outlives it.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { applyBackupReports } from "../../src/reconciler/backup-reports.ts";
import { nodeBackupSpec } from "../../src/reconciler/backup-spec.ts";
import { reconcileBackups } from "../../src/reconciler/backup.reconciler.ts";
import { getDatabase } from "../../src/store/databases.store.ts";
import { insertHost } from "../../src/store/hosts.store.ts";
import { startHarness, type Harness, type Session } from "../support/api.ts";
import { makeApp } from "../support/scopes.ts";

const minutesAgo = (m: number) => new Date(Date.now() - m * 60_000).toISOString();

describe("forks: a new database from another's backups at a point in time", () => {
  let h: Harness;
  let alice: Session;
  let bob: Session;
  let repoRoot: string;
  let hostId = "";
  let sourceId = "";
  let dedicatedId = "";
  let node = 0;

  const databases = async () => (await h.deps.db.query("SELECT count(*)::int AS n FROM databases")).rows[0].n;
  const addAddon = (s: Session, app: string, plan: string, restoreFrom?: unknown) =>
    h.call("POST", `/v1/apps/${app}/addons`, {
      bearer: s.bearer,
      body: {
        addon: {
          addon_provider_id: "postgresql",
          plan_id: plan,
          ...(restoreFrom !== undefined ? { restore_from: restoreFrom } : {}),
        },
      },
    });
  /** As a placed, verified database whose node reported one backup from 60 to 1 minute ago. */
  const runningWithBackups = async (id: string) => {
    const inst = `inst-fork${++node}`;
    await h.deps.db.query(
      `INSERT INTO instances (id, database_id, host_id, kind, port, spec) VALUES ($1, $2, $3, 'node', $4, '{}')`,
      [inst, id, hostId, 20000 + node],
    );
    await h.deps.db.query(
      "INSERT INTO database_credentials (database_id, username, password, dbname) VALUES ($1, $2, 'pw', $2)",
      [id, `user_${node}`],
    );
    await h.deps.db.query(
      "UPDATE databases SET phase = 'running', observed_generation = generation WHERE id = $1",
      [id],
    );
    const db = (await getDatabase(h.deps.db, id))!;
    await h.deps.db.tx((q) => nodeBackupSpec(q, h.deps, db));
    const backup = {
      label: "20260101-000000F",
      type: "full",
      timeline: 2,
      started_at: minutesAgo(61),
      stopped_at: minutesAgo(60),
      size: 1,
      repo_size: 1,
      reason: "new-timeline",
    };
    await applyBackupReports(h.deps, hostId, [
      { id: inst, backup: { stanza: id, timeline: 2, backups: [backup], archived_until: minutesAgo(1) } },
    ]);
  };

  before(async () => {
    repoRoot = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-forks-api-"));
    h = await startHarness({ CELLAR_RATE_LIMIT_PER_MINUTE: "10000", CELLAR_BACKUP_REPO: repoRoot });
    alice = await h.user("alice");
    bob = await h.user("bobby");
    await makeApp(h, alice, "shop-prod");
    await makeApp(h, alice, "shop-staging");
    await makeApp(h, bob, "bob-app");
    const caps = { capacityVcpu: 2, capacityRamMb: 4096, capacityDiskGb: 100, isolation: {} };
    const reg = { name: "fork-h1", region: "osc-fr1", az: "osc-fr1-a", pool: "shared" as const };
    hostId = (await insertHost(h.deps.db, { ...reg, address: "127.0.0.1", ...caps }, "tk-host-f")).id;
    sourceId = (await addAddon(alice, "shop-prod", "postgresql-starter-1024")).json.addon.id;
    await runningWithBackups(sourceId);
    const dr = await h.call("POST", "/v1/databases", {
      bearer: alice.bearer,
      body: {
        database: { name: "ledger-prod", technology: "postgresql-ng", plan: "postgresql-dr-starter-4096" },
      },
    });
    dedicatedId = dr.json.database.id;
    await runningWithBackups(dedicatedId);
  });
  after(async () => {
    await h?.close();
    await fs.rm(repoRoot, { recursive: true, force: true });
  });

  it("refuses a bad fork request with 422 and creates nothing", async () => {
    const before = await databases();
    const t = minutesAgo(30);
    const cases: Array<[Session, string, string, unknown, string]> = [
      [alice, "shop-staging", "postgresql-starter-1024", "yesterday", "restore_from"],
      [alice, "shop-staging", "postgresql-starter-1024", { restore_time: t }, "restore_from.database_id"],
      [
        alice,
        "shop-staging",
        "postgresql-starter-1024",
        { database_id: sourceId, restore_time: "soon" },
        "restore_from.restore_time",
      ],
      [
        alice,
        "shop-staging",
        "postgresql-starter-1024",
        { database_id: sourceId, restore_time: minutesAgo(90) },
        "restore_from.restore_time",
      ],
      [
        alice,
        "shop-staging",
        "postgresql-starter-1024",
        { database_id: "ad-nope", restore_time: t },
        "restore_from.database_id",
      ],
      [
        bob,
        "bob-app",
        "postgresql-starter-1024",
        { database_id: sourceId, restore_time: t },
        "restore_from.database_id",
      ],
      [
        alice,
        "shop-staging",
        "postgresql-starter-512",
        { database_id: sourceId, restore_time: t },
        "plan_id",
      ],
      [
        alice,
        "shop-staging",
        "postgresql-starter-1024",
        { database_id: dedicatedId, restore_time: t },
        "restore_from.database_id",
      ],
    ];
    for (const [who, app, plan, from, field] of cases) {
      const res = await addAddon(who, app, plan, from);
      assert.equal(res.status, 422, `${JSON.stringify(from)}: ${JSON.stringify(res.json)}`);
      assert.ok(res.json.errors[field], `${field} in ${JSON.stringify(res.json.errors)}`);
    }
    assert.equal(await databases(), before);
  });

  let forkId = "";

  it("creates a Shared fork in another app; its node spec restores from the source under the fork's names", async () => {
    const t = minutesAgo(30);
    const res = await addAddon(alice, "shop-staging", "postgresql-starter-2048", {
      database_id: sourceId,
      restore_time: t,
    });
    assert.equal(res.status, 201, JSON.stringify(res.json));
    forkId = res.json.addon.id;
    assert.equal(res.json.addon.status, "provisioning");
    await h.deps.db.query(
      "INSERT INTO database_credentials (database_id, username, password, dbname) VALUES ($1, 'fork_user', 'pw', 'fork_db')",
      [forkId],
    );
    const spec = await h.deps.db.tx(async (q) => nodeBackupSpec(q, h.deps, (await getDatabase(q, forkId))!));
    const source = await h.deps.db.query("SELECT * FROM continuous_backups WHERE database_id = $1", [
      sourceId,
    ]);
    assert.deepEqual(spec?.seed, {
      id: `seed-${forkId}`,
      repoPath: source.rows[0].repo_path,
      stanza: sourceId,
      cipherPass: source.rows[0].cipher_pass,
      targetTime: t,
      timeline: 2,
      rename: { fromUser: "user_1", fromDatabase: "user_1", toUser: "fork_user", toDatabase: "fork_db" },
    });
    assert.notEqual(spec?.stanza, sourceId, "the fork archives into its own stanza");
    assert.notEqual(spec?.cipherPass, source.rows[0].cipher_pass, "with its own key");
  });

  it("forks a Dedicated database into a new Dedicated database", async () => {
    const res = await h.call("POST", "/v1/databases", {
      bearer: alice.bearer,
      body: {
        database: {
          name: "ledger-fork",
          technology: "postgresql-ng",
          plan: "postgresql-dr-starter-4096",
          restore_from: { database_id: dedicatedId, restore_time: minutesAgo(10) },
        },
      },
    });
    assert.equal(res.status, 201, JSON.stringify(res.json));
    const seeds = await h.deps.db.query(
      "SELECT source_database_id FROM database_seeds WHERE database_id = $1",
      [res.json.database.id],
    );
    assert.equal(seeds.rows[0].source_database_id, dedicatedId);
  });

  it("keeps the source's repository while a fork restores from it; the seed is done once the fork runs", async () => {
    const repo = path.join(repoRoot, "osc-fr1", sourceId);
    await fs.mkdir(repo, { recursive: true });
    assert.equal(
      (await h.call("DELETE", `/v1/apps/shop-prod/addons/${sourceId}`, { bearer: alice.bearer })).status,
      204,
    );
    await h.deps.db.query("UPDATE databases SET deleted_at = now(), phase = 'deleted' WHERE id = $1", [
      sourceId,
    ]);
    const waiting = await reconcileBackups(h.deps, sourceId, { message: "deleted" });
    assert.match(waiting.message, /stays while 1 fork\(s\) restore from it/);
    assert.ok(waiting.requeueAfterMs);
    await fs.access(repo);
    await h.deps.db.query(
      "UPDATE databases SET phase = 'running', observed_generation = generation WHERE id = $1",
      [forkId],
    );
    await reconcileBackups(h.deps, forkId, { message: "running" });
    const spec = await h.deps.db.tx(async (q) => nodeBackupSpec(q, h.deps, (await getDatabase(q, forkId))!));
    assert.equal(spec?.seed, undefined);
    const removed = await reconcileBackups(h.deps, sourceId, { message: "deleted" });
    assert.match(removed.message, /was removed/);
    await assert.rejects(fs.access(repo));
  });
});
