// Dedicated Business and Enterprise databases are real HA clusters: one node per dedicated
// host, in different AZs, each inside its own network namespace and on its database's own
// network, where the nodes replicate and the gateways route to the leader. Their Patroni
// reaches the region's etcd through the node's link to its host. Enterprise replicates
// synchronously: a killed leader loses no acknowledged row, ever.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { listNodeNetns, nodeNetNames } from "../../src/runtime/netns.ts";
import { probeIsolation } from "../../src/runtime/probe.ts";
import { connectVerified, startCluster, type Cluster } from "../support/cluster.ts";
import {
  haNodes,
  killPatroniAndPostgres,
  lostAcks,
  printPatroniLogs,
  SequentialWriter,
  type HaNode,
} from "../support/ha.ts";

const probe = await probeIsolation();
const HOSTS = [
  { name: "e2e-hd-d1", pool: "dedicated" as const, az: "osc-fr1-a" },
  { name: "e2e-hd-d2", pool: "dedicated" as const, az: "osc-fr1-b" },
  { name: "e2e-hd-d3", pool: "dedicated" as const, az: "osc-fr1-c" },
  // A dedicated host runs one node: Business side by side needs two more.
  { name: "e2e-hd-d4", pool: "dedicated" as const, az: "osc-fr1-a" },
  { name: "e2e-hd-d5", pool: "dedicated" as const, az: "osc-fr1-b" },
];
const AZ = new Map(HOSTS.map((h) => [h.name, h.az]));

