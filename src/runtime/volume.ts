// Per-instance volumes. As root with loop devices: a sparse image file holding an ext4
// filesystem, loop-attached and mounted at the volume path, so the filesystem size is the quota
// and the loop device can carry I/O limits. Otherwise: a plain directory, quota not enforced.
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { ConflictError, ValidationError } from "../domain/errors.ts";
import { IsolationError, readText } from "./cgroup-fs.ts";
import { parseMountinfo } from "./probe-facts.ts";

export interface Volume {
  /** The mount point (or directory). ext4 puts lost+found there: keep PGDATA in a subdirectory. */
  path: string;
  kind: "loop" | "directory";
  sizeBytes: number;
  quotaEnforced: boolean;
  /** loop only: the image file, the device and its "major:minor" (for IoLimit.device). */
  image?: string;
  device?: string;
  majMin?: string;
  note: string;
}

export interface VolumeOptions {
  /** Use a loop filesystem (IsolationProbe.loopVolumes.ok); false gives a plain directory. */
  loop: boolean;
  /** Owner of the volume's top directory, e.g. the postgres OS user. */
  owner?: { uid: number; gid: number };
  /**
   * A new loop filesystem gets ext4's `encrypt` feature, so directories on it can be encrypted
   * (fscrypt.ts). An existing one is left as it was made.
   */
  encrypt?: boolean;
}

const MIN_BYTES = 16 * 1024 * 1024;
const GiB = 1024 ** 3;

/** Runs a command; `okCodes` lists the exit statuses that still mean success. */
function run(cmd: string, args: readonly string[], okCodes: readonly number[] = [0]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 60_000 }, (err, stdout, stderr) => {
      if (err && !(typeof err.code === "number" && okCodes.includes(err.code))) {
        const why = String(stderr).trim() || err.message;
        reject(new IsolationError(`${cmd} ${args.join(" ")} failed: ${why}`, args.at(-1) ?? cmd));
      } else resolve(String(stdout).trim());
    });
  });
}

/** Image file beside the mount point: <dir>/<name>.img for the volume <dir>/<name>. */
export function imagePathOf(volumePath: string): string {
  return `${path.resolve(volumePath)}.img`;
}

async function mountedDevice(target: string): Promise<string | null> {
  const mounts = parseMountinfo(await fs.readFile("/proc/self/mountinfo", "utf8"));
  // The last mount on a path is the visible one.
  const onTarget = mounts.filter((m) => m.mountPoint === target);
  return onTarget[onTarget.length - 1]?.source ?? null;
}

/** Loop devices backed by `image` ("/dev/loop3"), from losetup's own listing. */
async function loopDevicesOf(image: string): Promise<string[]> {
  const out = await run("losetup", ["--noheadings", "--output", "NAME", "--associated", image]);
  return out
    .split("\n")
    .map((s) => s.trim())
    .filter(Boolean);
}

async function majMinOf(device: string): Promise<string> {
  const text = await readText(`/sys/block/${path.basename(device)}/dev`);
  if (!text) throw new IsolationError(`no /sys/block entry for ${device}`, device);
  return text;
}

/** Creates or grows the sparse image; a volume never shrinks (data would be cut). */
async function ensureImage(image: string, sizeBytes: number): Promise<void> {
  const stat = await fs.stat(image).catch(() => null);
  if (stat === null) {
    const fh = await fs.open(image, "wx", 0o600);
    await fh.truncate(sizeBytes).finally(() => fh.close());
  } else if (stat.size > sizeBytes) {
    throw new ConflictError(`volume ${image} is ${stat.size} bytes and cannot shrink to ${sizeBytes}`);
  } else if (stat.size < sizeBytes) {
    await fs.truncate(image, sizeBytes);
  }
}

async function ext4Bytes(device: string): Promise<number> {
  const header = await run("dumpe2fs", ["-h", device]);
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(header)?.[1] ?? NaN);
  return field("Block count") * field("Block size");
}

/**
 * Grows the filesystem to the image size. Online when the kernel lets us (CAP_SYS_RESOURCE);
 * otherwise offline, which needs the volume unused: umount refuses a busy filesystem, so a
 * running instance is never cut off. Returns the mount state afterwards (null: unmounted).
 */
async function grow(device: string, target: string, isMounted: boolean): Promise<string | null> {
  await run("losetup", ["--set-capacity", device]);
  if (isMounted) {
    const online = await run("resize2fs", [device]).then(
      () => null,
      (err: Error) => err,
    );
    if (online === null) return device;
    await run("umount", [target]).catch((err: Error) => {
      throw new IsolationError(
        `cannot grow ${target} while in use (${online.message}; ${err.message}): stop the instance and retry`,
        target,
      );
    });
  }
  // e2fsck exits 1 when it fixed something: that is success for us.
  await run("e2fsck", ["-f", "-p", device], [0, 1]);
  await run("resize2fs", [device]);
  return null;
}

