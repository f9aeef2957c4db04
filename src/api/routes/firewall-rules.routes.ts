// Firewall rules of Dedicated databases (reference §3.6, §4.3), served under /api: an allow
// list of source ranges, deny by default. Create and delete only; each change is a spec
// change that agents apply within seconds, at the database's edge and at its gateways.
import { Hono } from "hono";
import { NotFoundError, ValidationError } from "../../domain/errors.ts";
import { managedRanges, parseFirewallRule } from "../../domain/network-rules.ts";
import { lockDatabase, type Database } from "../../store/databases.store.ts";
import {
  bumpGeneration,
  deleteFirewallRule,
  firewallRules,
  insertFirewallRule,
  type FirewallRule,
} from "../../store/network.store.ts";
import type { RateLimiter } from "../auth.ts";
import { requireAuth } from "../auth.ts";
import type { Deps } from "../deps.ts";
import { readJson, type Json } from "../request.ts";
import { requireDatabaseAccess, type DbEnv } from "./database-api.routes.ts";

export function firewallRuleJson(r: FirewallRule) {
  return {
    id: r.id,
    type: r.type,
    cidr: r.cidr,
    label: r.label,
    range_id: r.rangeId,
    database_id: r.databaseId,
    created_at: r.createdAt.toISOString(),
  };
}

function dedicatedOnly(db: Database): void {
  if (db.model !== "dedicated") {
    throw ValidationError.field(
      "database",
      "firewall rules are for Dedicated databases: a Shared database is opened to the Internet with the publicly-available feature",
    );
  }
}

export function firewallRuleRoutes(deps: Deps, limiter: RateLimiter): Hono<DbEnv> {
  const app = new Hono<DbEnv>();
  const auth = requireAuth(deps, limiter, { addonTokens: true });
  const access = requireDatabaseAccess(deps);
  const rangesOf = () =>
    managedRanges(
      deps.config.publicNetwork,
      deps.config.regions.map((r) => r.name),
    );

  app.get("/firewall/managed_ranges", requireAuth(deps, limiter, { addonTokens: true }), (c) =>
    c.json({ ranges: rangesOf().map((r) => ({ id: r.id, name: r.name, cidrs: r.cidrs })) }),
  );

  app.get("/databases/:id/firewall_rules", auth, access, async (c) => {
    const db = c.get("database");
    dedicatedOnly(db);
    return c.json({ rules: (await firewallRules(deps.db, db.id)).map(firewallRuleJson) });
  });

  app.post("/databases/:id/firewall_rules", auth, access, async (c) => {
    dedicatedOnly(c.get("database"));
    const body = await readJson(c);
    // The reference sends the rule unwrapped; a `{rule: {...}}` body is read too.
    const inner = typeof body.rule === "object" && body.rule !== null ? (body.rule as Json) : body;
    const input = parseFirewallRule(inner, rangesOf());
    const rule = await deps.db.tx(async (q) => {
      const db = await lockDatabase(q, c.get("database").id);
      if (!db || db.deleteRequestedAt) throw new NotFoundError("database");
      const created = await insertFirewallRule(q, db.id, input);
      await bumpGeneration(q, db.id);
      return created;
    });
    deps.kickReconciler();
    return c.json({ rule: firewallRuleJson(rule) }, 201);
  });

  app.delete("/databases/:id/firewall_rules/:rule_id", auth, access, async (c) => {
    dedicatedOnly(c.get("database"));
    await deps.db.tx(async (q) => {
      const db = await lockDatabase(q, c.get("database").id);
      if (!db || db.deleteRequestedAt) throw new NotFoundError("database");
      await deleteFirewallRule(q, db.id, c.req.param("rule_id"));
      await bumpGeneration(q, db.id);
    });
    deps.kickReconciler();
    return c.body(null, 204);
  });

  return app;
}
