// One reconcile pass for one database: observe -> plan -> apply one step.
// Until host agents exist, nothing can run a database: it stays provisioning, and says why.
import type { Deps } from "../api/deps.ts";
import type { PassResult } from "./loop.ts";

export async function reconcileDatabase(deps: Deps, databaseId: string): Promise<PassResult> {
  const { rows } = await deps.db.query<{ phase: string }>("SELECT phase FROM databases WHERE id = $1", [
    databaseId,
  ]);
  if (!rows[0]) return { message: `database ${databaseId} no longer exists: nothing to do` };
  return { message: `database ${databaseId} waits for a host agent (phase ${rows[0].phase})` };
}
