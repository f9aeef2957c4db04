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

describe("variables API", () => {
  let h: Harness;
  let owner: Session;
  let bob: Session;
  let lim: Session;
  let eve: Session;
  let app: { id: string; name: string };
  before(async () => {
    h = await startHarness();
    owner = await h.user("owner");
    bob = await h.user("bob");
    lim = await h.user("lim");
    eve = await h.user("eve");
    app = await makeApp(h, owner, "vars-app");
    await addCollaborator(h, owner, app.name, bob);
    await addCollaborator(h, owner, app.name, lim, true);
  });
  after(async () => h.close());

  it("creates, lists, changes and deletes a user's variable, recording events without values", async () => {
    const empty = await h.call("GET", `/v1/apps/${app.name}/variables`, { bearer: owner.bearer });
    assert.deepEqual([empty.status, empty.json], [200, { variables: [] }]);
    const made = await h.call("POST", `/v1/apps/${app.name}/variables`, {
      bearer: bob.bearer,
      body: { variable: { name: "API_KEY", value: "s3cret" } },
    });
    assert.equal(made.status, 201);
    const v = made.json.variable;
    assert.deepEqual(Object.keys(v).sort(), ["id", "name", "value"]);
    assert.deepEqual([v.name, v.value], ["API_KEY", "s3cret"]);
    const list = await h.call("GET", `/v1/apps/${app.id}/variables`, { bearer: owner.bearer });
    assert.deepEqual(list.json.variables, [v]);
    const dup = await h.call("POST", `/v1/apps/${app.name}/variables`, {
      bearer: owner.bearer,
      body: { variable: { name: "API_KEY", value: "other" } },
    });
    assert.equal(dup.status, 422);
    assert.ok(dup.json.errors.name);

    const changed = await h.call("PATCH", `/v1/apps/${app.name}/variables/${v.id}`, {
      bearer: owner.bearer,
      body: { variable: { value: "" } },
    });
    assert.equal(changed.status, 200);
    assert.equal(changed.json.variable.value, "");
    const del = await h.call("DELETE", `/v1/apps/${app.name}/variables/${v.id}`, { bearer: owner.bearer });
    assert.equal(del.status, 204);
    const { rows } = await h.deps.db.query("SELECT 1 FROM variables WHERE id = $1", [v.id]);
    assert.equal(rows.length, 0);
    for (const type of ["new_variable", "edit_variable", "delete_variable"]) {
      const ev = (await eventsOfType(h, type)).find((e) => e.app_id === app.id);
      assert.deepEqual(ev?.type_data, { name: "API_KEY" }, type);
    }
  });

  it("variables a database wrote are listed but read-only", async () => {
    const addon = await makeAddon(h, owner, app);
    const { rows } = await h.deps.db.query(
      `INSERT INTO variables (id, app_id, database_id, name, value)
       VALUES ('var-fromaddon', $1, $2, 'SCALINGO_POSTGRESQL_URL', 'postgres://u:p@h/db') RETURNING id`,
      [app.id, addon],
    );
    const id = rows[0].id as string;
    const list = await h.call("GET", `/v1/apps/${app.name}/variables`, { bearer: owner.bearer });
    assert.ok(list.json.variables.some((v: { name: string }) => v.name === "SCALINGO_POSTGRESQL_URL"));
    const before = await rowCounts(h);
    const attempts = [
      h.call("PATCH", `/v1/apps/${app.name}/variables/${id}`, {
        bearer: owner.bearer,
        body: { variable: { value: "x" } },
      }),
      h.call("DELETE", `/v1/apps/${app.name}/variables/${id}`, { bearer: owner.bearer }),
      h.call("POST", `/v1/apps/${app.name}/variables`, {
        bearer: owner.bearer,
        body: { variable: { name: "SCALINGO_POSTGRESQL_URL", value: "x" } },
      }),
    ];
    for (const res of await Promise.all(attempts)) {
      assert.equal(res.status, 422);
      assert.match(JSON.stringify(res.json.errors), /managed by its database add-on and is read-only/);
    }
    assert.deepEqual(await rowCounts(h), before);
    const still = await h.deps.db.query("SELECT value FROM variables WHERE id = $1", [id]);
    assert.equal(still.rows[0].value, "postgres://u:p@h/db");
  });

  it("a Dedicated database scope lists its own variables and takes none from users", async () => {
    const db = await makeDedicated(h, owner, "vars-dwh");
    await h.deps.db.query(
      `INSERT INTO variables (id, database_id, name, value) VALUES ('var-dedicated', $1, 'DATABASE_URL', 'postgres://x')`,
      [db.id],
    );
    const list = await h.call("GET", `/v1/apps/${db.name}/variables`, { bearer: owner.bearer });
    assert.deepEqual(list.json.variables, [
      { id: "var-dedicated", name: "DATABASE_URL", value: "postgres://x" },
    ]);
    const before = await rowCounts(h);
    const res = await h.call("POST", `/v1/apps/${db.name}/variables`, {
      bearer: owner.bearer,
      body: { variable: { name: "MINE", value: "1" } },
    });
    assert.equal(res.status, 422);
    assert.ok(res.json.errors.variable);
    assert.deepEqual(await rowCounts(h), before);
  });

  it("limited collaborators get 403, other tenants 404", async () => {
    const limited = await h.call("GET", `/v1/apps/${app.name}/variables`, { bearer: lim.bearer });
    assert.equal(limited.status, 403);
    assert.equal(limited.json.code, "insufficient_role");
    const post = await h.call("POST", `/v1/apps/${app.name}/variables`, {
      bearer: lim.bearer,
      body: { variable: { name: "X", value: "1" } },
    });
    assert.equal(post.status, 403);
    const foreign = await h.call("GET", `/v1/apps/${app.id}/variables`, { bearer: eve.bearer });
    assert.deepEqual([foreign.status, foreign.json], [404, { resource: "app", error: "not found" }]);
  });

  it("bad input writes nothing", async () => {
    const before = await rowCounts(h);
    const cases: Array<[{ body?: unknown; raw?: string }, number, string | null]> = [
      [{ raw: '{"variable": ' }, 400, null],
      [{ body: { variable: { name: "1ABC", value: "x" } } }, 422, "name"],
      [{ body: { variable: { name: "X'; DROP TABLE variables;--", value: "x" } } }, 422, "name"],
      [{ body: { variable: { name: "$(rm -rf /)", value: "x" } } }, 422, "name"],
      [{ body: { variable: { name: 42, value: "x" } } }, 422, "name"],
      [{ body: { variable: { name: "OK_NAME", value: 42 } } }, 422, "value"],
      [{ body: { variable: { name: "OK_NAME" } } }, 422, "value"],
      [{ raw: JSON.stringify({ variable: { name: "BIG", value: "x".repeat(65 * 1024) } }) }, 413, null],
    ];
    for (const [opts, status, field] of cases) {
      const res = await h.call("POST", `/v1/apps/${app.name}/variables`, { bearer: owner.bearer, ...opts });
      assert.equal(res.status, status, JSON.stringify(opts).slice(0, 80));
      if (field) assert.ok(res.json.errors[field], JSON.stringify(res.json));
    }
    assert.deepEqual(await rowCounts(h), before);
  });
});
