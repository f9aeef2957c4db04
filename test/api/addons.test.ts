import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { startHarness, type Harness, type Session } from "../support/api.ts";
import { addCollaborator, eventsOfType, makeApp, makeDedicated, rowCounts } from "../support/scopes.ts";

const PG = { addon_provider_id: "postgresql", plan_id: "postgresql-starter-512" };

function jwtPayload(token: string): Record<string, any> {
  return JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString());
}

/** Counts of every table an add-on request could write (the queue included). */
async function written(h: Harness): Promise<Record<string, number>> {
  const { rows } = await h.deps.db.query<{ n: number }>("SELECT count(*)::int AS n FROM reconcile_queue");
  return { ...(await rowCounts(h)), reconcile_queue: rows[0]!.n };
}

describe("add-ons API (Shared databases)", () => {
  let h: Harness;
  let alice: Session;
  let bob: Session;
  let lim: Session;
  let mallory: Session;
  let shop: { id: string; name: string };
  let kicks = 0;

  before(async () => {
    h = await startHarness({ CELLAR_RATE_LIMIT_PER_MINUTE: "10000" });
    h.deps.kickReconciler = () => void kicks++;
    alice = await h.user("alice");
    bob = await h.user("bob");
    lim = await h.user("lim");
    mallory = await h.user("mallory");
    shop = await makeApp(h, alice, "shop-prod");
    await addCollaborator(h, alice, shop.name, bob);
    await addCollaborator(h, alice, shop.name, lim, true);
  });
  after(async () => h.close());

  const provision = (s: Session, body: unknown = { addon: PG }, app = shop.name) =>
    h.call("POST", `/v1/apps/${app}/addons`, { bearer: s.bearer, body });

  it("provisions: spec, pending operation, event and queued reconcile in one go", async () => {
    const before = kicks;
    const res = await provision(alice);
    assert.equal(res.status, 201, JSON.stringify(res.json));
    const addon = res.json.addon;
    assert.match(addon.id, /^ad-/);
    assert.equal(addon.app_id, shop.id);
    assert.match(addon.resource_id, /^shop_prod_\d{4}$/);
    assert.equal(addon.status, "provisioning");
    assert.equal(addon.plan.id, "postgresql-starter-512");
    assert.equal(addon.plan.display_name, "Starter 512M");
    assert.deepEqual(addon.addon_provider, { id: "postgresql", name: "PostgreSQL", logo_url: "" });
    assert.ok(!Number.isNaN(Date.parse(addon.provisioned_at)));
    assert.equal(addon.deprovisioned_at, null);
    assert.equal(res.json.message, "Database is being provisioned");
    assert.deepEqual(res.json.variables, ["SCALINGO_POSTGRESQL_URL", "DATABASE_URL"]);
    assert.equal(kicks, before + 1);

    const location = res.headers.get("location") ?? "";
    assert.ok(
      location.startsWith(`${h.deps.config.publicUrl}/regions/osc-fr1/v1/apps/shop-prod/operations/op-`),
    );
    const op = await h.call("GET", location.slice(h.deps.config.publicUrl.length), { bearer: bob.bearer });
    assert.equal(op.status, 200);
    assert.equal(op.json.operation.type, "provision");
    assert.equal(op.json.operation.status, "pending");
    assert.equal(op.json.operation.app_id, shop.id);
    assert.equal(op.json.operation.finished_at, null);

    const { rows } = await h.deps.db.query(
      "SELECT model, owner_id, generation, observed_generation, phase FROM databases WHERE id = $1",
      [addon.id],
    );
    assert.deepEqual(rows[0], {
      model: "shared",
      owner_id: alice.user.id,
      generation: 1,
      observed_generation: 0,
      phase: "provisioning",
    });
    const ev = (await eventsOfType(h, "new_addon")).find((e) => e.database_id === addon.id);
    assert.equal(ev?.user_id, alice.user.id);
    assert.deepEqual(ev?.type_data, {
      addon_provider_name: "PostgreSQL",
      plan_name: "postgresql-starter-512",
      resource_id: addon.resource_id,
    });
    const queued = await h.deps.db.query("SELECT 1 FROM reconcile_queue WHERE database_id = $1", [addon.id]);
    assert.equal(queued.rowCount, 1);
  });

  it("lists and shows add-ons to every role, limited collaborators included", async () => {
    const list = await h.call("GET", `/v1/apps/${shop.name}/addons`, { bearer: lim.bearer });
    assert.equal(list.status, 200);
    assert.ok(list.json.addons.length >= 1);
    const id = list.json.addons[0].id as string;
    const show = await h.call("GET", `/v1/apps/${shop.id}/addons/${id}`, { bearer: lim.bearer });
    assert.equal(show.status, 200);
    assert.equal(show.json.addon.id, id);
  });

  it("stays provisioning after reconcile passes: nothing can run it yet, and it says why", async () => {
    const res = await provision(bob);
    assert.equal(res.status, 201, "a (non-limited) collaborator may provision");
    await h.loop.drain();
    const { rows } = await h.deps.db.query("SELECT phase, phase_reason FROM databases WHERE id = $1", [
      res.json.addon.id,
    ]);
    assert.deepEqual(rows[0], {
      phase: "provisioning",
      phase_reason: "waiting for a host: no shared host is registered in region osc-fr1",
    });
    const show = await h.call("GET", `/v1/apps/${shop.name}/addons/${res.json.addon.id}`, {
      bearer: bob.bearer,
    });
    assert.equal(show.json.addon.status, "provisioning");
    const ops = await h.deps.db.query("SELECT status FROM operations WHERE database_id = $1", [
      res.json.addon.id,
    ]);
    assert.deepEqual(ops.rows, [{ status: "running" }]);
  });

  it("changes the plan up and down, with an operation, an event and the operation URL", async () => {
    const made = await provision(alice, { addon: { ...PG, plan_id: "postgresql-business-1024" } });
    const id = made.json.addon.id as string;
    const up = await h.call("PATCH", `/v1/apps/${shop.name}/addons/${id}`, {
      bearer: bob.bearer,
      body: { addon: { plan_id: "postgresql-business-2048" } },
    });
    assert.equal(up.status, 200, JSON.stringify(up.json));
    assert.equal(up.json.addon.plan.id, "postgresql-business-2048");
    assert.match(
      up.json.message,
      /plan change to postgresql-business-2048 is pending \(no downtime expected\)/,
    );
    assert.deepEqual(up.json.variables, ["SCALINGO_POSTGRESQL_URL", "DATABASE_URL"]);
    assert.match(up.headers.get("location") ?? "", /\/operations\/op-/);
    const down = await h.call("PATCH", `/v1/apps/${shop.name}/addons/${id}`, {
      bearer: alice.bearer,
      body: { addon: { plan_id: "postgresql-starter-512" } },
    });
    assert.equal(down.status, 200, "Shared databases scale down too");
    assert.match(down.json.message, /expect a short downtime/);
    const { rows } = await h.deps.db.query("SELECT plan_id, generation FROM databases WHERE id = $1", [id]);
    assert.deepEqual(rows[0], { plan_id: "postgresql-starter-512", generation: 3 });
    const ops = await h.deps.db.query(
      "SELECT type, target_generation FROM operations WHERE database_id = $1 ORDER BY target_generation",
      [id],
    );
    assert.deepEqual(
      ops.rows.map((r) => [r.type, r.target_generation]),
      [
        ["provision", 1],
        ["change-plan", 2],
        ["change-plan", 3],
      ],
    );
    const ev = (await eventsOfType(h, "upgrade_addon")).filter((e) => e.database_id === id);
    assert.deepEqual(
      ev.map((e) => [e.type_data.old_plan_name, e.type_data.new_plan_name]),
      [
        ["postgresql-business-1024", "postgresql-business-2048"],
        ["postgresql-business-2048", "postgresql-starter-512"],
      ],
    );

    const counts = await written(h);
    const same = await h.call("PATCH", `/v1/apps/${shop.name}/addons/${id}`, {
      bearer: alice.bearer,
      body: { addon: { plan_id: "postgresql-starter-512" } },
    });
    assert.equal(same.status, 200);
    assert.match(same.json.message, /already on plan postgresql-starter-512: nothing to change/);
    assert.equal(same.headers.get("location"), null);
    assert.deepEqual(await written(h), counts, "the same plan writes nothing");
  });

  it("deletes: 204, gone from the API, then finalized by the reconciler", async () => {
    const made = await provision(alice);
    const id = made.json.addon.id as string;
    await h.deps.db.query(
      "INSERT INTO variables (id, app_id, database_id, name, value) VALUES ('var-t1', $1, $2, 'SCALINGO_POSTGRESQL_URL', 'x')",
      [shop.id, id],
    );
    const del = await h.call("DELETE", `/v1/apps/${shop.name}/addons/${id}`, { bearer: bob.bearer });
    assert.equal(del.status, 204);
    const show = await h.call("GET", `/v1/apps/${shop.name}/addons/${id}`, { bearer: alice.bearer });
    assert.deepEqual([show.status, show.json], [404, { resource: "addon", error: "not found" }]);
    const list = await h.call("GET", `/v1/apps/${shop.name}/addons`, { bearer: alice.bearer });
    assert.ok(!list.json.addons.some((a: { id: string }) => a.id === id));
    const again = await h.call("DELETE", `/v1/apps/${shop.name}/addons/${id}`, { bearer: alice.bearer });
    assert.equal(again.status, 404);

    await h.loop.drain();
    const { rows } = await h.deps.db.query(
      "SELECT phase, deleted_at IS NOT NULL AS gone, observed_generation, generation FROM databases WHERE id = $1",
      [id],
    );
    assert.deepEqual(rows[0], { phase: "deleted", gone: true, observed_generation: 2, generation: 2 });
    const vars = await h.deps.db.query("SELECT 1 FROM variables WHERE database_id = $1", [id]);
    assert.equal(vars.rowCount, 0, "its variables are removed");
    const ops = await h.deps.db.query(
      "SELECT type, status, error IS NOT NULL AS has_error, finished_at IS NOT NULL AS finished FROM operations WHERE database_id = $1 ORDER BY target_generation",
      [id],
    );
    assert.deepEqual(ops.rows, [
      { type: "provision", status: "error", has_error: true, finished: true },
      { type: "delete", status: "done", has_error: false, finished: true },
    ]);
    assert.equal((await eventsOfType(h, "delete_addon")).filter((e) => e.database_id === id).length, 1);
    const updated = (await eventsOfType(h, "addon_updated")).filter((e) => e.database_id === id);
    assert.deepEqual(updated[0]?.type_data.status, ["provisioning", "deleted"]);
    const queued = await h.deps.db.query("SELECT 1 FROM reconcile_queue WHERE database_id = $1", [id]);
    assert.equal(queued.rowCount, 0, "a finalized database leaves the queue");
  });

  it("mints a one-hour add-on token bound to the database and the caller's API token", async () => {
    const made = await provision(alice);
    const id = made.json.addon.id as string;
    const res = await h.call("POST", `/v1/apps/${shop.name}/addons/${id}/token`, { bearer: bob.bearer });
    assert.equal(res.status, 200);
    assert.equal(res.json.addon.id, id);
    const claims = jwtPayload(res.json.addon.token);
    const session = jwtPayload(bob.bearer);
    assert.equal(claims.db, id);
    assert.equal(claims.sub, bob.user.id);
    assert.equal(claims.tok, session.tok);
    assert.equal(claims.exp - claims.iat, 3600);
    const api = await h.call("GET", `/api/databases/${id}`, { bearer: res.json.addon.token });
    assert.equal(api.status, 200);
  });

  it("refuses limited collaborators with the rule, writing nothing", async () => {
    const counts = await written(h);
    const made = await provision(lim);
    assert.equal(made.status, 403);
    assert.equal(made.json.code, "insufficient_role");
    assert.match(made.json.error, /limited collaborators may not provision/);
    const existing = (await h.call("GET", `/v1/apps/${shop.name}/addons`, { bearer: lim.bearer })).json
      .addons[0].id as string;
    const path = `/v1/apps/${shop.name}/addons/${existing}`;
    const patch = await h.call("PATCH", path, {
      bearer: lim.bearer,
      body: { addon: { plan_id: "postgresql-starter-1024" } },
    });
    assert.equal(patch.status, 403);
    assert.equal((await h.call("DELETE", path, { bearer: lim.bearer })).status, 403);
    assert.equal((await h.call("POST", `${path}/token`, { bearer: lim.bearer })).status, 403);
    assert.deepEqual(await written(h), counts);
  });

  it("answers another tenant's app and add-on ids with 404, writing nothing", async () => {
    const own = await makeApp(h, mallory, "mallory-app");
    const victim = (await h.call("GET", `/v1/apps/${shop.name}/addons`, { bearer: alice.bearer })).json
      .addons[0].id as string;
    const counts = await written(h);
    const cases: Array<[string, string, unknown, string]> = [
      ["GET", `/v1/apps/${shop.name}/addons`, undefined, "app"],
      ["POST", `/v1/apps/${shop.name}/addons`, { addon: PG }, "app"],
      ["GET", `/v1/apps/${shop.id}/addons/${victim}`, undefined, "app"],
      ["GET", `/v1/apps/${own.name}/addons/${victim}`, undefined, "addon"],
      [
        "PATCH",
        `/v1/apps/${own.name}/addons/${victim}`,
        { addon: { plan_id: "postgresql-starter-1024" } },
        "addon",
      ],
      ["DELETE", `/v1/apps/${own.name}/addons/${victim}`, undefined, "addon"],
      ["POST", `/v1/apps/${own.name}/addons/${victim}/token`, undefined, "addon"],
      ["GET", `/api/databases/${victim}`, undefined, "database"],
    ];
    for (const [method, path, body, resource] of cases) {
      const res = await h.call(method, path, { bearer: mallory.bearer, body });
      assert.deepEqual([res.status, res.json], [404, { resource, error: "not found" }], `${method} ${path}`);
    }
    assert.deepEqual(await written(h), counts);
  });

  it("answers bad input clearly, naming the field, writing nothing", async () => {
    const counts = await written(h);
    const cases: Array<[unknown, number, string, RegExp]> = [
      [
        { addon: { ...PG, addon_provider_id: "mongodb" } },
        422,
        "addon_provider_id",
        /unknown provider mongodb/,
      ],
      [{ addon: { ...PG, plan_id: "postgresql-starter-3" } }, 422, "plan_id", /does not exist/],
      [
        { addon: { ...PG, plan_id: "postgresql-dr-enterprise-4096" } },
        422,
        "plan_id",
        /belongs to postgresql-ng/,
      ],
      [
        { addon: { addon_provider_id: "postgresql-ng", plan_id: "x" } },
        422,
        "addon_provider_id",
        /Dedicated/,
      ],
      [{ addon: { ...PG, plan_id: 512 } }, 422, "plan_id", /must be a string/],
      [{ addon: { plan_id: "postgresql-starter-512" } }, 422, "addon_provider_id", /is required/],
      [{ addon: "postgresql" }, 422, "addon", /JSON object/],
      [{ addon: { ...PG, options: { version: "9.6" } } }, 422, "options.version", /not supported/],
      [{ addon: { ...PG, plan_id: "x'; DROP TABLE databases; --" } }, 422, "plan_id", /does not exist/],
    ];
    for (const [body, status, field, message] of cases) {
      const res = await provision(alice, body);
      assert.equal(res.status, status, JSON.stringify(body));
      assert.match(res.json.errors[field]?.[0] ?? "", message, JSON.stringify(res.json));
    }
    const malformed = await h.call("POST", `/v1/apps/${shop.name}/addons`, {
      bearer: alice.bearer,
      raw: '{"addon": {',
    });
    assert.equal(malformed.status, 400);
    assert.match(malformed.json.error, /malformed JSON/);
    const id = (await h.call("GET", `/v1/apps/${shop.name}/addons`, { bearer: alice.bearer })).json.addons[0]
      .id as string;
    const badPatch = await h.call("PATCH", `/v1/apps/${shop.name}/addons/${id}`, {
      bearer: alice.bearer,
      body: { addon: { plan_id: ["postgresql-starter-1024"] } },
    });
    assert.equal(badPatch.status, 422);
    assert.match(badPatch.json.errors.plan_id[0], /must be a string/);
    const crossPatch = await h.call("PATCH", `/v1/apps/${shop.name}/addons/${id}`, {
      bearer: alice.bearer,
      body: { addon: { plan_id: "postgresql-dr-starter-4096" } },
    });
    assert.equal(crossPatch.status, 422);
    assert.deepEqual(await written(h), counts);
  });

  it("shows a Dedicated database's single add-on under its app scope, and refuses to add one", async () => {
    const db = await makeDedicated(h, alice, "orders-db");
    const list = await h.call("GET", `/v1/apps/${db.name}/addons`, { bearer: alice.bearer });
    assert.equal(list.status, 200);
    assert.equal(list.json.addons.length, 1);
    assert.equal(list.json.addons[0].id, db.id);
    assert.equal(list.json.addons[0].app_id, db.id);
    assert.equal(list.json.addons[0].addon_provider.id, "postgresql-ng");
    const counts = await written(h);
    const add = await provision(alice, { addon: PG }, db.name);
    assert.equal(add.status, 422);
    assert.match(add.json.errors.app[0], /Dedicated Resources database/);
    const del = await h.call("DELETE", `/v1/apps/${db.name}/addons/${db.id}`, { bearer: alice.bearer });
    assert.equal(del.status, 422);
    assert.match(del.json.errors.addon[0], /DELETE \/v1\/apps\/orders-db\?current_name=orders-db/);
    assert.deepEqual(await written(h), counts);
  });

  it("serves operations only under their own scope", async () => {
    const { rows } = await h.deps.db.query<{ id: string }>(
      "SELECT id FROM operations WHERE app_id = $1 LIMIT 1",
      [shop.id],
    );
    const opId = rows[0]!.id;
    const mine = await h.call("GET", `/v1/apps/${shop.name}/operations/${opId}`, { bearer: lim.bearer });
    assert.equal(mine.status, 200);
    assert.deepEqual(Object.keys(mine.json.operation).sort(), [
      "app_id",
      "created_at",
      "database_id",
      "error",
      "finished_at",
      "id",
      "progress",
      "status",
      "type",
    ]);
    const other = await makeApp(h, mallory, "mallory-two");
    const res = await h.call("GET", `/v1/apps/${other.name}/operations/${opId}`, { bearer: mallory.bearer });
    assert.deepEqual([res.status, res.json], [404, { resource: "operation", error: "not found" }]);
  });
});

