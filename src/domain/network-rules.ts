// Network exposure rules of the two models (reference §2.7, §3.6). Pure.
// Shared: `force-ssl` refuses plaintext; `publicly-available` (which needs force-ssl)
// publishes the database on the public side, with no source filtering. Dedicated: TLS always
// forced, deny by default, at most 30 firewall rules (custom IPv4 ranges or managed ranges).
import type { ArchitectureModel } from "./catalog.ts";
import { ValidationError } from "./errors.ts";
import { addressAt, cidrOf, cidrsOverlap, formatCidr, parseCidr, subdivide, type Cidr } from "./ipv4.ts";

export const FEATURES = ["force-ssl", "publicly-available"] as const;
export type FeatureName = (typeof FEATURES)[number];

export const MAX_FIREWALL_RULES = 30;
/** Each Dedicated node's /30 to its host comes from here (runtime/netns.ts). */
export const NODE_LINK_RANGE = "10.213.0.0/16";
/**
 * Where a node inside its own network namespace reaches its host's services (the region's
 * etcd members): a host whose address is loopback (the embedded fleet, 127.x) also answers on
 * an address of this range, which every node's namespace routes through its link to the host.
 */
export const HOST_SERVICE_RANGE = "100.64.0.0/10";

/** The address a node in a namespace dials for `hostAddress`: a loopback one is mapped. */
export function serviceAddressOf(hostAddress: string): string {
  const parts = hostAddress.split(".").map(Number);
  if (parts.length !== 4 || parts[0] !== 127) return hostAddress;
  // 127.A.B.C -> 100.(64 + A mod 64).B.C: the fleet's hosts differ in A, B or C.
  return `100.${64 + (parts[1]! % 64)}.${parts[2]}.${parts[3]}`;
}
const MAX_LABEL = 100;

export function featureName(value: unknown, field = "name"): FeatureName {
  if (typeof value !== "string" || value === "") {
    throw ValidationError.field(field, `is required: one of ${FEATURES.join(", ")}`);
  }
  if (!(FEATURES as readonly string[]).includes(value)) {
    throw ValidationError.field(
      field,
      `${value} is not a feature of this database: use ${FEATURES.join(" or ")}`,
    );
  }
  return value as FeatureName;
}

/** Checks that `name` may be turned on, given the features already on (or being turned on). */
export function checkEnable(model: ArchitectureModel, name: FeatureName, on: ReadonlySet<FeatureName>): void {
  if (model === "dedicated" && name === "publicly-available") {
    throw ValidationError.field(
      "name",
      "publicly-available is for Shared databases: a Dedicated database is reached through its firewall rules (POST /api/databases/:id/firewall_rules)",
    );
  }
  if (name === "publicly-available" && !on.has("force-ssl")) {
    throw ValidationError.field("name", "publicly-available requires force-ssl: activate force-ssl first");
  }
}

export function checkDisable(
  model: ArchitectureModel,
  name: FeatureName,
  on: ReadonlySet<FeatureName>,
): void {
  if (model === "dedicated" && name === "force-ssl") {
    throw ValidationError.field(
      "feature",
      "force-ssl cannot be removed: Dedicated databases always require TLS",
    );
  }
  if (name === "force-ssl" && on.has("publicly-available")) {
    throw ValidationError.field(
      "feature",
      "force-ssl cannot be removed while publicly-available is on: remove publicly-available first",
    );
  }
}

export type FeatureStatus = "PENDING_TO_ACTIVATE" | "PENDING_TO_REMOVE" | "ACTIVATED" | "FAILED";

/** A feature's status from what the instances report about the generation that carries it. */
export function featureStatus(
  state: "active" | "removing",
  progress: { applied: boolean; failed: boolean },
): FeatureStatus | null {
  if (state === "removing") return progress.applied ? null : "PENDING_TO_REMOVE";
  if (progress.applied) return "ACTIVATED";
  return progress.failed ? "FAILED" : "PENDING_TO_ACTIVATE";
}

export interface ManagedRange {
  id: string;
  name: string;
  region: string;
  cidrs: string[];
}

export type FirewallRuleInput =
  { type: "custom_range"; cidr: string; label: string | null } | { type: "managed_range"; rangeId: string };

