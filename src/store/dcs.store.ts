// The region's etcd cluster (Patroni's DCS): its members, run by agents like instances, and
// the secrets of each HA cluster (its DCS user, replication and rewind roles, REST user).
import { newId, randomSecret } from "../domain/ids.ts";
import type { Queryable } from "./db.ts";
import type { Instance, InstanceReport, InstanceStatus } from "./instances.store.ts";

export interface DcsCluster {
  region: string;
  token: string;
  rootPassword: string;
  authEnabled: boolean;
}

export interface DcsMember {
  id: string;
  region: string;
  hostId: string;
  name: string;
  spec: Record<string, unknown>;
  specGeneration: number;
  observedGeneration: number;
  status: InstanceStatus;
  statusMessage: string;
}

interface MemberRow {
  id: string;
  region: string;
  host_id: string;
  name: string;
  spec: Record<string, unknown>;
  spec_generation: number;
  observed_generation: number;
  status: InstanceStatus;
  status_message: string;
}

const toMember = (r: MemberRow): DcsMember => ({
  id: r.id,
  region: r.region,
  hostId: r.host_id,
  name: r.name,
  spec: r.spec,
  specGeneration: r.spec_generation,
  observedGeneration: r.observed_generation,
  status: r.status,
  statusMessage: r.status_message,
});

/** The region's cluster record, created on first use (root password generated once). */
export async function ensureDcsCluster(q: Queryable, region: string): Promise<DcsCluster> {
  await q.query(
    `INSERT INTO dcs_clusters (region, token, root_password) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
    [region, `cellar-${region}-${randomSecret(8).toLowerCase()}`, randomSecret(40)],
  );
  const { rows } = await q.query<{ token: string; root_password: string; auth_enabled: boolean }>(
    "SELECT token, root_password, auth_enabled FROM dcs_clusters WHERE region = $1",
    [region],
  );
  const r = rows[0]!;
  return { region, token: r.token, rootPassword: r.root_password, authEnabled: r.auth_enabled };
}

export async function markDcsAuthEnabled(q: Queryable, region: string): Promise<void> {
  await q.query("UPDATE dcs_clusters SET auth_enabled = true WHERE region = $1", [region]);
}

export async function dcsMembersOfRegion(q: Queryable, region: string): Promise<DcsMember[]> {
  const { rows } = await q.query<MemberRow>("SELECT * FROM dcs_members WHERE region = $1 ORDER BY name", [
    region,
  ]);
  return rows.map(toMember);
}

/** Inserts the members of a forming cluster, all or none (another controller may race). */
export async function insertDcsMembers(
  q: Queryable,
  region: string,
  members: Array<{ id: string; hostId: string; name: string; spec: object }>,
): Promise<void> {
  for (const m of members) {
    await q.query(`INSERT INTO dcs_members (id, region, host_id, name, spec) VALUES ($1, $2, $3, $4, $5)`, [
      m.id,
      region,
      m.hostId,
      m.name,
      JSON.stringify(m.spec),
    ]);
  }
}

export const newDcsMemberId = () => newId("inst");

/** A member's new spec: a new generation for its agent to apply. */
export async function updateDcsMemberSpec(q: Queryable, id: string, spec: object): Promise<void> {
  await q.query("UPDATE dcs_members SET spec = $2, spec_generation = spec_generation + 1 WHERE id = $1", [
    id,
    JSON.stringify(spec),
  ]);
}

/** The members a host runs, shaped as instances for the agent protocol. */
export async function dcsMembersOfHost(q: Queryable, hostId: string): Promise<Instance[]> {
  const { rows } = await q.query<MemberRow & { port: number }>(
    "SELECT *, (spec->>'clientPort')::int AS port FROM dcs_members WHERE host_id = $1 ORDER BY id",
    [hostId],
  );
  return rows.map((r) => ({
    id: r.id,
    databaseId: "",
    hostId: r.host_id,
    kind: "etcd",
    ordinal: 0,
    port: r.port,
    extraPort: null,
    spec: r.spec,
    specGeneration: r.spec_generation,
    desiredState: "running",
    observedGeneration: r.observed_generation,
    status: r.status,
    statusMessage: r.status_message,
    role: "",
    usage: {},
    observedAt: null,
  }));
}

/** Applies the agent's report to its members; returns the regions whose DCS changed. */
export async function applyDcsReport(
  q: Queryable,
  hostId: string,
  reports: InstanceReport[],
): Promise<string[]> {
  const changed = new Set<string>();
  for (const r of reports) {
    const { rows } = await q.query<{ region: string; changed: boolean }>(
      `UPDATE dcs_members m SET observed_generation = $3, status = $4, status_message = $5, observed_at = now()
       FROM (SELECT id, (observed_generation, status, status_message) IS DISTINCT FROM ($3, $4, $5) AS changed
             FROM dcs_members WHERE id = $1 AND host_id = $2 FOR UPDATE) prev
       WHERE m.id = prev.id
       RETURNING m.region, prev.changed`,
      [r.id, hostId, r.observedGeneration, r.status, r.statusMessage.slice(0, 2000)],
    );
    if (rows[0]?.changed) changed.add(rows[0].region);
  }
  return [...changed];
}

/** Databases of a region that may wait on its DCS. */
export async function databasesWaitingInRegion(q: Queryable, region: string): Promise<string[]> {
  const { rows } = await q.query<{ id: string }>(
    `SELECT id FROM databases WHERE region = $1 AND deleted_at IS NULL AND phase <> 'running'`,
    [region],
  );
  return rows.map((r) => r.id);
}

export interface HaSecrets {
  dcsUser: string;
  dcsPassword: string;
  replicationPassword: string;
  rewindPassword: string;
  restPassword: string;
  dcsUserCreated: boolean;
}

export async function ensureHaSecrets(q: Queryable, databaseId: string): Promise<HaSecrets> {
  await q.query(
    `INSERT INTO database_ha_secrets (database_id, dcs_user, dcs_password, replication_password, rewind_password, rest_password)
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
    [
      databaseId,
      `cluster-${databaseId}`,
      randomSecret(40),
      randomSecret(40),
      randomSecret(40),
      randomSecret(40),
    ],
  );
  return (await haSecrets(q, databaseId))!;
}

export async function haSecrets(q: Queryable, databaseId: string): Promise<HaSecrets | null> {
  const { rows } = await q.query<{
    dcs_user: string;
    dcs_password: string;
    replication_password: string;
    rewind_password: string;
    rest_password: string;
    dcs_user_created: boolean;
  }>("SELECT * FROM database_ha_secrets WHERE database_id = $1", [databaseId]);
  const r = rows[0];
  if (!r) return null;
  return {
    dcsUser: r.dcs_user,
    dcsPassword: r.dcs_password,
    replicationPassword: r.replication_password,
    rewindPassword: r.rewind_password,
    restPassword: r.rest_password,
    dcsUserCreated: r.dcs_user_created,
  };
}

export async function markDcsUserCreated(q: Queryable, databaseId: string, created: boolean): Promise<void> {
  await q.query("UPDATE database_ha_secrets SET dcs_user_created = $2 WHERE database_id = $1", [
    databaseId,
    created,
  ]);
}
