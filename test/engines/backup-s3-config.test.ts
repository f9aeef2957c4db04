// The S3 repository's configuration: CELLAR_BACKUP_S3_* parsed and checked (a message naming
// the variable and what is allowed), pgBackRest's repo1 options rendered from a spec, and the
// controller's mapping from the stored location to a node's spec. Pure: no server.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { ConfigError, loadConfig } from "../../src/config.ts";
import {
  parseRepoLocation,
  renderPgBackRestConf,
  seedSourceSpec,
} from "../../src/engines/postgresql/backup/pgbackrest-config.ts";
import type { NodeBackupSpec, NodeSeedSpec, S3RepoSpec } from "../../src/engines/postgresql/backup/types.ts";
import { repoRootOf, repoSpecOf } from "../../src/reconciler/backup-repo.ts";

const SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const S3_ENV = {
  CELLAR_BACKUP_S3_ENDPOINT: "minio.internal:9000",
  CELLAR_BACKUP_S3_BUCKET: "cellar-backups",
  CELLAR_BACKUP_S3_REGION: "us-east-1",
  CELLAR_BACKUP_S3_ACCESS_KEY: "AKIAEXAMPLE",
  CELLAR_BACKUP_S3_SECRET_KEY: SECRET,
};

describe("S3 backup repository configuration", () => {
  it("is off unless a CELLAR_BACKUP_S3_* variable is set", () => {
    assert.equal(loadConfig({}).backup.s3, null);
  });

  it("reads the complete set, with defaults for the optional ones", () => {
    const s3 = loadConfig(S3_ENV).backup.s3;
    assert.deepEqual(s3, {
      endpoint: "minio.internal",
      port: 9000,
      bucket: "cellar-backups",
      region: "us-east-1",
      accessKey: "AKIAEXAMPLE",
      secretKey: SECRET,
      uriStyle: "host",
      verifyTls: true,
      caFile: null,
      prefix: "/cellar",
    });
    assert.equal(
      loadConfig({ ...S3_ENV, CELLAR_BACKUP_S3_ENDPOINT: "s3.eu-west-3.amazonaws.com" }).backup.s3?.port,
      443,
    );
  });

  it("reads the optional variables", () => {
    const ca = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "cellar-s3cfg-")), "ca.crt");
    fs.writeFileSync(ca, "-----BEGIN CERTIFICATE-----\n");
    try {
      const s3 = loadConfig({
        ...S3_ENV,
        CELLAR_BACKUP_S3_URI_STYLE: "path",
        CELLAR_BACKUP_S3_CA_FILE: ca,
        CELLAR_BACKUP_S3_PREFIX: "/pg/backups/",
      }).backup.s3;
      assert.equal(s3?.uriStyle, "path");
      assert.equal(s3?.caFile, ca);
      assert.equal(s3?.prefix, "/pg/backups");
      assert.equal(loadConfig({ ...S3_ENV, CELLAR_BACKUP_S3_PREFIX: "/" }).backup.s3?.prefix, "");
      assert.equal(loadConfig({ ...S3_ENV, CELLAR_BACKUP_S3_VERIFY_TLS: "off" }).backup.s3?.verifyTls, false);
    } finally {
      fs.rmSync(path.dirname(ca), { recursive: true, force: true });
    }
  });

  const refused: Array<[Record<string, string>, RegExp]> = [
    [
      { CELLAR_BACKUP_S3_ENDPOINT: "minio:9000" },
      /CELLAR_BACKUP_S3_BUCKET, CELLAR_BACKUP_S3_REGION, .*must be set too/,
    ],
    [{ ...S3_ENV, CELLAR_BACKUP_S3_SECRET_KEY: "" }, /CELLAR_BACKUP_S3_SECRET_KEY must be set too/],
    [{ CELLAR_BACKUP_S3_PREFIX: "/x" }, /CELLAR_BACKUP_S3_ENDPOINT, .* must be set too/],
    [
      { ...S3_ENV, CELLAR_BACKUP_S3_ENDPOINT: "https://minio:9000" },
      /CELLAR_BACKUP_S3_ENDPOINT=.* expected host\[:port\] without a scheme/,
    ],
    [{ ...S3_ENV, CELLAR_BACKUP_S3_ENDPOINT: "minio:99999" }, /CELLAR_BACKUP_S3_ENDPOINT/],
    [
      { ...S3_ENV, CELLAR_BACKUP_S3_BUCKET: "Cellar_Backups" },
      /CELLAR_BACKUP_S3_BUCKET=.* 3 to 63 lowercase/,
    ],
    [{ ...S3_ENV, CELLAR_BACKUP_S3_REGION: "EU West" }, /CELLAR_BACKUP_S3_REGION=.* region name/],
    [
      { ...S3_ENV, CELLAR_BACKUP_S3_URI_STYLE: "virtual" },
      /CELLAR_BACKUP_S3_URI_STYLE=virtual .* "host" .* "path"/,
    ],
    [{ ...S3_ENV, CELLAR_BACKUP_S3_VERIFY_TLS: "no" }, /CELLAR_BACKUP_S3_VERIFY_TLS=no .* on or off/],
    [{ ...S3_ENV, CELLAR_BACKUP_S3_CA_FILE: "certs/ca.pem" }, /CELLAR_BACKUP_S3_CA_FILE=.* absolute path/],
    [
      { ...S3_ENV, CELLAR_BACKUP_S3_CA_FILE: "/nonexistent/ca.pem" },
      /CELLAR_BACKUP_S3_CA_FILE=.* does not exist/,
    ],
    [{ ...S3_ENV, CELLAR_BACKUP_S3_PREFIX: "/a/../b" }, /CELLAR_BACKUP_S3_PREFIX=.* a path in the bucket/],
    [{ ...S3_ENV, CELLAR_BACKUP_S3_PREFIX: "/a b" }, /CELLAR_BACKUP_S3_PREFIX/],
    [
      { ...S3_ENV, CELLAR_BACKUP_S3_ACCESS_KEY: "AK\nrepo1-path=/x" },
      /CELLAR_BACKUP_S3_ACCESS_KEY cannot contain line breaks/,
    ],
  ];
  for (const [env, message] of refused) {
    it(`refuses ${JSON.stringify({ ...env, CELLAR_BACKUP_S3_SECRET_KEY: undefined })}`, () => {
      assert.throws(
        () => loadConfig(env),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError);
          assert.match(err.message, message);
          // The secret is never repeated in a message (it reaches logs and terminals).
          assert.ok(!err.message.includes(SECRET));
          return true;
        },
      );
    });
  }

  it("refuses a CA file with TLS verification off", () => {
    assert.throws(
      () =>
        loadConfig({
          ...S3_ENV,
          CELLAR_BACKUP_S3_VERIFY_TLS: "off",
          CELLAR_BACKUP_S3_CA_FILE: "/etc/hostname",
        }),
      /CELLAR_BACKUP_S3_CA_FILE is set but CELLAR_BACKUP_S3_VERIFY_TLS=off/,
    );
  });
});

