// loadConfig: the defaults, and a message saying what is allowed for each invalid value.
import assert from "node:assert/strict";
import path from "node:path";
import { describe, it } from "node:test";
import { ConfigError, REPO_ROOT, loadConfig } from "../src/config.ts";

describe("loadConfig", () => {
  it("runs with no configuration at all", () => {
    const c = loadConfig({});
    assert.equal(c.dataDir, path.join(REPO_ROOT, ".cellar"));
    assert.equal(c.databaseUrl, undefined, "embedded store by default");
    assert.equal(c.listenHost, "127.0.0.1");
    assert.equal(c.port, 5080);
    assert.equal(c.publicUrl, "http://127.0.0.1:5080");
    assert.equal(c.adminToken, undefined);
    assert.equal(c.rateLimitPerMinute, 60);
    assert.deepEqual(
      c.regions.map((r) => [r.name, r.azs]),
      [
        ["osc-fr1", ["osc-fr1-a", "osc-fr1-b", "osc-fr1-c"]],
        ["osc-secnum-fr1", ["osc-secnum-fr1-a", "osc-secnum-fr1-b", "osc-secnum-fr1-c"]],
      ],
    );
    assert.equal(c.defaultRegion, "osc-fr1");
    assert.equal(c.catalogPath, path.join(REPO_ROOT, "config", "catalog.json"));
    assert.equal(c.jwtSecret, undefined, "generated and kept in the store");
    assert.equal(c.reconcileIntervalMs, 2000);
    assert.equal(c.logLevel, "info");
  });

  it("reads every variable", () => {
    const c = loadConfig({
      CELLAR_DATA_DIR: "relative/dir",
      CELLAR_DATABASE_URL: "postgresql://cellar:secret@db.example.test:5432/cellar",
      CELLAR_LISTEN_HOST: "0.0.0.0",
      CELLAR_PORT: "8080",
      CELLAR_PUBLIC_URL: "https://cellar.example.test/",
      CELLAR_ADMIN_TOKEN: "tk-us-0123456789abcdef",
      CELLAR_RATE_LIMIT_PER_MINUTE: "600",
      CELLAR_REGIONS: " eu-west-1 , eu-central-1 ",
      CELLAR_DEFAULT_REGION: "eu-central-1",
      CELLAR_CATALOG: "/etc/cellar/catalog.json",
      CELLAR_JWT_SECRET: "x".repeat(32),
      CELLAR_RECONCILE_INTERVAL_MS: "50",
      CELLAR_LOG_LEVEL: "debug",
    });
    assert.equal(
      c.dataDir,
      path.resolve("relative/dir"),
      "relative paths resolve from the working directory",
    );
    assert.equal(c.databaseUrl, "postgresql://cellar:secret@db.example.test:5432/cellar");
    assert.equal(c.listenHost, "0.0.0.0");
    assert.equal(c.port, 8080);
    assert.equal(c.publicUrl, "https://cellar.example.test", "no trailing slash");
    assert.equal(c.adminToken, "tk-us-0123456789abcdef");
    assert.equal(c.rateLimitPerMinute, 600);
    assert.deepEqual(
      c.regions.map((r) => r.name),
      ["eu-west-1", "eu-central-1"],
    );
    assert.equal(c.defaultRegion, "eu-central-1");
    assert.equal(c.catalogPath, "/etc/cellar/catalog.json");
    assert.equal(c.jwtSecret, "x".repeat(32));
    assert.equal(c.reconcileIntervalMs, 50);
    assert.equal(c.logLevel, "debug");
  });

  it("derives the public URL from the listener, and treats empty values as unset", () => {
    assert.equal(loadConfig({ CELLAR_PORT: "9000" }).publicUrl, "http://127.0.0.1:9000");
    const c = loadConfig({
      CELLAR_DATABASE_URL: "",
      CELLAR_PORT: "",
      CELLAR_JWT_SECRET: "",
      CELLAR_REGIONS: "osc-fr1",
    });
    assert.equal(c.databaseUrl, undefined);
    assert.equal(c.port, 5080);
    assert.equal(c.jwtSecret, undefined);
    assert.equal(c.defaultRegion, "osc-fr1");
  });

  const invalid: Array<[env: Record<string, string>, message: RegExp]> = [
    [{ CELLAR_PORT: "http" }, /^CELLAR_PORT=http is invalid: expected an integer from 1 to 65535$/],
    [{ CELLAR_PORT: "0" }, /^CELLAR_PORT=0 is invalid: expected an integer from 1 to 65535$/],
    [{ CELLAR_PORT: "65536" }, /^CELLAR_PORT=65536 is invalid: expected an integer from 1 to 65535$/],
    [{ CELLAR_PORT: "80.5" }, /^CELLAR_PORT=80\.5 is invalid: expected an integer/],
    [
      { CELLAR_RATE_LIMIT_PER_MINUTE: "0" },
      /^CELLAR_RATE_LIMIT_PER_MINUTE=0 is invalid: expected an integer from 1 to 1000000$/,
    ],
    [
      { CELLAR_RECONCILE_INTERVAL_MS: "10" },
      /^CELLAR_RECONCILE_INTERVAL_MS=10 is invalid: expected an integer from 50 to 3600000$/,
    ],
    [{ CELLAR_REGIONS: " , " }, /^CELLAR_REGIONS is empty: name at least one region$/],
    [
      { CELLAR_REGIONS: "osc-fr1,Paris_1" },
      /^CELLAR_REGIONS: "Paris_1" is not a valid region name \(lowercase letters, digits, -\)$/,
    ],
    [{ CELLAR_REGIONS: "osc-fr1,osc-fr1" }, /^CELLAR_REGIONS names osc-fr1 twice: name each region once$/],
    [
      { CELLAR_DEFAULT_REGION: "us-east-1" },
      /^CELLAR_DEFAULT_REGION=us-east-1 is not one of CELLAR_REGIONS$/,
    ],
    [
      { CELLAR_LOG_LEVEL: "verbose" },
      /^CELLAR_LOG_LEVEL=verbose is invalid: expected debug, info, warn or error$/,
    ],
    [
      { CELLAR_PUBLIC_URL: "cellar.example.test" },
      /^CELLAR_PUBLIC_URL=cellar\.example\.test is invalid: expected an http\(s\) URL/,
    ],
    [
      { CELLAR_PUBLIC_URL: "ftp://cellar.example.test" },
      /is invalid: expected an http\(s\) URL without query/,
    ],
    [
      { CELLAR_PUBLIC_URL: "https://cellar.example.test/?x=1" },
      /is invalid: expected an http\(s\) URL without query/,
    ],
    [
      { CELLAR_DATABASE_URL: "mysql://root:hunter2@db/cellar" },
      /^CELLAR_DATABASE_URL is invalid: expected postgresql:\/\/user:password@host:port\/database$/,
    ],
    [
      { CELLAR_JWT_SECRET: "short" },
      /^CELLAR_JWT_SECRET is too short \(5 characters\): use at least 32, or unset it to have one generated$/,
    ],
  ];
  for (const [env, message] of invalid) {
    it(`refuses ${JSON.stringify(env)}`, () => {
      assert.throws(
        () => loadConfig(env),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError, String(err));
          assert.match(err.message, message);
          assert.ok(!err.message.includes("hunter2"), "never repeats a password");
          return true;
        },
      );
    });
  }
});
