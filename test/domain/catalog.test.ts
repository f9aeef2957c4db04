// The shipped catalog obeys the architecture models; a broken catalog says where it is broken.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { REPO_ROOT, loadConfig } from "../../src/config.ts";
import { CatalogError, findPlan, findProvider, parseCatalog, plansOf } from "../../src/domain/catalog.ts";
import { CLASSES_BY_MODEL } from "../../src/domain/rules.ts";

const raw = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, "config", "catalog.json"), "utf8")) as {
  providers: Array<Record<string, unknown>>;
  plans: Array<Record<string, unknown>>;
};
const catalog = parseCatalog(raw);
const modelOf = (providerId: string) => findProvider(catalog, providerId)!.architectureModel;
const NODES = { starter: 1, business: 2, enterprise: 3 } as const;

describe("shipped catalog (config/catalog.json)", () => {
  it("parses, and is the default catalog of the configuration", () => {
    assert.equal(loadConfig({}).catalogPath, path.join(REPO_ROOT, "config", "catalog.json"));
    assert.equal(catalog.currency, "EUR");
    assert.equal(catalog.plans.length, raw.plans.length);
  });

  it("has the Shared and the Dedicated PostgreSQL providers, with the legacy alias", () => {
    assert.equal(findProvider(catalog, "postgresql")?.architectureModel, "shared");
    assert.equal(findProvider(catalog, "scalingo-postgresql")?.id, "postgresql");
    const ng = findProvider(catalog, "postgresql-ng");
    assert.equal(ng?.architectureModel, "dedicated");
    assert.equal(ng?.engine, "postgresql");
    for (const p of catalog.providers) assert.ok(plansOf(catalog, p.id).length > 0, `${p.id} has plans`);
  });

  it("offers every class of each model and nothing else (no Enterprise on Shared)", () => {
    for (const p of catalog.providers) {
      const classes = new Set(plansOf(catalog, p.id).map((pl) => pl.serviceClass));
      assert.deepEqual([...classes].sort(), [...CLASSES_BY_MODEL[p.architectureModel]].sort(), p.id);
    }
  });

  it("has unique plan ids and names of the form postgresql[-dr]-<class>-<MB>", () => {
    assert.equal(new Set(catalog.plans.map((p) => p.id)).size, catalog.plans.length);
    for (const p of catalog.plans) {
      const prefix = modelOf(p.providerId) === "dedicated" ? "postgresql-dr" : "postgresql";
      assert.equal(p.name, `${prefix}-${p.serviceClass}-${p.ramMb}`);
      assert.equal(p.id, p.name, "clients send either: keep them equal");
    }
  });

  it("sizes every plan by the rules: connections, storage, nodes, gateways", () => {
    for (const p of catalog.plans) {
      const gb = p.ramMb / 1024;
      const perGb = modelOf(p.providerId) === "dedicated" ? 100 : 60;
      assert.equal(p.maxConnections, Math.floor(gb * perGb), `${p.id} connections`);
      assert.equal(p.storageGb, gb * 20, `${p.id} storage`);
      assert.equal(p.nodes, NODES[p.serviceClass], `${p.id} nodes`);
      assert.equal(p.gateways, p.nodes, `${p.id} gateways`);
    }
  });

  it("prices per minute: price_per_minute * 43 200 is the monthly price", () => {
    for (const p of catalog.plans) {
      const monthly = Number(p.pricePerMinute) * 43_200;
      assert.ok(Math.abs(monthly - p.pricePerMonth) < 0.01, `${p.id}: ${monthly} vs ${p.pricePerMonth}`);
      assert.ok(p.pricePerMonth > 0, p.id);
    }
  });

  it("charges more for more: price grows with size within a class and with the class", () => {
    for (const provider of catalog.providers) {
      const plans = plansOf(catalog, provider.id);
      for (const a of plans) {
        for (const b of plans) {
          const biggerOrEqual = b.ramMb >= a.ramMb && NODES[b.serviceClass] >= NODES[a.serviceClass];
          if (a !== b && biggerOrEqual) assert.ok(b.pricePerMonth > a.pricePerMonth, `${a.id} < ${b.id}`);
        }
      }
    }
  });

  it("makes HDS available on multi-node classes only, offers every plan in the default regions, names sizes as Starter 512M", () => {
    const regions = loadConfig({}).regions.map((r) => r.name);
    for (const p of catalog.plans) {
      assert.equal(p.hdsAvailable, p.serviceClass !== "starter", `${p.id} hds_available`);
      assert.deepEqual([...p.regions].sort(), [...regions].sort(), `${p.id} regions`);
      const size = p.ramMb < 1024 ? `${p.ramMb}M` : `${p.ramMb / 1024}G`;
      const cls = p.serviceClass[0]!.toUpperCase() + p.serviceClass.slice(1);
      const dr = modelOf(p.providerId) === "dedicated" ? "Dedicated " : "";
      assert.equal(p.displayName, `${dr}${cls} ${size}`);
    }
  });

  it("finds plans by id and by name", () => {
    assert.equal(findPlan(catalog, "postgresql-starter-512")?.ramMb, 512);
    assert.equal(findPlan(catalog, "postgresql-dr-enterprise-4096")?.nodes, 3);
    assert.equal(findPlan(catalog, "postgresql-enterprise-4096"), undefined);
  });
});

