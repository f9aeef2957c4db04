import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "../../src/domain/errors.ts";
import { HostLayout } from "../../src/engines/postgresql/host-layout.ts";
import { crc32c, newSystemIdentifier } from "../../src/engines/postgresql/pg-control.ts";
import {
  postgresConfEntries,
  renderCellarConf,
  renderPgHba,
} from "../../src/engines/postgresql/pg-config.ts";
import { type PlanResources, planPostgresSettings } from "../../src/engines/postgresql/plan-settings.ts";

describe("planPostgresSettings", () => {
  const cases: Array<{ plan: PlanResources; expect: ReturnType<typeof planPostgresSettings> }> = [
    {
      plan: { ramMb: 512, maxConnections: 30, model: "shared" },
      expect: {
        maxConnections: 33,
        superuserReservedConnections: 3,
        sharedBuffersMb: 128,
        effectiveCacheSizeMb: 384,
        workMemKb: 5957, // (512-128)*1024/33/2
        maintenanceWorkMemMb: 32,
        autovacuumNaptimeS: 300,
      },
    },
    {
      plan: { ramMb: 4096, maxConnections: 240, model: "shared" },
      expect: {
        maxConnections: 243,
        superuserReservedConnections: 3,
        sharedBuffersMb: 1024,
        effectiveCacheSizeMb: 3072,
        workMemKb: 6472,
        maintenanceWorkMemMb: 256,
        autovacuumNaptimeS: 60,
      },
    },
    {
      // Dedicated: 100 connections per GB leave less than the floor per connection.
      plan: { ramMb: 4096, maxConnections: 400, model: "dedicated" },
      expect: {
        maxConnections: 403,
        superuserReservedConnections: 3,
        sharedBuffersMb: 1024,
        effectiveCacheSizeMb: 3072,
        workMemKb: 4096,
        maintenanceWorkMemMb: 256,
        autovacuumNaptimeS: 60,
      },
    },
    {
      plan: { ramMb: 65536, maxConnections: 6400, model: "dedicated" },
      expect: {
        maxConnections: 6403,
        superuserReservedConnections: 3,
        sharedBuffersMb: 16384,
        effectiveCacheSizeMb: 49152,
        workMemKb: 4096,
        maintenanceWorkMemMb: 2048, // capped
        autovacuumNaptimeS: 60,
      },
    },
  ];
  for (const c of cases) {
    it(`${c.plan.model} ${c.plan.ramMb} MB / ${c.plan.maxConnections} connections`, () => {
      assert.deepEqual(planPostgresSettings(c.plan), c.expect);
    });
  }

  it("derives connections from RAM when the plan has none: 60/GB Shared, 100/GB Dedicated", () => {
    assert.equal(planPostgresSettings({ ramMb: 2048, model: "shared" }).maxConnections, 120 + 3);
    assert.equal(planPostgresSettings({ ramMb: 2048, model: "dedicated" }).maxConnections, 200 + 3);
  });

  it("wakes autovacuum every 5 minutes on small Shared plans, every minute elsewhere", () => {
    assert.equal(planPostgresSettings({ ramMb: 1024, model: "shared" }).autovacuumNaptimeS, 300);
    assert.equal(planPostgresSettings({ ramMb: 2048, model: "shared" }).autovacuumNaptimeS, 60);
    assert.equal(planPostgresSettings({ ramMb: 1024, model: "dedicated" }).autovacuumNaptimeS, 60);
  });

  it("keeps maintenance_work_mem at 16 MB or more on tiny plans", () => {
    assert.equal(planPostgresSettings({ ramMb: 128, model: "shared" }).maintenanceWorkMemMb, 16);
  });

  it("refuses RAM below 128 MB or a non-positive connection count, saying what is allowed", () => {
    assert.throws(
      () => planPostgresSettings({ ramMb: 64, model: "shared" }),
      (err: unknown) => err instanceof ValidationError && /at least 128/.test(err.message),
    );
    assert.throws(
      () => planPostgresSettings({ ramMb: 1024, maxConnections: 0, model: "shared" }),
      (err: unknown) => err instanceof ValidationError && /positive/.test(err.message),
    );
  });
});

