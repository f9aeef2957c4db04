import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { startHarness, type Harness } from "../support/api.ts";

describe("auth API", () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ CELLAR_RATE_LIMIT_PER_MINUTE: "5" });
  });
  after(async () => h.close());

  it("exchanges an API token for a bearer valid one hour", async () => {
    const s = await h.user("alice");
    const payload = JSON.parse(Buffer.from(s.bearer.split(".")[1]!, "base64url").toString()) as {
      exp: number;
      iat: number;
    };
    assert.equal(payload.exp - payload.iat, 3600);
    const me = await h.call("GET", "/v1/users/self", { bearer: s.bearer });
    assert.equal(me.status, 200);
    assert.equal(me.json.user.username, "alice");
  });

  it("refuses a wrong API token and a missing or forged bearer", async () => {
    const bad = await h.call("POST", "/v1/tokens/exchange", {
      headers: { authorization: `Basic ${Buffer.from(":tk-us-nope").toString("base64")}` },
    });
    assert.equal(bad.status, 401);
    assert.equal((await h.call("GET", "/v1/users/self")).status, 401);
    const forged = await h.call("GET", "/v1/users/self", { bearer: "eyJhbGciOiJIUzI1NiJ9.e30.AAAA" });
    assert.equal(forged.status, 401);
    assert.match(forged.json.error, /invalid or expired/);
  });

  it("stores only token hashes", async () => {
    const s = await h.user("bob");
    const { rows } = await h.deps.db.query("SELECT token_hash::text AS h FROM api_tokens");
    assert.ok(rows.every((r: { h: string }) => !r.h.includes(s.apiToken)));
  });

  it("renewing a token ends its sessions; revoking does too", async () => {
    const s = await h.user("carol");
    const list = await h.call("GET", "/v1/tokens", { bearer: s.bearer });
    assert.equal(list.json.tokens.length, 1);
    assert.equal(list.json.tokens[0].token, undefined, "secrets are never listed");
    const second = await h.call("POST", "/v1/tokens", { bearer: s.bearer, body: { token: { name: "ci" } } });
    assert.equal(second.status, 201);
    assert.match(second.json.token.token, /^tk-us-/);
    const id = list.json.tokens[0].id as string;
    // Renewal happens within the same second as the exchange: wait for the next second.
    await new Promise((r) => setTimeout(r, 1100));
    const renewed = await h.call("PATCH", `/v1/tokens/${id}/renew`, { bearer: s.bearer });
    assert.equal(renewed.status, 200);
    assert.notEqual(renewed.json.token.token, s.apiToken);
    assert.equal((await h.call("GET", "/v1/users/self", { bearer: s.bearer })).status, 401);
  });

  it("answers 429 past the per-token rate limit", async () => {
    const s = await h.user("dave");
    const statuses: number[] = [];
    for (let i = 0; i < 7; i++)
      statuses.push((await h.call("GET", "/v1/users/self", { bearer: s.bearer })).status);
    assert.ok(statuses.includes(429), `got ${statuses.join(",")}`);
    const last = await h.call("GET", "/v1/users/self", { bearer: s.bearer });
    assert.equal(last.status, 429);
    assert.ok(Number(last.headers.get("retry-after")) >= 1);
  });

  it("lets only admins create users", async () => {
    const admin = await h.user("root", { admin: true });
    const plain = await h.user("eve");
    const denied = await h.call("POST", "/v1/admin/users", {
      bearer: plain.bearer,
      body: { user: { username: "mallory", email: "m@example.test" } },
    });
    assert.equal(denied.status, 403);
    const made = await h.call("POST", "/v1/admin/users", {
      bearer: admin.bearer,
      body: { user: { username: "frank", email: "frank@example.test" } },
    });
    assert.equal(made.status, 201);
    const tok = await h.call("POST", `/v1/admin/users/${made.json.user.id}/tokens`, { bearer: admin.bearer });
    assert.equal(tok.status, 201);
    assert.match(tok.json.token.token, /^tk-us-/);
  });
});
