// What a Dedicated node gets on top of its sandbox: a volume of its own holding the node's
// base dir (so PGDATA lives on it), and, as root, a network namespace in which PostgreSQL
// listens on an inner address that only this host's processes reach, plus an address on its
// database's own network (runtime/vpc.ts) where the database's gateways reach it. Every node,
// Shared ones too, gets its base dir encrypted at rest under its own key where the filesystem
// allows (node-encryption.ts). Whatever the host cannot do is said in the node's status, never
// skipped silently.
//
// Layout of a Dedicated node's volume: the image <instance dir>/volume.img is mounted at
// <instance dir>/volume; its directory node/ carries the encryption policy (ext4 refuses one on
// a filesystem's root) and <instance dir>/node is a symlink to it. A volume made before
// encryption at rest (node.img, mounted at node/ itself) keeps working, reported not encrypted.
import fs from "node:fs/promises";
import path from "node:path";
import { postgresUser } from "../engines/postgresql/command.ts";
import type { GatewaySpec } from "../engines/postgresql/haproxy-config.ts";
import type { NodeSpec } from "../reconciler/instance-spec.ts";
import type { GatewayNetwork, NodeNetwork } from "../reconciler/network-spec.ts";
import type { Logger } from "../log.ts";
import { IsolationError } from "../runtime/cgroup-fs.ts";
import {
  endNetnsProcesses,
  ensureNodeNet,
  inNetns,
  netnsExists,
  NODE_NET_RANGE,
  nodeNetNames,
  removeNodeNet,
  routeHostServices,
} from "../runtime/netns.ts";
import { attachNode, checkVpcRange, ensureVpc, removeVpcIfUnused } from "../runtime/vpc.ts";
import { prepareGatewayNetwork, releaseGatewayNetwork } from "./gateway-network.ts";
import { probeIsolation, type Availability } from "../runtime/probe.ts";
import { detachVolume, ensureVolume, imagePathOf, removeVolume, volumeUsage } from "../runtime/volume.ts";
import { NodeEncryption, type AtRest, type CopyKey } from "./node-encryption.ts";

const NETWORK_FILE = "network.json";
const INSTANCE_ID = /^inst-[a-z0-9]+$/;

/** What the host can do, from the isolation probe. */
export interface NodeIsolationFacts {
  netns: Availability;
  loopVolumes: Availability;
}

interface NetworkRecord {
  ns: string;
  slot: number;
  innerAddress: string;
  /** The node's place in its database's network, when it has one. */
  vpc?: { databaseId: string; publicNetwork: string; address: string };
}

type NetworkedNodeSpec = NodeSpec & { network?: NodeNetwork };

/** How to run a node: the address it listens on, its start command, and what it lacks. */
export interface NodePlacement {
  listenAddress: string;
  wrap(argv: string[]): string[];
  notes: string[];
  /** Whether its base dir is encrypted at rest (unknown when not prepared). */
  atRest?: AtRest;
}

/** Where a node's base dir lives: see the layout above. */
type NodeStorage =
  | { kind: "volume"; volume: string; encrypted: string }
  | { kind: "old-volume"; volume: string }
  | { kind: "directory"; encrypted: string };

const VOLUME = "volume";

export interface NodeIsolationOptions {
  /** The instance's directory (<stateDir>/instances/<id>). */
  dirOf(id: string): string;
  /** Default: probeIsolation() once, at first use. */
  facts?: () => Promise<NodeIsolationFacts>;
  log?: Logger | undefined;
}

interface NetworkSetup {
  result: Promise<NetworkRecord | null>;
  pending: boolean;
}

const exists = (p: string) =>
  fs.access(p).then(
    () => true,
    () => false,
  );

export class NodeIsolation {
  private facts: Promise<NodeIsolationFacts> | null = null;
  private readonly networks = new Map<string, NetworkSetup>();
  private readonly notes = new Map<string, string[]>();
  private readonly encryption: NodeEncryption;

  constructor(private readonly opts: NodeIsolationOptions) {
    this.encryption = new NodeEncryption();
  }

  static applies(spec: NodeSpec): boolean {
    return spec.model === "dedicated";
  }

  /** Whether nodes of this host get network namespaces (as root, with nsenter). */
  async makesNetworks(): Promise<boolean> {
    return (await this.hostFacts()).netns.ok;
  }

  private hostFacts(): Promise<NodeIsolationFacts> {
    this.facts ??= this.opts.facts?.() ?? hostFacts();
    return this.facts;
  }

