// Verified backups against real PostgreSQL 15, pgBackRest 2.45 and cgroup v1: a full backup
// is restored into a scratch instance inside its own small sandbox, read, and its verdict
// written into the backup's annotations; a broken backup is failed with the reason; an agent
// killed -9 mid-verification leaves no server behind, and the next one cleans up and verifies.
// An encrypted node's scratch copy lives on a throwaway encrypted loop volume under the node's
// key (a marker row read through it, absent from its raw image), gone afterwards, also after a
// kill -9; without a way to encrypt it, nothing is restored.
import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { BackupVerifications, VERIFY_LIMITS } from "../../src/agent/backup-verifications.ts";
import { ensureDir, postgresUser, writeFileAtomic } from "../../src/engines/postgresql/command.ts";
import { PgTemplate } from "../../src/engines/postgresql/data-dir.ts";
import { PostgresInstance } from "../../src/engines/postgresql/instance.ts";
import { planPostgresSettings } from "../../src/engines/postgresql/plan-settings.ts";
import { queryOnce } from "../../src/engines/postgresql/superuser.ts";
import { verificationOf, type BackupSet } from "../../src/engines/postgresql/backup/backup-info.ts";
import { ensureRepository, PgBackRest } from "../../src/engines/postgresql/backup/pgbackrest.ts";
import {
  archiveSettings,
  renderPgBackRestConf,
} from "../../src/engines/postgresql/backup/pgbackrest-config.ts";
import type { NodeBackupSpec } from "../../src/engines/postgresql/backup/types.ts";
import type { VerifyOutcome } from "../../src/engines/postgresql/backup/verify.ts";
import type { CopyKey } from "../../src/agent/node-encryption.ts";
import { CgroupV1Runtime } from "../../src/runtime/cgroup-v1.runtime.ts";
import { encryptionOf } from "../../src/runtime/fscrypt.ts";
import { imagePathOf } from "../../src/runtime/volume.ts";
import { imageHolds } from "../support/raw-image.ts";
import { probeIsolation } from "../../src/runtime/probe.ts";
import { type CertificateAuthority, ensureCa } from "../../src/engines/tls/certificates.ts";
import { freePort, loopbackPrefix, scratchDir, timed } from "./engine-fixtures.ts";

const SETTINGS = planPostgresSettings({ ramMb: 512, maxConnections: 30, model: "shared" });
const probe = await probeIsolation();
const skip = probe.backend === "cgroup-v1" && probe.limits.memory.ok ? false : "needs root and cgroup v1";
const PARENT = `cellar-test-verify-${process.pid}`;
const ID = "inst-verify1";
const run = promisify(execFile);
const noLoop = probe.loopVolumes.ok ? false : probe.loopVolumes.detail;

/** Processes whose command line names `needle` (the scratch server's data dir). */
async function processesNaming(needle: string): Promise<number[]> {
  const found: number[] = [];
  for (const name of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const cmd = await fs.readFile(`/proc/${name}/cmdline`, "utf8").catch(() => "");
    const stat = await fs.readFile(`/proc/${name}/stat`, "utf8").catch(() => "");
    if (cmd.includes(needle) && !/\) [ZX] /.test(stat)) found.push(Number(name));
  }
  return found;
}

