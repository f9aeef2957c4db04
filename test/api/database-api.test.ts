import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { signJwt } from "../../src/api/jwt.ts";
import { startHarness, type Harness, type Session } from "../support/api.ts";
import { addCollaborator, makeApp, rowCounts } from "../support/scopes.ts";

describe("database API: GET /api/databases/:id", () => {
  let h: Harness;
  let alice: Session;
  let bob: Session;
  let lim: Session;
  let mallory: Session;
  let shop: { id: string; name: string };
  let starterId: string;
  let businessId: string;
  let dedicatedId: string;

  const addonToken = async (s: Session, app: string, id: string): Promise<string> => {
    const res = await h.call("POST", `/v1/apps/${app}/addons/${id}/token`, { bearer: s.bearer });
    assert.equal(res.status, 200, JSON.stringify(res.json));
    return res.json.addon.token as string;
  };

  before(async () => {
    h = await startHarness({ CELLAR_RATE_LIMIT_PER_MINUTE: "10000" });
    alice = await h.user("alice");
    bob = await h.user("bob");
    lim = await h.user("lim");
    mallory = await h.user("mallory");
    shop = await makeApp(h, alice, "shop-prod");
    await addCollaborator(h, alice, shop.name, bob);
    await addCollaborator(h, alice, shop.name, lim, true);
    const provision = async (plan: string) => {
      const res = await h.call("POST", `/v1/apps/${shop.name}/addons`, {
        bearer: alice.bearer,
        body: { addon: { addon_provider_id: "postgresql", plan_id: plan } },
      });
      assert.equal(res.status, 201);
      return res.json.addon.id as string;
    };
    starterId = await provision("postgresql-starter-512");
    businessId = await provision("postgresql-business-1024");
    const dr = await h.call("POST", "/v1/databases", {
      bearer: alice.bearer,
      body: {
        database: { name: "orders-db", technology: "postgresql-ng", plan: "postgresql-dr-business-4096" },
      },
    });
    assert.equal(dr.status, 201);
    dedicatedId = dr.json.database.id as string;
  });
  after(async () => h.close());

  it("describes a database that does not run yet truthfully: creating, no host, no instance", async () => {
    const token = await addonToken(alice, shop.name, starterId);
    const res = await h.call("GET", `/api/databases/${starterId}`, { bearer: token });
    assert.equal(res.status, 200, JSON.stringify(res.json));
    const db = res.json.database;
    const op = await h.deps.db.query<{ id: string }>("SELECT id FROM operations WHERE database_id = $1", [
      starterId,
    ]);
    assert.equal(db.id, starterId);
    assert.match(db.resource_id, /^shop_prod_\d{4}$/);
    assert.equal(db.app_name, "shop-prod");
    assert.equal(db.status, "creating");
    assert.equal(db.type_name, "postgresql");
    assert.equal(db.plan, "postgresql-starter-512");
    assert.equal(db.hostname, null);
    assert.deepEqual(db.instances, []);
    assert.deepEqual(db.features, []);
    assert.equal(db.encryption_at_rest, false);
    assert.equal(db.cluster, false);
    assert.equal(db.current_operation_id, op.rows[0]!.id);
    // Reference: daily logical backups are on by default (00:00 UTC here).
    assert.equal(db.periodic_backups_enabled, true);
    assert.deepEqual(db.periodic_backups_scheduled_at, [0]);
    assert.deepEqual(Object.keys(db.maintenance_window).sort(), [
      "duration_in_hour",
      "starting_hour_utc",
      "weekday_utc",
    ]);
    for (const key of ["created_at", "version_id", "readable_version", "periodic_backups_scheduled_at"]) {
      assert.ok(key in db, key);
    }

    await h.loop.drain();
    const later = await h.call("GET", `/api/databases/${starterId}`, { bearer: token });
    assert.equal(later.json.database.status, "creating", "a reconcile pass does not make it run");
  });

  it("reports multi-node plans as clusters, and a Dedicated database under its own name", async () => {
    const business = await h.call("GET", `/api/databases/${businessId}`, { bearer: alice.bearer });
    assert.equal(business.json.database.cluster, true);
    const token = await addonToken(alice, "orders-db", dedicatedId);
    const dr = await h.call("GET", `/api/databases/${dedicatedId}`, { bearer: token });
    assert.equal(dr.status, 200);
    assert.equal(dr.json.database.app_name, "orders-db");
    assert.equal(dr.json.database.cluster, true);
  });

  it("accepts an add-on token only for its own database", async () => {
    const token = await addonToken(bob, shop.name, starterId);
    const other = await h.call("GET", `/api/databases/${businessId}`, { bearer: token });
    assert.deepEqual([other.status, other.json], [404, { resource: "database", error: "not found" }]);
  });

  it("refuses an add-on token anywhere outside the database API", async () => {
    const token = await addonToken(alice, shop.name, starterId);
    for (const path of ["/v1/apps", `/v1/apps/${shop.name}/addons`, "/v1/databases", "/v1/tokens"]) {
      const res = await h.call("GET", path, { bearer: token });
      assert.equal(res.status, 401, path);
      assert.match(res.json.error, /add-on token is valid only on the database API/);
    }
    const mint = await h.call("POST", `/v1/apps/${shop.name}/addons/${businessId}/token`, { bearer: token });
    assert.equal(mint.status, 401, "an add-on token cannot mint tokens for other databases");
  });

  it("accepts a user session by role: owner and collaborator yes, limited 403, strangers 404", async () => {
    assert.equal((await h.call("GET", `/api/databases/${starterId}`, { bearer: alice.bearer })).status, 200);
    assert.equal((await h.call("GET", `/api/databases/${starterId}`, { bearer: bob.bearer })).status, 200);
    const limited = await h.call("GET", `/api/databases/${starterId}`, { bearer: lim.bearer });
    assert.equal(limited.status, 403);
    assert.equal(limited.json.code, "insufficient_role");
    const stranger = await h.call("GET", `/api/databases/${starterId}`, { bearer: mallory.bearer });
    assert.deepEqual([stranger.status, stranger.json], [404, { resource: "database", error: "not found" }]);
    const missing = await h.call("GET", "/api/databases/ad-00000000-0000-0000-0000-000000000000", {
      bearer: alice.bearer,
    });
    assert.equal(missing.status, 404);
    assert.equal((await h.call("GET", `/api/databases/${starterId}`)).status, 401);
    const forged = signJwt(
      { sub: alice.user.id, tok: "tok-x", db: starterId, iat: 1, exp: 4102444800, iss: "cellar" },
      Buffer.from("not-the-secret"),
    );
    assert.equal((await h.call("GET", `/api/databases/${starterId}`, { bearer: forged })).status, 401);
  });

  it("serves a database only in its own region", async () => {
    const res = await h.call("GET", `/regions/osc-secnum-fr1/api/databases/${starterId}`, {
      bearer: alice.bearer,
    });
    assert.equal(res.status, 404);
    const same = await h.call("GET", `/regions/osc-fr1/api/databases/${starterId}`, { bearer: alice.bearer });
    assert.equal(same.status, 200);
  });

  it("ends the add-on tokens of a collaborator who is removed", async () => {
    const carol = await h.user("carol");
    const collabId = await addCollaborator(h, alice, shop.name, carol);
    const token = await addonToken(carol, shop.name, starterId);
    assert.equal((await h.call("GET", `/api/databases/${starterId}`, { bearer: token })).status, 200);
    const removed = await h.call("DELETE", `/v1/apps/${shop.name}/collaborators/${collabId}`, {
      bearer: alice.bearer,
    });
    assert.equal(removed.status, 204);
    assert.equal((await h.call("GET", `/api/databases/${starterId}`, { bearer: token })).status, 404);
  });

  it("stops serving a database once its deletion is requested", async () => {
    const token = await addonToken(alice, shop.name, businessId);
    const counts = await rowCounts(h);
    const del = await h.call("DELETE", `/v1/apps/${shop.name}/addons/${businessId}`, {
      bearer: alice.bearer,
    });
    assert.equal(del.status, 204);
    assert.notDeepEqual(await rowCounts(h), counts);
    assert.equal((await h.call("GET", `/api/databases/${businessId}`, { bearer: token })).status, 404);
  });
});