  private nodeDir(id: string): string {
    return path.join(this.opts.dirOf(id), "node");
  }

  private volumeDir(id: string): string {
    return path.join(this.opts.dirOf(id), VOLUME);
  }

  /** A node's storage as found on disk (a new one has nothing yet: a directory). */
  private async storageOf(id: string): Promise<NodeStorage> {
    if (await exists(imagePathOf(this.nodeDir(id)))) return { kind: "old-volume", volume: this.nodeDir(id) };
    const volume = this.volumeDir(id);
    if (await exists(imagePathOf(volume)))
      return { kind: "volume", volume, encrypted: path.join(volume, "node") };
    return { kind: "directory", encrypted: this.nodeDir(id) };
  }

  /**
   * Starts setting up the node's network, synchronously registered: the agent converges a
   * database's gateway in parallel with its node, and the gateway waits for this address.
   */
  begin(id: string, spec: NodeSpec): NetworkSetup | null {
    if (!NodeIsolation.applies(spec)) return null;
    const current = this.networks.get(id);
    if (current?.pending) return current;
    const setup: NetworkSetup = { result: Promise.resolve(null), pending: true };
    setup.result = this.ensureNetwork(id, spec).finally(() => {
      setup.pending = false;
    });
    setup.result.catch(() => undefined); // awaited by prepare() and gatewaySpec()
    this.networks.set(id, setup);
    return setup;
  }

  private async ensureNetwork(id: string, spec: NetworkedNodeSpec): Promise<NetworkRecord | null> {
    if (!(await this.hostFacts()).netns.ok) return null;
    const before = await this.readRecord(id);
    const net = await ensureNodeNet(id, before ? { preferSlot: before.slot } : {});
    const record: NetworkRecord = { ns: net.ns, slot: net.slot, innerAddress: net.innerAddress };
    // An HA node's Patroni reaches the region's etcd members there.
    if (spec.ha) await routeHostServices(net.ns, net.hostAddress);
    const vpc = spec.network?.vpc;
    if (vpc) {
      // Its range must not shadow the node's own link to the host, nor the public side.
      checkVpcRange(vpc.range, [NODE_NET_RANGE, vpc.publicNetwork]);
      await ensureVpc(vpc);
      await attachNode(vpc, id, net.ns, vpc.address);
      record.vpc = { databaseId: vpc.databaseId, publicNetwork: vpc.publicNetwork, address: vpc.address };
    }
    if (JSON.stringify(record) !== JSON.stringify(before)) {
      await fs.mkdir(this.opts.dirOf(id), { recursive: true, mode: 0o755 });
      const file = path.join(this.opts.dirOf(id), NETWORK_FILE);
      await fs.writeFile(`${file}.tmp`, JSON.stringify(record));
      await fs.rename(`${file}.tmp`, file);
    }
    return record;
  }

  private async readRecord(id: string): Promise<NetworkRecord | null> {
    const text = await fs.readFile(path.join(this.opts.dirOf(id), NETWORK_FILE), "utf8").catch(() => null);
    return text ? (JSON.parse(text) as NetworkRecord) : null;
  }

  /**
   * Before the data dir is touched: the volume mounted at the node's base dir and the network
   * ready. `stopNode` is called when the volume can only grow offline (plan change).
   */
  async prepare(
    id: string,
    spec: NodeSpec,
    stopNode: () => Promise<void>,
    key?: string,
  ): Promise<NodePlacement> {
    if (!NodeIsolation.applies(spec)) {
      const atRest = await this.encryption.prepare(id, this.nodeDir(id), key, { onHostFs: true });
      return { listenAddress: spec.listen.address, wrap: (argv) => argv, notes: [], atRest };
    }
    const facts = await this.hostFacts();
    const { notes, atRest } = await this.ensureStorageOf(id, spec, stopNode, facts, key);
    const setup = this.networks.get(id) ?? this.begin(id, spec)!;
    const net = await setup.result;
    if (!net) notes.push(`no network namespace (${facts.netns.detail})`);
    this.notes.set(id, notes);
    return {
      listenAddress: listenAddressOf(net, spec),
      wrap: net ? (argv) => inNetns(net.ns, argv) : (argv) => argv,
      notes,
      atRest,
    };
  }

  /** Whether the node's base dir is encrypted at rest, as last read back from the kernel. */
  async atRest(id: string): Promise<AtRest> {
    const storage = await this.storageOf(id);
    if (storage.kind === "old-volume") {
      const why = "its volume was made before encryption at rest (no policy on it)";
      return this.encryption.observe(id, null, { onHostFs: false, why });
    }
    return this.encryption.observe(id, storage.encrypted, { onHostFs: storage.kind === "directory" });
  }