/** Mount points and loop devices' backing files under `dir`: none once a verification is over. */
async function mountsAndLoopsUnder(dir: string): Promise<string[]> {
  const mounts = (await run("findmnt", ["-rn", "-o", "TARGET"])).stdout.split("\n");
  const loops = (await run("losetup", ["--list", "--raw", "--noheadings", "-O", "BACK-FILE"])).stdout.split(
    "\n",
  );
  return [...mounts, ...loops].filter((t) => t.startsWith(dir + "/"));
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("verified backups (real PostgreSQL, pgBackRest and cgroup v1)", { skip }, () => {
  let dir: string;
  let instDir: string;
  let runDir: string;
  let node: PostgresInstance;
  let br: PgBackRest;
  let spec: NodeBackupSpec;
  let ca: CertificateAuthority;
  const runtime = new CgroupV1Runtime({ dirs: probe.layout.v1, parent: PARENT });
  const children: ChildProcess[] = [];

  const sql = (text: string) => queryOnce(node.superuserConfig("app"), text, [], 60_000);
  const workDir = () => path.join(instDir, "backup", "verify");
  /** An encrypted node's verification copy goes here (the work dir inside the policy's dir). */
  const encryptedDir = () => path.join(workDir(), "enc");
  const encryptedPgdata = () => path.join(encryptedDir(), "work", "pgdata");
  /** `atRest`: how the node's own data is kept (absent: plain). */
  const verifier = (atRest?: CopyKey) =>
    new BackupVerifications({
      dirOf: () => instDir,
      scratch: () => ({ runtime, runDir, ...(atRest ? { copyKey: () => Promise.resolve(atRest) } : {}) }),
    });
  /** A stand-in agent verifying the newest backup (backup-verify-child.ts), killed -9 once its server runs. */
  const killMidVerification = async (pgdata: string, env: Record<string, string> = {}) => {
    const raw = await br.run("info", ["--output=json"], { timeoutMs: 60_000 });
    const childArgs = [instDir, spec.stanza, "-", runDir, PARENT];
    const child = spawn(
      process.execPath,
      ["--import", "tsx", path.join(import.meta.dirname, "backup-verify-child.ts"), ...childArgs],
      { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, VERIFY_INFO_JSON: raw, ...env } },
    );
    children.push(child);
    // Killed while its scratch server replays or is read.
    await until("the scratch server to run", async () =>
      (await processesNaming(pgdata)).length > 0 ? true : undefined,
    );
    child.kill("SIGKILL");
    await until("the scratch server to die with its agent", async () =>
      (await processesNaming(pgdata)).length === 0 ? true : undefined,
    );
  };
  /** Verifies the newest unverified full backup; resolves with its outcome. */
  const verifyNext = (v: BackupVerifications, backups: BackupSet[]) =>
    new Promise<{ label: string; outcome: VerifyOutcome }>((resolve, reject) => {
      v.consider({
        id: ID,
        configFile: path.join(instDir, "backup", "pgbackrest.conf"),
        stanza: spec.stanza,
        backups,
        timeline: 1,
        onDone: (label, outcome) => resolve({ label, outcome }),
      });
      if (!v.busy(ID)) reject(new Error("nothing to verify"));
    });

  before(async () => {
    dir = await scratchDir("verify");
    instDir = path.join(dir, "inst");
    runDir = path.join(dir, "run");
    const owner = postgresUser();
    const host = `${loopbackPrefix()}.1`;
    ca = await ensureCa(path.join(dir, "ca"), "osc-fr1");
    const template = new PgTemplate(path.join(dir, "template"));
    await template.ensure();
    await ensureDir(instDir, 0o755, undefined);
    await ensureDir(runDir, 0o755, undefined);
    node = new PostgresInstance({
      id: ID,
      baseDir: path.join(instDir, "node"),
      listenAddress: host,
      port: await freePort(host),
    });
    await node.ensureInitialised({ template });
    await node.ensureServerCertificate(ca, { commonName: ID, ipAddresses: [host] });
    const work = path.join(instDir, "backup");
    const paths = {
      configFile: path.join(work, "pgbackrest.conf"),
      lockDir: path.join(work, "lock"),
      logDir: path.join(work, "log"),
    };
    for (const d of [work, paths.lockDir, paths.logDir]) await ensureDir(d, 0o700, owner);
    const repoPath = path.join(dir, "repo", "ad-verify");
    await ensureRepository(repoPath);
    spec = {
      stanza: "ad-verify",
      repoPath,
      cipherPass: "v".repeat(40),
      retentionDays: 7,
      fullEveryHours: 168,
      archiveTimeoutS: 60,
      checkEveryS: 60,
    };
    await writeFileAtomic(paths.configFile, renderPgBackRestConf(spec, node, paths), 0o600, owner);
    br = new PgBackRest(paths.configFile, spec.stanza);
    await node.configure(SETTINGS, { forceTls: false, archive: archiveSettings(spec, paths) });
    await node.start();
    await queryOnce(node.superuserConfig(), "CREATE DATABASE app");
    await sql("CREATE TABLE items (id int PRIMARY KEY, note text)");
    await sql("INSERT INTO items SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g");
    await br.stanzaCreate();
    await br.backupFull({ "cellar-reason": "initial" });
  });

  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    await node?.destroy().catch((err: Error) => console.error(`cleanup: ${err.message}`));
    for (const name of await runtime.listSandboxes().catch(() => [])) await runtime.removeSandbox(name);
    for (const d of new Set(Object.values(probe.layout.v1)))
      await fs.rmdir(path.join(d, PARENT)).catch(() => {});
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("restores a full backup into a sandboxed scratch server, reads it, and annotates the backup verified", async () => {
    const v = verifier();
    const sandbox = BackupVerifications.sandboxName(ID);
    let inSandbox = 0;
    const [{ label, outcome }, ms] = await timed(async () => {
      const result = verifyNext(v, (await br.info()).backups);
      // While it runs, its commands are inside the verification sandbox, not the node's.
      while (v.busy(ID)) {
        inSandbox = Math.max(inSandbox, (await runtime.processes(sandbox).catch(() => [])).length);
        await new Promise((r) => setTimeout(r, 20));
      }
      return result;
    });
    console.log(`timing: verification ${ms} ms (${outcome.detail})`);
    assert.equal(outcome.status, "verified", outcome.detail);
    assert.match(outcome.detail, /databases, \d+ relations, (\d+) rows read/);
    assert.ok(Number(/(\d+) rows read/.exec(outcome.detail)![1]) >= 20000, "the user table was read in full");
    assert.ok(inSandbox > 0, "commands ran inside the verification sandbox");
    const [set] = (await br.info()).backups;
    assert.equal(set!.label, label);
    assert.deepEqual(verificationOf(set!), { status: "verified", at: outcome.at, detail: outcome.detail });
    // Nothing left: no scratch dir, socket dir, server or sandbox; the node itself untouched.
    await assert.rejects(fs.access(workDir()));
    assert.deepEqual(await fs.readdir(runDir), []);
    assert.deepEqual(await processesNaming(workDir()), []);
    assert.ok(!(await runtime.listSandboxes()).includes(sandbox));
    assert.equal((await sql("SELECT count(*)::int AS n FROM items"))[0]!.n, 20000);
    // A verified backup is not verified again.
    assert.throws(() => {
      v.consider({
        id: ID,
        configFile: "",
        stanza: spec.stanza,
        backups: [set!],
        timeline: 1,
        onDone: () => undefined,
      });
      if (!v.busy(ID)) throw new Error("idle");
    }, /idle/);
  });

  it("a killed agent's scratch server dies with it; the next agent removes the leftovers and verifies", async () => {
    await br.backupFull({ "cellar-reason": "scheduled" });
    await killMidVerification(path.join(workDir(), "pgdata"));
    assert.ok(await fs.stat(workDir()), "the killed agent left its scratch dir");
    // The next agent: still pending in the repository, so verified again, after a sweep.
    const pending = (await br.info()).backups.at(-1)!;
    assert.equal(verificationOf(pending).status, "pending");
    const { label, outcome } = await verifyNext(verifier(), (await br.info()).backups);
    assert.equal(label, pending.label);
    assert.equal(outcome.status, "verified", outcome.detail);
    await assert.rejects(fs.access(workDir()));
    assert.ok(!(await runtime.listSandboxes()).includes(BackupVerifications.sandboxName(ID)));
  });

  it("fails a broken backup with the reason, and cleans up", async () => {
    await br.backupFull({ "cellar-reason": "scheduled" });
    const set = (await br.info()).backups.at(-1)!;
    // A relation file lost from the repository: pgBackRest cannot restore it.
    const base = path.join(spec.repoPath, "backup", spec.stanza, set.label, "pg_data", "base");
    const dbDir = (await fs.readdir(base)).sort((a, b) => Number(b) - Number(a))[0]!;
    const files = (await fs.readdir(path.join(base, dbDir))).filter((f) => /^\d+\./.test(f));
    await fs.rm(path.join(base, dbDir, files[0]!));
    const { outcome } = await verifyNext(verifier(), (await br.info()).backups);
    assert.equal(outcome.status, "failed");
    assert.match(outcome.detail, /^restore: /);
    const after = (await br.info()).backups.find((b) => b.label === set.label)!;
    assert.equal(verificationOf(after).status, "failed");
    assert.equal(verificationOf(after).detail, outcome.detail);
    await assert.rejects(fs.access(workDir()));
    assert.deepEqual(await processesNaming(workDir()), []);
  });

  it(
    "restores an encrypted node's backup onto an encrypted scratch volume under its key, gone afterwards",
    { skip: noLoop },
    async () => {
      const marker = `cellar-verify-marker-${randomBytes(6).toString("hex")}`;
      await sql(`INSERT INTO items VALUES (-1, '${marker}')`);
      await br.backupFull({ "cellar-reason": "scheduled" });
      const key = randomBytes(64);
      const v = verifier({ encrypted: true, key });
      const result = verifyNext(v, (await br.info()).backups);
      // Held still while its server runs (the restore is complete then): the postmaster stopped.
      const pid = await until("the scratch server on the encrypted volume", async () => {
        for (const p of await processesNaming(encryptedPgdata())) {
          const cmd = await fs.readFile(`/proc/${p}/cmdline`, "utf8").catch(() => "");
          if (cmd.split("\0").includes("-D")) return p;
        }
        return undefined;
      });
      process.kill(pid, "SIGSTOP");
      try {
        const policy = await encryptionOf(encryptedDir());
        assert.equal(policy.state, "encrypted", JSON.stringify(policy));
        assert.equal(policy.contents, "AES-256-XTS");
        assert.equal(policy.key, "present");
        assert.ok(
          await mountsAndLoopsUnder(instDir).then((m) => m.includes(workDir())),
          "a volume of its own",
        );
        // The restored copy holds the marker (read through the filesystem), its raw image does not.
        await run("sync", ["-f", workDir()]);
        await run("grep", ["-rqF", marker, path.join(encryptedPgdata(), "base")]);
        assert.equal(
          await imageHolds(imagePathOf(workDir()), marker),
          false,
          "the copy is encrypted on disk",
        );
      } finally {
        process.kill(pid, "SIGCONT");
      }
      const { outcome } = await result;
      assert.equal(outcome.status, "verified", outcome.detail);
      assert.deepEqual(await mountsAndLoopsUnder(instDir), [], "no mount, no loop device");
      await assert.rejects(fs.access(imagePathOf(workDir())), "no image");
      await assert.rejects(fs.access(workDir()));
      assert.deepEqual(await processesNaming(workDir()), []);
    },
  );

  it(
    "an agent killed -9 mid-verification leaves an encrypted scratch volume that the next one removes",
    { skip: noLoop },
    async () => {
      await br.backupFull({ "cellar-reason": "scheduled" });
      const key = randomBytes(64);
      await killMidVerification(encryptedPgdata(), { VERIFY_KEY_HEX: key.toString("hex") });
      assert.ok((await mountsAndLoopsUnder(instDir)).includes(workDir()), "the killed agent left its volume");
      const { outcome } = await verifyNext(verifier({ encrypted: true, key }), (await br.info()).backups);
      assert.equal(outcome.status, "verified", outcome.detail);
      assert.deepEqual(await mountsAndLoopsUnder(instDir), []);
      await assert.rejects(fs.access(imagePathOf(workDir())));
      await assert.rejects(fs.access(workDir()));
    },
  );

  it("does not restore an encrypted node's backup it cannot encrypt: failed with the reason", async () => {
    await br.backupFull({ "cellar-reason": "scheduled" });
    const set = (await br.info()).backups.at(-1)!;
    const { outcome } = await verifyNext(verifier({ encrypted: true, key: null }), (await br.info()).backups);
    assert.equal(outcome.status, "failed");
    assert.match(outcome.detail, /not given the node's key.*no plaintext copy was written/);
    const after = (await br.info()).backups.find((b) => b.label === set.label)!;
    assert.equal(verificationOf(after).detail, outcome.detail);
    await assert.rejects(fs.access(workDir()));
    assert.deepEqual(await mountsAndLoopsUnder(instDir), []);
  });

  it("keeps the verification sandbox small", () => {
    assert.ok(VERIFY_LIMITS.memoryBytes! <= 512 * 1024 * 1024);
    assert.ok(VERIFY_LIMITS.cpuQuota! <= 0.5);
  });
});
