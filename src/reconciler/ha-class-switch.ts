// The cluster-shaping steps of ha-operations.ts: a rolling update's spec hand-out, and the
// class switches between a single node and a Patroni cluster (standby and gateway added,
// the node handed to Patroni; the node handed back). The gateway with the lowest ordinal,
// and so the URL, stays throughout.
import type { Deps } from "../api/deps.ts";
import type { Plan } from "../domain/catalog.ts";
import type { Queryable } from "../store/db.ts";
import { lockDatabase, type Database } from "../store/databases.store.ts";
import {
  ensureInstance,
  instancesOfDatabase,
  updateInstanceSpec,
  type Instance,
} from "../store/instances.store.ts";
import { nodeBackupSpec } from "./backup-spec.ts";
import { gatewaySpec, nodeSpec, type GatewaySpecJson, type NodeSpec } from "./instance-spec.ts";
import {
  certificateAddresses,
  loadNetworkPolicy,
  nodeVpcAddress,
  withGatewayNetwork,
  withNodeNetwork,
  type NetworkPolicy,
} from "./network-spec.ts";
import { haSpecOf, hostAddresses, planOf, updateInstanceSpecs, type HaContext } from "./provision.ts";

/** A Patroni REST port for a node that had none (a Starter node joining a cluster). */
async function ensureExtraPort(q: Queryable, node: Instance): Promise<number> {
  if (node.extraPort !== null) return node.extraPort;
  const { rows } = await q.query<{ port: number }>(
    `UPDATE instances SET extra_port = (
       SELECT p FROM generate_series(30000, 39999) p
       WHERE NOT EXISTS (SELECT 1 FROM instances WHERE host_id = $2 AND extra_port = p) ORDER BY p LIMIT 1)
     WHERE id = $1 RETURNING extra_port AS port`,
    [node.id, node.hostId],
  );
  if (rows[0]?.port == null) throw new Error(`host ${node.hostId} has no free second port left`);
  return rows[0].port;
}

interface ClusterParts {
  db: Database;
  plan: Plan;
  instances: Instance[];
  addresses: Map<string, string>;
  net: NetworkPolicy;
}

async function clusterParts(
  deps: Deps,
  q: Queryable,
  db: Database,
  extraHosts: string[] = [],
): Promise<ClusterParts> {
  const instances = await instancesOfDatabase(q, db.id);
  const hostIds = [...new Set([...instances.map((i) => i.hostId), ...extraHosts])];
  return {
    db,
    plan: planOf(deps, db),
    instances,
    addresses: await hostAddresses(q, hostIds),
    net: await loadNetworkPolicy(q, deps.config, db, hostIds),
  };
}

const gatewayOf = (gw: Instance) => ({
  listen: (gw.spec as unknown as GatewaySpecJson).listen,
  hostId: gw.hostId,
});

/** Gateways of a cluster: every node is a backend, reached only while Patroni says it leads. */
function haGatewaySpec(
  deps: Deps,
  p: ClusterParts,
  gw: { listen: { host: string; port: number }; hostId: string },
  nodes: Instance[],
): GatewaySpecJson {
  const backends = nodes.map((n) => ({
    id: n.id,
    address: p.addresses.get(n.hostId)!,
    port: n.port,
    ...(n.extraPort !== null ? { patroniPort: n.extraPort } : {}),
  }));
  const ha = nodes.some((n) => n.extraPort !== null);
  const spec = {
    ...gatewaySpec({ address: gw.listen.host, port: gw.listen.port }, backends, p.plan),
    ...(ha ? { checkCaPem: deps.pki.ca(p.db.region).certPem } : {}),
  };
  const ordinals = new Map(nodes.map((n) => [n.id, n.ordinal]));
  return withGatewayNetwork(spec, p.net, gw.hostId, ordinals);
}

/**
 * Starter -> Business, first half: the standby and its gateway. The standby's Patroni has
 * no bootstrap section, so it waits for the leader (the converted node) and clones it; the
 * new server certificate names every host, for the converted node too.
 */
