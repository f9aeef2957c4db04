// Continuous backups on the controller, on a real store: the recovery window from node
// reports, restore requests (422 and 409 change nothing), the restore's operation, backup
// and archive-health events, and the repository removed with its database.
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

describe("continuous backups: window, restore requests, reports, events", () => {
  let h: Harness;
  let alice: Session;
  let repoRoot: string;
  let dbId = "";
  let hostId = "";
  let otherHostId = "";
  const nodeId = "inst-bk0test1";

  const token = async () => {
    const res = await h.call("POST", `/v1/apps/shop-prod/addons/${dbId}/token`, { bearer: alice.bearer });
    return res.json.addon.token as string;
  };
  const dbApi = async (method: string, p: string, body?: unknown) =>
    h.call(method, `/api/databases/${dbId}${p}`, { bearer: await token(), ...(body ? { body } : {}) });
  const count = async (sql: string) => (await h.deps.db.query(sql, [dbId])).rows[0].n as number;
  const events = async (type: string) =>
    count(`SELECT count(*)::int AS n FROM events WHERE database_id = $1 AND type = '${type}'`);
  const report = (backup: Record<string, unknown>, host = hostId) =>
    applyBackupReports(h.deps, host, [{ id: nodeId, status: "running", backup }]);
  const fullBackup = (label: string, stoppedMinutesAgo: number, timeline = 1) => ({
    label,
    type: "full",
    timeline,
    started_at: minutesAgo(stoppedMinutesAgo + 1),
    stopped_at: minutesAgo(stoppedMinutesAgo),
    size: 1000,
    repo_size: 100,
    reason: "initial",
  });
  const baseReport = () => ({
    stanza: dbId,
    timeline: 1,
    backups: [fullBackup("20260101-000000F", 30)],
    archived_until: minutesAgo(1),
    archive_error: null,
    failure: null,
    restore: null,
    checked_at: new Date().toISOString(),
  });
  const pass = (message = "pass") => reconcileBackups(h.deps, dbId, { message });

  before(async () => {
    repoRoot = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-backups-api-"));
    h = await startHarness({ CELLAR_RATE_LIMIT_PER_MINUTE: "10000", CELLAR_BACKUP_REPO: repoRoot });
    alice = await h.user("alice");
    await makeApp(h, alice, "shop-prod");
    const res = await h.call("POST", "/v1/apps/shop-prod/addons", {
      bearer: alice.bearer,
      body: { addon: { addon_provider_id: "postgresql", plan_id: "postgresql-starter-512" } },
    });
    assert.equal(res.status, 201);
    dbId = res.json.addon.id;
    const reg = { region: "osc-fr1", az: "osc-fr1-a", pool: "shared" as const, address: "127.0.0.1" };
    const caps = { capacityVcpu: 2, capacityRamMb: 4096, capacityDiskGb: 100, isolation: {} };
    hostId = (await insertHost(h.deps.db, { name: "bk-h1", ...reg, ...caps }, "tk-host-a")).id;
    otherHostId = (await insertHost(h.deps.db, { name: "bk-h2", ...reg, ...caps }, "tk-host-b")).id;
    await h.deps.db.query(
      `INSERT INTO instances (id, database_id, host_id, kind, port, spec) VALUES ($1, $2, $3, 'node', 20001, '{}')`,
      [nodeId, dbId, hostId],
    );
    // As after a verified provisioning: running at its generation.
    await h.deps.db.query(
      "UPDATE databases SET phase = 'running', observed_generation = generation WHERE id = $1",
      [dbId],
    );
    await h.deps.db.query(
      "UPDATE operations SET status = 'done', finished_at = now() WHERE database_id = $1",
      [dbId],
    );
  });
  after(async () => {
    await h?.close();
    await fs.rm(repoRoot, { recursive: true, force: true });
  });

  it("gives a database its own stanza, repository and key, the same whatever its class", async () => {
    const db = (await getDatabase(h.deps.db, dbId))!;
    const spec = await h.deps.db.tx((q) => nodeBackupSpec(q, h.deps, db));
    assert.ok(spec);
    assert.equal(spec.stanza, dbId);
    assert.equal(spec.repoPath, path.join(repoRoot, "osc-fr1", dbId));
    assert.equal(spec.cipherPass.length, 64);
    assert.equal(spec.retentionDays, 7);
    assert.equal(spec.restore, undefined);
    const again = await h.deps.db.tx((q) => nodeBackupSpec(q, h.deps, db));
    assert.equal(again?.cipherPass, spec.cipherPass, "the key is made once");
    // An HA cluster's nodes archive into the database's one stanza (whichever leads).
    const ha = await h.deps.db.tx((q) =>
      nodeBackupSpec(q, h.deps, { ...db, planId: "postgresql-business-1024" }),
    );
    assert.equal(ha?.stanza, dbId);
    assert.equal(ha?.cipherPass, spec.cipherPass);
    assert.equal(ha?.retentionDays, 7);
  });

  it("has no recovery window before a first backup, and refuses any restore then", async () => {
    const res = await dbApi("GET", "/pitr/recovery_window");
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, { recovery_window: {} });
    const restore = await dbApi("POST", "/pitr/restore", { restore_time: minutesAgo(5) });
    assert.equal(restore.status, 422);
    assert.match(restore.json.errors.restore_time[0], /no point is recoverable yet/);
  });

  it("derives the window from its node's report; a new backup is told once; other hosts are ignored", async () => {
    const r = baseReport();
    await report(r);
    await report(r);
    const later = { ...r, archived_until: minutesAgo(0.5), checked_at: new Date().toISOString() };
    await report(later); // the same set, a later check
    await report({ ...r, backups: [fullBackup("20270101-000000F", 1)] }, otherHostId);
    const res = await dbApi("GET", "/pitr/recovery_window");
    assert.deepEqual(res.json.recovery_window, {
      earliest_recoverable_at: r.backups[0]!.stopped_at,
      latest_recoverable_at: later.archived_until,
    });
    assert.equal(await events("database_backup_succeeded"), 1);
    const ev = await h.deps.db.query("SELECT type_data FROM events WHERE database_id = $1 AND type = $2", [
      dbId,
      "database_backup_succeeded",
    ]);
    assert.equal(ev.rows[0].type_data.backup_id, "20260101-000000F");
    assert.equal(ev.rows[0].type_data.resource_id, (await getDatabase(h.deps.db, dbId))!.resourceId);
  });

  it("answers 422 to malformed, future and out-of-window times, 409 when not running: nothing changes", async () => {
    const before = await count("SELECT generation AS n FROM databases WHERE id = $1");
    const ops = await count("SELECT count(*)::int AS n FROM operations WHERE database_id = $1");
    for (const body of [
      {},
      { restore_time: "soon" },
      { restore_time: 42 },
      { restore_time: "2026-01-01 10:00" },
    ]) {
      const res = await dbApi("POST", "/pitr/restore", body);
      assert.equal(res.status, 422, JSON.stringify(body));
      assert.ok(res.json.errors.restore_time);
    }
    const future = await dbApi("POST", "/pitr/restore", {
      restore_time: new Date(Date.now() + 60_000).toISOString(),
    });
    assert.match(future.json.errors.restore_time[0], /in the future/);
    for (const t of [minutesAgo(31), minutesAgo(0.1)]) {
      const res = await dbApi("POST", "/pitr/restore", { restore_time: t });
      assert.equal(res.status, 422);
      assert.match(res.json.errors.restore_time[0], /outside the recovery window: pick a time from/);
    }
    await h.deps.db.query("UPDATE databases SET phase = 'updating' WHERE id = $1", [dbId]);
    const busy = await dbApi("POST", "/pitr/restore", { restore_time: minutesAgo(10) });
    await h.deps.db.query("UPDATE databases SET phase = 'running' WHERE id = $1", [dbId]);
    assert.equal(busy.status, 409);
    assert.equal(await count("SELECT generation AS n FROM databases WHERE id = $1"), before);
    assert.equal(await count("SELECT count(*)::int AS n FROM operations WHERE database_id = $1"), ops);
    assert.equal(await count("SELECT count(*)::int AS n FROM pitr_restores WHERE database_id = $1"), 0);
  });

  let restoreId = "";
  let operationId = "";

  it("records a restore as an operation on the next generation, which the node's spec carries", async () => {
    const before = await count("SELECT generation AS n FROM databases WHERE id = $1");
    const target = minutesAgo(10);
    const res = await dbApi("POST", "/pitr/restore", { restore_time: target });
    assert.equal(res.status, 201, JSON.stringify(res.json));
    operationId = res.json.operation.id;
    assert.equal(res.json.operation_id, operationId);
    assert.equal(res.json.operation.type, "pitr-restore");
    assert.match(
      res.headers.get("location") ?? "",
      new RegExp(`/v1/apps/shop-prod/operations/${operationId}$`),
    );
    assert.equal(await count("SELECT generation AS n FROM databases WHERE id = $1"), before + 1);
    const db = (await getDatabase(h.deps.db, dbId))!;
    const spec = await h.deps.db.tx((q) => nodeBackupSpec(q, h.deps, db));
    assert.equal(spec?.restore?.targetTime, target);
    restoreId = spec.restore.id;
    const again = await dbApi("POST", "/pitr/restore", { restore_time: target });
    assert.equal(again.status, 409);
    const op = await h.call("GET", `/v1/apps/shop-prod/operations/${operationId}`, { bearer: alice.bearer });
    assert.equal(op.json.operation.status, "pending");
  });

  it("finishes the operation once the node restored and the database runs at its generation", async () => {
    const wake = await report({
      ...baseReport(),
      restore: { id: restoreId, status: "done", error: null, at: new Date().toISOString() },
    });
    assert.deepEqual(wake, [dbId]);
    await pass();
    const opStatus = async () =>
      (await h.call("GET", `/v1/apps/shop-prod/operations/${operationId}`, { bearer: alice.bearer })).json
        .operation.status as string;
    assert.equal(await opStatus(), "pending", "not before the database runs at the new generation");
    await h.deps.db.query("UPDATE databases SET observed_generation = generation WHERE id = $1", [dbId]);
    await pass();
    assert.equal(await opStatus(), "done");
    const db = (await getDatabase(h.deps.db, dbId))!;
    const spec = await h.deps.db.tx((q) => nodeBackupSpec(q, h.deps, db));
    assert.equal(spec?.restore, undefined, "a finished restore leaves the spec");
  });

  it("ends the operation in error when the node could not restore", async () => {
    const res = await dbApi("POST", "/pitr/restore", { restore_time: minutesAgo(10) });
    assert.equal(res.status, 201);
    const db = (await getDatabase(h.deps.db, dbId))!;
    const id = (await h.deps.db.tx((q) => nodeBackupSpec(q, h.deps, db)))!.restore!.id;
    await report({
      ...baseReport(),
      restore: { id, status: "failed", error: "no backup", at: minutesAgo(0) },
    });
    await pass();
    const op = await h.call("GET", `/v1/apps/shop-prod/operations/${res.json.operation.id}`, {
      bearer: alice.bearer,
    });
    assert.equal(op.json.operation.status, "error");
    assert.equal(op.json.operation.error, "no backup");
    await h.deps.db.query("UPDATE databases SET observed_generation = generation WHERE id = $1", [dbId]);
  });

  it("tells a failed backup once per run of failures", async () => {
    const failing = (at: string) => ({
      ...baseReport(),
      failure: { at, message: "backup: repository full" },
    });
    await report(failing(minutesAgo(3)));
    await report(failing(minutesAgo(2)));
    assert.equal(await events("database_backup_failed"), 1);
    await report(baseReport());
    await report(failing(minutesAgo(1)));
    assert.equal(await events("database_backup_failed"), 2);
    await report(baseReport());
  });

  it("tells the archive's health when it changes: healthy, then delayed past 12 hours", async () => {
    await pass();
    assert.equal(await events("database_continuousbackup_healthy"), 1);
    await pass();
    assert.equal(await events("database_continuousbackup_healthy"), 1, "once per change");
    await report({
      ...baseReport(),
      backups: [fullBackup("20260101-000000F", 14 * 60)],
      archived_until: minutesAgo(13 * 60),
    });
    await pass();
    assert.equal(await events("database_continuousbackup_delayed"), 1);
  });

  it("removes the repository once the database is deleted, and ignores late reports", async () => {
    const repo = path.join(repoRoot, "osc-fr1", dbId);
    await fs.mkdir(path.join(repo, "archive"), { recursive: true });
    await fs.writeFile(path.join(repo, "archive", "file"), "x");
    const del = await h.call("DELETE", `/v1/apps/shop-prod/addons/${dbId}`, { bearer: alice.bearer });
    assert.equal(del.status, 204);
    await pass();
    await fs.access(repo); // deletion requested, not finished: kept
    await h.deps.db.query("UPDATE databases SET deleted_at = now(), phase = 'deleted' WHERE id = $1", [dbId]);
    const result = await pass("deleted");
    assert.match(result.message, /backup repository .* was removed/);
    await assert.rejects(fs.access(repo));
    assert.equal(
      await count(
        "SELECT count(*)::int AS n FROM continuous_backups WHERE database_id = $1 AND repo_removed_at IS NOT NULL",
      ),
      1,
    );
    // A report arriving late writes nothing more.
    await report({ ...baseReport(), backups: [fullBackup("20280101-000000F", 1)] });
    assert.equal(await count("SELECT count(*)::int AS n FROM base_backups WHERE database_id = $1"), 1);
  });
});
