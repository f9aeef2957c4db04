import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { startHarness, type Harness, type Session } from "../support/api.ts";
import { cliRunner, type CliRunner } from "../support/cli.ts";
import { listen, type Listening } from "../support/server.ts";

/** A loopback port nothing listens on (taken, then released). */
async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

describe("cellar CLI: login and apps", () => {
  let h: Harness;
  let server: Listening;
  let cli: CliRunner;
  let alice: Session;

  before(async () => {
    h = await startHarness({ CELLAR_RATE_LIMIT_PER_MINUTE: "10000" });
    server = await listen(h);
    cli = await cliRunner();
    alice = await h.user("alice");
  });
  after(async () => {
    await cli?.cleanup();
    await server?.close();
    await h?.close();
  });

  it("refuses a bad token and saves nothing", async () => {
    const r = await cli.run(["login", "--api-url", server.url, "--token", "tk-us-wrong"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /refused this token/);
    assert.equal(fs.existsSync(path.join(cli.configDir, "credentials.json")), false);
  });

  it("says which URL cannot be reached", async () => {
    const closed = await closedPort();
    const r = await cli.run(["login", "--api-url", `http://127.0.0.1:${closed}`, "--token", alice.apiToken]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      new RegExp(`cannot reach POST http://127\\.0\\.0\\.1:${closed}/v1/tokens/exchange: ECONNREFUSED`),
    );
  });

  it("asks to log in before anything else", async () => {
    const r = await cli.run(["apps"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /not logged in: run "cellar login/);
  });

  it("logs in with a good token, keeps it private, and knows who you are", async () => {
    const r = await cli.run(["login", "--api-url", `${server.url}/v1`, "--token", alice.apiToken]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /as alice/);
    const file = path.join(cli.configDir, "credentials.json");
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    const saved = JSON.parse(fs.readFileSync(file, "utf8"));
    assert.equal(saved.api_url, server.url);
    assert.equal(saved.token, alice.apiToken);
    assert.ok(saved.bearer_refresh_at > Date.now() / 1000, "the bearer is cached");
    const me = await cli.run(["whoami"]);
    assert.equal(me.code, 0, me.stderr);
    assert.match(me.stdout, /User:\s+alice/);
  });

  describe("once logged in", { concurrency: true }, () => {
    it("creates, lists and destroys an app, with a typed confirmation", async () => {
      const created = await cli.run(["create", "my-shop"]);
      assert.equal(created.code, 0, created.stderr);
      assert.match(created.stdout, /App my-shop created/);

      const taken = await cli.run(["create", "my-shop"]);
      assert.equal(taken.code, 1);
      assert.equal(taken.stderr.trim(), "cellar: name: is already taken");

      const list = await cli.run(["apps"]);
      assert.equal(list.code, 0, list.stderr);
      const [header, ...rows] = list.stdout.trimEnd().split("\n");
      assert.match(header!, /^NAME\s+OWNER\s+REGION\s+CREATED$/);
      const row = rows.find((r) => r.startsWith("my-shop "));
      assert.match(row ?? "", /^my-shop\s+alice\s+osc-fr1\s+\d{4}-/);
      assert.equal(header!.indexOf("OWNER"), row!.indexOf("alice"), "columns are aligned");

      const wrong = await cli.run(["destroy", "--app", "my-shop"], { input: "my-shoe\n" });
      assert.equal(wrong.code, 1);
      assert.match(wrong.stderr, /does not match my-shop: nothing was deleted/);

      const typed = await cli.run(["destroy", "--app", "my-shop"], { input: "my-shop\n" });
      assert.equal(typed.code, 0, typed.stderr);
      assert.match(typed.stdout, /App my-shop deleted/);
      const left = (await h.call("GET", "/v1/apps", { bearer: alice.bearer })).json.apps;
      assert.ok(!left.some((a: { name: string }) => a.name === "my-shop"));
    });

    it("prints a 404 as what was not found", async () => {
      const missing = await cli.run(["apps-info", "--app", "nope-nope"]);
      assert.equal(missing.code, 1);
      assert.equal(missing.stderr.trim(), "cellar: app not found");
    });

    it("manages collaborators by email", async () => {
      await h.call("POST", "/v1/apps", { bearer: alice.bearer, body: { app: { name: "team-app" } } });
      const add = await cli.run(["collaborators-add", "--app", "team-app", "bob@example.test"]);
      assert.equal(add.code, 0, add.stderr);
      assert.match(add.stdout, /bob@example\.test is invited to team-app/);
      const listed = await h.call("GET", "/v1/apps/team-app/collaborators", { bearer: alice.bearer });
      assert.equal(listed.json.collaborators[0].email, "bob@example.test");
      const rm = await cli.run(["collaborators-remove", "--app", "team-app", "bob@example.test"]);
      assert.equal(rm.code, 0, rm.stderr);
      assert.equal(
        (await h.call("GET", "/v1/apps/team-app/collaborators", { bearer: alice.bearer })).json.collaborators
          .length,
        0,
      );
    });
  });

  it("asks to log in again when the token is revoked, and logs out", async () => {
    const tokens = await h.call("GET", "/v1/tokens", { bearer: alice.bearer });
    await h.call("DELETE", `/v1/tokens/${tokens.json.tokens[0].id}`, { bearer: alice.bearer });
    const r = await cli.run(["apps"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /refused this token/);
    const out = await cli.run(["logout"]);
    assert.equal(out.code, 0);
    assert.equal(fs.existsSync(path.join(cli.configDir, "credentials.json")), false);
  });
});
