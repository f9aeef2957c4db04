// Continuous backups in the database API (reference §4.3): the recovery window, and a
// point-in-time restore in place (an operation; the database is down while it runs).
import { Hono, type Context } from "hono";
import { checkRestoreTime, parseRestoreTime } from "../../domain/backup-policy.ts";
import { ConflictError } from "../../domain/errors.ts";
import { findContinuousBackup, pendingRestore, requestRestore } from "../../store/backups.store.ts";
import { listContinuousBackups } from "../../store/backup-verification.store.ts";
import { isPgError, UNIQUE_VIOLATION } from "../../store/db.ts";
import { lockDatabase } from "../../store/databases.store.ts";
import { currentOperation } from "../../store/operations.store.ts";
import type { RateLimiter } from "../auth.ts";
import { requireAuth } from "../auth.ts";
import type { Deps, Env } from "../deps.ts";
import { readJson } from "../request.ts";
import { operationUrl } from "./addons.routes.ts";
import { operationJson } from "./operations.routes.ts";
import { requireDatabaseAccess, type DbEnv } from "./database-api.routes.ts";

export function backupRoutes(deps: Deps, limiter: RateLimiter): Hono<DbEnv> {
  const app = new Hono<DbEnv>();
  const auth = requireAuth(deps, limiter, { addonTokens: true });
  const access = requireDatabaseAccess(deps);

  app.get("/databases/:id/pitr/recovery_window", auth, access, async (c) => {
    const cb = await findContinuousBackup(deps.db, c.get("database").id);
    // Reference: both fields are optional; absent until a first full backup exists.
    const window: Record<string, string> = {};
    if (cb?.earliestRecoverableAt && cb.latestRecoverableAt) {
      window.earliest_recoverable_at = cb.earliestRecoverableAt.toISOString();
      window.latest_recoverable_at = cb.latestRecoverableAt.toISOString();
    }
    return c.json({ recovery_window: window });
  });

  // Not in the reference: the full backups behind the window, each with its verification
  // (restored into a scratch instance and read: verified, failed with the reason, or pending).
  app.get("/databases/:id/pitr/backups", auth, access, async (c) => {
    const sets = await listContinuousBackups(deps.db, c.get("database").id);
    return c.json({
      continuous_backups: sets.map((b) => ({
        id: b.label,
        type: b.type,
        timeline: b.timeline,
        started_at: b.startedAt.toISOString(),
        ended_at: b.stoppedAt.toISOString(),
        size: b.sizeBytes,
        repository_size: b.repoSizeBytes,
        reason: b.reason,
        verification_status: b.verificationStatus,
        verification_detail: b.verificationDetail,
        verification_checked_at: b.verificationAt?.toISOString() ?? null,
      })),
    });
  });

  app.post("/databases/:id/pitr/restore", auth, access, async (c) => {
    const body = await readJson(c);
    const targetTime = parseRestoreTime(body.restore_time);
    const id = c.get("database").id;
    const result = await deps.db
      .tx(async (q) => {
        const db = await lockDatabase(q, id);
        const cb = await findContinuousBackup(q, id);
        if (!db || db.deleteRequestedAt) throw new ConflictError("the database is being deleted");
        checkRestoreTime(
          targetTime,
          { earliest: cb?.earliestRecoverableAt ?? null, latest: cb?.latestRecoverableAt ?? null },
          deps.now(),
        );
        // A restore replaces the data: never on top of a change still being applied.
        const busy = (await pendingRestore(q, id)) ?? (await currentOperation(q, id));
        if (busy || db.phase !== "running" || db.observedGeneration !== db.generation) {
          throw new ConflictError(
            `the database is ${db.phase}${busy ? " with an operation in progress" : ""}: ` +
              "a restore can start once it is running with no other change under way",
          );
        }
        return requestRestore(q, db, { targetTime, userId: c.get("user").id });
      })
      .catch((err: unknown) => {
        // Two restores asked at once: the index lets one through.
        if (isPgError(err, UNIQUE_VIOLATION))
          throw new ConflictError("a restore of this database is under way");
        throw err;
      });
    deps.kickReconciler();
    const op = result.operation;
    c.header("Location", operationUrl(deps, c as unknown as Context<Env>, c.get("appName"), op.id));
    return c.json({ operation: operationJson(op), operation_id: op.id }, 201);
  });

  return app;
}
