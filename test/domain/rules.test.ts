// Table-driven tests for every rule of the two architecture models (src/domain/rules.ts).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseCatalog, type Catalog, type Plan } from "../../src/domain/catalog.ts";
import { ForbiddenError, ValidationError } from "../../src/domain/errors.ts";
import {
  allowedCollaboratorRoles,
  assertCanManageDatabase,
  assertCanProvision,
  canDestroyScope,
  canManageCollaborators,
  canManageDatabase,
  canProvision,
  decidePlanChange,
  resolvePlan,
  resolveProvider,
  validateIpRange,
  validateResourceName,
  type PlanChangeKind,
  type Role,
} from "../../src/domain/rules.ts";

const FR1 = "osc-fr1";
const SNC = "osc-secnum-fr1";

function provider(id: string, model: "shared" | "dedicated", engine = "postgresql", aliases: string[] = []) {
  return {
    id,
    name: id,
    architecture_model: model,
    engine,
    aliases,
    category: { id: "databases", name: "Databases" },
  };
}

/** A plan entry as in config/catalog.json; `provider` and `cls` come from the id's shape. */
function plan(id: string, ramMb: number, extra: Record<string, unknown> = {}) {
  const dr = id.includes("-dr-");
  const cls = /-(starter|business|enterprise)-/.exec(id)![1]!;
  const nodes = { starter: 1, business: 2, enterprise: 3 }[cls];
  return {
    id,
    name: id,
    provider: id.startsWith("mysql") ? "mysql-ng" : dr ? "postgresql-ng" : "postgresql",
    display_name: id,
    service_class: cls,
    ram_mb: ramMb,
    storage_gb: (ramMb / 1024) * 20,
    max_connections: Math.floor((ramMb / 1024) * (dr ? 100 : 60)),
    vcpu: 1,
    nodes,
    gateways: nodes,
    price_per_month: 43.2,
    price_per_minute: "0.001",
    regions: [FR1, SNC],
    ...extra,
  };
}

/** A small catalog with one case of each thing the rules look at. */
const catalog: Catalog = parseCatalog({
  providers: [
    provider("postgresql", "shared", "postgresql", ["scalingo-postgresql"]),
    provider("postgresql-ng", "dedicated"),
    provider("mysql-ng", "dedicated", "mysql"),
  ],
  plans: [
    plan("postgresql-starter-256", 256, {
      disabled: true,
      disabled_alternative_plan_id: "postgresql-starter-512",
    }),
    plan("postgresql-starter-384", 384, { disabled: true }),
    plan("postgresql-starter-512", 512),
    plan("postgresql-starter-1024", 1024),
    plan("postgresql-starter-2048", 2048),
    plan("postgresql-business-512", 512),
    plan("postgresql-business-1024", 1024),
    plan("postgresql-business-2048", 2048),
    plan("postgresql-business-4096", 4096, { regions: [FR1] }),
    plan("postgresql-enterprise-1024", 1024),
    plan("postgresql-dr-starter-4096", 4096),
    plan("postgresql-dr-starter-8192", 8192),
    plan("postgresql-dr-business-4096", 4096),
    plan("postgresql-dr-business-8192", 8192),
    plan("postgresql-dr-enterprise-4096", 4096),
    plan("postgresql-dr-enterprise-8192", 8192),
    plan("mysql-dr-starter-4096", 4096),
  ],
});

const P = (ref: string): Plan => {
  const found = catalog.plans.find((p) => p.name === ref);
  if (!found) throw new Error(`test catalog has no plan ${ref}`);
  return found;
};
const shared = catalog.providers.find((p) => p.id === "postgresql")!;
const dedicated = catalog.providers.find((p) => p.id === "postgresql-ng")!;

/** Asserts a 422 on exactly `field` whose message matches every pattern; returns the message. */
function expectFieldError(fn: () => unknown, field: string, ...patterns: RegExp[]): string {
  let message = "";
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ValidationError, `expected a ValidationError, got ${String(err)}`);
    assert.deepEqual(Object.keys(err.fields), [field]);
    assert.equal(err.fields[field]!.length, 1);
    message = err.fields[field]![0]!;
    for (const p of patterns) assert.match(message, p);
    return true;
  });
  return message;
}

