// Apps (reference §4.2): create, list, show, rename, settings, delete. A Dedicated database
// is also addressable here (as the reference's hidden app): shown, renamed and deleted.
import { Hono } from "hono";
import { assertCanDestroyScope } from "../../domain/collaborator-rules.ts";
import { ConflictError, NotFoundError, ValidationError } from "../../domain/errors.ts";
import { validateResourceName } from "../../domain/rules.ts";
import {
  insertApp,
  listAppsForUser,
  liveAddonsOf,
  lockLiveApp,
  ownersById,
  renameApp,
  softDeleteApp,
  type OwnerSummary,
} from "../../store/apps.store.ts";
import { isPgError, UNIQUE_VIOLATION, type Queryable } from "../../store/db.ts";
import { requestDatabaseDeletion } from "../../store/databases.store.ts";
import { renameDedicatedDatabase } from "../../store/dedicated-scope.store.ts";
import { recordEvent } from "../../store/events.store.ts";
import type { RateLimiter } from "../auth.ts";
import { requireAuth } from "../auth.ts";
import type { Deps, Env } from "../deps.ts";
import { readJson, root, type Json } from "../request.ts";
import { resolveScope, type Scope } from "../scope.ts";

interface AppLike {
  id: string;
  name: string;
  region: string;
  createdAt: Date;
  updatedAt: Date;
}

/** The reference's app object, limited to what is true of a Cellar app (no containers, no deployments). */
export function appJson(a: AppLike, owner: OwnerSummary | undefined, dedicated: boolean) {
  return {
    id: a.id,
    name: a.name,
    region: a.region,
    created_at: a.createdAt.toISOString(),
    updated_at: a.updatedAt.toISOString(),
    owner: owner ? { id: owner.id, username: owner.username, email: owner.email, flags: {} } : null,
    flags: dedicated ? { "dedicated-database": true } : {},
    // "new": the reference's status of an app that runs no code, which a Cellar app never does.
    status: "new",
    limits: {},
    force_https: false,
    sticky_session: false,
    router_logs: false,
    last_deployed_at: null,
    last_deployed_by: null,
  };
}

export async function scopeAppJson(q: Queryable, s: Scope) {
  const a = s.kind === "app" ? s.app : s.database;
  const owners = await ownersById(q, [a.ownerId]);
  return appJson(a, owners.get(a.ownerId), s.kind === "database");
}

/** `/v1/apps/collaboration` is the invitation-acceptance route: no app may take that name. */
const RESERVED_NAMES = new Set(["collaboration"]);

function newResourceName(value: unknown, field: string): string {
  if (value === undefined || value === null || value === "")
    throw ValidationError.field(field, "is required");
  const name = validateResourceName(value, field);
  if (RESERVED_NAMES.has(name)) throw ValidationError.field(field, `${name} is reserved by the API`);
  return name;
}

/**
 * Cellar stores no app settings beyond the name. Rather than silently dropping a setting
 * the client believes it changed, any other non-empty field is refused by name.
 */
function rejectUnsupported(o: Json, allowed: string[]): void {
  const errors: Record<string, string[]> = {};
  for (const [key, value] of Object.entries(o)) {
    if (allowed.includes(key) || value === undefined || value === null || value === "") continue;
    errors[key] = [
      `is not supported by Cellar (apps here hold databases and run no code)` +
        (allowed.length ? `; supported: ${allowed.join(", ")}` : ""),
    ];
  }
  if (Object.keys(errors).length) throw new ValidationError(errors);
}

function confirmName(given: unknown, current: string, field: string): void {
  if (given !== current) {
    throw ValidationError.field(field, `must be the current name (${current}) to confirm`);
  }
}