export async function ensureVolume(volumePath: string, sizeGb: number, opts: VolumeOptions): Promise<Volume> {
  const sizeBytes = Math.floor((sizeGb * GiB) / 4096) * 4096;
  if (!Number.isFinite(sizeGb) || sizeBytes < MIN_BYTES) {
    throw ValidationError.field(
      "sizeGb",
      `must be at least ${MIN_BYTES / 1024 / 1024} MiB, got ${sizeGb} GB`,
    );
  }
  const target = path.resolve(volumePath);
  await fs.mkdir(target, { recursive: true });
  if (!opts.loop) {
    if (opts.owner) await fs.chown(target, opts.owner.uid, opts.owner.gid);
    return {
      path: target,
      kind: "directory",
      sizeBytes,
      quotaEnforced: false,
      note: "volume quota not enforced: plain directory",
    };
  }
  const image = imagePathOf(target);
  await ensureImage(image, sizeBytes);
  const device = (await loopDevicesOf(image))[0] ?? (await attach(image));
  // A crash between attaching and mkfs leaves an image without filesystem: check, not assume.
  const fsType = await run("blkid", ["-p", "-o", "value", "-s", "TYPE", device]).catch(() => "");
  // The image is fresh and sparse, so it already reads as zeros: zeroing the journal again
  // (lazy_journal_init=0) would allocate 512 MB of an 80 GB volume's image for nothing.
  if (fsType === "") {
    const features = opts.encrypt ? ["-O", "encrypt"] : [];
    await run("mkfs.ext4", [
      "-q",
      "-F",
      "-m",
      "0",
      ...features,
      "-E",
      "nodiscard,lazy_journal_init=1",
      device,
    ]);
  } else if (fsType !== "ext4") throw new IsolationError(`${image} holds ${fsType}, expected ext4`, image);
  let mounted = await mountedDevice(target);
  if (mounted !== null && mounted !== device) {
    throw new IsolationError(`${target} is already a mount of ${mounted}`, target);
  }
  // Compared with the filesystem, not remembered: a crash between truncate and resize is caught here.
  if ((await ext4Bytes(device)) < sizeBytes) mounted = await grow(device, target, mounted !== null);
  if (mounted === null) await run("mount", ["-t", "ext4", "-o", "noatime", device, target]);
  if (opts.owner) await fs.chown(target, opts.owner.uid, opts.owner.gid);
  return {
    path: target,
    kind: "loop",
    sizeBytes,
    quotaEnforced: true,
    image,
    device,
    majMin: await majMinOf(device),
    note: `ext4 on ${device} (${image}); size enforced by the filesystem`,
  };
}

async function attach(image: string): Promise<string> {
  // direct-io keeps the image's pages out of the host page cache (no double caching).
  // Some backing filesystems (tmpfs) refuse direct I/O: attach buffered there.
  return run("losetup", ["--find", "--show", "--direct-io=on", image]).catch(
    async () => (await loopDevicesOf(image))[0] ?? run("losetup", ["--find", "--show", image]),
  );
}

/**
 * Unmounts the volume and detaches its loop device; the image and its data stay, and the next
 * ensureVolume attaches and mounts it again. Missing parts are skipped.
 */
export async function detachVolume(volumePath: string): Promise<void> {
  const target = path.resolve(volumePath);
  while ((await mountedDevice(target)) !== null) await run("umount", [target]);
  const image = imagePathOf(target);
  if (
    await fs.stat(image).then(
      () => true,
      () => false,
    )
  ) {
    for (const device of await loopDevicesOf(image)) await run("losetup", ["--detach", device]);
  }
}

/** Unmounts, detaches and deletes a volume and its data. Missing parts are skipped. */
export async function removeVolume(volumePath: string): Promise<void> {
  const target = path.resolve(volumePath);
  await detachVolume(target);
  await fs.rm(imagePathOf(target), { force: true });
  await fs.rm(target, { recursive: true, force: true });
}

export interface VolumeUsage {
  usedBytes: number;
  /** Filesystem size for loop volumes; null for a plain directory (no quota). */
  sizeBytes: number | null;
}

/** Space used: from the filesystem for loop volumes, by walking the tree for a directory. */
export async function volumeUsage(volumePath: string): Promise<VolumeUsage> {
  const target = path.resolve(volumePath);
  if ((await mountedDevice(target)) !== null) {
    const s = await fs.statfs(target);
    return { usedBytes: (s.blocks - s.bfree) * s.bsize, sizeBytes: s.blocks * s.bsize };
  }
  return { usedBytes: await treeBytes(target), sizeBytes: null };
}

async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  const entries = await fs.readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) total += await treeBytes(full);
    else
      total += await fs.lstat(full).then(
        (s) => s.blocks * 512,
        () => 0,
      );
  }
  return total;
}
