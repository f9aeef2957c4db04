// Measurements of the failover benchmark, on one HA database of a BenchCellar: a node loss
// timed to the first write through the gateway, a planned switchover's longest write pause,
// and a watch that counts leader changes.
import fs from "node:fs/promises";
import path from "node:path";
import { REST_USER } from "../../src/engines/postgresql/patroni-config.ts";
import { createIsolationRuntime } from "../../src/runtime/factory.ts";
import { instancesOfDatabase } from "../../src/store/instances.store.ts";
import { enqueueReconcile } from "../../src/store/reconcile-queue.store.ts";
import { requestSwitchover, switchoversOfDatabase } from "../../src/store/switchovers.store.ts";
import { sandboxNameFor } from "../../src/runtime/limits.ts";
import { probeIsolation } from "../../src/runtime/probe.ts";
import {
  connectOnce,
  currentLeader,
  haNodes,
  isPrimary,
  killPatroniAndPostgres,
  nodeDirOf,
  patroniStatus,
  SequentialWriter,
  streamingTo,
  switchover,
  type HaNode,
} from "../../test/support/ha.ts";
import type { BenchCellar } from "./cellar.ts";
import { waitUntil } from "./stats.ts";

export interface HaTarget {
  label: string;
  cellar: BenchCellar;
  databaseId: string;
  url: string;
}

/**
 * Bound on a writer's connect + TLS + SCRAM, as an application would set it: a shorter one
 * counts a slow handshake on a busy machine as failover time (the 1 s of earlier runs did).
 */
const WRITER_CONNECT_MS = 5000;

const sleep = (msec: number) => new Promise((r) => setTimeout(r, msec));
/** A performance.now() reading as the UTC time of day the nodes' logs use (11:14:56.539). */
const wallClock = (at: number): string => new Date(performance.timeOrigin + at).toISOString().slice(11, 23);

export const nodesOf = (t: HaTarget): Promise<HaNode[]> => haNodes(t.cellar.controller.deps.db, t.databaseId);

/** Waits until one node leads and the other streams from it; returns both. */
export async function waitHealthy(
  t: HaTarget,
  timeoutMs: number,
): Promise<{ leader: HaNode; standby: HaNode }> {
  const nodes = await nodesOf(t);
  let pair: { leader: HaNode; standby: HaNode } | null = null;
  await waitUntil(
    `${t.label}: a leader with a streaming standby`,
    timeoutMs,
    async () => {
      const leader = await currentLeader(nodes, t.cellar.regionCa);
      const standby = nodes.find((n) => n.id !== leader?.id);
      if (!leader || !standby || !(await streamingTo(leader, standby, t.cellar.regionCa))) return false;
      pair = { leader, standby };
      return true;
    },
    250,
  );
  return pair!;
}

/** One autocommit INSERT over a fresh session: what an application reconnecting does. */
async function writeOnce(t: HaTarget, timeoutMs: number): Promise<void> {
  const client = await connectOnce(t.url, t.cellar.regionCa, timeoutMs);
  try {
    await client.query("INSERT INTO probe DEFAULT VALUES");
  } finally {
    await client.end().catch(() => undefined);
  }
}

export async function createProbeTables(t: HaTarget): Promise<void> {
  const client = await connectOnce(t.url, t.cellar.regionCa, 10_000);
  try {
    await client.query(
      "CREATE TABLE IF NOT EXISTS probe (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())",
    );
  } finally {
    await client.end();
  }
}

/**
 * Polls the nodes' Patroni every `everyMs` and notes when any node other than `from` first
 * says it runs a primary: where Patroni's share of a failover ends and the gateway's begins.
 * Opt-in (--phases): each answer costs CPU inside the node's sandbox, which Patroni shares
 * with PostgreSQL under the plan's quota, so watching slows what is watched.
 */
function promotionWatch(t: HaTarget, nodes: HaNode[], from: HaNode, everyMs = 200) {
  // Only the candidates are asked: every GET /patroni costs Patroni a query, and a busy
  // Patroni is exactly what a switchover waits for.
  const candidates = nodes.filter((n) => n.id !== from.id);
  let at: number | null = null;
  let running = true;
  const loop = (async () => {
    while (running && at === null) {
      const states = await Promise.all(candidates.map((n) => patroniStatus(n, t.cellar.regionCa, 2000)));
      if (states.some((s) => isPrimary(s))) at = performance.now();
      else await sleep(everyMs);
    }
  })();
  return {
    async stop(): Promise<number | null> {
      running = false;
      await loop;
      return at;
    },
  };
}

export interface FailoverRun {
  /** Kill -> first acknowledged INSERT through the gateway. */
  writeMs: number;
  /** Kill -> the old leader streams from the new one (or leads again). */
  healthyMs: number;
  /** Kill -> the standby's Patroni says it runs a primary (NaN: it never did). */
  promotedMs: number;
  /** Whether the standby took over (false: the killed node came back as the leader). */
  moved: boolean;
  /** Wall-clock time of the kill (UTC), to find the round in the nodes' logs. */
  killedAt: string;
}

