// Events: the audit trail of what users (and Cellar) did to apps and databases.
import { newId } from "../domain/ids.ts";
import type { Queryable } from "./db.ts";

export interface EventUser {
  id: string;
  username: string;
  email: string;
}

export interface Event {
  id: string;
  appId: string | null;
  databaseId: string | null;
  appName: string | null;
  createdAt: Date;
  type: string;
  user: EventUser | null;
  typeData: Record<string, unknown>;
}

export interface NewEvent {
  appId?: string | null;
  databaseId?: string | null;
  userId?: string | null;
  type: string;
  typeData?: Record<string, unknown>;
}

/** Records one event; call it in the same transaction as the change it describes. */
export async function recordEvent(q: Queryable, e: NewEvent): Promise<string> {
  const id = newId("ev");
  await q.query(
    "INSERT INTO events (id, app_id, database_id, user_id, type, type_data) VALUES ($1, $2, $3, $4, $5, $6)",
    [id, e.appId ?? null, e.databaseId ?? null, e.userId ?? null, e.type, JSON.stringify(e.typeData ?? {})],
  );
  return id;
}