describe("add-ons API with an operator catalog", () => {
  let h: Harness;
  let alice: Session;
  let dir: string;

  before(async () => {
    const fs = await import("node:fs/promises");
    const os = await import("node:os");
    const path = await import("node:path");
    const { REPO_ROOT } = await import("../../src/config.ts");
    const raw = JSON.parse(await fs.readFile(path.join(REPO_ROOT, "config", "catalog.json"), "utf8"));
    const starter = raw.plans.find((p: { id: string }) => p.id === "postgresql-starter-1024");
    raw.plans.push(
      {
        ...starter,
        id: "postgresql-enterprise-1024",
        name: "postgresql-enterprise-1024",
        service_class: "enterprise",
      },
      {
        ...starter,
        id: "postgresql-starter-fr1-only",
        name: "postgresql-starter-fr1-only",
        regions: ["osc-fr1"],
      },
      { ...starter, id: "postgresql-starter-retired", name: "postgresql-starter-retired", disabled: true },
    );
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-catalog-"));
    await fs.writeFile(path.join(dir, "catalog.json"), JSON.stringify(raw));
    h = await startHarness({ CELLAR_CATALOG: path.join(dir, "catalog.json") });
    alice = await h.user("alice");
  });
  after(async () => {
    await h?.close();
    const fs = await import("node:fs/promises");
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it("refuses Enterprise on Shared, a plan not offered in the region, and a disabled plan", async () => {
    const res = await h.call("POST", "/regions/osc-secnum-fr1/v1/apps", {
      bearer: alice.bearer,
      body: { app: { name: "secnum-app" } },
    });
    assert.equal(res.status, 201);
    const counts = await rowCounts(h);
    const cases: Array<[string, RegExp]> = [
      ["postgresql-enterprise-1024", /class enterprise is not offered on shared resources/],
      ["postgresql-starter-fr1-only", /not available in region osc-secnum-fr1/],
      ["postgresql-starter-retired", /disabled/],
    ];
    for (const [plan, message] of cases) {
      const add = await h.call("POST", "/regions/osc-secnum-fr1/v1/apps/secnum-app/addons", {
        bearer: alice.bearer,
        body: { addon: { addon_provider_id: "postgresql", plan_id: plan } },
      });
      assert.equal(add.status, 422, plan);
      assert.match(add.json.errors.plan_id[0], message);
    }
    assert.deepEqual(await rowCounts(h), counts);
  });
});
