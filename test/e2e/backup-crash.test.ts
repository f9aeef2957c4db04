// An agent killed (-9) in the middle of a full backup, then in the middle of a restore:
// started again, it converges without a duplicate backup, with a repository that verifies,
// and with exactly the data of the restore target.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import type pg from "pg";
import { connectVerified, startCluster, type Cluster } from "../support/cluster.ts";

const execFileAsync = promisify(execFile);
const HOST = "e2e-bkc-s1";

/** Pids of pgBackRest processes running `command` on `stanza`. */
async function pgbackrestPids(stanza: string, command: string): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const argv = (await fs.readFile(`/proc/${name}/cmdline`, "utf8").catch(() => "")).split("\0");
    if (
      argv.some((a) => a.endsWith("pgbackrest")) &&
      argv.includes(`--stanza=${stanza}`) &&
      argv.includes(command)
    ) {
      pids.push(Number(name));
    }
  }
  return pids;
}

describe("backups survive a killed agent", () => {
  let cl: Cluster;
  let ca = "";
  let addonId = "";
  let url = "";
  let nodeDir = "";

  before(async () => {
    cl = await startCluster({
      subnet: 72,
      hosts: [{ name: HOST, pool: "shared", az: "osc-fr1-a" }],
      env: { CELLAR_BACKUP_CHECK_EVERY_S: "2", CELLAR_BACKUP_ARCHIVE_TIMEOUT_S: "5" },
    });
    ca = await cl.regionCa();
    assert.equal((await cl.api("POST", "/v1/apps", { app: { name: "crash-bk-app" } })).status, 201);
  });
  after(async () => cl?.close());

  const windowOf = async () => {
    const tok = await cl.api("POST", `/v1/apps/crash-bk-app/addons/${addonId}/token`);
    const res = await fetch(`${cl.controller.url}/api/databases/${addonId}/pitr/recovery_window`, {
      headers: { authorization: `Bearer ${tok.json.addon.token}` },
    });
    return ((await res.json()) as { recovery_window: Record<string, string> }).recovery_window;
  };
  const withClient = async <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => {
    const client = await connectVerified(url, ca);
    try {
      return await fn(client);
    } finally {
      await client.end();
    }
  };
  /** Kills the agent as a host crash would, waits until it is gone, and starts it again. */
  const crashAgent = async () => {
    const agent = cl.fleet.processOf(HOST)!;
    const exited = new Promise((resolve) => agent.once("exit", resolve));
    agent.kill("SIGKILL");
    await exited;
    cl.fleet.startAgent(HOST);
  };
  const pgbackrest = async (...args: string[]) => {
    const conf = path.join(nodeDir, "backup", "pgbackrest.conf");
    const { stdout } = await execFileAsync("runuser", [
      "-u",
      "postgres",
      "--",
      "pgbackrest",
      `--config=${conf}`,
      `--stanza=${addonId}`,
      ...args,
    ]);
    return stdout;
  };

  it("takes exactly one first full backup after the agent died during it", async () => {
    const res = await cl.api("POST", "/v1/apps/crash-bk-app/addons", {
      addon: { addon_provider_id: "postgresql", plan_id: "postgresql-starter-512" },
    });
    assert.equal(res.status, 201);
    addonId = res.json.addon.id;
    await cl.waitFor("the first full backup to start", async () =>
      (await pgbackrestPids(addonId, "backup")).length > 0 ? true : undefined,
    );
    await crashAgent();
    // pgBackRest dies with its agent (no orphan holding the stanza's lock).
    await cl.waitFor("the interrupted backup to stop", async () =>
      (await pgbackrestPids(addonId, "backup")).length === 0 ? true : undefined,
    );
    const w = await cl.waitFor("a recovery window", async () => {
      const win = await windowOf();
      return win.earliest_recoverable_at ? win : undefined;
    });
    assert.ok(w.latest_recoverable_at);
    const { rows } = await cl.controller.deps.db.query(
      "SELECT i.id FROM instances i WHERE i.database_id = $1 AND i.kind = 'node'",
      [addonId],
    );
    nodeDir = path.join(cl.dataDir, "hosts", HOST, "instances", rows[0].id);
    const info = JSON.parse(await pgbackrest("info", "--output=json"));
    assert.equal(info[0].backup.length, 1, "one full backup, not two");
    assert.equal(info[0].status.code, 0);
    await pgbackrest("verify");
    const recorded = await cl.controller.deps.db.query(
      "SELECT label FROM base_backups WHERE database_id = $1",
      [addonId],
    );
    assert.deepEqual(
      recorded.rows.map((r) => r.label),
      [info[0].backup[0].label],
    );
  });

  it("finishes a restore the agent died in, with exactly the data of the target", async () => {
    const vars = (await cl.api("GET", "/v1/apps/crash-bk-app/variables")).json.variables as any[];
    url = vars.find((v) => v.name === "SCALINGO_POSTGRESQL_URL").value;
    const { target, expected } = await withClient(async (c) => {
      await c.query("CREATE TABLE big (id int PRIMARY KEY, pad text)");
      await c.query("INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 60000) g");
      const sum = (await c.query("SELECT count(*)::int AS n, sum(id)::text AS s FROM big")).rows[0];
      await new Promise((r) => setTimeout(r, 50));
      const t = (await c.query("SELECT clock_timestamp() AS t")).rows[0].t as Date;
      await new Promise((r) => setTimeout(r, 50));
      await c.query("DELETE FROM big WHERE id % 2 = 0");
      await c.query("INSERT INTO big VALUES (-1, 'after the target')");
      return { target: t.toISOString(), expected: sum };
    });
    await cl.waitFor("the archive to pass the target", async () => {
      const w = await windowOf();
      return w.latest_recoverable_at && w.latest_recoverable_at > target ? true : undefined;
    });
    const tok = await cl.api("POST", `/v1/apps/crash-bk-app/addons/${addonId}/token`);
    const res = await fetch(`${cl.controller.url}/api/databases/${addonId}/pitr/restore`, {
      method: "POST",
      headers: { authorization: `Bearer ${tok.json.addon.token}`, "content-type": "application/json" },
      body: JSON.stringify({ restore_time: target }),
    });
    assert.equal(res.status, 201);
    const opId = ((await res.json()) as { operation: { id: string } }).operation.id;
    const stateFile = path.join(nodeDir, "backup-restore.json");
    const phase = await cl.waitFor(
      "the restore to be under way",
      async () => {
        if ((await pgbackrestPids(addonId, "restore")).length > 0) return "pgbackrest restore";
        const state = await fs.readFile(stateFile, "utf8").catch(() => null);
        const current = state ? (JSON.parse(state) as { current: { phase: string } | null }).current : null;
        return current && current.phase !== "prepared" ? current.phase : undefined;
      },
      60_000,
    );
    await crashAgent();
    console.log(`agent killed during the restore (${phase})`);
    const op = await cl.waitFor(
      "the restore operation to finish",
      async () => {
        const o = (await cl.api("GET", `/v1/apps/crash-bk-app/operations/${opId}`)).json.operation;
        return o.status === "done" || o.status === "error" ? o : undefined;
      },
      180_000,
    );
    assert.equal(op.status, "done", op.error ?? "");
    const got = await withClient(
      async (c) => (await c.query("SELECT count(*)::int AS n, sum(id)::text AS s FROM big")).rows[0],
    );
    assert.deepEqual(got, expected);
    // The original, kept aside, goes with the node's next background check (after the new
    // timeline's first backup), not on the restore's path.
    const dataDirs = async () =>
      (await fs.readdir(path.join(nodeDir, "node"))).filter((n) => n.startsWith("pgdata"));
    await cl
      .waitFor("the set-aside data dir to be removed", async () =>
        (await dataDirs()).length === 1 ? true : undefined,
      )
      .catch(() => undefined);
    assert.deepEqual(await dataDirs(), ["pgdata"], "no side or set-aside data dir left");
  });
});
