// A network namespace per node: `cn-<hex>` holds one end of a veth pair (`vn<hex>`) with the
// node's inner address; the other end (`vh<hex>`) stays in the host namespace with the /30's
// first address, so processes of the host (the gateway) reach the node, and nothing else does.
// Each node takes one /30 of NODE_NET_RANGE. A /30 is claimed by an O_EXCL file under
// CLAIMS_DIR, so agents of several emulated hosts on one machine never pick the same one.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { HOST_SERVICE_RANGE, NODE_LINK_RANGE } from "../domain/network-rules.ts";
import { IsolationError, killQuietly, waitFor } from "./cgroup-fs.ts";

/** Reserved for node namespaces: nothing else on the machine may route it. */
export const NODE_NET_RANGE = NODE_LINK_RANGE;
const RANGE_BASE = (10 << 24) | (213 << 16);
export const NODE_NET_SLOTS = 65536 / 4;
const NETNS_DIR = "/run/netns";
export const CLAIMS_DIR = "/run/cellar/net-slots";
/** A claim whose namespace does not exist is given up after this long (an agent died in between). */
const CLAIM_GRACE_MS = 60_000;

export interface NodeNetNames {
  ns: string;
  hostIf: string;
  nodeIf: string;
}

export interface NodeNet extends NodeNetNames {
  slot: number;
  hostAddress: string;
  innerAddress: string;
  /** Whether anything had to be created or repaired. */
  changed: boolean;
}

/** Names from the instance id: its own hex when it has enough (readable), else a hash of it. */
export function nodeNetNames(id: string): NodeNetNames {
  const own = /^[a-z]+-([0-9a-f]{12,})$/.exec(id)?.[1];
  const hex = own ?? createHash("sha256").update(id).digest("hex");
  // Interface names are limited to 15 characters.
  return { ns: `cn-${hex.slice(0, 12)}`, hostIf: `vh${hex.slice(0, 10)}`, nodeIf: `vn${hex.slice(0, 10)}` };
}

function ipv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

export function slotAddresses(slot: number): { hostAddress: string; innerAddress: string } {
  const base = RANGE_BASE + slot * 4;
  return { hostAddress: ipv4(base + 1), innerAddress: ipv4(base + 2) };
}

/** The slot of an address of the range, or null. */
export function slotOf(address: string): number | null {
  const parts = address.split(".").map(Number);
  if (parts.length !== 4 || parts[0] !== 10 || parts[1] !== 213) return null;
  return ((parts[2]! << 8) | parts[3]!) >> 2;
}

/** Where the search for a free /30 starts: spread by the id, so collisions are rare. */
export function preferredSlot(id: string): number {
  return parseInt(createHash("sha256").update(id).digest("hex").slice(0, 8), 16) % NODE_NET_SLOTS;
}

/** argv that runs `argv` inside the namespace: nsenter joins only the network namespace, then execs. */
export function inNetns(ns: string, argv: readonly string[]): string[] {
  return ["nsenter", `--net=${path.join(NETNS_DIR, ns)}`, "--", ...argv];
}

export function ip(args: readonly string[], stdin?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile("ip", args, { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err)
        reject(new IsolationError(`ip ${args.join(" ")}: ${String(stderr).trim() || err.message}`, "ip"));
      else resolve(String(stdout));
    });
    if (stdin !== undefined) child.stdin?.end(stdin);
  });
}

export interface IpLink {
  ifindex: number;
  ifname: string;
  link_index?: number;
  master?: string;
  flags?: string[];
  addr_info?: Array<{ family: string; local: string; prefixlen: number }>;
}

/** `ip -j addr show` of the host namespace or of `ns`; [] when the namespace is unusable. */
export async function links(ns: string | null, dev?: string): Promise<IpLink[]> {
  const args = [...(ns ? ["-n", ns] : []), "-j", "addr", "show", ...(dev ? ["dev", dev] : [])];
  return ip(args).then(
    (out) => JSON.parse(out || "[]") as IpLink[],
    () => [],
  );
}

export const inet = (l: IpLink | undefined) => (l?.addr_info ?? []).filter((a) => a.family === "inet");
export const isUp = (l: IpLink | undefined) => l?.flags?.includes("UP") ?? false;

