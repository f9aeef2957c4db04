import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import pg from "pg";
import { randomSecret } from "../../src/domain/ids.ts";
import { PgTemplate } from "../../src/engines/postgresql/data-dir.ts";
import { PortInUseError } from "../../src/engines/postgresql/errors.ts";
import { PostgresInstance } from "../../src/engines/postgresql/instance.ts";
import { PG_BIN_DIR } from "../../src/engines/postgresql/local-cluster.ts";
import { planPostgresSettings } from "../../src/engines/postgresql/plan-settings.ts";
import { isProcessAlive, waitFor } from "../../src/engines/postgresql/process-watch.ts";
import { queryOnce } from "../../src/engines/postgresql/superuser.ts";
import { type CertificateAuthority, ensureCa } from "../../src/engines/tls/certificates.ts";
import { freePort, loopbackPrefix, scratchDir, tcpConnectResult, timed } from "./engine-fixtures.ts";

const execFileAsync = promisify(execFile);
const STARTER_512 = planPostgresSettings({ ramMb: 512, maxConnections: 30, model: "shared" });

async function systemIdentifier(dataDir: string): Promise<string> {
  const { stdout } = await execFileAsync(path.join(PG_BIN_DIR, "pg_controldata"), [dataDir]);
  return /Database system identifier:\s+(\d+)/.exec(stdout)?.[1] ?? "";
}

