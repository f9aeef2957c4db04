// Firewall rules through the API on a real store: create and delete only, validated field by
// field, at most 30 per database even when requests race, each change a new generation, and
// managed ranges listed. Shared databases have none; strangers see nothing.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { startHarness, type Harness, type Session } from "../support/api.ts";
import { makeApp } from "../support/scopes.ts";

describe("firewall rules: /api/databases/:id/firewall_rules", () => {
  let h: Harness;
  let alice: Session;
  let mallory: Session;
  let db = "";
  let busy = "";
  let shared = "";

  const rules = (id: string, s: Session = alice) =>
    h.call("GET", `/api/databases/${id}/firewall_rules`, { bearer: s.bearer });
  const add = (id: string, body: unknown, s: Session = alice) =>
    h.call("POST", `/api/databases/${id}/firewall_rules`, { bearer: s.bearer, body });
  const generationOf = async (id: string) =>
    (await h.deps.db.query<{ generation: number }>("SELECT generation FROM databases WHERE id = $1", [id]))
      .rows[0]!.generation;
  const create = async (name: string) => {
    const res = await h.call("POST", "/v1/databases", {
      bearer: alice.bearer,
      body: { database: { name, technology: "postgresql-ng", plan: "postgresql-dr-starter-4096" } },
    });
    assert.equal(res.status, 201);
    return res.json.database.id as string;
  };

  before(async () => {
    h = await startHarness({ CELLAR_RATE_LIMIT_PER_MINUTE: "100000" });
    alice = await h.user("alice");
    mallory = await h.user("mallory");
    db = await create("walled-db");
    busy = await create("busy-db");
    const app = await makeApp(h, alice, "fw-shop");
    const addon = await h.call("POST", `/v1/apps/${app.name}/addons`, {
      bearer: alice.bearer,
      body: { addon: { addon_provider_id: "postgresql", plan_id: "postgresql-starter-512" } },
    });
    shared = addon.json.addon.id;
  });
  after(async () => h.close());

  it("starts empty: deny by default", async () => {
    assert.deepEqual((await rules(db)).json, { rules: [] });
  });

  it("lists the managed ranges of every region", async () => {
    const res = await h.call("GET", "/api/firewall/managed_ranges", { bearer: alice.bearer });
    assert.equal(res.status, 200);
    assert.deepEqual(
      res.json.ranges.map((r: any) => [r.id, r.name]),
      [
        ["mr-osc-fr1-egress", "Cellar osc-fr1 region"],
        ["mr-osc-secnum-fr1-egress", "Cellar osc-secnum-fr1 region"],
      ],
    );
    assert.equal((await h.call("GET", "/api/firewall/managed_ranges")).status, 401);
  });

  it("creates a custom range and a managed range, each a new generation", async () => {
    const before = await generationOf(db);
    const custom = await add(db, { type: "custom_range", cidr: "203.0.113.10/32", label: "office" });
    assert.equal(custom.status, 201, JSON.stringify(custom.json));
    const { id, created_at, ...rest } = custom.json.rule;
    assert.match(id, /^fw-[0-9a-f]{20}$/);
    assert.ok(!Number.isNaN(Date.parse(created_at)));
    assert.deepEqual(rest, {
      type: "custom_range",
      cidr: "203.0.113.10/32",
      label: "office",
      range_id: null,
      database_id: db,
    });
    // Some clients wrap the rule.
    const managed = await add(db, { rule: { type: "managed_range", range_id: "mr-osc-fr1-egress" } });
    assert.equal(managed.status, 201, JSON.stringify(managed.json));
    assert.deepEqual([managed.json.rule.cidr, managed.json.rule.label], [null, null]);
    assert.equal(await generationOf(db), before + 2);
    assert.deepEqual(
      (await rules(db)).json.rules.map((r: any) => r.type),
      ["custom_range", "managed_range"],
    );
  });

  it("says what is wrong with a rule, and that a range is already allowed", async () => {
    const before = await generationOf(db);
    const cases: Array<[unknown, string, RegExp]> = [
      [
        { type: "custom_range", cidr: "203.0.113.10/24" },
        "cidr",
        /host bits set: give the network address, 203\.0\.113\.0\/24/,
      ],
      [{ type: "custom_range", cidr: "example.com" }, "cidr", /not an IPv4 CIDR/],
      [{ type: "custom_range" }, "cidr", /is required/],
      [{ type: "managed_range", range_id: "mr-osc-fr1-egress", label: "x" }, "label", /not allowed/],
      [{ type: "managed_range", range_id: "nope" }, "range_id", /not a managed range/],
      [{ type: "allow_all" }, "type", /custom_range or managed_range/],
      [{ type: "custom_range", cidr: "203.0.113.10/32" }, "cidr", /already allowed/],
      [{ type: "managed_range", range_id: "mr-osc-fr1-egress" }, "range_id", /already allowed/],
    ];
    for (const [body, field, want] of cases) {
      const res = await add(db, body);
      assert.equal(res.status, 422, JSON.stringify(body));
      assert.match(res.json.errors[field]?.[0] ?? JSON.stringify(res.json), want);
    }
    assert.equal(await generationOf(db), before, "refused rules change nothing");
  });

  it("holds at most 30 rules, even when 35 requests race", async () => {
    const results = await Promise.all(
      Array.from({ length: 35 }, (_, i) => add(busy, { type: "custom_range", cidr: `10.1.${i}.0/24` })),
    );
    const created = results.filter((r) => r.status === 201);
    const refused = results.filter((r) => r.status === 422);
    assert.equal(created.length, 30);
    assert.equal(refused.length, 5);
    assert.match(refused[0]!.json.errors.firewall_rules[0], /at most 30 rules: delete one first/);
    assert.equal((await rules(busy)).json.rules.length, 30);
  });

  it("deletes a rule (204), and answers 404 for one it does not have", async () => {
    const [first] = (await rules(db)).json.rules;
    const before = await generationOf(db);
    const res = await h.call("DELETE", `/api/databases/${db}/firewall_rules/${first.id}`, {
      bearer: alice.bearer,
    });
    assert.equal(res.status, 204);
    assert.equal(await generationOf(db), before + 1);
    const again = await h.call("DELETE", `/api/databases/${db}/firewall_rules/${first.id}`, {
      bearer: alice.bearer,
    });
    assert.equal(again.status, 404);
    // Another database's rule is not this database's.
    const [theirs] = (await rules(busy)).json.rules;
    const cross = await h.call("DELETE", `/api/databases/${db}/firewall_rules/${theirs.id}`, {
      bearer: alice.bearer,
    });
    assert.equal(cross.status, 404);
  });

  it("has no update: rules are created and deleted only", async () => {
    const [rule] = (await rules(db)).json.rules;
    const res = await h.call("PATCH", `/api/databases/${db}/firewall_rules/${rule.id}`, {
      bearer: alice.bearer,
      body: { cidr: "0.0.0.0/0" },
    });
    assert.equal(res.status, 404);
  });

  it("is for Dedicated databases: a Shared one is told about publicly-available", async () => {
    const res = await add(shared, { type: "custom_range", cidr: "203.0.113.0/24" });
    assert.equal(res.status, 422);
    assert.match(res.json.errors.database[0], /publicly-available/);
    assert.equal((await rules(shared)).status, 422);
  });

  it("shows strangers nothing", async () => {
    assert.equal((await rules(db, mallory)).status, 404);
    assert.equal((await add(db, { type: "custom_range", cidr: "0.0.0.0/0" }, mallory)).status, 404);
    assert.equal((await rules(db)).json.rules.length, 1);
  });
});
