// Applying the provisioning steps: instances with their specs, spec updates on plan
// change, and the connection check that alone may declare a database running.
import pg from "pg";
import type { Deps } from "../api/deps.ts";
import { findPlan, type Plan } from "../domain/catalog.ts";
import { randomSecret } from "../domain/ids.ts";
import { variableNamesOf } from "../domain/database-views.ts";
import type { Slot } from "../domain/placement.ts";
import type { Queryable } from "../store/db.ts";
import {
  getDatabase,
  lockDatabase,
  scopeIdOf,
  eventAddonData,
  type Database,
} from "../store/databases.store.ts";
import { recordEvent } from "../store/events.store.ts";
import {
  ensureInstance,
  instancesOfDatabase,
  updateInstanceSpec,
  type Instance,
} from "../store/instances.store.ts";
import { finishOperations } from "../store/operations.store.ts";
import {
  databaseUrl,
  gatewaySpec,
  nodeSpec,
  type Credentials,
  type GatewaySpecJson,
  type NodeSpec,
} from "./instance-spec.ts";
import { newId } from "../domain/ids.ts";
import {
  certificateAddresses,
  clientEndpoint,
  loadNetworkPolicy,
  nodeVpcAddress,
  withGatewayNetwork,
  withNodeNetwork,
} from "./network-spec.ts";
import { forkMember, nodeBackupSpec } from "./backup-spec.ts";
import {
  CELLAR_HA_TIMING,
  PATRONI_DEFAULT_TIMING,
  REPLICATION_USER,
  type HaSpec,
} from "../engines/postgresql/patroni-config.ts";
import type { HaSecrets } from "../store/dcs.store.ts";
import { DCS_NAMESPACE } from "./dcs.ts";

/** The protected default user and database: named after the resource id, as the reference does. */
async function ensureCredentials(q: Queryable, db: Database): Promise<Credentials> {
  await q.query(
    `INSERT INTO database_credentials (database_id, username, password, dbname) VALUES ($1, $2, $3, $2)
     ON CONFLICT (database_id) DO NOTHING`,
    // A role name must start with a letter; app names may start with a digit.
    [db.id, /^[a-z]/.test(db.resourceId) ? db.resourceId : `db_${db.resourceId}`, randomSecret(64)],
  );
  const { rows } = await q.query<Credentials>(
    "SELECT username, password, dbname FROM database_credentials WHERE database_id = $1",
    [db.id],
  );
  return rows[0]!;
}

export function planOf(deps: Deps, db: Database): Plan {
  const plan = findPlan(deps.catalog, db.planId);
  if (!plan) throw new Error(`plan ${db.planId} is no longer in the catalog`);
  return plan;
}

export async function hostAddresses(q: Queryable, ids: string[]): Promise<Map<string, string>> {
  const { rows } = await q.query<{ id: string; address: string }>(
    "SELECT id, host(address) AS address FROM hosts WHERE id = ANY($1)",
    [ids],
  );
  return new Map(rows.map((r) => [r.id, r.address]));
}

/** What the nodes of an HA cluster share: where the DCS is, and the cluster's secrets. */
export interface HaContext {
  endpoints: string[];
  /** Where nodes inside network namespaces dial the same members. */
  serviceEndpoints: string[];
  secrets: HaSecrets;
}

/** The HA part of a node's spec: Patroni's identity, DCS access, replication credentials. */
export async function haSpecOf(
  deps: Deps,
  db: Database,
  plan: Plan,
  ha: HaContext,
): Promise<(member: string, restPort: number, inNamespace: boolean) => HaSpec> {
  const dcsTls = await deps.pki.issue(
    db.region,
    { commonName: ha.secrets.dcsUser, nameInOu: true },
    "client",
  );
  const replicationTls = await deps.pki.issue(db.region, { commonName: REPLICATION_USER }, "client");
  const cellarTiming = deps.config.haTiming === "cellar";
  return (member, restPort, inNamespace) => ({
    scope: db.id,
    namespace: DCS_NAMESPACE,
    member,
    restPort,
    restPassword: ha.secrets.restPassword,
    dcs: {
      endpoints: inNamespace ? ha.serviceEndpoints : ha.endpoints,
      user: ha.secrets.dcsUser,
      password: ha.secrets.dcsPassword,
      certPem: dcsTls.certPem,
      keyPem: dcsTls.keyPem,
    },
    replication: {
      password: ha.secrets.replicationPassword,
      certPem: replicationTls.certPem,
      keyPem: replicationTls.keyPem,
    },
    rewindPassword: ha.secrets.rewindPassword,
    synchronous: plan.serviceClass === "enterprise",
    timing: cellarTiming ? CELLAR_HA_TIMING : PATRONI_DEFAULT_TIMING,
    releaseLeaderOnLoss: cellarTiming,
  });
}