const exists = (p: string) =>
  fs.access(p).then(
    () => true,
    () => false,
  );

export async function netnsExists(ns: string): Promise<boolean> {
  return exists(path.join(NETNS_DIR, ns));
}

/** Names of the node namespaces on this machine (any agent's). */
export async function listNodeNetns(): Promise<string[]> {
  const names = await fs.readdir(NETNS_DIR).catch(() => [] as string[]);
  return names.filter((n) => /^cn-[0-9a-f]{12}$/.test(n));
}

/** What is there now: the links inside the namespace (null: no usable namespace) and the host end. */
interface PairState {
  inside: IpLink[] | null;
  host: IpLink | undefined;
}

async function readState(n: NodeNetNames): Promise<PairState> {
  const [inside, host] = await Promise.all([
    netnsExists(n.ns).then((yes) => (yes ? links(n.ns) : [])),
    links(null, n.hostIf),
  ]);
  // Every namespace has lo: an empty answer means it cannot be entered (e.g. its file outlived a reboot).
  return { inside: inside.length > 0 ? inside : null, host: host[0] };
}

/** The namespace exists and can be entered; a file left without its mount is replaced. */
async function ensureNamespace(ns: string, state: PairState): Promise<boolean> {
  if (state.inside !== null) return false;
  if (await netnsExists(ns)) await ip(["netns", "delete", ns]).catch(() => "");
  await ip(["netns", "add", ns]);
  return true;
}

/** Checks the pair, its addresses and links against `slot`; true when nothing needs fixing. */
function pairIsRight(n: NodeNetNames, slot: number, state: PairState): boolean {
  const { hostAddress, innerAddress } = slotAddresses(slot);
  const { host } = state;
  const node = state.inside?.find((l) => l.ifname === n.nodeIf);
  const lo = state.inside?.find((l) => l.ifname === "lo");
  const only = (l: IpLink | undefined, a: string) =>
    inet(l).length === 1 && inet(l)[0]!.local === a && inet(l)[0]!.prefixlen === 30;
  return (
    host !== undefined &&
    node !== undefined &&
    // Both ends of one pair (a same-named end may survive in an old namespace).
    host.link_index === node.ifindex &&
    node.link_index === host.ifindex &&
    only(host, hostAddress) &&
    only(node, innerAddress) &&
    isUp(host) &&
    isUp(node) &&
    isUp(lo)
  );
}

async function createPair(n: NodeNetNames, slot: number, state: PairState): Promise<void> {
  const { hostAddress, innerAddress } = slotAddresses(slot);
  // Deleting one end deletes the pair: start from nothing rather than patch half a pair.
  if (state.host) await ip(["link", "delete", n.hostIf]);
  if (state.inside?.some((l) => l.ifname === n.nodeIf)) {
    await ip(["-n", n.ns, "link", "delete", n.nodeIf]).catch(() => "");
  }
  await ip(
    ["-batch", "-"],
    [
      `link add ${n.hostIf} type veth peer name ${n.nodeIf} netns ${n.ns}`,
      `addr add ${hostAddress}/30 dev ${n.hostIf}`,
      `link set ${n.hostIf} up`,
    ].join("\n") + "\n",
  );
  await ip(
    ["-n", n.ns, "-batch", "-"],
    [`addr add ${innerAddress}/30 dev ${n.nodeIf}`, `link set ${n.nodeIf} up`, "link set lo up"].join("\n") +
      "\n",
  );
}

/** The slot the namespace's inner address already uses, if any. */
function currentSlot(n: NodeNetNames, state: PairState): number | null {
  const addr = inet(state.inside?.find((l) => l.ifname === n.nodeIf))[0]?.local;
  return addr ? slotOf(addr) : null;
}

/** Slots used on this machine: addresses of the range in the host namespace, and live claims. */
async function slotsInUse(mine: NodeNetNames): Promise<Set<number>> {
  const used = new Set<number>();
  for (const l of await links(null)) {
    if (l.ifname === mine.hostIf) continue;
    for (const a of inet(l)) {
      const s = slotOf(a.local);
      if (s !== null) used.add(s);
    }
  }
  for (const [slot, owner] of await readClaims()) {
    if (owner !== mine.ns && (await claimIsLive(slot, owner))) used.add(slot);
  }
  return used;
}

