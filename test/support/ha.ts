// HA helpers shared by the e2e tests and the failover benchmark: a cluster's nodes, what
// each node's Patroni says (its REST API, verified TLS), a node loss (Patroni and its
// postmaster killed outright), a planned switchover, and a writer of sequential rows that
// records which inserts were acknowledged.
import fs from "node:fs/promises";
import https from "node:https";
import path from "node:path";
import pg from "pg";
import type { Queryable } from "../../src/store/db.ts";

export interface HaNode {
  id: string;
  host: string;
  /** As the store last heard it from the agents (leader, follower). */
  role: string;
  status: string;
  address: string;
  port: number;
  /** Patroni's REST API. */
  restPort: number;
}

export async function haNodes(db: Queryable, databaseId: string): Promise<HaNode[]> {
  const { rows } = await db.query<HaNode>(
    `SELECT i.id, h.name AS host, i.role, i.status, host(h.address) AS address, i.port,
            i.extra_port AS "restPort"
     FROM instances i JOIN hosts h ON h.id = i.host_id
     WHERE i.database_id = $1 AND i.kind = 'node' ORDER BY i.ordinal`,
    [databaseId],
  );
  return rows;
}

/** Where the agent of `node.host` keeps the node (both fixtures put hosts under dataDir/hosts). */
export const nodeDirOf = (dataDir: string, node: Pick<HaNode, "host" | "id">): string =>
  path.join(dataDir, "hosts", node.host, "instances", node.id, "node");

/**
 * The last lines of each node's Patroni log and PostgreSQL log, printed: a failed wait is
 * otherwise hard to read. Patroni's tracebacks of health checks cut short are left out.
 */
export async function printPatroniLogs(
  dataDir: string,
  nodes: Array<Pick<HaNode, "host" | "id" | "role">>,
  lines = 30,
): Promise<void> {
  for (const n of nodes) {
    const dir = nodeDirOf(dataDir, n);
    const log = await fs.readFile(path.join(dir, "patroni.log"), "utf8").catch(() => "");
    const kept = log
      .split("\n")
      .filter(
        (l) =>
          !/^\s|Traceback \(most recent call last\)|SSLEOFError|Exception happened during processing of request/.test(
            l,
          ),
      );
    console.log(`patroni of ${n.id} (${n.role} on ${n.host}):\n${kept.slice(-lines).join("\n")}`);
    const pgLogs = (await fs.readdir(path.join(dir, "log")).catch(() => [] as string[]))
      .filter((f) => f.startsWith("postgresql-"))
      .sort();
    const latest = pgLogs.at(-1);
    if (!latest) continue;
    const pgLog = await fs.readFile(path.join(dir, "log", latest), "utf8").catch(() => "");
    console.log(`postgresql of ${n.id} (${latest}):\n${pgLog.split("\n").slice(-lines).join("\n")}`);
  }
}

/** The part of Patroni's GET /patroni answer these checks read. */
export interface PatroniStatus {
  state?: string;
  /** "master" in Patroni 3.0, "primary" later; "replica" for a standby. */
  role?: string;
  timeline?: number;
  /** A primary's WAL senders. */
  replication?: Array<{ application_name?: string; state?: string }>;
}

/** GET /patroni on a node; null when Patroni does not answer in time. */
export function patroniStatus(node: HaNode, ca: string, timeoutMs = 1500): Promise<PatroniStatus | null> {
  return restCall(node, ca, "GET", "/patroni", null, undefined, timeoutMs).then(
    (r) => (r.status === 200 ? (JSON.parse(r.body) as PatroniStatus) : null),
    () => null,
  );
}

export const isPrimary = (status: PatroniStatus | null): boolean =>
  status?.state === "running" && (status.role === "master" || status.role === "primary");

/** The node whose Patroni runs a primary, when exactly one does. */
export async function currentLeader(nodes: HaNode[], ca: string): Promise<HaNode | null> {
  const states = await Promise.all(nodes.map((n) => patroniStatus(n, ca)));
  const leaders = nodes.filter((_, i) => isPrimary(states[i] ?? null));
  return leaders.length === 1 ? leaders[0]! : null;
}

/**
 * Kills the node's Patroni and postmaster with SIGKILL, as a crash would. Returns the time
 * (performance.now()) right before the first signal.
 */
export async function killPatroniAndPostgres(dataDir: string, node: HaNode): Promise<number> {
  const dir = nodeDirOf(dataDir, node);
  const patroniPid = Number(await fs.readFile(path.join(dir, "patroni.pid"), "utf8"));
  const pmLines = (await fs.readFile(path.join(dir, "pgdata", "postmaster.pid"), "utf8")).split("\n");
  const postmasterPid = Number(pmLines[0]);
  if (!(patroniPid > 0 && postmasterPid > 0)) throw new Error(`no pids for node ${node.id}`);
  const at = performance.now();
  process.kill(patroniPid, "SIGKILL");
  process.kill(postmasterPid, "SIGKILL");
  return at;
}

/**
 * True once `member` runs as a replica and the leader streams WAL to it: only then can it
 * take over again (a lagging standby is not promoted).
 */
