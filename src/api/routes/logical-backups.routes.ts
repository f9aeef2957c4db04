// Logical backups in the database API (reference §2.8, §4.3): the list, a manual backup,
// one backup, its download link and the download itself, and the daily schedule set with
// PATCH on the database. Shared PostgreSQL databases only (Dedicated: continuous backups).
import fs from "node:fs";
import { Readable } from "node:stream";
import { Hono, type Context } from "hono";
import { ConflictError, ForbiddenError, NotFoundError, ValidationError } from "../../domain/errors.ts";
import { assertLogicalBackupsOffered, parseScheduleHours } from "../../domain/logical-backup-policy.ts";
import { jobSignal } from "../../reconciler/logical-backup.scheduler.ts";
import { isPgError, UNIQUE_VIOLATION } from "../../store/db.ts";
import { lockDatabase } from "../../store/databases.store.ts";
import { hostsWithWaitingJobs } from "../../store/logical-backup-jobs.store.ts";
import {
  findLogicalBackup,
  insertLogicalBackup,
  listLogicalBackups,
  saveSchedule,
} from "../../store/logical-backups.store.ts";
import { featureViews } from "../../store/network.store.ts";
import { currentOperation } from "../../store/operations.store.ts";
import { instanceFactsOfDatabase } from "../../store/database-instances.store.ts";
import type { RateLimiter } from "../auth.ts";
import { requireAuth } from "../auth.ts";
import type { Deps } from "../deps.ts";
import { backupJson, periodicBackupFields } from "../logical-backup-views.ts";
import { optBool, readJson, root } from "../request.ts";
import { downloadKey, signDownload, verifyDownload } from "../signed-url.ts";
import { databaseApiJson, requireDatabaseAccess, type DbEnv } from "./database-api.routes.ts";

/** How long a download link works. */
export const DOWNLOAD_LINK_TTL_S = 10 * 60;

const SCHEDULE_FIELDS = ["periodic_backups_enabled", "periodic_backups_scheduled_at"];

