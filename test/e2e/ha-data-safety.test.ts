// The data-safety checker, short form: a client writes sequential rows through the gateway,
// one autocommit insert each, while the leader is lost (Patroni and PostgreSQL killed) three
// times. Afterwards every acknowledged row must be there. Business replicates asynchronously,
// so its bound is the rows acknowledged in the last seconds before each loss, and those the
// old leader acknowledged until the writer's session to it failed: a backend outlives its
// killed postmaster for a moment. The count lost is printed and checked against it.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { connectVerified, startCluster, type Cluster } from "../support/cluster.ts";
import {
  currentLeader,
  haNodes,
  killPatroniAndPostgres,
  lostAcks,
  printPatroniLogs,
  SequentialWriter,
  streamingTo,
} from "../support/ha.ts";

const HOSTS = [
  { name: "e2e-hads-s1", pool: "shared" as const, az: "osc-fr1-a" },
  { name: "e2e-hads-s2", pool: "shared" as const, az: "osc-fr1-a" },
  { name: "e2e-hads-s3", pool: "shared" as const, az: "osc-fr1-b" },
];
const KILLS = 3;
// The documented bound is WAL-based (a standby more than 1 MB of WAL behind is never
// promoted); the test uses a time window, wide enough for a loaded 2-core CI machine.
const WINDOW_MS = 5000;

describe("Business PostgreSQL add-on: no acknowledged row lost beyond the asynchronous bound", () => {
  let cl: Cluster;
  let addonId = "";
  let url = "";
  let ca = "";

  before(async () => {
    cl = await startCluster({ subnet: 46, hosts: HOSTS });
    assert.equal((await cl.api("POST", "/v1/apps", { app: { name: "hads-app" } })).status, 201);
    ca = await cl.regionCa();
  });
  after(async () => cl?.close());

  const nodes = () => haNodes(cl.controller.deps.db, addonId);

  /** What each Patroni said last: a failed wait is otherwise hard to read. */
  const withLogs = async <T>(p: Promise<T>): Promise<T> =>
    p.catch(async (err: Error) => {
      await printPatroniLogs(cl.dataDir, await nodes(), 20);
      throw err;
    });

  it("provisions a Business add-on with a streaming standby", async () => {
    const res = await cl.api("POST", "/v1/apps/hads-app/addons", {
      addon: { addon_provider_id: "postgresql", plan_id: "postgresql-business-512" },
    });
    assert.equal(res.status, 201);
    addonId = res.json.addon.id;
    await cl.waitFor(
      "the add-on to run",
      async () => {
        const a = await cl.api("GET", `/v1/apps/hads-app/addons/${addonId}`);
        return a.json.addon.status === "running" ? true : undefined;
      },
      180_000,
    );
    const vars = (await cl.api("GET", "/v1/apps/hads-app/variables")).json.variables;
    url = vars.find((v: { name: string }) => v.name === "SCALINGO_POSTGRESQL_URL").value;
    const client = await connectVerified(url, ca);
    try {
      await client.query("CREATE TABLE seq (n int PRIMARY KEY)");
    } finally {
      await client.end();
    }
    const all = await nodes();
    assert.equal(all.length, 2);
    await withLogs(
      cl.waitFor("the standby to stream", async () => {
        const leader = await currentLeader(all, ca);
        const standby = all.find((n) => n.id !== leader?.id);
        return leader && standby && (await streamingTo(leader, standby, ca)) ? true : undefined;
      }),
    );
  });

  it(`keeps every acknowledged row across ${KILLS} losses of the leader`, async () => {
    const writer = new SequentialWriter({ url, ca, table: "seq", everyMs: 10 });
    const windows: Array<{ from: number; to: number; acks: number }> = [];
    writer.start();
    try {
      for (let round = 1; round <= KILLS; round++) {
        const all = await nodes();
        const leader = await cl.waitFor("a single leader", () =>
          currentLeader(all, ca).then((l) => l ?? undefined),
        );
        const standby = all.find((n) => n.id !== leader.id)!;
        // Writes must be flowing when the leader goes, or the round proves nothing.
        const flowingFrom = performance.now();
        await cl.waitFor("writes before the kill", () =>
          Promise.resolve(writer.acksAfter(flowingFrom).length >= 20 ? true : undefined),
        );
        const killedAt = await killPatroniAndPostgres(cl.dataDir, leader);
        // The writer's session dies with the leader: acknowledgements before that failure
        // came from the old leader, those after it from a new session.
        const brokenAt = await cl.waitFor(
          "the writer's session to the old leader to fail",
          () => Promise.resolve(writer.failureAfter(killedAt)),
          30_000,
        );
        const resumedAt = await withLogs(
          cl.waitFor(
            "a write through the gateway after the failover",
            () => Promise.resolve(writer.acksAfter(brokenAt)[0]?.at),
            60_000,
          ),
        );
        await cl.waitFor(
          "the standby to lead",
          async () => ((await currentLeader(all, ca))?.id === standby.id ? true : undefined),
          30_000,
        );
        // What an asynchronous standby may miss: the last seconds before the loss, plus what
        // the old leader's orphaned backend acknowledged until the session failed.
        const from = killedAt - WINDOW_MS;
        const atRisk = writer.acks.filter((a) => a.at > from && a.at < brokenAt).length;
        windows.push({ from, to: brokenAt, acks: atRisk });
        await withLogs(
          cl.waitFor(
            "the old leader to stream from the new one",
            async () => ((await streamingTo(standby, leader, ca)) ? true : undefined),
            90_000,
          ),
        );
        const streamingAt = performance.now();
        await cl.waitFor(
          "the store to show the old leader as a running follower",
          async () => {
            const old = (await nodes()).find((n) => n.id === leader.id);
            return old?.role === "follower" && old.status === "running" ? true : undefined;
          },
          60_000,
        );
        const t = (v: number) => `${Math.round(v - killedAt)} ms`;
        console.log(
          `kill ${round}: ${leader.id} -> ${standby.id}; session failed after ${t(brokenAt)}, ` +
            `writes again after ${t(resumedAt)}, ` +
            `old leader streaming after ${t(streamingAt)}, running follower in the store after ` +
            `${t(performance.now())}; ${atRisk} acks in the window`,
        );
      }
    } finally {
      await writer.stop();
    }
    const lost = await lostAcks(url, ca, "seq", writer.acks);
    const bound = windows.reduce((sum, w) => sum + w.acks, 0);
    const where = (at: number) => {
      const k = windows.findIndex((w) => at > w.from && at < w.to);
      return k < 0
        ? "outside every window"
        : `acked ${Math.round(at - windows[k]!.from - WINDOW_MS)} ms after kill ${k + 1}`;
    };
    console.log(
      `data safety: ${writer.acks.length} acknowledged rows, ${writer.failures.length} failed inserts, ` +
        `${lost.length} acknowledged rows lost (bound ${bound})${lost.map((a) => `; row ${a.n} ${where(a.at)}`).join("")}`,
    );
    assert.ok(writer.acks.length > 100, `only ${writer.acks.length} rows acknowledged`);
    assert.ok(lost.length <= bound, `${lost.length} acknowledged rows lost, more than the bound ${bound}`);
    // And only from those windows: a row acknowledged while both nodes ran must never go.
    const outside = lost.filter((a) => !windows.some((w) => a.at > w.from && a.at < w.to));
    assert.deepEqual(
      outside.map((a) => a.n),
      [],
      "acknowledged rows lost outside the seconds before a kill",
    );
  });
});