/**
 * Kills the leader's Patroni and postmaster, then tries connect + INSERT every `everyMs`
 * until one is acknowledged; then waits for both nodes to be healthy again.
 */
export async function failoverOnce(
  t: HaTarget,
  opts: { everyMs: number; timeoutMs: number; phases: boolean },
): Promise<FailoverRun> {
  const { leader } = await waitHealthy(t, opts.timeoutMs);
  const promotion = opts.phases ? promotionWatch(t, await nodesOf(t), leader) : null;
  const killedAt = await killPatroniAndPostgres(t.cellar.dataDir, leader);
  let writeMs = NaN;
  for (;;) {
    const attempt = performance.now();
    try {
      await writeOnce(t, WRITER_CONNECT_MS);
      writeMs = performance.now() - killedAt;
      break;
    } catch {
      if (performance.now() - killedAt > opts.timeoutMs)
        throw new Error(`${t.label}: no write through the gateway ${opts.timeoutMs} ms after the kill`);
    }
    await sleep(Math.max(0, opts.everyMs - (performance.now() - attempt)));
  }
  const after = await waitHealthy(t, opts.timeoutMs);
  const healthyMs = performance.now() - killedAt;
  const promotedMs = ((await promotion?.stop()) ?? NaN) - killedAt;
  return {
    writeMs,
    healthyMs,
    promotedMs,
    moved: after.leader.id !== leader.id,
    killedAt: wallClock(killedAt),
  };
}

export interface SwitchoverRun {
  /** Longest gap between two acknowledged inserts of a writer inserting every 20 ms. */
  pauseMs: number;
  /** The request -> Patroni's answer (--via=patroni) or Cellar's switchover done (--via=cellar). */
  requestMs: number;
  /** POST /switchover -> the candidate's Patroni says it runs a primary. */
  promotedMs: number;
  /** POST /switchover -> the last acknowledged insert on the old leader. */
  lastOldMs: number;
  failedInserts: number;
  /** Wall-clock time of the POST (UTC), to find the round in the nodes' logs. */
  postedAt: string;
}

/** A planned switchover through Patroni's REST API, with a writer running throughout. */
export async function switchoverOnce(
  t: HaTarget,
  opts: { writeEveryMs: number; timeoutMs: number; phases: boolean; via: "cellar" | "patroni" },
): Promise<SwitchoverRun> {
  const { leader, standby } = await waitHealthy(t, opts.timeoutMs);
  const { rows } = await t.cellar.controller.deps.db.query<{ rest_password: string }>(
    "SELECT rest_password FROM database_ha_secrets WHERE database_id = $1",
    [t.databaseId],
  );
  const auth = { user: REST_USER, password: rows[0]!.rest_password };
  const writer = new SequentialWriter({
    url: t.url,
    ca: t.cellar.regionCa,
    table: "seq",
    everyMs: opts.writeEveryMs,
    timeoutMs: WRITER_CONNECT_MS,
  });
  await resetSeq(t);
  writer.start();
  try {
    const warm = performance.now();
    await waitUntil(`${t.label}: writes before the switchover`, opts.timeoutMs, () =>
      Promise.resolve(writer.acksAfter(warm).length >= 25),
    );
    const promotion = opts.phases ? promotionWatch(t, [leader, standby], leader) : null;
    const t0 = performance.now();
    if (opts.via === "patroni") {
      const res = await switchover(leader, standby, t.cellar.regionCa, auth);
      if (res.status !== 200) throw new Error(`${t.label}: switchover answered ${res.status}: ${res.body}`);
    } else {
      await cellarSwitchover(t, leader, standby, opts.timeoutMs);
    }
    const requestMs = performance.now() - t0;
    // The pause ends with the first acknowledged write on the new leader; keep writing a
    // second more so a late hiccup (the gateway's next check) is counted too.
    const done = performance.now();
    await waitUntil(`${t.label}: writes after the switchover`, opts.timeoutMs, () =>
      Promise.resolve(
        writer.acksAfter(done).length > 0 && performance.now() - writer.acksAfter(done)[0]!.at > 1000,
      ),
    );
    await writer.stop();
    const promotedMs = ((await promotion?.stop()) ?? NaN) - t0;
    const acks = writer.acks.filter((a) => a.at > warm);
    let pauseMs = 0;
    let lastOldMs = NaN;
    for (let i = 1; i < acks.length; i++) {
      const gap = acks[i]!.at - acks[i - 1]!.at;
      if (gap > pauseMs) [pauseMs, lastOldMs] = [gap, acks[i - 1]!.at - t0];
    }
    return {
      pauseMs,
      requestMs,
      promotedMs,
      lastOldMs,
      failedInserts: writer.failures.length,
      postedAt: wallClock(t0),
    };
  } finally {
    await writer.stop();
  }
}