export function logicalBackupRoutes(deps: Deps, limiter: RateLimiter): Hono<DbEnv> {
  const app = new Hono<DbEnv>();
  const auth = requireAuth(deps, limiter, { addonTokens: true });
  const access = requireDatabaseAccess(deps);
  const key = downloadKey(deps.jwtSecret);

  /** The backup named in the path, of the database the caller reached (else 404). */
  const backupOf = async (c: Context<DbEnv>, id: string) => {
    const b = await findLogicalBackup(deps.db, id);
    if (!b || b.databaseId !== c.get("database").id) throw new NotFoundError("database_backup");
    return b;
  };

  app.get("/databases/:id/backups", auth, access, async (c) => {
    const db = c.get("database");
    // Dedicated databases have none (continuous backups only): an empty list, as there are none.
    const list = db.model === "shared" ? await listLogicalBackups(deps.db, db.id) : [];
    return c.json({ database_backups: list.map(backupJson) });
  });

  app.post("/databases/:id/backups", auth, access, async (c) => {
    const id = c.get("database").id;
    const backup = await deps.db
      .tx(async (q) => {
        const db = await lockDatabase(q, id);
        if (!db || db.deleteRequestedAt) throw new ConflictError("the database is being deleted");
        assertLogicalBackupsOffered(db.model, db.engine);
        if (db.phase !== "running" && db.phase !== "updating") {
          throw new ConflictError(`the database is ${db.phase}: a backup can be taken once it runs`);
        }
        return insertLogicalBackup(q, db, {
          method: "manual",
          userId: c.get("user").id,
          repoRoot: deps.config.backup.repoPath,
          now: deps.now(),
        });
      })
      .catch((err: unknown) => {
        // The schema allows one manual backup waiting or running per database.
        if (isPgError(err, UNIQUE_VIOLATION)) {
          throw new ConflictError(
            "a manual backup of this database is already under way: wait for it to end",
          );
        }
        throw err;
      });
    for (const hostId of await hostsWithWaitingJobs(deps.db)) deps.hostSignals.notify(jobSignal(hostId));
    return c.json({ database_backup: backupJson(backup!) }, 201);
  });

  app.get("/databases/:id/backups/:backup", auth, access, async (c) => {
    return c.json({ database_backup: backupJson(await backupOf(c, c.req.param("backup"))) });
  });

  // Reference: GET /backups/:backup_id; the backup names its database.
  const accessViaBackup = requireDatabaseAccess(deps, async (c) => {
    const b = await findLogicalBackup(deps.db, c.req.param("backup") ?? "");
    return b?.databaseId ?? "";
  });
  app.get("/backups/:backup", auth, accessViaBackup, async (c) => {
    return c.json({ database_backup: backupJson(await backupOf(c, c.req.param("backup"))) });
  });

  app.get("/databases/:id/backups/:backup/archive", auth, access, async (c) => {
    const b = await backupOf(c, c.req.param("backup"));
    if (b.status !== "done") {
      throw new ConflictError(`backup ${b.id} is ${b.status}: only a done backup can be downloaded`);
    }
    const expiresAt = Math.floor(deps.now().getTime() / 1000) + DOWNLOAD_LINK_TTL_S;
    const token = signDownload(key, b.id, expiresAt);
    const region = encodeURIComponent(c.get("region"));
    const url = `${deps.config.publicUrl}/regions/${region}/api/backups/${b.id}/download?token=${token}`;
    return c.json({ download_url: url });
  });

  // The link itself is the credential: no bearer (browsers and curl follow it as is).
  app.get("/backups/:backup/download", async (c) => {
    const id = c.req.param("backup");
    const now = Math.floor(deps.now().getTime() / 1000);
    if (!verifyDownload(key, id, c.req.query("token") ?? "", now)) {
      throw new ForbiddenError(
        "this download link is invalid or expired: ask for a new one (GET .../backups/:id/archive)",
        "invalid_download_link",
      );
    }
    const b = await findLogicalBackup(deps.db, id);
    const stat = b?.status === "done" ? await fs.promises.stat(b.filePath).catch(() => null) : null;
    if (!b || !stat) throw new NotFoundError("database_backup");
    const body = Readable.toWeb(fs.createReadStream(b.filePath)) as ReadableStream;
    return new Response(body, {
      headers: {
        "content-type": "application/gzip",
        "content-length": String(stat.size),
        "content-disposition": `attachment; filename="${b.name}.tar.gz"`,
      },
    });
  });

  const updateSchedule = async (c: Context<DbEnv>) => {
    const body = root(await readJson(c), "database");
    const unknown = Object.keys(body).filter((k) => !SCHEDULE_FIELDS.includes(k));
    if (unknown.length || Object.keys(body).length === 0) {
      throw ValidationError.field(
        unknown[0] ?? "database",
        `only ${SCHEDULE_FIELDS.join(" and ")} can be changed here`,
      );
    }
    const enabled = optBool(body, "periodic_backups_enabled");
    const raw = body.periodic_backups_scheduled_at;
    const hours = raw === undefined || raw === null ? undefined : parseScheduleHours(raw);
    const id = c.get("database").id;
    const db = await deps.db.tx(async (q) => {
      const locked = await lockDatabase(q, id);
      if (!locked || locked.deleteRequestedAt) throw new ConflictError("the database is being deleted");
      assertLogicalBackupsOffered(locked.model, locked.engine);
      await saveSchedule(q, locked, { enabled, hours });
      return locked;
    });
    const op = await currentOperation(deps.db, db.id);
    const instances = await instanceFactsOfDatabase(deps.db, db.id);
    const json = databaseApiJson(db, c.get("appName"), op?.id ?? null, deps.catalog, instances);
    json.features = await featureViews(deps.db, db);
    return c.json({ database: { ...json, ...(await periodicBackupFields(deps.db, db)) } });
  };
  app.patch("/databases/:id", auth, access, updateSchedule);
  app.put("/databases/:id", auth, access, updateSchedule);

  return app;
}