export async function growCluster(
  deps: Deps,
  id: string,
  generation: number,
  slots: Array<{ kind: "node" | "gateway"; ordinal: number; hostId: string }>,
  ha: HaContext,
): Promise<void> {
  await deps.db.tx(async (q) => {
    const db = await lockDatabase(q, id);
    if (!db || db.deleteRequestedAt || db.generation !== generation) return;
    const p = await clusterParts(
      deps,
      q,
      db,
      slots.map((s) => s.hostId),
    );
    const current = p.instances.find((i) => i.kind === "node")!;
    await ensureExtraPort(q, current);
    const old = current.spec as unknown as NodeSpec;
    // Nodes on their database's network also dial each other there: every node's address.
    const ordinals = [
      ...p.instances.filter((i) => i.kind === "node"),
      ...slots.filter((s) => s.kind === "node"),
    ];
    const vpcNodes = p.net.vpc ? ordinals.map((n) => nodeVpcAddress(p.net.vpc!.range, n.ordinal)) : [];
    const tls = await deps.pki.issueServer(db.region, {
      commonName: db.resourceId.replace(/_/g, "-"),
      ipAddresses: [...new Set([...p.addresses.values(), ...certificateAddresses(p.net), ...vpcNodes])],
    });
    const haOf = await haSpecOf(deps, db, p.plan, ha);
    const backup = await nodeBackupSpec(q, deps, db);
    for (const slot of slots.filter((s) => s.kind === "node")) {
      const address = p.addresses.get(slot.hostId)!;
      const key = { databaseId: id, hostId: slot.hostId, kind: "node" as const, ordinal: slot.ordinal };
      await ensureInstance(
        q,
        key,
        (port, restPort, instId) => {
          const node = nodeSpec({
            model: db.model,
            plan: p.plan,
            resourceId: db.resourceId,
            address,
            port,
            tls,
            credentials: old.credentials,
            backup,
          });
          const spec = withNodeNetwork(node, p.net, slot.ordinal);
          return { ...spec, ha: { ...haOf(instId, restPort!, p.net.vpc !== null), joinOnly: true } };
        },
        generation,
        { extraPort: true },
      );
    }
    const after = await clusterParts(deps, q, db);
    // A node Patroni does not run yet answers no health check: its gateway reaches it unchecked.
    const nodes = after.instances
      .filter((i) => i.kind === "node")
      .map((n) => (n.spec.ha === undefined ? { ...n, extraPort: null } : n));
    // Why: Dedicated gateways share the database's public address, so a new one serves clients
    // at once. While the serving node is still a Starter's it routes there unchecked, and it is
    // made at the previous generation so that the rolling update checks /primary once Patroni leads.
    const converting = nodes.some((n) => n.extraPort === null);
    for (const slot of slots.filter((s) => s.kind === "gateway")) {
      const key = { databaseId: id, hostId: slot.hostId, kind: "gateway" as const, ordinal: slot.ordinal };
      const address = after.addresses.get(slot.hostId)!;
      await ensureInstance(
        q,
        key,
        (port) => haGatewaySpec(deps, after, { listen: { host: address, port }, hostId: slot.hostId }, nodes),
        converting ? generation - 1 : generation,
      );
    }
  });
}

/**
 * A step of a rolling update: nodes get the new plan (provision.ts), gateways the new plan
 * and every node of the cluster as a backend checked on /primary (a former Starter's
 * gateway had one unchecked backend).
 */
export async function updateRolling(
  deps: Deps,
  id: string,
  generation: number,
  ids: string[],
): Promise<void> {
  const all = await instancesOfDatabase(deps.db, id);
  const gateways = new Set(all.filter((i) => i.kind === "gateway" && ids.includes(i.id)).map((i) => i.id));
  await updateInstanceSpecs(deps, id, generation, new Set(ids.filter((x) => !gateways.has(x))));
  if (gateways.size === 0) return;
  await deps.db.tx(async (q) => {
    const db = await lockDatabase(q, id);
    if (!db || db.deleteRequestedAt || db.generation !== generation) return;
    const p = await clusterParts(deps, q, db);
    const nodes = p.instances.filter((i) => i.kind === "node" && i.desiredState !== "deleted");
    for (const gw of p.instances.filter((i) => gateways.has(i.id))) {
      await updateInstanceSpec(q, gw.id, haGatewaySpec(deps, p, gatewayOf(gw), nodes), generation);
    }
  });
}

/** Starter -> Business, second half: Patroni takes the existing node over. */
export async function convertToHa(deps: Deps, id: string, generation: number, ha: HaContext): Promise<void> {
  await deps.db.tx(async (q) => {
    const db = await lockDatabase(q, id);
    if (!db || db.deleteRequestedAt || db.generation !== generation) return;
    const p = await clusterParts(deps, q, db);
    const nodes = p.instances.filter((i) => i.kind === "node");
    const haOf = await haSpecOf(deps, db, p.plan, ha);
    // The standby's certificate names every node's host: the converted node serves it too.
    const tls = (nodes.find((n) => n.spec.ha !== undefined)?.spec as unknown as NodeSpec | undefined)?.tls;
    for (const n of nodes.filter((x) => x.spec.ha === undefined && x.specGeneration < generation)) {
      const old = n.spec as unknown as NodeSpec;
      const restPort = await ensureExtraPort(q, n);
      const node = nodeSpec({
        model: db.model,
        plan: p.plan,
        resourceId: db.resourceId,
        address: old.listen.address,
        port: old.listen.port,
        tls: tls ?? old.tls,
        credentials: old.credentials,
      });
      const spec = {
        ...withNodeNetwork(node, p.net, n.ordinal),
        ha: { ...haOf(n.id, restPort, p.net.vpc !== null), adopted: true },
      };
      await updateInstanceSpec(q, n.id, spec, generation);
    }
  });
}

/** Business -> Starter: the kept node runs PostgreSQL itself again; its gateway checks nothing. */
export async function convertToSingle(deps: Deps, id: string, generation: number): Promise<void> {
  await deps.db.tx(async (q) => {
    const db = await lockDatabase(q, id);
    if (!db || db.deleteRequestedAt || db.generation !== generation) return;
    const p = await clusterParts(deps, q, db);
    const live = p.instances.filter((i) => i.desiredState !== "deleted");
    const nodes = live.filter((i) => i.kind === "node");
    for (const n of nodes) {
      const old = n.spec as unknown as NodeSpec;
      const node = nodeSpec({
        model: db.model,
        plan: p.plan,
        resourceId: db.resourceId,
        address: old.listen.address,
        port: old.listen.port,
        tls: old.tls,
        credentials: old.credentials,
        backup: await nodeBackupSpec(q, deps, db),
      });
      await updateInstanceSpec(q, n.id, withNodeNetwork(node, p.net, n.ordinal), generation);
    }
    // The kept Patroni's REST port stays allocated (it may still answer until it stops).
    const single = nodes.map((n) => ({ ...n, extraPort: null }));
    for (const gw of live.filter((i) => i.kind === "gateway")) {
      await updateInstanceSpec(q, gw.id, haGatewaySpec(deps, p, gatewayOf(gw), single), generation);
    }
  });
}
