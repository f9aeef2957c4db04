// The reference's official JavaScript client (npm `scalingo`) driving Cellar over HTTP, unmodified:
// only its API and auth URLs point at a Cellar listener. No host runs, so add-ons stay provisioning.
import assert from "node:assert/strict";
import type { Server } from "node:http";
import { after, before, describe, it } from "node:test";
import { serve } from "@hono/node-server";
import { Client, clientFromToken } from "scalingo";
import { startHarness, type Harness, type Session } from "../support/api.ts";
import { freePort } from "../support/cluster.ts";

/** The client rejects with its APIError (status + parsed body); it is not exported, so duck-typed. */
async function apiError(call: Promise<unknown>): Promise<{ status: number; data: any }> {
  try {
    await call;
  } catch (err) {
    if (err instanceof Error && typeof (err as { status?: unknown }).status === "number") {
      const e = err as Error & { status: number; data: unknown };
      return { status: e.status, data: e.data };
    }
    throw err;
  }
  return assert.fail("expected the API to answer with an error");
}

const ISO_DATE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;

describe("official JS client (npm scalingo) against Cellar", () => {
  let h: Harness;
  let server: Server;
  let url: string;
  let alice: Session;
  let bob: Session;
  let client: Client;
  let bobClient: Client;
  const opts = () => ({ apiUrl: url, authApiUrl: url });

  before(async () => {
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    // The public URL is what operation Locations and region discovery point at: this listener.
    h = await startHarness({
      CELLAR_PORT: String(port),
      CELLAR_PUBLIC_URL: url,
      CELLAR_RATE_LIMIT_PER_MINUTE: "100000",
    });
    server = await new Promise<Server>((resolve, reject) => {
      const s = serve({ fetch: h.app.fetch, hostname: "127.0.0.1", port }, () => resolve(s as Server));
      s.once("error", reject);
    });
    alice = await h.user("alice");
    bob = await h.user("bob");
    client = await clientFromToken(alice.apiToken, opts());
    bobClient = await clientFromToken(bob.apiToken, opts());
  });

  after(async () => {
    if (server) {
      // Keep-alive sockets of the client's agent would hold close() open.
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    await h?.close();
  });

  it("exchanges an API token for a bearer and reads the user", async () => {
    assert.equal(client._token.split(".").length, 3, "the bearer is a JWT");
    const me = await client.Users.self();
    assert.equal(me.username, "alice");
    assert.equal(me.email, "alice@example.test");
    assert.equal(me.id, alice.user.id);
    assert.match(me.created_at, ISO_DATE);
    const refused = await apiError(clientFromToken("tk-us-not-a-token", opts()));
    assert.equal(refused.status, 401);
    assert.equal(typeof refused.data.error, "string");
  });

  it("discovers regions, and a client on a region's API URL works", async () => {
    const regions = await client.Regions.all();
    assert.deepEqual(
      regions.map((r) => r.name),
      ["osc-fr1", "osc-secnum-fr1"],
    );
    const secnum = regions.find((r) => r.name === "osc-secnum-fr1")!;
    assert.equal(secnum.default, false);
    assert.equal(secnum.api, `${url}/regions/osc-secnum-fr1`);
    assert.equal(secnum.database_api, `${url}/regions/osc-secnum-fr1`);
    const regional = new Client(client._token, { apiUrl: secnum.api, authApiUrl: url });
    const app = await regional.Apps.create({ name: "secnum-shop" });
    assert.equal(app.region, "osc-secnum-fr1");
    const inFr1 = await client.Apps.all();
    assert.ok(!inFr1.some((a) => a.name === "secnum-shop"), "apps are listed per region");
    await regional.Apps.destroy(app.id, app.name);
  });

  it("lists the public catalog without a token", async () => {
    const anonymous = new Client("", opts());
    const providers = await anonymous.Addons.listProviders();
    const ids = providers.map((p) => p.id);
    assert.ok(ids.includes("postgresql") && ids.includes("postgresql-ng"), ids.join(","));
    const pg = providers.find((p) => p.id === "postgresql")!;
    assert.equal(pg.category.id, "databases");
    assert.equal(typeof pg.hds_available, "boolean");
    const starter = pg.plans.find((p) => p.name === "postgresql-starter-512")!;
    assert.ok(starter, "the Starter 512 plan is listed");
    assert.equal(typeof starter.display_name, "string");
    assert.equal(typeof starter.price, "number");
    assert.equal(typeof starter.description, "string");
    assert.equal(starter.hds_available, false);
    const inDatabases = await anonymous.Addons.listProviders("databases");
    assert.equal(inDatabases.length, providers.length);
    const categories = await anonymous.Addons.listCategories();
    assert.deepEqual(
      categories.map((c) => c.id),
      ["databases"],
    );
  });

  it("creates, lists, shows and renames apps; a dry run writes nothing", async () => {
    const dry = await client.Apps.create({ name: "dry-shop", dry_run: true });
    assert.equal(dry.name, "dry-shop");
    const app = await client.Apps.create({ name: "webshop" });
    assert.match(app.id, /\S/);
    assert.equal(app.name, "webshop");
    assert.equal(app.region, "osc-fr1");
    assert.equal(app.owner.username, "alice");
    assert.match(app.created_at, ISO_DATE);
    const all = await client.Apps.all();
    assert.deepEqual(
      all.map((a) => a.name),
      ["webshop"],
      "the dry run created nothing",
    );
    assert.equal((await client.Apps.find(app.id)).name, "webshop");
    const renamed = await client.Apps.rename("webshop", "webshop", "boutique");
    assert.equal(renamed.name, "boutique");
    assert.equal(renamed.id, app.id);
    assert.equal((await client.Apps.find("boutique")).id, app.id);
  });

  it("answers the client's errors in the reference's shapes", async () => {
    const missing = await apiError(client.Apps.find("no-such-app"));
    assert.deepEqual(missing, { status: 404, data: { resource: "app", error: "not found" } });
    const hidden = await apiError(bobClient.Apps.find("boutique"));
    assert.deepEqual(hidden.status, 404, "another tenant's app does not exist for bob");
    const taken = await apiError(client.Apps.create({ name: "boutique" }));
    assert.equal(taken.status, 422);
    assert.ok(Array.isArray(taken.data.errors.name), JSON.stringify(taken.data));
    const wrongName = await apiError(client.Apps.destroy("boutique", "webshop"));
    assert.equal(wrongName.status, 422);
    assert.ok(Array.isArray(wrongName.data.errors.current_name));
  });

  it("invites, accepts, lists, limits and removes collaborators", async () => {
    const invitation = await client.Collaborators.invite("boutique", "bob@example.test");
    assert.equal(invitation.email, "bob@example.test");
    assert.equal(invitation.status, "pending");
    assert.equal(invitation.username, "n/a");
    const token = new URL(invitation.invitation_link).searchParams.get("token")!;
    assert.ok(token, invitation.invitation_link);
    const joined = await bobClient.Collaborators.inviteAccept(token);
    assert.equal(joined.name, "boutique");

    const list = await client.Collaborators.for("boutique");
    assert.equal(list.length, 1);
    const k = list[0]!;
    assert.deepEqual(
      {
        email: k.email,
        username: k.username,
        status: k.status,
        user_id: k.user_id,
        is_limited: k.is_limited,
      },
      {
        email: "bob@example.test",
        username: "bob",
        status: "accepted",
        user_id: bob.user.id,
        is_limited: false,
      },
    );
    const limited = await client.Collaborators.update("boutique", k.id, { is_limited: true });
    assert.equal(limited.is_limited, true);
    const owned = await client.Collaborators.all({});
    assert.deepEqual(
      owned.collaborators.map((c) => [c.email, c.app_name]),
      [["bob@example.test", "boutique"]],
    );
    assert.equal((await bobClient.Apps.find("boutique")).name, "boutique", "bob sees the app now");
    await client.Collaborators.destroy("boutique", k.id);
    assert.deepEqual(await client.Collaborators.for("boutique"), []);
  });

  let addonId = "";

  it("provisions an add-on that stays provisioning, with no variables yet", async () => {
    const addon = await client.Addons.create("boutique", {
      addon_provider_id: "postgresql",
      plan_id: "postgresql-starter-512",
    });
    addonId = addon.id;
    assert.equal(addon.status, "provisioning");
    assert.equal(addon.plan.name, "postgresql-starter-512");
    assert.equal(addon.addon_provider.id, "postgresql");
    assert.match(addon.resource_id, /^boutique_/);
    assert.match(addon.provisioned_at, ISO_DATE);
    await h.loop.drain();
    const shown = await client.Addons.getAddon("boutique", addonId);
    assert.equal(shown.status, "provisioning", "nothing runs it: never reported running");
    assert.deepEqual(
      (await client.Addons.for("boutique")).map((a) => a.id),
      [addonId],
    );
    assert.deepEqual(await client.Environment.for("boutique"), []);
    const refused = await apiError(
      client.Addons.create("boutique", { addon_provider_id: "postgresql", plan_id: "nope-1" }),
    );
    assert.equal(refused.status, 422);
    assert.ok(Array.isArray(refused.data.errors.plan_id), JSON.stringify(refused.data));
  });

  it("manages the app's own environment variables", async () => {
    const v = await client.Environment.create("boutique", { name: "GREETING", value: "hello" });
    assert.deepEqual([v.name, v.value], ["GREETING", "hello"]);
    const changed = await client.Environment.update("boutique", v.id, "bonjour");
    assert.equal(changed.value, "bonjour");
    assert.deepEqual(
      (await client.Environment.for("boutique")).map((x) => [x.name, x.value]),
      [["GREETING", "bonjour"]],
    );
    await client.Environment.destroy("boutique", v.id);
    assert.deepEqual(await client.Environment.for("boutique"), []);
  });

  it("changes the add-on's plan and follows its operation", async () => {
    // Typed {vars, message} by the client, but it unpacks "addon": the add-on itself.
    const updated = (await client.Addons.update("boutique", addonId, {
      plan_id: "postgresql-starter-1024",
    })) as unknown as { plan: { name: string }; status: string };
    assert.equal(updated.plan.name, "postgresql-starter-1024");
    // The client does not surface the Location header of add-on calls: the id comes from the store.
    const { rows } = await h.deps.db.query<{ id: string }>(
      "SELECT id FROM operations WHERE database_id = $1 AND type = 'change-plan'",
      [addonId],
    );
    const op = await client.Operations.operation("boutique", rows[0]!.id);
    assert.equal(op.id, rows[0]!.id);
    assert.equal(op.type, "change-plan");
    assert.ok(["pending", "running"].includes(op.status!), `status ${op.status}`);
    assert.match(op.created_at!, ISO_DATE);
    assert.equal(op.finished_at, null);
    const down = await apiError(client.Operations.operation("boutique", "op-nope"));
    assert.equal(down.status, 404);
  });

  it("shows the app's timeline and the user's events", async () => {
    const { events, meta } = await client.Events.for("boutique");
    const types = events.map((e) => e.type);
    for (const t of ["new_app", "rename_app", "new_collaborator", "new_addon", "upgrade_addon"]) {
      assert.ok(types.includes(t), `${t} in ${types.join(",")}`);
    }
    const upgrade = events.find((e) => e.type === "upgrade_addon")!;
    assert.equal(upgrade.app_name, "boutique");
    assert.equal(upgrade.user.username, "alice");
    assert.equal(upgrade.type_data.new_plan_name, "postgresql-starter-1024");
    // The client's type says meta is the pagination itself; the reference (and the body the
    // client returns untouched) nests it: meta.pagination{current_page, total_count, ...}.
    const pagination = (m: unknown) =>
      (m as { pagination: { current_page: number; total_count: number } }).pagination;
    assert.equal(pagination(meta).current_page, 1);
    const page = await client.Events.for("boutique", { page: 1, per_page: 2 });
    assert.equal(page.events.length, 2);
    assert.equal(pagination(page.meta).total_count, events.length);
    const mine = await client.Events.all();
    assert.ok(mine.events.length >= events.length);
  });

  it("removes the add-on, then the app", async () => {
    const busy = await apiError(client.Apps.destroy("boutique", "boutique"));
    assert.equal(busy.status, 409, "an app with add-ons is not deleted");
    await client.Addons.destroy("boutique", addonId);
    assert.deepEqual(await client.Addons.for("boutique"), []);
    assert.equal((await apiError(client.Addons.getAddon("boutique", addonId))).status, 404);
    await h.loop.drain();
    await client.Apps.destroy("boutique", "boutique");
    assert.equal((await apiError(client.Apps.find("boutique"))).status, 404);
  });

  it("lists and creates API tokens; a revoked token no longer exchanges", async () => {
    const before = await client.Tokens.all();
    assert.equal(before.length, 1);
    assert.equal(before[0]!.token, undefined, "secrets are never listed");
    const made = await client.Tokens.create("ci");
    assert.equal(made.name, "ci");
    assert.match(made.token!, /^tk-us-/);
    assert.match(made.issued_at, ISO_DATE);
    const ci = await clientFromToken(made.token!, opts());
    assert.equal((await ci.Users.self()).username, "alice");
    assert.equal((await client.Tokens.all()).length, 2);
    await client.Tokens.destroy(made.id);
    assert.equal((await apiError(clientFromToken(made.token!, opts()))).status, 401);
  });

  it("creates and lists Dedicated databases", async () => {
    // The client posts {database:{addon_provider_id, plan_id, database_name}} and reads the
    // answer under "apps" (a list of {app, addon}); the reference documents {database:{...}}.
    // Cellar answers both keys.
    const created = await client.Databases.create({
      addon_provider_id: "postgresql-ng",
      plan_id: "postgresql-dr-starter-4096",
      database_name: "ledger",
    });
    assert.equal(created.length, 1);
    assert.equal(created[0]!.app.name, "ledger");
    assert.equal(created[0]!.addon.status, "provisioning");
    assert.equal(created[0]!.addon.id, created[0]!.app.id, "a Dedicated database is its own add-on");
    // all() is typed as a list but returns the whole body: {databases:[...]}, as documented.
    const listed = (await client.Databases.all()) as unknown as {
      databases: Array<{ name: string; technology: string; plan: string; status: string }>;
    };
    assert.deepEqual(
      listed.databases.map((d) => [d.name, d.technology, d.plan, d.status]),
      [["ledger", "postgresql-ng", "postgresql-dr-starter-4096", "creating"]],
    );
    // The reference's DR flows through the app endpoints: the database is addressed as an app.
    const asApp = await client.Apps.find("ledger");
    assert.equal(asApp.flags["dedicated-database"], true);
    const refused = await apiError(
      bobClient.Databases.create({
        addon_provider_id: "postgresql",
        plan_id: "postgresql-starter-512",
        database_name: "ledger-two",
      }),
    );
    assert.equal(refused.status, 422, "Dedicated databases are postgresql-ng only");
  });
});