describe("who may provision", () => {
  const table: Array<[model: "shared" | "dedicated", role: Role, allowed: boolean]> = [
    ["shared", "owner", true],
    ["shared", "collaborator", true],
    ["shared", "limited", false],
    ["shared", "none", false],
    ["dedicated", "owner", true],
    ["dedicated", "collaborator", false],
    ["dedicated", "limited", false],
    ["dedicated", "none", false],
  ];
  for (const [model, role, allowed] of table) {
    it(`${model}: ${role} ${allowed ? "may" : "may not"} provision`, () => {
      assert.equal(canProvision(model, role), allowed);
      if (allowed) {
        assertCanProvision(model, role);
        return;
      }
      assert.throws(
        () => assertCanProvision(model, role),
        (err: unknown) =>
          err instanceof ForbiddenError &&
          err.reason === "insufficient_role" &&
          (model === "dedicated" ? /only the owner/ : /limited collaborators may not/).test(err.message),
      );
    });
  }
});

describe("roles on an existing scope", () => {
  const table: Array<[Role, manage: boolean, destroy: boolean, collaborators: boolean]> = [
    ["owner", true, true, true],
    ["collaborator", true, false, true],
    ["limited", false, false, false],
    ["none", false, false, false],
  ];
  for (const [role, manage, destroy, collaborators] of table) {
    it(`${role}: manage ${manage}, destroy ${destroy}, manage collaborators ${collaborators}`, () => {
      assert.equal(canManageDatabase(role), manage);
      assert.equal(canDestroyScope(role), destroy);
      assert.equal(canManageCollaborators(role), collaborators);
      if (manage) assertCanManageDatabase(role);
      else assert.throws(() => assertCanManageDatabase(role), ForbiddenError);
    });
  }

  it("Dedicated databases know only the Collaborator role; Shared apps also Limited", () => {
    assert.deepEqual(allowedCollaboratorRoles("dedicated"), ["collaborator"]);
    assert.deepEqual(allowedCollaboratorRoles("shared"), ["collaborator", "limited"]);
  });
});

describe("resolveProvider", () => {
  it("finds a provider by id or by its legacy alias", () => {
    assert.equal(resolveProvider(catalog, "postgresql", "shared").id, "postgresql");
    assert.equal(resolveProvider(catalog, "scalingo-postgresql", "shared").id, "postgresql");
    assert.equal(resolveProvider(catalog, "postgresql-ng", "dedicated").id, "postgresql-ng");
    assert.equal(resolveProvider(catalog, "postgresql-ng", undefined).id, "postgresql-ng");
  });

  const errors: Array<[ref: string, model: "shared" | "dedicated" | undefined, patterns: RegExp[]]> = [
    ["mongodb", "shared", [/unknown provider mongodb/, /known: postgresql\)/]],
    ["mongodb", undefined, [/unknown provider mongodb/, /known: postgresql, postgresql-ng, mysql-ng/]],
    ["", "dedicated", [/unknown provider/, /known: postgresql-ng, mysql-ng/]],
    ["postgresql-ng", "shared", [/Dedicated Resources provider/, /POST \/v1\/databases/]],
    ["postgresql", "dedicated", [/Shared Resources add-on provider/, /PostgreSQL only: use postgresql-ng$/]],
    ["scalingo-postgresql", "dedicated", [/PostgreSQL only: use postgresql-ng$/]],
    ["mysql-ng", "dedicated", [/mysql-ng runs mysql/, /PostgreSQL only: use postgresql-ng$/]],
  ];
  for (const [ref, model, patterns] of errors) {
    it(`refuses ${JSON.stringify(ref)} for ${model ?? "any"} model`, () => {
      expectFieldError(() => resolveProvider(catalog, ref, model), "addon_provider_id", ...patterns);
    });
  }

  it("reports the field the caller names", () => {
    expectFieldError(() => resolveProvider(catalog, "nope", "dedicated", "technology"), "technology");
  });
});

