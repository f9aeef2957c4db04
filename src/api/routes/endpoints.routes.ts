// Endpoints of a Dedicated database (reference §3.6): `GET /v1/databases/:id/endpoints`.
// The public-rw endpoint is the database's own public address and port, fixed for its life:
// the same across failovers (every gateway listens on it) and plan changes.
import { Hono } from "hono";
import { NotFoundError } from "../../domain/errors.ts";
import { publicEndpointOf } from "../../reconciler/network-spec.ts";
import { roleOnDedicatedDatabase } from "../../store/apps.store.ts";
import { findLiveDedicated } from "../../store/databases.store.ts";
import type { RateLimiter } from "../auth.ts";
import { requireAuth } from "../auth.ts";
import type { Deps, Env } from "../deps.ts";

export function endpointRoutes(deps: Deps, limiter: RateLimiter): Hono<Env> {
  const app = new Hono<Env>();

  app.get("/databases/:id/endpoints", requireAuth(deps, limiter), async (c) => {
    const db = await findLiveDedicated(deps.db, c.get("region"), c.req.param("id"));
    const role = db ? await roleOnDedicatedDatabase(deps.db, db, c.get("user").id) : "none";
    if (!db || role === "none") throw new NotFoundError("database");
    const endpoint = await publicEndpointOf(deps.db, deps.config, db);
    const endpoints = endpoint
      ? [
          {
            id: `ep-${db.id.replace(/^ad-/, "")}-public-rw`,
            database_id: db.id,
            hostname: endpoint.address,
            port: endpoint.port,
            type: "public-rw",
          },
        ]
      : [];
    return c.json({ endpoints });
  });

  return app;
}
