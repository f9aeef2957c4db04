// Networks of the embedded mode, built on this machine's kernel:
//
// - The public side ("the Internet" of the region): a bridge in the host namespace carrying
//   the configured public network. Its first address is the control plane's (the host's own
//   processes connect from it); Shared hosts publish on addresses of their own on it.
// - A network per Dedicated database (its VPC): a namespace `cv-<hex>` holding the
//   database's gateways, an uplink on the public bridge with the database's public address,
//   a bridge `br0` carrying the database's own address range, one port per node (the node's
//   second interface, `vpc0`), and the edge firewall (nft.ts). It is shared by the agents of
//   one machine, each attaching its own node, and removed when nothing uses it any more.
//
// Nothing here touches the host namespace's firewall or forwarding: a bridge switches frames,
// and every filter lives inside a namespace of Cellar's own.
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { addressAt, cidrOf, cidrsOverlap } from "../domain/ipv4.ts";
import { IsolationError } from "./cgroup-fs.ts";
import { withFileLock } from "./file-lock.ts";
import { applyEdge, hasEdge, type EdgeRules } from "./nft.ts";
import { deleteNetns, inet, ip, isUp, links, netnsExists, netnsPids, type IpLink } from "./netns.ts";

const LOCK_DIR = "/run/cellar/net-locks";
export const UPLINK = "uplink";
export const VPC_BRIDGE = "br0";
export const NODE_VPC_IF = "vpc0";

const hex = (s: string) => createHash("sha256").update(s).digest("hex");

/** The host-namespace bridge of a public network: one per network, named from it. */
export function publicBridgeName(publicNetwork: string): string {
  return `cp${hex(publicNetwork).slice(0, 10)}`;
}

/** The control plane's address on the public side: the network's first address. */
export function controlAddress(publicNetwork: string): string {
  return addressAt(cidrOf(publicNetwork), 1);
}

export interface VpcNames {
  ns: string;
  /** Host end of the uplink pair, a port of the public bridge. */
  hostIf: string;
}

export function vpcNames(databaseId: string): VpcNames {
  const own = /^[a-z]+-([0-9a-f]{12,})$/.exec(databaseId)?.[1];
  const h = own ?? hex(databaseId);
  return { ns: `cv-${h.slice(0, 12)}`, hostIf: `vp${h.slice(0, 10)}` };
}

/** The bridge side of a node's attachment, named from the node's instance id. */
export function vpcPortName(nodeId: string): string {
  const own = /^[a-z]+-([0-9a-f]{12,})$/.exec(nodeId)?.[1];
  return `vb${(own ?? hex(nodeId)).slice(0, 10)}`;
}

export interface VpcSpec {
  databaseId: string;
  /** The database's own address range (at least a /25); its first address is the bridge's. */
  range: string;
  publicNetwork: string;
  publicAddress: string;
}

/** A locally administered unicast MAC derived from the database id. */
export function uplinkMac(databaseId: string): string {
  const h = hex(`mac:${databaseId}`);
  return ["02", ...[0, 2, 4, 6, 8].map((i) => h.slice(i, i + 2))].join(":");
}

const prefixOf = (cidr: string) => cidrOf(cidr).prefix;
const lock = (name: string, fn: () => Promise<void>) => withFileLock(path.join(LOCK_DIR, name), fn);

function hasOnly(l: IpLink | undefined, address: string, prefix: number): boolean {
  const a = inet(l);
  return a.length === 1 && a[0]!.local === address && a[0]!.prefixlen === prefix;
}

/** The public bridge with the control address, up. Idempotent; shared by every agent. */
export async function ensurePublicBridge(publicNetwork: string): Promise<string> {
  const bridge = publicBridgeName(publicNetwork);
  const control = `${controlAddress(publicNetwork)}/${prefixOf(publicNetwork)}`;
  const [seen] = await links(null, bridge);
  if (isUp(seen) && inet(seen).some((a) => `${a.local}/${a.prefixlen}` === control)) return bridge;
  await lock(bridge, async () => {
    const [l] = await links(null, bridge);
    if (!l) await ip(["link", "add", bridge, "type", "bridge"]);
    if (!inet(l).some((a) => `${a.local}/${a.prefixlen}` === control)) {
      await ip(["addr", "add", control, "dev", bridge]);
    }
    if (!isUp(l)) await ip(["link", "set", bridge, "up"]);
  });
  return bridge;
}

/** An address of this host on the public side (a Shared host's public address). */
export async function ensurePublicAddress(publicNetwork: string, address: string): Promise<void> {
  const bridge = await ensurePublicBridge(publicNetwork);
  const [l] = await links(null, bridge);
  if (inet(l).some((a) => a.local === address)) return;
  await ip(["addr", "add", `${address}/${prefixOf(publicNetwork)}`, "dev", bridge]).catch((err: Error) => {
    if (!/File exists/.test(err.message)) throw err;
  });
}