describe("resolvePlan", () => {
  it("finds an enabled plan of the provider offered in the region, by id or name", () => {
    assert.equal(resolvePlan(catalog, shared, "postgresql-starter-512", FR1).id, "postgresql-starter-512");
    assert.equal(resolvePlan(catalog, shared, "postgresql-business-4096", FR1).ramMb, 4096);
    assert.equal(resolvePlan(catalog, dedicated, "postgresql-dr-enterprise-8192", SNC).nodes, 3);
    const byId = parseCatalog({
      providers: [provider("postgresql", "shared")],
      plans: [{ ...plan("postgresql-starter-512", 512), id: "pl-0042" }],
    });
    const p = byId.providers[0]!;
    assert.equal(resolvePlan(byId, p, "pl-0042", FR1).name, "postgresql-starter-512");
    assert.equal(resolvePlan(byId, p, "postgresql-starter-512", FR1).id, "pl-0042");
  });

  const errors: Array<[what: string, prov: typeof shared, ref: string, region: string, patterns: RegExp[]]> =
    [
      [
        "an unknown plan, listing what is offered",
        shared,
        "postgresql-starter-999",
        FR1,
        [
          /plan postgresql-starter-999 does not exist for postgresql/,
          /postgresql plans in osc-fr1: postgresql-starter-512,/,
        ],
      ],
      [
        "a plan of another provider",
        shared,
        "postgresql-dr-starter-4096",
        FR1,
        [/belongs to postgresql-ng, not to postgresql/, /postgresql plans in osc-fr1: /],
      ],
      [
        "a Shared plan asked of the Dedicated provider",
        dedicated,
        "postgresql-starter-512",
        FR1,
        [
          /belongs to postgresql, not to postgresql-ng/,
          /postgresql-ng plans in osc-fr1: postgresql-dr-starter-4096/,
        ],
      ],
      [
        "Enterprise on Shared Resources",
        shared,
        "postgresql-enterprise-1024",
        FR1,
        [/class enterprise is not offered on shared resources/, /\(allowed: starter, business\)/],
      ],
      [
        "a disabled plan, naming its alternative",
        shared,
        "postgresql-starter-256",
        FR1,
        [/plan postgresql-starter-256 is disabled; use postgresql-starter-512$/],
      ],
      [
        "a disabled plan without alternative, listing what is offered",
        shared,
        "postgresql-starter-384",
        FR1,
        [/plan postgresql-starter-384 is disabled; postgresql plans in osc-fr1: /],
      ],
      [
        "a plan not offered in the region",
        shared,
        "postgresql-business-4096",
        SNC,
        [/not available in region osc-secnum-fr1/, /postgresql plans in osc-secnum-fr1: /],
      ],
    ];
  for (const [what, prov, ref, region, patterns] of errors) {
    it(`refuses ${what}`, () => {
      const msg = expectFieldError(() => resolvePlan(catalog, prov, ref, region), "plan_id", ...patterns);
      // What is listed as allowed must itself be allowed.
      const listed = /plans in [a-z0-9-]+: (.*)$/.exec(msg)?.[1]?.split(", ") ?? [];
      for (const name of listed) assert.doesNotThrow(() => resolvePlan(catalog, prov, name, region), name);
      assert.ok(!listed.includes("postgresql-enterprise-1024"), "never suggests a class the model lacks");
    });
  }

  it("reports the field the caller names", () => {
    expectFieldError(() => resolvePlan(catalog, shared, "nope", FR1, "plan"), "plan");
  });

  it("says so when the provider offers nothing in the region", () => {
    expectFieldError(
      () => resolvePlan(catalog, shared, "nope", "osc-xx1"),
      "plan_id",
      /postgresql offers no plan in region osc-xx1/,
    );
  });
});

