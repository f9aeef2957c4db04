// Continuous backups into an S3-compatible repository, against real PostgreSQL 15, pgBackRest
// 2.45 and an S3 server (s3rver over TLS with our own CA): stanza-create, WAL archiving, an
// encrypted full backup, a point-in-time restore in place, and the stanza's deletion.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { readArchiveStatus } from "../../src/engines/postgresql/backup/archive-status.ts";
import { ensureRepository, PgBackRest } from "../../src/engines/postgresql/backup/pgbackrest.ts";
import {
  archiveSettings,
  renderPgBackRestConf,
  type NodeBackupPaths,
} from "../../src/engines/postgresql/backup/pgbackrest-config.ts";
import { InPlaceRestore } from "../../src/engines/postgresql/backup/restore.ts";
import { removeStanza } from "../../src/engines/postgresql/backup/stanza-removal.ts";
import type { NodeBackupSpec } from "../../src/engines/postgresql/backup/types.ts";
import { ensureDir, postgresUser, writeFileAtomic } from "../../src/engines/postgresql/command.ts";
import { PgTemplate } from "../../src/engines/postgresql/data-dir.ts";
import { PostgresInstance } from "../../src/engines/postgresql/instance.ts";
import { planPostgresSettings } from "../../src/engines/postgresql/plan-settings.ts";
import { queryOnce } from "../../src/engines/postgresql/superuser.ts";
import { ensureCa } from "../../src/engines/tls/certificates.ts";
import { startTestS3, type TestS3 } from "../support/s3.ts";
import { freePort, loopbackPrefix, scratchDir, timed } from "./engine-fixtures.ts";

const SETTINGS = planPostgresSettings({ ramMb: 512, maxConnections: 30, model: "shared" });
const STANZA = "ad-s3test";
const REPO_PATH = `/cellar/osc-fr1/${STANZA}`;