export function appRoutes(deps: Deps, limiter: RateLimiter): Hono<Env> {
  const app = new Hono<Env>();
  const auth = requireAuth(deps, limiter);

  app.post("/apps", auth, async (c) => {
    const body = root(await readJson(c), "app");
    rejectUnsupported(body, ["name"]);
    const name = newResourceName(body.name, "name");
    const region = c.get("region");
    const user = c.get("user");
    if (c.req.header("x-dry-run") === "true") {
      const { rows } = await deps.db.query("SELECT 1 FROM resource_names WHERE name = $1", [name]);
      if (rows.length) throw ValidationError.field("name", "is already taken");
      return c.json({ app: { name, region } }, 200);
    }
    try {
      const created = await deps.db.tx(async (tx) => {
        const a = await insertApp(tx, { name, region, ownerId: user.id });
        await recordEvent(tx, {
          appId: a.id,
          userId: user.id,
          type: "new_app",
          typeData: { app_name: name },
        });
        return a;
      });
      return c.json({ app: appJson(created, user, false) }, 201);
    } catch (err) {
      if (isPgError(err, UNIQUE_VIOLATION)) throw ValidationError.field("name", "is already taken");
      throw err;
    }
  });

  app.get("/apps", auth, async (c) => {
    const apps = await listAppsForUser(deps.db, c.get("region"), c.get("user").id);
    const owners = await ownersById(
      deps.db,
      apps.map((a) => a.ownerId),
    );
    return c.json({ apps: apps.map((a) => appJson(a, owners.get(a.ownerId), false)) });
  });

  app.get("/apps/:app", auth, async (c) => {
    const scope = await resolveScope(deps, c, c.req.param("app"));
    return c.json({ app: await scopeAppJson(deps.db, scope) });
  });

  app.patch("/apps/:app", auth, async (c) => {
    const scope = await resolveScope(deps, c, c.req.param("app"));
    const body = root(await readJson(c), "app");
    rejectUnsupported(body, []);
    return c.json({ app: await scopeAppJson(deps.db, scope) });
  });

  app.post("/apps/:app/rename", auth, async (c) => {
    const scope = await resolveScope(deps, c, c.req.param("app"));
    const body = await readJson(c);
    assertCanDestroyScope(scope.role, "rename");
    const current = scope.kind === "app" ? scope.app.name : scope.database.name;
    confirmName(body.current_name, current, "current_name");
    const newName = newResourceName(body.new_name, "new_name");
    const userId = c.get("user").id;
    if (newName !== current) {
      try {
        await deps.db.tx(async (tx) => {
          if (scope.kind === "app") await renameApp(tx, scope.app.id, newName);
          else await renameDedicatedDatabase(tx, scope.database.id, current, newName);
          await recordEvent(tx, {
            ...(scope.kind === "app"
              ? { appId: scope.app.id }
              : { appId: scope.database.id, databaseId: scope.database.id }),
            userId,
            type: "rename_app",
            typeData: { old_name: current, new_name: newName },
          });
        });
      } catch (err) {
        if (isPgError(err, UNIQUE_VIOLATION)) throw ValidationError.field("new_name", "is already taken");
        throw err;
      }
    }
    return c.json({ app: await scopeAppJson(deps.db, await resolveScope(deps, c, newName)) });
  });

  app.delete("/apps/:app", auth, async (c) => {
    const scope = await resolveScope(deps, c, c.req.param("app"));
    assertCanDestroyScope(scope.role, "delete");
    const userId = c.get("user").id;
    if (scope.kind === "database") {
      confirmName(c.req.query("current_name"), scope.database.name, "current_name");
      // Only the intent is recorded here; the database reconciler removes it and writes status.
      await deps.db.tx((tx) =>
        requestDatabaseDeletion(tx, deps.catalog, { databaseId: scope.database.id, userId }),
      );
      deps.kickReconciler();
      return c.body(null, 204);
    }
    confirmName(c.req.query("current_name"), scope.app.name, "current_name");
    await deps.db.tx(async (tx) => {
      const locked = await lockLiveApp(tx, scope.app.id);
      if (!locked) throw new NotFoundError("app");
      const addons = await liveAddonsOf(tx, locked.id);
      if (addons.length) {
        const list = addons.map((a) => (a.deleteRequested ? `${a.id} (being deleted)` : a.id)).join(", ");
        throw new ConflictError(
          `app ${locked.name} still has add-ons: ${list}. Remove them first ` +
            `(DELETE /v1/apps/${locked.name}/addons/:id) and wait until they are deleted`,
        );
      }
      await softDeleteApp(tx, locked);
      await recordEvent(tx, {
        appId: locked.id,
        userId,
        type: "delete_app",
        typeData: { app_name: locked.name },
      });
    });
    return c.body(null, 204);
  });

  return app;
}
