// A Dedicated database addressed as an app (/v1/apps/:app): its rename. (Its deletion is
// requestDatabaseDeletion in databases.store.ts.)
import type { Queryable } from "./db.ts";

/** Call inside a transaction. Throws 23505 if the new name is taken. */
export async function renameDedicatedDatabase(
  q: Queryable,
  databaseId: string,
  oldName: string,
  newName: string,
): Promise<void> {
  // resource_names guards the namespace shared with apps; databases.name follows it.
  await q.query("UPDATE resource_names SET name = $2 WHERE name = $1 AND kind = 'database'", [
    oldName,
    newName,
  ]);
  await q.query("UPDATE databases SET name = $2, updated_at = now() WHERE id = $1", [databaseId, newName]);
}
