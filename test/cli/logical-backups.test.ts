// The logical-backup commands of the `cellar` CLI against a real listener and store: the
// daily schedule, a manual backup (run here by the agent protocol, as an agent would), the
// list, and a download through the signed link.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { logicalBackupAgentRoutes } from "../../src/api/routes/logical-backups-agent.routes.ts";
import { scheduleHourUtc } from "../../src/cli/logical-backups.cmd.ts";
import { insertHost } from "../../src/store/hosts.store.ts";
import { startHarness, type Harness, type Session } from "../support/api.ts";
import { cliRunner, type CliRunner } from "../support/cli.ts";
import { listen, type Listening } from "../support/server.ts";

describe("cellar CLI: logical backups", () => {
  let h: Harness;
  let server: Listening;
  let cli: CliRunner;
  let alice: Session;
  let dir = "";
  let dbId = "";

  const agentCall = async (method: string, p: string, body?: unknown) => {
    const res = await logicalBackupAgentRoutes(h.deps).request(`/hosts/self/logical-backups${p}`, {
      method,
      headers: { authorization: "Bearer tk-host-clilb", "content-type": "application/json" },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return await res.json();
  };

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-cli-lb-"));
    h = await startHarness({
      CELLAR_RATE_LIMIT_PER_MINUTE: "10000",
      CELLAR_BACKUP_REPO: path.join(dir, "repo"),
    });
    server = await listen(h);
    // Download links point at the public URL: here, this listener.
    h.deps.config.publicUrl = server.url;
    cli = await cliRunner();
    alice = await h.user("alice");
    await h.call("POST", "/v1/apps", { bearer: alice.bearer, body: { app: { name: "dumps-app" } } });
    const res = await h.call("POST", "/v1/apps/dumps-app/addons", {
      bearer: alice.bearer,
      body: { addon: { addon_provider_id: "postgresql", plan_id: "postgresql-starter-512" } },
    });
    dbId = res.json.addon.id;
    const reg = { region: "osc-fr1", az: "osc-fr1-a", pool: "shared" as const, address: "127.0.0.1" };
    const caps = { capacityVcpu: 2, capacityRamMb: 4096, capacityDiskGb: 100, isolation: {} };
    const host = await insertHost(h.deps.db, { name: "cli-lb-h1", ...reg, ...caps }, "tk-host-clilb");
    await h.deps.db.query("UPDATE hosts SET status = 'ready' WHERE id = $1", [host.id]);
    await h.deps.db.query(
      `INSERT INTO instances (id, database_id, host_id, kind, port, spec, status, role)
       VALUES ('inst-clilb1', $1, $2, 'node', 20001, '{}', 'running', 'leader')`,
      [dbId, host.id],
    );
    await h.deps.db.query(
      "INSERT INTO database_credentials (database_id, username, password, dbname) VALUES ($1, 'u', 'p', 'u')",
      [dbId],
    );
    await h.deps.db.query(
      "UPDATE databases SET phase = 'running', observed_generation = generation WHERE id = $1",
      [dbId],
    );
    const login = await cli.run(["login", "--api-url", server.url, "--token", alice.apiToken]);
    assert.equal(login.code, 0, login.stderr);
  });
  after(async () => {
    await cli?.cleanup();
    await server?.close();
    await h?.close();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it("converts --schedule-at to a UTC hour (local, UTC, or a named zone)", () => {
    const winter = new Date("2026-01-15T12:00:00Z");
    const summer = new Date("2026-07-15T12:00:00Z");
    assert.equal(scheduleHourUtc("4:00 UTC", "Europe/Paris", winter), 4);
    assert.equal(scheduleHourUtc("6 Europe/Paris", "UTC", winter), 5);
    assert.equal(scheduleHourUtc("6 Europe/Paris", "UTC", summer), 4);
    assert.equal(scheduleHourUtc("0", "Europe/Paris", winter), 23);
    assert.equal(scheduleHourUtc("23", "UTC", winter), 23);
    for (const bad of ["24", "4:30 UTC", "four", "4 Mars/Olympus"]) {
      assert.throws(() => scheduleHourUtc(bad, "UTC", winter), /hour|time zone/, bad);
    }
  });

  it("sets and clears the daily backup's hour", async () => {
    const set = await cli.run(["backups-config", "--app", "dumps-app", "--schedule-at", "4:00 UTC"]);
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /run at 4:00 UTC/);
    const off = await cli.run(["backups-config", "--app", "dumps-app", "--unschedule"]);
    assert.equal(off.code, 0, off.stderr);
    assert.match(off.stdout, /are off/);
    const show = await cli.run(["--json", "backups-config", "--app", "dumps-app"]);
    const db = JSON.parse(show.stdout).database;
    assert.equal(db.periodic_backups_enabled, false);
    assert.deepEqual(db.periodic_backups_scheduled_at, [4]);
  });

  it("creates a backup, lists it, and downloads it once done", async () => {
    const none = await cli.run(["backups-download", "--app", "dumps-app"]);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no backup is done yet/);
    const created = await cli.run(["backups-create", "--app", "dumps-app"]);
    assert.equal(created.code, 0, created.stderr);
    const id = /Backup (bkp-[0-9a-f]+) /.exec(created.stdout)?.[1];
    assert.ok(id, created.stdout);
    // What the host's agent does: claim, write the archive, report it done.
    const job = (await agentCall("GET", "?slots=1")).jobs[0];
    assert.equal(job.id, id);
    await fs.mkdir(path.dirname(job.archive), { recursive: true });
    await fs.writeFile(job.archive, "archive bytes");
    await agentCall("POST", `/${id}/finish`, { attempt: 1, status: "done", size: 13 });
    const list = await cli.run(["backups", "--app", "dumps-app"]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /ID\s+Created At\s+Size\s+Status\s+Method/);
    assert.match(list.stdout, new RegExp(`${id}\\s+\\S+\\s+13 B\\s+done\\s+manual`));
    const out = path.join(dir, "out.tar.gz");
    const dl = await cli.run(["backups-download", "--app", "dumps-app", "-o", out]);
    assert.equal(dl.code, 0, dl.stderr);
    assert.equal(await fs.readFile(out, "utf8"), "archive bytes");
    const unknown = await cli.run([
      "backups-download",
      "--app",
      "dumps-app",
      "-b",
      "bkp-00000000000000000000",
    ]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no backup bkp-0+/);
  });
});