async function readClaims(): Promise<Map<number, string>> {
  const claims = new Map<number, string>();
  for (const name of await fs.readdir(CLAIMS_DIR).catch(() => [] as string[])) {
    if (!/^\d+$/.test(name)) continue;
    const owner = await fs.readFile(path.join(CLAIMS_DIR, name), "utf8").catch(() => null);
    if (owner !== null) claims.set(Number(name), owner.trim());
  }
  return claims;
}

async function claimIsLive(slot: number, owner: string): Promise<boolean> {
  if (await netnsExists(owner)) return true;
  const stat = await fs.stat(path.join(CLAIMS_DIR, String(slot))).catch(() => null);
  return stat !== null && Date.now() - stat.mtimeMs < CLAIM_GRACE_MS;
}

/** Takes `slot` for `ns` (atomically across processes); false when another namespace holds it. */
async function claim(slot: number, ns: string): Promise<boolean> {
  const file = path.join(CLAIMS_DIR, String(slot));
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await fs.writeFile(file, ns, { flag: "wx", mode: 0o644 });
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const owner = (await fs.readFile(file, "utf8").catch(() => "")).trim();
    if (owner === ns) return true;
    if (owner !== "" && (await claimIsLive(slot, owner))) return false;
    await fs.rm(file, { force: true });
  }
  return false;
}

async function releaseClaims(ns: string, keep: number | null): Promise<void> {
  for (const [slot, owner] of await readClaims()) {
    if (owner === ns && slot !== keep) await fs.rm(path.join(CLAIMS_DIR, String(slot)), { force: true });
  }
}

async function allocate(n: NodeNetNames, candidates: readonly number[]): Promise<number> {
  await fs.mkdir(CLAIMS_DIR, { recursive: true, mode: 0o755 });
  const used = await slotsInUse(n);
  const start = candidates.at(-1) ?? 0;
  const order = [
    ...candidates,
    ...Array.from({ length: NODE_NET_SLOTS }, (_, i) => (start + i) % NODE_NET_SLOTS),
  ];
  for (const slot of order) {
    if (!used.has(slot) && (await claim(slot, n.ns))) return slot;
  }
  throw new IsolationError(`no free /30 left in ${NODE_NET_RANGE} for ${n.ns}`, CLAIMS_DIR);
}

/**
 * Creates or repairs the namespace of `id`, idempotently. An existing, consistent namespace
 * keeps its slot; otherwise `preferSlot` (the one it had before, e.g. before a reboot) is
 * tried first, then the id's preferred slot and the next free ones.
 */
export async function ensureNodeNet(id: string, opts: { preferSlot?: number } = {}): Promise<NodeNet> {
  const n = nodeNetNames(id);
  let state = await readState(n);
  let changed = await ensureNamespace(n.ns, state);
  if (changed) state = { ...state, inside: [] }; // a fresh namespace holds only lo, still down
  const current = currentSlot(n, state);
  const slot =
    current !== null && (await claimOrFalse(current, n.ns))
      ? current
      : await allocate(n, [...(opts.preferSlot !== undefined ? [opts.preferSlot] : []), preferredSlot(id)]);
  if (!pairIsRight(n, slot, state)) {
    await createPair(n, slot, state);
    changed = true;
  }
  await releaseClaims(n.ns, slot);
  const addresses = slotAddresses(slot);
  await checkRoute(n, addresses.innerAddress);
  return { ...n, slot, ...addresses, changed };
}

async function claimOrFalse(slot: number, ns: string): Promise<boolean> {
  await fs.mkdir(CLAIMS_DIR, { recursive: true, mode: 0o755 });
  return claim(slot, ns);
}

/**
 * The host must route the inner address to our veth. If another route wins (an overlapping
 * network on this machine), connections would leave the machine instead: refuse.
 */
async function checkRoute(n: NodeNetNames, innerAddress: string): Promise<void> {
  const out = await ip(["-j", "route", "get", innerAddress]);
  const route = (JSON.parse(out) as Array<{ dev?: string }>)[0];
  if (route?.dev !== n.hostIf) {
    throw new IsolationError(
      `${innerAddress} is routed via ${route?.dev ?? "nothing"}, not ${n.hostIf}: ${NODE_NET_RANGE} overlaps a network of this machine`,
      n.hostIf,
    );
  }
}

