// Continuous backups and PITR of a Dedicated Enterprise database (3 nodes on 3 dedicated hosts
// in 3 AZs, each in its own network namespace and on its own loop volume, synchronous
// replication with synchronous_mode_strict): the leader takes the full backup; a restore in
// place brings back exactly the data of its time through the same URL, and the cluster comes
// back synchronous (a commit returns, a standby streams as `sync`, all three nodes on the new
// timeline); a failover after it loses no acknowledged row; a fork into a Dedicated Starter
// holds the rows of its time.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { PatroniRest } from "../../src/engines/postgresql/patroni-rest.ts";
import { probeIsolation } from "../../src/runtime/probe.ts";
import { startCluster, type Cluster } from "../support/cluster.ts";
import {
  connectOnce,
  haNodes,
  killPatroniAndPostgres,
  lostAcks,
  nodeDirOf,
  SequentialWriter,
  type HaNode,
} from "../support/ha.ts";

const probe = await probeIsolation();
const HOSTS = [
  { name: "e2e-hbd-d1", pool: "dedicated" as const, az: "osc-fr1-a" },
  { name: "e2e-hbd-d2", pool: "dedicated" as const, az: "osc-fr1-b" },
  { name: "e2e-hbd-d3", pool: "dedicated" as const, az: "osc-fr1-c" },
  // The fork's node: a dedicated host runs one node.
  { name: "e2e-hbd-d4", pool: "dedicated" as const, az: "osc-fr1-a" },
];
const NAME = "ledger-pitr";
const FORK = "ledger-pitr-fork";
/** A commit of a synchronous cluster returns within this, or the cluster is not back. */
const COMMIT_BOUND_MS = 10_000;

/** What GET /patroni says that these checks read. */
interface PatroniView {
  state?: string;
  role?: string;
  timeline?: number;
  replication?: Array<{ application_name?: string; state?: string; sync_state?: string }>;
}

