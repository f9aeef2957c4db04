// Operations: one row per asynchronous change of a database (provision, change-plan, delete).
// The API inserts them pending; reconcilers move them to running, then done or error.
import { newId } from "../domain/ids.ts";
import type { Queryable } from "./db.ts";

export type OperationType = "provision" | "change-plan" | "delete" | "pitr-restore";
export type OperationStatus = "pending" | "running" | "done" | "error";

export interface Operation {
  id: string;
  /** The scope the operation is addressed under: the app, or the Dedicated database itself. */
  appId: string | null;
  databaseId: string;
  type: string;
  status: OperationStatus;
  targetGeneration: number;
  error: string | null;
  /** The step under way (a rolling resize's), set by the reconciler; empty otherwise. */
  progress: string;
  createdAt: Date;
  finishedAt: Date | null;
}

interface OperationRow {
  id: string;
  app_id: string | null;
  database_id: string;
  type: string;
  status: OperationStatus;
  target_generation: number;
  error: string | null;
  progress: string;
  created_at: Date;
  finished_at: Date | null;
}

const toOperation = (r: OperationRow): Operation => ({
  id: r.id,
  appId: r.app_id,
  databaseId: r.database_id,
  type: r.type,
  status: r.status,
  targetGeneration: r.target_generation,
  error: r.error,
  progress: r.progress,
  createdAt: r.created_at,
  finishedAt: r.finished_at,
});

export async function insertOperation(
  q: Queryable,
  o: { appId: string; databaseId: string; type: OperationType; targetGeneration: number },
): Promise<Operation> {
  const { rows } = await q.query<OperationRow>(
    `INSERT INTO operations (id, app_id, database_id, type, target_generation)
     VALUES ($1, $2, $3, $4, $5) RETURNING *`,
    [newId("op"), o.appId, o.databaseId, o.type, o.targetGeneration],
  );
  return toOperation(rows[0]!);
}

/** An operation, only when it belongs to the given scope (an app or a Dedicated database). */
export async function findOperation(q: Queryable, scopeId: string, id: string): Promise<Operation | null> {
  const { rows } = await q.query<OperationRow>("SELECT * FROM operations WHERE id = $1 AND app_id = $2", [
    id,
    scopeId,
  ]);
  return rows[0] ? toOperation(rows[0]) : null;
}

/** The oldest operation still in progress on a database, if any. */
export async function currentOperation(q: Queryable, databaseId: string): Promise<Operation | null> {
  const { rows } = await q.query<OperationRow>(
    `SELECT * FROM operations WHERE database_id = $1 AND status IN ('pending', 'running')
     ORDER BY created_at, id LIMIT 1`,
    [databaseId],
  );
  return rows[0] ? toOperation(rows[0]) : null;
}

export async function countPendingOperations(q: Queryable, databaseId: string): Promise<number> {
  const { rows } = await q.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM operations WHERE database_id = $1 AND status = 'pending'",
    [databaseId],
  );
  return rows[0]!.n;
}

/** Work has started on every pending operation up to `generation`. Idempotent. */
export async function startOperations(q: Queryable, databaseId: string, generation: number): Promise<number> {
  const { rowCount } = await q.query(
    `UPDATE operations SET status = 'running'
     WHERE database_id = $1 AND status = 'pending' AND target_generation <= $2`,
    [databaseId, generation],
  );
  return rowCount ?? 0;
}

/** Ends every unfinished operation of a database of the given type(s) as done or error. */
export async function finishOperations(
  q: Queryable,
  databaseId: string,
  outcome: { types: OperationType[]; status: "done" | "error"; error?: string },
): Promise<number> {
  const { rowCount } = await q.query(
    `UPDATE operations SET status = $3, error = $4, finished_at = now()
     WHERE database_id = $1 AND type = ANY($2) AND status IN ('pending', 'running')`,
    [databaseId, outcome.types, outcome.status, outcome.error ?? null],
  );
  return rowCount ?? 0;
}
