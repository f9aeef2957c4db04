// The network part of what agents are asked to run, from a database's features, firewall
// rules and addresses. provision.ts applies it to every spec it writes, so a change of
// exposure travels like a plan change: new generation, new specs, agents converge.
//
// Dedicated, on hosts that make network namespaces: the database gets its own network
// (runtime/vpc.ts) with a public address; its gateways run inside it and listen there; its
// nodes join it on the database's own range. Both the edge (nftables) and the gateways
// (HAProxy) allow the firewall rules' sources plus the control plane's address, nothing else.
// Elsewhere (no root): the gateway listens on its host address and filters alone, and says so.
// Shared: no source filtering; Force TLS at the gateway and in pg_hba; the gateway also
// listens on its host's address on the region's private network (where the region's apps
// are), and, when publicly available, on its host's public address.
import type { Config } from "../config.ts";
import { cidrOf, addressAt } from "../domain/ipv4.ts";
import { managedRanges, publicLayout } from "../domain/network-rules.ts";
import { hostPrivateAddress, regionPrivateBlock } from "../domain/private-network.ts";
import type { GatewayBackend } from "../engines/postgresql/haproxy-config.ts";
import type { VpcSpec } from "../runtime/vpc.ts";
import type { Queryable } from "../store/db.ts";
import {
  activeFeatures,
  databaseNetworkOf,
  firewallRules,
  hostMakesNetworks,
  publicAddressOf,
} from "../store/network.store.ts";
import type { GatewaySpecJson, NodeSpec } from "./instance-spec.ts";

export interface HostPrivateAddress {
  block: string;
  address: string;
}

/** A node's place in its database's network. */
export interface NodeNetwork {
  vpc: VpcSpec & { address: string };
}

/** What the agent sets up around a gateway before starting it. */
export interface GatewayNetwork {
  publicNetwork: string;
  /** Shared: the host's public address, put on the public bridge. */
  hostPublicAddress?: string;
  /** Shared: the host's address on its region's private network (`block`). */
  privateNetwork?: HostPrivateAddress;
  /** Dedicated: the network the gateway runs in, and its edge rules. */
  vpc?: VpcSpec & { edge: { ports: number[]; allow: string[]; control: string[] } };
}

export interface NetworkPolicy {
  databaseId: string;
  model: "shared" | "dedicated";
  forceTls: boolean;
  publiclyAvailable: boolean;
  publicNetwork: string;
  /** Sources always let through: the control plane's connection checks. */
  control: string[];
  /** Dedicated: sources allowed by the firewall rules; null: no source filtering. */
  allow: string[] | null;
  /** Dedicated on hosts that make networks: the database's own network. */
  vpc: { range: string; publicAddress: string; port: number } | null;
  /** Shared: public address of each host (present when the host makes networks). */
  hostPublic: Map<string, string>;
  /** Shared: each host's address on its region's private network (loopback hosts that make networks). */
  hostPrivate: Map<string, HostPrivateAddress>;
}

/** Node i of a database sits at offset 10 + i of its range (the bridge is at offset 1). */
export function nodeVpcAddress(range: string, ordinal: number): string {
  return addressAt(cidrOf(range), 10 + ordinal);
}

/** Reads (and allocates on first use) everything the specs of `db` need on `hostIds`. */
export async function loadNetworkPolicy(
  q: Queryable,
  config: Pick<Config, "publicNetwork" | "privateNetwork" | "regions">,
  db: { id: string; model: "shared" | "dedicated"; ipRange: string | null },
  hostIds: readonly string[],
): Promise<NetworkPolicy> {
  const layout = publicLayout(
    config.publicNetwork,
    config.regions.map((r) => r.name),
  );
  const { rows: hosts } = await q.query<{
    id: string;
    isolation: Record<string, unknown>;
    address: string;
    region: string;
  }>("SELECT id, isolation, host(address) AS address, region FROM hosts WHERE id = ANY($1)", [
    [...new Set(hostIds)],
  ]);
  const capable = hosts.filter((h) => hostMakesNetworks(h.isolation));
  const features = await activeFeatures(q, db.id);
  const policy: NetworkPolicy = {
    databaseId: db.id,
    model: db.model,
    forceTls: db.model === "dedicated" || features.has("force-ssl"),
    publiclyAvailable: db.model === "shared" && features.has("publicly-available"),
    publicNetwork: config.publicNetwork,
    control: [`${layout.control}/32`],
    allow: null,
    vpc: null,
    hostPublic: new Map(),
    hostPrivate: new Map(),
  };
  if (db.model === "shared") {
    const regions = config.regions.map((r) => r.name);
    for (const h of capable) {
      policy.hostPublic.set(h.id, await publicAddressOf(q, layout, { hostId: h.id }));
      const block = regionPrivateBlock(config.privateNetwork, regions, h.region);
      const address = block ? hostPrivateAddress(block, h.address) : null;
      if (block && address) policy.hostPrivate.set(h.id, { block, address });
    }
    return policy;
  }
  policy.allow = await allowedSources(q, config, db.id);
  // A network spans the database's hosts: all of them must be able to make it.
  if (hosts.length > 0 && capable.length === hosts.length) {
    const net = await databaseNetworkOf(q, db);
    const publicAddress = await publicAddressOf(q, layout, { databaseId: db.id });
    policy.vpc = { range: net.ipRange, publicAddress, port: net.publicPort };
  } else {
    // The gateway listens on its host's address: only the host's own processes check it.
    policy.control = ["127.0.0.0/8"];
  }
  return policy;
}