/** Reads the reference's unwrapped body `{type, cidr?, label?, range_id?}`. */
export function parseFirewallRule(
  body: Record<string, unknown>,
  ranges: readonly ManagedRange[],
): FirewallRuleInput {
  const type = body.type;
  if (type === "custom_range") {
    if (body.range_id !== undefined && body.range_id !== null) {
      throw ValidationError.field("range_id", "is only for managed_range rules");
    }
    if (typeof body.cidr !== "string" || body.cidr === "") {
      throw ValidationError.field("cidr", "is required: an IPv4 CIDR such as 203.0.113.10/32");
    }
    const parsed = parseCidr(body.cidr.trim());
    if (!parsed.ok) throw ValidationError.field("cidr", parsed.reason);
    return { type, cidr: formatCidr(parsed.cidr), label: labelOf(body.label) };
  }
  if (type === "managed_range") {
    if (body.cidr !== undefined && body.cidr !== null) {
      throw ValidationError.field("cidr", "is only for custom_range rules: a managed range has its own");
    }
    if (body.label !== undefined && body.label !== null) {
      throw ValidationError.field("label", "is not allowed on a managed_range rule");
    }
    const id = body.range_id;
    if (typeof id !== "string" || id === "") {
      throw ValidationError.field("range_id", "is required: see GET /api/firewall/managed_ranges");
    }
    if (!ranges.some((r) => r.id === id)) {
      throw ValidationError.field(
        "range_id",
        `${id} is not a managed range: see GET /api/firewall/managed_ranges`,
      );
    }
    return { type, rangeId: id };
  }
  throw ValidationError.field("type", "must be custom_range or managed_range");
}

function labelOf(value: unknown): string | null {
  if (value === undefined || value === null || value === "") return null;
  if (typeof value !== "string") throw ValidationError.field("label", "must be a string");
  // eslint-disable-next-line no-control-regex
  if (value.length > MAX_LABEL || /[\u0000-\u001f]/.test(value)) {
    throw ValidationError.field("label", `must be at most ${MAX_LABEL} printable characters`);
  }
  return value;
}

/**
 * How the public network is used: its first address is the control plane's, the last
 * quarter is split between the regions as their app egress ranges (the managed ranges), and
 * the rest is handed out to hosts and Dedicated databases.
 */
export interface PublicLayout {
  network: Cidr;
  control: string;
  egress: Map<string, string>;
  /** Offsets (from the network address) that may be allocated, inclusive. */
  firstOffset: number;
  lastOffset: number;
}

export function publicLayout(publicNetwork: string, regions: readonly string[]): PublicLayout {
  const network = cidrOf(publicNetwork);
  const quarter = subdivide(network, 4, 3);
  const parts = 2 ** Math.ceil(Math.log2(Math.max(1, regions.length)));
  const egress = new Map(regions.map((r, i) => [r, formatCidr(subdivide(quarter, parts, i))]));
  return {
    network,
    control: addressAt(network, 1),
    egress,
    firstOffset: 2,
    lastOffset: quarter.network - network.network - 1,
  };
}

export function managedRanges(publicNetwork: string, regions: readonly string[]): ManagedRange[] {
  const layout = publicLayout(publicNetwork, regions);
  return regions.map((region) => ({
    id: `mr-${region}-egress`,
    name: `Cellar ${region} region`,
    region,
    cidrs: [layout.egress.get(region)!],
  }));
}

/** A public network must leave room for a layout: at least a /24, and private to this platform. */
export function checkPublicNetwork(value: string): string | null {
  const parsed = parseCidr(value);
  if (!parsed.ok) return parsed.reason;
  if (parsed.cidr.prefix > 24 || parsed.cidr.prefix < 8) return `${value} must be between a /8 and a /24`;
  return null;
}

/**
 * A Dedicated database's own range sits beside its nodes' links to their host and beside the
 * public side: overlapping either would misroute its traffic.
 */
export function checkIpRangeFree(ipRange: string, publicNetwork: string, field = "ip_range"): void {
  const range = cidrOf(ipRange);
  for (const [reserved, what] of [
    [NODE_LINK_RANGE, "Cellar's links to its nodes"],
    [HOST_SERVICE_RANGE, "Cellar's host services as its nodes reach them"],
    [publicNetwork, "the public side of this Cellar"],
  ] as const) {
    if (cidrsOverlap(range, cidrOf(reserved))) {
      throw ValidationError.field(
        field,
        `${ipRange} overlaps ${reserved}, used by ${what}: choose another range`,
      );
    }
  }
}