describe("S3 repository (real PostgreSQL 15, pgBackRest 2.45, s3rver over TLS)", () => {
  let dir: string;
  let s3: TestS3 | undefined;
  let node: PostgresInstance | undefined;
  let br: PgBackRest;
  let spec: NodeBackupSpec;
  let paths: NodeBackupPaths;

  const sql = async (text: string) => queryOnce(node!.superuserConfig("app"), text);
  const rows = async () => (await sql("SELECT id FROM items ORDER BY id")).map((r) => Number(r.id));
  const configure = () =>
    node!.configure(SETTINGS, { forceTls: false, archive: archiveSettings(spec, paths) });
  const serverNow = async () => (await sql("SELECT clock_timestamp() AS t"))[0]!.t as Date;
  const pause = () => new Promise((r) => setTimeout(r, 50));

  before(async () => {
    dir = await scratchDir("backup-s3");
    s3 = await startTestS3(dir);
    const owner = postgresUser();
    const host = `${loopbackPrefix()}.1`;
    const ca = await ensureCa(path.join(dir, "ca"), "osc-fr1");
    const template = new PgTemplate(path.join(dir, "template"));
    await template.ensure();
    await ensureDir(path.join(dir, "inst"), 0o755, undefined);
    node = new PostgresInstance({
      id: "inst-s3backup1",
      baseDir: path.join(dir, "inst", "node"),
      listenAddress: host,
      port: await freePort(host),
    });
    await node.ensureInitialised({ template });
    await node.ensureServerCertificate(ca, { commonName: "inst-s3backup1", ipAddresses: [host] });
    const work = path.join(dir, "inst", "backup");
    paths = {
      configFile: path.join(work, "pgbackrest.conf"),
      lockDir: path.join(work, "lock"),
      logDir: path.join(work, "log"),
    };
    for (const d of [work, paths.lockDir, paths.logDir]) await ensureDir(d, 0o700, owner);
    spec = {
      stanza: STANZA,
      repoPath: REPO_PATH,
      s3: s3.repo,
      cipherPass: "s".repeat(64),
      retentionDays: 7,
      fullEveryHours: 168,
      archiveTimeoutS: 60,
      checkEveryS: 60,
    };
    await ensureRepository(spec.repoPath, spec.s3); // nothing to make in a bucket
    await writeFileAtomic(paths.configFile, renderPgBackRestConf(spec, node, paths), 0o600, owner);
    br = new PgBackRest(paths.configFile, STANZA);
    await configure();
    await node.start();
    await queryOnce(node.superuserConfig(), "CREATE DATABASE app");
    await sql("CREATE TABLE items (id int PRIMARY KEY)");
  });

  after(async () => {
    await node?.destroy().catch((err: Error) => console.error(`cleanup: ${err.message}`));
    await s3?.stop().catch((err: Error) => console.error(`cleanup: ${err.message}`));
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("writes no local repository and keeps the bucket's secret in a 0600 file of the postgres user", async () => {
    await assert.rejects(fs.access(REPO_PATH));
    const stat = await fs.stat(paths.configFile);
    assert.equal(stat.mode & 0o777, 0o600);
    const owner = postgresUser();
    if (owner) assert.equal(stat.uid, owner.uid);
    const conf = await fs.readFile(paths.configFile, "utf8");
    assert.match(conf, /^repo1-type=s3$/m);
    assert.match(conf, /^repo1-s3-key-secret=S3RVER$/m);
  });

  it("creates the stanza in the bucket, archives WAL into it and takes an encrypted full backup", async () => {
    await br.stanzaCreate();
    await br.stanzaCreate(); // idempotent
    await br.check();
    const [, ms] = await timed(() => br.backupFull({ "cellar-reason": "initial" }));
    console.log(`timing: first full backup into S3 ${ms} ms`);
    const info = await br.info();
    assert.equal(info.statusCode, 0, info.statusMessage);
    assert.equal(info.backups.length, 1);
    assert.equal(info.backups[0]!.annotations["cellar-reason"], "initial");
    const keys = await s3!.keys(REPO_PATH);
    assert.ok(keys.includes(`${REPO_PATH}/backup/${STANZA}/backup.info`), keys.slice(0, 5).join(" "));
    assert.ok(
      keys.some((k) => k.startsWith(`${REPO_PATH}/archive/${STANZA}/15-1/`)),
      "WAL in the bucket",
    );
    const backupInfo = await s3!.object(`${REPO_PATH}/backup/${STANZA}/backup.info`);
    assert.ok(!backupInfo.toString("utf8").includes("[backup:current]"), "encrypted");
    const status = await readArchiveStatus(node!.superuserConfig());
    assert.equal(status.error, null);
  });

  it("restores in place to a point in time from the bucket", async () => {
    const restorer = new InPlaceRestore({
      node: node!,
      pgbackrest: br,
      stateFile: path.join(dir, "inst", "restore-state.json"),
      reconfigure: configure,
    });
    await sql("INSERT INTO items VALUES (1), (2)");
    await pause();
    const target = await serverNow();
    await pause();
    await sql("INSERT INTO items VALUES (3)");
    const [outcome, ms] = await timed(() => restorer.ensure({ id: "rst-s3", targetTime: target }));
    console.log(`timing: restore in place from S3 ${ms} ms`);
    assert.equal(outcome?.status, "done", outcome?.error ?? "");
    assert.deepEqual(await rows(), [1, 2]);
    assert.equal((await readArchiveStatus(node!.superuserConfig())).timeline, 2);
    // The new timeline's history is in the bucket, where the lineage is read from.
    assert.ok((await br.timelineHistory(2))?.includes("before"), "timeline 2's history archived");
  });

  it("deletes the stanza from the bucket, with no server, and again without error", async () => {
    await node!.stop("fast");
    const target = { stanza: STANZA, repoPath: REPO_PATH, s3: s3!.repo, cipherPass: spec.cipherPass };
    const [, ms] = await timed(() => removeStanza(target));
    console.log(`timing: stanza delete in S3 ${ms} ms`);
    assert.deepEqual(await s3!.keys(REPO_PATH), []);
    await removeStanza(target);
  });
});