export async function streamingTo(leader: HaNode, member: HaNode, ca: string): Promise<boolean> {
  const [l, m] = await Promise.all([patroniStatus(leader, ca), patroniStatus(member, ca)]);
  if (!isPrimary(l) || m?.state !== "running" || m.role !== "replica") return false;
  const senders = l?.replication ?? [];
  return senders.some((s) => s.application_name === member.id && s.state === "streaming");
}

/** POST /switchover on the leader's REST API (basic auth); resolves with Patroni's answer. */
export async function switchover(
  leader: HaNode,
  candidate: HaNode,
  ca: string,
  auth: { user: string; password: string },
): Promise<{ status: number; body: string }> {
  const body = JSON.stringify({ leader: leader.id, candidate: candidate.id });
  return restCall(leader, ca, "POST", "/switchover", body, auth, 60_000);
}

function restCall(
  node: HaNode,
  ca: string,
  method: string,
  p: string,
  body: string | null,
  auth: { user: string; password: string } | undefined,
  timeoutMs: number,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = body ? { "content-type": "application/json" } : {};
    if (auth)
      headers.authorization = `Basic ${Buffer.from(`${auth.user}:${auth.password}`).toString("base64")}`;
    const req = https.request(
      { host: node.address, port: node.restPort, path: p, method, ca, headers, timeout: timeoutMs },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`${method} ${p} timed out`)));
    req.on("error", reject);
    req.end(body ?? undefined);
  });
}

export interface WriterOptions {
  url: string;
  ca: string;
  table: string;
  /** Pause between the start of two inserts (the writer never runs two at once). */
  everyMs: number;
  /** Bound on a connect or an insert: a session to a dead node must not stall the writer. */
  timeoutMs?: number;
}

export interface Ack {
  n: number;
  /** performance.now() when the acknowledgement was read. */
  at: number;
}

/**
 * Inserts 1, 2, 3... into `table (n int primary key)`, one autocommit statement each, over
 * one session re-opened after any failure. A failed insert's number is never retried: its
 * outcome is unknown (it may have committed), so only acknowledged numbers are promised.
 */
export class SequentialWriter {
  readonly acks: Ack[] = [];
  /** performance.now() of each failed insert (or connect), when the failure was seen. */
  readonly failures: number[] = [];
  lastError = "";
  private next = 1;
  private running = false;
  private loop: Promise<void> | null = null;
  private client: pg.Client | null = null;

  constructor(private readonly opts: WriterOptions) {}

  start(): void {
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    await this.drop();
  }

  /** Acknowledgements read after `t` (performance.now()). */
  acksAfter(t: number): Ack[] {
    return this.acks.filter((a) => a.at > t);
  }

  /** The first failure seen after `t`, if any. */
  failureAfter(t: number): number | undefined {
    return this.failures.find((f) => f > t);
  }

  private async run(): Promise<void> {
    while (this.running) {
      const started = performance.now();
      await this.once();
      const wait = this.opts.everyMs - (performance.now() - started);
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
  }

  private async once(): Promise<void> {
    const n = this.next++;
    try {
      this.client ??= await connectOnce(this.opts.url, this.opts.ca, this.opts.timeoutMs ?? 2000);
      await this.client.query(`INSERT INTO ${this.opts.table} (n) VALUES ($1)`, [n]);
      this.acks.push({ n, at: performance.now() });
    } catch (err) {
      this.failures.push(performance.now());
      this.lastError = (err as Error).message;
      await this.drop();
    }
  }

  private async drop(): Promise<void> {
    const c = this.client;
    this.client = null;
    await c?.end().catch(() => undefined);
  }
}

/** A verify-full session through `url`, with a connect timeout and a query timeout (null: none). */
export async function connectOnce(
  url: string,
  ca: string,
  timeoutMs: number,
  queryTimeoutMs: number | null = timeoutMs,
): Promise<pg.Client> {
  const u = new URL(url);
  const client = new pg.Client({
    host: u.hostname,
    port: Number(u.port),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    database: u.pathname.slice(1),
    ssl: { ca, rejectUnauthorized: true },
    connectionTimeoutMillis: timeoutMs,
    ...(queryTimeoutMs !== null ? { query_timeout: queryTimeoutMs } : {}),
  });
  // A session cut while idle (a failover, a restart, the gateway) emits 'error' outside any
  // query; a query on it still fails, so the caller sees the cut without the process crashing.
  client.on("error", () => undefined);
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw err;
  }
  return client;
}

/**
 * A session through `url`, its connection retried for up to `ms`: just after a restart the
 * gateway's health check (every 500 ms) may not route to the node yet and closes the session
 * at once. Only the connection is retried, never a statement.
 */
export async function connectSoon(url: string, ca: string, ms = 15_000): Promise<pg.Client> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await connectOnce(url, ca, 5000, null);
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** Acknowledged inserts whose rows are absent from the table now. */
export async function lostAcks(url: string, ca: string, table: string, acks: Ack[]): Promise<Ack[]> {
  const client = await connectSoon(url, ca);
  try {
    const { rows } = await client.query<{ n: number }>(`SELECT n FROM ${table}`);
    const present = new Set(rows.map((r) => r.n));
    return acks.filter((a) => !present.has(a.n));
  } finally {
    await client.end();
  }
}
