// An agent's report applied to the store in one statement: only the reporting host's
// instances change, a change of status or role is told to the reconciler (usage alone is
// not), a standby becoming leader is a promotion, and removed instances meant to go are deleted.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { insertHost } from "../../src/store/hosts.store.ts";
import { applyReport, type InstanceReport } from "../../src/store/instances.store.ts";
import { startHarness, type Harness } from "../support/api.ts";
import { makeAddon, makeApp } from "../support/scopes.ts";

describe("applyReport", () => {
  let h: Harness;
  let dbA = "";
  let dbB = "";
  let hostA = "";
  let hostB = "";

  const row = async (id: string) =>
    (
      await h.deps.db.query<{
        status: string;
        role: string;
        usage: Record<string, number>;
        observed_generation: number;
      }>("SELECT status, role, usage, observed_generation FROM instances WHERE id = $1", [id])
    ).rows[0];
  const report = (id: string, over: Partial<InstanceReport> = {}): InstanceReport => ({
    id,
    observedGeneration: 1,
    status: "running",
    statusMessage: "",
    role: "",
    usage: {},
    ...over,
  });

  before(async () => {
    h = await startHarness();
    const alice = await h.user("alice");
    const app = await makeApp(h, alice, "report-app");
    dbA = await makeAddon(h, alice, app);
    dbB = await makeAddon(h, alice, app);
    const reg = { region: "osc-fr1", az: "osc-fr1-a", pool: "shared" as const };
    const caps = { capacityVcpu: 2, capacityRamMb: 4096, capacityDiskGb: 100, isolation: {} };
    hostA = (await insertHost(h.deps.db, { name: "rep-a", address: "127.0.0.1", ...reg, ...caps }, "tk-a"))
      .id;
    hostB = (await insertHost(h.deps.db, { name: "rep-b", address: "127.0.0.2", ...reg, ...caps }, "tk-b"))
      .id;
    const place = (id: string, db: string, host: string, port: number, ordinal: number) =>
      h.deps.db.query(
        `INSERT INTO instances (id, database_id, host_id, kind, port, spec, ordinal)
         VALUES ($1, $2, $3, 'node', $4, '{}', $5)`,
        [id, db, host, port, ordinal],
      );
    await place("inst-repa1", dbA, hostA, 21001, 0);
    await place("inst-repa2", dbA, hostA, 21002, 1);
    await place("inst-repb1", dbB, hostB, 21003, 0);
  });
  after(async () => h?.close());

  it("updates every reported instance of the host at once and names the databases that changed", async () => {
    const changed = await applyReport(h.deps.db, hostA, [
      report("inst-repa1", { role: "leader", usage: { cpu_seconds: 3 } }),
      report("inst-repa2", { role: "follower" }),
    ]);
    assert.deepEqual(changed, [dbA]);
    assert.equal((await row("inst-repa1"))!.role, "leader");
    assert.deepEqual((await row("inst-repa1"))!.usage, { cpu_seconds: 3 });
    assert.equal((await row("inst-repa2"))!.observed_generation, 1);
  });

  it("stores usage alone without waking the reconciler", async () => {
    const changed = await applyReport(h.deps.db, hostA, [
      report("inst-repa1", { role: "leader", usage: { cpu_seconds: 9 } }),
      report("inst-repa2", { role: "follower" }),
    ]);
    assert.deepEqual(changed, []);
    assert.deepEqual((await row("inst-repa1"))!.usage, { cpu_seconds: 9 });
  });

  it("never writes another host's instance, and ignores unknown ids", async () => {
    const before = await row("inst-repb1");
    const changed = await applyReport(h.deps.db, hostA, [
      report("inst-repb1", { status: "failed", statusMessage: "forged" }),
      report("inst-nosuch"),
    ]);
    assert.deepEqual(changed, []);
    assert.deepEqual(await row("inst-repb1"), before);
  });

  it("tells a standby that became leader as a promotion", async () => {
    const promotions: Array<{ databaseId: string; instanceId: string }> = [];
    const changed = await applyReport(
      h.deps.db,
      hostA,
      [report("inst-repa1", { role: "follower" }), report("inst-repa2", { role: "leader" })],
      promotions,
    );
    assert.deepEqual(changed, [dbA]);
    assert.deepEqual(promotions, [{ databaseId: dbA, instanceId: "inst-repa2" }]);
  });

  it("deletes the host's removed instances that were meant to go", async () => {
    await h.deps.db.query("UPDATE instances SET desired_state = 'deleted' WHERE id = 'inst-repa1'");
    const changed = await applyReport(h.deps.db, hostA, [report("inst-repa1", { status: "removed" })]);
    assert.deepEqual(changed, [dbA]);
    assert.equal(await row("inst-repa1"), undefined);
    assert.ok(await row("inst-repa2"));
  });
});