const S3_REPO: S3RepoSpec = {
  endpoint: "minio.internal",
  port: 9000,
  bucket: "cellar-backups",
  region: "us-east-1",
  uriStyle: "path",
  verifyTls: true,
  caFile: "/etc/cellar/s3-ca.pem",
  accessKey: "AKIAEXAMPLE",
  secretKey: SECRET,
};
const SPEC: NodeBackupSpec = {
  stanza: "ad-1",
  repoPath: "/cellar/osc-fr1/ad-1",
  s3: S3_REPO,
  cipherPass: "c".repeat(64),
  retentionDays: 7,
  fullEveryHours: 168,
  archiveTimeoutS: 30,
  checkEveryS: 60,
};
const NODE = { dataDir: "/data/pgdata", port: 5432, socketDir: "/run/pg" };
const PATHS = { configFile: "/x/pgbackrest.conf", lockDir: "/x/lock", logDir: "/x/log" };
const optionsOf = (conf: string) =>
  new Map(
    conf
      .split("\n")
      .filter((l) => l.includes("="))
      .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)] as const),
  );

describe("pgBackRest repo1 options", () => {
  it("renders an S3 repository with the stanza and key of the database", () => {
    const o = optionsOf(renderPgBackRestConf(SPEC, NODE, PATHS));
    assert.equal(o.get("repo1-type"), "s3");
    assert.equal(o.get("repo1-path"), "/cellar/osc-fr1/ad-1");
    assert.equal(o.get("repo1-s3-endpoint"), "minio.internal");
    assert.equal(o.get("repo1-storage-port"), "9000");
    assert.equal(o.get("repo1-s3-bucket"), "cellar-backups");
    assert.equal(o.get("repo1-s3-region"), "us-east-1");
    assert.equal(o.get("repo1-s3-uri-style"), "path");
    assert.equal(o.get("repo1-s3-key"), "AKIAEXAMPLE");
    assert.equal(o.get("repo1-s3-key-secret"), SECRET);
    assert.equal(o.get("repo1-storage-ca-file"), "/etc/cellar/s3-ca.pem");
    assert.equal(o.has("repo1-storage-verify-tls"), false, "pgBackRest verifies by default");
    assert.equal(o.get("repo1-cipher-type"), "aes-256-cbc");
    assert.equal(o.get("repo1-cipher-pass"), "c".repeat(64));
    assert.equal(o.get("pg1-path"), "/data/pgdata");
  });

  it("turns verification off only when asked, and names no CA file without one", () => {
    const s3 = { ...S3_REPO, verifyTls: false };
    delete s3.caFile;
    const o = optionsOf(renderPgBackRestConf({ ...SPEC, s3 }, NODE, PATHS));
    assert.equal(o.get("repo1-storage-verify-tls"), "n");
    assert.equal(o.has("repo1-storage-ca-file"), false);
  });

  it("renders a posix repository exactly as before", () => {
    const posix = { ...SPEC, repoPath: "/var/lib/cellar/backups/osc-fr1/ad-1" };
    delete posix.s3;
    const o = optionsOf(renderPgBackRestConf(posix, NODE, PATHS));
    assert.equal(o.get("repo1-type"), "posix");
    assert.equal(o.get("repo1-path"), "/var/lib/cellar/backups/osc-fr1/ad-1");
    assert.ok(![...o.keys()].some((k) => k.startsWith("repo1-s3") || k.startsWith("repo1-storage")));
  });

  it("refuses a value with a line break (it would inject an option)", () => {
    assert.throws(() =>
      renderPgBackRestConf({ ...SPEC, s3: { ...S3_REPO, secretKey: "a\nrepo1-path=/" } }, NODE, PATHS),
    );
  });

  it("gives a fork's seed config the source's repository, whichever kind each is", () => {
    const seed: NodeSeedSpec = {
      id: "seed-ad-2",
      repoPath: "/var/lib/cellar/backups/osc-fr1/ad-0",
      stanza: "ad-0",
      cipherPass: "p".repeat(64),
      targetTime: new Date().toISOString(),
      timeline: 1,
      rename: { fromUser: "a", fromDatabase: "a", toUser: "b", toDatabase: "b" },
    };
    const fromPosix = seedSourceSpec(SPEC, seed);
    assert.equal(fromPosix.s3, undefined);
    assert.equal(fromPosix.repoPath, seed.repoPath);
    assert.equal(fromPosix.stanza, "ad-0");
    assert.equal(fromPosix.cipherPass, seed.cipherPass);
    const posix = { ...SPEC };
    delete posix.s3;
    const fromS3 = seedSourceSpec(posix, { ...seed, s3: S3_REPO, repoPath: "/c/r/ad-0" });
    assert.deepEqual(fromS3.s3, S3_REPO);
  });
});