/** Creates the instances of a placement (idempotent: existing slots are kept). */
export async function createInstances(
  deps: Deps,
  databaseId: string,
  slots: Slot[],
  ha: HaContext | null = null,
): Promise<void> {
  await deps.db.tx(async (q) => {
    const db = await lockDatabase(q, databaseId);
    if (!db || db.deleteRequestedAt) return;
    const plan = planOf(deps, db);
    const credentials = await ensureCredentials(q, db);
    const addresses = await hostAddresses(
      q,
      slots.map((s) => s.hostId),
    );
    const net = await loadNetworkPolicy(q, deps.config, db, [...addresses.keys()]);
    // TLS passes through the gateways: the certificate names every address a client may dial.
    // Nodes in a database network also dial each other there (replication, rewind, Patroni).
    const vpcNodes = net.vpc
      ? slots.filter((s) => s.kind === "node").map((s) => nodeVpcAddress(net.vpc!.range, s.ordinal))
      : [];
    const tls = await deps.pki.issueServer(db.region, {
      commonName: db.resourceId.replace(/_/g, "-"),
      ipAddresses: [...new Set([...addresses.values(), ...certificateAddresses(net), ...vpcNodes])],
    });
    const haOf = ha ? await haSpecOf(deps, db, plan, ha) : null;
    const backup = await nodeBackupSpec(q, deps, db);
    const nodes: Instance[] = [];
    for (const slot of slots.filter((s) => s.kind === "node")) {
      const address = addresses.get(slot.hostId)!;
      const slotKey = { databaseId, hostId: slot.hostId, kind: "node" as const, ordinal: slot.ordinal };
      const spec = (port: number, restPort: number | null, id: string) => {
        const node = nodeSpec({
          model: db.model,
          plan,
          resourceId: db.resourceId,
          address,
          port,
          tls,
          credentials,
          backup,
        });
        const withNet = withNodeNetwork(node, net, slot.ordinal);
        if (!haOf || restPort === null) return withNet;
        return forkMember({ ...withNet, ha: haOf(id, restPort, net.vpc !== null) }, slot.ordinal);
      };
      nodes.push(await ensureInstance(q, slotKey, spec, db.generation, { extraPort: haOf !== null }));
    }
    const backends = nodes.map((n) => ({
      id: n.id,
      address: addresses.get(n.hostId)!,
      port: n.port,
      ...(n.extraPort !== null ? { patroniPort: n.extraPort } : {}),
    }));
    const checkCa = haOf ? { checkCaPem: deps.pki.ca(db.region).certPem } : {};
    for (const slot of slots.filter((s) => s.kind === "gateway")) {
      const address = addresses.get(slot.hostId)!;
      await ensureInstance(
        q,
        { databaseId, hostId: slot.hostId, kind: "gateway", ordinal: slot.ordinal },
        (port) => {
          const gw = { ...gatewaySpec({ address, port }, backends, plan), ...checkCa };
          return withGatewayNetwork(gw, net, slot.hostId, new Map(nodes.map((n) => [n.id, n.ordinal])));
        },
        db.generation,
      );
    }
  });
}

/** Hands the current plan (a new generation) to every instance, or to `only` these (a rolling update). */
export async function updateInstanceSpecs(
  deps: Deps,
  databaseId: string,
  generation: number,
  only?: ReadonlySet<string>,
): Promise<void> {
  await deps.db.tx(async (q) => {
    const db = await lockDatabase(q, databaseId);
    if (!db || db.generation !== generation) return;
    const plan = planOf(deps, db);
    const instances = await instancesOfDatabase(q, databaseId);
    const net = await loadNetworkPolicy(
      q,
      deps.config,
      db,
      instances.map((i) => i.hostId),
    );
    const ordinals = new Map(instances.filter((i) => i.kind === "node").map((i) => [i.id, i.ordinal]));
    for (const inst of instances) {
      if (inst.specGeneration >= generation || (only && !only.has(inst.id))) continue;
      let spec: object = { ...inst.spec, maxConnections: plan.maxConnections + 20 };
      if (inst.kind === "gateway") {
        spec = withGatewayNetwork(spec as GatewaySpecJson, net, inst.hostId, ordinals);
      }
      if (inst.kind === "node") {
        const old = inst.spec as unknown as NodeSpec;
        spec = nodeSpec({
          model: db.model,
          plan,
          resourceId: db.resourceId,
          address: old.listen.address,
          port: old.listen.port,
          tls: old.tls,
          credentials: old.credentials,
          backup: await nodeBackupSpec(q, deps, db),
        });
        spec = withNodeNetwork(spec as NodeSpec, net, inst.ordinal);
        // An HA node keeps its cluster identity across plan changes; its agent makes the
        // cluster's synchronous mode follow the class (Business <-> Enterprise).
        if (old.ha) spec = { ...spec, ha: { ...old.ha, synchronous: plan.serviceClass === "enterprise" } };
      }
      await updateInstanceSpec(q, inst.id, spec, generation);
    }
  });
}

