// Planned switchovers of HA clusters: requested by the reconciler, carried out by the agent
// of the leader's host through Patroni, finished by the reconciler once the agents report
// the candidate as leader. At most one is in flight per database (a partial unique index).
import { createHash, randomBytes } from "node:crypto";
import type { Queryable } from "./db.ts";
import { isPgError, UNIQUE_VIOLATION } from "./db.ts";

export type SwitchoverStatus = "requested" | "done" | "failed";

export interface Switchover {
  id: string;
  databaseId: string;
  operationId: string | null;
  leaderId: string;
  candidateId: string;
  reason: string;
  status: SwitchoverStatus;
  error: string | null;
  requestedAt: Date;
  finishedAt: Date | null;
}

interface SwitchoverRow {
  id: string;
  database_id: string;
  operation_id: string | null;
  leader_id: string;
  candidate_id: string;
  reason: string;
  status: SwitchoverStatus;
  error: string | null;
  requested_at: Date;
  finished_at: Date | null;
}

const toSwitchover = (r: SwitchoverRow): Switchover => ({
  id: r.id,
  databaseId: r.database_id,
  operationId: r.operation_id,
  leaderId: r.leader_id,
  candidateId: r.candidate_id,
  reason: r.reason,
  status: r.status,
  error: r.error,
  requestedAt: r.requested_at,
  finishedAt: r.finished_at,
});

/**
 * Asks for a switchover from `leaderId` to `candidateId`. Idempotent: when one is already
 * in flight for the database, that one is returned and nothing new is asked.
 */
export async function requestSwitchover(
  q: Queryable,
  s: {
    databaseId: string;
    leaderId: string;
    candidateId: string;
    reason: string;
    operationId?: string | null;
  },
): Promise<Switchover> {
  try {
    const { rows } = await q.query<SwitchoverRow>(
      `INSERT INTO database_switchovers (id, database_id, operation_id, leader_id, candidate_id, reason)
       VALUES ($1, $2, $3, $4, $5, $6) RETURNING *`,
      [
        `sw-${randomBytes(10).toString("hex")}`,
        s.databaseId,
        s.operationId ?? null,
        s.leaderId,
        s.candidateId,
        s.reason.slice(0, 200),
      ],
    );
    return toSwitchover(rows[0]!);
  } catch (err) {
    if (!isPgError(err, UNIQUE_VIOLATION)) throw err;
    const current = await switchoverInFlight(q, s.databaseId);
    if (!current) throw err;
    return current;
  }
}

export async function switchoverInFlight(q: Queryable, databaseId: string): Promise<Switchover | null> {
  const { rows } = await q.query<SwitchoverRow>(
    "SELECT * FROM database_switchovers WHERE database_id = $1 AND status = 'requested'",
    [databaseId],
  );
  return rows[0] ? toSwitchover(rows[0]) : null;
}

export async function switchoversOfDatabase(q: Queryable, databaseId: string): Promise<Switchover[]> {
  const { rows } = await q.query<SwitchoverRow>(
    "SELECT * FROM database_switchovers WHERE database_id = $1 ORDER BY requested_at, id",
    [databaseId],
  );
  return rows.map(toSwitchover);
}

/** Ends a switchover in flight; returns false when it was no longer in flight. */
export async function finishSwitchover(
  q: Queryable,
  id: string,
  outcome: { status: "done" } | { status: "failed"; error: string },
): Promise<boolean> {
  const { rowCount } = await q.query(
    `UPDATE database_switchovers SET status = $2, error = $3, finished_at = now()
     WHERE id = $1 AND status = 'requested'`,
    [id, outcome.status, outcome.status === "failed" ? outcome.error.slice(0, 2000) : null],
  );
  return (rowCount ?? 0) > 0;
}

/** What an agent is told about a switchover, with the instances of the database it concerns. */
export interface SwitchoverOrder {
  id: string;
  leader: string;
  candidate: string;
}

/** The switchovers in flight on the databases of the given instances, by database id. */
export async function switchoverOrders(
  q: Queryable,
  databaseIds: string[],
): Promise<Map<string, SwitchoverOrder>> {
  if (databaseIds.length === 0) return new Map();
  const { rows } = await q.query<SwitchoverRow>(
    "SELECT * FROM database_switchovers WHERE database_id = ANY($1) AND status = 'requested'",
    [[...new Set(databaseIds)]],
  );
  return new Map(
    rows.map((r) => [r.database_id, { id: r.id, leader: r.leader_id, candidate: r.candidate_id }]),
  );
}

/** The desired set's version with the switchovers folded in: a new one wakes the long poll. */
export function versionWithSwitchovers(version: string, orders: Iterable<SwitchoverOrder>): string {
  const ids = [...orders].map((o) => o.id).sort();
  if (ids.length === 0) return version;
  return createHash("sha256")
    .update(`${version};${ids.join(",")}`)
    .digest("hex")
    .slice(0, 16);
}

/** The progress sentence of a database's running operations (a rolling resize's step). */
export async function setOperationProgress(
  q: Queryable,
  databaseId: string,
  progress: string,
): Promise<void> {
  await q.query(
    `UPDATE operations SET progress = $2 WHERE database_id = $1 AND status = 'running' AND progress <> $2`,
    [databaseId, progress.slice(0, 500)],
  );
}
