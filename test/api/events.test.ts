import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { recordEvent } from "../../src/store/events.store.ts";
import { startHarness, type Harness, type Session } from "../support/api.ts";
import { addCollaborator, makeApp, makeDedicated } from "../support/scopes.ts";

describe("events API", () => {
  let h: Harness;
  let owner: Session;
  let bob: Session;
  let eve: Session;
  let app: { id: string; name: string };
  before(async () => {
    h = await startHarness();
    owner = await h.user("owner");
    bob = await h.user("bob");
    eve = await h.user("eve");
    app = await makeApp(h, owner, "events-app");
    await addCollaborator(h, owner, app.name, bob);
    const renamed = await h.call("POST", `/v1/apps/${app.name}/rename`, {
      bearer: owner.bearer,
      body: { current_name: app.name, new_name: "events-app2" },
    });
    assert.equal(renamed.status, 200);
    app = { id: app.id, name: "events-app2" };
  });
  after(async () => h.close());

  it("lists an app's events, newest first, in the reference's shape", async () => {
    const res = await h.call("GET", `/v1/apps/${app.name}/events`, { bearer: bob.bearer });
    assert.equal(res.status, 200);
    const types = res.json.events.map((e: { type: string }) => e.type);
    assert.deepEqual(types, ["rename_app", "accept_collaborator", "new_collaborator", "new_app"]);
    const [rename] = res.json.events;
    assert.match(rename.id, /^ev-/);
    assert.equal(rename.app_id, app.id);
    assert.equal(rename.app_name, "events-app2");
    assert.deepEqual(rename.user, { id: owner.user.id, username: "owner", email: "owner@example.test" });
    assert.deepEqual(rename.type_data, { old_name: "events-app", new_name: "events-app2" });
    assert.ok(!Number.isNaN(Date.parse(rename.created_at)));
    assert.deepEqual(res.json.meta, {
      pagination: { prev_page: null, current_page: 1, next_page: null, total_pages: 1, total_count: 4 },
    });
  });

  it("paginates with page and per_page", async () => {
    const p1 = await h.call("GET", `/v1/apps/${app.id}/events?per_page=3`, { bearer: owner.bearer });
    assert.equal(p1.json.events.length, 3);
    assert.deepEqual(p1.json.meta.pagination, {
      prev_page: null,
      current_page: 1,
      next_page: 2,
      total_pages: 2,
      total_count: 4,
    });
    const p2 = await h.call("GET", `/v1/apps/${app.id}/events?per_page=3&page=2`, { bearer: owner.bearer });
    assert.deepEqual(
      p2.json.events.map((e: { type: string }) => e.type),
      ["new_app"],
    );
    assert.equal(p2.json.meta.pagination.prev_page, 1);
    const past = await h.call("GET", `/v1/apps/${app.id}/events?per_page=3&page=9`, { bearer: owner.bearer });
    assert.deepEqual(past.json.events, []);
    assert.equal(past.json.meta.pagination.total_count, 4);
    for (const q of ["page=0", "per_page=1000", "page=abc", "per_page=-1"]) {
      const bad = await h.call("GET", `/v1/apps/${app.id}/events?${q}`, { bearer: owner.bearer });
      assert.equal(bad.status, 422, q);
    }
  });

  it("another tenant's app events are a 404", async () => {
    const res = await h.call("GET", `/v1/apps/${app.id}/events`, { bearer: eve.bearer });
    assert.deepEqual([res.status, res.json], [404, { resource: "app", error: "not found" }]);
  });

  it("a Dedicated database's events show under its id", async () => {
    const db = await makeDedicated(h, owner, "events-dwh");
    const res = await h.call("GET", `/v1/apps/${db.name}/events`, { bearer: owner.bearer });
    assert.equal(res.status, 200);
    assert.deepEqual(
      res.json.events.map((e: { type: string; app_id: string; app_name: string }) => [
        e.type,
        e.app_id,
        e.app_name,
      ]),
      [["new_addon", db.id, db.name]],
    );
  });

  it("GET /events covers the user's apps and Dedicated databases, not other tenants'", async () => {
    const eveApp = await makeApp(h, eve, "eve-secret");
    await recordEvent(h.deps.db, { appId: eveApp.id, type: "custom_probe", typeData: {} });
    const mine = await h.call("GET", "/v1/events?per_page=100", { bearer: owner.bearer });
    assert.equal(mine.status, 200);
    const ids = new Set(mine.json.events.map((e: { app_id: string }) => e.app_id));
    assert.ok(ids.has(app.id));
    assert.ok(!ids.has(eveApp.id));
    const bobs = await h.call("GET", "/v1/events?per_page=100", { bearer: bob.bearer });
    assert.ok(
      bobs.json.events.some(
        (e: { type: string; app_id: string }) => e.app_id === app.id && e.type === "new_app",
      ),
    );
    assert.ok(!bobs.json.events.some((e: { app_name: string }) => e.app_name === "events-dwh"));
    const eves = await h.call("GET", "/v1/events", { bearer: eve.bearer });
    assert.deepEqual(
      eves.json.events.map((e: { type: string }) => e.type),
      ["custom_probe", "new_app"],
    );
  });

  it("a deleted app's events stay visible to who deleted it", async () => {
    const gone = await makeApp(h, bob, "bob-gone");
    const del = await h.call("DELETE", `/v1/apps/${gone.name}?current_name=${gone.name}`, {
      bearer: bob.bearer,
    });
    assert.equal(del.status, 204);
    const res = await h.call("GET", "/v1/events?per_page=100", { bearer: bob.bearer });
    const last = res.json.events.find(
      (e: { app_id: string; type: string }) => e.app_id === gone.id && e.type === "delete_app",
    );
    assert.equal(last?.app_name, "bob-gone");
  });
});
