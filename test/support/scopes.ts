// Fixtures for API tests of apps and Dedicated databases: apps through the API, databases
// through the store (as the databases API would record them), and row counts.
import assert from "node:assert/strict";
import { provisionDatabase } from "../../src/store/databases.store.ts";
import type { Harness, Session } from "./api.ts";

export async function makeApp(
  h: Harness,
  owner: Session,
  name: string,
): Promise<{ id: string; name: string }> {
  const res = await h.call("POST", "/v1/apps", { bearer: owner.bearer, body: { app: { name } } });
  assert.equal(res.status, 201, JSON.stringify(res.json));
  return { id: res.json.app.id as string, name };
}

function firstPlan(h: Harness, providerId: string): string {
  const plan = h.deps.catalog.plans.find((p) => p.providerId === providerId && !p.disabled);
  assert.ok(plan, `catalog has a ${providerId} plan`);
  return plan.id;
}

/** A Dedicated database in the default region, recorded as POST /v1/databases would. */
export async function makeDedicated(
  h: Harness,
  owner: Session,
  name: string,
): Promise<{ id: string; name: string }> {
  const { database } = await h.deps.db.tx((tx) =>
    provisionDatabase(tx, h.deps.catalog, {
      model: "dedicated",
      name,
      resourceBase: name,
      ownerId: owner.user.id,
      region: h.deps.config.defaultRegion,
      providerId: "postgresql-ng",
      engine: "postgresql",
      planId: firstPlan(h, "postgresql-ng"),
      userId: owner.user.id,
    }),
  );
  return { id: database.id, name };
}

/** A Shared add-on of an app, recorded as POST /v1/apps/:app/addons would. */
export async function makeAddon(
  h: Harness,
  owner: Session,
  app: { id: string; name: string },
): Promise<string> {
  const { database } = await h.deps.db.tx((tx) =>
    provisionDatabase(tx, h.deps.catalog, {
      model: "shared",
      appId: app.id,
      resourceBase: app.name,
      ownerId: owner.user.id,
      region: h.deps.config.defaultRegion,
      providerId: "postgresql",
      engine: "postgresql",
      planId: firstPlan(h, "postgresql"),
      userId: owner.user.id,
    }),
  );
  return database.id;
}

/** Invites `member` to a scope and accepts with their session; returns the collaborator id. */
export async function addCollaborator(
  h: Harness,
  owner: Session,
  scopeRef: string,
  member: Session,
  isLimited = false,
): Promise<string> {
  const inv = await h.call("POST", `/v1/apps/${scopeRef}/collaborators`, {
    bearer: owner.bearer,
    body: { collaborator: { email: member.user.email, is_limited: isLimited } },
  });
  assert.equal(inv.status, 201, JSON.stringify(inv.json));
  const token = new URL(inv.json.collaborator.invitation_link as string).searchParams.get("token");
  const ok = await h.call("GET", `/v1/apps/collaboration?token=${token}`, { bearer: member.bearer });
  assert.equal(ok.status, 200, JSON.stringify(ok.json));
  return inv.json.collaborator.id as string;
}

const TABLES = [
  "apps",
  "resource_names",
  "collaborators",
  "variables",
  "events",
  "databases",
  "operations",
] as const;

/** Row counts of the tables these APIs write, to assert that a refused request wrote nothing. */
export async function rowCounts(h: Harness): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of TABLES) {
    const { rows } = await h.deps.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${t}`);
    out[t] = rows[0]!.n;
  }
  return out;
}

export async function eventsOfType(h: Harness, type: string): Promise<Array<Record<string, any>>> {
  const { rows } = await h.deps.db.query("SELECT * FROM events WHERE type = $1 ORDER BY created_at, id", [
    type,
  ]);
  return rows;
}
