// The backup commands of the `cellar` CLI against a real listener and store: the recovery
// window, and a restore that asks for a typed confirmation before anything changes.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { applyBackupReports } from "../../src/reconciler/backup-reports.ts";
import { nodeBackupSpec } from "../../src/reconciler/backup-spec.ts";
import { getDatabase } from "../../src/store/databases.store.ts";
import { insertHost } from "../../src/store/hosts.store.ts";
import { startHarness, type Harness, type Session } from "../support/api.ts";
import { cliRunner, type CliRunner } from "../support/cli.ts";
import { listen, type Listening } from "../support/server.ts";

const minutesAgo = (m: number) => new Date(Date.now() - m * 60_000).toISOString();

describe("cellar CLI: recovery window and point-in-time restore", () => {
  let h: Harness;
  let server: Listening;
  let cli: CliRunner;
  let dbId = "";
  let alice: Session;
  let hostId = "";
  const earliest = minutesAgo(60);
  const latest = minutesAgo(1);

  /** The node's first full backup, as its agent reports it. */
  const initialSet = {
    label: "20260101-000000F",
    type: "full",
    timeline: 1,
    started_at: minutesAgo(61),
    stopped_at: earliest,
    size: 1,
    repo_size: 1,
    reason: "initial",
  };
  const reportBackups = (backups: object[]) =>
    applyBackupReports(h.deps, hostId, [
      {
        id: "inst-clibk1",
        backup: { stanza: dbId, timeline: 1, backups, archived_until: latest, restore: null, failure: null },
      },
    ]);

  const restores = async () =>
    (await h.deps.db.query("SELECT count(*)::int AS n FROM pitr_restores WHERE database_id = $1", [dbId]))
      .rows[0].n as number;

  before(async () => {
    h = await startHarness({ CELLAR_RATE_LIMIT_PER_MINUTE: "10000" });
    server = await listen(h);
    cli = await cliRunner();
    alice = await h.user("alice");
    await h.call("POST", "/v1/apps", { bearer: alice.bearer, body: { app: { name: "ledger-app" } } });
    const res = await h.call("POST", "/v1/apps/ledger-app/addons", {
      bearer: alice.bearer,
      body: { addon: { addon_provider_id: "postgresql", plan_id: "postgresql-starter-512" } },
    });
    dbId = res.json.addon.id;
    const host = await insertHost(
      h.deps.db,
      {
        name: "cli-bk-h1",
        region: "osc-fr1",
        az: "osc-fr1-a",
        pool: "shared",
        address: "127.0.0.1",
        capacityVcpu: 2,
        capacityRamMb: 4096,
        capacityDiskGb: 100,
        isolation: {},
      },
      "tk-host-cli",
    );
    hostId = host.id;
    await h.deps.db.query(
      `INSERT INTO instances (id, database_id, host_id, kind, port, spec) VALUES ('inst-clibk1', $1, $2, 'node', 20001, '{}')`,
      [dbId, host.id],
    );
    await h.deps.db.query(
      "UPDATE databases SET phase = 'running', observed_generation = generation WHERE id = $1",
      [dbId],
    );
    await h.deps.db.query(
      "UPDATE operations SET status = 'done', finished_at = now() WHERE database_id = $1",
      [dbId],
    );
    // The stanza exists once the spec is built; then the node reports its first backup.
    await h.deps.db.tx(async (q) => nodeBackupSpec(q, h.deps, (await getDatabase(q, dbId))!));
    await reportBackups([initialSet]);
    const login = await cli.run(["login", "--api-url", server.url, "--token", alice.apiToken]);
    assert.equal(login.code, 0, login.stderr);
  });
  after(async () => {
    await cli?.cleanup();
    await server?.close();
    await h?.close();
  });

  it("shows the recovery window", async () => {
    const res = await cli.run(["database-pitr-recovery-window", "--app", "ledger-app"]);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, new RegExp(`Earliest recoverable at:\\s+${earliest}`));
    assert.match(res.stdout, new RegExp(`Latest recoverable at:\\s+${latest}`));
    const json = await cli.run(["--json", "database-pitr-recovery-window", "--app", "ledger-app"]);
    assert.deepEqual(JSON.parse(json.stdout), {
      recovery_window: { earliest_recoverable_at: earliest, latest_recoverable_at: latest },
    });
  });

  it("lists the full backups with their verification", async () => {
    const verifiedAt = minutesAgo(30);
    await reportBackups([
      { ...initialSet, verification: { status: "verified", at: verifiedAt, detail: null } },
      {
        label: "20260102-000000F",
        type: "full",
        timeline: 1,
        started_at: minutesAgo(3),
        stopped_at: minutesAgo(2),
        size: 6 * 1024 * 1024,
        repo_size: 1024,
        reason: "weekly",
      },
    ]);
    const res = await cli.run(["database-pitr-backups", "--app", "ledger-app"]);
    assert.equal(res.code, 0, res.stderr);
    const lines = res.stdout.trim().split("\n");
    assert.match(lines[0]!, /^ID\s+Timeline\s+Ended At\s+Size\s+Verification$/);
    assert.ok(
      lines.some(
        (l) =>
          l.startsWith("20260101-000000F") && l.includes(" 1 B ") && l.includes(`verified ${verifiedAt}`),
      ),
      res.stdout,
    );
    assert.ok(
      lines.some((l) => l.startsWith("20260102-000000F") && l.endsWith("pending")),
      res.stdout,
    );
    const json = JSON.parse(
      (await cli.run(["--json", "database-pitr-backups", "--app", "ledger-app"])).stdout,
    );
    assert.deepEqual(
      json.continuous_backups.map((b: { id: string; verification_status: string }) => [
        b.id,
        b.verification_status,
      ]),
      [
        ["20260102-000000F", "pending"],
        ["20260101-000000F", "verified"],
      ],
    );
  });

  it("refuses a malformed time and a wrong confirmation: nothing is restored", async () => {
    const bad = await cli.run(["database-pitr-restore", "--app", "ledger-app", "yesterday"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /not an RFC 3339 time/);
    const wrong = await cli.run(["database-pitr-restore", "--app", "ledger-app", minutesAgo(10)], {
      input: "nope\n",
    });
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /permanently delete every change to .* made after/);
    assert.match(wrong.stderr, /does not match/);
    const outside = await cli.run(["database-pitr-restore", "--yes", "--app", "ledger-app", minutesAgo(120)]);
    assert.equal(outside.code, 1);
    assert.match(outside.stderr, /outside the recovery window/);
    assert.equal(await restores(), 0);
  });

  it("starts the restore once confirmed and prints its operation", async () => {
    const res = await cli.run(["database-pitr-restore", "--app", "ledger-app", minutesAgo(10)], {
      input: "ledger-app\n",
    });
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /started: operation op-[0-9a-f]+\./);
    assert.equal(await restores(), 1);
  });

  it("forks into another app at a time, on the source's plan by default", async () => {
    await h.call("POST", "/v1/apps", { bearer: alice.bearer, body: { app: { name: "ledger-staging" } } });
    const missing = await cli.run(["database-pitr-fork", "--app", "ledger-app", minutesAgo(10)]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /pass --to-app/);
    const res = await cli.run([
      "database-pitr-fork",
      "--app",
      "ledger-app",
      "--to-app",
      "ledger-staging",
      minutesAgo(10),
    ]);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /Fork ad-[0-9a-f-]+ \(add-on of ledger-staging\) of .* is being provisioned\./);
    const { rows } = await h.deps.db.query(
      "SELECT d.plan_id FROM database_seeds s JOIN databases d ON d.id = s.database_id WHERE s.source_database_id = $1",
      [dbId],
    );
    assert.deepEqual(rows, [{ plan_id: "postgresql-starter-512" }]);
  });
});
