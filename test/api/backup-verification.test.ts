// Verified backups on the controller, on a real store: the verdicts a node reports for its
// full backups are shown on each backup (GET /api/databases/:id/pitr/backups), once recorded
// they stay, and a failed verification is a database_backup_failed event, told once.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { applyBackupReports } from "../../src/reconciler/backup-reports.ts";
import { nodeBackupSpec } from "../../src/reconciler/backup-spec.ts";
import { getDatabase } from "../../src/store/databases.store.ts";
import { insertHost } from "../../src/store/hosts.store.ts";
import { startHarness, type Harness, type Session } from "../support/api.ts";
import { makeApp } from "../support/scopes.ts";

const minutesAgo = (m: number) => new Date(Date.now() - m * 60_000).toISOString();

describe("verified backups: verdicts on the backups, failure events", () => {
  let h: Harness;
  let alice: Session;
  let bob: Session;
  let repoRoot: string;
  let dbId = "";
  let hostId = "";
  const nodeId = "inst-bkverify1";

  const tokenOf = async (who: Session) => {
    const res = await h.call("POST", `/v1/apps/verify-app/addons/${dbId}/token`, { bearer: who.bearer });
    return res.json.addon?.token as string | undefined;
  };
  const backups = async () => {
    const res = await h.call("GET", `/api/databases/${dbId}/pitr/backups`, {
      bearer: (await tokenOf(alice))!,
    });
    assert.equal(res.status, 200, JSON.stringify(res.json));
    return res.json.continuous_backups as Array<Record<string, unknown>>;
  };
  const failedEvents = async () =>
    (
      await h.deps.db.query(
        "SELECT type_data FROM events WHERE database_id = $1 AND type = 'database_backup_failed' ORDER BY created_at",
        [dbId],
      )
    ).rows.map((r) => r.type_data as Record<string, unknown>);
  const set = (label: string, stoppedMinutesAgo: number, verification: Record<string, unknown>) => ({
    label,
    type: "full",
    timeline: 1,
    started_at: minutesAgo(stoppedMinutesAgo + 1),
    stopped_at: minutesAgo(stoppedMinutesAgo),
    size: 1000,
    repo_size: 100,
    reason: "scheduled",
    verification,
  });
  const report = (sets: unknown[]) =>
    applyBackupReports(h.deps, hostId, [
      {
        id: nodeId,
        status: "running",
        backup: {
          stanza: dbId,
          timeline: 1,
          backups: sets,
          archived_until: minutesAgo(0.5),
          archive_error: null,
          failure: null,
          restore: null,
          checked_at: new Date().toISOString(),
        },
      },
    ]);
  const pending = { status: "pending", at: null, detail: null };

  before(async () => {
    repoRoot = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-verify-api-"));
    h = await startHarness({ CELLAR_RATE_LIMIT_PER_MINUTE: "10000", CELLAR_BACKUP_REPO: repoRoot });
    alice = await h.user("alice");
    bob = await h.user("bob");
    await makeApp(h, alice, "verify-app");
    const res = await h.call("POST", "/v1/apps/verify-app/addons", {
      bearer: alice.bearer,
      body: { addon: { addon_provider_id: "postgresql", plan_id: "postgresql-starter-512" } },
    });
    assert.equal(res.status, 201);
    dbId = res.json.addon.id;
    const reg = { region: "osc-fr1", az: "osc-fr1-a", pool: "shared" as const, address: "127.0.0.1" };
    const caps = { capacityVcpu: 2, capacityRamMb: 4096, capacityDiskGb: 100, isolation: {} };
    hostId = (await insertHost(h.deps.db, { name: "bkv-h1", ...reg, ...caps }, "tk-host-v")).id;
    await h.deps.db.query(
      `INSERT INTO instances (id, database_id, host_id, kind, port, spec) VALUES ($1, $2, $3, 'node', 20011, '{}')`,
      [nodeId, dbId, hostId],
    );
    const db = (await getDatabase(h.deps.db, dbId))!;
    await h.deps.db.tx((q) => nodeBackupSpec(q, h.deps, db)); // its stanza, as at placement
  });
  after(async () => {
    await h?.close();
    await fs.rm(repoRoot, { recursive: true, force: true });
  });

  it("shows a new full backup as pending, then verified with what was checked", async () => {
    await report([set("20260101-000000F", 30, pending)]);
    const [first] = await backups();
    assert.equal(first!.id, "20260101-000000F");
    assert.equal(first!.verification_status, "pending");
    assert.equal(first!.verification_checked_at, null);
    const at = new Date().toISOString();
    const detail = "3 databases, 600 relations, 20000 rows read in 4.2 s";
    await report([set("20260101-000000F", 30, { status: "verified", at, detail })]);
    const [verified] = await backups();
    assert.equal(verified!.verification_status, "verified");
    assert.equal(verified!.verification_detail, detail);
    assert.equal(verified!.verification_checked_at, at);
    assert.deepEqual(await failedEvents(), []);
  });

  it("shows a failed verification with its reason and records a backup failure event once", async () => {
    const ok = set("20260101-000000F", 30, { status: "verified", at: minutesAgo(20), detail: "fine" });
    const reason = "restore: pgbackrest restore failed: unable to open missing file";
    const bad = set("20260102-000000F", 5, { status: "failed", at: minutesAgo(1), detail: reason });
    await report([ok, bad]);
    await report([ok, { ...bad, verification: { ...bad.verification } }]);
    const list = await backups();
    assert.deepEqual(
      list.map((b) => [b.id, b.verification_status]),
      [
        ["20260102-000000F", "failed"],
        ["20260101-000000F", "verified"],
      ],
    );
    assert.equal(list[0]!.verification_detail, reason);
    const events = await failedEvents();
    assert.equal(events.length, 1);
    assert.equal(events[0]!.backup_id, "20260102-000000F");
    assert.equal(events[0]!.backup_status, "error");
    assert.equal(events[0]!.verification_status, "failed");
    assert.match(String(events[0]!.error), /^verification failed: restore: /);
  });

  it("keeps a recorded verdict: a later report cannot turn it back to pending or verified", async () => {
    const bad = set("20260102-000000F", 5, { status: "verified", at: minutesAgo(0), detail: "x" });
    await report([bad]);
    await report([{ ...bad, verification: pending }]);
    const [b] = await backups();
    assert.equal(b!.verification_status, "failed");
  });

  it("asks nodes to verify by default; CELLAR_BACKUP_VERIFY=off turns it off", async () => {
    const db = (await getDatabase(h.deps.db, dbId))!;
    const on = await h.deps.db.tx((q) => nodeBackupSpec(q, h.deps, db));
    assert.equal(on?.verify, undefined, "absent: verified (specs of existing nodes unchanged)");
    const backup = { ...h.deps.config.backup, verify: false };
    const off = await h.deps.db.tx((q) =>
      nodeBackupSpec(q, { ...h.deps, config: { ...h.deps.config, backup } }, db),
    );
    assert.equal(off?.verify, false);
  });

  it("is only for those who may access the database", async () => {
    assert.equal(await tokenOf(bob), undefined);
    const res = await h.call("GET", `/api/databases/${dbId}/pitr/backups`, {});
    assert.equal(res.status, 401);
  });
});
