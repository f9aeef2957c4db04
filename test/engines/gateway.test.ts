import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import pg from "pg";
import { ValidationError } from "../../src/domain/errors.ts";
import { randomSecret } from "../../src/domain/ids.ts";
import { PortInUseError } from "../../src/engines/postgresql/errors.ts";
import { Gateway, HAPROXY_BIN } from "../../src/engines/postgresql/gateway.ts";
import { type GatewaySpec, renderHaproxyConfig } from "../../src/engines/postgresql/haproxy-config.ts";
import { PostgresInstance } from "../../src/engines/postgresql/instance.ts";
import { planPostgresSettings } from "../../src/engines/postgresql/plan-settings.ts";
import { findProcesses, isProcessAlive } from "../../src/engines/postgresql/process-watch.ts";
import { type CertificateAuthority, ensureCa } from "../../src/engines/tls/certificates.ts";
import { freePort, loopbackPrefix, scratchDir, tcpConnectResult, timed } from "./engine-fixtures.ts";

const execFileAsync = promisify(execFile);

describe("renderHaproxyConfig", () => {
  const base = {
    name: "inst-gw",
    adminSocket: "/data/inst-gw/admin.sock",
    listen: { host: "127.10.0.1", port: 30001 },
    backends: [{ name: "inst-node", host: "127.10.0.2", port: 30002 }],
    maxConnections: 200,
  };

  it("forwards TCP to the node with the reference's timeouts, no health check for a lone node", () => {
    const cfg = renderHaproxyConfig(base);
    for (const line of [
      "  mode tcp",
      "  maxconn 200",
      "  bind 127.10.0.1:30001",
      "  server inst-node 127.10.0.2:30002",
      "  timeout client 1d",
      "  timeout server 30m",
      "  timeout client-fin 5m",
      "  stats socket /data/inst-gw/admin.sock mode 600 level admin expose-fd listeners",
    ]) {
      assert.ok(cfg.split("\n").includes(line), `has line "${line}"`);
    }
    assert.doesNotMatch(cfg, /httpchk|\bcheck\b|daemon|retries/);
  });

  it("routes to the Patroni primary only when nodes carry a Patroni port, checked over verified TLS", () => {
    const backends = [
      { name: "n1", host: "127.10.0.2", port: 30002, patroniPort: 8008 },
      { name: "n2", host: "127.10.0.3", port: 30002, patroniPort: 8008 },
    ];
    const cfg = renderHaproxyConfig({ ...base, backends, checkCaFile: "/data/inst-gw/check-ca.pem" });
    assert.match(cfg, /^ {2}option httpchk GET \/primary$/m);
    assert.match(cfg, /^ {2}http-check expect status 200$/m);
    assert.match(cfg, /on-marked-down shutdown-sessions/);
    // A stopped leader's refused connection is not retried for 3 s: the client reconnects.
    assert.match(cfg, /^ {2}retries 0$/m);
    assert.match(cfg, /check-ssl verify required ca-file \/data\/inst-gw\/check-ca\.pem/);
    assert.match(cfg, /^ {2}server n2 127\.10\.0\.3:30002 check port 8008$/m);
    assert.throws(() => renderHaproxyConfig({ ...base, backends }), /check_ca/);
  });

  it("takes timeout overrides and brackets IPv6 addresses", () => {
    const cfg = renderHaproxyConfig({
      ...base,
      listen: { host: "::1", port: 5432 },
      timeouts: { server: "2h" },
    });
    assert.match(cfg, /^ {2}bind \[::1\]:5432$/m);
    assert.match(cfg, /^ {2}timeout server 2h$/m);
  });

  it("refuses input that would break or inject into the file", () => {
    const bad: Array<[Partial<typeof base> & { timeouts?: Record<string, string> }, RegExp]> = [
      [{ backends: [] }, /backends/],
      [{ listen: { host: "127.0.0.1 \n  bind *", port: 1 } }, /host/],
      [{ listen: { host: "127.0.0.1", port: 70000 } }, /port/],
      [{ backends: [{ name: "a b", host: "h", port: 1 }] }, /server name/],
      [{ timeouts: { client: "1 day" } }, /timeouts.client/],
      [{ maxConnections: 0 }, /max_connections/],
    ];
    for (const [over, message] of bad) {
      assert.throws(
        () => renderHaproxyConfig({ ...base, ...over }),
        (err: unknown) => err instanceof ValidationError && message.test(err.message),
      );
    }
  });
});

