// Events (reference §4.5): the timeline of an app (or Dedicated database) and of the user.
import { Hono } from "hono";
import { listScopeEvents, listUserEvents, type Event } from "../../store/events.store.ts";
import type { RateLimiter } from "../auth.ts";
import { requireAuth } from "../auth.ts";
import type { Deps, Env } from "../deps.ts";
import { pageParams } from "../request.ts";
import { resolveScope, scopeIdentity } from "../scope.ts";

export const eventJson = (e: Event) => ({
  id: e.id,
  // Events of a Dedicated database are shown under its id, as an app's.
  app_id: e.appId ?? e.databaseId,
  app_name: e.appName,
  created_at: e.createdAt.toISOString(),
  type: e.type,
  user: e.user ? { id: e.user.id, username: e.user.username, email: e.user.email } : null,
  type_data: e.typeData,
});

export function paginationMeta(page: number, perPage: number, total: number) {
  const totalPages = Math.max(1, Math.ceil(total / perPage));
  return {
    pagination: {
      prev_page: page > 1 ? page - 1 : null,
      current_page: page,
      next_page: page < totalPages ? page + 1 : null,
      total_pages: totalPages,
      total_count: total,
    },
  };
}

export function eventRoutes(deps: Deps, limiter: RateLimiter): Hono<Env> {
  const app = new Hono<Env>();
  const auth = requireAuth(deps, limiter);

  app.get("/apps/:app/events", auth, async (c) => {
    const scope = await resolveScope(deps, c, c.req.param("app"));
    const p = pageParams(c, 30);
    const { events, total } = await listScopeEvents(deps.db, scopeIdentity(scope).id, p);
    return c.json({ events: events.map(eventJson), meta: paginationMeta(p.page, p.perPage, total) });
  });

  app.get("/events", auth, async (c) => {
    const p = pageParams(c, 30);
    const { events, total } = await listUserEvents(deps.db, c.get("region"), c.get("user").id, p);
    return c.json({ events: events.map(eventJson), meta: paginationMeta(p.page, p.perPage, total) });
  });

  return app;
}
