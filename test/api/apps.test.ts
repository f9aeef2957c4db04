import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { startHarness, type Harness, type Session } from "../support/api.ts";
import {
  addCollaborator,
  eventsOfType,
  makeAddon,
  makeApp,
  makeDedicated,
  rowCounts,
} from "../support/scopes.ts";

describe("apps API", () => {
  let h: Harness;
  let alice: Session;
  let bob: Session;
  let carol: Session;
  let kicks = 0;
  before(async () => {
    h = await startHarness();
    h.deps.kickReconciler = () => void kicks++;
    alice = await h.user("alice");
    bob = await h.user("bob");
    carol = await h.user("carol");
  });
  after(async () => h.close());

  it("creates an app in the request's region, owned by the caller, with a new_app event", async () => {
    const res = await h.call("POST", "/v1/apps", {
      bearer: alice.bearer,
      body: { app: { name: "shop-prod" } },
    });
    assert.equal(res.status, 201);
    const app = res.json.app;
    assert.match(app.id, /^app-/);
    assert.equal(app.name, "shop-prod");
    assert.equal(app.region, "osc-fr1");
    assert.deepEqual(app.owner, {
      id: alice.user.id,
      username: "alice",
      email: "alice@example.test",
      flags: {},
    });
    assert.deepEqual(app.flags, {});
    assert.ok(!Number.isNaN(Date.parse(app.created_at)));
    const { rows } = await h.deps.db.query("SELECT owner_id, region FROM apps WHERE id = $1", [app.id]);
    assert.deepEqual(rows[0], { owner_id: alice.user.id, region: "osc-fr1" });
    const ev = (await eventsOfType(h, "new_app")).find((e) => e.app_id === app.id);
    assert.equal(ev?.user_id, alice.user.id);

    const secnum = await h.call("POST", "/regions/osc-secnum-fr1/v1/apps", {
      bearer: alice.bearer,
      body: { app: { name: "shop-secnum" } },
    });
    assert.equal(secnum.status, 201);
    assert.equal(secnum.json.app.region, "osc-secnum-fr1");
    // An app lives in one region only.
    const cross = await h.call("GET", `/v1/apps/${secnum.json.app.id}`, { bearer: alice.bearer });
    assert.deepEqual([cross.status, cross.json], [404, { resource: "app", error: "not found" }]);
  });

  it("refuses a name taken by an app or by a Dedicated database, writing nothing", async () => {
    await makeDedicated(h, bob, "bob-warehouse");
    const before = await rowCounts(h);
    for (const name of ["shop-prod", "bob-warehouse"]) {
      const res = await h.call("POST", "/v1/apps", { bearer: carol.bearer, body: { app: { name } } });
      assert.equal(res.status, 422);
      assert.deepEqual(res.json, { errors: { name: ["is already taken"] } });
    }
    const reserved = await h.call("POST", "/v1/apps", {
      bearer: carol.bearer,
      body: { app: { name: "collaboration" } },
    });
    assert.equal(reserved.status, 422);
    assert.deepEqual(await rowCounts(h), before);
  });

  it("a dry run validates without creating", async () => {
    const before = await rowCounts(h);
    const res = await h.call("POST", "/v1/apps", {
      bearer: carol.bearer,
      body: { app: { name: "carol-dry" } },
      headers: { "x-dry-run": "true" },
    });
    assert.equal(res.status, 200);
    assert.equal(res.json.app.name, "carol-dry");
    assert.deepEqual(await rowCounts(h), before);
  });

  it("lists owned apps and accepted collaborations, not pending ones or others'", async () => {
    const own = await makeApp(h, carol, "carol-one");
    const shared = await makeApp(h, bob, "bob-shared");
    await addCollaborator(h, bob, shared.name, carol);
    const pending = await makeApp(h, bob, "bob-pending");
    const inv = await h.call("POST", `/v1/apps/${pending.name}/collaborators`, {
      bearer: bob.bearer,
      body: { collaborator: { email: carol.user.email } },
    });
    assert.equal(inv.status, 201);
    const res = await h.call("GET", "/v1/apps", { bearer: carol.bearer });
    assert.equal(res.status, 200);
    assert.deepEqual(
      res.json.apps.map((a: { name: string }) => a.name).sort(),
      [own.name, shared.name].sort(),
    );
    const sharedJson = res.json.apps.find((a: { name: string }) => a.name === shared.name);
    assert.equal(sharedJson.owner.username, "bob");
  });

  it("shows an app by id or name; another tenant's app is a 404 like a missing one", async () => {
    const app = await makeApp(h, alice, "alice-show");
    for (const ref of [app.id, app.name]) {
      const res = await h.call("GET", `/v1/apps/${ref}`, { bearer: alice.bearer });
      assert.equal(res.status, 200);
      assert.equal(res.json.app.id, app.id);
    }
    const foreign = await h.call("GET", `/v1/apps/${app.id}`, { bearer: carol.bearer });
    const missing = await h.call("GET", "/v1/apps/app-doesnotexist", { bearer: carol.bearer });
    assert.deepEqual([foreign.status, foreign.json], [404, { resource: "app", error: "not found" }]);
    assert.deepEqual([missing.status, missing.json], [404, foreign.json]);
    for (const [method, path] of [
      ["POST", `/v1/apps/${app.id}/rename`],
      ["PATCH", `/v1/apps/${app.id}`],
      ["DELETE", `/v1/apps/${app.id}?current_name=${app.name}`],
    ] as const) {
      const res = await h.call(method, path, {
        bearer: carol.bearer,
        body: { current_name: app.name, new_name: "stolen-app" },
      });
      assert.deepEqual(
        [res.status, res.json],
        [404, { resource: "app", error: "not found" }],
        `${method} ${path}`,
      );
    }
    assert.equal((await h.call("GET", `/v1/apps/${app.id}`)).status, 401);
  });

  it("shows a Dedicated database as an app flagged dedicated-database", async () => {
    const db = await makeDedicated(h, alice, "alice-dwh");
    const res = await h.call("GET", `/v1/apps/${db.name}`, { bearer: alice.bearer });
    assert.equal(res.status, 200);
    assert.equal(res.json.app.id, db.id);
    assert.deepEqual(res.json.app.flags, { "dedicated-database": true });
    assert.equal(res.json.app.owner.id, alice.user.id);
    assert.equal((await h.call("GET", `/v1/apps/${db.id}`, { bearer: bob.bearer })).status, 404);
  });

  it("renames: owner only, current_name must match, new name free", async () => {
    const app = await makeApp(h, alice, "alice-old");
    await addCollaborator(h, alice, app.name, bob);
    await addCollaborator(h, alice, app.name, carol, true);
    for (const s of [bob, carol]) {
      const res = await h.call("POST", `/v1/apps/${app.name}/rename`, {
        bearer: s.bearer,
        body: { current_name: app.name, new_name: "taken-over" },
      });
      assert.equal(res.status, 403);
      assert.equal(res.json.code, "owner_only");
    }
    const wrong = await h.call("POST", `/v1/apps/${app.name}/rename`, {
      bearer: alice.bearer,
      body: { current_name: "alice-typo", new_name: "alice-new" },
    });
    assert.equal(wrong.status, 422);
    assert.deepEqual(Object.keys(wrong.json.errors), ["current_name"]);
    const taken = await h.call("POST", `/v1/apps/${app.name}/rename`, {
      bearer: alice.bearer,
      body: { current_name: app.name, new_name: "shop-prod" },
    });
    assert.deepEqual([taken.status, taken.json], [422, { errors: { new_name: ["is already taken"] } }]);
    const ok = await h.call("POST", `/v1/apps/${app.id}/rename`, {
      bearer: alice.bearer,
      body: { current_name: app.name, new_name: "alice-new" },
    });
    assert.equal(ok.status, 200);
    assert.equal(ok.json.app.name, "alice-new");
    assert.equal((await h.call("GET", "/v1/apps/alice-new", { bearer: bob.bearer })).status, 200);
    assert.equal((await h.call("GET", "/v1/apps/alice-old", { bearer: alice.bearer })).status, 404);
    const { rows } = await h.deps.db.query(
      "SELECT name FROM resource_names WHERE name LIKE 'alice-%' ORDER BY name",
    );
    assert.ok(rows.some((r: { name: string }) => r.name === "alice-new"));
    assert.ok(!rows.some((r: { name: string }) => r.name === "alice-old"));
    const ev = (await eventsOfType(h, "rename_app")).find((e) => e.app_id === app.id);
    assert.deepEqual(ev?.type_data, { old_name: "alice-old", new_name: "alice-new" });
  });

  it("renames a Dedicated database through its app scope", async () => {
    const db = await makeDedicated(h, alice, "alice-dr-old");
    const res = await h.call("POST", `/v1/apps/${db.id}/rename`, {
      bearer: alice.bearer,
      body: { current_name: db.name, new_name: "alice-dr-new" },
    });
    assert.equal(res.status, 200);
    assert.equal(res.json.app.name, "alice-dr-new");
    const { rows } = await h.deps.db.query("SELECT name FROM databases WHERE id = $1", [db.id]);
    assert.equal(rows[0].name, "alice-dr-new");
    const names = await h.deps.db.query("SELECT kind FROM resource_names WHERE name = 'alice-dr-new'");
    assert.equal(names.rows[0]?.kind, "database");
  });

  it("PATCH refuses settings Cellar does not have, naming them", async () => {
    const app = await makeApp(h, alice, "alice-patch");
    const noop = await h.call("PATCH", `/v1/apps/${app.name}`, { bearer: alice.bearer, body: { app: {} } });
    assert.equal(noop.status, 200);
    assert.equal(noop.json.app.id, app.id);
    const res = await h.call("PATCH", `/v1/apps/${app.name}`, {
      bearer: alice.bearer,
      body: { app: { force_https: true, stack_id: "scalingo-22" } },
    });
    assert.equal(res.status, 422);
    assert.deepEqual(Object.keys(res.json.errors).sort(), ["force_https", "stack_id"]);
    assert.match(res.json.errors.force_https[0], /not supported/);
  });

  it("deletes only with the current name, by the owner, once its add-ons are gone", async () => {
    const app = await makeApp(h, alice, "alice-gone");
    await addCollaborator(h, alice, app.name, bob);
    await addCollaborator(h, alice, app.name, carol, true);
    for (const s of [bob, carol]) {
      const res = await h.call("DELETE", `/v1/apps/${app.name}?current_name=${app.name}`, {
        bearer: s.bearer,
      });
      assert.deepEqual([res.status, res.json.code], [403, "owner_only"]);
    }
    for (const q of ["", "?current_name=alice-typo"]) {
      const res = await h.call("DELETE", `/v1/apps/${app.name}${q}`, { bearer: alice.bearer });
      assert.equal(res.status, 422);
      assert.deepEqual(Object.keys(res.json.errors), ["current_name"]);
    }
    const addon = await makeAddon(h, alice, app);
    const before = await rowCounts(h);
    const blocked = await h.call("DELETE", `/v1/apps/${app.name}?current_name=${app.name}`, {
      bearer: alice.bearer,
    });
    assert.equal(blocked.status, 409);
    assert.match(blocked.json.error, new RegExp(`still has add-ons: ${addon}.*Remove them first`));
    assert.deepEqual(await rowCounts(h), before);

    // The add-on's reconciler finishing its deletion (status is never written by routes).
    await h.deps.db.query(
      "UPDATE databases SET delete_requested_at = now(), deleted_at = now() WHERE id = $1",
      [addon],
    );
    const ok = await h.call("DELETE", `/v1/apps/${app.id}?current_name=${app.name}`, {
      bearer: alice.bearer,
    });
    assert.equal(ok.status, 204);
    assert.equal((await h.call("GET", `/v1/apps/${app.id}`, { bearer: alice.bearer })).status, 404);
    assert.equal((await h.call("GET", `/v1/apps/${app.name}`, { bearer: bob.bearer })).status, 404);
    const { rows } = await h.deps.db.query("SELECT name, deleted_name, deleted_at FROM apps WHERE id = $1", [
      app.id,
    ]);
    assert.equal(rows[0].name, null);
    assert.equal(rows[0].deleted_name, app.name);
    assert.ok(rows[0].deleted_at);
    const collabs = await h.deps.db.query("SELECT 1 FROM collaborators WHERE app_id = $1", [app.id]);
    assert.equal(collabs.rows.length, 0);
    assert.ok(
      (await eventsOfType(h, "delete_app")).some((e) => e.app_id === app.id && e.user_id === alice.user.id),
    );
    // The name is free again, and the deleted add-on's row still points to the old app.
    const again = await makeApp(h, carol, app.name);
    assert.notEqual(again.id, app.id);
    const addonRow = await h.deps.db.query("SELECT app_id FROM databases WHERE id = $1", [addon]);
    assert.equal(addonRow.rows[0].app_id, app.id);
  });

  it("an add-on cannot be created on an app once it is deleted", async () => {
    const app = await makeApp(h, alice, "alice-late");
    const ok = await h.call("DELETE", `/v1/apps/${app.name}?current_name=${app.name}`, {
      bearer: alice.bearer,
    });
    assert.equal(ok.status, 204);
    await assert.rejects(makeAddon(h, alice, app), /is deleted/);
  });

  it("deleting a Dedicated database records the intent only: spec, operation, event, queue", async () => {
    const db = await makeDedicated(h, alice, "alice-dr-gone");
    await addCollaborator(h, alice, db.name, bob);
    const denied = await h.call("DELETE", `/v1/apps/${db.id}?current_name=${db.name}`, {
      bearer: bob.bearer,
    });
    assert.equal(denied.status, 403);
    const wrong = await h.call("DELETE", `/v1/apps/${db.id}?current_name=nope`, { bearer: alice.bearer });
    assert.equal(wrong.status, 422);
    const kicksBefore = kicks;
    const res = await h.call("DELETE", `/v1/apps/${db.id}?current_name=${db.name}`, { bearer: alice.bearer });
    assert.equal(res.status, 204);
    assert.equal(kicks, kicksBefore + 1);
    const { rows } = await h.deps.db.query(
      "SELECT generation, delete_requested_at, phase, deleted_at FROM databases WHERE id = $1",
      [db.id],
    );
    assert.equal(rows[0].generation, 2);
    assert.ok(rows[0].delete_requested_at);
    assert.equal(rows[0].phase, "provisioning", "status stays the reconciler's to write");
    assert.equal(rows[0].deleted_at, null);
    const ops = await h.deps.db.query(
      "SELECT type, target_generation FROM operations WHERE database_id = $1 AND type = 'delete'",
      [db.id],
    );
    assert.deepEqual(ops.rows, [{ type: "delete", target_generation: 2 }]);
    assert.ok((await eventsOfType(h, "delete_addon")).some((e) => e.database_id === db.id));
    const queued = await h.deps.db.query("SELECT 1 FROM reconcile_queue WHERE database_id = $1", [db.id]);
    assert.equal(queued.rows.length, 1);
    // Asking again is harmless: no second operation.
    const again = await h.call("DELETE", `/v1/apps/${db.id}?current_name=${db.name}`, {
      bearer: alice.bearer,
    });
    assert.equal(again.status, 204);
    const ops2 = await h.deps.db.query(
      "SELECT 1 FROM operations WHERE database_id = $1 AND type = 'delete'",
      [db.id],
    );
    assert.equal(ops2.rows.length, 1);
  });

  describe("bad input writes nothing", () => {
    const cases: Array<[string, { body?: unknown; raw?: string }, number, string | null]> = [
      ["malformed JSON", { raw: '{"app": {"name": "broken-json"' }, 400, null],
      ["a JSON array", { raw: "[1,2]" }, 400, null],
      ["name of the wrong type", { body: { app: { name: 123 } } }, 422, "name"],
      ["app not an object", { body: { app: "my-app-name" } }, 422, "app"],
      ["missing name", { body: { app: {} } }, 422, "name"],
      ["SQL metacharacters", { body: { app: { name: "x'; drop table apps;--" } } }, 422, "name"],
      ["shell metacharacters", { body: { app: { name: "$(rm -rf /)" } } }, 422, "name"],
      ["uppercase and spaces", { body: { app: { name: "My App" } } }, 422, "name"],
      ["too short", { body: { app: { name: "abc" } } }, 422, "name"],
      [
        "oversized body",
        { raw: JSON.stringify({ app: { name: "big-app", pad: "x".repeat(70 * 1024) } }) },
        413,
        null,
      ],
    ];
    for (const [label, opts, status, field] of cases) {
      it(label, async () => {
        const before = await rowCounts(h);
        const res = await h.call("POST", "/v1/apps", { bearer: alice.bearer, ...opts });
        assert.equal(res.status, status, JSON.stringify(res.json));
        if (field) assert.ok(res.json.errors[field]?.[0], JSON.stringify(res.json));
        else assert.equal(typeof res.json.error, "string");
        assert.deepEqual(await rowCounts(h), before);
      });
    }

    it("a rename to a name with metacharacters", async () => {
      const app = await makeApp(h, alice, "alice-meta");
      const before = await rowCounts(h);
      for (const bad of ["x'; drop table apps;--", "$(rm -rf /)", 42]) {
        const res = await h.call("POST", `/v1/apps/${app.name}/rename`, {
          bearer: alice.bearer,
          body: { current_name: app.name, new_name: bad },
        });
        assert.equal(res.status, 422);
        assert.ok(res.json.errors.new_name);
      }
      assert.deepEqual(await rowCounts(h), before);
      const { rows } = await h.deps.db.query("SELECT name FROM apps WHERE id = $1", [app.id]);
      assert.equal(rows[0].name, app.name);
    });

    it("an app reference with metacharacters is just a missing app", async () => {
      const res = await h.call("GET", `/v1/apps/${encodeURIComponent("x' OR '1'='1")}`, {
        bearer: alice.bearer,
      });
      assert.deepEqual([res.status, res.json], [404, { resource: "app", error: "not found" }]);
    });
  });
});
