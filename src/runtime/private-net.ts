// A region's private network on this machine (domain/private-network.ts): a bridge in the host
// namespace carrying the region's block, with the addresses of the region's Shared hosts on it.
// Apps join it with an address of the block's upper half (a namespace or container with a veth
// on the bridge); the public side is another bridge, and nothing routes between the two (this
// host's forwarding and firewall are left as they are).
import { createHash } from "node:crypto";
import path from "node:path";
import { cidrOf } from "../domain/ipv4.ts";
import { withFileLock } from "./file-lock.ts";
import { inet, ip, isUp, links } from "./netns.ts";

const LOCK_DIR = "/run/cellar/net-locks";

/** The host-namespace bridge of a region's private block: one per block, named from it. */
export function privateBridgeName(block: string): string {
  return `cr${createHash("sha256").update(`private:${block}`).digest("hex").slice(0, 10)}`;
}

const lock = (name: string, fn: () => Promise<void>) => withFileLock(path.join(LOCK_DIR, name), fn);

/** The region's bridge, up, with `address` (a Shared host's) on it. Idempotent. */
export async function ensurePrivateAddress(block: string, address: string): Promise<string> {
  const bridge = privateBridgeName(block);
  const [seen] = await links(null, bridge);
  if (isUp(seen) && inet(seen).some((a) => a.local === address)) return bridge;
  await lock(bridge, async () => {
    const [l] = await links(null, bridge);
    if (!l) await ip(["link", "add", bridge, "type", "bridge"]);
    if (!inet(l).some((a) => a.local === address)) {
      await ip(["addr", "add", `${address}/${cidrOf(block).prefix}`, "dev", bridge]).catch((err: Error) => {
        // Another agent of this machine added it meanwhile.
        if (!/File exists/.test(err.message)) throw err;
      });
    }
    if (!isUp(l)) await ip(["link", "set", bridge, "up"]);
  });
  return bridge;
}

/** Takes a host's address back; the bridge goes once no address and no port is left on it. */
export async function removePrivateAddress(block: string, address: string): Promise<void> {
  const bridge = privateBridgeName(block);
  await lock(bridge, async () => {
    const [l] = await links(null, bridge);
    if (!l) return;
    if (inet(l).some((a) => a.local === address)) {
      await ip(["addr", "del", `${address}/${cidrOf(block).prefix}`, "dev", bridge]).catch(() => "");
    }
    const ports = (await links(null)).filter((x) => x.master === bridge);
    const left = inet((await links(null, bridge))[0]);
    if (ports.length === 0 && left.length === 0) await ip(["link", "delete", bridge]).catch(() => "");
  });
}
