// What a gateway's spec asks of the host's networking before HAProxy starts: a Dedicated
// database's network (the gateway runs inside it; its edge gets the database's rules), or a
// Shared host's addresses on its region's private network and on the public side. Recorded on
// disk (a database's network in the gateway's directory, the host's addresses beside the
// instances) so that removal and the agent's stop give everything back, also after a restart.
import fs from "node:fs/promises";
import path from "node:path";
import type { GatewaySpecJson } from "../reconciler/instance-spec.ts";
import type { GatewayNetwork } from "../reconciler/network-spec.ts";
import { NODE_NET_RANGE } from "../runtime/netns.ts";
import {
  checkVpcRange,
  ensurePublicAddress,
  ensureVpc,
  removePublicAddress,
  removePublicBridgeIfUnused,
  removeVpcIfUnused,
} from "../runtime/vpc.ts";
import { withFileLock } from "../runtime/file-lock.ts";
import { ensurePrivateAddress, removePrivateAddress } from "../runtime/private-net.ts";

const RECORD = "gateway-network.json";
/** In the host's state dir (not among the instance dirs): the addresses this host put on shared bridges, for its stop. */
const HOST_RECORD = "host-network.json";

interface GatewayNetworkRecord {
  publicNetwork: string;
  databaseId?: string;
}

/** A host's addresses on the bridges of the host namespace (public side, region's private network). */
interface HostNetworkRecord {
  publicNetwork?: string;
  hostPublicAddress?: string;
  privateNetwork?: { block: string; address: string };
}

async function writeJson(file: string, value: object): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o755 });
  await fs.writeFile(`${file}.tmp`, JSON.stringify(value));
  await fs.rename(`${file}.tmp`, file);
}

async function readJson<T>(file: string): Promise<T | null> {
  const text = await fs.readFile(file, "utf8").catch(() => null);
  return text ? (JSON.parse(text) as T) : null;
}

// `dir` is <state dir>/instances/<id>.
const hostRecordOf = (dir: string) => path.join(path.dirname(path.dirname(dir)), HOST_RECORD);

/** Adds to the host's record before the address is put on, so a stop never misses one. */
async function recordHostAddresses(dir: string, add: HostNetworkRecord): Promise<void> {
  const file = hostRecordOf(dir);
  // The host's gateways converge side by side: one read-modify-write at a time.
  await withFileLock(`${file}.lock`, async () => {
    const old = (await readJson<HostNetworkRecord>(file)) ?? {};
    const next = { ...old, ...add };
    if (JSON.stringify(next) !== JSON.stringify(old)) await writeJson(file, next);
  });
}

/**
 * Sets up what `spec.network` asks for and returns the spec HAProxy runs with (inside the
 * database's namespace when it has one). Null when the spec asks for nothing.
 */
export async function prepareGatewayNetwork(
  dir: string,
  spec: GatewaySpecJson & { network?: GatewayNetwork },
): Promise<GatewaySpecJson | null> {
  const net = spec.network;
  if (!net) return null;
  if (net.vpc) {
    const { edge, ...vpc } = net.vpc;
    checkVpcRange(vpc.range, [NODE_NET_RANGE, net.publicNetwork]);
    await writeJson(path.join(dir, RECORD), { publicNetwork: net.publicNetwork, databaseId: vpc.databaseId });
    // The edge and the gateway enforce the same rules: a gap in one is caught by the other.
    const names = await ensureVpc(vpc, edge);
    return { ...spec, netns: names.ns };
  }
  const { privateNetwork, hostPublicAddress } = net;
  await recordHostAddresses(dir, {
    ...(privateNetwork ? { privateNetwork } : {}),
    ...(hostPublicAddress ? { publicNetwork: net.publicNetwork, hostPublicAddress } : {}),
  });
  if (privateNetwork) await ensurePrivateAddress(privateNetwork.block, privateNetwork.address);
  if (hostPublicAddress) await ensurePublicAddress(net.publicNetwork, hostPublicAddress);
  return spec;
}

/**
 * After the gateway stopped: its database's network goes if nothing else uses it. The host's
 * addresses on the public side and on its region's private network serve all its gateways:
 * they go when the agent stops (`hostStops`).
 */
export async function releaseGatewayNetwork(dir: string, opts: { hostStops: boolean }): Promise<void> {
  const record = await readJson<GatewayNetworkRecord>(path.join(dir, RECORD));
  if (record?.databaseId) await removeVpcIfUnused(record.databaseId, record.publicNetwork);
  if (!opts.hostStops) return;
  const host = await readJson<HostNetworkRecord>(hostRecordOf(dir));
  if (!host) return;
  if (host.privateNetwork) await removePrivateAddress(host.privateNetwork.block, host.privateNetwork.address);
  if (host.publicNetwork && host.hostPublicAddress) {
    await removePublicAddress(host.publicNetwork, host.hostPublicAddress);
    await removePublicBridgeIfUnused(host.publicNetwork);
  }
  await fs.rm(hostRecordOf(dir), { force: true });
}