describe(
  "continuous backups and PITR of a Dedicated Enterprise database",
  { skip: probe.netns.ok ? false : probe.netns.detail },
  () => {
    let cl: Cluster;
    let ca = "";
    let id = "";
    let url = "";
    let timelineBefore = 0;

    before(async () => {
      cl = await startCluster({
        subnet: 58,
        hosts: HOSTS,
        env: { CELLAR_BACKUP_CHECK_EVERY_S: "2", CELLAR_BACKUP_ARCHIVE_TIMEOUT_S: "5" },
      });
      ca = await cl.regionCa();
    });
    after(async () => cl?.close());

    const dbApi = async (scope: string, dbId: string, method: string, p: string, body?: unknown) => {
      const tok = await cl.api("POST", `/v1/apps/${scope}/addons/${dbId}/token`);
      assert.equal(tok.status, 200, JSON.stringify(tok.json));
      const res = await fetch(`${cl.controller.url}/api/databases/${dbId}${p}`, {
        method,
        headers: { authorization: `Bearer ${tok.json.addon.token}`, "content-type": "application/json" },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      const text = await res.text();
      return { status: res.status, json: text ? JSON.parse(text) : null };
    };
    const urlOf = async (name: string) => {
      const vars = (await cl.api("GET", `/v1/apps/${name}/variables`)).json.variables as Array<{
        name: string;
        value: string;
      }>;
      return vars.find((v) => v.name === "SCALINGO_POSTGRESQL_URL")?.value;
    };
    /** One statement through `to`, bounded: a commit waiting for a standby fails the check. */
    const sql = async (text: string, to = url, timeoutMs = COMMIT_BOUND_MS) => {
      const client = await connectOnce(to, ca, timeoutMs);
      try {
        return (await client.query(text)).rows;
      } finally {
        await client.end().catch(() => undefined);
      }
    };
    const notes = async (to = url) =>
      (await sql("SELECT note FROM ledger ORDER BY id", to)).map((r) => r.note);
    const nodes = () => haNodes(cl.controller.deps.db, id);
    const windowOf = async () => {
      const res = await dbApi(NAME, id, "GET", "/pitr/recovery_window");
      assert.equal(res.status, 200, JSON.stringify(res.json));
      const w = res.json.recovery_window as {
        earliest_recoverable_at?: string;
        latest_recoverable_at?: string;
      };
      const at = (t: string | undefined) => (t ? Date.parse(t) : 0);
      return { earliest: at(w.earliest_recoverable_at), latest: at(w.latest_recoverable_at) };
    };
    const latestOf = async () => (await windowOf()).latest;
    const waitArchivedPast = (t: string, what: string) =>
      cl.waitFor(what, async () => ((await latestOf()) > Date.parse(t) ? true : undefined), 90_000);
    /** A time strictly between the statements before and after it. */
    const pointBetween = async () => {
      await new Promise((r) => setTimeout(r, 50));
      const t = (await sql("SELECT clock_timestamp() AS t"))[0].t as Date;
      await new Promise((r) => setTimeout(r, 50));
      return t.toISOString();
    };

    /**
     * Patroni's REST API of a namespaced node: dialled on its link to the host, its
     * certificate naming its database-network address (both read from its Patroni config).
     */
    const patroniOf = async (n: HaNode): Promise<PatroniView | null> => {
      const raw = await fs.readFile(path.join(nodeDirOf(cl.dataDir, n), "patroni.json"), "utf8");
      const conf = JSON.parse(raw) as { postgresql: { listen: string; connect_address: string } };
      const named = conf.postgresql.connect_address.replace(/:\d+$/, "");
      const all = conf.postgresql.listen.replace(/:\d+$/, "").split(",");
      const link = all.find((a) => a !== named) ?? named;
      const rest = new PatroniRest(`${link},${named}`, { restPort: n.restPort, restPassword: "" }, ca);
      const res = await rest.call("GET", "/patroni", undefined, 2000).catch(() => null);
      return res && (res.status === 200 || res.status === 503) ? (JSON.parse(res.body) as PatroniView) : null;
    };
    /** The cluster as Patroni sees it: one primary, two standbys streaming from it, one `sync`. */
    const synchronousCluster = async () => {
      const all = await nodes();
      const views = await Promise.all(all.map((n) => patroniOf(n)));
      const li = views.findIndex(
        (v) => v?.state === "running" && (v.role === "master" || v.role === "primary"),
      );
      const leaderView = views[li];
      if (!leaderView || all.length !== 3) return undefined;
      const senders = leaderView.replication ?? [];
      const standbys = all.filter((_, i) => i !== li);
      const streaming = standbys.every((s) =>
        senders.some((r) => r.application_name === s.id && r.state === "streaming"),
      );
      const sameTimeline = views.every((v) => v?.state === "running" && v.timeline === leaderView.timeline);
      if (!streaming || !sameTimeline || !senders.some((r) => r.sync_state === "sync")) return undefined;
      return { leader: all[li]!, timeline: leaderView.timeline!, senders };
    };
    const describeCluster = async () => {
      const all = await nodes();
      const views = await Promise.all(all.map((n) => patroniOf(n)));
      return JSON.stringify(
        all.map((n, i) => ({ id: n.id, role: n.role, status: n.status, patroni: views[i] })),
      );
    };
    const failWith = (what: () => Promise<string>) => async (err: Error) => {
      throw new Error(`${err.message}; ${await what().catch((e: Error) => e.message)}`);
    };

    it("runs a Dedicated Enterprise whose leader takes a full backup into the stanza", async () => {
      const res = await cl.api("POST", "/v1/databases", {
        database: { name: NAME, technology: "postgresql-ng", plan: "postgresql-dr-enterprise-4096" },
      });
      assert.equal(res.status, 201, JSON.stringify(res.json));
      id = res.json.database.id as string;
      // Three nodes' volumes, namespaces, initdb and clones, and the etcd cluster formed.
      url = await cl.waitFor(`${NAME} to run`, () => urlOf(NAME), 300_000).catch(failWith(describeCluster));
      await sql("CREATE TABLE ledger (id serial PRIMARY KEY, note text NOT NULL)");
      await sql("CREATE TABLE acked (n int PRIMARY KEY)");
      await sql("INSERT INTO ledger (note) VALUES ('kept-1'), ('kept-2')");
      const sets = await cl.waitFor(
        "a full backup",
        async () => {
          const list = (await dbApi(NAME, id, "GET", "/pitr/backups")).json.continuous_backups as any[];
          return list.length > 0 ? list : undefined;
        },
        120_000,
      );
      assert.equal(sets[0].type, "full");
      const cluster = await cl.waitFor("the synchronous cluster", synchronousCluster, 60_000);
      timelineBefore = cluster.timeline;
      assert.equal(sets[0].timeline, timelineBefore, "the backup is of the leader's timeline");
      // pg_backup_stop on a primary writes a backup history file into the WAL archive; a
      // standby's backup writes none: the leader took this one.
      const archive = path.join(cl.dataDir, "backups", "osc-fr1", id, "archive", id);
      const files = await walkNames(archive);
      assert.ok(
        files.some((f) => /^[0-9A-F]{24}\.[0-9A-F]{8}\.backup/.test(f)),
        `a backup history file in ${files.join(", ")}`,
      );
    });

    let target = "";
    let earliestAfterRestore = 0;
    it("restores in place to a time between two markers: same URL, synchronous again, all nodes on the new timeline", async () => {
      await sql("INSERT INTO ledger (note) VALUES ('before-target')");
      target = await pointBetween();
      await sql("INSERT INTO ledger (note) VALUES ('after-target')");
      await waitArchivedPast(target, "the archive to pass the target");
      const res = await dbApi(NAME, id, "POST", "/pitr/restore", { restore_time: target });
      assert.equal(res.status, 201, JSON.stringify(res.json));
      const opId = res.json.operation.id as string;
      const started = performance.now();
      const op = await cl
        .waitFor(
          "the restore operation to finish",
          async () => {
            const o = (await cl.api("GET", `/v1/apps/${NAME}/operations/${opId}`)).json.operation;
            return o.status === "done" || o.status === "error" ? o : undefined;
          },
          240_000,
        )
        .catch(failWith(describeCluster));
      console.log(
        `timing: Dedicated Enterprise restore in place ${Math.round(performance.now() - started)} ms`,
      );
      assert.equal(op.status, "done", op.error ?? "");
      assert.equal(await urlOf(NAME), url, "the URL is unchanged");
      // Commits return again once a standby streams from the restored leader.
      await cl.waitFor(
        "a commit through the URL to return",
        async () => ((await sql("INSERT INTO ledger (note) VALUES ('after-restore')")) ? true : undefined),
        120_000,
      );
      const cluster = await cl
        .waitFor("a sync standby and all nodes on the new timeline", synchronousCluster, 120_000)
        .catch(failWith(describeCluster));
      assert.ok(cluster.timeline > timelineBefore, `timeline ${cluster.timeline} after ${timelineBefore}`);
      const kept = await notes();
      assert.deepEqual(
        kept.filter((n) => n !== "after-restore"),
        ["kept-1", "kept-2", "before-target"],
      );
      assert.ok(kept.includes("after-restore"));
      const names = (await sql("SHOW synchronous_standby_names"))[0].synchronous_standby_names;
      assert.notEqual(names, "", "a synchronous standby is named");
      // A commit now is bounded (connectOnce's query timeout): synchronous replication is back.
      await sql("INSERT INTO ledger (note) VALUES ('bounded-commit')");
      // The restored timeline's own full backup: nothing before the restore is offered again.
      earliestAfterRestore = await cl.waitFor(
        "the window of the restored timeline",
        async () => {
          const { earliest } = await windowOf();
          return earliest > Date.parse(target) ? earliest : undefined;
        },
        120_000,
      );
    });

    let forkTime = "";
    it("fails over after the restore: no acknowledged row is lost", async () => {
      const writer = new SequentialWriter({ url, ca, table: "acked", everyMs: 20, timeoutMs: 3000 });
      writer.start();
      let leader: HaNode | undefined;
      try {
        await cl.waitFor("the writer's first rows", () =>
          Promise.resolve(writer.acks.length > 20 ? true : undefined),
        );
        leader = (await synchronousCluster())?.leader;
        assert.ok(leader, "a leader before the kill");
        const killedAt = await killPatroniAndPostgres(cl.dataDir, leader);
        await cl
          .waitFor(
            "writes through the URL after the failover",
            () => Promise.resolve(writer.acksAfter(killedAt + 500).length > 10 ? true : undefined),
            90_000,
          )
          .catch(failWith(async () => `writer: ${writer.lastError}; ${await describeCluster()}`));
      } finally {
        await writer.stop();
      }
      const lost = await lostAcks(url, ca, "acked", writer.acks);
      console.log(`data safety after the restore: ${writer.acks.length} acknowledged, ${lost.length} lost`);
      assert.deepEqual(lost, [], "synchronous replication: no acknowledged row is lost");
      const newLeader = await cl.waitFor(
        "a new leader recorded",
        async () => (await nodes()).find((n) => n.role === "leader" && n.id !== leader.id),
        60_000,
      );
      assert.notEqual(newLeader.id, leader.id);
      // A point for the fork, on the new leader's timeline (the lineage passes the failover).
      await sql("INSERT INTO ledger (note) VALUES ('in-fork')");
      forkTime = await pointBetween();
      await sql("INSERT INTO ledger (note) VALUES ('not-in-fork')");
    });

    it("forks into a Dedicated Starter at a point in time: that time's rows, a new URL", async () => {
      await waitArchivedPast(forkTime, "the new leader's archive to pass the fork's time");
      const { earliest } = await windowOf();
      assert.equal(
        new Date(earliest).toISOString(),
        new Date(earliestAfterRestore).toISOString(),
        "the failover continued the restored timeline's history",
      );
      const res = await cl.api("POST", "/v1/databases", {
        database: {
          name: FORK,
          technology: "postgresql-ng",
          plan: "postgresql-dr-starter-4096",
          restore_from: { database_id: id, restore_time: forkTime },
        },
      });
      assert.equal(res.status, 201, JSON.stringify(res.json));
      const forkUrl = await cl.waitFor("the fork to run", () => urlOf(FORK), 240_000);
      assert.notEqual(forkUrl, url);
      const rows = await notes(forkUrl);
      assert.deepEqual(
        rows.filter((n) => n !== "bounded-commit" && n !== "after-restore"),
        ["kept-1", "kept-2", "before-target", "in-fork"],
      );
      assert.ok(rows.includes("bounded-commit"));
      assert.ok((await notes()).includes("not-in-fork"), "the source is untouched");
    });
  },
);

/** File names anywhere under `dir` (none when it is missing). */
async function walkNames(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { withFileTypes: true }).catch(() => []);
  const names: string[] = [];
  for (const e of entries) {
    if (e.isDirectory()) names.push(...(await walkNames(path.join(dir, e.name))));
    else names.push(e.name);
  }
  return names;
}
