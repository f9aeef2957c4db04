// A logical dump of a real PostgreSQL: the archive holds <name>.pgsql in custom format and
// appears only once complete; a failed or aborted dump leaves no file behind.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import pg from "pg";
import { dumpProgress, dumpToArchive } from "../../src/engines/postgresql/logical-dump.ts";
import { LocalCluster } from "../../src/engines/postgresql/local-cluster.ts";
import { freePort, scratchDir } from "./engine-fixtures.ts";

const run = promisify(execFile);
const NAME = "20260131120000_shop_app_1234";

describe("logical dump of a node", () => {
  let dir = "";
  let cluster: LocalCluster;
  let archiveDir = "";

  before(async () => {
    dir = await scratchDir("logical-dump");
    cluster = new LocalCluster({ baseDir: path.join(dir, "pg"), port: await freePort("127.0.0.1") });
    await cluster.ensureInitialised();
    await cluster.start();
    const admin = new pg.Client(cluster.connectionConfig());
    await admin.connect();
    await admin.query("CREATE DATABASE shop");
    await admin.end();
    const c = new pg.Client(cluster.connectionConfig("shop"));
    await c.connect();
    await c.query("CREATE TABLE items (id int PRIMARY KEY, label text)");
    await c.query("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g");
    await c.end();
    archiveDir = path.join(dir, "repo", "osc-fr1", "logical", "ad-test");
  });
  after(async () => {
    await cluster?.destroy();
    await fs.rm(dir, { recursive: true, force: true });
  });

  const request = (id: string, extra: Partial<Parameters<typeof dumpToArchive>[0]> = {}) => ({
    archive: path.join(archiveDir, `${id}.tar.gz`),
    name: NAME,
    socketDir: cluster.socketDir,
    port: cluster.port,
    dbname: "shop",
    ...extra,
  });

  it("writes <name>.pgsql (custom format) inside a .tar.gz, and nothing else", async () => {
    const req = request("bkp-1");
    const { sizeBytes } = await dumpToArchive(req);
    assert.equal((await fs.stat(req.archive)).size, sizeBytes);
    assert.equal(await dumpProgress(req.archive), sizeBytes);
    assert.deepEqual(await fs.readdir(archiveDir), ["bkp-1.tar.gz"]);
    const { stdout } = await run("tar", ["-tzf", req.archive]);
    assert.equal(stdout.trim(), `${NAME}.pgsql`);
    const out = path.join(dir, "x");
    await fs.mkdir(out);
    await run("tar", ["-xzf", req.archive, "-C", out]);
    const list = await run("/usr/lib/postgresql/15/bin/pg_restore", [
      "--list",
      path.join(out, `${NAME}.pgsql`),
    ]);
    assert.match(list.stdout, /TABLE DATA public items/);
  });

  it("leaves no archive and no partial file when the dump fails or is aborted", async () => {
    await assert.rejects(
      dumpToArchive(request("bkp-2", { dbname: "nosuchdb" })),
      /pg_dump failed: .*nosuchdb/,
    );
    const abort = new AbortController();
    abort.abort();
    await assert.rejects(dumpToArchive(request("bkp-3", { signal: abort.signal })), /aborted/);
    assert.deepEqual(await fs.readdir(archiveDir), ["bkp-1.tar.gz"]);
  });

  it("starts clean over what a killed try left", async () => {
    const req = request("bkp-4");
    await fs.writeFile(`${req.archive}.partial`, "half a tarball");
    await fs.mkdir(`${req.archive}.work`, { recursive: true });
    await fs.writeFile(path.join(`${req.archive}.work`, `${NAME}.pgsql`), "half a dump");
    await dumpToArchive(req);
    assert.deepEqual((await fs.readdir(archiveDir)).sort(), ["bkp-1.tar.gz", "bkp-4.tar.gz"]);
  });
});
