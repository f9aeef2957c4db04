import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { roleOnApp, findApp } from "../../src/store/apps.store.ts";
import { startHarness, type Harness, type Session } from "../support/api.ts";
import { addCollaborator, eventsOfType, makeApp, makeDedicated, rowCounts } from "../support/scopes.ts";

const tokenOf = (link: string): string => new URL(link).searchParams.get("token")!;

describe("collaborators API", () => {
  let h: Harness;
  let owner: Session;
  let bob: Session;
  let carol: Session;
  let dave: Session;
  let mallory: Session;
  before(async () => {
    h = await startHarness();
    owner = await h.user("owner");
    bob = await h.user("bob");
    carol = await h.user("carol");
    dave = await h.user("dave");
    mallory = await h.user("mallory");
  });
  after(async () => h.close());

  it("invites by email: 201 with an invitation link whose token is stored only as a hash", async () => {
    const app = await makeApp(h, owner, "team-app");
    const res = await h.call("POST", `/v1/apps/${app.name}/collaborators`, {
      bearer: owner.bearer,
      body: { collaborator: { email: "Bob@Example.test", is_limited: false } },
    });
    assert.equal(res.status, 201);
    const k = res.json.collaborator;
    assert.match(k.id, /^col-/);
    assert.equal(k.app_id, app.id);
    assert.equal(k.email, "bob@example.test");
    assert.equal(k.status, "pending");
    assert.equal(k.username, "n/a");
    assert.equal(k.user_id, null);
    assert.equal(k.is_limited, false);
    assert.match(k.invitation_link, /\/v1\/apps\/collaboration\?token=[0-9a-f]{48}$/);
    const token = tokenOf(k.invitation_link);
    const { rows } = await h.deps.db.query("SELECT * FROM collaborators WHERE id = $1", [k.id]);
    assert.ok(!JSON.stringify(rows[0]).includes(token));
    assert.ok(rows[0].invitation_token_hash);
    const ev = (await eventsOfType(h, "new_collaborator")).find((e) => e.app_id === app.id);
    assert.deepEqual(ev?.type_data, { collaborator: { email: "bob@example.test", is_limited: false } });

    const list = await h.call("GET", `/v1/apps/${app.name}/collaborators`, { bearer: owner.bearer });
    assert.equal(list.status, 200);
    assert.deepEqual(list.json.collaborators, [
      {
        id: k.id,
        app_id: app.id,
        email: "bob@example.test",
        username: "n/a",
        status: "pending",
        user_id: null,
        is_limited: false,
      },
    ]);
  });

  it("accepts only for the invited account, once; then the app is the invitee's", async () => {
    const app = await makeApp(h, owner, "accept-app");
    const inv = await h.call("POST", `/v1/apps/${app.name}/collaborators`, {
      bearer: owner.bearer,
      body: { collaborator: { email: carol.user.email } },
    });
    const token = tokenOf(inv.json.collaborator.invitation_link);
    const stolen = await h.call("GET", `/v1/apps/collaboration?token=${token}`, { bearer: mallory.bearer });
    assert.equal(stolen.status, 403);
    assert.equal(stolen.json.code, "invitation_email_mismatch");
    const { rows } = await h.deps.db.query("SELECT status, user_id FROM collaborators WHERE id = $1", [
      inv.json.collaborator.id,
    ]);
    assert.deepEqual(rows[0], { status: "pending", user_id: null });
    assert.equal((await h.call("GET", `/v1/apps/${app.name}`, { bearer: carol.bearer })).status, 404);

    const ok = await h.call("GET", `/v1/apps/collaboration?token=${token}`, { bearer: carol.bearer });
    assert.equal(ok.status, 200);
    assert.equal(ok.json.id, app.id);
    assert.equal(ok.json.name, app.name);
    const after = await h.deps.db.query(
      "SELECT status, user_id, invitation_token_hash FROM collaborators WHERE id = $1",
      [inv.json.collaborator.id],
    );
    assert.deepEqual(after.rows[0], {
      status: "accepted",
      user_id: carol.user.id,
      invitation_token_hash: null,
    });
    const twice = await h.call("GET", `/v1/apps/collaboration?token=${token}`, { bearer: carol.bearer });
    assert.deepEqual([twice.status, twice.json], [404, { resource: "invitation", error: "not found" }]);
    assert.equal((await h.call("GET", `/v1/apps/${app.name}`, { bearer: carol.bearer })).status, 200);
    const list = await h.call("GET", `/v1/apps/${app.name}/collaborators`, { bearer: carol.bearer });
    assert.equal(list.json.collaborators[0].username, "carol");
    assert.equal(list.json.collaborators[0].user_id, carol.user.id);
    assert.ok((await eventsOfType(h, "accept_collaborator")).some((e) => e.app_id === app.id));

    const missing = await h.call("GET", "/v1/apps/collaboration", { bearer: carol.bearer });
    assert.equal(missing.status, 422);
    assert.ok(missing.json.errors.token);
    const bogus = await h.call("GET", "/v1/apps/collaboration?token=deadbeef", { bearer: carol.bearer });
    assert.equal(bogus.status, 404);
  });

  it("an invitation is accepted only in its app's region", async () => {
    const app = await makeApp(h, owner, "region-app");
    const inv = await h.call("POST", `/v1/apps/${app.name}/collaborators`, {
      bearer: owner.bearer,
      body: { collaborator: { email: dave.user.email } },
    });
    const token = tokenOf(inv.json.collaborator.invitation_link);
    const other = await h.call("GET", `/regions/osc-secnum-fr1/v1/apps/collaboration?token=${token}`, {
      bearer: dave.bearer,
    });
    assert.equal(other.status, 404);
    const res = await h.call("GET", `/v1/apps/collaboration?token=${token}`, { bearer: dave.bearer });
    assert.equal(res.status, 200);
  });

  it("refuses the owner, a second invitation of one email, and malformed emails", async () => {
    const app = await makeApp(h, owner, "dup-app");
    await addCollaborator(h, owner, app.name, bob);
    const before = await rowCounts(h);
    for (const email of [owner.user.email, "BOB@example.test"]) {
      const res = await h.call("POST", `/v1/apps/${app.name}/collaborators`, {
        bearer: owner.bearer,
        body: { collaborator: { email } },
      });
      assert.equal(res.status, 422, email);
      assert.deepEqual(Object.keys(res.json.errors), ["email"]);
    }
    for (const email of ["not-an-email", "x'; drop table collaborators;--@a.b", "$(rm -rf /)@x.y", 123]) {
      const res = await h.call("POST", `/v1/apps/${app.name}/collaborators`, {
        bearer: owner.bearer,
        body: { collaborator: { email } },
      });
      assert.equal(res.status, 422, String(email));
      assert.ok(res.json.errors.email);
    }
    const wrongType = await h.call("POST", `/v1/apps/${app.name}/collaborators`, {
      bearer: owner.bearer,
      body: { collaborator: { email: "eve@example.test", is_limited: "yes" } },
    });
    assert.equal(wrongType.status, 422);
    assert.ok(wrongType.json.errors.is_limited);
    const malformed = await h.call("POST", `/v1/apps/${app.name}/collaborators`, {
      bearer: owner.bearer,
      raw: '{"collaborator": {',
    });
    assert.equal(malformed.status, 400);
    const big = await h.call("POST", `/v1/apps/${app.name}/collaborators`, {
      bearer: owner.bearer,
      raw: JSON.stringify({ collaborator: { email: "eve@example.test", pad: "x".repeat(65 * 1024) } }),
    });
    assert.equal(big.status, 413);
    assert.deepEqual(await rowCounts(h), before);
  });

  it("limited collaborators read the app and its collaborators but manage nothing", async () => {
    const app = await makeApp(h, owner, "limited-app");
    const bobId = await addCollaborator(h, owner, app.name, bob);
    const carolId = await addCollaborator(h, owner, app.name, carol, true);
    assert.equal(
      await roleOnApp(h.deps.db, (await findApp(h.deps.db, "osc-fr1", app.id))!, carol.user.id),
      "limited",
    );
    assert.equal((await h.call("GET", `/v1/apps/${app.name}`, { bearer: carol.bearer })).status, 200);
    const list = await h.call("GET", `/v1/apps/${app.name}/collaborators`, { bearer: carol.bearer });
    assert.equal(list.status, 200);
    assert.equal(list.json.collaborators.length, 2);
    const before = await rowCounts(h);
    const calls: Array<[string, string, unknown]> = [
      ["POST", `/v1/apps/${app.name}/collaborators`, { collaborator: { email: "x@example.test" } }],
      ["PATCH", `/v1/apps/${app.name}/collaborators/${bobId}`, { collaborator: { is_limited: true } }],
      ["PATCH", `/v1/apps/${app.name}/collaborators/${carolId}`, { collaborator: { is_limited: false } }],
      ["DELETE", `/v1/apps/${app.name}/collaborators/${bobId}`, undefined],
    ];
    for (const [method, path, body] of calls) {
      const res = await h.call(method, path, { bearer: carol.bearer, body });
      assert.equal(res.status, 403, `${method} ${path}`);
      assert.equal(res.json.code, "insufficient_role");
    }
    assert.deepEqual(await rowCounts(h), before);
    // Any collaborator may stop collaborating.
    const leave = await h.call("DELETE", `/v1/apps/${app.name}/collaborators/${carolId}`, {
      bearer: carol.bearer,
    });
    assert.equal(leave.status, 204);
    assert.equal((await h.call("GET", `/v1/apps/${app.name}`, { bearer: carol.bearer })).status, 404);
  });

  it("collaborators manage collaborators; the owner changes roles and removes", async () => {
    const app = await makeApp(h, owner, "manage-app");
    await addCollaborator(h, owner, app.name, bob);
    // A (full) collaborator invites, as the reference allows.
    const daveId = await addCollaborator(h, bob, app.name, dave);
    const patch = await h.call("PATCH", `/v1/apps/${app.name}/collaborators/${daveId}`, {
      bearer: owner.bearer,
      body: { collaborator: { is_limited: true } },
    });
    assert.equal(patch.status, 200);
    assert.equal(patch.json.collaborator.is_limited, true);
    assert.equal(
      await roleOnApp(h.deps.db, (await findApp(h.deps.db, "osc-fr1", app.id))!, dave.user.id),
      "limited",
    );
    const ev = (await eventsOfType(h, "change_collaborator_role")).find((e) => e.app_id === app.id);
    assert.equal(ev?.type_data.collaborator.is_limited, true);
    const missing = await h.call("PATCH", `/v1/apps/${app.name}/collaborators/${daveId}`, {
      bearer: owner.bearer,
      body: { collaborator: {} },
    });
    assert.equal(missing.status, 422);
    assert.ok(missing.json.errors.is_limited);

    const del = await h.call("DELETE", `/v1/apps/${app.name}/collaborators/${daveId}`, {
      bearer: owner.bearer,
    });
    assert.equal(del.status, 204);
    assert.equal((await h.call("GET", `/v1/apps/${app.name}`, { bearer: dave.bearer })).status, 404);
    assert.ok((await eventsOfType(h, "delete_collaborator")).some((e) => e.app_id === app.id));
    const gone = await h.call("DELETE", `/v1/apps/${app.name}/collaborators/${daveId}`, {
      bearer: owner.bearer,
    });
    assert.deepEqual([gone.status, gone.json], [404, { resource: "collaborator", error: "not found" }]);
  });

  it("another tenant's app or collaborator ids are 404s", async () => {
    const app = await makeApp(h, owner, "private-app");
    const bobId = await addCollaborator(h, owner, app.name, bob);
    const mine = await makeApp(h, mallory, "mallory-app");
    const before = await rowCounts(h);
    const probes: Array<[string, string, unknown]> = [
      ["GET", `/v1/apps/${app.id}/collaborators`, undefined],
      ["POST", `/v1/apps/${app.id}/collaborators`, { collaborator: { email: "m2@example.test" } }],
      ["PATCH", `/v1/apps/${app.id}/collaborators/${bobId}`, { collaborator: { is_limited: true } }],
      ["DELETE", `/v1/apps/${app.id}/collaborators/${bobId}`, undefined],
    ];
    for (const [method, path, body] of probes) {
      const res = await h.call(method, path, { bearer: mallory.bearer, body });
      assert.deepEqual(
        [res.status, res.json],
        [404, { resource: "app", error: "not found" }],
        `${method} ${path}`,
      );
    }
    // Through an app of their own, someone else's collaborator id does not resolve either.
    const via = await h.call("DELETE", `/v1/apps/${mine.name}/collaborators/${bobId}`, {
      bearer: mallory.bearer,
    });
    assert.deepEqual([via.status, via.json], [404, { resource: "collaborator", error: "not found" }]);
    assert.deepEqual(await rowCounts(h), before);
  });

  it("Dedicated databases have their own collaborators, with the Collaborator role only", async () => {
    const db = await makeDedicated(h, owner, "owner-dwh");
    const before = await rowCounts(h);
    const limited = await h.call("POST", `/v1/apps/${db.name}/collaborators`, {
      bearer: owner.bearer,
      body: { collaborator: { email: bob.user.email, is_limited: true } },
    });
    assert.equal(limited.status, 422);
    assert.match(limited.json.errors.is_limited[0], /only the Collaborator role/);
    assert.deepEqual(await rowCounts(h), before);

    const bobId = await addCollaborator(h, owner, db.name, bob);
    const { rows } = await h.deps.db.query("SELECT app_id, database_id FROM collaborators WHERE id = $1", [
      bobId,
    ]);
    assert.deepEqual(rows[0], { app_id: null, database_id: db.id });
    const list = await h.call("GET", `/v1/apps/${db.id}/collaborators`, { bearer: bob.bearer });
    assert.equal(list.json.collaborators[0].app_id, db.id);
    const demote = await h.call("PATCH", `/v1/apps/${db.id}/collaborators/${bobId}`, {
      bearer: owner.bearer,
      body: { collaborator: { is_limited: true } },
    });
    assert.equal(demote.status, 422);
    assert.ok(demote.json.errors.is_limited);
    // Collaborators of an app do not reach a Dedicated database, and vice versa.
    assert.equal((await h.call("GET", `/v1/apps/${db.id}`, { bearer: carol.bearer })).status, 404);
    assert.equal((await h.call("GET", `/v1/apps/${db.id}`, { bearer: bob.bearer })).status, 200);
    assert.ok((await eventsOfType(h, "new_collaborator")).some((e) => e.database_id === db.id));
  });

  it("lists the collaborators of every app the user owns", async () => {
    const res = await h.call("GET", "/v1/collaborators", { bearer: owner.bearer });
    assert.equal(res.status, 200);
    assert.ok(res.json.collaborators.length > 0);
    for (const k of res.json.collaborators) assert.equal(typeof k.app_name, "string");
    const none = await h.call("GET", "/v1/collaborators", { bearer: carol.bearer });
    assert.deepEqual(none.json.collaborators, []);
  });
});