/** The CIDRs the firewall rules allow, managed ranges resolved to their current blocks. */
export async function allowedSources(
  q: Queryable,
  config: Pick<Config, "publicNetwork" | "regions">,
  databaseId: string,
): Promise<string[]> {
  const ranges = managedRanges(
    config.publicNetwork,
    config.regions.map((r) => r.name),
  );
  const out: string[] = [];
  for (const rule of await firewallRules(q, databaseId)) {
    if (rule.cidr) out.push(rule.cidr);
    else out.push(...(ranges.find((r) => r.id === rule.rangeId)?.cidrs ?? []));
  }
  return [...new Set(out)];
}

export function withNodeNetwork(spec: NodeSpec, p: NetworkPolicy, ordinal: number): NodeSpec {
  const out: NodeSpec & { network?: NodeNetwork } = { ...spec, forceTls: p.forceTls };
  if (p.vpc) {
    out.network = {
      vpc: {
        databaseId: p.databaseId,
        range: p.vpc.range,
        publicNetwork: p.publicNetwork,
        publicAddress: p.vpc.publicAddress,
        address: nodeVpcAddress(p.vpc.range, ordinal),
      },
    };
  } else {
    delete out.network;
  }
  return out;
}

/**
 * The gateway's listen address, backends, ACL, public binds and network. `ordinals` gives
 * each node's ordinal (its address in the database's network).
 */
export function withGatewayNetwork(
  spec: GatewaySpecJson,
  p: NetworkPolicy,
  hostId: string,
  ordinals: ReadonlyMap<string, number>,
): GatewaySpecJson {
  const out: GatewaySpecJson & { network?: GatewayNetwork } = { ...spec };
  delete out.extraBinds;
  delete out.network;
  delete out.acl;
  if (p.model === "dedicated") {
    const allow = [...(p.allow ?? []), ...p.control];
    out.acl = { tlsOnly: true, allow };
    if (p.vpc) {
      const vpc = p.vpc;
      out.listen = { host: vpc.publicAddress, port: vpc.port };
      out.backends = spec.backends.map((b): GatewayBackend => {
        const ordinal = ordinals.get(b.name);
        return ordinal === undefined ? b : { ...b, host: nodeVpcAddress(vpc.range, ordinal) };
      });
      out.network = {
        publicNetwork: p.publicNetwork,
        vpc: {
          databaseId: p.databaseId,
          range: vpc.range,
          publicNetwork: p.publicNetwork,
          publicAddress: vpc.publicAddress,
          edge: { ports: [vpc.port], allow: p.allow ?? [], control: p.control },
        },
      };
    }
    return out;
  }
  if (p.forceTls) out.acl = { tlsOnly: true };
  const hostPrivate = p.hostPrivate.get(hostId);
  const hostPublic = p.publiclyAvailable ? p.hostPublic.get(hostId) : undefined;
  const binds = [hostPrivate?.address, hostPublic].filter((a): a is string => a !== undefined);
  if (binds.length > 0) {
    out.extraBinds = binds.map((host) => ({ host, port: spec.listen.port }));
    out.network = {
      publicNetwork: p.publicNetwork,
      ...(hostPrivate ? { privateNetwork: hostPrivate } : {}),
      ...(hostPublic ? { hostPublicAddress: hostPublic } : {}),
    };
  }
  return out;
}

/** Where clients (and the control plane's check) connect: the database's public endpoint. */
export function clientEndpoint(
  p: NetworkPolicy,
  gateway: { address: string; port: number },
): { address: string; port: number } {
  return p.vpc ? { address: p.vpc.publicAddress, port: p.vpc.port } : gateway;
}

/** Addresses the server certificate must name besides the hosts' (TLS passes through). */
export function certificateAddresses(p: NetworkPolicy): string[] {
  if (p.vpc) return [p.vpc.publicAddress];
  return [...p.hostPublic.values(), ...[...p.hostPrivate.values()].map((h) => h.address)];
}

/** The database's public-rw endpoint once its gateways are placed; null before. */
export async function publicEndpointOf(
  q: Queryable,
  config: Pick<Config, "publicNetwork" | "privateNetwork" | "regions">,
  db: { id: string; model: "shared" | "dedicated"; ipRange: string | null },
): Promise<{ address: string; port: number } | null> {
  const { rows } = await q.query<{ host_id: string; kind: string; port: number; address: string }>(
    `SELECT i.host_id, i.kind, i.port, host(h.address) AS address
     FROM instances i JOIN hosts h ON h.id = i.host_id
     WHERE i.database_id = $1 AND i.desired_state <> 'deleted' ORDER BY i.kind DESC, i.ordinal`,
    [db.id],
  );
  const gateway = rows.find((r) => r.kind === "gateway");
  if (!gateway) return null;
  const policy = await loadNetworkPolicy(
    q,
    config,
    db,
    rows.map((r) => r.host_id),
  );
  return clientEndpoint(policy, { address: gateway.address, port: gateway.port });
}
