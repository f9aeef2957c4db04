// Instances (database nodes and gateways) placed on hosts: spec from the controller,
// observed state from the host's agent.
import { createHash } from "node:crypto";
import { newId } from "../domain/ids.ts";
import type { Queryable } from "./db.ts";
import { isPgError, UNIQUE_VIOLATION } from "./db.ts";

export type InstanceKind = "node" | "gateway" | "etcd";
export type DesiredState = "running" | "stopped" | "deleted";
export type InstanceStatus =
  "booting" | "running" | "restarting" | "stopped" | "removing" | "removed" | "failed";

export interface Instance {
  id: string;
  databaseId: string;
  hostId: string;
  kind: InstanceKind;
  ordinal: number;
  port: number;
  /** A node's second port (Patroni's REST API); null when it has none. */
  extraPort: number | null;
  spec: Record<string, unknown>;
  specGeneration: number;
  desiredState: DesiredState;
  observedGeneration: number;
  status: InstanceStatus;
  statusMessage: string;
  role: string;
  usage: Record<string, number>;
  observedAt: Date | null;
}

interface InstanceRow {
  id: string;
  database_id: string;
  host_id: string;
  kind: InstanceKind;
  ordinal: number;
  port: number;
  extra_port: number | null;
  spec: Record<string, unknown>;
  spec_generation: number;
  desired_state: DesiredState;
  observed_generation: number;
  status: InstanceStatus;
  status_message: string;
  role: string;
  usage: Record<string, number>;
  observed_at: Date | null;
}

const toInstance = (r: InstanceRow): Instance => ({
  id: r.id,
  databaseId: r.database_id,
  hostId: r.host_id,
  kind: r.kind,
  ordinal: r.ordinal,
  port: r.port,
  extraPort: r.extra_port,
  spec: r.spec,
  specGeneration: r.spec_generation,
  desiredState: r.desired_state,
  observedGeneration: r.observed_generation,
  status: r.status,
  statusMessage: r.status_message,
  role: r.role,
  usage: r.usage,
  observedAt: r.observed_at,
});

/** Ports handed to instances on a host; second ports (Patroni's REST API) come from EXTRA_PORT_RANGE. */
export const PORT_RANGE = { first: 20000, last: 29999 };
export const EXTRA_PORT_RANGE = { first: 30000, last: 39999 };

export async function instancesOfDatabase(q: Queryable, databaseId: string): Promise<Instance[]> {
  const { rows } = await q.query<InstanceRow>(
    "SELECT * FROM instances WHERE database_id = $1 ORDER BY kind DESC, ordinal",
    [databaseId],
  );
  return rows.map(toInstance);
}

export async function instancesOfHost(q: Queryable, hostId: string): Promise<Instance[]> {
  const { rows } = await q.query<InstanceRow>("SELECT * FROM instances WHERE host_id = $1 ORDER BY id", [
    hostId,
  ]);
  return rows.map(toInstance);
}

/** A digest of what a host should run: agents long-poll until it changes. */
export function desiredVersion(instances: Instance[]): string {
  const h = createHash("sha256");
  for (const i of instances) h.update(`${i.id}:${i.specGeneration}:${i.desiredState};`);
  return h.digest("hex").slice(0, 16);
}

/**
 * Creates the instance for a slot, on the lowest free port of its host. Idempotent: an
 * existing (database, kind, ordinal) instance is returned unchanged.
 */
export async function ensureInstance(
  q: Queryable,
  slot: { databaseId: string; hostId: string; kind: InstanceKind; ordinal: number },
  spec: (port: number, extraPort: number | null, id: string) => object,
  specGeneration: number,
  opts: { extraPort?: boolean } = {},
): Promise<Instance> {
  const { rows: existing } = await q.query<InstanceRow>(
    "SELECT * FROM instances WHERE database_id = $1 AND kind = $2 AND ordinal = $3",
    [slot.databaseId, slot.kind, slot.ordinal],
  );
  if (existing[0]) return toInstance(existing[0]);
  for (let attempt = 0; attempt < 20; attempt++) {
    const { rows: free } = await q.query<{ port: number }>(
      `SELECT p AS port FROM generate_series($2::int, $3::int) p
       WHERE NOT EXISTS (SELECT 1 FROM instances WHERE host_id = $1 AND port = p) ORDER BY p LIMIT 1`,
      [slot.hostId, PORT_RANGE.first, PORT_RANGE.last],
    );
    const port = free[0]?.port;
    if (port === undefined) throw new Error(`host ${slot.hostId} has no free port left`);
    const extraPort = opts.extraPort ? await freeExtraPort(q, slot.hostId) : null;
    const id = newId("inst");
    try {
      const { rows } = await q.query<InstanceRow>(
        `INSERT INTO instances (id, database_id, host_id, kind, ordinal, port, spec, spec_generation, extra_port)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *`,
        [
          id,
          slot.databaseId,
          slot.hostId,
          slot.kind,
          slot.ordinal,
          port,
          JSON.stringify(spec(port, extraPort, id)),
          specGeneration,
          extraPort,
        ],
      );
      return toInstance(rows[0]!);
    } catch (err) {
      // Another controller took the port (or the slot) first: look again.
      if (!isPgError(err, UNIQUE_VIOLATION)) throw err;
      const { rows: again } = await q.query<InstanceRow>(
        "SELECT * FROM instances WHERE database_id = $1 AND kind = $2 AND ordinal = $3",
        [slot.databaseId, slot.kind, slot.ordinal],
      );
      if (again[0]) return toInstance(again[0]);
    }
  }
  throw new Error(`could not allocate a port on host ${slot.hostId}`);
}

