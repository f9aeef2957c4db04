// Network exposure of databases: features, firewall rules, public addresses, Dedicated
// networks. A change is a spec change: it bumps the database's generation in the same
// transaction, and the reconciler hands the new specs to the agents.
import { randomBytes } from "node:crypto";
import { NotFoundError, ValidationError } from "../domain/errors.ts";
import {
  featureStatus,
  MAX_FIREWALL_RULES,
  type FeatureName,
  type FeatureStatus,
  type FirewallRuleInput,
  type PublicLayout,
} from "../domain/network-rules.ts";
import { formatIpv4 } from "../domain/ipv4.ts";
import { isPgError, UNIQUE_VIOLATION, type Queryable } from "./db.ts";
import { enqueueReconcile } from "./reconcile-queue.store.ts";

export interface FeatureRow {
  name: FeatureName;
  state: "active" | "removing";
  generation: number;
}

export interface FirewallRule {
  id: string;
  databaseId: string;
  type: "custom_range" | "managed_range";
  cidr: string | null;
  label: string | null;
  rangeId: string | null;
  createdAt: Date;
}

/** The database's spec changed: a new generation, and a pass soon. Call inside its lock. */
export async function bumpGeneration(q: Queryable, databaseId: string): Promise<number> {
  const { rows } = await q.query<{ generation: number }>(
    "UPDATE databases SET generation = generation + 1, updated_at = now() WHERE id = $1 RETURNING generation",
    [databaseId],
  );
  await enqueueReconcile(q, databaseId);
  return rows[0]!.generation;
}

export async function featureRows(q: Queryable, databaseId: string): Promise<FeatureRow[]> {
  const { rows } = await q.query<FeatureRow>(
    "SELECT name, state, generation FROM database_features WHERE database_id = $1 ORDER BY name",
    [databaseId],
  );
  return rows;
}

/** Features that are on, or being turned on (what the specs carry). */
export async function activeFeatures(q: Queryable, databaseId: string): Promise<Set<FeatureName>> {
  return new Set((await featureRows(q, databaseId)).filter((f) => f.state === "active").map((f) => f.name));
}

export async function setFeatureState(
  q: Queryable,
  databaseId: string,
  name: FeatureName,
  state: "active" | "removing",
  generation: number,
): Promise<void> {
  await q.query(
    `INSERT INTO database_features (database_id, name, state, generation) VALUES ($1, $2, $3, $4)
     ON CONFLICT (database_id, name) DO UPDATE SET state = $3, generation = $4, updated_at = now()`,
    [databaseId, name, state, generation],
  );
}

/**
 * Whether every live instance runs `generation` or later (as its agent reported), and
 * whether one of them failed on the way.
 */
export async function generationProgress(
  q: Queryable,
  databaseId: string,
  generation: number,
): Promise<{ applied: boolean; failed: boolean }> {
  const { rows } = await q.query<{ total: number; applied: number; failed: number }>(
    `SELECT count(*)::int AS total,
            count(*) FILTER (WHERE status = 'running' AND observed_generation >= $2)::int AS applied,
            count(*) FILTER (WHERE status = 'failed' AND spec_generation >= $2)::int AS failed
     FROM instances WHERE database_id = $1 AND desired_state <> 'deleted' AND status <> 'removed'`,
    [databaseId, generation],
  );
  const r = rows[0]!;
  return { applied: r.total > 0 && r.applied === r.total, failed: r.failed > 0 };
}

export interface FeatureView {
  name: FeatureName;
  status: FeatureStatus;
}

/** The reference's `features` of a database: statuses as observed on its instances. */
export async function featureViews(
  q: Queryable,
  db: { id: string; model: "shared" | "dedicated" },
): Promise<FeatureView[]> {
  const views: FeatureView[] = [];
  // Dedicated databases refuse plaintext from their first start (reference §3.7).
  if (db.model === "dedicated") views.push({ name: "force-ssl", status: "ACTIVATED" });
  for (const f of await featureRows(q, db.id)) {
    const status = featureStatus(f.state, await generationProgress(q, db.id, f.generation));
    if (status) views.push({ name: f.name, status });
  }
  return views;
}

interface RuleRow {
  id: string;
  database_id: string;
  type: FirewallRule["type"];
  cidr: string | null;
  label: string | null;
  range_id: string | null;
  created_at: Date;
}

const toRule = (r: RuleRow): FirewallRule => ({
  id: r.id,
  databaseId: r.database_id,
  type: r.type,
  cidr: r.cidr,
  label: r.label,
  rangeId: r.range_id,
  createdAt: r.created_at,
});

export async function firewallRules(q: Queryable, databaseId: string): Promise<FirewallRule[]> {
  const { rows } = await q.query<RuleRow>(
    "SELECT * FROM firewall_rules WHERE database_id = $1 ORDER BY created_at, id",
    [databaseId],
  );
  return rows.map(toRule);
}