export async function removePublicAddress(publicNetwork: string, address: string): Promise<void> {
  const bridge = publicBridgeName(publicNetwork);
  const [l] = await links(null, bridge);
  if (!inet(l).some((a) => a.local === address)) return;
  await ip(["addr", "del", `${address}/${prefixOf(publicNetwork)}`, "dev", bridge]).catch(() => "");
}

/** Deletes the public bridge once no network is attached and no host publishes on it. */
export async function removePublicBridgeIfUnused(publicNetwork: string): Promise<boolean> {
  const bridge = publicBridgeName(publicNetwork);
  let removed = false;
  await lock(bridge, async () => {
    const [l] = await links(null, bridge);
    if (!l) return;
    const ports = await links(null).then((all) => all.filter((x) => x.master === bridge));
    const others = inet(l).filter((a) => a.local !== controlAddress(publicNetwork));
    if (ports.length > 0 || others.length > 0) return;
    await ip(["link", "delete", bridge]);
    removed = true;
  });
  return removed;
}

/** The namespace's links; a fresh namespace (lo only) when it had to be made. */
async function ensureNamespace(ns: string): Promise<{ inside: IpLink[]; fresh: boolean }> {
  const inside = (await netnsExists(ns)) ? await links(ns) : [];
  if (inside.length > 0) return { inside, fresh: false };
  // A name without a usable namespace (e.g. a file left by a reboot) is replaced.
  if (await netnsExists(ns)) await ip(["netns", "delete", ns]).catch(() => "");
  await ip(["netns", "add", ns]);
  await ip(["-n", ns, "link", "set", "lo", "up"]);
  return { inside: [], fresh: true };
}

/**
 * Deny by default from the very first moment: the edge exists before the uplink. `rules`
 * replaces it (the gateway's converge); without, a missing table is made denying everything.
 */
async function ensureEdge(ns: string, fresh: boolean, rules: EdgeRules | undefined): Promise<void> {
  if (rules) return applyEdge(ns, rules);
  if (!fresh && (await hasEdge(ns))) return;
  await applyEdge(ns, { uplink: UPLINK, ports: [], allow: [], control: [] });
}

async function ensureBridge(ns: string, range: string, inside: IpLink[]): Promise<void> {
  const br = inside.find((l) => l.ifname === VPC_BRIDGE);
  const address = addressAt(cidrOf(range), 1);
  if (!br) await ip(["-n", ns, "link", "add", VPC_BRIDGE, "type", "bridge"]);
  if (!hasOnly(br, address, prefixOf(range))) {
    await ip(["-n", ns, "addr", "flush", "dev", VPC_BRIDGE]);
    await ip(["-n", ns, "addr", "add", `${address}/${prefixOf(range)}`, "dev", VPC_BRIDGE]);
  }
  if (!isUp(br)) await ip(["-n", ns, "link", "set", VPC_BRIDGE, "up"]);
}

async function ensureUplink(
  spec: VpcSpec,
  n: VpcNames,
  bridge: string,
  inside: IpLink[],
  host: IpLink | undefined,
): Promise<void> {
  const prefix = prefixOf(spec.publicNetwork);
  const up = inside.find((l) => l.ifname === UPLINK);
  const paired = up && host && up.link_index === host.ifindex && host.link_index === up.ifindex;
  if (!paired) {
    if (host) await ip(["link", "delete", n.hostIf]);
    if (up) await ip(["-n", n.ns, "link", "delete", UPLINK]).catch(() => "");
    // A MAC of its own, kept across repairs: neighbours' ARP caches stay right.
    const mac = uplinkMac(spec.databaseId);
    await ip([
      "link",
      "add",
      n.hostIf,
      "type",
      "veth",
      "peer",
      "name",
      UPLINK,
      "address",
      mac,
      "netns",
      n.ns,
    ]);
  }
  const [h] = paired ? [host] : await links(null, n.hostIf);
  if (h?.master !== bridge) await ip(["link", "set", n.hostIf, "master", bridge]);
  if (!isUp(h)) await ip(["link", "set", n.hostIf, "up"]);
  const [u] = paired ? [up] : await links(n.ns, UPLINK);
  if (!hasOnly(u, spec.publicAddress, prefix)) {
    await ip(["-n", n.ns, "addr", "flush", "dev", UPLINK]);
    await ip(["-n", n.ns, "addr", "add", `${spec.publicAddress}/${prefix}`, "dev", UPLINK]);
  }
  if (!isUp(u)) await ip(["-n", n.ns, "link", "set", UPLINK, "up"]);
}

