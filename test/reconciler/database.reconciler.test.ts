import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { reconcileDatabase } from "../../src/reconciler/database.reconciler.ts";
import { finalizeDeletion } from "../../src/store/database-status.store.ts";
import { requestDatabaseDeletion } from "../../src/store/databases.store.ts";
import { enqueueReconcile } from "../../src/store/reconcile-queue.store.ts";
import { startHarness, type Harness, type Session } from "../support/api.ts";
import { makeAddon, makeApp, makeDedicated } from "../support/scopes.ts";

describe("database reconciler", () => {
  let h: Harness;
  let alice: Session;
  let app: { id: string; name: string };

  const row = async (id: string) =>
    (
      await h.deps.db.query(
        `SELECT phase, phase_reason, observed_generation, generation, current_plan_id,
                deleted_at IS NOT NULL AS deleted, updated_at FROM databases WHERE id = $1`,
        [id],
      )
    ).rows[0];
  const opStatuses = async (id: string) =>
    (
      await h.deps.db.query(
        "SELECT type, status FROM operations WHERE database_id = $1 ORDER BY created_at, id",
        [id],
      )
    ).rows.map((r) => `${r.type}:${r.status}`);
  const eventCount = async (id: string) =>
    (await h.deps.db.query("SELECT count(*)::int AS n FROM events WHERE database_id = $1", [id])).rows[0].n;
  const requestDeletion = (id: string) =>
    h.deps.db.tx((q) =>
      requestDatabaseDeletion(q, h.deps.catalog, { databaseId: id, userId: alice.user.id }),
    );

  before(async () => {
    h = await startHarness();
    alice = await h.user("alice");
    app = await makeApp(h, alice, "recon-app");
  });
  after(async () => h.close());

  it("keeps a new database provisioning with a truthful reason, starts its operation, and rechecks later", async () => {
    const id = await makeAddon(h, alice, app);
    assert.ok((await h.loop.drain()) >= 2, "one pass starts the operation, the next writes the reason");
    const r = await row(id);
    assert.equal(r.phase, "provisioning");
    assert.equal(r.phase_reason, "waiting for a host: no shared host is registered in region osc-fr1");
    assert.equal(r.observed_generation, 0, "nothing observed the spec converge");
    assert.equal(r.current_plan_id, null);
    assert.deepEqual(await opStatuses(id), ["provision:running"]);
    const q = await h.deps.db.query(
      "SELECT run_after > now() + interval '30 seconds' AS later, last_message FROM reconcile_queue WHERE database_id = $1",
      [id],
    );
    assert.equal(q.rows[0].later, true);
    assert.match(q.rows[0].last_message, /no shared host is registered/);
  });

  it("is idempotent: a replayed pass writes nothing new", async () => {
    const id = await makeAddon(h, alice, app);
    await h.loop.drain();
    const before = await row(id);
    const events = await eventCount(id);
    const result = await reconcileDatabase(h.deps, id);
    assert.match(result.message, /checking again in 60 s/);
    assert.deepEqual(await row(id), before);
    assert.equal(await eventCount(id), events);
  });

  it("says so when the region's hosts are registered but none is ready", async () => {
    const id = await makeDedicated(h, alice, "hosted-db-1");
    await h.deps.db.query(
      `INSERT INTO hosts (id, name, region, az, pool, address, capacity_vcpu, capacity_ram_mb, capacity_disk_gb, token_hash)
       VALUES ('host-t1', 'host-t1', 'osc-fr1', 'osc-fr1-a', 'dedicated', '127.10.0.1', 4, 8192, 100, '\\x01')`,
    );
    try {
      await h.loop.drain();
      const r = await row(id.id);
      assert.equal(r.phase, "provisioning");
      assert.equal(
        r.phase_reason,
        "waiting for a host: no dedicated host of region osc-fr1 is ready (all unreachable)",
      );
    } finally {
      await h.deps.db.query("DELETE FROM hosts WHERE id = 'host-t1'");
    }
  });

  it("waits for instances to be removed before finalizing a deletion", async () => {
    const id = await makeAddon(h, alice, app);
    await h.deps.db.query(
      `INSERT INTO hosts (id, name, region, az, pool, address, capacity_vcpu, capacity_ram_mb, capacity_disk_gb, token_hash)
       VALUES ('host-t2', 'host-t2', 'osc-fr1', 'osc-fr1-a', 'shared', '127.10.0.2', 4, 8192, 100, '\\x02')`,
    );
    await h.deps.db.query(
      "INSERT INTO instances (id, database_id, host_id, kind, port, spec) VALUES ('inst-t2', $1, 'host-t2', 'node', 20002, '{}')",
      [id],
    );
    assert.ok(await requestDeletion(id));
    await h.loop.drain();
    let r = await row(id);
    assert.equal(r.deleted, false);
    assert.equal(r.phase, "deleting");
    assert.equal(r.phase_reason, "waiting for instances to be removed: inst-t2 on host-t2 (booting)");
    const desired = await h.deps.db.query("SELECT desired_state FROM instances WHERE id = 'inst-t2'");
    assert.equal(desired.rows[0].desired_state, "deleted", "the host was asked to remove it");
    assert.deepEqual(await opStatuses(id), ["provision:running", "delete:running"]);

    await h.deps.db.query("UPDATE instances SET status = 'removed' WHERE id = 'inst-t2'");
    await h.deps.db.tx((q) => enqueueReconcile(q, id));
    await h.loop.drain();
    r = await row(id);
    assert.equal(r.deleted, true);
    assert.equal(r.phase, "deleted");
    assert.deepEqual(await opStatuses(id), ["provision:error", "delete:done"]);
  });

  it("finalizes a deletion once: replays and repeated requests change nothing", async () => {
    const db = await makeDedicated(h, alice, "doomed-db-1");
    assert.ok(await requestDeletion(db.id));
    assert.equal(await requestDeletion(db.id), null, "a second request is a no-op");
    await h.loop.drain();
    const events = await eventCount(db.id);
    const finalized = await row(db.id);
    assert.equal(finalized.phase, "deleted");
    assert.match((await reconcileDatabase(h.deps, db.id)).message, /is deleted: nothing to do/);
    assert.equal(await h.deps.db.tx((q) => finalizeDeletion(q, h.deps.catalog, db.id)), false);
    assert.deepEqual(await row(db.id), finalized);
    assert.equal(await eventCount(db.id), events);
    assert.equal(await requestDeletion(db.id), null, "a deleted database cannot be deleted again");
  });

  it("never reports running for anything", async () => {
    await h.loop.drain();
    const { rows } = await h.deps.db.query(
      "SELECT count(*)::int AS n FROM databases WHERE phase = 'running'",
    );
    assert.equal(rows[0].n, 0);
  });
});
