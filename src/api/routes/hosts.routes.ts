// Operator view of the fleet: hosts, their status, capacity, usage and isolation report.
import { Hono } from "hono";
import { ForbiddenError } from "../../domain/errors.ts";
import { hostViews, listHosts } from "../../store/hosts.store.ts";
import type { RateLimiter } from "../auth.ts";
import { requireAuth } from "../auth.ts";
import type { Deps, Env } from "../deps.ts";

export function hostRoutes(deps: Deps, limiter: RateLimiter): Hono<Env> {
  const app = new Hono<Env>();
  app.use("/admin/hosts", requireAuth(deps, limiter), async (c, next) => {
    if (!c.get("user").isAdmin) throw new ForbiddenError("admin only", "admin_required");
    await next();
  });
  app.get("/admin/hosts", async (c) => {
    const [hosts, views] = await Promise.all([listHosts(deps.db), hostViews(deps.db, "")]);
    const used = new Map(views.map((v) => [v.id, v]));
    return c.json({
      hosts: hosts.map((h) => ({
        id: h.id,
        name: h.name,
        region: h.region,
        az: h.az,
        pool: h.pool,
        address: h.address,
        status: h.status,
        status_reason: h.statusReason,
        last_heartbeat_at: h.lastHeartbeatAt?.toISOString() ?? null,
        capacity: { vcpu: h.capacityVcpu, ram_mb: h.capacityRamMb, disk_gb: h.capacityDiskGb },
        allocated: {
          vcpu: used.get(h.id)?.usedVcpu ?? 0,
          ram_mb: used.get(h.id)?.usedRamMb ?? 0,
          disk_gb: used.get(h.id)?.usedDiskGb ?? 0,
          nodes: used.get(h.id)?.nodeCount ?? 0,
        },
        isolation: h.isolation,
      })),
    });
  });
  return app;
}
