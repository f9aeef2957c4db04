// Resolves the `:app` of /v1/apps/:app/... to what it names, with the caller's role.
// As in the reference, a Dedicated database is also addressable as an app (by its id or
// name): its collaborators, variables, add-on and deletion use the app endpoints.
import type { Context } from "hono";
import { NotFoundError } from "../domain/errors.ts";
import type { Role } from "../domain/rules.ts";
import { findApp, roleOnApp, roleOnDedicatedDatabase, type App } from "../store/apps.store.ts";
import type { Deps, Env } from "./deps.ts";

export interface DedicatedRef {
  id: string;
  name: string;
  ownerId: string;
  region: string;
  createdAt: Date;
  updatedAt: Date;
}

export type Scope =
  { kind: "app"; app: App; role: Role } | { kind: "database"; database: DedicatedRef; role: Role };

/** Id and display name of a scope, as an app object would show them. */
export function scopeIdentity(s: Scope): { id: string; name: string; ownerId: string } {
  return s.kind === "app"
    ? { id: s.app.id, name: s.app.name, ownerId: s.app.ownerId }
    : { id: s.database.id, name: s.database.name, ownerId: s.database.ownerId };
}

async function findDedicated(deps: Deps, region: string, ref: string): Promise<DedicatedRef | null> {
  const { rows } = await deps.db.query<{
    id: string;
    name: string;
    owner_id: string;
    region: string;
    created_at: Date;
    updated_at: Date;
  }>(
    `SELECT id, name, owner_id, region, created_at, updated_at FROM databases
     WHERE model = 'dedicated' AND deleted_at IS NULL AND region = $1 AND (id = $2 OR name = $2)`,
    [region, ref],
  );
  const r = rows[0];
  return r
    ? {
        id: r.id,
        name: r.name,
        ownerId: r.owner_id,
        region: r.region,
        createdAt: r.created_at,
        updatedAt: r.updated_at,
      }
    : null;
}

/**
 * The scope named by `ref` if the caller has any role on it. Someone with no role gets
 * the same 404 as for a name that does not exist: existence is never revealed.
 */
export async function resolveScope(deps: Deps, c: Context<Env>, ref: string): Promise<Scope> {
  const region = c.get("region");
  const userId = c.get("user").id;
  const app = await findApp(deps.db, region, ref);
  if (app) {
    const role = await roleOnApp(deps.db, app, userId);
    if (role !== "none") return { kind: "app", app, role };
    throw new NotFoundError("app");
  }
  const database = await findDedicated(deps, region, ref);
  if (database) {
    const role = await roleOnDedicatedDatabase(deps.db, database, userId);
    if (role !== "none") return { kind: "database", database, role };
  }
  throw new NotFoundError("app");
}
