// Environment variables of an app (users' own, and those its add-ons write) or of a
// Dedicated database. A row with database_id set was written by that database.
import { newId } from "../domain/ids.ts";
import type { Queryable } from "./db.ts";

export interface Variable {
  id: string;
  name: string;
  value: string;
  appId: string | null;
  databaseId: string | null;
}

interface VariableRow {
  id: string;
  name: string;
  value: string;
  app_id: string | null;
  database_id: string | null;
}

const toVariable = (r: VariableRow): Variable => ({
  id: r.id,
  name: r.name,
  value: r.value,
  appId: r.app_id,
  databaseId: r.database_id,
});

export type VariableScope = { kind: "app"; id: string } | { kind: "database"; id: string };

/** An app sees its own rows; a Dedicated database those it wrote outside any app. */
function scopeWhere(s: VariableScope): string {
  return s.kind === "app" ? "app_id = $1" : "database_id = $1 AND app_id IS NULL";
}

export async function listVariables(q: Queryable, s: VariableScope): Promise<Variable[]> {
  const { rows } = await q.query<VariableRow>(
    `SELECT id, name, value, app_id, database_id FROM variables WHERE ${scopeWhere(s)} ORDER BY name, id`,
    [s.id],
  );
  return rows.map(toVariable);
}

/** By id or name within the scope. */
export async function findVariable(q: Queryable, s: VariableScope, ref: string): Promise<Variable | null> {
  const { rows } = await q.query<VariableRow>(
    `SELECT id, name, value, app_id, database_id FROM variables
     WHERE ${scopeWhere(s)} AND (id = $2 OR name = $2)`,
    [s.id, ref],
  );
  return rows[0] ? toVariable(rows[0]) : null;
}

/** A user's variable on an app. Throws 23505 if the name exists in the app. */
export async function insertUserVariable(
  q: Queryable,
  appId: string,
  v: { name: string; value: string },
): Promise<Variable> {
  const { rows } = await q.query<VariableRow>(
    `INSERT INTO variables (id, app_id, name, value) VALUES ($1, $2, $3, $4)
     RETURNING id, name, value, app_id, database_id`,
    [newId("var"), appId, v.name, v.value],
  );
  return toVariable(rows[0]!);
}

/** Changes a user's variable; rows written by a database are never touched here. */
export async function updateUserVariable(q: Queryable, id: string, value: string): Promise<Variable | null> {
  const { rows } = await q.query<VariableRow>(
    `UPDATE variables SET value = $2, updated_at = now() WHERE id = $1 AND database_id IS NULL
     RETURNING id, name, value, app_id, database_id`,
    [id, value],
  );
  return rows[0] ? toVariable(rows[0]) : null;
}

export async function deleteUserVariable(q: Queryable, id: string): Promise<boolean> {
  const { rowCount } = await q.query("DELETE FROM variables WHERE id = $1 AND database_id IS NULL", [id]);
  return (rowCount ?? 0) > 0;
}
