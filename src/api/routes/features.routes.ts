// Database features (reference §4.3): `force-ssl` and `publicly-available`, served under
// /api. A toggle is a spec change: the feature is PENDING_TO_ACTIVATE (or PENDING_TO_REMOVE)
// until every instance of the database reports running the generation that carries it.
import { Hono } from "hono";
import {
  checkDisable,
  checkEnable,
  featureName,
  featureStatus,
  type FeatureName,
} from "../../domain/network-rules.ts";
import { lockDatabase, scopeIdOf, type Database } from "../../store/databases.store.ts";
import { recordEvent } from "../../store/events.store.ts";
import type { Queryable } from "../../store/db.ts";
import {
  bumpGeneration,
  featureRows,
  generationProgress,
  setFeatureState,
} from "../../store/network.store.ts";
import { NotFoundError } from "../../domain/errors.ts";
import type { RateLimiter } from "../auth.ts";
import { requireAuth } from "../auth.ts";
import type { Deps } from "../deps.ts";
import { readJson, root } from "../request.ts";
import { requireDatabaseAccess, type DbEnv } from "./database-api.routes.ts";

async function lockLive(q: Queryable, id: string): Promise<Database> {
  const db = await lockDatabase(q, id);
  if (!db || db.deleteRequestedAt) throw new NotFoundError("database");
  return db;
}

async function recordFeatureEvent(
  q: Queryable,
  db: Database,
  userId: string,
  type: "database/add_feature" | "database/remove_feature",
  feature: FeatureName,
): Promise<void> {
  await recordEvent(q, {
    appId: scopeIdOf(db),
    databaseId: db.id,
    userId,
    type,
    typeData: { feature, addon_uuid: db.id, addon_resource_id: db.resourceId },
  });
}

export function featureRoutes(deps: Deps, limiter: RateLimiter): Hono<DbEnv> {
  const app = new Hono<DbEnv>();
  const auth = requireAuth(deps, limiter, { addonTokens: true });
  const access = requireDatabaseAccess(deps);

  app.post("/databases/:id/features", auth, access, async (c) => {
    const name = featureName(root(await readJson(c), "feature").name);
    const userId = c.get("user").id;
    const answer = await deps.db.tx(async (q) => {
      const db = await lockLive(q, c.get("database").id);
      if (db.model === "dedicated" && name === "force-ssl") {
        return { name, status: "ACTIVATED", message: "force-ssl is always activated on Dedicated databases" };
      }
      const rows = await featureRows(q, db.id);
      const current = rows.find((f) => f.name === name);
      if (current?.state === "active") {
        const status = featureStatus("active", await generationProgress(q, db.id, current.generation));
        return { name, status, message: `${name} is already requested` };
      }
      const on = new Set(rows.filter((f) => f.state === "active").map((f) => f.name));
      checkEnable(db.model, name, on);
      await setFeatureState(q, db.id, name, "active", await bumpGeneration(q, db.id));
      await recordFeatureEvent(q, db, userId, "database/add_feature", name);
      return { name, status: "PENDING_TO_ACTIVATE", message: `${name} is being activated` };
    });
    deps.kickReconciler();
    return c.json(answer);
  });

  app.delete("/databases/:id/features", auth, access, async (c) => {
    const name = featureName(c.req.query("feature"), "feature");
    const userId = c.get("user").id;
    const message = await deps.db.tx(async (q) => {
      const db = await lockLive(q, c.get("database").id);
      const rows = await featureRows(q, db.id);
      const on = new Set(rows.filter((f) => f.state === "active").map((f) => f.name));
      checkDisable(db.model, name, on);
      if (!on.has(name)) return `${name} is not activated: nothing to remove`;
      await setFeatureState(q, db.id, name, "removing", await bumpGeneration(q, db.id));
      await recordFeatureEvent(q, db, userId, "database/remove_feature", name);
      return `${name} is being removed`;
    });
    deps.kickReconciler();
    return c.json({ message });
  });

  return app;
}
