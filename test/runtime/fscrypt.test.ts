// Encryption at rest for real: a directory on a loop volume made with ext4's `encrypt` feature
// gets a v2 policy under its own key. A marker written inside is absent from the raw image,
// while the same marker in a plain directory of the same kind of volume is found (the
// control); without the key the files cannot be read, with it back they can.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { encryptionOf, isUnlocked, lockDir, unlockDir } from "../../src/runtime/fscrypt.ts";
import { probeIsolation } from "../../src/runtime/probe.ts";
import { ensureVolume, imagePathOf, removeVolume } from "../../src/runtime/volume.ts";
import { imageHolds } from "../support/raw-image.ts";

const probe = await probeIsolation();
const MARKER = `cellar-at-rest-marker-${randomBytes(6).toString("hex")}`;

/** Writes the marker (many times over, so it spans blocks) and forces it to the image. */
async function writeMarker(file: string): Promise<void> {
  const fh = await fs.open(file, "w");
  try {
    await fh.writeFile(`${MARKER}\n`.repeat(2000));
    await fh.sync();
  } finally {
    await fh.close();
  }
}

describe(
  "fscrypt directories on loop volumes",
  { skip: probe.loopVolumes.ok ? false : probe.loopVolumes.detail },
  () => {
    let base: string;
    const key = randomBytes(64);
    before(async () => {
      base = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-fscrypt-"));
    });
    after(async () => {
      for (const name of ["enc", "plain"]) await removeVolume(path.join(base, name)).catch(() => {});
      await fs.rm(base, { recursive: true, force: true });
    });

    it("keeps a marker out of the raw image of an encrypted directory, not of a plain one", async () => {
      const enc = await ensureVolume(path.join(base, "enc"), 32 / 1024, { loop: true, encrypt: true });
      const dir = path.join(enc.path, "data");
      await fs.mkdir(dir);
      const state = await unlockDir(dir, key);
      assert.equal(state.state, "encrypted", JSON.stringify(state));
      assert.equal(state.contents, "AES-256-XTS");
      assert.equal(state.filenames, "AES-256-CTS");
      assert.ok(isUnlocked(state));
      await writeMarker(path.join(dir, `${MARKER}.txt`));
      assert.equal(
        await imageHolds(imagePathOf(enc.path), MARKER),
        false,
        "contents and name encrypted on disk",
      );

      // The control: the same volume kind and the same write, without a policy.
      const plain = await ensureVolume(path.join(base, "plain"), 32 / 1024, { loop: true, encrypt: true });
      await fs.mkdir(path.join(plain.path, "data"));
      await writeMarker(path.join(plain.path, "data", "marker.txt"));
      assert.equal(await imageHolds(imagePathOf(plain.path), MARKER), true, "the raw read finds plain data");
      assert.equal((await encryptionOf(path.join(plain.path, "data"))).state, "plain");
    });

    it("cannot read the files without the key, and can again once it is added back", async () => {
      const dir = path.join(base, "enc", "data");
      const file = path.join(dir, `${MARKER}.txt`);
      const locked = await lockDir(dir);
      assert.equal(locked.key, "absent", JSON.stringify(locked));
      assert.deepEqual(
        (await fs.readdir(dir)).filter((n) => n.includes("cellar")),
        [],
        "names are ciphertext",
      );
      await assert.rejects(fs.readFile(file, "utf8"), /ENOENT|ENOKEY/);
      const again = await unlockDir(dir, key);
      assert.ok(isUnlocked(again));
      assert.ok((await fs.readFile(file, "utf8")).startsWith(MARKER));
    });

    it("refuses another key for an encrypted directory and a plain directory's files stay plain", async () => {
      const dir = path.join(base, "enc", "data");
      await assert.rejects(unlockDir(dir, randomBytes(64)), /encrypted under another key/);
      assert.ok(isUnlocked(await encryptionOf(dir)), "the right key is still present");
      const plain = await unlockDir(path.join(base, "plain", "data"), randomBytes(64));
      assert.equal(plain.state, "plain");
      assert.match(plain.detail ?? "", /already holds files written without encryption/);
    });

    it("says when a filesystem has no encryption feature", async () => {
      const old = await ensureVolume(path.join(base, "old"), 32 / 1024, { loop: true });
      try {
        await fs.mkdir(path.join(old.path, "data"));
        const state = await unlockDir(path.join(old.path, "data"), key);
        assert.equal(state.state, "unsupported");
        assert.match(state.detail ?? "", /has no ext4 encryption feature/);
      } finally {
        await removeVolume(old.path);
      }
    });
  },
);
