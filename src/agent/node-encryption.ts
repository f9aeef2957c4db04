// Encryption at rest of a node's data tree (runtime/fscrypt.ts): the directory that holds
// everything the node writes gets a policy under the node's own key, delivered by the
// controller with the node's desired state and kept in memory only. The key is added after
// every mount and removed when the node is released; what the host cannot encrypt is said,
// with the reason, in what the node reports.
import fs from "node:fs/promises";
import path from "node:path";
import { ensureDir, postgresUser } from "../engines/postgresql/command.ts";
import {
  describeEncryption,
  encryptionOf,
  isUnlocked,
  lockDir,
  unlockDir,
  type DirEncryption,
} from "../runtime/fscrypt.ts";

/** What a node reports: whether its data dir is encrypted (policy read back, key present). */
export interface AtRest {
  encrypted: boolean;
  /** With what ("AES-256-XTS/AES-256-CTS, key present"), or why not. */
  detail: string;
}

/**
 * What a copy of a node's data (a backup verification's scratch restore) must be kept under:
 * the node's own key when its data dir is encrypted (null: encrypted, but this agent was not
 * given the key), nothing when the node is plain.
 */
export type CopyKey = { encrypted: false } | { encrypted: true; key: Buffer | null };

/** A node's observed state is read again from the kernel at most this often. */
const RECHECK_MS = 60_000;

const atRestOf = (e: DirEncryption): AtRest => ({ encrypted: isUnlocked(e), detail: describeEncryption(e) });

export class NodeEncryption {
  private readonly seen = new Map<string, { atRest: AtRest; atMs: number }>();
  /** Each node's key as last delivered (in memory only), for copies of its data. */
  private readonly keys = new Map<string, Buffer>();
  /** Whether the host's own filesystem (where instance directories are) can encrypt: probed once. */
  private hostFs: Promise<DirEncryption> | null = null;

  /**
   * Before anything is written into `dir`: it exists, and is encrypted under `key` when its
   * filesystem allows (a new, empty directory gets the policy; an existing one its key back).
   * `onHostFs`: `dir` is on the host's filesystem, whose verdict is probed once for all nodes.
   */
  async prepare(
    id: string,
    dir: string,
    key: string | undefined,
    opts: { onHostFs: boolean },
  ): Promise<AtRest> {
    // Made here when new (a policy needs an empty directory); an existing one is left as it is.
    if (!(await exists(dir))) await ensureDir(dir, 0o700, postgresUser());
    const unsupported = opts.onHostFs ? await this.hostUnsupported(dir) : null;
    if (unsupported) return this.remember(id, unsupported);
    if (key === undefined) {
      const found = await encryptionOf(dir);
      if (found.state === "encrypted") return this.remember(id, atRestOf(found));
      return this.remember(id, { encrypted: false, detail: "no encryption key was delivered with its spec" });
    }
    const raw = Buffer.from(key, "base64");
    this.keys.set(id, raw);
    return this.remember(id, atRestOf(await unlockDir(dir, raw)));
  }

  /**
   * The key a copy of the node's data must be encrypted with, read from the kernel now: a
   * directory with a policy counts as encrypted whether or not its key is present.
   */
  async copyKey(id: string, dir: string, opts: { onHostFs: boolean }): Promise<CopyKey> {
    if (opts.onHostFs && (await this.hostUnsupported(dir))) return { encrypted: false };
    if ((await encryptionOf(dir)).state !== "encrypted") return { encrypted: false };
    return { encrypted: true, key: this.keys.get(id) ?? null };
  }

  /** A reported state: the last one seen, read again from the kernel once it is old. */
  async observe(id: string, dir: string | null, opts: { onHostFs: boolean; why?: string }): Promise<AtRest> {
    if (dir === null) return { encrypted: false, detail: opts.why ?? "no data dir of its own" };
    const last = this.seen.get(id);
    if (last && performance.now() - last.atMs < RECHECK_MS) return last.atRest;
    const unsupported = opts.onHostFs ? await this.hostUnsupported(dir) : null;
    if (unsupported) return this.remember(id, unsupported);
    const now = await encryptionOf(dir).then(atRestOf, (err: Error) => ({
      encrypted: false,
      detail: `cannot read its encryption: ${err.message}`,
    }));
    return this.remember(id, now);
  }

  /** The node's key out of its filesystem's keyring (its files unreadable until prepared again). */
  async release(id: string, dir: string | null, opts: { onHostFs: boolean }): Promise<void> {
    this.seen.delete(id);
    this.keys.delete(id);
    if (dir === null || !(await exists(dir))) return;
    if (opts.onHostFs && (await this.hostUnsupported(dir))) return;
    const found = await encryptionOf(dir).catch(() => null);
    if (found?.state === "encrypted" && found.key !== "absent") await lockDir(dir);
  }

  private remember(id: string, atRest: AtRest): AtRest {
    this.seen.set(id, { atRest, atMs: performance.now() });
    return atRest;
  }

  /**
   * The reason every node on the host's filesystem stays plain, or null when it can encrypt:
   * read once, at the instance directory above the first such node's base dir.
   */
  private async hostUnsupported(dir: string): Promise<AtRest | null> {
    this.hostFs ??= encryptionOf(path.dirname(dir));
    const found = await this.hostFs.catch((err: Error) => {
      this.hostFs = null;
      throw err;
    });
    return found.state === "unsupported" ? atRestOf(found) : null;
  }
}

const exists = (p: string) =>
  fs.access(p).then(
    () => true,
    () => false,
  );