  /** The key a copy of the node's data (a backup verification's) is encrypted with, if any. */
  async copyKey(id: string): Promise<CopyKey> {
    const storage = await this.storageOf(id);
    if (storage.kind === "old-volume") return { encrypted: false };
    return this.encryption.copyKey(id, storage.encrypted, { onHostFs: storage.kind === "directory" });
  }

  /** Where the node listens, as prepare() said, without preparing anything (observation). */
  async listenAddress(id: string, spec: NodeSpec): Promise<string> {
    if (!NodeIsolation.applies(spec)) return spec.listen.address;
    const setup = this.networks.get(id);
    const fresh = setup ? await setup.result.catch(() => null) : null;
    return listenAddressOf(fresh ?? (await this.readRecord(id)), spec);
  }

  /** The node's volume mounted (grown to its plan) and its base dir unlocked, or why not. */
  private async ensureStorageOf(
    id: string,
    spec: NodeSpec,
    stopNode: () => Promise<void>,
    facts: NodeIsolationFacts,
    key: string | undefined,
  ): Promise<{ notes: string[]; atRest: AtRest }> {
    const target = this.nodeDir(id);
    // A node made before volumes existed keeps its data where it is: mounting over it would hide it.
    if (facts.loopVolumes.ok && (await isUnmountedDataDir(target))) {
      const why = "its data dir predates per-node volumes";
      return {
        notes: [`no volume of its own (${why})`],
        atRest: await this.encryption.observe(id, null, { onHostFs: false, why }),
      };
    }
    const storage = await this.storageOf(id);
    if (storage.kind === "old-volume") {
      const vol = await this.mountVolume(storage.volume, spec, stopNode, { loop: true, ...ownerOpt() });
      return { notes: volumeNotes(vol, facts), atRest: await this.atRest(id) };
    }
    if (!facts.loopVolumes.ok) {
      // No volume: a plain directory on the host's filesystem, as a Shared node has.
      const vol = await ensureVolume(target, spec.limits.diskGb, { loop: false, ...ownerOpt() });
      const atRest = await this.encryption.prepare(id, target, key, { onHostFs: true });
      return { notes: volumeNotes(vol, facts), atRest };
    }
    const volume = this.volumeDir(id);
    const vol = await this.mountVolume(volume, spec, stopNode, { loop: true, encrypt: true });
    // Added after every mount: the filesystem's keyring goes with each unmount.
    const atRest = await this.encryption.prepare(id, path.join(volume, "node"), key, { onHostFs: false });
    await linkBaseDir(target, path.join(VOLUME, "node"));
    return { notes: volumeNotes(vol, facts), atRest };
  }

  private async mountVolume(
    target: string,
    spec: NodeSpec,
    stopNode: () => Promise<void>,
    opts: Parameters<typeof ensureVolume>[2],
  ) {
    return ensureVolume(target, spec.limits.diskGb, opts).catch(async (err: unknown) => {
      // A bigger plan: without CAP_SYS_RESOURCE the filesystem grows only unmounted.
      if (!(err instanceof IsolationError && /cannot grow .* while in use/.test(err.message))) throw err;
      await stopNode();
      return ensureVolume(target, spec.limits.diskGb, opts);
    });
  }

  /**
   * The spec HAProxy runs with: inside its database's network when it has one (the backends
   * are then the nodes' addresses there), else with each local node's inner address in place
   * of its host address.
   */
  async gatewaySpec(spec: GatewaySpec & { network?: GatewayNetwork }, id?: string): Promise<GatewaySpec> {
    if (spec.network && id !== undefined && (await this.hostFacts()).netns.ok) {
      const prepared = await prepareGatewayNetwork(this.opts.dirOf(id), spec);
      if (prepared?.netns) return prepared;
    }
    const backends = await Promise.all(
      spec.backends.map(async (b) => {
        const inner = await this.innerAddressOf(b.name);
        return inner ? { ...b, host: inner } : b;
      }),
    );
    return { ...spec, backends };
  }

  private async innerAddressOf(id: string): Promise<string | null> {
    if (!INSTANCE_ID.test(id)) return null;
    const setup = this.networks.get(id);
    const fresh = setup ? await setup.result.catch(() => null) : null;
    return (fresh ?? (await this.readRecord(id)))?.innerAddress ?? null;
  }

