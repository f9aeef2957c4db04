// The network edge of a database's network: an nftables table inside the database's own
// namespace (never the root namespace). Deny by default: from the uplink, only new TCP
// connections to the database's ports from allowed sources get through; everything else
// is answered with a reset (TCP) or dropped. Nothing is ever forwarded across the namespace.
import { execFile } from "node:child_process";
import { cidrOf, cidrSize, formatCidr, type Cidr } from "../domain/ipv4.ts";
import { IsolationError } from "./cgroup-fs.ts";
import { inNetns } from "./netns.ts";

export const EDGE_TABLE = "cellar_edge";

export interface EdgeRules {
  /** The interface facing the outside (the public side). */
  uplink: string;
  /** TCP ports clients may reach (the gateways' public port). */
  ports: number[];
  /** Sources allowed by the database's firewall rules (IPv4 CIDRs). */
  allow: string[];
  /** Sources of the control plane (its connection checks), allowed whatever the rules say. */
  control: string[];
}

/** Drops blocks covered by another one: nft refuses overlapping intervals in one set. */
export function mergeCidrs(cidrs: readonly string[]): string[] {
  const blocks = [...new Set(cidrs)].map(cidrOf).sort((a, b) => a.prefix - b.prefix || a.network - b.network);
  const kept: Cidr[] = [];
  for (const b of blocks) {
    const covered = kept.some((k) => b.network >= k.network && b.network < k.network + cidrSize(k));
    if (!covered) kept.push(b);
  }
  return kept.sort((a, b) => a.network - b.network).map(formatCidr);
}

const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;

function checkRules(r: EdgeRules): void {
  if (!IFNAME.test(r.uplink)) throw new Error(`invalid interface name ${r.uplink}`);
  for (const p of r.ports) {
    if (!Number.isInteger(p) || p < 1 || p > 65535) throw new Error(`invalid port ${p}`);
  }
}

function setOf(name: string, cidrs: readonly string[]): string[] {
  const merged = mergeCidrs(cidrs);
  return [
    `  set ${name} {`,
    "    type ipv4_addr; flags interval;",
    ...(merged.length ? [`    elements = { ${merged.join(", ")} }`] : []),
    "  }",
  ];
}

/**
 * The whole table, replaced atomically by one `nft -f` transaction: the `add` makes the
 * `delete` valid when the table does not exist yet.
 */
export function renderEdge(r: EdgeRules): string {
  checkRules(r);
  const accept = (set: string) =>
    r.ports.length
      ? [`    iifname "${r.uplink}" tcp dport { ${r.ports.join(", ")} } ip saddr @${set} accept`]
      : [];
  return [
    `add table inet ${EDGE_TABLE}`,
    `delete table inet ${EDGE_TABLE}`,
    `table inet ${EDGE_TABLE} {`,
    ...setOf("allowed", r.allow),
    ...setOf("control", r.control),
    "  chain input {",
    "    type filter hook input priority filter; policy drop;",
    '    iif "lo" accept',
    "    ct state established,related accept",
    "    ct state invalid drop",
    // The inside (the database's own bridge): its nodes answer the gateways.
    `    iifname != "${r.uplink}" accept`,
    ...accept("control"),
    ...accept("allowed"),
    // A clear, fast refusal rather than a client hanging until its timeout.
    "    meta l4proto tcp reject with tcp reset",
    "  }",
    // The namespace is no router: nothing crosses it to or from the uplink. Frames between
    // the nodes' ports are switched by br0; they show up here only where br_netfilter is loaded.
    "  chain forward {",
    "    type filter hook forward priority filter; policy drop;",
    `    iifname != "${r.uplink}" oifname != "${r.uplink}" accept`,
    "  }",
    "}",
    "",
  ].join("\n");
}

function nft(ns: string, args: string[], stdin?: string): Promise<string> {
  const [cmd, ...rest] = inNetns(ns, ["nft", ...args]);
  return new Promise((resolve, reject) => {
    const child = execFile(cmd!, rest, { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err)
        reject(
          new IsolationError(
            `nft ${args.join(" ")} in ${ns}: ${String(stderr).trim() || err.message}`,
            "nft",
          ),
        );
      else resolve(String(stdout));
    });
    if (stdin !== undefined) child.stdin?.end(stdin);
  });
}

/** Replaces the edge table of the namespace `ns` with `rules`. */
export async function applyEdge(ns: string, rules: EdgeRules): Promise<void> {
  await nft(ns, ["-f", "-"], renderEdge(rules));
}

/** Whether `ns` has an edge table (a namespace is never left without one once made). */
export async function hasEdge(ns: string): Promise<boolean> {
  return nft(ns, ["list", "table", "inet", EDGE_TABLE]).then(
    () => true,
    () => false,
  );
}

/** The sources the edge currently lets through (control and allowed), for status and tests. */
export async function edgeSources(ns: string): Promise<{ allowed: string[]; control: string[] }> {
  const out = await nft(ns, ["-j", "list", "table", "inet", EDGE_TABLE]);
  const doc = JSON.parse(out) as { nftables: Array<{ set?: { name: string; elem?: unknown[] } }> };
  const elems = (name: string) =>
    (doc.nftables.find((o) => o.set?.name === name)?.set?.elem ?? []).map((e) => {
      if (typeof e === "string") return `${e}/32`;
      const p = (e as { prefix?: { addr: string; len: number } }).prefix;
      return p ? `${p.addr}/${p.len}` : JSON.stringify(e);
    });
  return { allowed: elems("allowed"), control: elems("control") };
}
