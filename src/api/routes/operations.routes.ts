// Operations (reference §4.2): the progress of an asynchronous database change.
import { Hono } from "hono";
import { NotFoundError } from "../../domain/errors.ts";
import { findOperation, type Operation } from "../../store/operations.store.ts";
import type { RateLimiter } from "../auth.ts";
import { requireAuth } from "../auth.ts";
import type { Deps, Env } from "../deps.ts";
import { resolveScope, scopeIdentity } from "../scope.ts";

export const operationJson = (o: Operation) => ({
  id: o.id,
  app_id: o.appId,
  database_id: o.databaseId,
  created_at: o.createdAt.toISOString(),
  finished_at: o.finishedAt?.toISOString() ?? null,
  status: o.status,
  type: o.type,
  error: o.error,
  progress: o.progress,
});

export function operationRoutes(deps: Deps, limiter: RateLimiter): Hono<Env> {
  const app = new Hono<Env>();
  const auth = requireAuth(deps, limiter);

  app.get("/apps/:app/operations/:id", auth, async (c) => {
    const scope = await resolveScope(deps, c, c.req.param("app"));
    const op = await findOperation(deps.db, scopeIdentity(scope).id, c.req.param("id"));
    if (!op) throw new NotFoundError("operation");
    return c.json({ operation: operationJson(op) });
  });

  return app;
}
