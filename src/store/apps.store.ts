// Apps, and the role a user holds on an app or on a Dedicated database.
import { newId } from "../domain/ids.ts";
import type { Role } from "../domain/rules.ts";
import type { Queryable } from "./db.ts";

export interface App {
  id: string;
  name: string;
  region: string;
  ownerId: string;
  createdAt: Date;
  updatedAt: Date;
}

interface AppRow {
  id: string;
  name: string;
  region: string;
  owner_id: string;
  created_at: Date;
  updated_at: Date;
}

const toApp = (r: AppRow): App => ({
  id: r.id,
  name: r.name,
  region: r.region,
  ownerId: r.owner_id,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

/** Reserves a name in the namespace shared by apps and Dedicated databases. Throws 23505 if taken. */
export async function reserveName(q: Queryable, name: string, kind: "app" | "database"): Promise<void> {
  await q.query("INSERT INTO resource_names (name, kind) VALUES ($1, $2)", [name, kind]);
}

export async function releaseName(q: Queryable, name: string): Promise<void> {
  await q.query("DELETE FROM resource_names WHERE name = $1", [name]);
}

/** Call inside a transaction: reserves the name, then inserts the app. */
export async function insertApp(
  q: Queryable,
  a: { name: string; region: string; ownerId: string },
): Promise<App> {
  await reserveName(q, a.name, "app");
  const { rows } = await q.query<AppRow>(
    "INSERT INTO apps (id, name, region, owner_id) VALUES ($1, $2, $3, $4) RETURNING *",
    [newId("app"), a.name, a.region, a.ownerId],
  );
  return toApp(rows[0]!);
}

/** By id or name, within a region. */
export async function findApp(q: Queryable, region: string, idOrName: string): Promise<App | null> {
  const { rows } = await q.query<AppRow>(
    "SELECT * FROM apps WHERE region = $1 AND (id = $2 OR name = $2) AND deleted_at IS NULL",
    [region, idOrName],
  );
  return rows[0] ? toApp(rows[0]) : null;
}

/** Apps the user owns or collaborates on (accepted invitations only). */
export async function listAppsForUser(q: Queryable, region: string, userId: string): Promise<App[]> {
  const { rows } = await q.query<AppRow>(
    `SELECT a.* FROM apps a
     WHERE a.region = $1 AND a.deleted_at IS NULL AND (a.owner_id = $2 OR EXISTS (
       SELECT 1 FROM collaborators c WHERE c.app_id = a.id AND c.user_id = $2 AND c.status = 'accepted'))
     ORDER BY a.created_at, a.id`,
    [region, userId],
  );
  return rows.map(toApp);
}

/** The user's role on an app: owner, collaborator, limited or none. */
export async function roleOnApp(q: Queryable, app: App, userId: string): Promise<Role> {
  if (app.ownerId === userId) return "owner";
  const { rows } = await q.query<{ is_limited: boolean }>(
    "SELECT is_limited FROM collaborators WHERE app_id = $1 AND user_id = $2 AND status = 'accepted'",
    [app.id, userId],
  );
  if (!rows[0]) return "none";
  return rows[0].is_limited ? "limited" : "collaborator";
}

/** The user's role on a Dedicated database (own collaborators, no Limited role). */
export async function roleOnDedicatedDatabase(
  q: Queryable,
  db: { id: string; ownerId: string },
  userId: string,
): Promise<Role> {
  if (db.ownerId === userId) return "owner";
  const { rows } = await q.query(
    "SELECT 1 FROM collaborators WHERE database_id = $1 AND user_id = $2 AND status = 'accepted'",
    [db.id, userId],
  );
  return rows[0] ? "collaborator" : "none";
}

export async function renameApp(q: Queryable, appId: string, newName: string): Promise<App> {
  // resource_names is the referenced side: its ON UPDATE CASCADE renames the app row too.
  const { rows: cur } = await q.query<{ name: string }>("SELECT name FROM apps WHERE id = $1", [appId]);
  await q.query("UPDATE resource_names SET name = $2 WHERE name = $1", [cur[0]!.name, newName]);
  const { rows } = await q.query<AppRow>("UPDATE apps SET updated_at = now() WHERE id = $1 RETURNING *", [
    appId,
  ]);
  return toApp(rows[0]!);
}

export interface OwnerSummary {
  id: string;
  username: string;
  email: string;
}

export async function ownersById(q: Queryable, ids: string[]): Promise<Map<string, OwnerSummary>> {
  const { rows } = await q.query<OwnerSummary>("SELECT id, username, email FROM users WHERE id = ANY($1)", [
    [...new Set(ids)],
  ]);
  return new Map(rows.map((r) => [r.id, r]));
}

/** Locks a live app for a change that must not race with add-on creation (see migration 0003). */
export async function lockLiveApp(q: Queryable, appId: string): Promise<App | null> {
  const { rows } = await q.query<AppRow>(
    "SELECT * FROM apps WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
    [appId],
  );
  return rows[0] ? toApp(rows[0]) : null;
}

/** Add-ons of an app not yet deleted by their reconciler (including those being deleted). */
export async function liveAddonsOf(
  q: Queryable,
  appId: string,
): Promise<Array<{ id: string; deleteRequested: boolean }>> {
  const { rows } = await q.query<{ id: string; delete_requested: boolean }>(
    `SELECT id, delete_requested_at IS NOT NULL AS delete_requested FROM databases
     WHERE app_id = $1 AND deleted_at IS NULL ORDER BY created_at, id`,
    [appId],
  );
  return rows.map((r) => ({ id: r.id, deleteRequested: r.delete_requested }));
}

/**
 * Deletes an app: the row stays for the history that points to it, its name is freed,
 * its collaborators and variables go. Call inside a transaction, after lockLiveApp.
 */
export async function softDeleteApp(q: Queryable, app: App): Promise<void> {
  await q.query(
    `UPDATE apps SET deleted_at = now(), deleted_name = name, name = NULL, updated_at = now()
     WHERE id = $1`,
    [app.id],
  );
  await q.query("DELETE FROM collaborators WHERE app_id = $1", [app.id]);
  await q.query("DELETE FROM variables WHERE app_id = $1", [app.id]);
  await releaseName(q, app.name);
}
