// Verified backups end to end (real controller, agent, PostgreSQL, pgBackRest, cgroup v1):
// a Starter add-on's first full backup is restored into a scratch instance and checked; an
// agent killed -9 in the middle leaves no process behind, and once started again it removes
// the scratch directory and sandbox and verifies the backup; the API shows the verdict.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { startCluster, type Cluster } from "../support/cluster.ts";

const HOST = "e2e-bkv-s1";

/** Live processes whose command line names `needle`. */
async function processesNaming(needle: string): Promise<number[]> {
  const found: number[] = [];
  for (const name of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const cmd = await fs.readFile(`/proc/${name}/cmdline`, "utf8").catch(() => "");
    if (!cmd.includes(needle)) continue;
    const stat = await fs.readFile(`/proc/${name}/stat`, "utf8").catch(() => "");
    if (!/\) [ZX] /.test(stat)) found.push(Number(name));
  }
  return found;
}

/** Cgroup directories named `name` under the v1 memory hierarchy. */
async function cgroupsNamed(name: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string, depth: number): Promise<void> => {
    if (depth > 8) return;
    for (const e of await fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
      if (!e.isDirectory()) continue;
      const p = path.join(dir, e.name);
      if (e.name === name) found.push(p);
      else await walk(p, depth + 1);
    }
  };
  await walk("/sys/fs/cgroup/memory", 0);
  return found;
}

describe("verified backups, end to end", () => {
  let cl: Cluster;
  let addonId = "";

  before(async () => {
    cl = await startCluster({
      subnet: 74,
      hosts: [{ name: HOST, pool: "shared", az: "osc-fr1-a" }],
      env: { CELLAR_BACKUP_CHECK_EVERY_S: "2", CELLAR_BACKUP_ARCHIVE_TIMEOUT_S: "5" },
    });
    assert.equal((await cl.api("POST", "/v1/apps", { app: { name: "verify-app" } })).status, 201);
  });
  after(async () => cl?.close());

  const continuousBackups = async () => {
    const tok = await cl.api("POST", `/v1/apps/verify-app/addons/${addonId}/token`);
    const res = await fetch(`${cl.controller.url}/api/databases/${addonId}/pitr/backups`, {
      headers: { authorization: `Bearer ${tok.json.addon.token}` },
    });
    assert.equal(res.status, 200);
    return ((await res.json()) as { continuous_backups: Array<Record<string, any>> }).continuous_backups;
  };

  it("verifies the first full backup, also when the agent is killed in the middle", async () => {
    const res = await cl.api("POST", "/v1/apps/verify-app/addons", {
      addon: { addon_provider_id: "postgresql", plan_id: "postgresql-starter-512" },
    });
    assert.equal(res.status, 201);
    addonId = res.json.addon.id;
    const nodeId = await cl.waitFor("the add-on's node", async () => {
      const { rows } = await cl.controller.deps.db.query(
        "SELECT id FROM instances WHERE database_id = $1 AND kind = 'node'",
        [addonId],
      );
      return rows[0]?.id as string | undefined;
    });
    const scratch = path.join(cl.dataDir, "hosts", HOST, "instances", nodeId, "backup", "verify");
    const sandbox = `cellar-verify-${nodeId.replace(/^inst-/, "")}`;
    // The scratch restore or server (pgBackRest's --pg1-path and postgres's -D name the dir).
    const pids = await cl.waitFor(
      "a verification to run",
      async () => {
        const found = await processesNaming(scratch);
        return found.length > 0 ? found : undefined;
      },
      180_000,
    );
    assert.ok((await cgroupsNamed(sandbox)).length > 0, "it runs in its own sandbox");
    const agent = cl.fleet.processOf(HOST)!;
    const exited = new Promise((resolve) => agent.once("exit", resolve));
    agent.kill("SIGKILL");
    await exited;
    await cl.waitFor("the verification's processes to die with their agent", async () =>
      (await processesNaming(scratch)).length === 0 ? true : undefined,
    );
    console.log(`agent killed during a verification (${pids.length} processes), none left`);
    cl.fleet.startAgent(HOST);
    const verified = await cl.waitFor(
      "the backup to be verified",
      async () => {
        const [b] = await continuousBackups();
        return b && b.verification_status !== "pending" ? b : undefined;
      },
      240_000,
    );
    assert.equal(verified.verification_status, "verified", verified.verification_detail);
    assert.match(verified.verification_detail, /databases, \d+ relations, \d+ rows read in/);
    assert.ok(Date.parse(verified.verification_checked_at) >= Date.parse(verified.ended_at));
    assert.equal(verified.type, "full");
    // Nothing of the verification is left: no directory, process or sandbox.
    await cl.waitFor("the scratch dir and sandbox to be gone", async () => {
      const dirLeft = await fs.stat(scratch).then(
        () => true,
        () => false,
      );
      return !dirLeft && (await cgroupsNamed(sandbox)).length === 0 ? true : undefined;
    });
    assert.deepEqual(await processesNaming(scratch), []);
    const failed = await cl.controller.deps.db.query(
      "SELECT count(*)::int AS n FROM events WHERE database_id = $1 AND type = 'database_backup_failed'",
      [addonId],
    );
    assert.equal(failed.rows[0].n, 0);
  });
});