/** Adds a rule; call with the database row locked (the count of 30 holds under concurrency). */
export async function insertFirewallRule(
  q: Queryable,
  databaseId: string,
  input: FirewallRuleInput,
): Promise<FirewallRule> {
  const { rows: count } = await q.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM firewall_rules WHERE database_id = $1",
    [databaseId],
  );
  if (count[0]!.n >= MAX_FIREWALL_RULES) {
    throw ValidationError.field(
      "firewall_rules",
      `a database has at most ${MAX_FIREWALL_RULES} rules: delete one first (a wider range can replace several)`,
    );
  }
  const id = `fw-${randomBytes(10).toString("hex")}`;
  const custom = input.type === "custom_range" ? input : null;
  await q.query("SAVEPOINT insert_rule");
  try {
    const { rows } = await q.query<RuleRow>(
      `INSERT INTO firewall_rules (id, database_id, type, cidr, label, range_id)
       VALUES ($1, $2, $3, $4, $5, $6) RETURNING *`,
      [
        id,
        databaseId,
        input.type,
        custom?.cidr ?? null,
        custom?.label ?? null,
        input.type === "managed_range" ? input.rangeId : null,
      ],
    );
    await q.query("RELEASE SAVEPOINT insert_rule");
    return toRule(rows[0]!);
  } catch (err) {
    await q.query("ROLLBACK TO SAVEPOINT insert_rule");
    if (!isPgError(err, UNIQUE_VIOLATION)) throw err;
    throw custom
      ? ValidationError.field("cidr", `${custom.cidr} is already allowed by another rule of this database`)
      : ValidationError.field("range_id", "this managed range is already allowed on this database");
  }
}

export async function deleteFirewallRule(q: Queryable, databaseId: string, ruleId: string): Promise<void> {
  const { rowCount } = await q.query("DELETE FROM firewall_rules WHERE database_id = $1 AND id = $2", [
    databaseId,
    ruleId,
  ]);
  if (!rowCount) throw new NotFoundError("firewall_rule");
}

/** Gives back the public addresses of deleted databases. */
async function releaseDeleted(q: Queryable): Promise<void> {
  await q.query(
    `DELETE FROM public_addresses p USING databases d
     WHERE p.database_id = d.id AND d.deleted_at IS NOT NULL`,
  );
}

/** The public address of a host or a database, allocated on first use (lowest free one). */
export async function publicAddressOf(
  q: Queryable,
  layout: PublicLayout,
  owner: { hostId: string } | { databaseId: string },
): Promise<string> {
  const [column, id] = "hostId" in owner ? ["host_id", owner.hostId] : ["database_id", owner.databaseId];
  const find = () =>
    q.query<{ address: string }>(
      `SELECT host(address) AS address FROM public_addresses WHERE ${column} = $1`,
      [id],
    );
  const existing = (await find()).rows[0];
  if (existing) return existing.address;
  await releaseDeleted(q);
  const base = formatIpv4(layout.network.network);
  for (let attempt = 0; attempt < 20; attempt++) {
    const { rows } = await q.query<{ address: string }>(
      `SELECT host($1::inet + o) AS address FROM generate_series($2::int, $3::int) o
       WHERE NOT EXISTS (SELECT 1 FROM public_addresses WHERE address = $1::inet + o)
       ORDER BY o LIMIT 1`,
      [base, layout.firstOffset, layout.lastOffset],
    );
    const address = rows[0]?.address;
    if (!address) throw new Error(`no public address left in ${base}/${layout.network.prefix}`);
    // Another controller may take the same address meanwhile: the primary key decides.
    const { rowCount } = await q.query(
      `INSERT INTO public_addresses (address, ${column}) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
      [address, id],
    );
    if (rowCount) return address;
    const mine = (await find()).rows[0];
    if (mine) return mine.address;
  }
  throw new Error("could not allocate a public address");
}

export interface DatabaseNetwork {
  ipRange: string;
  publicPort: number;
}

/** First /25 handed out to Dedicated databases that gave no ip_range. */
const ALLOCATED_BASE = "10.240.0.0";
const ALLOCATED_COUNT = 8192; // 10.240.0.0/12 in /25s
export const PUBLIC_PORT = 5432;

/** The database's network: its ip_range, or a /25 of its own allocated on first use. */
export async function databaseNetworkOf(
  q: Queryable,
  db: { id: string; ipRange: string | null },
): Promise<DatabaseNetwork> {
  const read = () =>
    q.query<{ ip_range: string; public_port: number }>(
      "SELECT ip_range::text, public_port FROM database_networks WHERE database_id = $1",
      [db.id],
    );
  const existing = (await read()).rows[0];
  if (existing) return { ipRange: existing.ip_range, publicPort: existing.public_port };
  if (db.ipRange) {
    await q.query(
      `INSERT INTO database_networks (database_id, ip_range, allocated, public_port) VALUES ($1, $2, false, $3)
       ON CONFLICT DO NOTHING`,
      [db.id, db.ipRange, PUBLIC_PORT],
    );
  } else {
    // Ranges of deleted databases go back to the pool.
    await q.query(
      `DELETE FROM database_networks n USING databases d WHERE n.database_id = d.id AND d.deleted_at IS NOT NULL`,
    );
    for (let attempt = 0; attempt < 20; attempt++) {
      const { rowCount } = await q.query(
        `INSERT INTO database_networks (database_id, ip_range, allocated, public_port)
         SELECT $1, set_masklen($2::inet + n * 128, 25)::cidr, true, $4 FROM generate_series(0, $3::int - 1) n
         WHERE NOT EXISTS (SELECT 1 FROM database_networks
                           WHERE allocated AND ip_range = set_masklen($2::inet + n * 128, 25)::cidr)
         ORDER BY n LIMIT 1
         ON CONFLICT DO NOTHING`,
        [db.id, ALLOCATED_BASE, ALLOCATED_COUNT, PUBLIC_PORT],
      );
      if (rowCount || (await read()).rows[0]) break;
    }
  }
  const row = (await read()).rows[0];
  if (!row) throw new Error(`could not allocate a network range for ${db.id}`);
  return { ipRange: row.ip_range, publicPort: row.public_port };
}

/** Whether the host's agent said it can make network namespaces (its isolation report). */
export function hostMakesNetworks(isolation: Record<string, unknown>): boolean {
  const summary = isolation.summary;
  return (
    Array.isArray(summary) &&
    summary.some((l) => typeof l === "string" && /^network namespaces: yes\b/.test(l))
  );
}