describe("renderCellarConf", () => {
  const input = {
    settings: planPostgresSettings({ ramMb: 1024, maxConnections: 60, model: "shared" as const }),
    listenAddress: "127.10.0.2",
    port: 20001,
    socketDir: "/data/inst-1/run",
    logDir: "/data/inst-1/log",
    tls: {
      certFile: "/data/inst-1/tls/server.crt",
      keyFile: "/data/inst-1/tls/server.key",
      caFile: "/c'a.crt",
    },
    clusterName: "inst-1",
  };

  it("holds the fixed security and placement settings", () => {
    const conf = Object.fromEntries(postgresConfEntries(input));
    assert.equal(conf.listen_addresses, "'127.10.0.2'");
    assert.equal(conf.port, "20001");
    assert.equal(conf.unix_socket_directories, "'/data/inst-1/run'");
    assert.equal(conf.ssl, "on");
    assert.equal(conf.ssl_min_protocol_version, "'TLSv1.3'");
    assert.equal(conf.password_encryption, "'scram-sha-256'");
    assert.equal(conf.max_connections, "63");
    assert.equal(conf.shared_buffers, "'256MB'");
    assert.equal(conf.logging_collector, "on");
    assert.equal(conf.log_directory, "'/data/inst-1/log'");
    assert.equal(conf.ssl_ca_file, "'/c''a.crt'", "quotes are doubled inside string values");
  });

  it("renders one `name = value` line per setting", () => {
    const lines = renderCellarConf(input).trim().split("\n").slice(1);
    assert.equal(lines.length, postgresConfEntries(input).length);
    for (const line of lines) assert.match(line, /^[a-z_]+ = \S/);
  });
});

describe("renderPgHba", () => {
  it("allows TLS and plain SCRAM logins, the superuser only on the socket", () => {
    const hba = renderPgHba({ forceTls: false });
    assert.match(hba, /^local\s+all\s+postgres\s+trust$/m);
    assert.match(hba, /^host\s+all\s+postgres\s+0\.0\.0\.0\/0\s+reject$/m);
    assert.match(hba, /^hostssl\s+all\s+all\s+0\.0\.0\.0\/0\s+scram-sha-256$/m);
    assert.match(hba, /^host\s+all\s+all\s+0\.0\.0\.0\/0\s+scram-sha-256$/m);
    // The superuser reject comes before the generic lines (first match wins).
    assert.ok(hba.indexOf("postgres 0.0.0.0/0") < hba.indexOf("all      0.0.0.0/0"));
  });

  it("drops the non-TLS lines when TLS is forced", () => {
    const hba = renderPgHba({ forceTls: true });
    assert.doesNotMatch(hba, /^host\s+all\s+all/m);
    assert.match(hba, /^hostssl\s+all\s+all\s+0\.0\.0\.0\/0\s+scram-sha-256$/m);
  });
});

describe("pg_control helpers", () => {
  it("computes CRC-32C (Castagnoli) check values", () => {
    assert.equal(crc32c(Buffer.from("123456789")), 0xe3069283);
    assert.equal(crc32c(Buffer.alloc(0)), 0);
  });

  it("makes initdb-shaped system identifiers: creation time high, random low", () => {
    const now = Date.UTC(2026, 0, 1);
    const a = newSystemIdentifier(now);
    const b = newSystemIdentifier(now);
    assert.equal(a >> 32n, BigInt(now / 1000));
    assert.notEqual(a, b);
  });
});

describe("HostLayout", () => {
  it("derives instance directories from ids and refuses anything that could escape them", () => {
    const layout = new HostLayout("/var/lib/cellar/host-1");
    assert.equal(layout.instanceDir("inst-0a1b2c"), "/var/lib/cellar/host-1/instances/inst-0a1b2c");
    assert.equal(layout.templateDir(), "/var/lib/cellar/host-1/templates/postgresql-15");
    for (const bad of ["../etc", "inst-../x", "inst-a/b", "", "INST-1"]) {
      assert.throws(() => layout.instanceDir(bad), ValidationError, bad);
    }
  });
});
