// What a gateway's spec asks of the host's networking before HAProxy starts: a Dedicated
// database's network (the gateway runs inside it; its edge gets the database's rules), or a
// Shared host's public address on the public bridge. Recorded in the gateway's directory so
// that removal gives everything back, also after an agent restart.
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

const RECORD = "gateway-network.json";

interface GatewayNetworkRecord {
  publicNetwork: string;
  databaseId?: string;
  hostPublicAddress?: string;
}

async function writeRecord(dir: string, record: GatewayNetworkRecord): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: 0o755 });
  const file = path.join(dir, RECORD);
  await fs.writeFile(`${file}.tmp`, JSON.stringify(record));
  await fs.rename(`${file}.tmp`, file);
}

async function readRecord(dir: string): Promise<GatewayNetworkRecord | null> {
  const text = await fs.readFile(path.join(dir, RECORD), "utf8").catch(() => null);
  return text ? (JSON.parse(text) as GatewayNetworkRecord) : null;
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
    await writeRecord(dir, { publicNetwork: net.publicNetwork, databaseId: vpc.databaseId });
    // The edge and the gateway enforce the same rules: a gap in one is caught by the other.
    const names = await ensureVpc(vpc, edge);
    return { ...spec, netns: names.ns };
  }
  if (net.hostPublicAddress) {
    await writeRecord(dir, { publicNetwork: net.publicNetwork, hostPublicAddress: net.hostPublicAddress });
    await ensurePublicAddress(net.publicNetwork, net.hostPublicAddress);
  }
  return spec;
}

/**
 * After the gateway stopped: its database's network goes if nothing else uses it. A host's
 * public address serves all its gateways: it goes only when the agent stops (`hostStops`).
 */
export async function releaseGatewayNetwork(dir: string, opts: { hostStops: boolean }): Promise<void> {
  const record = await readRecord(dir);
  if (!record) return;
  if (record.databaseId) await removeVpcIfUnused(record.databaseId, record.publicNetwork);
  if (record.hostPublicAddress && opts.hostStops) {
    await removePublicAddress(record.publicNetwork, record.hostPublicAddress);
    await removePublicBridgeIfUnused(record.publicNetwork);
  }
}
