// Database API (reference §4.3), served under /api: the database object of an add-on.
// Callers present either the add-on token of that database (POST .../addons/:id/token) or a
// user session whose role on the database allows managing it.
import { Hono, type Context, type MiddlewareHandler } from "hono";
import type { Catalog } from "../../domain/catalog.ts";
import { findPlan } from "../../domain/catalog.ts";
import { DEFAULT_MAINTENANCE_WINDOW, databaseApiStatusOf } from "../../domain/database-views.ts";
import {
  databaseEncryptedAtRest,
  databaseInstanceJson,
  databaseMetricsJson,
  instanceStatusJson,
  type InstanceFacts,
} from "../../domain/instance-views.ts";
import { NotFoundError } from "../../domain/errors.ts";
import { assertCanManageDatabase, type Role } from "../../domain/rules.ts";
import { roleOnApp, roleOnDedicatedDatabase, type App } from "../../store/apps.store.ts";
import { instanceFactsOfDatabase } from "../../store/database-instances.store.ts";
import { findLiveDatabase, type Database } from "../../store/databases.store.ts";
import { currentOperation } from "../../store/operations.store.ts";
import { featureViews, type FeatureView } from "../../store/network.store.ts";
import { publicEndpointOf } from "../../reconciler/network-spec.ts";
import { periodicBackupFields } from "../logical-backup-views.ts";
import type { RateLimiter } from "../auth.ts";
import { requireAuth } from "../auth.ts";
import type { Deps, Env } from "../deps.ts";

export type DbEnv = { Variables: Env["Variables"] & { database: Database; appName: string } };

/** The app a Shared database is attached to, if it is still live. */
async function liveApp(deps: Deps, id: string): Promise<App | null> {
  const { rows } = await deps.db.query<{
    id: string;
    name: string;
    region: string;
    owner_id: string;
    created_at: Date;
    updated_at: Date;
  }>(
    "SELECT id, name, region, owner_id, created_at, updated_at FROM apps WHERE id = $1 AND deleted_at IS NULL",
    [id],
  );
  const r = rows[0];
  return r
    ? {
        id: r.id,
        name: r.name,
        region: r.region,
        ownerId: r.owner_id,
        createdAt: r.created_at,
        updatedAt: r.updated_at,
      }
    : null;
}

/**
 * After bearer authentication: the database named by `:id` must be visible to the caller.
 * An add-on token names one database (its `db` claim); for anything else the answer is the
 * same 404 as for a database that does not exist. The token's user must still hold a role
 * that may manage the database: removing a collaborator ends their add-on tokens too.
 */
export function requireDatabaseAccess(
  deps: Deps,
  /** Where the database id comes from when the path names something of it (a backup). */
  idOf?: (c: Context<DbEnv>) => Promise<string>,
): MiddlewareHandler<DbEnv> {
  return async (c, next) => {
    const id = idOf ? await idOf(c) : (c.req.param("id") ?? "");
    const claims = c.get("claims");
    const db = await findLiveDatabase(deps.db, id);
    if (!db || db.region !== c.get("region") || (claims.db !== undefined && claims.db !== id)) {
      throw new NotFoundError("database");
    }
    let role: Role = "none";
    let appName = db.name ?? "";
    if (db.appId) {
      const app = await liveApp(deps, db.appId);
      if (app) {
        role = await roleOnApp(deps.db, app, claims.sub);
        appName = app.name;
      }
    } else {
      role = await roleOnDedicatedDatabase(deps.db, db, claims.sub);
    }
    if (role === "none") throw new NotFoundError("database");
    assertCanManageDatabase(role);
    c.set("database", db);
    c.set("appName", appName);
    await next();
  };
}

export function databaseApiJson(
  db: Database,
  appName: string,
  currentOperationId: string | null,
  catalog: Catalog,
  instances: InstanceFacts[] = [],
) {
  const plan = findPlan(catalog, db.planId);
  return {
    id: db.id,
    resource_id: db.resourceId,
    app_name: appName,
    created_at: db.createdAt.toISOString(),
    encryption_at_rest: databaseEncryptedAtRest(instances),
    features: [] as FeatureView[],
    plan: plan?.name ?? db.planId,
    status: databaseApiStatusOf(db.phase, db.generation, db.observedGeneration),
    // Cellar's own status words (the CLI's --wait shows them): what the platform is doing and why.
    phase: db.phase,
    phase_reason: db.phaseReason,
    type_id: db.engine,
    type_name: db.engine,
    // Unknown until an instance runs and reports them.
    version_id: null,
    readable_version: null,
    next_version_id: null,
    instances: instances.map(databaseInstanceJson),
    hostname: gatewayAddress(instances),
    current_operation_id: currentOperationId,
    cluster: (plan?.nodes ?? 1) > 1,
    periodic_backups_enabled: false,
    periodic_backups_scheduled_at: [],
    maintenance_window: { ...DEFAULT_MAINTENANCE_WINDOW },
  };
}

/** `host:port` of the gateway clients connect to (the reference's `hostname`), once placed. */
function gatewayAddress(instances: InstanceFacts[]): string | null {
  const gateway = instances.find((i) => i.kind === "gateway" && i.desiredState !== "deleted");
  return gateway ? `${gateway.address}:${gateway.port}` : null;
}

export function databaseApiRoutes(deps: Deps, limiter: RateLimiter): Hono<DbEnv> {
  const app = new Hono<DbEnv>();
  const auth = requireAuth(deps, limiter, { addonTokens: true });
  const access = requireDatabaseAccess(deps);

  // The region CA that signs database server certificates: public, so no auth.
  app.get("/ca.pem", (c) => {
    c.header("Content-Type", "text/plain; charset=utf-8");
    return c.body(deps.pki.ca(c.get("region")).certPem);
  });

  app.get("/databases/:id", auth, access, async (c) => {
    const db = c.get("database");
    const op = await currentOperation(deps.db, db.id);
    const instances = await instanceFactsOfDatabase(deps.db, db.id);
    const json = databaseApiJson(db, c.get("appName"), op?.id ?? null, deps.catalog, instances);
    json.features = await featureViews(deps.db, db);
    Object.assign(json, await periodicBackupFields(deps.db, db));
    // A Dedicated database is reached at its own public endpoint, not at a host's address.
    const endpoint = db.model === "dedicated" ? await publicEndpointOf(deps.db, deps.config, db) : null;
    if (endpoint) json.hostname = `${endpoint.address}:${endpoint.port}`;
    return c.json({ database: json });
  });

  // Reference: an unwrapped array.
  app.get("/databases/:id/instances_status", auth, access, async (c) => {
    const instances = await instanceFactsOfDatabase(deps.db, c.get("database").id);
    return c.json(instances.filter((i) => i.status !== "removed").map(instanceStatusJson));
  });

  app.get("/databases/:id/metrics", auth, access, async (c) => {
    return c.json(databaseMetricsJson(await instanceFactsOfDatabase(deps.db, c.get("database").id)));
  });

  return app;
}
