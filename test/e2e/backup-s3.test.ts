// Continuous backups into an S3-compatible bucket, end to end: a controller configured with
// CELLAR_BACKUP_S3_* (s3rver over TLS with our own CA), a real agent, PostgreSQL and
// pgBackRest. A Starter add-on archives and backs up into the bucket (nothing on the local
// disk), a restore in place reads it back, the keys never show in an API answer, and
// deleting the add-on deletes its stanza from the bucket.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import type pg from "pg";
import { connectVerified, startCluster, type Cluster } from "../support/cluster.ts";
import { startTestS3, type TestS3 } from "../support/s3.ts";
import { scratchDir } from "../engines/engine-fixtures.ts";

describe("continuous backups into S3, end to end", () => {
  let dir = "";
  let s3: TestS3 | undefined;
  let cl: Cluster | undefined;
  let ca = "";
  let addonId = "";
  let url = "";
  const repoOf = (id: string) => `/e2e/osc-fr1/${id}`;

  before(async () => {
    dir = await scratchDir("e2e-s3");
    s3 = await startTestS3(dir);
    cl = await startCluster({
      subnet: 56,
      hosts: [{ name: "e2e-s3-s1", pool: "shared", az: "osc-fr1-a" }],
      env: {
        CELLAR_BACKUP_CHECK_EVERY_S: "2",
        CELLAR_BACKUP_ARCHIVE_TIMEOUT_S: "5",
        CELLAR_BACKUP_S3_ENDPOINT: `${s3.repo.endpoint}:${s3.repo.port}`,
        CELLAR_BACKUP_S3_BUCKET: s3.repo.bucket,
        CELLAR_BACKUP_S3_REGION: s3.repo.region,
        CELLAR_BACKUP_S3_ACCESS_KEY: s3.repo.accessKey,
        CELLAR_BACKUP_S3_SECRET_KEY: s3.repo.secretKey,
        CELLAR_BACKUP_S3_URI_STYLE: "path",
        CELLAR_BACKUP_S3_CA_FILE: s3.caFile,
        CELLAR_BACKUP_S3_PREFIX: "/e2e",
      },
    });
    ca = await cl.regionCa();
    assert.equal((await cl.api("POST", "/v1/apps", { app: { name: "s3-app" } })).status, 201);
  });
  after(async () => {
    await cl?.close().catch((err: Error) => console.error(`cleanup: ${err.message}`));
    await s3?.stop().catch((err: Error) => console.error(`cleanup: ${err.message}`));
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  /** Every answer is checked for the bucket's keys (s3rver's are both "S3RVER"). */
  const noKeys = (json: unknown) =>
    assert.ok(!JSON.stringify(json).includes("S3RVER"), "no S3 key in an answer");
  const dbApi = async (id: string, method: string, p: string, body?: unknown) => {
    const tok = await cl!.api("POST", `/v1/apps/s3-app/addons/${id}/token`);
    assert.equal(tok.status, 200, JSON.stringify(tok.json));
    const res = await fetch(`${cl!.controller.url}/api/databases/${id}${p}`, {
      method,
      headers: { authorization: `Bearer ${tok.json.addon.token}`, "content-type": "application/json" },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    const json = text ? JSON.parse(text) : null;
    noKeys(json);
    return { status: res.status, json };
  };
  const withClient = async <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => {
    const client = await connectVerified(url, ca);
    try {
      return await fn(client);
    } finally {
      await client.end();
    }
  };
  const notes = () =>
    withClient(async (c) => (await c.query("SELECT note FROM ledger ORDER BY id")).rows.map((r) => r.note));

  it("archives and backs up a new Starter add-on into the bucket, encrypted", async () => {
    const res = await cl!.api("POST", "/v1/apps/s3-app/addons", {
      addon: { addon_provider_id: "postgresql", plan_id: "postgresql-starter-512" },
    });
    assert.equal(res.status, 201);
    addonId = res.json.addon.id;
    url = await cl!.waitFor(
      "the add-on to run",
      async () => {
        const vars = (await cl!.api("GET", "/v1/apps/s3-app/variables")).json.variables as any[];
        return vars.find((v) => v.name === "SCALINGO_POSTGRESQL_URL")?.value as string | undefined;
      },
      180_000,
    );
    await withClient(async (c) => {
      await c.query("CREATE TABLE ledger (id serial PRIMARY KEY, note text NOT NULL)");
      await c.query("INSERT INTO ledger (note) VALUES ('kept-1')");
    });
    await cl!.waitFor("a recovery window", async () => {
      const w = (await dbApi(addonId, "GET", "/pitr/recovery_window")).json.recovery_window;
      return w.earliest_recoverable_at ? w : undefined;
    });
    const keys = await s3!.keys(repoOf(addonId));
    const infoKey = `${repoOf(addonId)}/backup/${addonId}/backup.info`;
    assert.ok(keys.includes(infoKey), keys.slice(0, 5).join(" "));
    assert.ok(!(await s3!.object(infoKey)).toString("utf8").includes("[backup:current]"), "encrypted");
    await assert.rejects(
      fs.access(path.join(cl!.dataDir, "backups", "osc-fr1", addonId)),
      "no posix repository",
    );
    const stored = await cl!.controller.deps.db.query(
      "SELECT repo_path FROM continuous_backups WHERE database_id = $1",
      [addonId],
    );
    assert.equal(stored.rows[0].repo_path, `s3://${s3!.repo.bucket}${repoOf(addonId)}`);
    noKeys((await cl!.api("GET", `/v1/apps/s3-app/addons/${addonId}`)).json);
  });

  it("verifies the full backup by restoring it from the bucket into a scratch server", async () => {
    const verified = await cl!.waitFor(
      "the backup's verification",
      async () => {
        const sets = (await dbApi(addonId, "GET", "/pitr/backups")).json.continuous_backups as any[];
        const b = sets[0];
        return b && b.verification_status !== "pending" ? b : undefined;
      },
      180_000,
    );
    assert.equal(verified.verification_status, "verified", verified.verification_detail);
  });

  it("restores in place from the bucket to a point in time", async () => {
    const target = await withClient(async (c) => {
      await c.query("INSERT INTO ledger (note) VALUES ('kept-2')");
      await new Promise((r) => setTimeout(r, 50));
      const t = (await c.query("SELECT clock_timestamp() AS t")).rows[0].t as Date;
      await new Promise((r) => setTimeout(r, 50));
      await c.query("INSERT INTO ledger (note) VALUES ('lost-3')");
      return t.toISOString();
    });
    await cl!.waitFor(
      "the archive to reach past the target",
      async () => {
        const w = (await dbApi(addonId, "GET", "/pitr/recovery_window")).json.recovery_window;
        return w.latest_recoverable_at && Date.parse(w.latest_recoverable_at) > Date.parse(target)
          ? true
          : undefined;
      },
      60_000,
    );
    const res = await dbApi(addonId, "POST", "/pitr/restore", { restore_time: target });
    assert.equal(res.status, 201, JSON.stringify(res.json));
    const opId = res.json.operation.id as string;
    const op = await cl!.waitFor(
      "the restore operation to finish",
      async () => {
        const o = (await cl!.api("GET", `/v1/apps/s3-app/operations/${opId}`)).json.operation;
        return o.status === "done" || o.status === "error" ? o : undefined;
      },
      180_000,
    );
    assert.equal(op.status, "done", op.error ?? "");
    assert.deepEqual(await notes(), ["kept-1", "kept-2"]);
  });

  it("deletes the add-on's stanza from the bucket with it", async () => {
    assert.ok((await s3!.keys(repoOf(addonId))).length > 0);
    assert.equal((await cl!.api("DELETE", `/v1/apps/s3-app/addons/${addonId}`)).status, 204);
    // The controller marks the repository removed once stanza-delete has ended.
    await cl!.waitFor(
      "the stanza to be removed from the bucket",
      async () => {
        const { rows } = await cl!.controller.deps.db.query(
          "SELECT repo_removed_at FROM continuous_backups WHERE database_id = $1",
          [addonId],
        );
        return rows[0]?.repo_removed_at ? true : undefined;
      },
      120_000,
    );
    assert.deepEqual(await s3!.keys(repoOf(addonId)), []);
  });
});