describe("decidePlanChange", () => {
  type Row = [from: string, to: string, kind: PlanChangeKind, downtime: boolean];
  // Reference §2.5 (Shared Resources), one row per line of its table, up and down.
  const sharedRows: Row[] = [
    ["postgresql-starter-1024", "postgresql-starter-2048", "resize", true],
    ["postgresql-starter-2048", "postgresql-starter-512", "resize", true],
    ["postgresql-starter-1024", "postgresql-business-1024", "class-switch", false],
    ["postgresql-starter-1024", "postgresql-business-2048", "class-switch", false],
    ["postgresql-starter-1024", "postgresql-business-512", "class-switch", false],
    ["postgresql-business-1024", "postgresql-starter-1024", "class-switch", false],
    ["postgresql-business-1024", "postgresql-starter-2048", "class-switch", true],
    ["postgresql-business-1024", "postgresql-starter-512", "class-switch", true],
    ["postgresql-business-1024", "postgresql-business-2048", "resize", false],
    ["postgresql-business-2048", "postgresql-business-512", "resize", false],
    ["postgresql-starter-1024", "postgresql-starter-1024", "none", false],
    ["postgresql-business-1024", "postgresql-business-1024", "none", false],
  ];
  // Reference §3.5 (Dedicated Resources): class both ways at equal or larger size.
  const dedicatedRows: Row[] = [
    ["postgresql-dr-starter-4096", "postgresql-dr-starter-8192", "resize", true],
    ["postgresql-dr-starter-4096", "postgresql-dr-business-4096", "class-switch", false],
    ["postgresql-dr-starter-4096", "postgresql-dr-enterprise-8192", "class-switch", false],
    ["postgresql-dr-business-4096", "postgresql-dr-enterprise-4096", "class-switch", false],
    ["postgresql-dr-enterprise-8192", "postgresql-dr-business-8192", "class-switch", false],
    ["postgresql-dr-business-4096", "postgresql-dr-business-8192", "resize", false],
    ["postgresql-dr-enterprise-4096", "postgresql-dr-enterprise-8192", "resize", false],
    ["postgresql-dr-business-4096", "postgresql-dr-starter-4096", "class-switch", false],
    ["postgresql-dr-enterprise-4096", "postgresql-dr-starter-4096", "class-switch", false],
    ["postgresql-dr-business-4096", "postgresql-dr-starter-8192", "class-switch", true],
    ["postgresql-dr-enterprise-4096", "postgresql-dr-starter-8192", "class-switch", true],
    ["postgresql-dr-starter-4096", "postgresql-dr-starter-4096", "none", false],
  ];
  const cases: Array<["shared" | "dedicated", Row]> = [
    ...sharedRows.map((r): ["shared", Row] => ["shared", r]),
    ...dedicatedRows.map((r): ["dedicated", Row] => ["dedicated", r]),
  ];
  for (const [model, [from, to, kind, downtime]] of cases) {
    it(`${model}: ${from} -> ${to} is ${kind}${downtime ? " with downtime" : " without downtime"}`, () => {
      assert.deepEqual(decidePlanChange(model, P(from), P(to)), { kind, downtime });
    });
  }

  const smaller: Array<[from: string, to: string]> = [
    ["postgresql-dr-starter-8192", "postgresql-dr-starter-4096"],
    ["postgresql-dr-business-8192", "postgresql-dr-business-4096"],
    ["postgresql-dr-enterprise-8192", "postgresql-dr-enterprise-4096"],
    ["postgresql-dr-starter-8192", "postgresql-dr-business-4096"],
    ["postgresql-dr-business-8192", "postgresql-dr-starter-4096"],
    ["postgresql-dr-enterprise-8192", "postgresql-dr-starter-4096"],
  ];
  for (const [from, to] of smaller) {
    it(`dedicated: ${from} -> ${to} is refused, naming both plans and the rule`, () => {
      const msg = expectFieldError(() => decidePlanChange("dedicated", P(from), P(to)), "plan_id");
      assert.equal(msg, `plan ${to} is smaller than the current ${from}: Dedicated databases scale up only`);
    });
  }

  it("refuses a plan of another provider, saying which plans are allowed", () => {
    expectFieldError(
      () => decidePlanChange("shared", P("postgresql-starter-1024"), P("postgresql-dr-starter-4096")),
      "plan_id",
      /belongs to postgresql-ng/,
      /a postgresql database can only move to postgresql plans/,
    );
    expectFieldError(
      () => decidePlanChange("dedicated", P("postgresql-dr-starter-4096"), P("postgresql-starter-2048")),
      "plan_id",
      /a postgresql-ng database can only move to postgresql-ng plans/,
    );
  });
});

