// The HTTP application: auth API, main API and database API on one listener.
// Every API is served at the root (the default region) and under /regions/:region.
import { Hono } from "hono";
import { NotFoundError } from "../domain/errors.ts";
import { RateLimiter, requireAuth } from "./auth.ts";
import type { Deps, Env } from "./deps.ts";
import { handleError } from "./errors.ts";
import { addonRoutes } from "./routes/addons.routes.ts";
import { appRoutes } from "./routes/apps.routes.ts";
import { hostRoutes } from "./routes/hosts.routes.ts";
import { catalogRoutes, regionsJson } from "./routes/catalog.routes.ts";
import { collaboratorRoutes } from "./routes/collaborators.routes.ts";
import { backupRoutes } from "./routes/backups.routes.ts";
import { logicalBackupRoutes } from "./routes/logical-backups.routes.ts";
import { databaseApiRoutes } from "./routes/database-api.routes.ts";
import { databaseLogRoutes } from "./routes/database-logs.routes.ts";
import { databaseUserRoutes } from "./routes/database-users.routes.ts";
import { databaseRoutes } from "./routes/databases.routes.ts";
import { endpointRoutes } from "./routes/endpoints.routes.ts";
import { eventRoutes } from "./routes/events.routes.ts";
import { featureRoutes } from "./routes/features.routes.ts";
import { firewallRuleRoutes } from "./routes/firewall-rules.routes.ts";
import { operationRoutes } from "./routes/operations.routes.ts";
import { tokenRoutes } from "./routes/tokens.routes.ts";
import { variableRoutes } from "./routes/variables.routes.ts";

export function createApp(deps: Deps): Hono<Env> {
  const limiter = new RateLimiter(deps.config.rateLimitPerMinute, () => deps.now().getTime());
  const regions = new Set(deps.config.regions.map((r) => r.name));

  const build = (region: string | null) => {
    const scoped = new Hono<Env>();
    scoped.use(async (c, next) => {
      const name = region ?? c.req.param("region") ?? deps.config.defaultRegion;
      if (!regions.has(name)) throw new NotFoundError("region");
      c.set("region", name);
      await next();
    });
    const v1 = new Hono<Env>();
    v1.route("/", tokenRoutes(deps, limiter));
    v1.route("/", catalogRoutes(deps));
    v1.get("/regions", requireAuth(deps, limiter), (c) => c.json({ regions: regionsJson(deps) }));
    // Main API route modules (one line each).
    v1.route("/", collaboratorRoutes(deps, limiter)); // before appRoutes: /apps/collaboration
    v1.route("/", appRoutes(deps, limiter));
    v1.route("/", variableRoutes(deps, limiter));
    v1.route("/", eventRoutes(deps, limiter));
    v1.route("/", addonRoutes(deps, limiter));
    v1.route("/", databaseRoutes(deps, limiter));
    v1.route("/", endpointRoutes(deps, limiter));
    v1.route("/", operationRoutes(deps, limiter));
    v1.route("/", hostRoutes(deps, limiter));
    const api = new Hono<Env>();
    // Database API route modules (one line each).
    api.route("/", databaseApiRoutes(deps, limiter));
    api.route("/", databaseUserRoutes(deps, limiter));
    api.route("/", databaseLogRoutes(deps, limiter));
    api.route("/", featureRoutes(deps, limiter));
    api.route("/", firewallRuleRoutes(deps, limiter));
    api.route("/", backupRoutes(deps, limiter));
    api.route("/", logicalBackupRoutes(deps, limiter));
    scoped.route("/v1", v1);
    scoped.route("/api", api);
    return scoped;
  };

  const app = new Hono<Env>();
  app.onError((err, c) => handleError(err, c, deps.log));
  app.notFound((c) => c.json({ error: `no route for ${c.req.method} ${c.req.path}` }, 404));
  app.get("/health", (c) => c.json({ status: "ok" }));
  app.route("/regions/:region", build(null));
  app.route("/", build(deps.config.defaultRegion));
  return app;
}
