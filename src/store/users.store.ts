// Users and their API tokens. Token secrets are never stored: only their SHA-256.
import { createHash, randomBytes } from "node:crypto";
import { newId } from "../domain/ids.ts";
import type { Queryable } from "./db.ts";

export interface User {
  id: string;
  username: string;
  email: string;
  fullname: string;
  isAdmin: boolean;
  createdAt: Date;
}

export interface ApiToken {
  id: string;
  userId: string;
  name: string;
  createdAt: Date;
  issuedAt: Date;
  lastUsedAt: Date | null;
}

interface UserRow {
  id: string;
  username: string;
  email: string;
  fullname: string;
  is_admin: boolean;
  created_at: Date;
}

interface TokenRow {
  id: string;
  user_id: string;
  name: string;
  created_at: Date;
  issued_at: Date;
  last_used_at: Date | null;
}

const toUser = (r: UserRow): User => ({
  id: r.id,
  username: r.username,
  email: r.email,
  fullname: r.fullname,
  isAdmin: r.is_admin,
  createdAt: r.created_at,
});

const toToken = (r: TokenRow): ApiToken => ({
  id: r.id,
  userId: r.user_id,
  name: r.name,
  createdAt: r.created_at,
  issuedAt: r.issued_at,
  lastUsedAt: r.last_used_at,
});

export const hashToken = (secret: string): Buffer => createHash("sha256").update(secret).digest();

/** A new API token secret, in the reference's `tk-us-…` form. */
export const newTokenSecret = (): string => `tk-us-${randomBytes(32).toString("base64url")}`;

export async function insertUser(
  q: Queryable,
  u: { username: string; email: string; fullname?: string; isAdmin?: boolean; id?: string },
): Promise<User> {
  const { rows } = await q.query<UserRow>(
    `INSERT INTO users (id, username, email, fullname, is_admin) VALUES ($1, $2, $3, $4, $5) RETURNING *`,
    [u.id ?? newId("us"), u.username, u.email.toLowerCase(), u.fullname ?? "", u.isAdmin ?? false],
  );
  return toUser(rows[0]!);
}

export async function getUser(q: Queryable, id: string): Promise<User | null> {
  const { rows } = await q.query<UserRow>("SELECT * FROM users WHERE id = $1", [id]);
  return rows[0] ? toUser(rows[0]) : null;
}

export async function getUserByEmail(q: Queryable, email: string): Promise<User | null> {
  const { rows } = await q.query<UserRow>("SELECT * FROM users WHERE email = $1", [email.toLowerCase()]);
  return rows[0] ? toUser(rows[0]) : null;
}

export async function listUsers(q: Queryable): Promise<User[]> {
  const { rows } = await q.query<UserRow>("SELECT * FROM users ORDER BY created_at, id");
  return rows.map(toUser);
}

/** Creates a token; the secret is returned once and never again. */
export async function insertToken(
  q: Queryable,
  userId: string,
  name: string,
  secret = newTokenSecret(),
): Promise<{ token: ApiToken; secret: string }> {
  const { rows } = await q.query<TokenRow>(
    `INSERT INTO api_tokens (id, user_id, name, token_hash) VALUES ($1, $2, $3, $4)
     RETURNING id, user_id, name, created_at, issued_at, last_used_at`,
    [newId("tok"), userId, name, hashToken(secret)],
  );
  return { token: toToken(rows[0]!), secret };
}

export async function findTokenBySecret(q: Queryable, secret: string): Promise<ApiToken | null> {
  const { rows } = await q.query<TokenRow>(
    `UPDATE api_tokens SET last_used_at = now() WHERE token_hash = $1
     RETURNING id, user_id, name, created_at, issued_at, last_used_at`,
    [hashToken(secret)],
  );
  return rows[0] ? toToken(rows[0]) : null;
}

export async function tokenExists(q: Queryable, tokenId: string, issuedAtOrAfter: Date): Promise<boolean> {
  // Why issued_at: renewing a token must end the sessions exchanged from its old secret.
  const { rows } = await q.query(
    "SELECT 1 FROM api_tokens WHERE id = $1 AND date_trunc('second', issued_at) <= $2",
    [tokenId, issuedAtOrAfter],
  );
  return rows.length > 0;
}

export async function listTokens(q: Queryable, userId: string): Promise<ApiToken[]> {
  const { rows } = await q.query<TokenRow>(
    `SELECT id, user_id, name, created_at, issued_at, last_used_at FROM api_tokens
     WHERE user_id = $1 ORDER BY created_at, id`,
    [userId],
  );
  return rows.map(toToken);
}

/** Gives a token a new secret (old secret and its sessions stop working). */
export async function renewToken(
  q: Queryable,
  userId: string,
  tokenId: string,
): Promise<{ token: ApiToken; secret: string } | null> {
  const secret = newTokenSecret();
  const { rows } = await q.query<TokenRow>(
    `UPDATE api_tokens SET token_hash = $3, issued_at = now() WHERE id = $1 AND user_id = $2
     RETURNING id, user_id, name, created_at, issued_at, last_used_at`,
    [tokenId, userId, hashToken(secret)],
  );
  return rows[0] ? { token: toToken(rows[0]), secret } : null;
}

export async function deleteToken(q: Queryable, userId: string, tokenId: string): Promise<boolean> {
  const { rowCount } = await q.query("DELETE FROM api_tokens WHERE id = $1 AND user_id = $2", [
    tokenId,
    userId,
  ]);
  return (rowCount ?? 0) > 0;
}
