// Dedicated Resources databases (reference §3.3, §4.2 "DR"): create, list, show.
// Deletion is the app deletion of the reference (DELETE /v1/apps/:id?current_name=), plan
// change is PATCH /v1/apps/:db/addons/:db (addons.routes.ts).
import { Hono } from "hono";
import type { Catalog } from "../../domain/catalog.ts";
import { findPlan, findProvider } from "../../domain/catalog.ts";
import { databaseApiStatusOf, validateProjectId } from "../../domain/database-views.ts";
import { NotFoundError, ValidationError } from "../../domain/errors.ts";
import { checkIpRangeFree } from "../../domain/network-rules.ts";
import {
  assertCanProvision,
  resolvePlan,
  resolveProvider,
  validateIpRange,
  validateResourceName,
  type Role,
} from "../../domain/rules.ts";
import { roleOnDedicatedDatabase } from "../../store/apps.store.ts";
import { isPgError, UNIQUE_VIOLATION } from "../../store/db.ts";
import {
  findLiveDedicated,
  listDedicatedForUser,
  provisionDatabase,
  type Database,
} from "../../store/databases.store.ts";
import type { RateLimiter } from "../auth.ts";
import { requireAuth } from "../auth.ts";
import type { Deps, Env } from "../deps.ts";
import { readForkRequest, withFork } from "../backup-fork.ts";
import { readJson, str, typeName, type Json } from "../request.ts";
import { addonJson } from "./addons.routes.ts";
import { appJson } from "./apps.routes.ts";

/** `/v1/apps/collaboration` is a route of its own: no app or database may take that name. */
const RESERVED_NAMES = new Set(["collaboration"]);

export function dedicatedJson(db: Database, role: Role, catalog: Catalog) {
  return {
    id: db.id,
    name: db.name,
    project_id: db.projectId,
    technology: db.providerId,
    plan: findPlan(catalog, db.planId)?.name ?? db.planId,
    plan_id: db.planId,
    role,
    status: databaseApiStatusOf(db.phase, db.generation, db.observedGeneration),
    region: db.region,
    ip_range: db.ipRange,
    resource_id: db.resourceId,
    created_at: db.createdAt.toISOString(),
    updated_at: db.updatedAt.toISOString(),
  };
}

/** The first of `keys` present in `o`, with the key it came from (two body shapes exist). */
function firstOf(o: Json, keys: string[]): { key: string; value: unknown } {
  for (const key of keys) {
    if (o[key] !== undefined && o[key] !== null) return { key, value: o[key] };
  }
  return { key: keys[0]!, value: undefined };
}

function stringField(o: Json, keys: string[]): { key: string; value: string } {
  const { key, value } = firstOf(o, keys);
  return { key, value: str({ [key]: value }, key, { max: 100 }) };
}

interface CreateRequest {
  name: string;
  technology: { key: string; value: string };
  plan: { key: string; value: string };
  projectId?: string;
  ipRange?: string;
}

/**
 * Reads both create shapes: the documented `{database:{name, technology, plan, project_id}}`
 * and go-scalingo's unwrapped `{addon_provider_id, plan_id, name, project_id, ip_range}`
 * (the JS client wraps that one and says `database_name`).
 */
function parseCreate(body: Json): CreateRequest {
  const inner = body.database;
  if (inner !== undefined && (typeof inner !== "object" || inner === null || Array.isArray(inner))) {
    throw ValidationError.field("database", `must be a JSON object, not ${typeName(inner)}`);
  }
  const o = (inner as Json | undefined) ?? body;
  const nameField = firstOf(o, ["name", "database_name"]);
  if (nameField.value === undefined || nameField.value === "") {
    throw ValidationError.field("name", "is required");
  }
  const name = validateResourceName(nameField.value, nameField.key);
  if (RESERVED_NAMES.has(name)) throw ValidationError.field(nameField.key, `${name} is reserved by the API`);
  const req: CreateRequest = {
    name,
    technology: stringField(o, ["technology", "addon_provider_id"]),
    plan: stringField(o, ["plan", "plan_id"]),
  };
  if (o.project_id !== undefined && o.project_id !== null && o.project_id !== "") {
    req.projectId = validateProjectId(o.project_id);
  }
  if (o.ip_range !== undefined && o.ip_range !== null && o.ip_range !== "") {
    req.ipRange = validateIpRange(o.ip_range);
  }
  return req;
}

export function databaseRoutes(deps: Deps, limiter: RateLimiter): Hono<Env> {
  const app = new Hono<Env>();
  const auth = requireAuth(deps, limiter);
  const { catalog } = deps;

  app.post("/databases", auth, async (c) => {
    const body = await readJson(c);
    const req = parseCreate(body);
    if (req.ipRange) checkIpRangeFree(req.ipRange, deps.config.publicNetwork);
    const fork = readForkRequest(((body.database ?? body) as Json).restore_from);
    // The creator becomes the owner, the only role that may provision Dedicated Resources.
    assertCanProvision("dedicated", "owner");
    if (!findProvider(catalog, req.technology.value)) {
      throw ValidationError.field(
        req.technology.key,
        `unknown technology ${req.technology.value}: Dedicated Resources databases are PostgreSQL only (use postgresql-ng)`,
      );
    }
    const provider = resolveProvider(catalog, req.technology.value, "dedicated", req.technology.key);
    const region = c.get("region");
    const plan = resolvePlan(catalog, provider, req.plan.value, region, req.plan.key);
    const user = c.get("user");
    const { database } = await deps.db
      .tx((q) =>
        withFork(
          q,
          deps,
          fork,
          user.id,
          provisionDatabase(q, catalog, {
            model: "dedicated",
            name: req.name,
            resourceBase: req.name,
            ownerId: user.id,
            ...(req.projectId ? { projectId: req.projectId } : {}),
            region,
            providerId: provider.id,
            engine: provider.engine,
            planId: plan.id,
            ...(req.ipRange ? { ipRange: req.ipRange } : {}),
            userId: user.id,
          }),
        ),
      )
      .catch((err: unknown) => {
        // Apps and Dedicated databases share one namespace (resource_names).
        if (isPgError(err, UNIQUE_VIOLATION)) {
          throw ValidationError.field("name", `${req.name} is already taken by an app or a database`);
        }
        throw err;
      });
    deps.kickReconciler();
    // The official JS client (npm scalingo) reads this answer under "apps", as a list of
    // {app, addon}; the reference documents {database}. Both are given.
    const asApp = appJson({ ...database, name: req.name }, user, true);
    return c.json(
      {
        database: dedicatedJson(database, "owner", catalog),
        apps: [{ app: asApp, addon: addonJson(database, catalog) }],
      },
      201,
    );
  });

  app.get("/databases", auth, async (c) => {
    const rows = await listDedicatedForUser(deps.db, c.get("region"), c.get("user").id);
    return c.json({ databases: rows.map((r) => dedicatedJson(r.database, r.role, catalog)) });
  });

  app.get("/databases/:id", auth, async (c) => {
    const db = await findLiveDedicated(deps.db, c.get("region"), c.req.param("id"));
    const role = db ? await roleOnDedicatedDatabase(deps.db, db, c.get("user").id) : "none";
    // Someone else's database answers exactly like one that does not exist.
    if (!db || role === "none") throw new NotFoundError("database");
    return c.json({ database: dedicatedJson(db, role, catalog) });
  });

  return app;
}
