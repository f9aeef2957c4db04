import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { startHarness, type Harness, type Session } from "../support/api.ts";
import { addCollaborator, eventsOfType, makeApp, rowCounts } from "../support/scopes.ts";

describe("Dedicated databases API", () => {
  let h: Harness;
  let alice: Session;
  let bob: Session;
  let mallory: Session;

  before(async () => {
    h = await startHarness({ CELLAR_RATE_LIMIT_PER_MINUTE: "10000" });
    alice = await h.user("alice");
    bob = await h.user("bob");
    mallory = await h.user("mallory");
  });
  after(async () => h.close());

  const create = (s: Session, body: unknown) => h.call("POST", "/v1/databases", { bearer: s.bearer, body });

  it("creates from the documented shape: owned by the caller, provisioning, named in the shared namespace", async () => {
    const res = await create(alice, {
      database: { name: "orders-db", technology: "postgresql-ng", plan: "postgresql-dr-starter-4096" },
    });
    assert.equal(res.status, 201, JSON.stringify(res.json));
    const db = res.json.database;
    assert.match(db.id, /^ad-/);
    assert.equal(db.name, "orders-db");
    assert.equal(db.technology, "postgresql-ng");
    assert.equal(db.plan, "postgresql-dr-starter-4096");
    assert.equal(db.project_id, null);
    assert.equal(db.role, "owner");
    assert.equal(db.status, "creating");
    const { rows } = await h.deps.db.query(
      "SELECT model, owner_id, app_id, name FROM databases WHERE id = $1",
      [db.id],
    );
    assert.deepEqual(rows[0], {
      model: "dedicated",
      owner_id: alice.user.id,
      app_id: null,
      name: "orders-db",
    });
    const names = await h.deps.db.query("SELECT kind FROM resource_names WHERE name = 'orders-db'");
    assert.deepEqual(names.rows, [{ kind: "database" }]);
    const ops = await h.deps.db.query("SELECT type, app_id FROM operations WHERE database_id = $1", [db.id]);
    assert.deepEqual(ops.rows, [{ type: "provision", app_id: db.id }]);
    assert.ok(
      (await eventsOfType(h, "new_addon")).some((e) => e.database_id === db.id && e.app_id === db.id),
    );
  });

  it("creates from go-scalingo's unwrapped shape (with ip_range) and the JS client's shape", async () => {
    const go = await create(alice, {
      addon_provider_id: "postgresql-ng",
      plan_id: "postgresql-dr-business-8192",
      name: "billing-db",
      project_id: "proj-42",
      ip_range: "10.20.0.0/24",
    });
    assert.equal(go.status, 201, JSON.stringify(go.json));
    assert.equal(go.json.database.plan, "postgresql-dr-business-8192");
    assert.equal(go.json.database.project_id, "proj-42");
    assert.equal(go.json.database.ip_range, "10.20.0.0/24");
    const js = await create(alice, {
      database: {
        addon_provider_id: "postgresql-ng",
        plan_id: "postgresql-dr-enterprise-4096",
        database_name: "ledger-db",
      },
    });
    assert.equal(js.status, 201, "Enterprise is offered on Dedicated Resources");
    assert.equal(js.json.database.name, "ledger-db");
  });

  it("lists owned and collaborated databases with the caller's role, never others'", async () => {
    const made = await create(bob, {
      database: { name: "bob-analytics", technology: "postgresql-ng", plan: "postgresql-dr-starter-4096" },
    });
    assert.equal(made.status, 201);
    await addCollaborator(h, bob, "bob-analytics", alice);
    const list = await h.call("GET", "/v1/databases", { bearer: alice.bearer });
    assert.equal(list.status, 200);
    const roles = Object.fromEntries(list.json.databases.map((d: any) => [d.name, d.role]));
    assert.equal(roles["orders-db"], "owner");
    assert.equal(roles["bob-analytics"], "collaborator");
    const theirs = await h.call("GET", "/v1/databases", { bearer: mallory.bearer });
    assert.deepEqual(theirs.json.databases, []);
    const byName = await h.call("GET", "/v1/databases/bob-analytics", { bearer: alice.bearer });
    assert.equal(byName.status, 200);
    assert.equal(byName.json.database.role, "collaborator");
    const byId = await h.call("GET", `/v1/databases/${made.json.database.id}`, { bearer: bob.bearer });
    assert.equal(byId.json.database.name, "bob-analytics");
  });

  it("answers another tenant's database with the same 404 as a missing one, writing nothing", async () => {
    const counts = await rowCounts(h);
    const id = (await h.call("GET", "/v1/databases/orders-db", { bearer: alice.bearer })).json.database.id;
    for (const ref of ["orders-db", id, "no-such-db"]) {
      const res = await h.call("GET", `/v1/databases/${ref}`, { bearer: mallory.bearer });
      assert.deepEqual([res.status, res.json], [404, { resource: "database", error: "not found" }], ref);
    }
    const patch = await h.call("PATCH", `/v1/apps/${id}/addons/${id}`, {
      bearer: mallory.bearer,
      body: { addon: { plan_id: "postgresql-dr-starter-8192" } },
    });
    assert.equal(patch.status, 404);
    const token = await h.call("POST", `/v1/apps/orders-db/addons/${id}/token`, { bearer: mallory.bearer });
    assert.equal(token.status, 404);
    assert.deepEqual(await rowCounts(h), counts);
  });

  it("refuses bad input, naming the field and the rule, writing nothing", async () => {
    await makeApp(h, mallory, "taken-name");
    const counts = await rowCounts(h);
    const ok = { technology: "postgresql-ng", plan: "postgresql-dr-starter-4096" };
    const cases: Array<[unknown, string, RegExp]> = [
      [{ database: { ...ok, name: "taken-name" } }, "name", /already taken/],
      [{ database: { ...ok, name: "orders-db" } }, "name", /already taken/],
      [{ database: { ...ok, name: "short" } }, "name", /6 to 48/],
      [{ database: { ...ok, name: "Orders-DB" } }, "name", /lowercase/],
      [{ database: { ...ok, name: "db'; DROP TABLE databases; --" } }, "name", /lowercase/],
      [{ database: { ...ok, name: "db-$(rm -rf /)" } }, "name", /lowercase/],
      [{ database: { ...ok, name: "collaboration" } }, "name", /reserved/],
      [{ database: { ...ok } }, "name", /is required/],
      [{ database: { ...ok, name: 42 } }, "name", /must be a string/],
      [{ database: { ...ok, name: "mysql-prod", technology: "mysql" } }, "technology", /PostgreSQL only/],
      [
        { database: { ...ok, name: "shared-pg-x", technology: "postgresql" } },
        "technology",
        /PostgreSQL only/,
      ],
      [
        { database: { ...ok, name: "bad-plan-db", plan: "postgresql-dr-starter-3" } },
        "plan",
        /does not exist/,
      ],
      [
        { database: { ...ok, name: "shared-plan", plan: "postgresql-starter-512" } },
        "plan",
        /belongs to postgresql/,
      ],
      [{ database: { ...ok, name: "plan-type-db", plan: 4096 } }, "plan", /must be a string/],
      [{ database: { ...ok, name: "small-net-db", ip_range: "10.0.0.0/26" } }, "ip_range", /at least a \/25/],
      [{ database: { ...ok, name: "bad-net-db", ip_range: "10.0.0.1/24" } }, "ip_range", /host bits/],
      [{ database: { ...ok, name: "proj-db-xx", project_id: "p; rm -rf" } }, "project_id", /letters, digits/],
      [{ database: "orders" }, "database", /JSON object/],
    ];
    for (const [body, field, message] of cases) {
      const res = await create(alice, body);
      assert.equal(res.status, 422, JSON.stringify(body));
      assert.match(res.json.errors?.[field]?.[0] ?? "", message, JSON.stringify(res.json));
    }
    const malformed = await h.call("POST", "/v1/databases", { bearer: alice.bearer, raw: "{name:" });
    assert.equal(malformed.status, 400);
    const anonymous = await h.call("POST", "/v1/databases", {
      body: { database: { ...ok, name: "anon-db" } },
    });
    assert.equal(anonymous.status, 401);
    assert.deepEqual(await rowCounts(h), counts);
  });

  it("changes plan up only, class both ways at equal or larger size, naming the rule", async () => {
    const made = await create(alice, {
      database: { name: "scale-db", technology: "postgresql-ng", plan: "postgresql-dr-business-8192" },
    });
    const id = made.json.database.id as string;
    const path = `/v1/apps/scale-db/addons/${id}`;
    const counts = await rowCounts(h);
    const down = await h.call("PATCH", path, {
      bearer: alice.bearer,
      body: { addon: { plan_id: "postgresql-dr-starter-4096" } },
    });
    assert.equal(down.status, 422);
    assert.deepEqual(down.json.errors.plan_id, [
      "plan postgresql-dr-starter-4096 is smaller than the current postgresql-dr-business-8192: Dedicated databases scale up only",
    ]);
    assert.deepEqual(await rowCounts(h), counts, "a refused plan change writes nothing");

    const sameSizeSwitch = await h.call("PATCH", path, {
      bearer: alice.bearer,
      body: { addon: { plan_id: "postgresql-dr-starter-8192" } },
    });
    assert.equal(sameSizeSwitch.status, 200, JSON.stringify(sameSizeSwitch.json));
    assert.match(sameSizeSwitch.json.message, /no downtime expected/);
    const up = await h.call("PATCH", `/v1/apps/${id}/addons/${id}`, {
      bearer: alice.bearer,
      body: { addon: { plan_id: "postgresql-dr-enterprise-16384" } },
    });
    assert.equal(up.status, 200);
    const show = await h.call("GET", "/v1/databases/scale-db", { bearer: alice.bearer });
    assert.equal(show.json.database.plan, "postgresql-dr-enterprise-16384");
    const ev = (await eventsOfType(h, "upgrade_addon")).filter((e) => e.database_id === id);
    assert.deepEqual(
      ev.map((e) => e.type_data.new_plan_name),
      ["postgresql-dr-starter-8192", "postgresql-dr-enterprise-16384"],
    );
  });

  it("lets a Dedicated collaborator rescale, but only the owner delete", async () => {
    const made = await create(bob, {
      database: { name: "team-db-01", technology: "postgresql-ng", plan: "postgresql-dr-starter-4096" },
    });
    const id = made.json.database.id as string;
    await addCollaborator(h, bob, "team-db-01", alice);
    const up = await h.call("PATCH", `/v1/apps/team-db-01/addons/${id}`, {
      bearer: alice.bearer,
      body: { addon: { plan_id: "postgresql-dr-starter-8192" } },
    });
    assert.equal(up.status, 200);
    const del = await h.call("DELETE", "/v1/apps/team-db-01?current_name=team-db-01", {
      bearer: alice.bearer,
    });
    assert.equal(del.status, 403);
  });

  it("deletion (DELETE /v1/apps/:db?current_name=) is finalized by the reconciler and frees the name", async () => {
    const made = await create(alice, {
      database: { name: "temp-db-01", technology: "postgresql-ng", plan: "postgresql-dr-starter-4096" },
    });
    const id = made.json.database.id as string;
    const del = await h.call("DELETE", "/v1/apps/temp-db-01?current_name=temp-db-01", {
      bearer: alice.bearer,
    });
    assert.equal(del.status, 204, JSON.stringify(del.json));
    const hidden = await h.call("GET", "/v1/databases/temp-db-01", { bearer: alice.bearer });
    assert.equal(hidden.status, 404, "a database being deleted is no longer shown");
    await h.loop.drain();
    const { rows } = await h.deps.db.query(
      "SELECT phase, deleted_at IS NOT NULL AS gone FROM databases WHERE id = $1",
      [id],
    );
    assert.deepEqual(rows[0], { phase: "deleted", gone: true });
    const names = await h.deps.db.query("SELECT 1 FROM resource_names WHERE name = 'temp-db-01'");
    assert.equal(names.rowCount, 0);
    const again = await create(alice, {
      database: { name: "temp-db-01", technology: "postgresql-ng", plan: "postgresql-dr-starter-4096" },
    });
    assert.equal(again.status, 201, "the name can be used again");
    assert.notEqual(again.json.database.id, id);
  });
});