/**
 * The switchover a plan change asks for: a row for the reconciler, handed to the nodes' agents
 * (the leader's asks Patroni, both give their node spare CPU meanwhile); done once the
 * candidate's agent reports it leads.
 */
async function cellarSwitchover(t: HaTarget, leader: HaNode, candidate: HaNode, timeoutMs: number) {
  const deps = t.cellar.controller.deps;
  // As the reconciler would: only once the store's roles (the agents' reports) agree with
  // Patroni. Otherwise a candidate still listed as leader from the previous round would
  // "finish" the switchover before anything happened.
  await waitUntil(`${t.label}: the store to list ${leader.id} as leader`, timeoutMs, async () => {
    const nodes = await nodesOf(t);
    const role = (id: string) => nodes.find((n) => n.id === id)?.role;
    return role(leader.id) === "leader" && role(candidate.id) === "follower";
  });
  const sw = await requestSwitchover(deps.db, {
    databaseId: t.databaseId,
    leaderId: leader.id,
    candidateId: candidate.id,
    reason: "failover benchmark",
  });
  for (const i of await instancesOfDatabase(deps.db, t.databaseId)) deps.hostSignals.notify(i.hostId);
  await enqueueReconcile(deps.db, t.databaseId);
  deps.kickReconciler();
  let last = sw;
  await waitUntil(`${t.label}: switchover ${sw.id} to finish`, timeoutMs, async () => {
    last = (await switchoversOfDatabase(deps.db, t.databaseId)).find((s) => s.id === sw.id) ?? last;
    return last.status !== "requested";
  });
  if (last.status !== "done") throw new Error(`${t.label}: switchover ${last.status}: ${last.error ?? ""}`);
}

async function resetSeq(t: HaTarget): Promise<void> {
  const client = await connectOnce(t.url, t.cellar.regionCa, 10_000);
  try {
    await client.query("DROP TABLE IF EXISTS seq");
    await client.query("CREATE TABLE seq (n int PRIMARY KEY)");
  } finally {
    await client.end();
  }
}

/**
 * Polls every node's Patroni; counts changes of the leading node and the timelines seen (a
 * promotion always starts a new timeline, so even a change between two polls shows).
 */
export function watchLeader(t: HaTarget, nodes: HaNode[], everyMs = 1000) {
  let leaderId: string | null = null;
  let changes = 0;
  let polls = 0;
  let leaderless = 0;
  const timelines = new Set<number>();
  let running = true;
  const loop = (async () => {
    while (running) {
      const states = await Promise.all(nodes.map((n) => patroniStatus(n, t.cellar.regionCa)));
      polls++;
      const leaders = nodes.filter((_, i) => isPrimary(states[i] ?? null));
      for (const s of states) if (typeof s?.timeline === "number") timelines.add(s.timeline);
      if (leaders.length !== 1) leaderless++;
      else {
        if (leaderId !== null && leaders[0]!.id !== leaderId) changes++;
        leaderId = leaders[0]!.id;
      }
      await sleep(everyMs);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return { changes, polls, leaderless, timelines: [...timelines].sort((a, b) => a - b) };
    },
  };
}

/** Copies each node's Patroni log and PostgreSQL logs to `dir/<label>/<node>/` (for a reader). */
export async function keepLogs(t: HaTarget, dir: string): Promise<void> {
  for (const n of await nodesOf(t)) {
    const to = path.join(dir, t.label.replace(/\W+/g, "-").toLowerCase(), n.id);
    await fs.mkdir(to, { recursive: true });
    const from = nodeDirOf(t.cellar.dataDir, n);
    await fs.cp(path.join(from, "patroni.log"), path.join(to, "patroni.log")).catch(() => undefined);
    await fs.cp(path.join(from, "log"), path.join(to, "pg-log"), { recursive: true }).catch(() => undefined);
  }
}

let isolation: ReturnType<typeof probeIsolation> | null = null;

/**
 * CPU seconds used and spent throttled so far by the nodes' sandboxes (Patroni runs in its
 * node's sandbox, under the plan's CPU quota): compare two readings around a phase.
 */
export async function nodesCpu(t: HaTarget): Promise<{ cpuSeconds: number; throttledSeconds: number }> {
  const probe = await (isolation ??= probeIsolation());
  let cpuSeconds = 0;
  let throttledSeconds = 0;
  for (const n of await nodesOf(t)) {
    const runtime = await createIsolationRuntime(probe, { parent: `cellar-${n.host}` });
    const u = await runtime.usage(sandboxNameFor(n.id)).catch(() => null);
    cpuSeconds += u?.cpuSeconds ?? 0;
    throttledSeconds += u?.cpuThrottledSeconds ?? 0;
  }
  return { cpuSeconds, throttledSeconds };
}