async function freeExtraPort(q: Queryable, hostId: string): Promise<number> {
  const { rows } = await q.query<{ port: number }>(
    `SELECT p AS port FROM generate_series($2::int, $3::int) p
     WHERE NOT EXISTS (SELECT 1 FROM instances WHERE host_id = $1 AND extra_port = p) ORDER BY p LIMIT 1`,
    [hostId, EXTRA_PORT_RANGE.first, EXTRA_PORT_RANGE.last],
  );
  if (rows[0] === undefined) throw new Error(`host ${hostId} has no free second port left`);
  return rows[0].port;
}

export async function updateInstanceSpec(
  q: Queryable,
  id: string,
  spec: object,
  specGeneration: number,
): Promise<void> {
  await q.query(
    "UPDATE instances SET spec = $2, spec_generation = $3 WHERE id = $1 AND spec_generation < $3",
    [id, JSON.stringify(spec), specGeneration],
  );
}

export async function setDesiredState(q: Queryable, databaseId: string, state: DesiredState): Promise<void> {
  await q.query("UPDATE instances SET desired_state = $2 WHERE database_id = $1 AND desired_state <> $2", [
    databaseId,
    state,
  ]);
}

export interface InstanceReport {
  id: string;
  observedGeneration: number;
  status: InstanceStatus;
  statusMessage: string;
  role: string;
  usage: Record<string, number>;
  /** A node's data dir: encrypted at rest (policy read back, key present) or why not. */
  atRest?: { encrypted: boolean; detail: string } | null;
}

/**
 * Applies an agent's report. Only instances placed on that host are touched (an agent can
 * never write another host's state). Removed instances that were meant to go are deleted.
 * Returns the ids of databases whose instances changed.
 */
export async function applyReport(
  q: Queryable,
  hostId: string,
  reports: InstanceReport[],
  promotions: Array<{ databaseId: string; instanceId: string }> = [],
): Promise<string[]> {
  const changed = new Set<string>();
  // One statement for the whole report: a full host reports hundreds of instances every 2 s.
  const byId = new Map(reports.map((r) => [r.id, r]));
  const list = [...byId.values()];
  if (list.length > 0) {
    const { rows } = await q.query<{ id: string; database_id: string; changed: boolean; prev_role: string }>(
      `UPDATE instances i SET observed_generation = r.gen, status = r.status, status_message = r.msg,
              role = r.role, usage = r.usage, observed_at = now(),
              encrypted_at_rest = COALESCE(r.enc, i.encrypted_at_rest),
              at_rest_note = CASE WHEN r.enc IS NULL THEN i.at_rest_note ELSE r.enc_note END
       FROM (SELECT p.id, p.role AS prev_role, n.gen, n.status, n.msg, n.role, n.usage, n.enc, n.enc_note,
                    (p.observed_generation, p.status, p.status_message, p.role)
                      IS DISTINCT FROM (n.gen, n.status, n.msg, n.role) AS changed
             FROM unnest($2::text[], $3::int[], $4::text[], $5::text[], $6::text[], $7::jsonb[],
                         $8::boolean[], $9::text[])
                    AS n(id, gen, status, msg, role, usage, enc, enc_note)
             JOIN instances p ON p.id = n.id AND p.host_id = $1
             ORDER BY p.id
             FOR UPDATE OF p) r
       WHERE i.id = r.id
       RETURNING i.id, i.database_id, r.changed, r.prev_role`,
      [
        hostId,
        list.map((r) => r.id),
        list.map((r) => r.observedGeneration),
        list.map((r) => r.status),
        list.map((r) => r.statusMessage.slice(0, 2000)),
        list.map((r) => r.role),
        list.map((r) => JSON.stringify(r.usage)),
        list.map((r) => r.atRest?.encrypted ?? null),
        list.map((r) => r.atRest?.detail ?? ""),
      ],
    );
    for (const row of rows) {
      if (row.changed) changed.add(row.database_id);
      // A standby that became the leader: a failover or a switchover happened.
      if (row.prev_role === "follower" && byId.get(row.id)?.role === "leader") {
        promotions.push({ databaseId: row.database_id, instanceId: row.id });
      }
    }
  }
  const { rows: gone } = await q.query<{ database_id: string }>(
    `DELETE FROM instances WHERE host_id = $1 AND desired_state = 'deleted' AND status = 'removed'
     RETURNING database_id`,
    [hostId],
  );
  for (const g of gone) changed.add(g.database_id);
  return [...changed];
}
