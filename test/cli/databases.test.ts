import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { startHarness, type Harness, type Session } from "../support/api.ts";
import { cliRunner, type CliResult, type CliRunner } from "../support/cli.ts";
import { listen, type Listening } from "../support/server.ts";

describe("cellar CLI: plans, add-ons, console and Dedicated databases", () => {
  let h: Harness;
  let server: Listening;
  let cli: CliRunner;
  let alice: Session;

  /** Runs the CLI while the reconciler works, as the controller's loop would. */
  async function runReconciling(args: string[]): Promise<CliResult> {
    let done = false;
    const child = cli.run(args).finally(() => (done = true));
    const deadline = Date.now() + 60_000;
    while (!done && Date.now() < deadline) {
      await h.loop.drain();
      await new Promise((r) => setTimeout(r, 100));
    }
    return child;
  }

  before(async () => {
    h = await startHarness({ CELLAR_RATE_LIMIT_PER_MINUTE: "10000" });
    server = await listen(h);
    cli = await cliRunner();
    alice = await h.user("alice");
    for (const name of ["web-shop", "console-app"]) {
      const res = await h.call("POST", "/v1/apps", { bearer: alice.bearer, body: { app: { name } } });
      assert.equal(res.status, 201, JSON.stringify(res.json));
    }
    const login = await cli.run(["login", "--api-url", server.url, "--token", alice.apiToken]);
    assert.equal(login.code, 0, login.stderr);
  });
  after(async () => {
    await cli?.cleanup();
    await server?.close();
    await h?.close();
  });

  describe("independent commands", { concurrency: true }, () => {
    it("lists plans as an aligned table and as the API's JSON", async () => {
      const [human, json] = await Promise.all([
        cli.run(["addons-plans", "postgresql"]),
        cli.run(["--json", "addons-plans", "postgresql"]),
      ]);
      assert.equal(human.code, 0, human.stderr);
      const [header, ...rows] = human.stdout.trimEnd().split("\n");
      assert.match(header!, /^NAME\s+DISPLAY NAME\s+RAM\s+STORAGE\s+CONNECTIONS\s+NODES\s+PRICE\/MONTH$/);
      const starter = rows.find((r) => r.startsWith("postgresql-starter-512 "));
      assert.match(starter ?? "", /Starter 512M\s+512 MB\s+10 GB\s+30\s+1\s+7\.20 EUR$/);
      assert.equal(header!.indexOf("RAM"), starter!.indexOf("512 MB"), "columns are aligned");
      const api = await h.call("GET", "/v1/addon_providers/postgresql/plans");
      assert.equal(json.code, 0, json.stderr);
      assert.deepEqual(JSON.parse(json.stdout), api.json);
    });

    it("adds an add-on and, when it cannot run, times out clearly with the reason", async () => {
      const r = await runReconciling([
        "addons-add",
        "--app",
        "web-shop",
        "postgresql",
        "postgresql-starter-512",
        "--wait",
        "--timeout",
        "2s",
      ]);
      assert.equal(r.code, 1);
      const id = /Add-on (ad-[0-9a-f-]+) \(postgresql-starter-512\) added to web-shop/.exec(r.stdout)?.[1];
      assert.ok(id, r.stdout);
      assert.match(r.stdout, /SCALINGO_POSTGRESQL_URL, DATABASE_URL/);
      assert.match(r.stderr, new RegExp(`Waiting for add-on ${id} to be running \\(timeout 2s\\)`));
      assert.match(r.stderr, /\[\s+\d+s\] creating/);
      assert.match(
        r.stderr,
        new RegExp(`timed out after [23]s waiting for add-on ${id} to be running: still creating`),
      );
      const db = (await h.call("GET", `/api/databases/${id}`, { bearer: alice.bearer })).json.database;
      // The reason is shown wherever the API exposes it.
      if (db.phase_reason) assert.ok(r.stderr.includes(db.phase_reason), r.stderr);

      const list = await cli.run(["addons", "--app", "web-shop"]);
      assert.match(
        list.stdout,
        new RegExp(`^${id}\\s+postgresql\\s+postgresql-starter-512\\s+provisioning$`, "m"),
      );
      const upgrade = await cli.run([
        "addons-upgrade",
        "--app",
        "web-shop",
        "postgresql",
        "postgresql-starter-1024",
      ]);
      assert.equal(upgrade.code, 0, upgrade.stderr);
      assert.match(upgrade.stdout, /plan change to postgresql-starter-1024 is pending/);

      const removed = await runReconciling([
        "addons-remove",
        "--app",
        "web-shop",
        id,
        "--wait",
        "--timeout",
        "20s",
      ]);
      assert.equal(removed.code, 0, removed.stderr);
      assert.match(removed.stdout, new RegExp(`Add-on ${id} is deleted`));
      assert.deepEqual(
        (await h.call("GET", "/v1/apps/web-shop/addons", { bearer: alice.bearer })).json.addons,
        [],
      );
    });

    it("opens psql on the app's SCALINGO_POSTGRESQL_URL", async () => {
      const { host, port, database } = h.tdb.config;
      const url = `postgresql:///${database}?host=${encodeURIComponent(String(host))}&port=${port}&user=postgres`;
      const set = await h.call("POST", "/v1/apps/console-app/variables", {
        bearer: alice.bearer,
        body: { variable: { name: "SCALINGO_POSTGRESQL_URL", value: url } },
      });
      assert.equal(set.status, 201);
      const r = await cli.run(["psql-console", "--app", "console-app"], {
        input: "SELECT 40 + 2 AS answer;\n",
      });
      assert.equal(r.code, 0, r.stderr + r.stdout);
      assert.match(r.stdout, /answer\s*\n-+\s*\n\s*42/);
    });

    it("creates, lists and destroys a Dedicated database", async () => {
      const created = await cli.run([
        "database-create",
        "--type",
        "postgresql-ng",
        "--plan",
        "postgresql-dr-starter-4096",
        "orders-db",
      ]);
      assert.equal(created.code, 0, created.stderr);
      const id = /database (\S+) \('orders-db'\) is being provisioned/.exec(created.stdout)?.[1];
      assert.ok(id, created.stdout);
      const list = await cli.run(["databases"]);
      assert.match(
        list.stdout,
        new RegExp(
          `^${id}\\s+orders-db\\s+postgresql-ng\\s+postgresql-dr-starter-4096\\s+owner\\s+creating`,
          "m",
        ),
      );
      const smaller = await cli.run(["database-upgrade", "orders-db", "postgresql-starter-512"]);
      assert.equal(smaller.code, 1);
      assert.match(smaller.stderr, /^cellar: plan_id: /);
      const destroyed = await cli.run(["database-destroy", id], { input: "orders-db\n" });
      assert.equal(destroyed.code, 0, destroyed.stderr);
      assert.match(destroyed.stdout, /Database orders-db \(.+\) is being deleted/);
    });
  });
});
