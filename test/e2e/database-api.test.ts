// The database API against a real Starter database (agent, PostgreSQL, HAProxy): users
// made for real and used over verify-full TLS, instance status, metrics read on the host,
// the PostgreSQL log, the region CA, phase fields.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { connectVerified, startCluster, type Cluster } from "../support/cluster.ts";

describe("database API on a real Starter database, end to end", () => {
  let cl: Cluster;
  let ca = "";
  let addonId = "";
  let url = "";
  let protectedName = "";

  before(async () => {
    cl = await startCluster({
      subnet: 51,
      hosts: [{ name: "e2e-dbapi-s1", pool: "shared", az: "osc-fr1-a" }],
    });
    ca = await cl.regionCa();
    assert.equal((await cl.api("POST", "/v1/apps", { app: { name: "dbapi-app" } })).status, 201);
    const res = await cl.api("POST", "/v1/apps/dbapi-app/addons", {
      addon: { addon_provider_id: "postgresql", plan_id: "postgresql-starter-512" },
    });
    assert.equal(res.status, 201);
    addonId = res.json.addon.id;
    await cl.waitFor("the add-on to run", async () =>
      (await cl.api("GET", `/v1/apps/dbapi-app/addons/${addonId}`)).json.addon.status === "running"
        ? true
        : undefined,
    );
    const vars = (await cl.api("GET", "/v1/apps/dbapi-app/variables")).json.variables;
    url = vars.find((v: { name: string }) => v.name === "SCALINGO_POSTGRESQL_URL").value;
    protectedName = decodeURIComponent(new URL(url).username);
    // Seed data before any user exists: later users must see it as their grants say.
    const owner = await connectVerified(url, ca);
    try {
      await owner.query("CREATE TABLE before_users (id serial primary key, note text)");
      await owner.query("INSERT INTO before_users (note) VALUES ('seeded')");
    } finally {
      await owner.end();
    }
  });
  after(async () => cl?.close());

  /** A database-API call with a fresh add-on token, as the reference's clients do. */
  const dbApi = async (method: string, path: string, body?: unknown) => {
    const tok = await cl.api("POST", `/v1/apps/dbapi-app/addons/${addonId}/token`);
    assert.equal(tok.status, 200);
    const res = await fetch(`${cl.controller.url}/api/databases/${addonId}${path}`, {
      method,
      headers: { authorization: `Bearer ${tok.json.addon.token}`, "content-type": "application/json" },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null };
  };

  const urlFor = (user: string, password: string) => {
    const u = new URL(url);
    u.username = user;
    u.password = password;
    return u.toString();
  };

  /** Runs `fn` on a verify-full connection as `user`. */
  const as = async <T>(user: string, password: string, fn: (c: pg.Client) => Promise<T>): Promise<T> => {
    const client = await connectVerified(urlFor(user, password), ca);
    try {
      return await fn(client);
    } finally {
      await client.end();
    }
  };

  const chosen = `chosen-${randomBytes(12).toString("hex")}`; // 31 characters
  let readerPassword = "";

  it("shows the database's phase, instances and gateway address", async () => {
    const res = await dbApi("GET", "");
    assert.equal(res.status, 200);
    const db = res.json.database;
    assert.equal(db.status, "running");
    assert.equal(db.phase, "running");
    assert.equal(db.phase_reason, "");
    const gateway = new URL(url);
    assert.equal(db.hostname, `${gateway.hostname}:${gateway.port}`);
    assert.deepEqual(db.instances.map((i: { type: string }) => i.type).sort(), ["db-node", "haproxy"]);
    for (const i of db.instances) assert.equal(i.status, "running");
  });

  it("serves the region CA without authentication, under every region prefix", async () => {
    for (const path of ["/api/ca.pem", "/regions/osc-fr1/api/ca.pem"]) {
      const res = await fetch(`${cl.controller.url}${path}`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
      assert.equal(await res.text(), ca);
    }
  });

  it("lists the protected user, SCRAM-encrypted", async () => {
    const res = await dbApi("GET", "/users");
    assert.equal(res.status, 200);
    assert.deepEqual(res.json["database-users"], [
      {
        name: protectedName,
        read_only: false,
        protected: true,
        dbms_attributes: { password_encryption: "SCRAM-SHA-256" },
      },
    ]);
  });

  it("creates a user with a chosen password, never echoed, who can write", async () => {
    const res = await dbApi("POST", "/users", {
      database_user: {
        database_id: addonId,
        name: "app_writer",
        read_only: false,
        password: chosen,
        password_confirmation: chosen,
      },
    });
    assert.equal(res.status, 201, JSON.stringify(res.json));
    assert.deepEqual(res.json.database_user, {
      name: "app_writer",
      read_only: false,
      protected: false,
      dbms_attributes: { password_encryption: "SCRAM-SHA-256" },
    });
    await as("app_writer", chosen, async (c) => {
      await c.query("INSERT INTO before_users (note) VALUES ('by the writer')");
      await c.query("CREATE TABLE writer_table (id int)");
      await c.query("INSERT INTO writer_table VALUES (1)");
    });
    // The protected user uses what the writer made.
    await as(protectedName, new URL(url).password, async (c) => {
      assert.equal((await c.query("SELECT count(*)::int AS n FROM writer_table")).rows[0].n, 1);
    });
  });

  it("creates a read-only user with a generated password, returned once, who cannot write", async () => {
    const res = await dbApi("POST", "/users", { database_user: { name: "reporting", read_only: true } });
    assert.equal(res.status, 201, JSON.stringify(res.json));
    readerPassword = res.json.database_user.password;
    assert.match(readerPassword, /^[A-Za-z0-9_]{64}$/);
    assert.equal(res.json.database_user.read_only, true);
    // Tables made after the user by the owner and by a writer are readable too (default privileges).
    await as(protectedName, new URL(url).password, (c) =>
      c.query("CREATE TABLE after_users AS SELECT 1 AS x"),
    );
    await as("app_writer", chosen, (c) => c.query("CREATE TABLE writer_later AS SELECT 2 AS y"));
    await as("reporting", readerPassword, async (c) => {
      const ssl = await c.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
      assert.equal(ssl.rows[0].ssl, true);
      assert.equal((await c.query("SELECT count(*)::int AS n FROM before_users")).rows[0].n, 2);
      assert.equal((await c.query("SELECT x FROM after_users")).rows[0].x, 1);
      assert.equal((await c.query("SELECT y FROM writer_later")).rows[0].y, 2);
      assert.equal((await c.query("SELECT last_value FROM before_users_id_seq")).rows[0].last_value, 2);
      await assert.rejects(c.query("SELECT nextval('before_users_id_seq')"), /permission denied/);
      await assert.rejects(c.query("INSERT INTO before_users (note) VALUES ('no')"), /permission denied/);
      await assert.rejects(c.query("UPDATE writer_table SET id = 2"), /permission denied/);
      await assert.rejects(c.query("DELETE FROM after_users"), /permission denied/);
      await assert.rejects(c.query("CREATE TABLE mine (id int)"), /permission denied/);
      await assert.rejects(c.query("SELECT cellar.list_users()"), /permission denied/);
    });
    const list = await dbApi("GET", "/users");
    assert.deepEqual(
      list.json["database-users"].map((u: { name: string; read_only: boolean; protected: boolean }) => [
        u.name,
        u.read_only,
        u.protected,
      ]),
      [
        [protectedName, false, true],
        ["app_writer", false, false],
        ["reporting", true, false],
      ],
    );
  });

  it("refuses bad names, bad passwords and taken names with the rule", async () => {
    const cases: Array<[unknown, string]> = [
      [{ name: "abc" }, "name"],
      [{ name: "1abcdef" }, "name"],
      [{ name: "cellar_read_write" }, "name"],
      [{ name: "postgres" }, "name"],
      [{ name: "app_writer" }, "name"],
      [{ name: protectedName }, "name"],
      [{ name: "another_one", password: "too-short" }, "password"],
      [{ name: "another_one", password: `${"x".repeat(30)}'` }, "password"],
      [
        { name: "another_one", password: chosen, password_confirmation: `${chosen}x` },
        "password_confirmation",
      ],
      [{ name: "another_one", database_id: "ad-other" }, "database_id"],
    ];
    for (const [user, field] of cases) {
      const res = await dbApi("POST", "/users", { database_user: user });
      assert.equal(res.status, 422, `${JSON.stringify(user)}: ${JSON.stringify(res.json)}`);
      assert.deepEqual(Object.keys(res.json.errors), [field], JSON.stringify(res.json));
    }
    const names = (await dbApi("GET", "/users")).json["database-users"].map((u: { name: string }) => u.name);
    assert.equal(names.length, 3);
  });

  it("never lets the protected user be changed or deleted", async () => {
    for (const [method, path, body] of [
      [
        "PATCH",
        `/users/${protectedName}`,
        { database_user: { password: chosen, password_confirmation: chosen } },
      ],
      ["POST", `/users/${protectedName}/reset_password`, undefined],
      ["DELETE", `/users/${protectedName}`, undefined],
    ] as const) {
      const res = await dbApi(method, path, body);
      assert.equal(res.status, 422, `${method} ${path}`);
      assert.match(res.json.errors.name[0], /protected user of this database/);
    }
    await as(protectedName, new URL(url).password, (c) => c.query("SELECT 1"));
  });

  it("changes a password: the old one stops working, the new one works", async () => {
    const next = `changed-${randomBytes(12).toString("hex")}`;
    const res = await dbApi("PATCH", "/users/app_writer", {
      database_user: { database_id: addonId, password: next, password_confirmation: next },
    });
    assert.equal(res.status, 200, JSON.stringify(res.json));
    assert.equal(res.json.database_user.password, undefined);
    await assert.rejects(
      as("app_writer", chosen, (c) => c.query("SELECT 1")),
      /password authentication failed/,
    );
    await as("app_writer", next, (c) => c.query("SELECT 1"));
  });

  it("resets a password to a generated one, returned once", async () => {
    const res = await dbApi("POST", "/users/reporting/reset_password");
    assert.equal(res.status, 200, JSON.stringify(res.json));
    const fresh = res.json.database_user.password;
    assert.match(fresh, /^[A-Za-z0-9_]{64}$/);
    assert.notEqual(fresh, readerPassword);
    await assert.rejects(
      as("reporting", readerPassword, (c) => c.query("SELECT 1")),
      /password authentication failed/,
    );
    readerPassword = fresh;
    await as("reporting", readerPassword, (c) => c.query("SELECT 1"));
  });

  it("answers 404 for a user that does not exist", async () => {
    assert.equal((await dbApi("PATCH", "/users/nobody_here", { database_user: {} })).status, 404);
    assert.equal((await dbApi("POST", "/users/nobody_here/reset_password")).status, 404);
    assert.equal((await dbApi("DELETE", "/users/nobody_here")).status, 404);
  });

  it("deletes a user: its open session ends, it cannot log in, its tables stay", async () => {
    const session = await connectVerified(urlFor("reporting", readerPassword), ca);
    session.on("error", () => undefined);
    assert.equal((await dbApi("DELETE", "/users/reporting")).status, 204);
    await assert.rejects(session.query("SELECT 1"));
    await session.end().catch(() => undefined);
    await assert.rejects(
      as("reporting", readerPassword, (c) => c.query("SELECT 1")),
      /password authentication failed/,
    );
    // A writer's tables are handed to the protected user when the writer goes.
    const pw = `changed-${randomBytes(12).toString("hex")}`;
    await dbApi("PATCH", "/users/app_writer", { database_user: { password: pw } });
    assert.equal((await dbApi("DELETE", "/users/app_writer")).status, 204);
    await as(protectedName, new URL(url).password, async (c) => {
      const owner = await c.query("SELECT tableowner FROM pg_tables WHERE tablename = 'writer_table'");
      assert.equal(owner.rows[0].tableowner, protectedName);
    });
    const names = (await dbApi("GET", "/users")).json["database-users"].map((u: { name: string }) => u.name);
    assert.deepEqual(names, [protectedName]);
  });

  it("reports instance status in the reference's words", async () => {
    const res = await dbApi("GET", "/instances_status");
    assert.equal(res.status, 200);
    const byType = Object.fromEntries(res.json.map((i: { type: string }) => [i.type, i]));
    assert.equal(res.json.length, 2);
    assert.equal(byType["db-node"].status, "running");
    assert.equal(byType["db-node"].role, "leader");
    assert.match(byType["db-node"].id, /^inst-/);
    assert.equal(byType.haproxy.status, "running");
    assert.equal(byType.haproxy.role, "");
    // A Shared node is encrypted at rest only where its host's filesystem can (not this
    // machine's root filesystem): otherwise it says why, and so does the database object.
    const node = byType["db-node"];
    if (!node.encryption_at_rest) {
      assert.match(node.encryption_at_rest_detail, /has no ext4 encryption feature/);
      assert.equal((await dbApi("GET", "")).json.database.encryption_at_rest, false);
    }
  });

  it("reports real CPU, memory and disk, read on the host", async () => {
    // Keep the node busy for a few seconds; its CPU share must show in the metrics.
    const busy = await connectVerified(url, ca);
    busy.on("error", () => undefined);
    await busy.query("SET statement_timeout = '20s'");
    const pid = (await busy.query("SELECT pg_backend_pid() AS pid")).rows[0].pid as number;
    const burn = busy.query("SELECT count(*) FROM generate_series(1, 1e10)").catch(() => undefined);
    try {
      const metrics = await cl.waitFor(
        "CPU use in the metrics",
        async () => {
          const res = await dbApi("GET", "/metrics");
          return res.json.cpu_usage > 50 ? res.json : undefined;
        },
        15_000,
      );
      const [id, node] = Object.entries(metrics.instances_metrics)[0] as [string, any];
      assert.equal(Object.keys(metrics.instances_metrics).length, 1);
      assert.equal(node.instance_id, id);
      assert.match(node.instance_address, /^127\.51\.0\.1:\d+$/);
      assert.ok(node.cpu.usage_in_percents > 50);
      // The plan's limit (512 MB), as the kernel enforces it, and a real working set below it.
      assert.equal(node.memory.memory_limit, 512 * 1024 * 1024);
      assert.ok(node.memory.memory_usage > 4 * 1024 * 1024, `memory ${node.memory.memory_usage}`);
      assert.ok(node.memory.memory_usage < node.memory.memory_limit);
      assert.ok(node.memory.max_memory_usage >= node.memory.memory_usage);
      assert.ok(node.real_disk_size > 10 * 1024 * 1024, `disk ${node.real_disk_size}`);
      assert.equal(metrics.memory.memory_limit, node.memory.memory_limit);
      assert.equal(metrics.real_disk_size, node.real_disk_size);
    } finally {
      await as(protectedName, new URL(url).password, (c) => c.query("SELECT pg_cancel_backend($1)", [pid]));
      await burn;
      await busy.end().catch(() => undefined);
    }
  });

  it("serves the node's real PostgreSQL log through a short-lived URL", async () => {
    const marker = `missing_table_${randomBytes(6).toString("hex")}`;
    await as(protectedName, new URL(url).password, (c) =>
      c.query(`SELECT * FROM ${marker}`).catch(() => undefined),
    );
    const res = await dbApi("GET", "/logs");
    assert.equal(res.status, 200);
    const logUrl = new URL(res.json.url);
    assert.equal(logUrl.pathname, `/regions/osc-fr1/api/databases/${addonId}/logs/stream`);
    const text = await cl.waitFor(
      "the marker in the log",
      async () => {
        const r = await fetch(logUrl);
        assert.equal(r.status, 200, await r.clone().text());
        const body = await r.text();
        return body.includes(marker) ? body : undefined;
      },
      20_000,
    );
    assert.match(text, new RegExp(`ERROR:  relation "${marker}" does not exist`));
    assert.match(text, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC \[\d+\] /m);
    // Passwords set through the API never reach the server's log (only SCRAM verifiers do).
    assert.ok(!text.includes(chosen));
    const few = await (await fetch(`${logUrl.toString()}&n=3`)).text();
    assert.equal(few.trimEnd().split("\n").length, 3);
  });

  it("refuses a log URL whose token is forged, and never takes it as an API bearer", async () => {
    const { json } = await dbApi("GET", "/logs");
    const logUrl = new URL(json.url);
    const token = logUrl.searchParams.get("token")!;
    logUrl.searchParams.set("token", token.slice(0, -2) + (token.endsWith("A") ? "BB" : "AA"));
    assert.equal((await fetch(logUrl)).status, 401);
    const asBearer = await fetch(`${cl.controller.url}/api/databases/${addonId}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(asBearer.status, 401);
    // An add-on token is no log URL token either.
    const tok = (await cl.api("POST", `/v1/apps/dbapi-app/addons/${addonId}/token`)).json.addon.token;
    logUrl.searchParams.set("token", tok);
    assert.equal((await fetch(logUrl)).status, 401);
  });
});
