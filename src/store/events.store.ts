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

interface EventRow {
  id: string;
  app_id: string | null;
  database_id: string | null;
  app_name: string | null;
  created_at: Date;
  type: string;
  type_data: Record<string, unknown>;
  user_id: string | null;
  username: string | null;
  email: string | null;
  total: number;
}

const toEvent = (r: EventRow): Event => ({
  id: r.id,
  appId: r.app_id,
  databaseId: r.database_id,
  appName: r.app_name,
  createdAt: r.created_at,
  type: r.type,
  user: r.user_id && r.username && r.email ? { id: r.user_id, username: r.username, email: r.email } : null,
  typeData: r.type_data,
});

export interface Page {
  page: number;
  perPage: number;
}

const SELECT_EVENTS = `
  SELECT e.id, e.app_id, e.database_id, e.created_at, e.type, e.type_data, e.user_id,
         u.username, u.email,
         coalesce(a.name, d.name, e.type_data->>'app_name') AS app_name,
         count(*) OVER () AS total
  FROM events e
  LEFT JOIN users u ON u.id = e.user_id
  LEFT JOIN apps a ON a.id = e.app_id
  LEFT JOIN databases d ON d.id = e.database_id AND d.model = 'dedicated'`;

async function pageOf(
  q: Queryable,
  where: string,
  params: unknown[],
  p: Page,
): Promise<{ events: Event[]; total: number }> {
  const n = params.length;
  const { rows } = await q.query<EventRow>(
    `${SELECT_EVENTS} WHERE ${where}
     ORDER BY e.created_at DESC, e.id DESC LIMIT $${n + 1} OFFSET $${n + 2}`,
    [...params, p.perPage, (p.page - 1) * p.perPage],
  );
  // Past the last page the window count is absent: count separately.
  const total = rows[0]?.total ?? (await countWhere(q, where, params));
  return { events: rows.map(toEvent), total };
}

async function countWhere(q: Queryable, where: string, params: unknown[]): Promise<number> {
  const { rows } = await q.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM events e WHERE ${where}`,
    params,
  );
  return rows[0]?.n ?? 0;
}

/** Events of one app, or of one Dedicated database addressed as an app. */
export async function listScopeEvents(
  q: Queryable,
  scopeId: string,
  p: Page,
): Promise<{ events: Event[]; total: number }> {
  return pageOf(q, "(e.app_id = $1 OR e.database_id = $1)", [scopeId], p);
}

/**
 * Events of every app and Dedicated database the user can see in a region, plus the
 * events the user caused (so a deleted app's last events stay visible to who deleted it).
 */
export async function listUserEvents(
  q: Queryable,
  region: string,
  userId: string,
  p: Page,
): Promise<{ events: Event[]; total: number }> {
  const where = `(e.user_id = $2 OR e.app_id IN (
      SELECT a.id FROM apps a WHERE a.region = $1 AND a.deleted_at IS NULL AND (a.owner_id = $2 OR EXISTS (
        SELECT 1 FROM collaborators c WHERE c.app_id = a.id AND c.user_id = $2 AND c.status = 'accepted')))
    OR e.database_id IN (
      SELECT d.id FROM databases d WHERE d.model = 'dedicated' AND d.region = $1 AND d.deleted_at IS NULL
        AND (d.owner_id = $2 OR EXISTS (
          SELECT 1 FROM collaborators c WHERE c.database_id = d.id AND c.user_id = $2 AND c.status = 'accepted'))))`;
  return pageOf(q, where, [region, userId], p);
}