/**
 * Creates or repairs the database's network: namespace, edge (`edge`, or deny all until the
 * gateway applies the database's rules), bridge, uplink. Serialised per database across agents.
 */
export async function ensureVpc(spec: VpcSpec, edge?: Omit<EdgeRules, "uplink">): Promise<VpcNames> {
  const n = vpcNames(spec.databaseId);
  // Reads run side by side: a converge on a busy host pays for one command, not three.
  const bridge = ensurePublicBridge(spec.publicNetwork);
  bridge.catch(() => undefined); // awaited below
  await lock(n.ns, async () => {
    const [{ inside, fresh }, [host]] = await Promise.all([ensureNamespace(n.ns), links(null, n.hostIf)]);
    await ensureEdge(n.ns, fresh, edge && { uplink: UPLINK, ...edge });
    await ensureBridge(n.ns, spec.range, inside);
    await ensureUplink(spec, n, await bridge, inside, host);
  });
  await bridge;
  return n;
}

/**
 * Gives the node's namespace a second interface on the database's bridge with `address`
 * (the first is its /30 to the host). Its peers, the gateways, reach it there.
 */
export async function attachNode(
  spec: VpcSpec,
  nodeId: string,
  nodeNs: string,
  address: string,
): Promise<void> {
  const n = vpcNames(spec.databaseId);
  const port = vpcPortName(nodeId);
  const prefix = prefixOf(spec.range);
  await lock(n.ns, async () => {
    const [bp] = await links(n.ns, port);
    const [np] = await links(nodeNs, NODE_VPC_IF);
    const paired = bp && np && bp.link_index === np.ifindex && np.link_index === bp.ifindex;
    if (!paired) {
      if (bp) await ip(["-n", n.ns, "link", "delete", port]);
      if (np) await ip(["-n", nodeNs, "link", "delete", NODE_VPC_IF]).catch(() => "");
      await ip([
        "link",
        "add",
        port,
        "netns",
        n.ns,
        "type",
        "veth",
        "peer",
        "name",
        NODE_VPC_IF,
        "netns",
        nodeNs,
      ]);
    }
    const [b] = paired ? [bp] : await links(n.ns, port);
    if (b?.master !== VPC_BRIDGE) await ip(["-n", n.ns, "link", "set", port, "master", VPC_BRIDGE]);
    if (!isUp(b)) await ip(["-n", n.ns, "link", "set", port, "up"]);
    const [v] = paired ? [np] : await links(nodeNs, NODE_VPC_IF);
    if (!hasOnly(v, address, prefix)) {
      await ip(["-n", nodeNs, "addr", "flush", "dev", NODE_VPC_IF]);
      await ip(["-n", nodeNs, "addr", "add", `${address}/${prefix}`, "dev", NODE_VPC_IF]);
    }
    if (!isUp(v)) await ip(["-n", nodeNs, "link", "set", NODE_VPC_IF, "up"]);
  });
}

export interface VpcUse {
  exists: boolean;
  pids: number[];
  /** Ports of the database's bridge: attached nodes. */
  ports: string[];
}

export async function vpcUse(databaseId: string): Promise<VpcUse> {
  const { ns } = vpcNames(databaseId);
  if (!(await netnsExists(ns))) return { exists: false, pids: [], ports: [] };
  const ports = (await links(ns)).filter((l) => l.master === VPC_BRIDGE).map((l) => l.ifname);
  return { exists: true, pids: await netnsPids(ns), ports };
}

/**
 * Removes the database's network once nothing runs in it and no node is attached (other
 * agents of this machine may still use it); then the public bridge if it is left empty.
 */
export async function removeVpcIfUnused(databaseId: string, publicNetwork: string | null): Promise<boolean> {
  const { ns } = vpcNames(databaseId);
  let removed = false;
  await lock(ns, async () => {
    const use = await vpcUse(databaseId);
    if (!use.exists || use.pids.length > 0 || use.ports.length > 0) return;
    // Its uplink pair goes first (deleteNetns): the public bridge is free when this returns.
    await deleteNetns(ns);
    removed = true;
  });
  if (removed && publicNetwork) await removePublicBridgeIfUnused(publicNetwork);
  return removed;
}

/** Names of the database networks on this machine (any agent's). */
export async function listVpcs(): Promise<string[]> {
  const names = await fs.readdir("/run/netns").catch(() => [] as string[]);
  return names.filter((x) => /^cv-[0-9a-f]{12}$/.test(x));
}

/** Refuses a range that would shadow another route of a node (its /30 to the host). */
export function checkVpcRange(range: string, reserved: readonly string[]): void {
  const other = reserved.find((o) => cidrsOverlap(cidrOf(range), cidrOf(o)));
  if (other) {
    throw new IsolationError(`the database network ${range} overlaps ${other}, which Cellar reserves`, range);
  }
}
