// Network exposure and isolation, end to end on this machine: real agents, PostgreSQL,
// HAProxy, namespaces and nftables. Clients are namespaces made here: apps on the region's
// private network (and on another region's), on the public side (the Internet), in a region's
// app egress range, and inside another tenant's network. Shared: reachable from the region's
// private network; Force TLS refuses plaintext at the gateway and at the node;
// publicly-available publishes on the host's public address and takes it back. Dedicated: deny by default, rules
// applied within seconds at the edge and at the gateway (each layer alone holds), tenants
// shut out of each other, a stable public endpoint; nothing left behind.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { Gateway } from "../../src/engines/postgresql/gateway.ts";
import { applyEdge } from "../../src/runtime/nft.ts";
import { ensurePublicBridge, listVpcs, publicBridgeName, UPLINK, vpcNames } from "../../src/runtime/vpc.ts";
import { probeIsolation } from "../../src/runtime/probe.ts";
import { shortRunDir } from "../../src/main/agent-main.ts";
import { ip, netnsExists, nodeNetNames } from "../../src/runtime/netns.ts";
import { connectVerified, startCluster, type Cluster } from "../support/cluster.ts";
import { hostLinks, NetLab, type TcpOutcome } from "../support/net-lab.ts";
import { addressAt, cidrOf } from "../../src/domain/ipv4.ts";
import { appRange, hostPrivateAddress, regionPrivateBlock } from "../../src/domain/private-network.ts";
import {
  ensurePrivateAddress,
  privateBridgeName,
  removePrivateAddress,
} from "../../src/runtime/private-net.ts";

const probe = await probeIsolation();
const SUBNET = 76;
const PUBLIC = `198.19.${SUBNET}.0/24`;
/** The cluster fixture's private networks: each region gets half. */
const PRIVATE = `172.30.${SUBNET}.0/24`;
/** The first region's app egress (the last quarter of the public network, split in two). */
const APP_ADDRESS = `198.19.${SUBNET}.200`;
const FRIEND = `198.19.${SUBNET}.150`;
const STRANGER = `198.19.${SUBNET}.160`;
/**
 * A rule change takes effect within this here. The target (5 s) is measured by
 * bench/firewall.ts; on a CI machine whose 2 cores run other suites too, a pass took 5.1 s
 * once, so the test allows twice the target and prints what it took.
 */
const EFFECT_MS = 10_000;
const hostNftTables = () =>
  promisify(execFile)("nft", ["list", "tables"]).then(
    ({ stdout }) => stdout,
    () => "",
  );
const connected = (o: TcpOutcome) => ["data", "open", "closed"].includes(o);