describe("Gateway (real HAProxy in front of a real PostgreSQL)", () => {
  const prefix = loopbackPrefix();
  const nodeHost = `${prefix}.2`;
  const gatewayHost = `${prefix}.3`;
  let dir: string;
  let ca: CertificateAuthority;
  let node: PostgresInstance;
  let gateway: Gateway;
  let spec: GatewaySpec;
  const app = { user: "u_gw", password: randomSecret(64), database: "gw_db" };

  const throughGateway = (over: Partial<pg.ClientConfig> = {}): pg.ClientConfig => ({
    host: gatewayHost,
    port: spec.listen.port,
    user: app.user,
    password: app.password,
    database: app.database,
    ssl: { ca: ca.certPem, rejectUnauthorized: true },
    connectionTimeoutMillis: 5000,
    ...over,
  });

  async function query(config: pg.ClientConfig, sql: string): Promise<Record<string, unknown>[]> {
    const client = new pg.Client(config);
    await client.connect();
    try {
      return (await client.query(sql)).rows;
    } finally {
      await client.end();
    }
  }

  before(async () => {
    dir = await scratchDir("gateway");
    ca = await ensureCa(path.join(dir, "ca"), "osc-fr1");
    node = new PostgresInstance({
      id: "inst-node",
      baseDir: path.join(dir, "inst-node"),
      listenAddress: nodeHost,
      port: await freePort(nodeHost),
    });
    await node.ensureInitialised();
    // TLS passes through: the node's certificate must name the gateway address clients dial.
    await node.ensureServerCertificate(ca, { commonName: "inst-node", ipAddresses: [gatewayHost, nodeHost] });
    await node.configure(planPostgresSettings({ ramMb: 512, maxConnections: 30, model: "shared" }), {
      forceTls: true,
    });
    await node.start();
    await node.ensureRoleAndDatabase(app);
    gateway = new Gateway({ id: "inst-gw", baseDir: path.join(dir, "inst-gw") });
    spec = {
      listen: { host: gatewayHost, port: await freePort(gatewayHost) },
      backends: [{ name: "inst-node", host: nodeHost, port: node.port }],
      maxConnections: 100,
    };
  });

  after(async () => {
    await gateway.destroy().catch((err: Error) => console.error(`cleanup: ${err.message}`));
    await node.destroy().catch((err: Error) => console.error(`cleanup: ${err.message}`));
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("starts and carries verify-full TLS 1.3 through to PostgreSQL", async () => {
    const [result, startMs] = await timed(() => gateway.ensure(spec));
    assert.equal(result, "started");
    const [rows, queryMs] = await timed(() =>
      query(throughGateway(), "SELECT version AS tls FROM pg_stat_ssl WHERE pid = pg_backend_pid()"),
    );
    assert.deepEqual(rows, [{ tls: "TLSv1.3" }]);
    console.log(`timing: gateway start ${startMs} ms, first TLS query through it ${queryMs} ms`);
  });

  it("works for psql with sslmode=verify-full, as a user would connect", async () => {
    const caFile = path.join(dir, "ca", "ca.crt");
    const url = `postgresql://${app.user}@${gatewayHost}:${spec.listen.port}/${app.database}?sslmode=verify-full&sslrootcert=${caFile}`;
    const { stdout } = await execFileAsync(
      "psql",
      [url, "-Atc", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"],
      {
        env: { ...process.env, PGPASSWORD: app.password, PGCONNECT_TIMEOUT: "5" },
      },
    );
    assert.equal(stdout.trim(), "t");
  });

  it("passes PostgreSQL's refusals through: wrong password, plain TCP with Force TLS", async () => {
    const code = async (config: pg.ClientConfig) =>
      query(config, "SELECT 1").then(
        () => "connected",
        (err: { code?: string }) => err.code,
      );
    assert.equal(await code(throughGateway({ password: randomSecret(64) })), "28P01");
    assert.equal(await code(throughGateway({ ssl: false })), "28000");
  });

  it("is unchanged on a second ensure, and adopted by a new Gateway object (agent restart)", async () => {
    assert.equal(await gateway.ensure(spec), "unchanged");
    const adopted = new Gateway({ id: "inst-gw", baseDir: gateway.baseDir });
    assert.equal(await adopted.isRunning(), true);
    assert.equal(await adopted.pid(), await gateway.pid());
    assert.equal(await adopted.ensure(spec), "unchanged");
  });

  it("reloads a changed config without refusing connections, keeping open sessions", async () => {
    const before = await gateway.pid();
    const open = new pg.Client(throughGateway());
    await open.connect();
    let ok = 0;
    const failures: string[] = [];
    let running = true;
    const load = (async () => {
      while (running) {
        await query(throughGateway(), "SELECT 1").then(
          () => ok++,
          (err: Error) => failures.push(err.message),
        );
      }
    })();
    try {
      const [result, reloadMs] = await timed(() => gateway.ensure({ ...spec, maxConnections: 150 }));
      assert.equal(result, "reloaded");
      const okAtReload = ok;
      // Keep connecting until a few connections went through the new process.
      while (ok < okAtReload + 3 && failures.length === 0) await new Promise((r) => setTimeout(r, 20));
      console.log(`timing: gateway reload ${reloadMs} ms`);
    } finally {
      running = false;
      await load;
    }
    assert.deepEqual(failures, []);
    assert.notEqual(await gateway.pid(), before);
    // The session opened before the reload still works (the old process drains it).
    assert.deepEqual((await open.query("SELECT 2 AS n")).rows, [{ n: 2 }]);
    await open.end();
    assert.match(await fs.readFile(gateway.configFile, "utf8"), /maxconn 150/);
  });

  it("fails with a typed error naming the port when the listen port is taken", async () => {
    const blocker = net.createServer();
    const port = await freePort(gatewayHost);
    await new Promise<void>((resolve) => blocker.listen(port, gatewayHost, resolve));
    const other = new Gateway({ id: "inst-gw2", baseDir: path.join(dir, "inst-gw2") });
    try {
      await assert.rejects(
        other.ensure({ ...spec, listen: { host: gatewayHost, port } }),
        (err: unknown) => err instanceof PortInUseError && err.port === port && err.host === gatewayHost,
      );
      assert.equal(await other.isRunning(), false);
    } finally {
      await new Promise((r) => blocker.close(r));
      await other.destroy();
    }
  });

  it("destroy leaves no HAProxy process, no directory, and the port refuses", async () => {
    const pid = await gateway.pid();
    assert.ok(pid !== null);
    await gateway.destroy();
    assert.equal(await isProcessAlive(pid), false);
    assert.deepEqual(await findProcesses(HAPROXY_BIN, gateway.configFile), []);
    await assert.rejects(fs.access(gateway.baseDir));
    assert.equal(await tcpConnectResult(gatewayHost, spec.listen.port), "ECONNREFUSED");
  });
});
