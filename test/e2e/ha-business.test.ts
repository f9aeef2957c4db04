// A Business add-on is a real HA cluster: Patroni on two nodes of one AZ, the region's
// etcd cluster of three members, two gateways that follow the leader. Killing the
// leader's Patroni and PostgreSQL fails over without anyone acting, and no acknowledged
// row is lost; the old leader comes back as a standby. Every path is TLS-only.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { connectVerified, startCluster, type Cluster } from "../support/cluster.ts";
import { printPatroniLogs } from "../support/ha.ts";

const HOSTS = [
  { name: "e2e-ha-s1", pool: "shared" as const, az: "osc-fr1-a" },
  { name: "e2e-ha-s2", pool: "shared" as const, az: "osc-fr1-a" },
  { name: "e2e-ha-s3", pool: "shared" as const, az: "osc-fr1-b" },
];

interface NodeRow {
  id: string;
  host: string;
  role: string;
  status: string;
  port: number;
  extra_port: number;
  address: string;
}

describe("Business PostgreSQL add-on: an HA cluster with automatic failover", () => {
  let cl: Cluster;
  let addonId = "";
  let url = "";
  let ca = "";

  before(async () => {
    cl = await startCluster({ subnet: 45, hosts: HOSTS });
    assert.equal((await cl.api("POST", "/v1/apps", { app: { name: "ha-app" } })).status, 201);
    ca = await cl.regionCa();
  });
  after(async () => cl?.close());

  const addon = async () => (await cl.api("GET", `/v1/apps/ha-app/addons/${addonId}`)).json.addon;
  const nodes = async (): Promise<NodeRow[]> => {
    const { rows } = await cl.controller.deps.db.query<NodeRow>(
      `SELECT i.id, h.name AS host, i.role, i.status, i.port, i.extra_port, host(h.address) AS address
       FROM instances i JOIN hosts h ON h.id = i.host_id WHERE i.database_id = $1 AND i.kind = 'node'
       ORDER BY i.ordinal`,
      [addonId],
    );
    return rows;
  };
  const nodeDir = (n: NodeRow) => path.join(cl.dataDir, "hosts", n.host, "instances", n.id, "node");

  it("provisions two nodes on two hosts of one AZ, a leader and a streaming standby", async () => {
    const res = await cl.api("POST", "/v1/apps/ha-app/addons", {
      addon: { addon_provider_id: "postgresql", plan_id: "postgresql-business-512" },
    });
    assert.equal(res.status, 201);
    addonId = res.json.addon.id;
    const startedAt = Date.now();
    await cl.waitFor(
      "the add-on to run",
      async () => ((await addon()).status === "running" ? true : undefined),
      180_000,
    );
    console.log(
      `timing: POST add-on to running ${Date.now() - startedAt} ms (etcd cluster formed on the way)`,
    );
    const all = await nodes();
    assert.equal(all.length, 2);
    assert.notEqual(all[0]!.host, all[1]!.host);
    assert.deepEqual(all.map((n) => n.role).sort(), ["follower", "leader"]);
    const { rows: members } = await cl.controller.deps.db.query(
      "SELECT name, status FROM dcs_members ORDER BY name",
    );
    assert.deepEqual(
      members.map((m: { name: string }) => m.name),
      HOSTS.map((h) => h.name),
    );
    const vars = (await cl.api("GET", "/v1/apps/ha-app/variables")).json.variables;
    url = vars.find((v: { name: string }) => v.name === "SCALINGO_POSTGRESQL_URL").value;
    const client = await connectVerified(url, ca);
    try {
      await client.query("CREATE TABLE acked (n int PRIMARY KEY)");
      await client.query("INSERT INTO acked SELECT generate_series(1, 100)");
      // Every user sees the standby's walsender; its details are for privileged roles only.
      const standby = await client.query("SELECT count(*)::int AS n FROM pg_stat_replication");
      assert.equal(standby.rows[0].n, 1);
    } finally {
      await client.end();
    }
  });

  it("refuses plaintext on Patroni's REST API, on etcd, and replication without a client certificate", async () => {
    const [node] = await nodes();
    const plainHttp = await new Promise<string>((resolve) => {
      const req = http.get(`http://${node!.address}:${node!.extra_port}/patroni`, (r) =>
        resolve(`status ${r.statusCode}`),
      );
      req.on("error", (err) => resolve(`error ${(err as NodeJS.ErrnoException).code ?? err.message}`));
      req.setTimeout(3000, () => req.destroy(new Error("timeout")));
    });
    assert.match(plainHttp, /^(error|status 400)/);
    const etcdPlain = await new Promise<string>((resolve) => {
      const req = http.get(`http://${node!.address}:2379/version`, (r) => resolve(`status ${r.statusCode}`));
      req.on("error", (err) => resolve(`error ${(err as NodeJS.ErrnoException).code ?? err.message}`));
      req.setTimeout(3000, () => req.destroy(new Error("timeout")));
    });
    assert.match(etcdPlain, /^(error|status 400)/);
    // The replication role's password alone is not enough: a client certificate must name it.
    const { rows } = await cl.controller.deps.db.query(
      "SELECT replication_password FROM database_ha_secrets WHERE database_id = $1",
      [addonId],
    );
    const attempt = async (extra: Record<string, string>) => {
      const client = new pg.Client({
        host: node!.address,
        port: node!.port,
        user: "cellar_replication",
        password: rows[0].replication_password,
        database: "postgres",
        ssl: { ca, rejectUnauthorized: false },
        connectionTimeoutMillis: 5000,
        ...extra,
      });
      try {
        await client.connect();
        return "connected";
      } catch (err) {
        return (err as Error).message;
      } finally {
        await client.end().catch(() => undefined);
      }
    };
    assert.match(await attempt({ replication: "true" }), /certificate/);
    // Nor may it open a session in a database.
    assert.match(await attempt({}), /pg_hba|rejects/);
  });

  it("fails over when the leader's Patroni and PostgreSQL are killed, losing no acknowledged row", async () => {
    const leader = (await nodes()).find((n) => n.role === "leader")!;
    const patroniPid = Number(await fs.readFile(path.join(nodeDir(leader), "patroni.pid"), "utf8"));
    const postmasterPid = Number(
      (await fs.readFile(path.join(nodeDir(leader), "pgdata", "postmaster.pid"), "utf8")).split("\n")[0],
    );
    const killedAt = Date.now();
    process.kill(patroniPid, "SIGKILL");
    process.kill(postmasterPid, "SIGKILL");
    // Writes through the same URL succeed again once a standby took over.
    await cl
      .waitFor(
        "a write through the gateway after the failover",
        async () => {
          const client = await connectVerified(url, ca);
          try {
            await client.query("INSERT INTO acked VALUES (101)");
            return true;
          } finally {
            await client.end().catch(() => undefined);
          }
        },
        60_000,
      )
      .catch(async (err: Error) => {
        // What each node's Patroni said: the failure is otherwise hard to read.
        await printPatroniLogs(cl.dataDir, await nodes(), 25);
        throw err;
      });
    console.log(`timing: kill to first write through the gateway ${Date.now() - killedAt} ms`);
    const client = await connectVerified(url, ca);
    try {
      const { rows } = await client.query("SELECT count(*)::int AS n FROM acked");
      assert.equal(rows[0].n, 101);
    } finally {
      await client.end();
    }
    await cl.waitFor(
      "the old leader to rejoin as a running follower",
      async () => {
        const old = (await nodes()).find((n) => n.id === leader.id);
        return old?.role === "follower" && old.status === "running" ? true : undefined;
      },
      90_000,
    );
    assert.equal((await nodes()).filter((n) => n.role === "leader").length, 1);
    // The failover is in the app's events.
    const { rows: events } = await cl.controller.deps.db.query(
      "SELECT type_data FROM events WHERE database_id = $1 AND type = 'database_leader_changed'",
      [addonId],
    );
    assert.equal(events.length, 1);
    assert.notEqual(events[0].type_data.new_leader, leader.id);
  });

  it("is removed completely: processes stopped, ports freed, its etcd user and keys gone", async () => {
    const before = await nodes();
    assert.equal((await cl.api("DELETE", `/v1/apps/ha-app/addons/${addonId}`)).status, 204);
    await cl.waitFor(
      "the instances to be removed",
      async () => ((await nodes()).length === 0 ? true : undefined),
      90_000,
    );
    for (const n of before) {
      const open = await new Promise<boolean>((resolve) => {
        const s = net.connect({ host: n.address, port: n.port }, () => (s.destroy(), resolve(true)));
        s.on("error", () => resolve(false));
      });
      assert.equal(open, false, `port ${n.port} on ${n.host} still open`);
      await assert.rejects(fs.access(nodeDir(n)));
    }
    await cl.waitFor(
      "the cluster's etcd user to be dropped",
      async () => {
        const { rows } = await cl.controller.deps.db.query(
          "SELECT dcs_user_created FROM database_ha_secrets WHERE database_id = $1",
          [addonId],
        );
        return rows.length === 0 || rows[0].dcs_user_created === false ? true : undefined;
      },
      60_000,
    );
  });
});