describe("network exposure and isolation", { skip: probe.netns.ok ? false : probe.netns.detail }, () => {
  let cl: Cluster;
  const lab = new NetLab(PUBLIC);
  const clients = { friend: "", stranger: "", app: "", privateApp: "", otherRegionApp: "" };
  /** The region osc-fr1's private block (its host's address there), and another region's. */
  let privateBlock = "";
  let otherBlock = "";
  let caFile = "";

  const api = (method: string, p: string, body?: unknown) => cl.api(method, p, body);
  const featureStatus = async (id: string, name: string) =>
    (
      (await api("GET", `/api/databases/${id}`)).json.database.features as Array<{
        name: string;
        status: string;
      }>
    ).find((f) => f.name === name)?.status;
  const waitFeature = (id: string, name: string, status: string | undefined) =>
    cl.waitFor(`${name} to be ${status ?? "gone"}`, async () =>
      (await featureStatus(id, name)) === status ? true : undefined,
    );
  const withParams = (url: string, params: string) => `${url.split("?")[0]}?${params}`;
  const tls = (url: string) =>
    withParams(url, `sslmode=verify-full&sslrootcert=${caFile}&gssencmode=disable`);
  const plain = (url: string) => withParams(url, "sslmode=disable&gssencmode=disable");
  /** Polls until a query from `ns` gives `want` (ok or not); returns how long it took. */
  const until = async (ns: string, uri: string, want: boolean): Promise<number> => {
    const started = performance.now();
    await cl.waitFor(
      `a query from ${ns} to ${want ? "succeed" : "fail"}`,
      async () => ((await lab.psql(ns, uri, "SELECT 1")).ok === want ? true : undefined),
      EFFECT_MS,
    );
    return performance.now() - started;
  };
  const plainQuery = async (host: string, port: number, user: string, password: string, database: string) => {
    const client = new pg.Client({
      host,
      port,
      user,
      password,
      database,
      ssl: false,
      connectionTimeoutMillis: 4000,
    });
    try {
      await client.connect();
      await client.query("SELECT 1");
      return "ok";
    } catch (err) {
      return (err as Error).message;
    } finally {
      await client.end().catch(() => undefined);
    }
  };

  before(async () => {
    cl = await startCluster({
      subnet: SUBNET,
      hosts: [
        { name: "e2e-net-s1", pool: "shared", az: "osc-fr1-a" },
        { name: "e2e-net-d1", pool: "dedicated", az: "osc-fr1-a" },
        { name: "e2e-net-d2", pool: "dedicated", az: "osc-fr1-b" },
      ],
    });
    caFile = path.join(cl.dataDir, "region-ca.crt");
    await fs.writeFile(caFile, await cl.regionCa());
    // The public side exists once an agent needs it; the clients may come first.
    await ensurePublicBridge(PUBLIC);
    clients.friend = await lab.client("friend", FRIEND);
    clients.stranger = await lab.client("stranger", STRANGER);
    clients.app = await lab.client("app", APP_ADDRESS);
  });

  after(async () => {
    await lab.close();
    if (otherBlock) await removePrivateAddress(otherBlock, hostPrivateAddress(otherBlock, "127.0.0.1")!);
    await cl?.close();
    // Normally gone with the last agent; a failed test must not leave it to the next run.
    if ((await hostLinks(publicBridgeName(PUBLIC))).length)
      await ip(["link", "delete", publicBridgeName(PUBLIC)]);
  });

  describe("a Shared database", () => {
    let id = "";
    let url = "";
    let publicAddress = "";
    let gatewayPort = 0;
    let privateNet = { block: "", address: "" };
    const creds = () => {
      const u = new URL(url);
      return [decodeURIComponent(u.username), decodeURIComponent(u.password), u.pathname.slice(1)] as const;
    };

    before(async () => {
      assert.equal((await api("POST", "/v1/apps", { app: { name: "net-shop" } })).status, 201);
      const res = await api("POST", "/v1/apps/net-shop/addons", {
        addon: { addon_provider_id: "postgresql", plan_id: "postgresql-starter-512" },
      });
      assert.equal(res.status, 201, JSON.stringify(res.json));
      id = res.json.addon.id;
      url = await cl.waitFor("the add-on's URL", async () => {
        const vars = (await api("GET", "/v1/apps/net-shop/variables")).json.variables as any[];
        return vars.find((v) => v.name === "DATABASE_URL")?.value as string | undefined;
      });
      gatewayPort = Number(new URL(url).port);
      const { rows } = await cl.controller.deps.db.query(
        `SELECT host(p.address) AS address FROM public_addresses p JOIN hosts h ON h.id = p.host_id
         WHERE h.name = 'e2e-net-s1'`,
      );
      publicAddress = rows[0].address;
      // The gateway's spec names the host's address on the region's private network.
      const gw = await cl.controller.deps.db.query(
        "SELECT spec->'network'->'privateNetwork' AS p FROM instances WHERE database_id = $1 AND kind = 'gateway'",
        [id],
      );
      privateNet = gw.rows[0].p;
      privateBlock = privateNet.block;
      const regions = cl.controller.deps.config.regions.map((r) => r.name);
      assert.deepEqual(privateNet, {
        block: regionPrivateBlock(PRIVATE, regions, "osc-fr1"),
        address: `172.30.${SUBNET}.1`,
      });
      const apps = cidrOf(appRange(privateNet.block));
      const on = { bridge: privateBridgeName(privateNet.block), prefix: cidrOf(privateNet.block).prefix };
      clients.privateApp = await lab.client("private-app", addressAt(apps, 10), on);
      // Another region's private network, with an app of its own.
      otherBlock = regionPrivateBlock(PRIVATE, regions, "osc-secnum-fr1")!;
      const otherHost = hostPrivateAddress(otherBlock, "127.0.0.1")!;
      await ensurePrivateAddress(otherBlock, otherHost);
      clients.otherRegionApp = await lab.client(
        "other-region-app",
        addressAt(cidrOf(appRange(otherBlock)), 10),
        {
          bridge: privateBridgeName(otherBlock),
          prefix: cidrOf(otherBlock).prefix,
        },
      );
    });

    it("takes plaintext by default, from the region's private network only", async () => {
      const u = new URL(url);
      assert.equal(await plainQuery(u.hostname, gatewayPort, ...creds()), "ok", "from the host");
      const privateUrl = url.replace(u.host, `${privateNet.address}:${gatewayPort}`);
      const fromApp = await lab.psql(clients.privateApp, plain(privateUrl), "SELECT 1");
      assert.equal(fromApp.ok, true, `an app of the region: ${fromApp.out}`);
      const fromOtherRegion = await lab.tcp(clients.otherRegionApp, privateNet.address, gatewayPort);
      assert.equal(connected(fromOtherRegion.outcome), false, `another region: ${fromOtherRegion.outcome}`);
      const fromInternet = await lab.tcp(clients.friend, publicAddress, gatewayPort);
      assert.equal(connected(fromInternet.outcome), false, fromInternet.outcome);
      const privateFromInternet = await lab.tcp(clients.friend, privateNet.address, gatewayPort);
      assert.equal(connected(privateFromInternet.outcome), false, privateFromInternet.outcome);
    });

    it("refuses publicly-available without force-ssl, with a clear 422", async () => {
      const res = await api("POST", `/api/databases/${id}/features`, {
        feature: { name: "publicly-available" },
      });
      assert.equal(res.status, 422);
      assert.match(res.json.errors.name[0], /requires force-ssl/);
    });

    it("force-ssl: every plaintext connection fails, at the gateway and at the node", async () => {
      const res = await api("POST", `/api/databases/${id}/features`, { feature: { name: "force-ssl" } });
      assert.deepEqual(res.json, {
        name: "force-ssl",
        status: "PENDING_TO_ACTIVATE",
        message: "force-ssl is being activated",
      });
      await waitFeature(id, "force-ssl", "ACTIVATED");
      const u = new URL(url);
      assert.notEqual(await plainQuery(u.hostname, gatewayPort, ...creds()), "ok", "through the gateway");
      const { rows } = await cl.controller.deps.db.query(
        "SELECT port FROM instances WHERE database_id = $1 AND kind = 'node'",
        [id],
      );
      const atNode = await plainQuery(u.hostname, rows[0].port, ...creds());
      assert.match(atNode, /no encryption|pg_hba/, "straight to the node");
      const client = await connectVerified(url, await cl.regionCa());
      await client.end();
      // An app of the region: plaintext refused, verified TLS (the certificate names the address) works.
      const privateUrl = url.replace(u.host, `${privateNet.address}:${gatewayPort}`);
      assert.equal((await lab.psql(clients.privateApp, plain(privateUrl), "SELECT 1")).ok, false);
      const verified = await lab.psql(clients.privateApp, tls(privateUrl), "SELECT 1");
      assert.equal(verified.ok, true, verified.out);
    });

    it("publicly-available: reachable from the Internet over TLS only, and no more once removed", async () => {
      const res = await api("POST", `/api/databases/${id}/features`, {
        feature: { name: "publicly-available" },
      });
      assert.equal(res.json.status, "PENDING_TO_ACTIVATE");
      await waitFeature(id, "publicly-available", "ACTIVATED");
      const publicUrl = url.replace(new URL(url).host, `${publicAddress}:${gatewayPort}`);
      const tlsResult = await lab.psql(clients.stranger, tls(publicUrl), "SELECT 1");
      assert.equal(tlsResult.ok, true, tlsResult.out);
      const plainResult = await lab.psql(clients.stranger, plain(publicUrl), "SELECT 1");
      assert.equal(plainResult.ok, false, "plaintext from the Internet");

      const removeSsl = await api("DELETE", `/api/databases/${id}/features?feature=force-ssl`);
      assert.equal(removeSsl.status, 422);
      assert.match(removeSsl.json.errors.feature[0], /remove publicly-available first/);

      const off = await api("DELETE", `/api/databases/${id}/features?feature=publicly-available`);
      assert.deepEqual(off.json, { message: "publicly-available is being removed" });
      await waitFeature(id, "publicly-available", undefined);
      assert.equal((await lab.tcp(clients.stranger, publicAddress, gatewayPort)).outcome, "refused");
    });
  });

  describe("Dedicated databases", () => {
    const dbs = { a: { id: "", url: "" }, b: { id: "", url: "" } };
    let endpoint = { hostname: "", port: 0 };
    let ruleId = "";

    const create = async (name: string) => {
      const res = await api("POST", "/v1/databases", {
        database: { name, technology: "postgresql-ng", plan: "postgresql-dr-starter-4096" },
      });
      assert.equal(res.status, 201, JSON.stringify(res.json));
      return res.json.database.id as string;
    };
    const urlOf = (name: string) =>
      cl.waitFor(`${name} to run and publish its URL`, async () => {
        const vars = (await api("GET", `/v1/apps/${name}/variables`)).json.variables as any[];
        return vars.find((v) => v.name === "DATABASE_URL")?.value as string | undefined;
      });

    before(async () => {
      dbs.a.id = await create("net-tenant-a");
      dbs.b.id = await create("net-tenant-b");
      dbs.a.url = await urlOf("net-tenant-a");
      dbs.b.url = await urlOf("net-tenant-b");
    });

    it("has a public-rw endpoint of its own, which its URL uses", async () => {
      const res = await api("GET", `/v1/databases/${dbs.a.id}/endpoints`);
      assert.equal(res.status, 200, JSON.stringify(res.json));
      const [ep] = res.json.endpoints;
      assert.equal(ep.type, "public-rw");
      assert.equal(ep.database_id, dbs.a.id);
      assert.match(ep.hostname, new RegExp(`^198\\.19\\.${SUBNET}\\.\\d+$`));
      endpoint = { hostname: ep.hostname, port: ep.port };
      assert.equal(new URL(dbs.a.url).host, `${ep.hostname}:${ep.port}`);
      assert.match(dbs.a.url, /sslmode=require$/);
      const other = (await api("GET", `/v1/databases/${dbs.b.id}/endpoints`)).json.endpoints[0];
      assert.notEqual(other.hostname, ep.hostname);
      const shown = (await api("GET", `/api/databases/${dbs.a.id}`)).json.database;
      assert.equal(shown.hostname, `${ep.hostname}:${ep.port}`);
      assert.deepEqual(shown.features, [{ name: "force-ssl", status: "ACTIVATED" }]);
    });

    it("denies every client by default, on the Internet and in the region", async () => {
      for (const ns of [clients.friend, clients.stranger, clients.app]) {
        const r = await lab.psql(ns, tls(dbs.a.url), "SELECT 1");
        assert.equal(r.ok, false, `from ${ns}`);
      }
      assert.equal((await lab.tcp(clients.friend, endpoint.hostname, endpoint.port)).outcome, "refused");
    });

    it("lets a custom range in within seconds, over TLS only, and nobody else", async (t) => {
      const res = await api("POST", `/api/databases/${dbs.a.id}/firewall_rules`, {
        type: "custom_range",
        cidr: `${FRIEND}/32`,
        label: "office",
      });
      assert.equal(res.status, 201, JSON.stringify(res.json));
      ruleId = res.json.rule.id;
      assert.deepEqual(
        { type: res.json.rule.type, cidr: res.json.rule.cidr, label: res.json.rule.label },
        { type: "custom_range", cidr: `${FRIEND}/32`, label: "office" },
      );
      const ms = await until(clients.friend, tls(dbs.a.url), true);
      t.diagnostic(`applied in ${Math.round(ms)} ms`);
      assert.ok(ms < EFFECT_MS, `applied in ${ms} ms`);
      assert.equal((await lab.psql(clients.friend, plain(dbs.a.url), "SELECT 1")).ok, false, "plaintext");
      assert.equal((await lab.psql(clients.stranger, tls(dbs.a.url), "SELECT 1")).ok, false);
      assert.equal((await lab.psql(clients.app, tls(dbs.a.url), "SELECT 1")).ok, false);
    });

    it("lets the region's apps in with the managed range", async () => {
      const ranges = (await api("GET", "/api/firewall/managed_ranges")).json.ranges as any[];
      const mine = ranges.find((r) => r.id === "mr-osc-fr1-egress");
      assert.ok(mine, JSON.stringify(ranges));
      const res = await api("POST", `/api/databases/${dbs.a.id}/firewall_rules`, {
        type: "managed_range",
        range_id: mine.id,
      });
      assert.equal(res.status, 201, JSON.stringify(res.json));
      await until(clients.app, tls(dbs.a.url), true);
    });

    it("keeps tenants apart: nothing of B is reachable from inside A's network or from A's clients", async () => {
      const aNet = vpcNames(dbs.a.id).ns;
      assert.equal(
        (await lab.psql(aNet, tls(dbs.b.url), "SELECT 1")).ok,
        false,
        "A's network to B's endpoint",
      );
      assert.equal((await lab.psql(clients.friend, tls(dbs.b.url), "SELECT 1")).ok, false, "A's friend to B");
      const { rows } = await cl.controller.deps.db.query(
        "SELECT spec->'network'->'vpc'->>'address' AS address, port FROM instances WHERE database_id = $1 AND kind = 'node'",
        [dbs.b.id],
      );
      const probeB = await lab.tcp(aNet, rows[0].address, rows[0].port, { connectMs: 1000 });
      assert.notEqual(probeB.outcome, "data");
      assert.notEqual(probeB.outcome, "open", "B's node is not reachable from A's network");
    });

    it("holds with one layer down: the gateway alone, then the edge alone, deny the stranger", async () => {
      const ns = vpcNames(dbs.a.id).ns;
      const { rows } = await cl.controller.deps.db.query(
        `SELECT i.id, i.port, i.spec, h.name FROM instances i JOIN hosts h ON h.id = i.host_id
         WHERE i.database_id = $1 AND i.kind = 'gateway'`,
        [dbs.a.id],
      );
      const gw = rows[0];
      const spec = gw.spec;
      const edge = spec.network.vpc.edge;
      // Edge opened to the stranger: the gateway still closes its connection.
      await applyEdge(ns, { uplink: UPLINK, ...edge, allow: [...edge.allow, `${STRANGER}/32`] });
      assert.equal((await lab.tcp(clients.stranger, endpoint.hostname, endpoint.port)).outcome, "closed");
      await applyEdge(ns, { uplink: UPLINK, ...edge });
      // Gateway opened to everyone: the edge still refuses the stranger.
      // The agent's own gateway, as its driver lays it out.
      const stateDir = path.join(cl.dataDir, "hosts", gw.name);
      const gateway = new Gateway({
        id: gw.id,
        baseDir: path.join(stateDir, "instances", gw.id, "gateway"),
        runDir: path.join(shortRunDir(stateDir), gw.id.replace(/^inst-/, "")),
      });
      await gateway.ensure({ ...spec, netns: ns, acl: { tlsOnly: true } });
      assert.equal((await lab.tcp(clients.stranger, endpoint.hostname, endpoint.port)).outcome, "refused");
      await gateway.ensure({ ...spec, netns: ns });
      assert.equal((await lab.psql(clients.friend, tls(dbs.a.url), "SELECT 1")).ok, true);
    });

    it("shuts a removed range out within seconds", async (t) => {
      const res = await api("DELETE", `/api/databases/${dbs.a.id}/firewall_rules/${ruleId}`);
      assert.equal(res.status, 204);
      const ms = await until(clients.friend, tls(dbs.a.url), false);
      t.diagnostic(`applied in ${Math.round(ms)} ms`);
      assert.ok(ms < EFFECT_MS, `applied in ${ms} ms`);
      assert.equal(
        (await lab.psql(clients.app, tls(dbs.a.url), "SELECT 1")).ok,
        true,
        "the managed range stays",
      );
      const rules = (await api("GET", `/api/databases/${dbs.a.id}/firewall_rules`)).json.rules as any[];
      assert.deepEqual(
        rules.map((r) => r.type),
        ["managed_range"],
      );
    });

    it("leaves no network, bridge or veth behind once deleted and the agents stop", async () => {
      const { rows: nodes } = await cl.controller.deps.db.query(
        "SELECT id FROM instances WHERE database_id = ANY($1) AND kind = 'node'",
        [[dbs.a.id, dbs.b.id]],
      );
      assert.equal(nodes.length, 2);
      for (const [name, db] of [
        ["net-tenant-a", dbs.a],
        ["net-tenant-b", dbs.b],
      ] as const) {
        assert.equal((await api("DELETE", `/v1/apps/${db.id}?current_name=${name}`)).status, 204);
      }
      for (const db of [dbs.a, dbs.b]) {
        await cl.waitFor("the database to be deleted", async () => {
          const { rows } = await cl.controller.deps.db.query("SELECT phase FROM databases WHERE id = $1", [
            db.id,
          ]);
          return rows[0].phase === "deleted" ? true : undefined;
        });
      }
      const left = await listVpcs();
      for (const db of [dbs.a, dbs.b]) assert.equal(left.includes(vpcNames(db.id).ns), false);
      for (const db of [dbs.a, dbs.b]) assert.deepEqual(await hostLinks(vpcNames(db.id).hostIf), []);
      for (const node of nodes) {
        const names = nodeNetNames(node.id);
        assert.equal(await netnsExists(names.ns), false, `${names.ns} is gone`);
        assert.deepEqual(await hostLinks(names.hostIf), []);
      }
      // Every filter lived in a namespace of Cellar's own: the host's ruleset never had one.
      assert.doesNotMatch(await hostNftTables(), /cellar_edge/);
      await lab.close();
      await cl.fleet.stop();
      assert.deepEqual(await hostLinks(publicBridgeName(PUBLIC)), [], "the public bridge is gone");
      assert.deepEqual(await hostLinks(privateBridgeName(privateBlock)), [], "the private bridge is gone");
    });
  });
});
