// The pgBackRest module against real PostgreSQL 15 and pgBackRest: a template-cloned node
// archives into its own encrypted stanza, takes a full backup, reports how far its archive
// reaches, and is restored in place to a point in time (also after a simulated crash).
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { ensureDir, postgresUser, writeFileAtomic } from "../../src/engines/postgresql/command.ts";
import { PgTemplate } from "../../src/engines/postgresql/data-dir.ts";
import { PostgresInstance } from "../../src/engines/postgresql/instance.ts";
import { planPostgresSettings } from "../../src/engines/postgresql/plan-settings.ts";
import { queryOnce } from "../../src/engines/postgresql/superuser.ts";
import { readArchiveStatus } from "../../src/engines/postgresql/backup/archive-status.ts";
import { fullBackupDue, recoveryWindow } from "../../src/engines/postgresql/backup/backup-info.ts";
import { ensureRepository, PgBackRest } from "../../src/engines/postgresql/backup/pgbackrest.ts";
import {
  archiveSettings,
  renderPgBackRestConf,
  type NodeBackupPaths,
} from "../../src/engines/postgresql/backup/pgbackrest-config.ts";
import { InPlaceRestore } from "../../src/engines/postgresql/backup/restore.ts";
import type { NodeBackupSpec } from "../../src/engines/postgresql/backup/types.ts";
import { type CertificateAuthority, ensureCa } from "../../src/engines/tls/certificates.ts";
import { SeedFromBackup } from "../../src/engines/postgresql/backup/seed.ts";
import { freePort, loopbackPrefix, scratchDir, timed } from "./engine-fixtures.ts";

const SETTINGS = planPostgresSettings({ ramMb: 512, maxConnections: 30, model: "shared" });

