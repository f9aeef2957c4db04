// The observed state (status) of databases. Only reconcilers call these functions: the API
// writes the spec (databases.store.ts), never the status.
import type { Catalog } from "../domain/catalog.ts";
import { releaseName } from "./apps.store.ts";
import type { Queryable } from "./db.ts";
import { eventAddonData, getDatabase, scopeIdOf, type Phase } from "./databases.store.ts";
import { recordEvent } from "./events.store.ts";
import { finishOperations } from "./operations.store.ts";

/** Sets phase and reason; a no-op when both are already what is asked (idempotent). */
export async function writePhase(
  q: Queryable,
  databaseId: string,
  phase: Exclude<Phase, "deleted">,
  reason: string,
): Promise<boolean> {
  const { rowCount } = await q.query(
    `UPDATE databases SET phase = $2, phase_reason = $3, updated_at = now()
     WHERE id = $1 AND deleted_at IS NULL AND (phase <> $2 OR phase_reason <> $3)`,
    [databaseId, phase, reason],
  );
  return (rowCount ?? 0) > 0;
}

/**
 * Finalizes a deletion whose resources are all gone: status deleted, name back to the
 * shared namespace, variables and own collaborators removed, operations ended, and the
 * `addon_updated` event. Call inside a transaction. Returns false if already finalized.
 */
export async function finalizeDeletion(q: Queryable, catalog: Catalog, databaseId: string): Promise<boolean> {
  const before = await getDatabase(q, databaseId);
  const { rowCount } = await q.query(
    `UPDATE databases SET phase = 'deleted', phase_reason = 'deleted on request', deleted_at = now(),
            observed_generation = generation, updated_at = now()
     WHERE id = $1 AND delete_requested_at IS NOT NULL AND deleted_at IS NULL`,
    [databaseId],
  );
  if (!before || (rowCount ?? 0) === 0) return false;
  if (before.model === "dedicated" && before.name) await releaseName(q, before.name);
  await q.query("DELETE FROM variables WHERE database_id = $1", [databaseId]);
  await q.query("DELETE FROM collaborators WHERE database_id = $1", [databaseId]);
  await finishOperations(q, databaseId, { types: ["delete"], status: "done" });
  await finishOperations(q, databaseId, {
    types: ["provision", "change-plan"],
    status: "error",
    error: "cancelled: the database was deleted before this change completed",
  });
  await recordEvent(q, {
    appId: scopeIdOf(before),
    databaseId,
    type: "addon_updated",
    typeData: {
      addon_id: before.id,
      addon_plan_name: eventAddonData(catalog, before).plan_name,
      addon_resource_id: before.resourceId,
      addon_provider_id: before.providerId,
      addon_provider_name: eventAddonData(catalog, before).addon_provider_name,
      status: [before.phase, "deleted"],
      attributes_changed: ["status"],
    },
  });
  return true;
}