describe("repository locations in the store", () => {
  const cfg = loadConfig({ ...S3_ENV, CELLAR_BACKUP_S3_URI_STYLE: "path" }).backup;

  it("places new repositories under s3://<bucket><prefix> when S3 is configured, else the posix root", () => {
    assert.equal(repoRootOf(cfg), "s3://cellar-backups/cellar");
    assert.equal(repoRootOf(loadConfig({ CELLAR_BACKUP_REPO: "/srv/backups" }).backup), "/srv/backups");
  });

  it("parses both kinds", () => {
    assert.deepEqual(parseRepoLocation("/srv/backups/osc-fr1/ad-1"), {
      kind: "posix",
      path: "/srv/backups/osc-fr1/ad-1",
    });
    assert.deepEqual(parseRepoLocation("s3://cellar-backups/cellar/osc-fr1/ad-1"), {
      kind: "s3",
      bucket: "cellar-backups",
      path: "/cellar/osc-fr1/ad-1",
    });
    assert.throws(() => parseRepoLocation("s3://Bad_Bucket"), /invalid S3 repository location/);
  });

  it("gives a spec the bucket the database was placed in, with the configured endpoint and keys", () => {
    const r = repoSpecOf(cfg.s3, "s3://older-bucket/cellar/osc-fr1/ad-1");
    assert.equal(r.repoPath, "/cellar/osc-fr1/ad-1");
    assert.equal(r.s3?.bucket, "older-bucket");
    assert.equal(r.s3?.endpoint, "minio.internal");
    assert.equal(r.s3?.uriStyle, "path");
    assert.equal(r.s3?.secretKey, SECRET);
    assert.equal("caFile" in r.s3, false);
  });

  it("keeps a posix database posix (spec unchanged), and refuses an S3 one without S3 settings", () => {
    assert.deepEqual(repoSpecOf(cfg.s3, "/srv/backups/osc-fr1/ad-1"), {
      repoPath: "/srv/backups/osc-fr1/ad-1",
    });
    assert.throws(
      () => repoSpecOf(null, "s3://cellar-backups/cellar/osc-fr1/ad-1"),
      /S3 repository is not configured/,
    );
  });
});
