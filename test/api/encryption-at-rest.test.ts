// Encryption-at-rest keys on the controller's side: one per node, made on first delivery, sealed
// in the store (authenticated, bound to its instance), handed only to the node's own host in
// its desired state, never in an API answer, gone with the instance. The database object's
// `encryption_at_rest` is true only once every node reports its data dir encrypted.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Hono } from "hono";
import { agentRoutes } from "../../src/api/routes/agent.routes.ts";
import { insertHost } from "../../src/store/hosts.store.ts";
import { openInstanceKey } from "../../src/store/instance-keys.store.ts";
import { startHarness, type Harness, type Session } from "../support/api.ts";
import { makeAddon, makeApp } from "../support/scopes.ts";

describe("encryption-at-rest keys", () => {
  let h: Harness;
  let alice: Session;
  let app: { id: string; name: string };
  let dbId = "";
  const agent = () => {
    const a = new Hono();
    a.route("/agent/v1", agentRoutes(h.deps, "tk-join-test"));
    return a;
  };
  const asHost = async (token: string, method: string, path: string, body?: unknown) => {
    const res = await agent().request(`/agent/v1${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    assert.equal(res.status, 200, await res.clone().text());
    return (await res.json()) as Record<string, unknown>;
  };
  const desired = async (token: string) =>
    (await asHost(token, "GET", "/hosts/self/desired")).instances as Array<Record<string, unknown>>;
  const sealedOf = async (id: string) =>
    (
      await h.deps.db.query<{ sealed: Buffer }>("SELECT sealed FROM instance_keys WHERE instance_id = $1", [
        id,
      ])
    ).rows[0]?.sealed;

  before(async () => {
    h = await startHarness({ CELLAR_RATE_LIMIT_PER_MINUTE: "10000" });
    alice = await h.user("alice");
    app = await makeApp(h, alice, "vault-app");
    dbId = await makeAddon(h, alice, app);
    const reg = { region: "osc-fr1", az: "osc-fr1-a", pool: "shared" as const };
    const caps = { capacityVcpu: 2, capacityRamMb: 4096, capacityDiskGb: 100, isolation: {} };
    const hostA = await insertHost(
      h.deps.db,
      { name: "key-a", address: "127.0.0.1", ...reg, ...caps },
      "tk-a",
    );
    const hostB = await insertHost(
      h.deps.db,
      { name: "key-b", address: "127.0.0.2", ...reg, ...caps },
      "tk-b",
    );
    const place = (id: string, host: string, kind: string, port: number, ordinal: number) =>
      h.deps.db.query(
        `INSERT INTO instances (id, database_id, host_id, kind, port, spec, ordinal)
         VALUES ($1, $2, $3, $4, $5, '{}', $6)`,
        [id, dbId, host, kind, port, ordinal],
      );
    await place("inst-keya", hostA.id, "node", 21001, 0);
    await place("inst-keyb", hostB.id, "node", 21002, 1);
    await place("inst-keygw", hostA.id, "gateway", 21003, 0);
  });
  after(async () => h?.close());

  it("hands each node its own key, in its own host's desired state only", async () => {
    const onA = await desired("tk-a");
    const node = onA.find((i) => i.id === "inst-keya")!;
    const gateway = onA.find((i) => i.id === "inst-keygw")!;
    const key = Buffer.from(String(node.encryption_key), "base64");
    assert.equal(key.length, 64);
    assert.equal(gateway.encryption_key, undefined, "gateways hold no data");
    assert.equal(JSON.stringify(node.spec).includes(String(node.encryption_key)), false, "not in the spec");
    const onB = await desired("tk-b");
    assert.deepEqual(
      onB.map((i) => i.id),
      ["inst-keyb"],
    );
    assert.notEqual(onB[0]!.encryption_key, node.encryption_key, "one key per instance");
    // Made once: the next answer hands the same key.
    const again = (await desired("tk-a")).find((i) => i.id === "inst-keya")!;
    assert.equal(again.encryption_key, node.encryption_key);
  });

  it("keeps keys sealed and bound to their instance in the store", async () => {
    const key = Buffer.from(
      String((await desired("tk-a")).find((i) => i.id === "inst-keya")!.encryption_key),
      "base64",
    );
    const sealed = (await sealedOf("inst-keya"))!;
    assert.equal(sealed.includes(key), false, "no plaintext key in the store");
    assert.ok(openInstanceKey(h.deps.masterKey, "inst-keya", sealed).equals(key));
    assert.throws(() => openInstanceKey(h.deps.masterKey, "inst-keyb", sealed), /does not open/);
    const tampered = Buffer.from(sealed);
    tampered[tampered.length - 1]! ^= 1;
    assert.throws(() => openInstanceKey(h.deps.masterKey, "inst-keya", tampered), /does not open/);
    assert.throws(() => openInstanceKey(Buffer.alloc(32, 7), "inst-keya", sealed), /does not open/);
    const { rows } = await h.deps.db.query("SELECT 1 FROM settings WHERE value LIKE $1", [
      `%${h.deps.masterKey.toString("hex")}%`,
    ]);
    assert.equal(rows.length, 0, "the master key is not in the store");
  });

  it("says encrypted only once every node reports encrypted, and never shows a key", async () => {
    const token = await addonToken();
    const view = async () => {
      const db = await h.call("GET", `/api/databases/${dbId}`, { bearer: token });
      const status = await h.call("GET", `/api/databases/${dbId}/instances_status`, { bearer: token });
      return { db: db.json.database, status: status.json, text: JSON.stringify([db.json, status.json]) };
    };
    const enc = { encrypted: true, detail: "AES-256-XTS/AES-256-CTS, key present" };
    const report = (token: string, id: string, atRest: unknown) =>
      asHost(token, "POST", "/hosts/self/report", {
        instances: [{ id, status: "running", observed_generation: 1, usage: {}, at_rest: atRest }],
      });
    assert.equal((await view()).db.encryption_at_rest, false, "nothing reported yet");
    await report("tk-a", "inst-keya", enc);
    assert.equal((await view()).db.encryption_at_rest, false, "one node of two");
    await report("tk-b", "inst-keyb", {
      encrypted: false,
      detail: "the filesystem of /x has no ext4 encryption feature",
    });
    const mixed = await view();
    assert.equal(mixed.db.encryption_at_rest, false);
    const why = JSON.stringify(mixed.status);
    assert.match(why, /has no ext4 encryption feature/, "instances_status says why");
    await report("tk-b", "inst-keyb", enc);
    // A report without the field (an older agent) keeps what was known.
    await asHost("tk-a", "POST", "/hosts/self/report", {
      instances: [{ id: "inst-keya", status: "running", observed_generation: 1, usage: {} }],
    });
    const all = await view();
    assert.equal(all.db.encryption_at_rest, true);
    for (const i of await desired("tk-a")) {
      if (typeof i.encryption_key === "string") assert.equal(all.text.includes(i.encryption_key), false);
    }
  });

  it("deletes a node's key with its instance", async () => {
    assert.ok(await sealedOf("inst-keyb"));
    await h.deps.db.query("DELETE FROM instances WHERE id = 'inst-keyb'");
    assert.equal(await sealedOf("inst-keyb"), undefined);
  });

  async function addonToken(): Promise<string> {
    const res = await h.call("POST", `/v1/apps/${app.name}/addons/${dbId}/token`, { bearer: alice.bearer });
    assert.equal(res.status, 200, JSON.stringify(res.json));
    return res.json.addon.token as string;
  }
});
