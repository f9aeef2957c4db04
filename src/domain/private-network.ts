// The private network of each region in the embedded mode: the network that a region's apps and
// its Shared databases share (reference §2.7), apart from the public side. Pure.
//
// CELLAR_PRIVATE_NETWORK is split into one block per region (as many equal parts as the next
// power of two of the region count). In a block, the lower half holds the hosts' addresses and
// the upper half is where the region's apps live (operators attach their apps' namespaces or
// containers there). A host whose own address is not loopback sits on a real network already,
// which plays this part: it gets no address here.
import { addressAt, cidrOf, cidrSize, cidrsOverlap, formatCidr, parseIpv4, subdivide } from "./ipv4.ts";

/** The private block of `region`; null for a region that is not configured. */
export function regionPrivateBlock(
  privateNetwork: string,
  regions: readonly string[],
  region: string,
): string | null {
  const i = regions.indexOf(region);
  if (i < 0) return null;
  const parts = 2 ** Math.ceil(Math.log2(Math.max(1, regions.length)));
  return formatCidr(subdivide(cidrOf(privateNetwork), parts, i));
}

/** Where the region's apps live: the upper half of its block. */
export function appRange(block: string): string {
  return formatCidr(subdivide(cidrOf(block), 2, 1));
}

/**
 * A loopback host's address (the embedded fleet, 127.A.B.C) on its region's private network:
 * offset B·256 + C of the block's lower half, past its network address. Hosts of one fleet
 * differ in B and C (their A is the fleet's), so they never share one. Null for a host on a
 * real network (its own address is its private one) or past the lower half.
 */
export function hostPrivateAddress(block: string, hostAddress: string): string | null {
  const parts = hostAddress.split(".").map(Number);
  if (parts.length !== 4 || parts[0] !== 127 || parseIpv4(hostAddress) === null) return null;
  const lower = subdivide(cidrOf(block), 2, 0);
  const offset = parts[2]! * 256 + parts[3]!;
  if (offset < 1 || offset >= cidrSize(lower) - 1) return null;
  return addressAt(lower, offset);
}

/** Why `privateNetwork` cannot serve beside `others` (name → CIDR); null when it can. */
export function privateNetworkProblem(
  privateNetwork: string,
  others: ReadonlyArray<readonly [string, string]>,
): string | null {
  const range = cidrOf(privateNetwork);
  const clash = others.find(([, cidr]) => cidrsOverlap(range, cidrOf(cidr)));
  return clash ? `${privateNetwork} overlaps ${clash[1]} (${clash[0]})` : null;
}