describe("Dedicated HA databases", { skip: probe.netns.ok ? false : probe.netns.detail }, () => {
  let cl: Cluster;
  let ca = "";
  const dbs = new Map<string, { id: string; url: string }>();

  before(async () => {
    cl = await startCluster({ subnet: 44, hosts: HOSTS });
    ca = await cl.regionCa();
  });
  after(async () => cl?.close());

  const create = async (name: string, plan: string) => {
    const res = await cl.api("POST", "/v1/databases", {
      database: { name, technology: "postgresql-ng", plan },
    });
    assert.equal(res.status, 201, JSON.stringify(res.json));
    return res.json.database.id as string;
  };
  const urlOf = (name: string) =>
    cl
      .waitFor(
        `${name} to run and publish its URL`,
        async () => {
          const vars = (await cl.api("GET", `/v1/apps/${name}/variables`)).json.variables as Array<{
            name: string;
            value: string;
          }>;
          return vars.find((v) => v.name === "SCALINGO_POSTGRESQL_URL")?.value;
        },
        // Two clusters' initdb, clones and etcd formation on a shared 2-core machine.
        420_000,
      )
      .catch(async (err: Error) => {
        // Where it stands: the database's reason and each instance's status.
        const { rows } = await cl.controller.deps.db.query(
          `SELECT d.phase, d.phase_reason, i.kind, i.id, i.status, i.status_message, i.role
         FROM databases d LEFT JOIN instances i ON i.database_id = d.id WHERE d.name = $1`,
          [name],
        );
        console.log(JSON.stringify(rows, null, 1));
        const { rows: ids } = await cl.controller.deps.db.query("SELECT id FROM databases WHERE name = $1", [
          name,
        ]);
        if (ids[0]) await printPatroniLogs(cl.dataDir, await haNodes(cl.controller.deps.db, ids[0].id));
        throw err;
      });
  const nodesOf = (name: string) => haNodes(cl.controller.deps.db, dbs.get(name)!.id);

  it("provisions Enterprise on 3 hosts of 3 AZs and Business on 2, each node in its own namespace", async () => {
    const startedAt = Date.now();
    const ids = [await create("ledger-ent", "postgresql-dr-enterprise-4096")];
    ids.push(await create("ledger-biz", "postgresql-dr-business-4096"));
    const [entUrl, bizUrl] = await Promise.all([urlOf("ledger-ent"), urlOf("ledger-biz")]);
    console.log(`timing: POST to both running ${Date.now() - startedAt} ms (etcd cluster formed on the way)`);
    dbs.set("ledger-ent", { id: ids[0]!, url: entUrl });
    dbs.set("ledger-biz", { id: ids[1]!, url: bizUrl });
    for (const [name, count] of [
      ["ledger-ent", 3],
      ["ledger-biz", 2],
    ] as const) {
      assert.match(
        dbs.get(name)!.url,
        /@198\.19\.44\.\d+:\d+\/.*\?sslmode=require$/,
        "its own public endpoint",
      );
      const nodes = await nodesOf(name);
      if (process.env.CELLAR_TEST_LOG) await printPatroniLogs(cl.dataDir, nodes);
      assert.equal(nodes.length, count);
      assert.equal(new Set(nodes.map((n) => AZ.get(n.host))).size, count, "one node per AZ");
      assert.deepEqual(nodes.map((n) => n.role).sort(), [
        ...Array<string>(count - 1).fill("follower"),
        "leader",
      ]);
      const namespaces = await listNodeNetns();
      for (const n of nodes) assert.ok(namespaces.includes(nodeNetNames(n.id).ns), `${n.id} has a namespace`);
    }
    const client = await connectVerified(dbs.get("ledger-ent")!.url, ca);
    try {
      await client.query("CREATE TABLE acked (n int PRIMARY KEY)");
      // Each standby streams over the database's network; Enterprise commits wait for one.
      const { rows } = await client.query("SELECT count(*)::int AS n FROM pg_stat_replication");
      assert.equal(rows[0].n, 2);
      const sync = await client.query("SHOW synchronous_standby_names");
      assert.notEqual(sync.rows[0].synchronous_standby_names, "", "a synchronous standby is named");
    } finally {
      await client.end();
    }
  });

  /**
   * Kills `name`'s leader under a sequential writer and waits for writes through the same
   * URL again; `after` runs while the writer still writes. Returns the writer and its lost rows.
   */
  const failoverUnderWriter = async (
    name: string,
    after: (leader: HaNode, killedAt: number, writer: SequentialWriter) => Promise<void> = () =>
      Promise.resolve(),
  ) => {
    const { url } = dbs.get(name)!;
    const writer = new SequentialWriter({ url, ca, table: "acked", everyMs: 20, timeoutMs: 3000 });
    writer.start();
    try {
      await cl.waitFor("the writer's first rows", () =>
        Promise.resolve(writer.acks.length > 20 ? true : undefined),
      );
      const leader = (await nodesOf(name)).find((n) => n.role === "leader")!;
      const killedAt = await killPatroniAndPostgres(cl.dataDir, leader);
      await cl
        .waitFor(
          "writes through the gateway after the failover",
          () => Promise.resolve(writer.acksAfter(killedAt + 500).length > 10 ? true : undefined),
          90_000,
        )
        .catch(async (err: Error) => {
          await printPatroniLogs(cl.dataDir, await nodesOf(name));
          throw new Error(`${err.message}; writer's last error: ${writer.lastError}`);
        });
      await after(leader, killedAt, writer);
    } finally {
      await writer.stop();
    }
    return { writer, lost: await lostAcks(url, ca, "acked", writer.acks) };
  };

  it("Enterprise: a killed leader fails over through the same URL and no acknowledged row is lost", async () => {
    const { writer, lost } = await failoverUnderWriter("ledger-ent", async (leader, killedAt, w) => {
      // The session on the old leader may still commit for a moment: time from its failure.
      const resumed = w.acksAfter(w.failureAfter(killedAt) ?? killedAt)[0]!;
      console.log(
        `timing: Enterprise kill to first write after the failover ${Math.round(resumed.at - killedAt)} ms`,
      );
      await cl.waitFor(
        "the old leader to rejoin as a running follower",
        async () => {
          const old = (await nodesOf("ledger-ent")).find((n) => n.id === leader.id);
          return old?.role === "follower" && old.status === "running" ? true : undefined;
        },
        120_000,
      );
    });
    console.log(`data safety: ${writer.acks.length} acknowledged, ${lost.length} lost`);
    assert.deepEqual(lost, [], "synchronous replication: no acknowledged row is lost");
    assert.equal((await nodesOf("ledger-ent")).filter((n) => n.role === "leader").length, 1);
  });

  it("Business: a killed leader fails over through the same URL", async () => {
    const setup = await connectVerified(dbs.get("ledger-biz")!.url, ca);
    await setup.query("CREATE TABLE acked (n int PRIMARY KEY)");
    await setup.end();
    const { writer, lost } = await failoverUnderWriter("ledger-biz");
    console.log(
      `data safety (Business, asynchronous): ${writer.acks.length} acknowledged, ${lost.length} lost`,
    );
  });

  it("deletes both completely: no namespace, no etcd user, no encryption key left", async () => {
    const all = [...(await nodesOf("ledger-ent")), ...(await nodesOf("ledger-biz"))];
    const ids = [...dbs.values()].map((d) => d.id);
    if (probe.loopVolumes.ok) {
      // Every node, the rejoined old leaders too, on an encrypted volume under its own key.
      for (const [name, db] of dbs) {
        await cl.waitFor(`${name} to report encryption at rest on every node`, async () =>
          (await cl.api("GET", `/api/databases/${db.id}`)).json.database.encryption_at_rest
            ? true
            : undefined,
        );
      }
    }
    const keys = () =>
      cl.controller.deps.db
        .query<{ n: number }>(
          "SELECT count(*)::int AS n FROM instance_keys k JOIN instances i ON i.id = k.instance_id WHERE i.database_id = ANY($1)",
          [ids],
        )
        .then((r) => r.rows[0]!.n);
    assert.equal(await keys(), all.length, "one key per node");
    for (const name of dbs.keys()) {
      const res = await cl.api("DELETE", `/v1/apps/${dbs.get(name)!.id}?current_name=${name}`);
      assert.equal(res.status, 204, JSON.stringify(res.json));
    }
    await cl.waitFor(
      "every instance to be gone",
      async () => {
        const { rows } = await cl.controller.deps.db.query(
          "SELECT count(*)::int AS n FROM instances WHERE database_id = ANY($1)",
          [[...dbs.values()].map((d) => d.id)],
        );
        return rows[0].n === 0 ? true : undefined;
      },
      120_000,
    );
    const namespaces = await listNodeNetns();
    for (const n of all)
      assert.ok(!namespaces.includes(nodeNetNames(n.id).ns), `${n.id}'s namespace is gone`);
    const { rows: left } = await cl.controller.deps.db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM instance_keys WHERE instance_id = ANY($1)",
      [all.map((n) => n.id)],
    );
    assert.equal(left[0]!.n, 0, "the nodes' keys went with them");
  });
});
