// Calls to one Patroni's REST API over verified TLS: reads (its state, the cluster's dynamic
// configuration) and the unsafe calls that need the REST password (switchover, restart,
// configuration change). Each call is bounded by a timeout.
import https from "node:https";
import tls, { type PeerCertificate } from "node:tls";
import type { HaSpec } from "./patroni-config.ts";
import { REST_USER } from "./patroni-config.ts";

export interface RestAnswer {
  status: number;
  body: string;
}

/** What GET /patroni says beyond state and role (patroni-node.ts reads those). */
export interface PatroniDetails {
  state: string;
  /** "master"/"primary" for the leader in Patroni 3.0, "replica" for a standby. */
  role: string;
  pendingRestart: boolean;
  timeline: number | null;
  /** A standby's WAL position: the furthest of received and replayed (null on a leader). */
  walPosition: bigint | null;
}

/** Patroni 3.0 reports a standby's WAL as xlog.received_location / replayed_location (bytes). */
function standbyWalPosition(xlog: unknown): bigint | null {
  if (typeof xlog !== "object" || xlog === null) return null;
  const { received_location: received, replayed_location: replayed } = xlog as Record<string, unknown>;
  const positions = [received, replayed].filter((v): v is number => typeof v === "number");
  return positions.length === 0 ? null : BigInt(Math.max(...positions));
}

export class PatroniRest {
  private readonly dial: string;
  private readonly named: string;

  /**
   * `listenAddress` as the node's spec gives it: a node in a network namespace lists its
   * link to the host first (dialled) and its database-network address last (in its certificate).
   */
  constructor(
    listenAddress: string,
    private readonly ha: Pick<HaSpec, "restPort" | "restPassword">,
    private readonly caPem: string,
  ) {
    const addresses = listenAddress.split(",");
    this.dial = addresses[0]!;
    this.named = addresses.at(-1)!;
  }

  call(method: string, path: string, body: unknown, timeoutMs: number): Promise<RestAnswer> {
    const payload = body === undefined ? null : JSON.stringify(body);
    const headers: Record<string, string> = payload ? { "content-type": "application/json" } : {};
    if (method !== "GET") {
      const basic = Buffer.from(`${REST_USER}:${this.ha.restPassword}`).toString("base64");
      headers.authorization = `Basic ${basic}`;
    }
    const named = this.named;
    return new Promise((resolve, reject) => {
      const req = https.request(
        {
          host: this.dial,
          port: this.ha.restPort,
          path,
          method,
          ca: this.caPem,
          headers,
          timeout: timeoutMs,
          checkServerIdentity: (_host: string, cert: PeerCertificate) => tls.checkServerIdentity(named, cert),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () =>
            resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }),
          );
          res.on("error", reject);
        },
      );
      req.on("timeout", () => req.destroy(new Error(`${method} ${path} timed out after ${timeoutMs} ms`)));
      req.on("error", reject);
      req.end(payload ?? undefined);
    });
  }

  /** GET /patroni, or null when Patroni does not answer. */
  async details(timeoutMs = 2000): Promise<PatroniDetails | null> {
    const res = await this.call("GET", "/patroni", undefined, timeoutMs).catch(() => null);
    if (res?.status !== 200 && res?.status !== 503) return null;
    try {
      const b = JSON.parse(res.body) as Record<string, unknown>;
      return {
        state: typeof b.state === "string" ? b.state : "",
        role: typeof b.role === "string" ? b.role : "",
        pendingRestart: b.pending_restart === true,
        timeline: typeof b.timeline === "number" ? b.timeline : null,
        walPosition: standbyWalPosition(b.xlog),
      };
    } catch {
      return null;
    }
  }

  /**
   * Another member's REST API, at the address the cluster lists for it (where its peers
   * dial it); null when the cluster does not list it.
   */
  async member(name: string, restPassword: string): Promise<PatroniRest | null> {
    const res = await this.call("GET", "/cluster", undefined, 2000);
    if (res.status !== 200) throw new Error(`GET /cluster answered ${res.status}`);
    const members = (JSON.parse(res.body) as { members?: Array<{ name?: string; api_url?: string }> })
      .members;
    const apiUrl = members?.find((m) => m.name === name)?.api_url;
    if (!apiUrl) return null;
    const url = new URL(apiUrl);
    return new PatroniRest(url.hostname, { restPort: Number(url.port), restPassword }, this.caPem);
  }

  /** The cluster's dynamic configuration (kept in the DCS). */
  async config(): Promise<Record<string, unknown>> {
    const res = await this.call("GET", "/config", undefined, 5000);
    if (res.status !== 200) throw new Error(`GET /config answered ${res.status}: ${res.body.slice(0, 200)}`);
    return JSON.parse(res.body) as Record<string, unknown>;
  }

  /** PATCH /config: merged into the dynamic configuration (null removes a key). */
  async patchConfig(patch: Record<string, unknown>): Promise<void> {
    const res = await this.call("PATCH", "/config", patch, 10_000);
    if (res.status !== 200)
      throw new Error(`PATCH /config answered ${res.status}: ${res.body.slice(0, 200)}`);
  }

  /** POST /restart: Patroni restarts its PostgreSQL and answers once it is done. */
  async restart(): Promise<void> {
    const res = await this.call("POST", "/restart", {}, 120_000);
    if (res.status !== 200)
      throw new Error(`POST /restart answered ${res.status}: ${res.body.slice(0, 200)}`);
  }

  /**
   * POST /switchover from `leader` to `candidate`: Patroni answers once the candidate holds
   * the leader key (200), or says why it did not happen.
   */
  switchover(leader: string, candidate: string): Promise<RestAnswer> {
    return this.call("POST", "/switchover", { leader, candidate }, 60_000);
  }
}