describe("pgBackRest module (real PostgreSQL 15 and pgBackRest 2.45)", () => {
  let dir: string;
  let node: PostgresInstance;
  let br: PgBackRest;
  let restorer: InPlaceRestore;
  let spec: NodeBackupSpec;
  let paths: NodeBackupPaths;
  let template: PgTemplate;
  let ca: CertificateAuthority;
  let host: string;
  const forks: PostgresInstance[] = [];

  const sql = async (text: string) => queryOnce(node.superuserConfig("app"), text);
  const rows = async () => (await sql("SELECT id FROM items ORDER BY id")).map((r) => Number(r.id));
  const configure = () =>
    node.configure(SETTINGS, { forceTls: false, archive: archiveSettings(spec, paths) });
  /** The server's clock: recovery targets compare with commit times it wrote. */
  const serverNow = async () => (await sql("SELECT clock_timestamp() AS t"))[0]!.t as Date;
  const pause = () => new Promise((r) => setTimeout(r, 50));

  before(async () => {
    dir = await scratchDir("pgbackrest");
    const owner = postgresUser();
    host = `${loopbackPrefix()}.1`;
    ca = await ensureCa(path.join(dir, "ca"), "osc-fr1");
    template = new PgTemplate(path.join(dir, "template"));
    await template.ensure();
    await ensureDir(path.join(dir, "inst"), 0o755, undefined);
    node = new PostgresInstance({
      id: "inst-backup1",
      baseDir: path.join(dir, "inst", "node"),
      listenAddress: host,
      port: await freePort(host),
    });
    // A clone: its own system identifier, which the stanza records.
    assert.equal(await node.ensureInitialised({ template }), "template");
    await node.ensureServerCertificate(ca, { commonName: "inst-backup1", ipAddresses: [host] });
    const work = path.join(dir, "inst", "backup");
    paths = {
      configFile: path.join(work, "pgbackrest.conf"),
      lockDir: path.join(work, "lock"),
      logDir: path.join(work, "log"),
    };
    for (const d of [work, paths.lockDir, paths.logDir]) await ensureDir(d, 0o700, owner);
    const repoPath = path.join(dir, "repo", "ad-test");
    await ensureRepository(repoPath);
    spec = {
      stanza: "ad-test",
      repoPath,
      cipherPass: "k".repeat(40),
      retentionDays: 7,
      fullEveryHours: 168,
      archiveTimeoutS: 60,
      checkEveryS: 60,
    };
    const conf = renderPgBackRestConf(spec, node, paths);
    await writeFileAtomic(paths.configFile, conf, 0o600, owner);
    br = new PgBackRest(paths.configFile, spec.stanza);
    restorer = new InPlaceRestore({
      node,
      pgbackrest: br,
      stateFile: path.join(dir, "inst", "restore-state.json"),
      reconfigure: configure,
    });
    await configure();
    await node.start();
    await queryOnce(node.superuserConfig(), "CREATE ROLE src_user LOGIN");
    await queryOnce(node.superuserConfig(), "CREATE DATABASE app OWNER src_user");
    await sql("CREATE TABLE items (id int PRIMARY KEY)");
  });

  after(async () => {
    for (const n of [node, ...forks]) {
      await n?.destroy().catch((err: Error) => console.error(`cleanup: ${err.message}`));
    }
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("archives into an encrypted stanza and takes an annotated full backup", async () => {
    await br.stanzaCreate();
    await br.stanzaCreate(); // idempotent
    const [, ms] = await timed(() => br.backupFull({ "cellar-reason": "initial" }));
    console.log(`timing: first full backup ${ms} ms`);
    const info = await br.info();
    assert.equal(info.statusCode, 0, info.statusMessage);
    assert.equal(info.backups.length, 1);
    assert.equal(info.backups[0]!.type, "full");
    assert.equal(info.backups[0]!.timeline, 1);
    assert.equal(info.backups[0]!.annotations["cellar-reason"], "initial");
    assert.equal(fullBackupDue(info.backups, 1, new Date(), 168), null);
    // Encrypted: the repository's files are not readable as plain text.
    const backupInfo = await fs.readFile(path.join(spec.repoPath, "backup", "ad-test", "backup.info"));
    assert.ok(!backupInfo.toString("utf8").includes("[backup:current]"));
    const conf = await fs.stat(paths.configFile);
    assert.equal(conf.mode & 0o777, 0o600);
  });

  it("says the archive reaches now once nothing is left to archive, and how far it does otherwise", async () => {
    await br.check();
    const idle = await readArchiveStatus(node.superuserConfig());
    assert.equal(idle.timeline, 1);
    assert.equal(idle.error, null);
    assert.ok(idle.archivedUntil && Date.now() - idle.archivedUntil.getTime() < 5000, "caught up: now");
    await sql("INSERT INTO items VALUES (0)");
    const busy = await readArchiveStatus(node.superuserConfig());
    assert.ok(busy.archivedUntil && busy.archivedUntil < (await serverNow()), "a write not yet archived");
  });

  it("restores in place to a point in time: what was committed after it is gone, a new timeline starts", async () => {
    await sql("INSERT INTO items VALUES (1), (2)");
    await pause();
    const target = await serverNow();
    await pause();
    await sql("INSERT INTO items VALUES (3)");
    const info = await br.info();
    const [outcome, ms] = await timed(() => restorer.ensure({ id: "rst-1", targetTime: target }));
    console.log(`timing: restore in place ${ms} ms`);
    assert.equal(outcome?.status, "done", outcome?.error ?? "");
    assert.deepEqual(await rows(), [0, 1, 2]);
    const status = await readArchiveStatus(node.superuserConfig());
    assert.equal(status.timeline, 2);
    // The same request again changes nothing.
    await sql("INSERT INTO items VALUES (4)");
    assert.equal((await restorer.ensure({ id: "rst-1", targetTime: target }))?.status, "done");
    assert.deepEqual(await rows(), [0, 1, 2, 4]);
    // The old timeline's backups no longer count: a new full backup is due.
    assert.equal(fullBackupDue(info.backups, 2, new Date(), 168), "new-timeline");
    assert.deepEqual(recoveryWindow(info.backups, 2, new Date()), { earliest: null, latest: null });
    const auto = (await fs.readFile(path.join(node.dataDir, "postgresql.auto.conf"), "utf8")).trim();
    assert.doesNotMatch(auto, /recovery_target_time|restore_command/);
    // The recovery settings reset in its files wait for a restart without asking for one:
    // the next convergence that reloads the node goes through.
    assert.deepEqual(await node.reload(), { pendingRestart: [] });
  });

  it("refuses a target no backup of the current timeline reaches, and leaves the node as it was", async () => {
    const before = await rows();
    const outcome = await restorer.ensure({ id: "rst-2", targetTime: new Date(Date.now() - 3_600_000) });
    assert.equal(outcome?.status, "failed");
    assert.match(outcome?.error ?? "", /no backup of timeline 2/);
    assert.deepEqual(await rows(), before);
    const future = await restorer.ensure({ id: "rst-3", targetTime: new Date(Date.now() + 3_600_000) });
    assert.match(future?.error ?? "", /in the future/);
  });

  it("finishes a restore interrupted after the node was stopped", async () => {
    await br.backupFull({ "cellar-reason": "new-timeline" });
    const info = await br.info();
    const set = info.backups.filter((b) => b.timeline === 2).at(-1)!;
    await sql("INSERT INTO items VALUES (5)");
    await pause();
    const target = await serverNow();
    await pause();
    await sql("INSERT INTO items VALUES (6)");
    await queryOnce(node.superuserConfig(), "SELECT txid_current()");
    await br.check();
    // As if an agent died right after stopping the node: only the state file says what to do.
    await node.stop("fast");
    const stateFile = path.join(dir, "inst", "restore-state.json");
    const state = JSON.parse(await fs.readFile(stateFile, "utf8"));
    state.current = { id: "rst-4", targetTime: target.toISOString(), set: set.label, phase: "restoring" };
    await fs.writeFile(stateFile, JSON.stringify(state));
    await ensureDir(`${node.dataDir}.restore`, 0o700, postgresUser()); // a half-made side dir
    await fs.writeFile(path.join(`${node.dataDir}.restore`, "junk"), "x");
    assert.ok(await restorer.inProgress());
    const outcome = await restorer.ensure({ id: "rst-4", targetTime: target });
    assert.equal(outcome?.status, "done", outcome?.error ?? "");
    assert.deepEqual(await rows(), [0, 1, 2, 4, 5]);
    assert.equal((await readArchiveStatus(node.superuserConfig())).timeline, 3);
    assert.equal(await restorer.inProgress(), false);
    // The original stays aside until the agent, having told the outcome, drops it.
    await fs.access(`${node.dataDir}.pre-restore`);
    await restorer.dropLeftovers();
    await assert.rejects(fs.access(`${node.dataDir}.pre-restore`));
  });

  /** A fork's node: fresh clone, its own port and files, seeded from the stanza. */
  const forkNode = async (name: string) => {
    const fork = new PostgresInstance({
      id: `inst-${name}`,
      baseDir: path.join(dir, name, "node"),
      listenAddress: host,
      port: await freePort(host),
    });
    forks.push(fork);
    await ensureDir(path.join(dir, name), 0o755, undefined);
    await fork.ensureInitialised({ template });
    await fork.ensureServerCertificate(ca, { commonName: name, ipAddresses: [host] });
    const reconfigure = () => fork.configure(SETTINGS, { forceTls: false });
    await reconfigure();
    const seedConf = path.join(dir, name, "seed.conf");
    // The source's repository and key, the fork's own data dir.
    await writeFileAtomic(seedConf, renderPgBackRestConf(spec, fork, paths), 0o600, postgresUser());
    const seeder = new SeedFromBackup({
      node: fork,
      source: new PgBackRest(seedConf, spec.stanza),
      stateFile: path.join(dir, name, "seed-state.json"),
      reconfigure,
    });
    return { fork, seeder };
  };
  const rename = { fromUser: "src_user", fromDatabase: "app", toUser: "fork_user", toDatabase: "fork_app" };
  const forkRows = async (fork: PostgresInstance) =>
    (await queryOnce(fork.superuserConfig("fork_app"), "SELECT id FROM items ORDER BY id")).map((r) =>
      Number(r.id),
    );

  it("seeds a fork from the stanza at a point in time, under the fork's names; the source is untouched", async () => {
    const info = await br.info();
    const tl2 = info.backups.filter((b) => b.timeline === 2).at(-1)!;
    // Timeline 2 ran from the first restore until the second one: rows 0, 1, 2, 4 and 5 by then.
    const target = new Date(tl2.stoppedAt.getTime() + 1);
    const { fork, seeder } = await forkNode("fork1");
    const seed = { id: "seed-1", repoPath: spec.repoPath, stanza: spec.stanza, cipherPass: spec.cipherPass };
    await seeder.ensure({ ...seed, targetTime: target.toISOString(), timeline: 2, rename });
    assert.ok(await seeder.isDone("seed-1"));
    await seeder.ensure({ ...seed, targetTime: target.toISOString(), timeline: 2, rename }); // idempotent
    assert.deepEqual(await forkRows(fork), [0, 1, 2, 4]);
    const owner = await queryOnce(
      fork.superuserConfig(),
      "SELECT r.rolname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = 'fork_app'",
    );
    assert.equal(owner[0]?.rolname, "fork_user");
    assert.deepEqual(await rows(), [0, 1, 2, 4, 5], "the source keeps its data");
    await assert.rejects(fs.access(`${fork.dataDir}.pre-restore`));
  });

  it("seeds up to the archive's end when no commit follows the target there", async () => {
    await br.backupFull({ "cellar-reason": "new-timeline" });
    await sql("INSERT INTO items VALUES (7)");
    await br.check();
    await pause();
    const target = await serverNow();
    await br.check(); // archived, and no commit after the target
    const { fork, seeder } = await forkNode("fork2");
    const seed = { id: "seed-2", repoPath: spec.repoPath, stanza: spec.stanza, cipherPass: spec.cipherPass };
    await seeder.ensure({ ...seed, targetTime: target.toISOString(), timeline: 3, rename });
    assert.deepEqual(await forkRows(fork), [0, 1, 2, 4, 5, 7]);
    const state = JSON.parse(await fs.readFile(path.join(dir, "fork2", "seed-state.json"), "utf8"));
    assert.equal(state.toEnd, true, "the first try stopped short of the target, the second replayed all");
  });
});
