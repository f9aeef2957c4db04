// The region's DCS, managed by the controller: an etcd cluster of 3 members on hosts of
// different AZs (1 when the region has fewer than 3 hosts: never 2, which would lose its
// quorum with either member), formed when the first HA database needs it. Once every
// member answers, authentication is turned on; each HA cluster then gets an etcd user and
// role that may read and write its own keys only.
import type { Deps } from "../api/deps.ts";
import { EtcdClient, type EtcdTls } from "../engines/etcd/etcd-client.ts";
import { clientUrlOf, peerUrlOf, type EtcdMemberSpec } from "../engines/etcd/etcd-member.ts";
import {
  dcsMembersOfRegion,
  ensureDcsCluster,
  insertDcsMembers,
  markDcsAuthEnabled,
  markDcsUserCreated,
  newDcsMemberId,
  updateDcsMemberSpec,
  type DcsMember,
  type HaSecrets,
} from "../store/dcs.store.ts";
import { serviceAddressOf } from "../domain/network-rules.ts";

/** Patroni's keys of a cluster live under NAMESPACE + database id. */
export const DCS_NAMESPACE = "/cellar/";
/** Each member listens on its host's own address. */
export const DCS_CLIENT_PORT = 2379;
export const DCS_PEER_PORT = 2380;
const FULL_SIZE = 3;

/**
 * `endpoints`: as processes of the hosts dial them; `serviceEndpoints`: as nodes inside
 * network namespaces do (a loopback host's member also answers on its service address).
 */
export type DcsState =
  { ready: true; endpoints: string[]; serviceEndpoints: string[] } | { ready: false; reason: string };

interface RegionHost {
  id: string;
  name: string;
  az: string;
  address: string;
  status: string;
}

/** Picks the members: one per AZ first, then any host, in name order. */
export function pickDcsHosts(hosts: RegionHost[]): RegionHost[] | null {
  const ready = hosts.filter((h) => h.status === "ready").sort((a, b) => a.name.localeCompare(b.name));
  if (ready.length < FULL_SIZE) {
    // Fewer than 3: form with one member, but only once no registered host is still coming up.
    return ready.length > 0 && ready.length === hosts.length ? ready.slice(0, 1) : null;
  }
  const picked: RegionHost[] = [];
  for (const h of ready) if (!picked.some((p) => p.az === h.az)) picked.push(h);
  for (const h of ready) if (picked.length < FULL_SIZE && !picked.includes(h)) picked.push(h);
  return picked.slice(0, FULL_SIZE);
}

const clientTls = new Map<string, Promise<EtcdTls>>();

/** The controller's client certificate for a region's etcd (no CN: etcd would take it for a user). */
function controllerTls(deps: Deps, region: string): Promise<EtcdTls> {
  let tls = clientTls.get(region);
  if (!tls) {
    tls = deps.pki.issue(region, { commonName: "cellar-controller", nameInOu: true }, "client");
    tls.catch(() => clientTls.delete(region));
    clientTls.set(region, tls);
  }
  return tls;
}

async function rootClient(deps: Deps, region: string, endpoints: string[], rootPassword: string | null) {
  const tls = await controllerTls(deps, region);
  return new EtcdClient(
    rootPassword === null
      ? { endpoints, tls }
      : { endpoints, tls, auth: { user: "root", password: rootPassword } },
  );
}

