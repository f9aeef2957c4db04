// Logical backups as the database API shows them (reference §2.8 and §4.3).
import type { Database } from "../store/databases.store.ts";
import type { Queryable } from "../store/db.ts";
import { scheduleOf, type LogicalBackup } from "../store/logical-backups.store.ts";

export function backupJson(b: LogicalBackup) {
  return {
    id: b.id,
    database_id: b.databaseId,
    name: b.name,
    created_at: b.createdAt.toISOString(),
    started_at: b.startedAt?.toISOString() ?? null,
    // Cellar's: when it ended, and why it failed.
    finished_at: b.finishedAt?.toISOString() ?? null,
    size: b.sizeBytes ?? 0,
    status: b.status,
    method: b.method,
    ...(b.status === "error" ? { error: b.error ?? "" } : {}),
  };
}

/** The database object's periodic_backups_* fields: Shared PostgreSQL databases only. */
export async function periodicBackupFields(
  q: Queryable,
  db: Database,
): Promise<{ periodic_backups_enabled: boolean; periodic_backups_scheduled_at: number[] }> {
  if (db.model !== "shared" || db.engine !== "postgresql") {
    return { periodic_backups_enabled: false, periodic_backups_scheduled_at: [] };
  }
  const s = await scheduleOf(q, db);
  return { periodic_backups_enabled: s.enabled, periodic_backups_scheduled_at: s.hours };
}
