import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { DiskUsage, treeApparentBytes } from "../../src/agent/disk-usage.ts";

const du = async (dir: string) =>
  Number((await promisify(execFile)("du", ["-sb", dir])).stdout.split(/\s/)[0]);

const noVolume = () => Promise.resolve(null);

describe("agent disk usage", () => {
  let dir: string;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-disk-usage-"));
    await fs.mkdir(path.join(dir, "pgdata", "base", "1"), { recursive: true });
    await fs.writeFile(path.join(dir, "pgdata", "base", "1", "1259"), Buffer.alloc(8192 * 3));
    await fs.writeFile(path.join(dir, "pgdata", "PG_VERSION"), "15\n");
    await fs.writeFile(path.join(dir, "cellar-instance.json"), "{}");
    // A hard link is counted once, a symbolic link as itself (du -sb does both).
    await fs.link(path.join(dir, "pgdata", "PG_VERSION"), path.join(dir, "hardlink"));
    await fs.symlink("/etc/passwd", path.join(dir, "symlink"));
    // Sparse: the apparent size counts, not the blocks.
    const sparse = await fs.open(path.join(dir, "sparse"), "w");
    await sparse.truncate(1024 * 1024);
    await sparse.close();
  });

  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("says what du -sb says, without running it", async () => {
    assert.equal(treeApparentBytes(dir), await du(dir));
    assert.equal(treeApparentBytes(path.join(dir, "pgdata")), await du(path.join(dir, "pgdata")));
  });

  it("counts a missing directory as empty", () => {
    assert.equal(treeApparentBytes(path.join(dir, "gone")), 0);
  });

  it("keeps a figure for the refresh period, then reads it again", async () => {
    let now = 0;
    const usage = new DiskUsage({ refreshMs: 60_000, now: () => now });
    const first = await usage.bytes("inst-a", dir, noVolume);
    assert.equal(first, await du(dir));
    await fs.writeFile(path.join(dir, "grown"), Buffer.alloc(1000));
    now = 59_000;
    assert.equal(await usage.bytes("inst-a", dir, noVolume), first, "fresh figure kept");
    now = 10_000_000;
    assert.equal(await usage.bytes("inst-a", dir, noVolume), first + 1000, "re-read once due");
    await fs.rm(path.join(dir, "grown"));
  });

  it("asks a node's own volume first, and walks only without one", async () => {
    const usage = new DiskUsage();
    assert.equal(await usage.bytes("inst-v", "/nonexistent", () => Promise.resolve(12345)), 12345);
    // A volume that cannot answer: the directory is walked instead.
    const failing = () => Promise.reject(new Error("statfs failed"));
    assert.equal(await usage.bytes("inst-w", dir, failing), await du(dir));
  });

  it("spreads refreshing walks out, but never holds back a first reading", async () => {
    // A clock that moves 5 ms per reading, so each walk "takes" 5 ms: at 10 % busy at most,
    // the next refreshing walk waits 50 ms.
    let ticks = 0;
    const moving = new DiskUsage({
      refreshMs: 1000,
      maxBusyShare: 0.1,
      now: () => (ticks += 5),
    });
    const size = await du(dir);
    assert.equal(await moving.bytes("inst-x", dir, noVolume), size);
    assert.equal(await moving.bytes("inst-y", dir, noVolume), size, "first readings go through");
    await fs.writeFile(path.join(dir, "grown"), Buffer.alloc(10));
    ticks += 5000; // both due
    assert.equal(await moving.bytes("inst-x", dir, noVolume), size + 10, "refreshed");
    assert.equal(await moving.bytes("inst-y", dir, noVolume), size, "held back: walks rest");
    ticks += 5000;
    assert.equal(await moving.bytes("inst-y", dir, noVolume), size + 10, "refreshed after the rest");
    await fs.rm(path.join(dir, "grown"));
  });

  it("forgets a removed instance", async () => {
    const usage = new DiskUsage({ now: () => 0 });
    assert.equal(await usage.bytes("inst-f", dir, () => Promise.resolve(1)), 1);
    usage.forget("inst-f");
    assert.equal(await usage.bytes("inst-f", dir, () => Promise.resolve(2)), 2);
  });
});
