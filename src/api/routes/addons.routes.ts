// Add-ons (reference §4.2): Shared databases attached to an app. A Dedicated database,
// addressed as an app, shows its single add-on (itself) so that `--database` flows work.
import { Hono, type Context } from "hono";
import type { Catalog } from "../../domain/catalog.ts";
import { findPlan, findProvider } from "../../domain/catalog.ts";
import { addonStatusOf, validateAddonOptions, variableNamesOf } from "../../domain/database-views.ts";
import { NotFoundError, ValidationError } from "../../domain/errors.ts";
import {
  assertCanManageDatabase,
  assertCanProvision,
  decidePlanChange,
  resolvePlan,
  resolveProvider,
} from "../../domain/rules.ts";
import { FOREIGN_KEY_VIOLATION, isPgError } from "../../store/db.ts";
import {
  changeDatabasePlan,
  findLiveDatabase,
  listLiveAddons,
  lockDatabase,
  provisionDatabase,
  requestDatabaseDeletion,
  type Database,
} from "../../store/databases.store.ts";
import type { RateLimiter } from "../auth.ts";
import { requireAuth } from "../auth.ts";
import type { Deps, Env } from "../deps.ts";
import { signJwt } from "../jwt.ts";
import { readForkRequest, withFork } from "../backup-fork.ts";
import { readJson, root, str } from "../request.ts";
import { resolveScope, scopeIdentity, type Scope } from "../scope.ts";
import { planJson } from "./catalog.routes.ts";

export const ADDON_TOKEN_SECONDS = 3600;

export function addonJson(db: Database, catalog: Catalog) {
  const plan = findPlan(catalog, db.planId);
  const provider = findProvider(catalog, db.providerId);
  return {
    id: db.id,
    app_id: db.appId ?? db.id,
    resource_id: db.resourceId,
    status: addonStatusOf(db.phase),
    plan: plan ? planJson(plan, catalog.currency) : { id: db.planId, name: db.planId },
    addon_provider: {
      id: db.providerId,
      name: provider?.name ?? db.providerId,
      logo_url: provider?.logoUrl ?? "",
    },
    provisioned_at: db.createdAt.toISOString(),
    deprovisioned_at: db.deletedAt?.toISOString() ?? null,
    updated_at: db.updatedAt.toISOString(),
    hds_resource: false,
  };
}

/** `<public url>/regions/<region>/v1/apps/<app>/operations/<id>`: valid whatever the mount. */
export function operationUrl(deps: Deps, c: Context<Env>, app: string, operationId: string): string {
  const region = encodeURIComponent(c.get("region"));
  return `${deps.config.publicUrl}/regions/${region}/v1/apps/${encodeURIComponent(app)}/operations/${operationId}`;
}

/** The live add-ons visible in a scope: an app's, or a Dedicated database itself. */
async function addonsOf(deps: Deps, scope: Scope): Promise<Database[]> {
  if (scope.kind === "app") return listLiveAddons(deps.db, scope.app.id);
  const db = await findLiveDatabase(deps.db, scope.database.id);
  return db ? [db] : [];
}

async function addonIn(deps: Deps, scope: Scope, id: string): Promise<Database> {
  const found = (await addonsOf(deps, scope)).find((d) => d.id === id);
  if (!found) throw new NotFoundError("addon");
  return found;
}

function requiredString(o: Record<string, unknown>, field: string): string {
  return str(o, field, { max: 100 });
}

