// Collaborators of an app or of a Dedicated database, and their invitations. Invitation
// tokens are never stored: only their SHA-256.
import { randomBytes } from "node:crypto";
import { newId } from "../domain/ids.ts";
import type { Queryable } from "./db.ts";
import { hashToken } from "./users.store.ts";

export interface Collaborator {
  id: string;
  appId: string | null;
  databaseId: string | null;
  email: string;
  userId: string | null;
  username: string | null;
  status: "pending" | "accepted";
  isLimited: boolean;
  createdAt: Date;
}

interface CollaboratorRow {
  id: string;
  app_id: string | null;
  database_id: string | null;
  email: string;
  user_id: string | null;
  username: string | null;
  status: "pending" | "accepted";
  is_limited: boolean;
  created_at: Date;
}

const toCollaborator = (r: CollaboratorRow): Collaborator => ({
  id: r.id,
  appId: r.app_id,
  databaseId: r.database_id,
  email: r.email,
  userId: r.user_id,
  username: r.username,
  status: r.status,
  isLimited: r.is_limited,
  createdAt: r.created_at,
});

export type CollaboratorScope = { kind: "app"; id: string } | { kind: "database"; id: string };

const scopeColumn = (s: CollaboratorScope) => (s.kind === "app" ? "app_id" : "database_id");

const SELECT = `SELECT c.id, c.app_id, c.database_id, c.email, c.user_id, u.username, c.status,
                       c.is_limited, c.created_at
                FROM collaborators c LEFT JOIN users u ON u.id = c.user_id`;

export async function listCollaborators(q: Queryable, s: CollaboratorScope): Promise<Collaborator[]> {
  const { rows } = await q.query<CollaboratorRow>(
    `${SELECT} WHERE c.${scopeColumn(s)} = $1 ORDER BY c.created_at, c.id`,
    [s.id],
  );
  return rows.map(toCollaborator);
}

export async function findCollaborator(
  q: Queryable,
  s: CollaboratorScope,
  id: string,
): Promise<Collaborator | null> {
  const { rows } = await q.query<CollaboratorRow>(`${SELECT} WHERE c.${scopeColumn(s)} = $1 AND c.id = $2`, [
    s.id,
    id,
  ]);
  return rows[0] ? toCollaborator(rows[0]) : null;
}

/** Creates a pending invitation; returns it with the token (shown once). Throws 23505 on a duplicate email. */
export async function insertInvitation(
  q: Queryable,
  s: CollaboratorScope,
  inv: { email: string; isLimited: boolean },
): Promise<{ collaborator: Collaborator; token: string }> {
  const token = randomBytes(24).toString("hex");
  const { rows } = await q.query<CollaboratorRow>(
    `INSERT INTO collaborators (id, ${scopeColumn(s)}, email, is_limited, invitation_token_hash)
     VALUES ($1, $2, $3, $4, $5)
     RETURNING id, app_id, database_id, email, user_id, NULL::text AS username, status, is_limited, created_at`,
    [newId("col"), s.id, inv.email.toLowerCase(), inv.isLimited, hashToken(token)],
  );
  return { collaborator: toCollaborator(rows[0]!), token };
}

/** The pending invitation a token belongs to, locked for acceptance, with its scope's region. */
export async function findPendingInvitation(
  q: Queryable,
  token: string,
): Promise<{ invitation: Collaborator; region: string | null } | null> {
  const { rows } = await q.query<CollaboratorRow & { region: string | null }>(
    `SELECT c.id, c.app_id, c.database_id, c.email, c.user_id, NULL::text AS username, c.status,
            c.is_limited, c.created_at,
            coalesce((SELECT a.region FROM apps a WHERE a.id = c.app_id AND a.deleted_at IS NULL),
                     (SELECT d.region FROM databases d WHERE d.id = c.database_id AND d.deleted_at IS NULL))
              AS region
     FROM collaborators c WHERE c.invitation_token_hash = $1 AND c.status = 'pending' FOR UPDATE OF c`,
    [hashToken(token)],
  );
  const r = rows[0];
  return r ? { invitation: toCollaborator(r), region: r.region } : null;
}

/** Accepting spends the token: it cannot be used twice. */
export async function acceptInvitation(q: Queryable, id: string, userId: string): Promise<void> {
  await q.query(
    `UPDATE collaborators SET status = 'accepted', user_id = $2, invitation_token_hash = NULL
     WHERE id = $1 AND status = 'pending'`,
    [id, userId],
  );
}

export async function setCollaboratorLimited(q: Queryable, id: string, isLimited: boolean): Promise<void> {
  await q.query("UPDATE collaborators SET is_limited = $2 WHERE id = $1", [id, isLimited]);
}

export async function deleteCollaborator(q: Queryable, id: string): Promise<void> {
  await q.query("DELETE FROM collaborators WHERE id = $1", [id]);
}

/** Collaborators of every app the user owns in a region (the reference's GET /collaborators). */
export async function listCollaboratorsOfOwnedApps(
  q: Queryable,
  region: string,
  ownerId: string,
): Promise<Array<Collaborator & { appName: string }>> {
  const { rows } = await q.query<CollaboratorRow & { app_name: string }>(
    `SELECT c.id, c.app_id, c.database_id, c.email, c.user_id, u.username, c.status, c.is_limited,
            c.created_at, a.name AS app_name
     FROM collaborators c LEFT JOIN users u ON u.id = c.user_id JOIN apps a ON a.id = c.app_id
     WHERE a.region = $1 AND a.owner_id = $2 AND a.deleted_at IS NULL
     ORDER BY a.name, c.created_at, c.id`,
    [region, ownerId],
  );
  return rows.map((r) => ({ ...toCollaborator(r), appName: r.app_name }));
}