describe("PostgresInstance (real PostgreSQL 15)", () => {
  const net = loopbackPrefix();
  const host = `${net}.2`;
  let dir: string;
  let ca: CertificateAuthority;
  let template: PgTemplate;
  let inst: PostgresInstance;
  const instances: PostgresInstance[] = [];
  const app = { user: "u_app_1", password: randomSecret(64), database: "app_db_1" };

  /** verify-full: CA check, and the IP we dial must be in the certificate. */
  const clientConfig = (over: Partial<pg.ClientConfig> = {}): pg.ClientConfig => ({
    host,
    port: inst.port,
    user: app.user,
    password: app.password,
    database: app.database,
    ssl: { ca: ca.certPem, rejectUnauthorized: true },
    connectionTimeoutMillis: 5000,
    ...over,
  });

  const connectError = async (config: pg.ClientConfig): Promise<string> => {
    const client = new pg.Client(config);
    try {
      await client.connect();
      await client.end();
      return "connected";
    } catch (err) {
      return (err as { code?: string }).code ?? (err as Error).message;
    }
  };

  before(async () => {
    dir = await scratchDir("pg-instance");
    ca = await ensureCa(path.join(dir, "ca"), "osc-fr1");
    template = new PgTemplate(path.join(dir, "template"));
    const [, ms] = await timed(() => template.ensure());
    console.log(`timing: template initdb ${ms} ms`);
    inst = new PostgresInstance({
      id: "inst-a",
      baseDir: path.join(dir, "inst-a"),
      listenAddress: host,
      port: await freePort(host),
    });
    instances.push(inst);
  });

  after(async () => {
    for (const i of instances)
      await i.destroy().catch((err: Error) => console.error(`cleanup: ${err.message}`));
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("provisions from the template with its own system identifier, then serves verify-full TLS 1.3", async () => {
    const [how, initMs] = await timed(() => inst.ensureInitialised({ template }));
    assert.equal(how, "template");
    assert.equal(await inst.ensureInitialised({ template }), "existing");
    assert.notEqual(await systemIdentifier(inst.dataDir), await systemIdentifier(template.dataDir));

    await inst.ensureServerCertificate(ca, { commonName: "inst-a", ipAddresses: [host] });
    assert.deepEqual(await inst.configure(STARTER_512, { forceTls: false }), { changed: true });
    assert.deepEqual(await inst.configure(STARTER_512, { forceTls: false }), { changed: false });
    const [started, startMs] = await timed(() => inst.start());
    assert.deepEqual(started, { started: true });
    assert.deepEqual(await inst.start(), { started: false });
    const [, roleMs] = await timed(() => inst.ensureRoleAndDatabase(app));
    // The template's spare database became the user's database (no CREATE DATABASE).
    const dbs = await queryOnce<{ datname: string }>(
      inst.superuserConfig(),
      "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY datname",
    );
    assert.deepEqual(
      dbs.map((d) => d.datname),
      [app.database, "postgres"],
    );

    const client = new pg.Client(clientConfig());
    const [, connectMs] = await timed(() => client.connect());
    try {
      const { rows } = await client.query<Record<string, string>>(
        `SELECT s.version AS tls, current_user AS who, current_database() AS db,
                current_setting('max_connections') AS max_conn, current_setting('shared_buffers') AS sb
           FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()`,
      );
      assert.deepEqual(rows, [
        { tls: "TLSv1.3", who: app.user, db: app.database, max_conn: "33", sb: "128MB" },
      ]);
      // Owner of its database: may create in public.
      await client.query("CREATE TABLE t (id serial PRIMARY KEY, v text)");
      await client.query("INSERT INTO t (v) VALUES ('kept')");
    } finally {
      await client.end();
    }
    console.log(
      `timing: clone ${initMs} ms, start ${startMs} ms, role+db ${roleMs} ms, first TLS connect ${connectMs} ms`,
    );
  });

  it("stores SCRAM verifiers and refuses a wrong password", async () => {
    const rows = await queryOnce<{ pw: string }>(
      inst.superuserConfig(),
      "SELECT rolpassword AS pw FROM pg_authid WHERE rolname = $1",
      [app.user],
    );
    assert.match(rows[0]?.pw ?? "", /^SCRAM-SHA-256\$4096:/);
    assert.equal(await connectError(clientConfig({ password: randomSecret(64) })), "28P01");
  });

  it("updates the password when ensureRoleAndDatabase runs again, keeping the data", async () => {
    const old = app.password;
    app.password = randomSecret(64);
    await inst.ensureRoleAndDatabase(app);
    assert.equal(await connectError(clientConfig({ password: old })), "28P01");
    const rows = await queryOnce<{ v: string }>(clientConfig(), "SELECT v FROM t");
    assert.deepEqual(rows, [{ v: "kept" }]);
  });

  it("never lets the superuser in over the network", async () => {
    assert.equal(await connectError(clientConfig({ user: "postgres", password: "x" })), "28000");
  });

  it("accepts plain connections (sslmode=prefer clients) until TLS is forced", async () => {
    assert.equal(await connectError(clientConfig({ ssl: false })), "connected");
    assert.deepEqual(await inst.configure(STARTER_512, { forceTls: true }), { changed: true });
    assert.deepEqual(await inst.reload(), { pendingRestart: [] });
    assert.equal(await connectError(clientConfig({ ssl: false })), "28000");
    assert.equal(await connectError(clientConfig()), "connected");
  });

  it("reports settings that need a restart on a plan change, and applies them on restart", async () => {
    const bigger = planPostgresSettings({ ramMb: 1024, maxConnections: 60, model: "shared" });
    await inst.configure(bigger, { forceTls: true });
    assert.deepEqual((await inst.reload()).pendingRestart, ["max_connections", "shared_buffers"]);
    const [, restartMs] = await timed(() => inst.restart());
    const rows = await queryOnce<{ sb: string; v: string }>(
      clientConfig(),
      "SELECT current_setting('shared_buffers') AS sb, (SELECT v FROM t) AS v",
    );
    assert.deepEqual(rows, [{ sb: "256MB", v: "kept" }]);
    assert.deepEqual((await inst.reload()).pendingRestart, []);
    console.log(`timing: restart ${restartMs} ms`);
  });

  it("logs through the collector into the instance's log directory", async () => {
    const file = await inst.currentLogFile();
    assert.ok(file !== null && file.startsWith(inst.logDir), `log file ${file} is in ${inst.logDir}`);
    assert.match(await fs.readFile(file, "utf8"), /database system is ready to accept connections/);
  });

  it("fails with a typed error naming the port when the port is taken, and wipes a half-done initdb", async () => {
    const other = new PostgresInstance({
      id: "inst-b",
      baseDir: path.join(dir, "inst-b"),
      listenAddress: host,
      port: inst.port,
    });
    instances.push(other);
    // A crash during initdb leaves the temporary directory behind.
    await fs.mkdir(`${other.dataDir}.init/base`, { recursive: true });
    await fs.writeFile(`${other.dataDir}.init/PG_VERSION`, "15\n");
    const [how, initdbMs] = await timed(() => other.ensureInitialised());
    assert.equal(how, "initdb");
    await other.ensureServerCertificate(ca, { commonName: "inst-b", ipAddresses: [host] });
    await other.configure(STARTER_512, { forceTls: false });
    await assert.rejects(
      other.start(),
      (err: unknown) =>
        err instanceof PortInUseError &&
        err.port === inst.port &&
        err.message.includes(`${host}:${inst.port}`),
    );
    assert.equal(await other.isReady(), false);
    console.log(`timing: initdb ${initdbMs} ms`);
  });

  it("tells a ready server from a stopped one without connecting (seemsReady)", async () => {
    assert.equal(await inst.seemsReady(), true);
    await inst.stop();
    assert.equal(await inst.seemsReady(), false);
    await inst.start();
    assert.equal(await inst.seemsReady(), true);
    // Killed: postmaster.pid still says "ready", but its postmaster is gone (or a zombie).
    process.kill((await inst.postmasterPid())!, "SIGKILL");
    await waitFor("the postmaster to die", async () => !(await inst.seemsReady()), 10_000);
    await inst.start();
    assert.equal(await inst.seemsReady(), true);
  });

  it("destroy leaves no process, no directory, and refuses connections", async () => {
    const pid = await inst.postmasterPid();
    assert.ok(pid !== null && (await isProcessAlive(pid)));
    const [, destroyMs] = await timed(() => inst.destroy());
    assert.equal(await isProcessAlive(pid), false);
    await assert.rejects(fs.access(inst.baseDir));
    assert.equal(await tcpConnectResult(host, inst.port), "ECONNREFUSED");
    await inst.destroy(); // idempotent
    console.log(`timing: destroy ${destroyMs} ms`);
  });
});