export function addonRoutes(deps: Deps, limiter: RateLimiter): Hono<Env> {
  const app = new Hono<Env>();
  const auth = requireAuth(deps, limiter);
  const { catalog } = deps;

  app.get("/apps/:app/addons", auth, async (c) => {
    const scope = await resolveScope(deps, c, c.req.param("app"));
    const addons = await addonsOf(deps, scope);
    return c.json({ addons: addons.map((d) => addonJson(d, catalog)) });
  });

  app.get("/apps/:app/addons/:id", auth, async (c) => {
    const scope = await resolveScope(deps, c, c.req.param("app"));
    return c.json({ addon: addonJson(await addonIn(deps, scope, c.req.param("id")), catalog) });
  });

  app.post("/apps/:app/addons", auth, async (c) => {
    const scope = await resolveScope(deps, c, c.req.param("app"));
    assertCanProvision("shared", scope.role);
    if (scope.kind === "database") {
      throw ValidationError.field(
        "app",
        `${scope.database.name} is a Dedicated Resources database: its only add-on is itself; create another database with POST /v1/databases`,
      );
    }
    const body = root(await readJson(c), "addon");
    const provider = resolveProvider(catalog, requiredString(body, "addon_provider_id"), "shared");
    const plan = resolvePlan(catalog, provider, requiredString(body, "plan_id"), scope.app.region);
    validateAddonOptions(body.options);
    const fork = readForkRequest(body.restore_from);
    const user = c.get("user");
    const { database, operation } = await deps.db
      .tx((q) =>
        withFork(
          q,
          deps,
          fork,
          user.id,
          provisionDatabase(q, catalog, {
            model: "shared",
            appId: scope.app.id,
            resourceBase: scope.app.name,
            ownerId: scope.app.ownerId,
            region: scope.app.region,
            providerId: provider.id,
            engine: provider.engine,
            planId: plan.id,
            userId: user.id,
          }),
        ),
      )
      .catch((err: unknown) => {
        // The app was deleted between scope resolution and the insert (migration 0003's trigger).
        if (isPgError(err, FOREIGN_KEY_VIOLATION)) throw new NotFoundError("app");
        throw err;
      });
    deps.kickReconciler();
    c.header("Location", operationUrl(deps, c, c.req.param("app"), operation.id));
    return c.json(
      {
        addon: addonJson(database, catalog),
        message: "Database is being provisioned",
        variables: variableNamesOf(provider.engine),
      },
      201,
    );
  });

  app.patch("/apps/:app/addons/:id", auth, async (c) => {
    const scope = await resolveScope(deps, c, c.req.param("app"));
    assertCanManageDatabase(scope.role);
    const current = await addonIn(deps, scope, c.req.param("id"));
    const planRef = requiredString(root(await readJson(c), "addon"), "plan_id");
    const provider = findProvider(catalog, current.providerId);
    if (!provider) throw new NotFoundError("addon_provider");
    const target = resolvePlan(catalog, provider, planRef, current.region);
    const outcome = await deps.db.tx(async (q) => {
      // Locked: two concurrent plan changes are decided one after the other.
      const db = await lockDatabase(q, current.id);
      if (!db || db.deleteRequestedAt) throw new NotFoundError("addon");
      const from = findPlan(catalog, db.planId);
      // A plan the operator removed from the catalog cannot be compared: any move off it is allowed.
      const decision = from ? decidePlanChange(provider.architectureModel, from, target) : null;
      if (decision?.kind === "none") return { database: db, operation: null, downtime: false };
      const changed = await changeDatabasePlan(q, catalog, db, {
        planId: target.id,
        userId: c.get("user").id,
      });
      return { ...changed, downtime: decision?.downtime ?? true };
    });
    const variables = variableNamesOf(outcome.database.engine);
    const addon = addonJson(outcome.database, catalog);
    if (!outcome.operation) {
      return c.json({
        addon,
        message: `The database is already on plan ${target.name}: nothing to change`,
        variables,
      });
    }
    deps.kickReconciler();
    c.header("Location", operationUrl(deps, c, c.req.param("app"), outcome.operation.id));
    const downtime = outcome.downtime
      ? "expect a short downtime while the database restarts"
      : "no downtime expected";
    return c.json({
      addon,
      message: `Database plan change to ${target.name} is pending (${downtime})`,
      variables,
    });
  });

  app.delete("/apps/:app/addons/:id", auth, async (c) => {
    const scope = await resolveScope(deps, c, c.req.param("app"));
    assertCanManageDatabase(scope.role);
    const addon = await addonIn(deps, scope, c.req.param("id"));
    if (scope.kind === "database") {
      throw ValidationError.field(
        "addon",
        `the add-on of a Dedicated Resources database is the database itself: delete it with DELETE /v1/apps/${scopeIdentity(scope).name}?current_name=${scopeIdentity(scope).name} (owner only)`,
      );
    }
    const requested = await deps.db.tx((q) =>
      requestDatabaseDeletion(q, catalog, { databaseId: addon.id, userId: c.get("user").id }),
    );
    if (!requested) throw new NotFoundError("addon");
    deps.kickReconciler();
    return c.body(null, 204);
  });

  app.post("/apps/:app/addons/:id/token", auth, async (c) => {
    const scope = await resolveScope(deps, c, c.req.param("app"));
    assertCanManageDatabase(scope.role);
    const addon = await addonIn(deps, scope, c.req.param("id"));
    const claims = c.get("claims");
    const iat = Math.floor(deps.now().getTime() / 1000);
    const token = signJwt(
      { sub: claims.sub, tok: claims.tok, db: addon.id, iat, exp: iat + ADDON_TOKEN_SECONDS, iss: "cellar" },
      deps.jwtSecret,
    );
    return c.json({ addon: { ...addonJson(addon, catalog), token } });
  });

  return app;
}