describe("parseCatalog errors name the entry and the field", () => {
  const clone = () => structuredClone(raw);
  type Raw = ReturnType<typeof clone>;
  const cases: Array<[what: string, edit: (c: Raw) => unknown, message: RegExp]> = [
    ["not an object", () => [], /^catalog: expected a JSON object$/],
    [
      "no providers",
      (c) => ({ ...c, providers: undefined }),
      /^catalog: field "providers" must be an array \(got missing\)$/,
    ],
    [
      "a provider that is not an object",
      (c) => ({ ...c, providers: ["postgresql"] }),
      /^providers\[0\]: expected an object$/,
    ],
    [
      "a provider without id",
      (c) => (delete c.providers[1]!.id, c),
      /^providers\[1\]: field "id" must be a string \(got missing\)$/,
    ],
    [
      "an unknown architecture model",
      (c) => ((c.providers[0]!.architecture_model = "serverless"), c),
      /^providers\[0\]: architecture_model must be "shared" or "dedicated"$/,
    ],
    [
      "a category without name",
      (c) => ((c.providers[0]!.category = { id: "databases" }), c),
      /^providers\[0\]\.category: field "name" must be a string/,
    ],
    [
      "a duplicate provider alias",
      (c) => ((c.providers[1]!.aliases = ["scalingo-postgresql"]), c),
      /^providers\[1\]: id or alias scalingo-postgresql is used twice$/,
    ],
    [
      "a plan with RAM as text",
      (c) => ((c.plans[2]!.ram_mb = "2048"), c),
      /^plans\[2\]: field "ram_mb" must be a number above 0 \(got "2048"\)$/,
    ],
    [
      "a plan with zero nodes",
      (c) => ((c.plans[3]!.nodes = 0), c),
      /^plans\[3\]: field "nodes" must be an integer of 1 or more \(got 0\)$/,
    ],
    [
      "a price in exponent notation",
      (c) => ((c.plans[0]!.price_per_minute = "1e-4"), c),
      /^plans\[0\]: field "price_per_minute" must be a decimal string such as "0.0001666667" \(got "1e-4"\)$/,
    ],
    [
      "a plan without regions",
      (c) => (delete c.plans[4]!.regions, c),
      /^plans\[4\]: field "regions" must be an array of strings/,
    ],
    [
      "an unknown service class",
      (c) => ((c.plans[1]!.service_class = "premium"), c),
      /^plans\[1\]: service_class must be starter, business or enterprise$/,
    ],
    [
      "a duplicate plan id",
      (c) => ((c.plans[5]!.id = c.plans[0]!.id), c),
      /^plans\[5\]: id or name postgresql-starter-512 is used twice$/,
    ],
    [
      "a plan of an unknown provider",
      (c) => ((c.plans[0]!.provider = "mysql"), c),
      /^plans\[0\] \(postgresql-starter-512\): field "provider" names unknown provider mysql$/,
    ],
    [
      "a disabled plan whose alternative does not exist",
      (c) => (
        (c.plans[0]!.disabled = true),
        (c.plans[0]!.disabled_alternative_plan_id = "postgresql-starter-9"),
        c
      ),
      /^plans\[0\] \(postgresql-starter-512\): field "disabled_alternative_plan_id" names no plan of postgresql: postgresql-starter-9$/,
    ],
  ];
  for (const [what, edit, message] of cases) {
    it(`refuses ${what}`, () => {
      assert.throws(
        () => parseCatalog(edit(clone())),
        (err: unknown) => {
          assert.ok(err instanceof CatalogError, String(err));
          assert.match(err.message, message);
          return true;
        },
      );
    });
  }

  it("fills the optional fields with their defaults", () => {
    const c = parseCatalog({
      providers: [
        {
          id: "pg",
          name: "PG",
          architecture_model: "shared",
          engine: "postgresql",
          category: { id: "d", name: "D" },
        },
      ],
      plans: [
        {
          id: "pg-starter-512",
          name: "pg-starter-512",
          provider: "pg",
          display_name: "Starter 512M",
          service_class: "starter",
          ram_mb: 512,
          storage_gb: 10,
          max_connections: 30,
          vcpu: 0.25,
          nodes: 1,
          gateways: 1,
          price_per_month: 7.2,
          price_per_minute: "0.0001666667",
          regions: ["osc-fr1"],
        },
      ],
    });
    assert.equal(c.currency, "EUR");
    assert.deepEqual(c.providers[0]!.aliases, []);
    const p = c.plans[0]!;
    assert.deepEqual(
      [p.disabled, p.disabledAlternativePlanId, p.onDemand, p.toBeDiscontinued, p.hdsAvailable, p.position],
      [false, null, false, false, false, 0],
    );
  });
});
