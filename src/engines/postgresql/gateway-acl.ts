// Who may talk to a gateway, in HAProxy's words. Pure.
//
// Source filtering: a connection from a source outside the allow list is closed as soon as
// it is accepted (`tcp-request connection`), before any byte reaches PostgreSQL.
// TLS only: PostgreSQL clients ask for TLS with an 8-byte SSLRequest before anything else;
// a connection whose first bytes are anything else (a plaintext startup message, a GSSAPI
// encryption request) is closed, so plaintext never crosses the gateway. The node's own
// pg_hba.conf refuses plaintext as well (hostssl only), so either layer alone suffices.
import { parseCidr } from "../../domain/ipv4.ts";
import { ValidationError } from "../../domain/errors.ts";

export interface GatewayAcl {
  /** Force TLS: only connections that open with an SSLRequest get through. */
  tlsOnly: boolean;
  /** Allowed sources (IPv4 CIDRs). Absent: no source filtering; empty: nobody. */
  allow?: string[];
  /**
   * Where the gateway keeps `allow` (gateway-allow-list.ts): the config then names the file,
   * and a new list is swapped in at run time instead of reloading.
   */
  file?: string;
}

/** Length 8, then the SSLRequest code 80877103 (1234 << 16 | 5679). */
export const SSL_REQUEST_HEX = "0000000804d2162f";
/** How long a client may take to send its first 8 bytes. */
const FIRST_BYTES_WITHIN = "10s";
/** CIDRs per `acl` line: HAProxy lines are limited in length; repeated names are OR-ed. */
const PER_LINE = 16;

const FILE = /^\/[A-Za-z0-9_./-]+$/;

export function checkAcl(acl: GatewayAcl): void {
  if (acl.file !== undefined && !FILE.test(acl.file)) {
    throw ValidationError.field("acl.file", `"${acl.file}" is not an absolute path without spaces`);
  }
  for (const cidr of acl.allow ?? []) {
    const parsed = parseCidr(cidr);
    if (!parsed.ok) throw ValidationError.field("acl.allow", parsed.reason);
  }
}

/** Frontend lines enforcing `acl`; none when there is nothing to enforce. */
export function renderAclLines(acl: GatewayAcl | undefined): string[] {
  if (!acl) return [];
  checkAcl(acl);
  const lines: string[] = [];
  if (acl.allow !== undefined && acl.file !== undefined) {
    // An empty file matches nobody: deny by default, and rules come in without a reload.
    lines.push(
      `  acl cellar_allowed src -f ${acl.file}`,
      "  tcp-request connection reject unless cellar_allowed",
    );
  } else if (acl.allow !== undefined) {
    const allow = [...new Set(acl.allow)];
    if (allow.length === 0) {
      lines.push("  tcp-request connection reject");
    } else {
      for (let i = 0; i < allow.length; i += PER_LINE) {
        lines.push(`  acl cellar_allowed src ${allow.slice(i, i + PER_LINE).join(" ")}`);
      }
      lines.push("  tcp-request connection reject unless cellar_allowed");
    }
  }
  if (acl.tlsOnly) {
    lines.push(
      `  tcp-request inspect-delay ${FIRST_BYTES_WITHIN}`,
      `  tcp-request content reject unless { req.payload(0,8) -m bin ${SSL_REQUEST_HEX} }`,
    );
  }
  return lines;
}
