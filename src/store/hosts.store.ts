// Hosts and their agents' credentials, heartbeats and capacity usage.
import { newId } from "../domain/ids.ts";
import type { HostView } from "../domain/placement.ts";
import type { Queryable } from "./db.ts";
import { hashToken } from "./users.store.ts";

export interface Host {
  id: string;
  name: string;
  region: string;
  az: string;
  pool: "shared" | "dedicated";
  address: string;
  capacityVcpu: number;
  capacityRamMb: number;
  capacityDiskGb: number;
  isolation: Record<string, unknown>;
  status: "registered" | "ready" | "unreachable";
  statusReason: string;
  lastHeartbeatAt: Date | null;
}

interface HostRow {
  id: string;
  name: string;
  region: string;
  az: string;
  pool: "shared" | "dedicated";
  address: string;
  capacity_vcpu: string;
  capacity_ram_mb: number;
  capacity_disk_gb: number;
  isolation: Record<string, unknown>;
  status: Host["status"];
  status_reason: string;
  last_heartbeat_at: Date | null;
}

const toHost = (r: HostRow): Host => ({
  id: r.id,
  name: r.name,
  region: r.region,
  az: r.az,
  pool: r.pool,
  address: r.address,
  capacityVcpu: Number(r.capacity_vcpu),
  capacityRamMb: r.capacity_ram_mb,
  capacityDiskGb: r.capacity_disk_gb,
  isolation: r.isolation,
  status: r.status,
  statusReason: r.status_reason,
  lastHeartbeatAt: r.last_heartbeat_at,
});

const columns = (t: string) =>
  `${t}.id, ${t}.name, ${t}.region, ${t}.az, ${t}.pool, host(${t}.address) AS address, ${t}.capacity_vcpu,
   ${t}.capacity_ram_mb, ${t}.capacity_disk_gb, ${t}.isolation, ${t}.status, ${t}.status_reason,
   ${t}.last_heartbeat_at`;
const COLUMNS = columns("hosts");

export interface HostRegistration {
  name: string;
  region: string;
  az: string;
  pool: "shared" | "dedicated";
  address: string;
  capacityVcpu: number;
  capacityRamMb: number;
  capacityDiskGb: number;
  isolation: Record<string, unknown>;
}

export async function insertHost(q: Queryable, reg: HostRegistration, token: string): Promise<Host> {
  const { rows } = await q.query<HostRow>(
    `INSERT INTO hosts (id, name, region, az, pool, address, capacity_vcpu, capacity_ram_mb, capacity_disk_gb,
                        isolation, token_hash)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING ${COLUMNS}`,
    [
      newId("host"),
      reg.name,
      reg.region,
      reg.az,
      reg.pool,
      reg.address,
      reg.capacityVcpu,
      reg.capacityRamMb,
      reg.capacityDiskGb,
      JSON.stringify(reg.isolation),
      hashToken(token),
    ],
  );
  return toHost(rows[0]!);
}

/** Updates what an agent may change about its host when it starts again. */
export async function updateHostRegistration(q: Queryable, id: string, reg: HostRegistration): Promise<Host> {
  const { rows } = await q.query<HostRow>(
    `UPDATE hosts SET address = $2, capacity_vcpu = $3, capacity_ram_mb = $4, capacity_disk_gb = $5,
            isolation = $6 WHERE id = $1 RETURNING ${COLUMNS}`,
    [id, reg.address, reg.capacityVcpu, reg.capacityRamMb, reg.capacityDiskGb, JSON.stringify(reg.isolation)],
  );
  return toHost(rows[0]!);
}

export async function findHostByToken(q: Queryable, token: string): Promise<Host | null> {
  const { rows } = await q.query<HostRow>(`SELECT ${COLUMNS} FROM hosts WHERE token_hash = $1`, [
    hashToken(token),
  ]);
  return rows[0] ? toHost(rows[0]) : null;
}

export async function findHostByName(q: Queryable, name: string): Promise<Host | null> {
  const { rows } = await q.query<HostRow>(`SELECT ${COLUMNS} FROM hosts WHERE name = $1`, [name]);
  return rows[0] ? toHost(rows[0]) : null;
}

export async function getHost(q: Queryable, id: string): Promise<Host | null> {
  const { rows } = await q.query<HostRow>(`SELECT ${COLUMNS} FROM hosts WHERE id = $1`, [id]);
  return rows[0] ? toHost(rows[0]) : null;
}

export async function listHosts(q: Queryable): Promise<Host[]> {
  const { rows } = await q.query<HostRow>(`SELECT ${COLUMNS} FROM hosts ORDER BY region, az, name`);
  return rows.map(toHost);
}

/** Records a heartbeat; returns true when the host was not ready before (it came back). */
export async function heartbeat(q: Queryable, id: string): Promise<boolean> {
  const { rows } = await q.query<{ was: string }>(
    `UPDATE hosts h SET last_heartbeat_at = now(), status = 'ready', status_reason = ''
     FROM (SELECT status AS was FROM hosts WHERE id = $1 FOR UPDATE) prev
     WHERE h.id = $1 RETURNING prev.was`,
    [id],
  );
  return rows[0]?.was !== "ready";
}

/** Marks hosts silent for longer than `silenceMs` unreachable; returns their ids. */
export async function markSilentHostsUnreachable(q: Queryable, silenceMs: number): Promise<string[]> {
  const { rows } = await q.query<{ id: string }>(
    `UPDATE hosts SET status = 'unreachable',
            status_reason = 'no heartbeat since ' || to_char(last_heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
     WHERE status = 'ready' AND last_heartbeat_at < now() - $1 * interval '1 millisecond'
     RETURNING id`,
    [silenceMs],
  );
  return rows.map((r) => r.id);
}

/** Hosts with what their placed nodes already use, for the placement rules. */
export async function hostViews(q: Queryable, excludeDatabaseId: string): Promise<HostView[]> {
  const { rows } = await q.query<
    HostRow & { used_vcpu: string; used_ram_mb: number; used_disk_gb: number; node_count: number }
  >(
    `SELECT ${columns("h")},
       coalesce(sum((i.spec->'limits'->>'vcpu')::numeric), 0) AS used_vcpu,
       coalesce(sum((i.spec->'limits'->>'memoryMb')::int), 0)::int AS used_ram_mb,
       coalesce(sum((i.spec->'limits'->>'diskGb')::int), 0)::int AS used_disk_gb,
       count(i.id)::int AS node_count
     FROM hosts h
     LEFT JOIN instances i ON i.host_id = h.id AND i.kind = 'node' AND i.status <> 'removed'
       AND i.database_id <> $1
     GROUP BY h.id ORDER BY h.name`,
    [excludeDatabaseId],
  );
  return rows.map((r) => ({
    id: r.id,
    name: r.name,
    region: r.region,
    az: r.az,
    pool: r.pool,
    ready: r.status === "ready",
    capacityVcpu: Number(r.capacity_vcpu),
    capacityRamMb: r.capacity_ram_mb,
    capacityDiskGb: r.capacity_disk_gb,
    usedVcpu: Number(r.used_vcpu),
    usedRamMb: r.used_ram_mb,
    usedDiskGb: r.used_disk_gb,
    nodeCount: r.node_count,
  }));
}
