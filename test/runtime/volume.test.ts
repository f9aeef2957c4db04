// Volumes for real on this machine: loop-mounted ext4 whose size is the quota, I/O throttled on
// the loop device, recovered after a crash; and the plain-directory fallback. Every mount and
// loop device is undone in after(), even when a test fails half-way.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { ConflictError } from "../../src/domain/errors.ts";
import { CgroupV1Runtime } from "../../src/runtime/cgroup-v1.runtime.ts";
import { probeIsolation } from "../../src/runtime/probe.ts";
import { spawnInSandbox } from "../../src/runtime/spawn.ts";
import { ensureVolume, imagePathOf, removeVolume, volumeUsage } from "../../src/runtime/volume.ts";

const probe = await probeIsolation();
const MiB = 1024 * 1024;
const gb = (mib: number) => mib / 1024;

function loopsOf(image: string): string[] {
  const out = execFileSync("losetup", ["--noheadings", "--output", "NAME", "--associated", image]).toString();
  return out.split("\n").filter(Boolean);
}

function isMounted(target: string): boolean {
  return execFileSync("cat", ["/proc/self/mountinfo"])
    .toString()
    .split("\n")
    .some((l) => l.split(" ")[4] === target);
}

describe(
  "loop volumes on this machine",
  { skip: probe.loopVolumes.ok ? false : probe.loopVolumes.detail },
  () => {
    let base: string;
    before(async () => {
      base = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-vol-"));
    });
    after(async () => {
      // Undo whatever exists, whichever test stopped where: mounts first, then loop devices.
      for (const entry of await fs.readdir(base).catch(() => [])) {
        if (!entry.endsWith(".img")) await removeVolume(path.join(base, entry)).catch(() => {});
      }
      for (const entry of await fs.readdir(base).catch(() => [])) {
        const image = path.join(base, entry);
        if (entry.endsWith(".img")) for (const d of loopsOf(image)) execFileSync("losetup", ["--detach", d]);
      }
      await fs.rm(base, { recursive: true, force: true });
    });

    it("mounts a sparse ext4 image whose size is the quota", async () => {
      const vol = await ensureVolume(path.join(base, "inst-a"), gb(32), {
        loop: true,
        owner: { uid: 101, gid: 104 },
      });
      assert.equal(vol.kind, "loop");
      assert.equal(vol.quotaEnforced, true);
      assert.match(vol.device ?? "", /^\/dev\/loop\d+$/);
      assert.match(vol.majMin ?? "", /^7:\d+$/);
      assert.ok(isMounted(vol.path));
      assert.equal((await fs.stat(vol.path)).uid, 101);
      // Sparse: the image takes far less disk than its size until written.
      assert.ok((await fs.stat(vol.image!)).blocks * 512 < 16 * MiB);
      await assert.rejects(fs.writeFile(path.join(vol.path, "big"), Buffer.alloc(40 * MiB, 1)), /ENOSPC/);
      await fs.rm(path.join(vol.path, "big"), { force: true });
      const usage = await volumeUsage(vol.path);
      assert.ok(usage.sizeBytes! > 24 * MiB && usage.sizeBytes! <= 32 * MiB, `size ${usage.sizeBytes}`);
    });

    it("is idempotent, grows and refuses to shrink", async () => {
      const target = path.join(base, "inst-a");
      await fs.writeFile(path.join(target, "keep"), "data");
      const again = await ensureVolume(target, gb(32), { loop: true });
      assert.equal(loopsOf(again.image!).length, 1);
      const before = (await volumeUsage(target)).sizeBytes!;
      const grown = await ensureVolume(target, gb(48), { loop: true });
      assert.equal(grown.device, again.device);
      assert.ok((await volumeUsage(target)).sizeBytes! > before + 12 * MiB);
      assert.equal(await fs.readFile(path.join(target, "keep"), "utf8"), "data");
      await assert.rejects(ensureVolume(target, gb(32), { loop: true }), ConflictError);
    });

    it("never unmounts a volume in use to grow it", async () => {
      const target = path.join(base, "inst-a");
      const handle = await fs.open(path.join(target, "keep"), "r");
      try {
        // Online growth needs CAP_SYS_RESOURCE; without it the offline path must refuse a busy volume.
        const outcome = await ensureVolume(target, gb(56), { loop: true }).then(
          () => "grown online",
          (err: Error) => err.message,
        );
        assert.match(outcome, /grown online|cannot grow .* while in use/);
        assert.ok(isMounted(target));
        assert.equal(await handle.readFile("utf8"), "data");
      } finally {
        await handle.close();
      }
    });

    it("after a crash (unmounted, detached) comes back with its data", async () => {
      const target = path.join(base, "inst-a");
      const image = imagePathOf(target);
      execFileSync("umount", [target]);
      for (const d of loopsOf(image)) execFileSync("losetup", ["--detach", d]);
      const vol = await ensureVolume(target, gb(56), { loop: true });
      assert.ok(isMounted(target));
      assert.ok((await volumeUsage(target)).sizeBytes! > 46 * MiB);
      assert.equal(await fs.readFile(path.join(vol.path, "keep"), "utf8"), "data");
    });

    it(
      "throttles direct writes on its loop device through blkio",
      { skip: !probe.limits.io.ok },
      async () => {
        const vol = await ensureVolume(path.join(base, "inst-a"), gb(56), { loop: true });
        const parent = `cellar-test-vol-${process.pid}`;
        const rt = new CgroupV1Runtime({ dirs: probe.layout.v1, parent });
        try {
          await rt.ensureSandbox("io", { io: [{ device: vol.majMin!, writeIops: 20 }] });
          const started = Date.now();
          const dd = spawnInSandbox(
            rt,
            "io",
            "dd",
            ["if=/dev/zero", `of=${vol.path}/f`, "bs=4k", "count=60", "oflag=direct"],
            {
              stdio: "ignore",
            },
          );
          const code = await new Promise((resolve) => dd.on("close", resolve));
          assert.equal(code, 0);
          // 60 writes at 20 IOPS cannot finish in under about 2 s; unthrottled they take milliseconds.
          assert.ok(Date.now() - started > 1000, `took ${Date.now() - started} ms`);
        } finally {
          await rt.removeSandbox("io");
          for (const dir of new Set(Object.values(probe.layout.v1)))
            await fs.rmdir(path.join(dir, parent)).catch(() => {});
        }
      },
    );

    it("removeVolume unmounts, detaches and deletes", async () => {
      const target = path.join(base, "inst-a");
      const image = imagePathOf(target);
      await removeVolume(target);
      assert.equal(isMounted(target), false);
      await assert.rejects(fs.access(image), /ENOENT/);
      await assert.rejects(fs.access(target), /ENOENT/);
      assert.doesNotMatch(execFileSync("losetup", ["--list"]).toString(), new RegExp(image));
      await removeVolume(target);
    });
  },
);

describe("plain-directory volumes", () => {
  let base: string;
  before(async () => {
    base = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-dirvol-"));
  });
  after(async () => fs.rm(base, { recursive: true, force: true }));

  it("say the quota is not enforced, measure their usage and are removed", async () => {
    const vol = await ensureVolume(path.join(base, "inst-b"), gb(32), { loop: false });
    assert.equal(vol.kind, "directory");
    assert.equal(vol.quotaEnforced, false);
    assert.equal(vol.note, "volume quota not enforced: plain directory");
    await fs.mkdir(path.join(vol.path, "sub"));
    await fs.writeFile(path.join(vol.path, "sub", "f"), Buffer.alloc(MiB, 1));
    const usage = await volumeUsage(vol.path);
    assert.equal(usage.sizeBytes, null);
    assert.ok(usage.usedBytes >= MiB);
    await removeVolume(vol.path);
    await assert.rejects(fs.access(vol.path), /ENOENT/);
  });
});