/** The node reaches its host's services (HOST_SERVICE_RANGE) through its link to the host. */
export async function routeHostServices(ns: string, hostAddress: string): Promise<void> {
  await ip(["-n", ns, "route", "replace", HOST_SERVICE_RANGE, "via", hostAddress]);
}

/**
 * Puts a service address (HOST_SERVICE_RANGE) on the host's loopback interface, where the
 * nodes' namespaces reach it through their links. Idempotent.
 */
export async function ensureServiceAddress(address: string): Promise<void> {
  const [lo] = await links(null, "lo");
  if (inet(lo).some((a) => a.local === address)) return;
  await ip(["addr", "add", `${address}/32`, "dev", "lo"]).catch((err: Error) => {
    // Another agent of this machine added it meanwhile.
    if (!/File exists/.test(err.message)) throw err;
  });
}

export async function removeServiceAddress(address: string): Promise<void> {
  await ip(["addr", "del", `${address}/32`, "dev", "lo"]).catch(() => "");
}

/** Pids of processes in the namespace (from the kernel, whatever their cgroup). */
export async function netnsPids(ns: string): Promise<number[]> {
  if (!(await netnsExists(ns))) return [];
  const out = await ip(["netns", "pids", ns]).catch(() => "");
  return out
    .split("\n")
    .map(Number)
    .filter((p) => Number.isInteger(p) && p > 0);
}

/**
 * Ends what still runs in the namespace once its node is stopped: work a killed agent left
 * behind (a pgBackRest command, a backup check's scratch server). SIGTERM first so pgBackRest
 * drops its locks, SIGKILL after `graceMs`. Returns the pids it found.
 */
export async function endNetnsProcesses(ns: string, graceMs: number): Promise<number[]> {
  const found = await netnsPids(ns);
  if (found.length === 0) return [];
  for (const pid of found) killQuietly(pid, "SIGTERM");
  const ended = await waitFor(async () => (await netnsPids(ns)).length === 0, graceMs, 50);
  if (!ended) {
    await waitFor(
      async () => {
        const left = await netnsPids(ns);
        for (const pid of left) killQuietly(pid);
        return left.length === 0;
      },
      5_000,
      50,
    );
  }
  return found;
}

/**
 * Deletes the pair, the namespace and the claim. Processes still inside would keep an
 * unnamed namespace alive, out of sight: refuse while there are any.
 */
export async function removeNodeNet(id: string): Promise<void> {
  const n = nodeNetNames(id);
  const left = await netnsPids(n.ns);
  if (left.length > 0) {
    throw new IsolationError(`processes ${left.join(", ")} still run in ${n.ns}`, n.ns);
  }
  if ((await links(null, n.hostIf)).length > 0) await ip(["link", "delete", n.hostIf]);
  await deleteNetns(n.ns);
  await releaseClaims(n.ns, null);
}

/**
 * Deletes a namespace, its veth pairs first. The kernel frees the links of a deleted namespace
 * later, in a deferred cleanup that a loaded machine runs seconds after: until then their
 * peers stay ports of bridges elsewhere (a database's br0, the public bridge), which then look
 * in use. Deleting one end of a pair deletes both at once.
 */
export async function deleteNetns(ns: string): Promise<void> {
  if (!(await netnsExists(ns))) return;
  const veths = await ip(["-n", ns, "-j", "link", "show", "type", "veth"]).then(
    (out) => (JSON.parse(out || "[]") as IpLink[]).map((l) => l.ifname),
    () => [] as string[],
  );
  if (veths.length > 0) {
    const script = veths.map((v) => `link delete ${v}\n`).join("");
    await ip(["-n", ns, "-force", "-batch", "-"], script).catch(() => "");
  }
  await ip(["netns", "delete", ns]);
}

/** The network namespace inode of a process ("net:[4026532176]"), or null if it is gone. */
export async function netnsOfPid(pid: number): Promise<string | null> {
  return fs.readlink(`/proc/${pid}/ns/net`).catch(() => null);
}

/** The inode of a named namespace, comparable with netnsOfPid. */
export async function netnsId(ns: string): Promise<string | null> {
  const stat = await fs.stat(path.join(NETNS_DIR, ns)).catch(() => null);
  return stat ? `net:[${stat.ino}]` : null;
}
