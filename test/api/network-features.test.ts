// Features and endpoints through the API on a real store (no agents): toggles are spec
// changes (a new generation, an event), statuses follow what instances report about that
// generation, the model's rules give clear 422s, and only people who may manage the
// database reach any of it.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { insertHost } from "../../src/store/hosts.store.ts";
import { startHarness, type Harness, type Session } from "../support/api.ts";
import { addCollaborator, makeApp } from "../support/scopes.ts";

let serial = 0;

/** A host as an agent would register it; `networks`: its isolation report says namespaces work. */
async function host(h: Harness, networks: boolean): Promise<{ id: string; address: string }> {
  serial += 1;
  const address = `127.99.0.${serial}`;
  const summary = [networks ? "network namespaces: yes (test)" : "network namespaces: NO (not root)"];
  const created = await insertHost(
    h.deps.db,
    {
      name: `net-host-${serial}`,
      region: "osc-fr1",
      az: "osc-fr1-a",
      pool: "dedicated",
      address,
      capacityVcpu: 2,
      capacityRamMb: 4096,
      capacityDiskGb: 50,
      isolation: { summary },
    },
    `tk-host-net-${serial}`,
  );
  return { id: created.id, address };
}

/** An instance row as the reconciler places it (spec contents do not matter here). */
async function instance(
  h: Harness,
  databaseId: string,
  hostId: string,
  kind: "node" | "gateway",
  port: number,
): Promise<string> {
  const id = `inst-${(serial++).toString(16).padStart(20, "0")}`;
  await h.deps.db.query(
    `INSERT INTO instances (id, database_id, host_id, kind, ordinal, port, spec, spec_generation)
     VALUES ($1, $2, $3, $4, 0, $5, '{}', 1)`,
    [id, databaseId, hostId, kind, port],
  );
  return id;
}

/** What an agent's report does: status and observed generation of every instance. */
async function report(h: Harness, databaseId: string, status: string, observed: "current" | number) {
  await h.deps.db.query(
    `UPDATE instances SET status = $2, spec_generation = (SELECT generation FROM databases WHERE id = $1),
            observed_generation = CASE WHEN $3::int IS NULL THEN (SELECT generation FROM databases WHERE id = $1)
                                       ELSE $3::int END
     WHERE database_id = $1`,
    [databaseId, status, observed === "current" ? null : observed],
  );
}

