// Logical backups on the controller, on a real store: the schedule (PATCH on the database),
// manual backups, Dedicated refused, tenancy (404), the agent job protocol (claim, lease,
// outcome, a lost runner retried then failed), signed download links (expired and forged
// refused), periodic backups at their hour, retention, and a deleted database's backups gone.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { logicalBackupAgentRoutes } from "../../src/api/routes/logical-backups-agent.routes.ts";
import { downloadKey, signDownload } from "../../src/api/signed-url.ts";
import {
  DEFAULT_SCHEDULER_OPTIONS,
  tickLogicalBackups,
} from "../../src/reconciler/logical-backup.scheduler.ts";
import { insertHost } from "../../src/store/hosts.store.ts";
import { startHarness, type Harness, type Session } from "../support/api.ts";
import { makeApp, makeDedicated } from "../support/scopes.ts";

const TIMING = { leaseMs: 60_000, maxAttempts: 2, retryAfterMs: 0 };
const OPTS = { ...DEFAULT_SCHEDULER_OPTIONS, ...TIMING };

describe("logical backups: API, agent jobs, downloads, schedule, retention", () => {
  let h: Harness;
  let alice: Session;
  let bob: Session;
  let repoRoot: string;
  let dbId = "";
  let bobDbId = "";
  let dedicatedId = "";
  let agent: ReturnType<typeof logicalBackupAgentRoutes>;

  const addonToken = async (app: string, id: string, who: Session) => {
    const res = await h.call("POST", `/v1/apps/${app}/addons/${id}/token`, { bearer: who.bearer });
    assert.equal(res.status, 200, JSON.stringify(res.json));
    return res.json.addon.token as string;
  };
  const dbApi = async (method: string, p: string, body?: unknown, bearer?: string) =>
    h.call(method, `/api${p}`, {
      bearer: bearer ?? (await addonToken("shop-app", dbId, alice)),
      ...(body !== undefined ? { body } : {}),
    });
  const agentCall = async (method: string, p: string, body?: unknown) => {
    const res = await agent.request(`/hosts/self/logical-backups${p}`, {
      method,
      headers: { authorization: "Bearer tk-host-lb", "content-type": "application/json" },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, json: await res.json() };
  };
  const row = async (id: string) =>
    (await h.deps.db.query("SELECT * FROM logical_backups WHERE id = $1", [id])).rows[0];
  const events = async (type: string) =>
    (
      await h.deps.db.query("SELECT type_data FROM events WHERE database_id = $1 AND type = $2", [dbId, type])
    ).rows.map((r) => r.type_data);
  /** What an agent does: claims one job and writes its archive. */
  const runJob = async (content = "dump") => {
    const poll = await agentCall("GET", "?slots=1");
    assert.equal(poll.status, 200);
    const job = poll.json.jobs[0];
    assert.ok(job, "a job for this host");
    await fs.mkdir(path.dirname(job.archive), { recursive: true });
    await fs.writeFile(job.archive, content);
    return job;
  };

  before(async () => {
    repoRoot = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-logical-api-"));
    h = await startHarness({ CELLAR_RATE_LIMIT_PER_MINUTE: "10000", CELLAR_BACKUP_REPO: repoRoot });
    agent = logicalBackupAgentRoutes(h.deps, TIMING);
    alice = await h.user("alice");
    bob = await h.user("bob");
    await makeApp(h, alice, "shop-app");
    await makeApp(h, bob, "bobs-app");
    const add = async (who: Session, app: string) => {
      const res = await h.call("POST", `/v1/apps/${app}/addons`, {
        bearer: who.bearer,
        body: { addon: { addon_provider_id: "postgresql", plan_id: "postgresql-starter-512" } },
      });
      assert.equal(res.status, 201, JSON.stringify(res.json));
      return res.json.addon.id as string;
    };
    dbId = await add(alice, "shop-app");
    bobDbId = await add(bob, "bobs-app");
    dedicatedId = (await makeDedicated(h, alice, "ledger-dr")).id;
    const reg = { region: "osc-fr1", az: "osc-fr1-a", pool: "shared" as const, address: "127.0.0.1" };
    const caps = { capacityVcpu: 2, capacityRamMb: 4096, capacityDiskGb: 100, isolation: {} };
    const host = await insertHost(h.deps.db, { name: "lb-h1", ...reg, ...caps }, "tk-host-lb");
    await h.deps.db.query("UPDATE hosts SET status = 'ready' WHERE id = $1", [host.id]);
    for (const [i, id] of [dbId, bobDbId, dedicatedId].entries()) {
      await h.deps.db.query(
        `INSERT INTO instances (id, database_id, host_id, kind, port, spec, status, role)
         VALUES ($1, $2, $3, 'node', $4, '{}', 'running', 'leader')`,
        [`inst-lb${i}`, id, host.id, 20001 + i],
      );
      await h.deps.db.query(
        "INSERT INTO database_credentials (database_id, username, password, dbname) VALUES ($1, $2, 'pw', $2)",
        [id, `u${i}`],
      );
    }
    await h.deps.db.query(
      "UPDATE databases SET phase = 'running', observed_generation = generation WHERE id = ANY($1)",
      [[dbId, bobDbId, dedicatedId]],
    );
  });
  after(async () => {
    await h?.close();
    await fs.rm(repoRoot, { recursive: true, force: true });
  });

  it("shows the default schedule, changes it with PATCH, and refuses bad hours and fields", async () => {
    const get = await dbApi("GET", `/databases/${dbId}`);
    assert.equal(get.json.database.periodic_backups_enabled, true);
    assert.deepEqual(get.json.database.periodic_backups_scheduled_at, [0]);
    const patch = await dbApi("PATCH", `/databases/${dbId}`, {
      database: { periodic_backups_scheduled_at: 4 },
    });
    assert.equal(patch.status, 200, JSON.stringify(patch.json));
    assert.deepEqual(patch.json.database.periodic_backups_scheduled_at, [4]);
    assert.equal(patch.json.database.id, dbId);
    for (const bad of [24, -1, "4", 2.5, [1, 99]]) {
      const res = await dbApi("PATCH", `/databases/${dbId}`, {
        database: { periodic_backups_scheduled_at: bad },
      });
      assert.equal(res.status, 422, JSON.stringify(bad));
      assert.match(res.json.errors.periodic_backups_scheduled_at[0], /from 0 to 23/);
    }
    const field = await dbApi("PATCH", `/databases/${dbId}`, { database: { plan: "x" } });
    assert.equal(field.status, 422);
    assert.ok(field.json.errors.plan);
    const bool = await dbApi("PUT", `/databases/${dbId}`, { database: { periodic_backups_enabled: "no" } });
    assert.equal(bool.status, 422);
    const off = await dbApi("PUT", `/databases/${dbId}`, { database: { periodic_backups_enabled: false } });
    assert.equal(off.json.database.periodic_backups_enabled, false);
    assert.deepEqual(off.json.database.periodic_backups_scheduled_at, [4], "the hour is kept");
    const again = await dbApi("GET", `/databases/${dbId}`);
    assert.equal(again.json.database.periodic_backups_enabled, false);
  });

  it("refuses logical backups of Dedicated databases with a clear 422 (continuous backups only)", async () => {
    const tok = await addonToken("ledger-dr", dedicatedId, alice);
    const post = await dbApi("POST", `/databases/${dedicatedId}/backups`, undefined, tok);
    assert.equal(post.status, 422);
    assert.match(post.json.errors.database[0], /continuous backups/);
    const patch = await dbApi(
      "PATCH",
      `/databases/${dedicatedId}`,
      { database: { periodic_backups_enabled: true } },
      tok,
    );
    assert.equal(patch.status, 422);
    const list = await dbApi("GET", `/databases/${dedicatedId}/backups`, undefined, tok);
    assert.deepEqual(list.json, { database_backups: [] });
    const db = await dbApi("GET", `/databases/${dedicatedId}`, undefined, tok);
    assert.equal(db.json.database.periodic_backups_enabled, false);
  });

  let manualId = "";

  it("takes a manual backup: scheduled, run by the host's agent, done with its size and an event", async () => {
    const post = await dbApi("POST", `/databases/${dbId}/backups`);
    assert.equal(post.status, 201, JSON.stringify(post.json));
    const b = post.json.database_backup;
    manualId = b.id;
    assert.equal(b.status, "scheduled");
    assert.equal(b.method, "manual");
    assert.equal(b.database_id, dbId);
    assert.match(b.name, /^\d{14}_shop.app_\d{4}$/);
    const twice = await dbApi("POST", `/databases/${dbId}/backups`);
    assert.equal(twice.status, 409, "one manual backup at a time");
    const job = await runJob("a dump of 21 bytes...");
    assert.equal(job.id, manualId);
    assert.equal(job.attempt, 1);
    assert.equal(job.dbname, "u0");
    assert.equal(job.archive, path.join(repoRoot, "osc-fr1", "logical", dbId, `${manualId}.tar.gz`));
    assert.equal(
      (await dbApi("GET", `/databases/${dbId}/backups/${manualId}`)).json.database_backup.status,
      "running",
    );
    const progress = await agentCall("POST", `/${manualId}/progress`, { attempt: 1, bytes: 10 });
    assert.deepEqual(progress.json, { continue: true });
    const stale = await agentCall("POST", `/${manualId}/finish`, { attempt: 7, status: "done", size: 21 });
    assert.deepEqual(stale.json, { accepted: false }, "another try's outcome is not this one's");
    const fin = await agentCall("POST", `/${manualId}/finish`, { attempt: 1, status: "done", size: 21 });
    assert.deepEqual(fin.json, { accepted: true });
    const list = await dbApi("GET", `/databases/${dbId}/backups`);
    assert.equal(list.json.database_backups.length, 1);
    assert.equal(list.json.database_backups[0].status, "done");
    assert.equal(list.json.database_backups[0].size, 21);
    const one = await dbApi("GET", `/backups/${manualId}`);
    assert.equal(one.json.database_backup.id, manualId);
    const ok = await events("database_backup_succeeded");
    assert.equal(ok.length, 1);
    assert.equal(ok[0].backup_id, manualId);
    assert.equal(ok[0].backup_method, "manual");
    assert.equal(ok[0].backup_status, "done");
  });

  it("answers 404 to unknown backups and to other tenants' backups", async () => {
    assert.equal((await dbApi("GET", `/databases/${dbId}/backups/bkp-00000000000000000000`)).status, 404);
    assert.equal((await dbApi("GET", "/backups/bkp-00000000000000000000")).status, 404);
    const bobTok = await addonToken("bobs-app", bobDbId, bob);
    const viaOwn = await dbApi("GET", `/databases/${bobDbId}/backups/${manualId}`, undefined, bobTok);
    assert.equal(viaOwn.status, 404);
    assert.equal(viaOwn.json.resource, "database_backup");
    assert.equal((await dbApi("GET", `/backups/${manualId}`, undefined, bobTok)).status, 404);
    assert.equal((await dbApi("GET", `/databases/${dbId}/backups`, undefined, bob.bearer)).status, 404);
    const archive = await dbApi(
      "GET",
      `/databases/${bobDbId}/backups/${manualId}/archive`,
      undefined,
      bobTok,
    );
    assert.equal(archive.status, 404);
  });

  it("serves a done backup through a signed, expiring link; forged and expired links are refused", async () => {
    const res = await dbApi("GET", `/databases/${dbId}/backups/${manualId}/archive`);
    assert.equal(res.status, 200);
    const url = new URL(res.json.download_url);
    assert.match(url.pathname, new RegExp(`/api/backups/${manualId}/download$`));
    const local = url.pathname + url.search;
    const file = await h.app.request(local);
    assert.equal(file.status, 200);
    assert.equal(
      file.headers.get("content-disposition"),
      `attachment; filename="${(await row(manualId)).name}.tar.gz"`,
    );
    assert.equal(await file.text(), "a dump of 21 bytes...");
    const token = url.searchParams.get("token")!;
    const key = downloadKey(h.deps.jwtSecret);
    const expired = signDownload(key, manualId, Math.floor(Date.now() / 1000) - 1);
    const otherId = signDownload(key, "bkp-11111111111111111111", Math.floor(Date.now() / 1000) + 600);
    const tampered = token.replace(/^\d+/, String(Math.floor(Date.now() / 1000) + 99_999));
    for (const t of [expired, otherId, tampered, "", "garbage"]) {
      const r = await h.call("GET", `/api/backups/${manualId}/download?token=${encodeURIComponent(t)}`);
      assert.equal(r.status, 403, t);
      assert.equal(r.json.code, "invalid_download_link");
    }
  });

  it("retries a backup whose runner was lost, then fails it (event) after its last try", async () => {
    const post = await dbApi("POST", `/databases/${dbId}/backups`);
    const id = post.json.database_backup.id as string;
    const first = await runJob();
    assert.equal(first.id, id);
    // The agent restarted: its next poll lists no running job, so this one is tried again.
    const second = await agentCall("GET", "?slots=1&running=");
    assert.equal(second.json.jobs[0]?.id, id);
    assert.equal(second.json.jobs[0]?.attempt, 2);
    // Then the whole host goes silent: the lease lapses and the last try is used up.
    await h.deps.db.query("UPDATE logical_backups SET lease_until = now() - interval '1 s' WHERE id = $1", [
      id,
    ]);
    await tickLogicalBackups(h.deps, OPTS);
    const r = await row(id);
    assert.equal(r.status, "error");
    assert.match(r.error, /stopped answering/);
    const failed = await events("database_backup_failed");
    assert.equal(failed.length, 1);
    assert.equal(failed[0].backup_id, id);
    await tickLogicalBackups(h.deps, OPTS);
    assert.equal((await events("database_backup_failed")).length, 1, "told once");
    assert.equal((await dbApi("GET", `/databases/${dbId}/backups/${id}/archive`)).status, 409);
  });

  it("takes a periodic backup at its hour, once, and keeps 10 manual backups on Starter", async () => {
    await dbApi("PATCH", `/databases/${dbId}`, { database: { periodic_backups_enabled: true } });
    const realNow = h.deps.now;
    try {
      const tomorrow = new Date(Date.now() + 86_400_000);
      tomorrow.setUTCHours(4, 5, 0, 0);
      h.deps.now = () => tomorrow;
      await tickLogicalBackups(h.deps, OPTS);
      await tickLogicalBackups(h.deps, OPTS);
    } finally {
      h.deps.now = realNow;
    }
    const periodic = (await dbApi("GET", `/databases/${dbId}/backups`)).json.database_backups.filter(
      (b: any) => b.method === "periodic",
    );
    assert.equal(periodic.length, 1);
    assert.match(periodic[0].name, /^\d{8}040000_shop.app_/);
    // Ten more manual backups: with the first one, eleven; the oldest goes when the last is done.
    await h.deps.db.query("DELETE FROM logical_backups WHERE method = 'periodic'");
    for (let i = 0; i < 10; i++) {
      const id = (await dbApi("POST", `/databases/${dbId}/backups`)).json.database_backup.id;
      const job = await runJob(`dump ${i}`);
      assert.equal(job.id, id);
      await agentCall("POST", `/${id}/finish`, { attempt: 1, status: "done", size: 6 });
    }
    const done = (await dbApi("GET", `/databases/${dbId}/backups`)).json.database_backups.filter(
      (b: any) => b.status === "done",
    );
    assert.equal(done.length, 10);
    assert.ok(!done.some((b: any) => b.id === manualId), "the oldest was evicted");
    const archive = path.join(repoRoot, "osc-fr1", "logical", dbId, `${manualId}.tar.gz`);
    await tickLogicalBackups(h.deps, OPTS);
    await assert.rejects(fs.access(archive), "its file is removed");
    assert.equal(await row(manualId), undefined);
  });

  it("removes a deleted database's backups and their files", async () => {
    const dir = path.join(repoRoot, "osc-fr1", "logical", dbId);
    assert.ok((await fs.readdir(dir)).length >= 10);
    const del = await h.call("DELETE", `/v1/apps/shop-app/addons/${dbId}`, { bearer: alice.bearer });
    assert.equal(del.status, 204, JSON.stringify(del.json));
    await tickLogicalBackups(h.deps, OPTS);
    const { rows } = await h.deps.db.query(
      "SELECT count(*)::int AS n FROM logical_backups WHERE database_id = $1",
      [dbId],
    );
    assert.equal(rows[0].n, 0);
    await assert.rejects(fs.access(dir), "the database's backup directory is gone");
  });
});
