// HAProxy configuration of a database gateway. Pure: the Gateway writes and runs it.
// TCP mode: PostgreSQL negotiates TLS inside its own protocol (SSLRequest), so HAProxy
// cannot terminate it and passes the bytes through; verify-full therefore checks the
// server certificate of PostgreSQL, which must name the gateway's address.
import net from "node:net";
import { ValidationError } from "../../domain/errors.ts";
import { checkAcl, renderAclLines, type GatewayAcl } from "./gateway-acl.ts";

export interface GatewayBackend {
  /** Server name in HAProxy (node instance id). */
  name: string;
  host: string;
  port: number;
  /**
   * Patroni REST port. When set, HAProxy only sends traffic to the node whose Patroni
   * answers 200 on /primary. Unset for a lone Starter node: a plain TCP check would only
   * fill PostgreSQL's log with "incomplete startup packet" lines.
   */
  patroniPort?: number;
}

export interface GatewaySpec {
  listen: { host: string; port: number };
  /** More addresses to listen on (a Shared database's public address). */
  extraBinds?: Array<{ host: string; port: number }>;
  /** Source filtering and Force TLS, on every address (gateway-acl.ts). */
  acl?: GatewayAcl;
  /** The network namespace the gateway runs in (a Dedicated database's network). */
  netns?: string;
  backends: GatewayBackend[];
  /** Above the node's max_connections, so PostgreSQL (not a silent HAProxy queue) refuses extras. */
  maxConnections: number;
  timeouts?: Partial<GatewayTimeouts>;
  /** CA of the nodes' Patroni REST certificates: health checks run over verified TLS. */
  checkCaPem?: string;
}

export interface GatewayTimeouts {
  connect: string;
  /** Reference §2.6: client inactive 1 day, server inactive 30 min, half-closed client 5 min. */
  client: string;
  server: string;
  clientFin: string;
  /** How long a process replaced by a reload may keep serving its old connections. */
  hardStopAfter: string;
}

export const DEFAULT_TIMEOUTS: GatewayTimeouts = {
  connect: "5s",
  client: "1d",
  server: "30m",
  clientFin: "5m",
  hardStopAfter: "1h",
};

export interface HaproxyConfigInput extends GatewaySpec {
  /** The gateway's id: proxy names and log lines. */
  name: string;
  /** Stats socket that hands the listening socket to the next process on reload. */
  adminSocket: string;
  /** Where the gateway wrote checkCaPem. */
  checkCaFile?: string;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const HOST = /^[A-Za-z0-9.:-]+$/;
const DURATION = /^\d+(us|ms|s|m|h|d)?$/;

function checkInput(input: HaproxyConfigInput): void {
  const endpoints = [input.listen, ...(input.extraBinds ?? []), ...input.backends];
  if (input.acl) checkAcl(input.acl);
  if (!NAME.test(input.name)) throw ValidationError.field("name", "must be letters, digits, '_', '.', '-'");
  if (input.backends.length === 0) throw ValidationError.field("backends", "must hold at least one node");
  for (const b of input.backends) {
    if (!NAME.test(b.name)) throw ValidationError.field("backends", `"${b.name}" is not a valid server name`);
  }
  for (const e of endpoints) {
    if (!HOST.test(e.host)) throw ValidationError.field("host", `"${e.host}" is not a host name or address`);
    if (!Number.isInteger(e.port) || e.port < 1 || e.port > 65535) {
      throw ValidationError.field("port", `${e.port} is not a port (1-65535)`);
    }
  }
  if (!Number.isInteger(input.maxConnections) || input.maxConnections < 1) {
    throw ValidationError.field("max_connections", "must be a positive integer");
  }
  for (const [k, v] of Object.entries(input.timeouts ?? {})) {
    if (!DURATION.test(v))
      throw ValidationError.field(`timeouts.${k}`, `"${v}" is not a duration like 30s or 5m`);
  }
}

const address = (host: string, port: number) => (net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`);

export function renderHaproxyConfig(input: HaproxyConfigInput): string {
  checkInput(input);
  const t = { ...DEFAULT_TIMEOUTS, ...input.timeouts };
  const checked = input.backends.some((b) => b.patroniPort !== undefined);
  const lines = [
    "# Written by Cellar; edits are overwritten.",
    "global",
    // One thread: a gateway carries one database's connections; many gateways share a host.
    "  nbthread 1",
    `  maxconn ${input.maxConnections}`,
    `  stats socket ${input.adminSocket} mode 600 level admin expose-fd listeners`,
    `  hard-stop-after ${t.hardStopAfter}`,
    // The built-in HTTP client is unused here; without this it loads the system CA store at
    // every start, which doubled start time (~0.14 s) and costs memory on every gateway.
    "  httpclient.ssl.verify none",
    "  log stdout format raw local0 notice",
    "",
    "defaults",
    "  mode tcp",
    "  log global",
    "  option dontlognull",
    `  timeout connect ${t.connect}`,
    `  timeout client ${t.client}`,
    `  timeout client-fin ${t.clientFin}`,
    `  timeout server ${t.server}`,
    "",
    `frontend fe_${input.name}`,
    `  bind ${address(input.listen.host, input.listen.port)}`,
    ...(input.extraBinds ?? []).map((b) => `  bind ${address(b.host, b.port)}`),
    ...renderAclLines(input.acl),
    `  default_backend be_${input.name}`,
    "",
    `backend be_${input.name}`,
  ];
  if (checked) {
    if (!input.checkCaFile)
      throw ValidationError.field("check_ca", "HA backends need the CA of their REST API");
    lines.push(
      // Patroni answers 200 on /primary only on the node holding the leader key.
      "  option httpchk GET /primary",
      "  http-check expect status 200",
      "  timeout check 2s",
      // Checked twice a second: after a failover, writes reach the new leader within about a
      // second. A demoted primary must not keep clients: its sessions are cut, they reconnect.
      `  default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions check-ssl verify required ca-file ${input.checkCaFile}`,
      // A refused connection means the node's PostgreSQL has stopped: the client hears so at
      // once and reconnects. HAProxy's default retries it 3 times, 1 s apart, so a client that
      // came while the stopped leader was not yet marked down waited 3 s more in a switchover.
      "  retries 0",
    );
  }
  for (const b of input.backends) {
    const check = b.patroniPort !== undefined ? ` check port ${b.patroniPort}` : "";
    lines.push(`  server ${b.name} ${address(b.host, b.port)}${check}`);
  }
  return `${lines.join("\n")}\n`;
}