describe("features: POST/DELETE /api/databases/:id/features", () => {
  let h: Harness;
  let alice: Session;
  let lim: Session;
  let mallory: Session;
  let shop = { id: "", name: "" };
  let starter = "";
  let other = "";
  let dedicated = "";

  const generationOf = async (id: string) =>
    (await h.deps.db.query<{ generation: number }>("SELECT generation FROM databases WHERE id = $1", [id]))
      .rows[0]!.generation;
  const features = async (id: string, s: Session = alice) =>
    (await h.call("GET", `/api/databases/${id}`, { bearer: s.bearer })).json.database.features;
  const post = (id: string, name: unknown, s: Session = alice) =>
    h.call("POST", `/api/databases/${id}/features`, { bearer: s.bearer, body: { feature: { name } } });
  const del = (id: string, name: string, s: Session = alice) =>
    h.call("DELETE", `/api/databases/${id}/features?feature=${name}`, { bearer: s.bearer });

  before(async () => {
    h = await startHarness({ CELLAR_RATE_LIMIT_PER_MINUTE: "10000" });
    alice = await h.user("alice");
    lim = await h.user("lim");
    mallory = await h.user("mallory");
    shop = await makeApp(h, alice, "feature-shop");
    await addCollaborator(h, alice, shop.name, lim, true);
    const provision = async () => {
      const res = await h.call("POST", `/v1/apps/${shop.name}/addons`, {
        bearer: alice.bearer,
        body: { addon: { addon_provider_id: "postgresql", plan_id: "postgresql-starter-512" } },
      });
      assert.equal(res.status, 201);
      return res.json.addon.id as string;
    };
    starter = await provision();
    other = await provision();
    const dr = await h.call("POST", "/v1/databases", {
      bearer: alice.bearer,
      body: {
        database: { name: "feature-dr", technology: "postgresql-ng", plan: "postgresql-dr-starter-4096" },
      },
    });
    assert.equal(dr.status, 201);
    dedicated = dr.json.database.id;
  });
  after(async () => h.close());

  it("turns force-ssl on as a spec change: new generation, event, pending until observed", async () => {
    const before = await generationOf(starter);
    const res = await post(starter, "force-ssl");
    assert.equal(res.status, 200, JSON.stringify(res.json));
    assert.deepEqual(res.json, {
      name: "force-ssl",
      status: "PENDING_TO_ACTIVATE",
      message: "force-ssl is being activated",
    });
    assert.equal(await generationOf(starter), before + 1);
    assert.deepEqual(await features(starter), [{ name: "force-ssl", status: "PENDING_TO_ACTIVATE" }]);
    const { rows } = await h.deps.db.query(
      "SELECT type, type_data FROM events WHERE database_id = $1 AND type = 'database/add_feature'",
      [starter],
    );
    assert.equal(rows.length, 1);
    assert.equal(rows[0].type_data.feature, "force-ssl");
    const again = await post(starter, "force-ssl");
    assert.equal(again.json.status, "PENDING_TO_ACTIVATE");
    assert.equal(await generationOf(starter), before + 1, "asking twice changes nothing");
  });

  it("is ACTIVATED once every instance runs that generation, FAILED while one fails on it", async () => {
    const hst = await host(h, true);
    await instance(h, starter, hst.id, "node", 20001);
    await instance(h, starter, hst.id, "gateway", 20002);
    await report(h, starter, "running", 1);
    assert.equal((await features(starter))[0].status, "PENDING_TO_ACTIVATE");
    await report(h, starter, "failed", 1);
    assert.equal((await features(starter))[0].status, "FAILED");
    await report(h, starter, "running", "current");
    assert.deepEqual(await features(starter), [{ name: "force-ssl", status: "ACTIVATED" }]);
  });

  it("refuses publicly-available without force-ssl, and removing force-ssl under it", async () => {
    const res = await post(other, "publicly-available");
    assert.equal(res.status, 422);
    assert.deepEqual(res.json, {
      errors: { name: ["publicly-available requires force-ssl: activate force-ssl first"] },
    });
    assert.deepEqual(await features(other), []);

    assert.equal((await post(starter, "publicly-available")).json.status, "PENDING_TO_ACTIVATE");
    const removeSsl = await del(starter, "force-ssl");
    assert.equal(removeSsl.status, 422);
    assert.match(removeSsl.json.errors.feature[0], /remove publicly-available first/);
  });

  it("removes a feature: PENDING_TO_REMOVE, then gone once observed", async () => {
    await report(h, starter, "running", "current");
    const res = await del(starter, "publicly-available");
    assert.deepEqual([res.status, res.json], [200, { message: "publicly-available is being removed" }]);
    const pending = await features(starter);
    assert.deepEqual(pending, [
      { name: "force-ssl", status: "ACTIVATED" },
      { name: "publicly-available", status: "PENDING_TO_REMOVE" },
    ]);
    await report(h, starter, "running", "current");
    assert.deepEqual(await features(starter), [{ name: "force-ssl", status: "ACTIVATED" }]);
    const again = await del(starter, "publicly-available");
    assert.deepEqual(again.json, { message: "publicly-available is not activated: nothing to remove" });
  });

  it("answers clearly about unknown features and bad bodies", async () => {
    const unknown = await post(starter, "redis-aof");
    assert.equal(unknown.status, 422);
    assert.match(unknown.json.errors.name[0], /not a feature of this database/);
    assert.equal((await post(starter, undefined)).status, 422);
    assert.equal((await del(starter, "nope")).status, 422);
    const raw = await h.call("POST", `/api/databases/${starter}/features`, {
      bearer: alice.bearer,
      raw: "{",
    });
    assert.equal(raw.status, 400);
  });

  it("keeps Dedicated databases on TLS, and points them to firewall rules", async () => {
    assert.deepEqual(await features(dedicated), [{ name: "force-ssl", status: "ACTIVATED" }]);
    const on = await post(dedicated, "force-ssl");
    assert.deepEqual(on.json, {
      name: "force-ssl",
      status: "ACTIVATED",
      message: "force-ssl is always activated on Dedicated databases",
    });
    assert.equal((await del(dedicated, "force-ssl")).status, 422);
    const pub = await post(dedicated, "publicly-available");
    assert.equal(pub.status, 422);
    assert.match(pub.json.errors.name[0], /firewall_rules/);
  });

  it("is for those who may manage the database only", async () => {
    assert.equal((await post(starter, "force-ssl", lim)).status, 403);
    assert.equal((await del(starter, "force-ssl", lim)).status, 403);
    assert.equal((await post(starter, "force-ssl", mallory)).status, 404);
    // An add-on token names one database.
    const token = (
      await h.call("POST", `/v1/apps/${shop.name}/addons/${other}/token`, { bearer: alice.bearer })
    ).json.addon.token as string;
    assert.equal((await h.call("GET", `/api/databases/${other}`, { bearer: token })).status, 200);
    const foreign = await h.call("POST", `/api/databases/${starter}/features`, {
      bearer: token,
      body: { feature: { name: "force-ssl" } },
    });
    assert.equal(foreign.status, 404);
  });
});

