// Continuous backups of an HA cluster against real agents, Patroni, PostgreSQL and
// pgBackRest: a Shared Business add-on archives into its one stanza and its leader takes a
// verified full backup; a failover keeps archiving without a gap (rows written after it are
// restored from a backup taken before it); a restore in place brings back exactly the data
// of its time, with the standby cloned again and the URL unchanged; a fork of it into
// another Business add-on runs (its first node seeded, then adopted by Patroni).
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import type pg from "pg";
import { connectVerified, startCluster, type Cluster } from "../support/cluster.ts";
import { nodeDirOf, printPatroniLogs } from "../support/ha.ts";

const HOSTS = [
  { name: "e2e-hab-s1", pool: "shared" as const, az: "osc-fr1-a" },
  { name: "e2e-hab-s2", pool: "shared" as const, az: "osc-fr1-a" },
  { name: "e2e-hab-s3", pool: "shared" as const, az: "osc-fr1-b" },
];

interface NodeRow {
  id: string;
  host: string;
  role: string;
  status: string;
}

describe("continuous backups and PITR of an HA cluster", () => {
  let cl: Cluster;
  let ca = "";
  let addonId = "";
  let url = "";
  let target = "";

  before(async () => {
    cl = await startCluster({
      subnet: 52,
      hosts: HOSTS,
      env: { CELLAR_BACKUP_CHECK_EVERY_S: "2", CELLAR_BACKUP_ARCHIVE_TIMEOUT_S: "5" },
    });
    ca = await cl.regionCa();
    assert.equal((await cl.api("POST", "/v1/apps", { app: { name: "hab-app" } })).status, 201);
  });
  after(async () => cl?.close());

  const dbApi = async (scope: string, id: string, method: string, p: string, body?: unknown) => {
    const tok = await cl.api("POST", `/v1/apps/${scope}/addons/${id}/token`);
    assert.equal(tok.status, 200, JSON.stringify(tok.json));
    const res = await fetch(`${cl.controller.url}/api/databases/${id}${p}`, {
      method,
      headers: { authorization: `Bearer ${tok.json.addon.token}`, "content-type": "application/json" },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null };
  };
  const windowOf = async () => {
    const res = await dbApi("hab-app", addonId, "GET", "/pitr/recovery_window");
    assert.equal(res.status, 200, JSON.stringify(res.json));
    return res.json.recovery_window as { earliest_recoverable_at?: string; latest_recoverable_at?: string };
  };
  const withClient = async <T>(fn: (c: pg.Client) => Promise<T>, to = url): Promise<T> => {
    const client = await connectVerified(to, ca);
    try {
      return await fn(client);
    } finally {
      await client.end();
    }
  };
  const notes = () =>
    withClient(async (c) => (await c.query("SELECT note FROM ledger ORDER BY id")).rows.map((r) => r.note));
  const nodes = async (): Promise<NodeRow[]> =>
    (
      await cl.controller.deps.db.query<NodeRow>(
        `SELECT i.id, h.name AS host, i.role, i.status FROM instances i JOIN hosts h ON h.id = i.host_id
         WHERE i.database_id = $1 AND i.kind = 'node' ORDER BY i.ordinal`,
        [addonId],
      )
    ).rows;
  const nodeDir = (n: NodeRow) => nodeDirOf(cl.dataDir, n);
  /** A failed wait prints what the store, the agents and each Patroni said. */
  const withState = <T>(p: Promise<T>): Promise<T> =>
    p.catch(async (err: Error) => {
      const all = await nodes();
      console.log(JSON.stringify({ nodes: all, agents: cl.agentLines.slice(-40) }, null, 1));
      await printPatroniLogs(cl.dataDir, all, 80);
      throw err;
    });
  /** A time strictly between the writes before and after it. */
  const pointBetween = async (c: pg.Client) => {
    await new Promise((r) => setTimeout(r, 50));
    const t = (await c.query("SELECT clock_timestamp() AS t")).rows[0].t as Date;
    await new Promise((r) => setTimeout(r, 50));
    return t.toISOString();
  };
  const waitArchivedPast = (t: string, what: string) =>
    cl.waitFor(
      what,
      async () => {
        const w = await windowOf();
        return w.latest_recoverable_at && Date.parse(w.latest_recoverable_at) > Date.parse(t) ? w : undefined;
      },
      90_000,
    );

  it("archives a Business add-on and its leader takes a full backup, verified", async () => {
    const res = await cl.api("POST", "/v1/apps/hab-app/addons", {
      addon: { addon_provider_id: "postgresql", plan_id: "postgresql-business-512" },
    });
    assert.equal(res.status, 201);
    addonId = res.json.addon.id;
    url = await cl.waitFor(
      "the add-on to run",
      async () => {
        const vars = (await cl.api("GET", "/v1/apps/hab-app/variables")).json.variables as any[];
        return vars.find((v) => v.name === "SCALINGO_POSTGRESQL_URL")?.value as string | undefined;
      },
      180_000,
    );
    await withClient(async (c) => {
      await c.query("CREATE TABLE ledger (id serial PRIMARY KEY, note text NOT NULL)");
      await c.query("INSERT INTO ledger (note) VALUES ('kept-1'), ('kept-2')");
    });
    const w = await cl.waitFor("a recovery window", async () => {
      const win = await windowOf();
      return win.earliest_recoverable_at ? win : undefined;
    });
    assert.ok(Date.parse(w.earliest_recoverable_at!) <= Date.parse(w.latest_recoverable_at!));
    const sets = await cl.waitFor(
      "the full backup to be verified",
      async () => {
        const r = await dbApi("hab-app", addonId, "GET", "/pitr/backups");
        const list = r.json.continuous_backups as any[];
        return list.length > 0 && list.every((b) => b.verification_status !== "pending") ? list : undefined;
      },
      120_000,
    );
    assert.equal(sets.length, 1);
    assert.equal(sets[0].type, "full");
    assert.equal(sets[0].verification_status, "verified", sets[0].verification_detail);
    // One stanza for the cluster; every member is set to archive into it (only a primary does).
    const { rows } = await cl.controller.deps.db.query(
      "SELECT stanza, retention_days FROM continuous_backups WHERE database_id = $1",
      [addonId],
    );
    assert.equal(rows[0].stanza, addonId);
    assert.equal(rows[0].retention_days, 7);
    const standby = (await nodes()).find((n) => n.role === "follower")!;
    const conf = await fs.readFile(path.join(nodeDir(standby), "pgdata", "postgresql.conf"), "utf8");
    assert.match(conf, /archive_mode = 'on'/);
    assert.match(conf, /archive-push/);
    const events = (await cl.api("GET", "/v1/apps/hab-app/events")).json.events as any[];
    assert.equal(events.filter((e) => e.type === "database_backup_succeeded").length, 1);
  });

  it("keeps archiving across a failover: the window goes on, rows written after it are recoverable", async () => {
    const before = await windowOf();
    const leader = (await nodes()).find((n) => n.role === "leader")!;
    await withClient((c) => c.query("INSERT INTO ledger (note) VALUES ('before-failover')"));
    const patroniPid = Number(await fs.readFile(path.join(nodeDir(leader), "patroni.pid"), "utf8"));
    const postmasterPid = Number(
      (await fs.readFile(path.join(nodeDir(leader), "pgdata", "postmaster.pid"), "utf8")).split("\n")[0],
    );
    process.kill(patroniPid, "SIGKILL");
    process.kill(postmasterPid, "SIGKILL");
    const killedAt = Date.now();
    await withState(
      cl.waitFor(
        "a write through the gateway after the failover",
        () =>
          withClient(
            async (c) => (await c.query("INSERT INTO ledger (note) VALUES ('after-failover')"), true),
          ),
        90_000,
      ),
    );
    console.log(`timing: kill to a write through the gateway ${Date.now() - killedAt} ms`);
    assert.ok((await notes()).includes("before-failover"));
    target = await withClient(async (c) => {
      const t = await pointBetween(c);
      await c.query("INSERT INTO ledger (note) VALUES ('lost-1')");
      await c.query("UPDATE ledger SET note = 'changed' WHERE note = 'kept-1'");
      return t;
    });
    await withState(
      cl.waitFor(
        "the new leader to be recorded",
        async () =>
          (await nodes()).find((n) => n.role === "leader" && n.id !== leader.id) ? true : undefined,
        60_000,
      ),
    );
    console.log(`timing: kill to the new leader recorded ${Date.now() - killedAt} ms`);
    const after = await waitArchivedPast(target, "the new leader's archive to pass the target");
    // The failover continued the history: the backup before it still opens the window.
    assert.equal(after.earliest_recoverable_at, before.earliest_recoverable_at);
    const { rows } = await cl.controller.deps.db.query(
      "SELECT timeline FROM continuous_backups WHERE database_id = $1",
      [addonId],
    );
    assert.ok(rows[0].timeline >= 2, `timeline ${rows[0].timeline}`);
    await withState(
      cl.waitFor(
        "the old leader to rejoin as a running follower",
        async () => {
          const old = (await nodes()).find((n) => n.id === leader.id);
          return old?.role === "follower" && old.status === "running" ? true : undefined;
        },
        90_000,
      ),
    );
  });

  it("restores the cluster in place: exactly the data of that time, the standby cloned again, the URL kept", async () => {
    const sorted = (await notes()).sort();
    assert.deepEqual(sorted, ["after-failover", "before-failover", "changed", "kept-2", "lost-1"]);
    const res = await dbApi("hab-app", addonId, "POST", "/pitr/restore", { restore_time: target });
    assert.equal(res.status, 201, JSON.stringify(res.json));
    const opId = res.json.operation.id as string;
    const op = await cl.waitFor(
      "the restore operation to finish",
      async () => {
        const o = (await cl.api("GET", `/v1/apps/hab-app/operations/${opId}`)).json.operation;
        return o.status === "done" || o.status === "error" ? o : undefined;
      },
      240_000,
    );
    assert.equal(op.status, "done", op.error ?? "");
    assert.deepEqual(await notes(), ["kept-1", "kept-2", "before-failover", "after-failover"]);
    const vars = (await cl.api("GET", "/v1/apps/hab-app/variables")).json.variables as any[];
    assert.equal(vars.find((v) => v.name === "SCALINGO_POSTGRESQL_URL").value, url);
    await cl.waitFor(
      "a leader and a streaming standby",
      async () => {
        const all = await nodes();
        const roles = all.map((n) => `${n.role}/${n.status}`).sort();
        if (roles.join() !== "follower/running,leader/running") return undefined;
        const n = await withClient(
          async (c) => (await c.query("SELECT count(*)::int AS n FROM pg_stat_replication")).rows[0].n,
        );
        return n === 1 ? true : undefined;
      },
      120_000,
    );
    // The standby holds the restored data: a row written now reaches it.
    await withClient((c) => c.query("INSERT INTO ledger (note) VALUES ('after-restore')"));
    // A new timeline, and nothing before the restore is offered again.
    await cl.waitFor(
      "the window of the restored timeline",
      async () => {
        const w = await windowOf();
        return w.earliest_recoverable_at && Date.parse(w.earliest_recoverable_at) > Date.parse(target)
          ? true
          : undefined;
      },
      120_000,
    );
  });

  it("forks the restored cluster into another Business add-on at a point in time: a leader seeded, a standby cloned", async () => {
    const forkTime = await withClient(async (c) => {
      const t = await pointBetween(c);
      await c.query("INSERT INTO ledger (note) VALUES ('not-in-fork')");
      return t;
    });
    await waitArchivedPast(forkTime, "the archive to pass the fork's time");
    assert.equal((await cl.api("POST", "/v1/apps", { app: { name: "hab-fork" } })).status, 201);
    const res = await cl.api("POST", "/v1/apps/hab-fork/addons", {
      addon: {
        addon_provider_id: "postgresql",
        plan_id: "postgresql-business-512",
        restore_from: { database_id: addonId, restore_time: forkTime },
      },
    });
    assert.equal(res.status, 201, JSON.stringify(res.json));
    const forkUrl = await cl.waitFor(
      "the fork to run",
      async () => {
        const vars = (await cl.api("GET", "/v1/apps/hab-fork/variables")).json.variables as any[];
        return vars.find((v) => v.name === "SCALINGO_POSTGRESQL_URL")?.value as string | undefined;
      },
      240_000,
    );
    assert.notEqual(forkUrl, url);
    // The adopted leader restarts once (settings only a start applies): its standby reconnects.
    await cl.waitFor(
      "the fork's standby to stream from its seeded leader",
      () =>
        withClient(
          async (c) =>
            (await c.query("SELECT count(*)::int AS n FROM pg_stat_replication")).rows[0].n === 1 ||
            undefined,
          forkUrl,
        ),
      90_000,
    );
    const rows = await withClient(
      async (c) => (await c.query("SELECT note FROM ledger ORDER BY id")).rows,
      forkUrl,
    );
    assert.deepEqual(
      rows.map((r) => r.note),
      ["kept-1", "kept-2", "before-failover", "after-failover", "after-restore"],
    );
  });
});
