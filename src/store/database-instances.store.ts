// A database's instances with the address clients reach them at, for the database API's
// views (status, metrics). Read-only.
import type { InstanceFacts } from "../domain/instance-views.ts";
import type { Queryable } from "./db.ts";

export async function instanceFactsOfDatabase(q: Queryable, databaseId: string): Promise<InstanceFacts[]> {
  const { rows } = await q.query<{
    id: string;
    kind: "node" | "gateway";
    status: string;
    desired_state: string;
    role: string;
    address: string;
    port: number;
    usage: Record<string, number>;
    encrypted_at_rest: boolean | null;
    at_rest_note: string;
  }>(
    `SELECT i.id, i.kind, i.status, i.desired_state, i.role, host(h.address) AS address, i.port, i.usage,
            i.encrypted_at_rest, i.at_rest_note
     FROM instances i JOIN hosts h ON h.id = i.host_id
     WHERE i.database_id = $1
     ORDER BY i.kind DESC, i.ordinal`,
    [databaseId],
  );
  return rows.map((r) => ({
    id: r.id,
    kind: r.kind,
    status: r.status,
    desiredState: r.desired_state,
    role: r.role,
    address: r.address,
    port: r.port,
    usage: r.usage,
    encryptedAtRest: r.encrypted_at_rest,
    atRestNote: r.at_rest_note,
  }));
}