describe("validateResourceName", () => {
  const ok = ["abcdef", "my-db-1", "123456", "a".repeat(48), "a-b-c-d-e-f"];
  for (const name of ok) {
    it(`accepts ${name.length > 20 ? `${name.length} characters` : name}`, () => {
      assert.equal(validateResourceName(name), name);
    });
  }

  const length = /must be 6 to 48 characters long/;
  const charset =
    /may contain only lowercase letters, digits and hyphens, and must not start or end with a hyphen/;
  const bad: Array<[what: string, value: unknown, pattern: RegExp]> = [
    ["5 characters", "abcde", length],
    ["49 characters", "a".repeat(49), length],
    ["an empty name", "", length],
    ["uppercase", "MyDatabase", charset],
    ["an underscore", "my_db_1", charset],
    ["a leading hyphen", "-mydb1", charset],
    ["a trailing hyphen", "mydb1-", charset],
    ["a dot", "my.db.1", charset],
    ["a space", "my db 1", charset],
    ["a non-ASCII letter", "bäse-db", charset],
    ["a newline", "mydb1\nx", charset],
    ["SQL metacharacters", "db'; DROP TABLE users;--", charset],
    ["a SQL comment", "mydb--", charset],
    ["shell command substitution", "db$(reboot)", charset],
    ["backquotes", "db`id`x", charset],
    ["a pipe", "db|cat", charset],
    ["a semicolon", "db;ls1", charset],
    ["a number", 123456, /must be a string of 6 to 48 lowercase letters, digits and hyphens/],
    ["null", null, /must be a string/],
  ];
  for (const [what, value, pattern] of bad) {
    it(`refuses ${what}`, () => {
      expectFieldError(() => validateResourceName(value), "name", pattern);
    });
  }

  it("reports the field the caller names", () => {
    expectFieldError(() => validateResourceName("x", "database[name]"), "database[name]");
  });
});

describe("validateIpRange", () => {
  const ok = ["10.20.0.0/24", "10.20.0.0/25", "10.20.0.128/25", "172.16.0.0/12", "192.168.0.0/16"];
  for (const value of ok) {
    it(`accepts ${value}`, () => assert.equal(validateIpRange(value), value));
  }

  const bad: Array<[value: unknown, patterns: RegExp[]]> = [
    ["10.20.0.0/26", [/too small: the range must be at least a \/25/]],
    ["10.20.0.0/32", [/too small/]],
    ["10.20.0.1/24", [/has host bits set: give the network address, 10\.20\.0\.0\/24$/]],
    ["10.20.0.200/25", [/network address, 10\.20\.0\.128\/25$/]],
    ["10.20.0/24", [/is not an IPv4 CIDR such as 10\.20\.0\.0\/24/]],
    ["10.20.0.0", [/is not an IPv4 CIDR such as/]],
    ["10.20.0.0/", [/is not an IPv4 CIDR such as/]],
    ["fd00::/64", [/is not an IPv4 CIDR such as/]],
    ["10.20.0.0/24; reboot", [/is not an IPv4 CIDR such as/]],
    ["", [/is not an IPv4 CIDR such as/]],
    ["256.20.0.0/24", [/not a valid IPv4 CIDR: each number must be 0 to 255 and the range at least a \/25/]],
    ["10.20.0.300/24", [/each number must be 0 to 255/]],
    ["10.20.0.0/33", [/not a valid IPv4 CIDR/]],
    [24, [/must be an IPv4 CIDR such as 10\.20\.0\.0\/24/]],
  ];
  for (const [value, patterns] of bad) {
    it(`refuses ${JSON.stringify(value)}`, () => {
      expectFieldError(() => validateIpRange(value), "ip_range", ...patterns);
    });
  }
});