describe("endpoints: GET /v1/databases/:id/endpoints", () => {
  let h: Harness;
  let alice: Session;
  let mallory: Session;

  const create = async (name: string) => {
    const res = await h.call("POST", "/v1/databases", {
      bearer: alice.bearer,
      body: { database: { name, technology: "postgresql-ng", plan: "postgresql-dr-starter-4096" } },
    });
    assert.equal(res.status, 201);
    return res.json.database.id as string;
  };
  const endpoints = async (id: string, s: Session = alice) =>
    h.call("GET", `/v1/databases/${id}/endpoints`, { bearer: s.bearer });

  before(async () => {
    h = await startHarness({ CELLAR_PUBLIC_NETWORK: "198.19.99.0/24" });
    alice = await h.user("alice");
    mallory = await h.user("mallory");
  });
  after(async () => h.close());

  it("has none before the database is placed, then a public-rw address of its own that stays", async () => {
    const id = await create("endpoint-one");
    assert.deepEqual((await endpoints(id)).json, { endpoints: [] });
    const hst = await host(h, true);
    await instance(h, id, hst.id, "node", 20001);
    await instance(h, id, hst.id, "gateway", 20002);
    const res = await endpoints(id);
    assert.equal(res.status, 200);
    const [ep] = res.json.endpoints;
    assert.equal(ep.type, "public-rw");
    assert.equal(ep.database_id, id);
    assert.equal(ep.port, 5432);
    assert.match(ep.hostname, /^198\.19\.99\.(\d+)$/);
    assert.ok(Number(ep.hostname.split(".")[3]) >= 2 && Number(ep.hostname.split(".")[3]) < 192);
    assert.deepEqual((await endpoints(id)).json.endpoints, [ep], "the same on every call");
    const byName = await endpoints("endpoint-one");
    assert.deepEqual(byName.json.endpoints, [ep]);
    const shown = await h.call("GET", `/api/databases/${id}`, { bearer: alice.bearer });
    assert.equal(shown.json.database.hostname, `${ep.hostname}:5432`);
  });

  it("gives each database its own address", async () => {
    const a = await create("endpoint-two");
    const b = await create("endpoint-three");
    for (const id of [a, b]) {
      const hst = await host(h, true);
      await instance(h, id, hst.id, "gateway", 20002);
    }
    const [ea] = (await endpoints(a)).json.endpoints;
    const [eb] = (await endpoints(b)).json.endpoints;
    assert.notEqual(ea.hostname, eb.hostname);
  });

  it("is the gateway's host address where hosts cannot make networks (and says nothing more)", async () => {
    const id = await create("endpoint-plain");
    const hst = await host(h, false);
    await instance(h, id, hst.id, "gateway", 20007);
    const [ep] = (await endpoints(id)).json.endpoints;
    assert.deepEqual([ep.hostname, ep.port], [hst.address, 20007]);
  });

  it("refuses an ip_range over Cellar's own ranges at creation, and keeps a free one", async () => {
    const bad = await h.call("POST", "/v1/databases", {
      bearer: alice.bearer,
      body: {
        name: "range-clash",
        addon_provider_id: "postgresql-ng",
        plan_id: "postgresql-dr-starter-4096",
        ip_range: "10.213.0.0/24",
      },
    });
    assert.equal(bad.status, 422);
    assert.match(bad.json.errors.ip_range[0], /overlaps 10\.213\.0\.0\/16/);
    const ok = await h.call("POST", "/v1/databases", {
      bearer: alice.bearer,
      body: {
        name: "range-own",
        addon_provider_id: "postgresql-ng",
        plan_id: "postgresql-dr-starter-4096",
        ip_range: "10.50.0.0/24",
      },
    });
    assert.equal(ok.status, 201, JSON.stringify(ok.json));
    const hst = await host(h, true);
    await instance(h, ok.json.database.id, hst.id, "gateway", 20002);
    assert.equal((await endpoints(ok.json.database.id)).json.endpoints.length, 1);
    const { rows } = await h.deps.db.query(
      "SELECT ip_range::text FROM database_networks WHERE database_id = $1",
      [ok.json.database.id],
    );
    assert.deepEqual(rows, [{ ip_range: "10.50.0.0/24" }]);
  });

  it("answers 404 to others, like a database that does not exist", async () => {
    const id = await create("endpoint-private");
    const res = await endpoints(id, mallory);
    assert.equal(res.status, 404);
    assert.deepEqual(
      res.json,
      await endpoints("ad-00000000-0000-0000-0000-000000000000").then((r) => r.json),
    );
  });
});
