// What a Dedicated node gets on top of its sandbox: a volume of its own mounted as the node's
// base dir (<instance dir>/node, so PGDATA lives on it), and, as root, a network namespace in
// which PostgreSQL listens on an inner address that only this host's processes reach, plus an
// address on its database's own network (runtime/vpc.ts) where the database's gateways reach
// it. Whatever the host cannot do is said in the node's status, never skipped silently.
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
}

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

  constructor(private readonly opts: NodeIsolationOptions) {}

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
  async prepare(id: string, spec: NodeSpec, stopNode: () => Promise<void>): Promise<NodePlacement> {
    if (!NodeIsolation.applies(spec)) {
      return { listenAddress: spec.listen.address, wrap: (argv) => argv, notes: [] };
    }
    const facts = await this.hostFacts();
    const notes = await this.ensureVolumeOf(id, spec, stopNode, facts);
    const setup = this.networks.get(id) ?? this.begin(id, spec)!;
    const net = await setup.result;
    if (!net) notes.push(`no network namespace (${facts.netns.detail})`);
    this.notes.set(id, notes);
    return {
      listenAddress: listenAddressOf(net, spec),
      wrap: net ? (argv) => inNetns(net.ns, argv) : (argv) => argv,
      notes,
    };
  }

  /** Where the node listens, as prepare() said, without preparing anything (observation). */
  async listenAddress(id: string, spec: NodeSpec): Promise<string> {
    if (!NodeIsolation.applies(spec)) return spec.listen.address;
    const setup = this.networks.get(id);
    const fresh = setup ? await setup.result.catch(() => null) : null;
    return listenAddressOf(fresh ?? (await this.readRecord(id)), spec);
  }

  private async ensureVolumeOf(
    id: string,
    spec: NodeSpec,
    stopNode: () => Promise<void>,
    facts: NodeIsolationFacts,
  ): Promise<string[]> {
    const target = this.nodeDir(id);
    // A node made before volumes existed keeps its data where it is: mounting over it would hide it.
    if (facts.loopVolumes.ok && (await isUnmountedDataDir(target))) {
      return ["no volume of its own (its data dir predates per-node volumes)"];
    }
    const owner = postgresUser();
    const opts = { loop: facts.loopVolumes.ok, ...(owner ? { owner } : {}) };
    const vol = await ensureVolume(target, spec.limits.diskGb, opts).catch(async (err: unknown) => {
      // A bigger plan: without CAP_SYS_RESOURCE the filesystem grows only unmounted.
      if (!(err instanceof IsolationError && /cannot grow .* while in use/.test(err.message))) throw err;
      await stopNode();
      return ensureVolume(target, spec.limits.diskGb, opts);
    });
    return vol.quotaEnforced ? [] : [`${vol.note} (${facts.loopVolumes.detail})`];
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
    const target = this.nodeDir(id);
    if (!(await exists(imagePathOf(target)))) return null;
    return (await volumeUsage(target)).usedBytes;
  }

  /**
   * Gives the host's resources back: stops the node (a mounted volume and a namespace with
   * processes cannot go), deletes its namespace, then unmounts its volume. `keepData` keeps
   * the image (agent shutdown); otherwise it is deleted with the data (instance removal).
   */
  async release(id: string, stopNode: () => Promise<void>, opts: { keepData: boolean }): Promise<void> {
    const target = this.nodeDir(id);
    const hasVolume = await exists(imagePathOf(target));
    const hasNetwork = await netnsExists(nodeNetNames(id).ns);
    const vpc = (await this.readRecord(id))?.vpc;
    if (hasVolume || hasNetwork) await stopNode();
    const leftovers = await endNetnsProcesses(nodeNetNames(id).ns, 10_000);
    if (leftovers.length > 0)
      this.opts.log?.warn("ended processes left in the node's namespace", { id, pids: leftovers.join(",") });
    await removeNodeNet(id);
    // Gone with the node's namespace, its port on the database's bridge may have been the last.
    if (vpc) await removeVpcIfUnused(vpc.databaseId, vpc.publicNetwork);
    await releaseGatewayNetwork(this.opts.dirOf(id), { hostStops: opts.keepData });
    if (hasVolume) await (opts.keepData ? detachVolume(target) : removeVolume(target));
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