/** Forms the region's DCS if needed; ready once its members run and authentication is on. */
export async function ensureRegionDcs(deps: Deps, region: string): Promise<DcsState> {
  const cluster = await ensureDcsCluster(deps.db, region);
  let members = await dcsMembersOfRegion(deps.db, region);
  if (members.length === 0) {
    const { rows: hosts } = await deps.db.query<RegionHost>(
      "SELECT id, name, az, host(address) AS address, status FROM hosts WHERE region = $1",
      [region],
    );
    const picked = pickDcsHosts(hosts);
    if (!picked) {
      return {
        ready: false,
        reason: `waiting for the hosts of ${region} to be ready to form its etcd cluster`,
      };
    }
    const initialCluster = picked.map((h) => ({
      name: h.name,
      peerUrl: peerUrlOf({ address: h.address, peerPort: DCS_PEER_PORT }),
    }));
    const specs: Array<{ id: string; hostId: string; name: string; spec: EtcdMemberSpec }> = [];
    for (const h of picked) {
      const spec: EtcdMemberSpec = {
        name: h.name,
        clusterToken: cluster.token,
        address: h.address,
        clientPort: DCS_CLIENT_PORT,
        peerPort: DCS_PEER_PORT,
        initialCluster,
        serviceAddress: serviceAddressOf(h.address),
        tls: await memberTls(deps, region, h.name, h.address),
      };
      specs.push({ id: newDcsMemberId(), hostId: h.id, name: h.name, spec });
    }
    try {
      await deps.db.tx((q) => insertDcsMembers(q, region, specs));
    } catch {
      // Another controller formed it first: use theirs.
    }
    members = await dcsMembersOfRegion(deps.db, region);
    for (const m of members) deps.hostSignals.notify(m.hostId);
    deps.log.info("forming the region's etcd cluster", {
      region,
      members: members.map((m) => m.name).join(","),
    });
  }
  await addServiceAddresses(deps, region, members);
  const specs = members.map((m) => m.spec as unknown as EtcdMemberSpec);
  const endpoints = specs.map((s) => clientUrlOf(s));
  const serviceEndpoints = specs.map((s) => clientUrlOf({ ...s, address: s.serviceAddress ?? s.address }));
  const waiting = members.filter((m) => m.status !== "running" || m.observedGeneration < m.specGeneration);
  if (waiting.length > 0) {
    const what = waiting.map((m) => `${m.name} ${m.status}${m.statusMessage ? ` (${m.statusMessage})` : ""}`);
    return { ready: false, reason: `waiting for the region's etcd cluster: ${what.join(", ")}` };
  }
  if (!cluster.authEnabled) {
    const client = await rootClient(deps, region, endpoints, null);
    await client.addUser("root", cluster.rootPassword);
    await client.grantRole("root", "root");
    await client.enableAuth();
    await markDcsAuthEnabled(deps.db, region);
    deps.log.info("etcd authentication enabled", { region });
  }
  return { ready: true, endpoints, serviceEndpoints };
}

/**
 * A member's certificate: its host address, and its service address where nodes in
 * namespaces dial it. etcd checks a peer's certificate against the address it connects
 * from; on loopback hosts (127.x) the kernel picks 127.0.0.1 as that source address.
 */
function memberTls(deps: Deps, region: string, name: string, address: string) {
  const service = serviceAddressOf(address);
  const ips = [
    address,
    ...(service !== address ? [service] : []),
    ...(address.startsWith("127.") ? ["127.0.0.1"] : []),
  ];
  return deps.pki.issue(region, { commonName: `etcd-${name}`, nameInOu: true, ipAddresses: ips }, "peer");
}

/** Members formed before service addresses existed get one (a restart of each, in turn). */
async function addServiceAddresses(deps: Deps, region: string, members: DcsMember[]): Promise<void> {
  for (const m of members) {
    const spec = m.spec as unknown as EtcdMemberSpec;
    if (spec.serviceAddress !== undefined) continue;
    // One at a time: the others keep the quorum while it restarts.
    if (members.some((o) => o !== m && (o.status !== "running" || o.observedGeneration < o.specGeneration)))
      return;
    const tls = await memberTls(deps, region, spec.name, spec.address);
    const next = { ...spec, serviceAddress: serviceAddressOf(spec.address), tls };
    await updateDcsMemberSpec(deps.db, m.id, next);
    m.spec = { ...next };
    m.specGeneration += 1;
    deps.hostSignals.notify(m.hostId);
    return;
  }
}

/** The cluster's etcd user: may read and write DCS_NAMESPACE + its id, nothing else. */
export async function ensureDcsUser(
  deps: Deps,
  region: string,
  databaseId: string,
  endpoints: string[],
  secrets: HaSecrets,
): Promise<void> {
  if (secrets.dcsUserCreated) return;
  const cluster = await ensureDcsCluster(deps.db, region);
  const root = await rootClient(deps, region, endpoints, cluster.rootPassword);
  await root.addRole(secrets.dcsUser);
  await root.grantPrefix(secrets.dcsUser, `${DCS_NAMESPACE}${databaseId}/`);
  await root.addUser(secrets.dcsUser, secrets.dcsPassword);
  await root.setPassword(secrets.dcsUser, secrets.dcsPassword);
  await root.grantRole(secrets.dcsUser, secrets.dcsUser);
  await markDcsUserCreated(deps.db, databaseId, true);
}

/** A deleted cluster's keys, user and role leave the DCS. */
export async function dropDcsUser(
  deps: Deps,
  region: string,
  databaseId: string,
  secrets: HaSecrets,
): Promise<void> {
  const members = await dcsMembersOfRegion(deps.db, region);
  if (members.length === 0) return;
  const endpoints = members.map((m) => clientUrlOf(m.spec as unknown as EtcdMemberSpec));
  const cluster = await ensureDcsCluster(deps.db, region);
  const root = await rootClient(deps, region, endpoints, cluster.authEnabled ? cluster.rootPassword : null);
  await root.deletePrefix(`${DCS_NAMESPACE}${databaseId}/`);
  await root.deleteUser(secrets.dcsUser);
  await root.deleteRole(secrets.dcsUser);
  await markDcsUserCreated(deps.db, databaseId, false);
}
