// The public catalog (reference §4.2) and region discovery (§4.1), in the reference's shapes.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { REPO_ROOT } from "../../src/config.ts";
import { startHarness, type Harness } from "../support/api.ts";

const PUBLIC_URL = "https://cellar.example.test";

/** Plan fields of the reference (§4.2), then what Cellar adds. */
const REFERENCE_PLAN_FIELDS = [
  "id",
  "name",
  "display_name",
  "description",
  "position",
  "on_demand",
  "disabled",
  "disabled_alternative_plan_id",
  "sku",
  "hds_available",
  "to_be_discontinued",
  "trial_available",
  "price",
  "pricings",
];
const CELLAR_PLAN_FIELDS = [
  "service_class",
  "ram_mb",
  "storage_gb",
  "max_connections",
  "vcpu",
  "nodes",
  "gateways",
  "regions",
];
const REFERENCE_PROVIDER_FIELDS = [
  "id",
  "name",
  "logo_url",
  "short_description",
  "description",
  "category",
  "provider_name",
  "provider_url",
  "hds_available",
  "plans",
];

const sorted = (keys: Iterable<string>) => [...keys].sort();

function assertPlanShape(p: Record<string, any>): void {
  assert.deepEqual(sorted(Object.keys(p)), sorted([...REFERENCE_PLAN_FIELDS, ...CELLAR_PLAN_FIELDS]), p.id);
  for (const f of ["id", "name", "display_name", "description", "sku"])
    assert.equal(typeof p[f], "string", f);
  for (const f of ["on_demand", "disabled", "hds_available", "to_be_discontinued", "trial_available"]) {
    assert.equal(typeof p[f], "boolean", f);
  }
  for (const f of ["position", "price", "ram_mb", "storage_gb", "max_connections", "nodes"]) {
    assert.equal(typeof p[f], "number", f);
  }
  assert.ok(p.disabled_alternative_plan_id === null || typeof p.disabled_alternative_plan_id === "string");
  assert.deepEqual(sorted(Object.keys(p.pricings)), ["default"]);
  assert.deepEqual(sorted(Object.keys(p.pricings.default)), ["currency", "period", "price"]);
  assert.match(p.pricings.default.price, /^\d+\.\d+$/, "a decimal string, as the reference");
  assert.equal(p.pricings.default.currency, "EUR");
  assert.equal(p.pricings.default.period, "minute");
}