  /** "isolation: ..." for the node's status while it runs; "" when it has everything. */
  statusNote(id: string): string {
    const notes = this.notes.get(id) ?? [];
    return notes.length ? `isolation: ${notes.join("; ")}` : "";
  }

  /** Bytes used on the node's own volume; null when it has none (measure the directory then). */
  async usedBytes(id: string): Promise<number | null> {
    const storage = await this.storageOf(id);
    if (storage.kind === "directory") return null;
    return (await volumeUsage(storage.volume)).usedBytes;
  }

  /**
   * Gives the host's resources back: stops the node (a mounted volume and a namespace with
   * processes cannot go), deletes its namespace, then unmounts its volume. `keepData` keeps
   * the image (agent shutdown); otherwise it is deleted with the data (instance removal).
   */
  async release(id: string, stopNode: () => Promise<void>, opts: { keepData: boolean }): Promise<void> {
    const storage = await this.storageOf(id);
    const hasVolume = storage.kind !== "directory";
    const hasNetwork = await netnsExists(nodeNetNames(id).ns);
    const vpc = (await this.readRecord(id))?.vpc;
    const encrypted = storage.kind === "old-volume" ? null : storage.encrypted;
    // Its key goes below: a node whose files become unreadable is stopped first.
    const hasData = storage.kind === "directory" && (await exists(storage.encrypted));
    if (hasVolume || hasNetwork || hasData) await stopNode();
    const leftovers = await endNetnsProcesses(nodeNetNames(id).ns, 10_000);
    if (leftovers.length > 0)
      this.opts.log?.warn("ended processes left in the node's namespace", { id, pids: leftovers.join(",") });
    await removeNodeNet(id);
    // Gone with the node's namespace, its port on the database's bridge may have been the last.
    if (vpc) await removeVpcIfUnused(vpc.databaseId, vpc.publicNetwork);
    await releaseGatewayNetwork(this.opts.dirOf(id), { hostStops: opts.keepData });
    // Its key out of the keyring: the files stay unreadable until the node is prepared again.
    await this.encryption.release(id, encrypted, { onHostFs: storage.kind === "directory" });
    if (hasVolume) await (opts.keepData ? detachVolume(storage.volume) : removeVolume(storage.volume));
    if (!opts.keepData) {
      this.networks.delete(id);
      this.notes.delete(id);
    }
  }
}

/** Both addresses: the host's processes use the first, the database's gateways the second. */
function listenAddressOf(net: NetworkRecord | null, spec: NodeSpec): string {
  return net ? [net.innerAddress, ...(net.vpc ? [net.vpc.address] : [])].join(",") : spec.listen.address;
}

const ownerOpt = () => {
  const owner = postgresUser();
  return owner ? { owner } : {};
};

function volumeNotes(vol: { quotaEnforced: boolean; note: string }, facts: NodeIsolationFacts): string[] {
  return vol.quotaEnforced ? [] : [`${vol.note} (${facts.loopVolumes.detail})`];
}

/** <instance dir>/node as a symlink to the volume's encrypted directory (relative, so it moves with it). */
async function linkBaseDir(link: string, target: string): Promise<void> {
  const found = await fs.lstat(link).catch(() => null);
  if (found?.isSymbolicLink() && (await fs.readlink(link)) === target) return;
  // An empty directory left by an earlier step (nothing was written there): replaced.
  if (found?.isDirectory()) await fs.rmdir(link);
  else if (found) throw new IsolationError(`${link} is in the way of the node's base dir`, link);
  await fs.symlink(target, link);
}

/** A non-empty directory with no volume image beside it and nothing mounted on it. */
async function isUnmountedDataDir(dir: string): Promise<boolean> {
  if (await exists(imagePathOf(dir))) return false;
  const self = await fs.stat(dir).catch(() => null);
  if (!self || self.dev !== (await fs.stat(path.dirname(dir))).dev) return false;
  return (await fs.readdir(dir)).length > 0;
}

/** The probe's answer, plus nsenter, which starts the server inside its namespace. */
async function hostFacts(): Promise<NodeIsolationFacts> {
  const probe = await probeIsolation();
  const nsenter = await Promise.any(
    ["/usr/bin/nsenter", "/bin/nsenter"].map((p) => fs.access(p, fs.constants.X_OK)),
  ).then(
    () => true,
    () => false,
  );
  if (probe.netns.ok && !nsenter) {
    return { ...probe, netns: { ok: false, detail: "nsenter (util-linux) not installed" } };
  }
  return probe;
}