/** Connects through the first gateway with the protected user, verifying the server certificate. */
async function checkConnection(deps: Deps, db: Database): Promise<string | null> {
  const instances = await instancesOfDatabase(deps.db, db.id);
  const gateway = instances.find((i) => i.kind === "gateway");
  if (!gateway) return "no gateway instance";
  const net = await loadNetworkPolicy(deps.db, deps.config, db, [gateway.hostId]);
  const hostAddress = (await hostAddresses(deps.db, [gateway.hostId])).get(gateway.hostId)!;
  const { address, port } = clientEndpoint(net, { address: hostAddress, port: gateway.port });
  const { rows } = await deps.db.query<Credentials>(
    "SELECT username, password, dbname FROM database_credentials WHERE database_id = $1",
    [db.id],
  );
  const c = rows[0];
  if (!c) return "no credentials";
  const client = new pg.Client({
    host: address,
    port,
    user: c.username,
    password: c.password,
    database: c.dbname,
    ssl: { ca: deps.pki.ca(db.region).certPem, rejectUnauthorized: true },
    connectionTimeoutMillis: 5000,
  });
  // A session the gateway cuts (failover) also emits 'error': unheard, it would crash the controller.
  client.on("error", () => undefined);
  try {
    await client.connect();
    await client.query("SELECT 1");
    return null;
  } catch (err) {
    return `TLS connection through the gateway ${address}:${port} failed: ${(err as Error).message}`;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Writes the connection URL variables the database owns (never another database's). */
async function writeUrlVariables(q: Queryable, db: Database, url: string): Promise<void> {
  for (const name of variableNamesOf(db.engine)) {
    const { rowCount } = await q.query(
      `UPDATE variables SET value = $3, updated_at = now()
       WHERE coalesce(app_id, database_id) = $1 AND name = $2 AND (database_id = $4 OR database_id IS NULL)`,
      [scopeIdOf(db), name, url, db.id],
    );
    if (rowCount) continue;
    await q.query(
      `INSERT INTO variables (id, app_id, database_id, name, value) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT DO NOTHING`,
      [newId("var"), db.appId, db.id, name, url],
    );
  }
}

/**
 * The only way to `running`: a real TLS connection with the protected user succeeded.
 * Returns null on success, else what failed (the pass is retried).
 */
export async function markRunningIfReachable(
  deps: Deps,
  databaseId: string,
  generation: number,
): Promise<string | null> {
  const db = await getDatabase(deps.db, databaseId);
  if (!db || db.generation !== generation || db.deleteRequestedAt) return null;
  const failure = await checkConnection(deps, db);
  if (failure) return failure;
  await deps.db.tx(async (q) => {
    const locked = await lockDatabase(q, databaseId);
    if (!locked || locked.generation !== generation || locked.deleteRequestedAt) return;
    const instances = await instancesOfDatabase(q, databaseId);
    const gateway = instances.find((i) => i.kind === "gateway")!;
    const address = (await hostAddresses(q, [gateway.hostId])).get(gateway.hostId)!;
    const credentials = await ensureCredentials(q, locked);
    const net = await loadNetworkPolicy(q, deps.config, locked, [gateway.hostId]);
    await writeUrlVariables(
      q,
      locked,
      databaseUrl(locked.model, clientEndpoint(net, { address, port: gateway.port }), credentials),
    );
    await q.query(
      `UPDATE databases SET phase = 'running', phase_reason = '', observed_generation = $2,
              current_plan_id = plan_id, updated_at = now() WHERE id = $1`,
      [databaseId, generation],
    );
    await finishOperations(q, databaseId, { types: ["provision", "change-plan"], status: "done" });
    const data = eventAddonData(deps.catalog, locked);
    await recordEvent(q, {
      appId: scopeIdOf(locked),
      databaseId,
      type: "addon_updated",
      typeData: {
        addon_id: locked.id,
        addon_plan_name: data.plan_name,
        addon_resource_id: locked.resourceId,
        addon_provider_id: locked.providerId,
        addon_provider_name: data.addon_provider_name,
        status: [locked.phase, "running"],
        attributes_changed: ["status"],
      },
    });
  });
  return null;
}