describe("catalog API with the shipped catalog", () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ CELLAR_PUBLIC_URL: PUBLIC_URL });
  });
  after(async () => h.close());

  it("lists add-on providers without authentication, with their plans", async () => {
    const res = await h.call("GET", "/v1/addon_providers");
    assert.equal(res.status, 200);
    assert.deepEqual(Object.keys(res.json), ["addon_providers"]);
    const providers = res.json.addon_providers as Array<Record<string, any>>;
    assert.deepEqual(
      providers.map((p) => [p.id, p.architecture_model]),
      [
        ["postgresql", "shared"],
        ["postgresql-ng", "dedicated"],
      ],
    );
    for (const p of providers) {
      assert.deepEqual(sorted(Object.keys(p)), sorted([...REFERENCE_PROVIDER_FIELDS, "architecture_model"]));
      assert.deepEqual(sorted(Object.keys(p.category)), ["description", "id", "name", "position"]);
      assert.ok(p.plans.length > 0);
      for (const plan of p.plans) assertPlanShape(plan);
    }
  });

  it("lists a provider's plans without authentication, in the reference's fields", async () => {
    const res = await h.call("GET", "/v1/addon_providers/postgresql/plans");
    assert.equal(res.status, 200);
    assert.deepEqual(Object.keys(res.json), ["plans"]);
    const plans = res.json.plans as Array<Record<string, any>>;
    for (const p of plans) assertPlanShape(p);
    const positions = plans.map((p) => p.position as number);
    assert.deepEqual(
      positions,
      [...positions].sort((a, b) => a - b),
      "ordered by position",
    );
    assert.ok(
      plans.every((p) => p.service_class !== "enterprise"),
      "no Enterprise on Shared",
    );
    const starter = plans.find((p) => p.id === "postgresql-starter-512")!;
    assert.deepEqual(
      {
        name: starter.name,
        display_name: starter.display_name,
        price: starter.price,
        pricings: starter.pricings,
        ram_mb: starter.ram_mb,
        storage_gb: starter.storage_gb,
        max_connections: starter.max_connections,
        nodes: starter.nodes,
        hds_available: starter.hds_available,
      },
      {
        name: "postgresql-starter-512",
        display_name: "Starter 512M",
        price: 7.2,
        pricings: { default: { price: "0.0001666667", currency: "EUR", period: "minute" } },
        ram_mb: 512,
        storage_gb: 10,
        max_connections: 30,
        nodes: 1,
        hds_available: false,
      },
    );
  });

  it("serves the Dedicated plans, and answers the legacy alias", async () => {
    const dr = await h.call("GET", "/v1/addon_providers/postgresql-ng/plans");
    assert.equal(dr.status, 200);
    const enterprise = (dr.json.plans as Array<Record<string, any>>).find(
      (p) => p.id === "postgresql-dr-enterprise-16384",
    )!;
    assert.deepEqual(
      [enterprise.nodes, enterprise.max_connections, enterprise.hds_available],
      [3, 1600, true],
    );
    const alias = await h.call("GET", "/v1/addon_providers/scalingo-postgresql/plans");
    assert.equal(alias.status, 200);
    const direct = await h.call("GET", "/v1/addon_providers/postgresql/plans");
    assert.deepEqual(alias.json, direct.json);
  });

  it("answers 404 {resource, error} for an unknown provider", async () => {
    for (const id of ["mysql", "postgresql-starter-512", "%27%3B%20DROP%20TABLE%20users"]) {
      const res = await h.call("GET", `/v1/addon_providers/${id}/plans`);
      assert.equal(res.status, 404, id);
      assert.deepEqual(res.json, { resource: "addon_provider", error: "not found" });
    }
  });

  it("serves the same catalog under region-prefixed URLs; an unknown region is a 404", async () => {
    const root = await h.call("GET", "/v1/addon_providers/postgresql/plans");
    for (const region of ["osc-fr1", "osc-secnum-fr1"]) {
      const res = await h.call("GET", `/regions/${region}/v1/addon_providers/postgresql/plans`);
      assert.equal(res.status, 200, region);
      assert.deepEqual(res.json, root.json);
      assert.equal((await h.call("GET", `/regions/${region}/v1/addon_providers`)).status, 200);
    }
    for (const url of [
      "/regions/us-east-1/v1/addon_providers",
      "/regions/OSC-FR1/v1/addon_providers/postgresql/plans",
    ]) {
      const res = await h.call("GET", url);
      assert.equal(res.status, 404, url);
      assert.deepEqual(res.json, { resource: "region", error: "not found" });
    }
  });

  it("requires authentication for region discovery", async () => {
    for (const url of ["/v1/regions", "/regions/osc-secnum-fr1/v1/regions"]) {
      const res = await h.call("GET", url);
      assert.equal(res.status, 401, url);
      assert.equal(typeof res.json.error, "string");
    }
  });

  it("points region discovery at this Cellar's public URL, and the URLs work", async () => {
    const s = await h.user("alice");
    const res = await h.call("GET", "/v1/regions", { bearer: s.bearer });
    assert.equal(res.status, 200);
    const regions = res.json.regions as Array<Record<string, any>>;
    assert.deepEqual(
      regions.map((r) => [r.name, r.default]),
      [
        ["osc-fr1", true],
        ["osc-secnum-fr1", false],
      ],
    );
    for (const r of regions) {
      for (const f of ["name", "display_name", "api", "dashboard", "database_api", "ssh", "default"]) {
        assert.ok(f in r, `${r.name}.${f}`);
      }
      assert.equal(r.api, `${PUBLIC_URL}/regions/${r.name}`);
      assert.equal(r.database_api, `${PUBLIC_URL}/regions/${r.name}`);
      assert.ok(String(r.dashboard).startsWith(PUBLIC_URL));
      assert.deepEqual(r.availability_zones, [`${r.name}-a`, `${r.name}-b`, `${r.name}-c`]);
      // A client appends /v1/... to `api`, as with the reference.
      const follow = await h.call("GET", `${String(r.api).slice(PUBLIC_URL.length)}/v1/addon_providers`);
      assert.equal(follow.status, 200, r.api);
    }
  });
});

