// Crash-test helpers on the store side: what "converged exactly once" means for a
// database's rows, and the few API steps the crash tests share.
import assert from "node:assert/strict";
import type { Queryable } from "../../src/store/db.ts";
import { connectVerified } from "./cluster.ts";

/**
 * The database converged once: one node and one gateway, running, its work done once, and
 * (unless `transitions` is false: a database may rightly leave running and come back when
 * its host was lost) it became running once.
 */
export async function assertRunningOnce(
  db: Queryable,
  databaseId: string,
  opts: { transitions?: boolean } = {},
): Promise<void> {
  const { rows: dbs } = await db.query(
    "SELECT phase, phase_reason, generation, observed_generation FROM databases WHERE id = $1",
    [databaseId],
  );
  assert.deepEqual(
    {
      phase: dbs[0].phase,
      reason: dbs[0].phase_reason,
      done: dbs[0].generation === dbs[0].observed_generation,
    },
    { phase: "running", reason: "", done: true },
  );
  const { rows: inst } = await db.query("SELECT kind FROM instances WHERE database_id = $1 ORDER BY kind", [
    databaseId,
  ]);
  assert.deepEqual(
    inst.map((r) => r.kind),
    ["gateway", "node"],
    "instance rows of the database",
  );
  const { rows: ops } = await db.query("SELECT type, status FROM operations WHERE database_id = $1", [
    databaseId,
  ]);
  assert.deepEqual(ops, [{ type: "provision", status: "done" }], "operations of the database");
  const { rows: vars } = await db.query(
    "SELECT name, count(*)::int AS n FROM variables WHERE database_id = $1 GROUP BY name ORDER BY name",
    [databaseId],
  );
  assert.deepEqual(
    vars.map((v) => `${v.name}x${v.n}`),
    ["DATABASE_URLx1", "SCALINGO_POSTGRESQL_URLx1"],
  );
  if (opts.transitions === false) return;
  const { rows: events } = await db.query(
    `SELECT count(*)::int AS n FROM events WHERE database_id = $1 AND type = 'addon_updated'
       AND type_data->'status'->>1 = 'running'`,
    [databaseId],
  );
  assert.equal(events[0].n, 1, "addon_updated events to running");
}

/** The database is deleted once: no instance row left, its operations done, its variables gone. */
export async function assertDeletedOnce(db: Queryable, databaseId: string): Promise<void> {
  const { rows: dbs } = await db.query("SELECT phase, deleted_at FROM databases WHERE id = $1", [databaseId]);
  assert.equal(dbs[0].phase, "deleted");
  const { rows: inst } = await db.query("SELECT id FROM instances WHERE database_id = $1", [databaseId]);
  assert.deepEqual(inst, [], "instance rows of the deleted database");
  const { rows: ops } = await db.query(
    "SELECT type, status FROM operations WHERE database_id = $1 ORDER BY created_at",
    [databaseId],
  );
  assert.deepEqual(ops, [
    { type: "provision", status: "done" },
    { type: "delete", status: "done" },
  ]);
  const { rows: vars } = await db.query("SELECT name FROM variables WHERE database_id = $1", [databaseId]);
  assert.deepEqual(vars, [], "variables of the deleted database");
}

/** The node and gateway instances of a database, once placed. */
export async function instancesOf(
  db: Queryable,
  databaseId: string,
): Promise<{ node: { id: string; port: number }; gateway: { id: string; port: number } } | undefined> {
  const { rows } = await db.query<{ id: string; kind: string; port: number }>(
    "SELECT id, kind, port FROM instances WHERE database_id = $1",
    [databaseId],
  );
  const node = rows.find((r) => r.kind === "node");
  const gateway = rows.find((r) => r.kind === "gateway");
  return node && gateway ? { node, gateway } : undefined;
}

/** A condition for waitUntil: the database is in `phase`, and a running one has nothing to report. */
export const settledIn = (db: Queryable, databaseId: string, phase: "running" | "deleted") => async () => {
  const now = await phaseOf(db, databaseId);
  return now.phase === phase && (phase !== "running" || now.reason === "");
};

export async function phaseOf(db: Queryable, databaseId: string): Promise<{ phase: string; reason: string }> {
  const { rows } = await db.query("SELECT phase, phase_reason FROM databases WHERE id = $1", [databaseId]);
  return { phase: rows[0].phase, reason: rows[0].phase_reason };
}

type Api = (method: string, path: string, body?: unknown) => Promise<{ status: number; json: any }>;

/** A new app with a Starter PostgreSQL add-on (one app per database: an app keeps its first DATABASE_URL). */
export async function addStarter(api: Api, app: string): Promise<string> {
  assert.equal((await api("POST", "/v1/apps", { app: { name: app } })).status, 201);
  const res = await api("POST", `/v1/apps/${app}/addons`, {
    addon: { addon_provider_id: "postgresql", plan_id: "postgresql-starter-512" },
  });
  assert.equal(res.status, 201);
  return res.json.addon.id as string;
}

/** The database answers a query through its URL, over TLS verified with the region CA. */
export async function assertAnswers(db: Queryable, databaseId: string, ca: string): Promise<void> {
  const { rows } = await db.query(
    "SELECT value FROM variables WHERE database_id = $1 AND name = 'DATABASE_URL'",
    [databaseId],
  );
  const client = await connectVerified(rows[0].value, ca);
  try {
    assert.equal((await client.query("SELECT 1 AS one")).rows[0].one, 1);
  } finally {
    await client.end();
  }
}