describe("catalog API with an operator-edited catalog", () => {
  let h: Harness;
  let dir: string;
  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-catalog-"));
    const raw = JSON.parse(await fs.readFile(path.join(REPO_ROOT, "config", "catalog.json"), "utf8"));
    for (const p of raw.plans) {
      if (p.id === "postgresql-starter-512") {
        p.disabled = true;
        p.disabled_alternative_plan_id = "postgresql-starter-1024";
      }
      if (p.id === "postgresql-business-131072") p.regions = ["osc-fr1"];
    }
    raw.providers.push({
      ...raw.providers[0],
      id: "redis",
      name: "Redis",
      engine: "redis",
      aliases: [],
      category: { id: "caching", name: "Caching", description: "", position: 2 },
    });
    raw.plans.push({
      ...raw.plans[1],
      id: "redis-starter-256",
      name: "redis-starter-256",
      provider: "redis",
    });
    const file = path.join(dir, "catalog.json");
    await fs.writeFile(file, JSON.stringify(raw));
    h = await startHarness({ CELLAR_CATALOG: file });
  });
  after(async () => {
    await h?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  const ids = (plans: Array<{ id: string }>) => plans.map((p) => p.id);

  it("hides a disabled plan unless show_all=true, naming its alternative", async () => {
    const shown = await h.call("GET", "/v1/addon_providers/postgresql/plans");
    assert.ok(!ids(shown.json.plans).includes("postgresql-starter-512"));
    const all = await h.call("GET", "/v1/addon_providers/postgresql/plans?show_all=true");
    const disabled = (all.json.plans as Array<Record<string, any>>).find(
      (p) => p.id === "postgresql-starter-512",
    )!;
    assert.equal(disabled.disabled, true);
    assert.equal(disabled.disabled_alternative_plan_id, "postgresql-starter-1024");
    const providers = await h.call("GET", "/v1/addon_providers");
    const pg = (providers.json.addon_providers as Array<{ id: string; plans: Array<{ id: string }> }>).find(
      (p) => p.id === "postgresql",
    )!;
    assert.ok(!ids(pg.plans).includes("postgresql-starter-512"));
  });

  it("lists in each region only the plans offered there", async () => {
    const plan = "postgresql-business-131072";
    const fr1 = await h.call("GET", "/regions/osc-fr1/v1/addon_providers/postgresql/plans");
    const snc = await h.call("GET", "/regions/osc-secnum-fr1/v1/addon_providers/postgresql/plans");
    assert.ok(ids(fr1.json.plans).includes(plan));
    assert.ok(!ids(snc.json.plans).includes(plan));
    const providers = await h.call("GET", "/regions/osc-secnum-fr1/v1/addon_providers");
    const pg = (providers.json.addon_providers as Array<{ id: string; plans: Array<{ id: string }> }>).find(
      (p) => p.id === "postgresql",
    )!;
    assert.ok(!ids(pg.plans).includes(plan), "the provider list agrees with the plan list");
  });

  it("filters providers by category_id", async () => {
    const caching = await h.call("GET", "/v1/addon_providers?category_id=caching");
    assert.deepEqual(ids(caching.json.addon_providers), ["redis"]);
    const databases = await h.call("GET", "/v1/addon_providers?category_id=databases");
    assert.deepEqual(ids(databases.json.addon_providers), ["postgresql", "postgresql-ng"]);
    const none = await h.call("GET", "/v1/addon_providers?category_id=nothing");
    assert.deepEqual(none.json, { addon_providers: [] });
  });
});
