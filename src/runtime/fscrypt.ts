// Encryption at rest of one directory with the kernel's own file encryption (fscrypt, policy
// v2: AES-256-XTS for contents, AES-256-CTS for names), on ext4 filesystems made with
// `-O encrypt`. The key lives in the filesystem's keyring once added: every process of the
// host reads the files then; after its removal, or an unmount, nothing can. The ioctls are
// made by fscrypt.py (Node has no ioctl); the key reaches it on stdin only.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { IsolationError } from "./cgroup-fs.ts";

/** Bytes of a key: fscrypt's largest (the v2 master key is expanded with HKDF-SHA512). */
export const FSCRYPT_KEY_BYTES = 64;

const TOOL = fileURLToPath(new URL("./fscrypt.py", import.meta.url));

export interface DirEncryption {
  /** unsupported: its filesystem cannot encrypt; plain: no policy; encrypted: a v2 policy. */
  state: "unsupported" | "plain" | "encrypted";
  /** Why it is not encrypted (or a note on the key's removal). */
  detail?: string;
  contents?: string;
  filenames?: string;
  /** The key's identifier (derived from the key by the kernel; not secret). */
  identifier?: string;
  /** Whether the key is in the filesystem's keyring (encrypted only). */
  key?: "present" | "absent" | "incompletely-removed";
}

function tool(command: "status" | "unlock" | "lock", dir: string, key?: Buffer): Promise<DirEncryption> {
  return new Promise((resolve, reject) => {
    // -I: no PYTHON* variables or user site can change the program that receives the key.
    const child = execFile(
      "python3",
      ["-I", "-S", TOOL, command, dir],
      { timeout: 30_000 },
      (err, stdout, stderr) => {
        if (err) {
          const why = String(stderr).trim() || err.message;
          reject(new IsolationError(`fscrypt ${command} ${dir} failed: ${why}`, dir));
        } else resolve(JSON.parse(String(stdout)) as DirEncryption);
      },
    );
    child.stdin?.end(key ?? Buffer.alloc(0));
  });
}

/** What `dir` is, read back from the kernel: its policy and whether its key is present. */
export function encryptionOf(dir: string): Promise<DirEncryption> {
  return tool("status", dir);
}

/**
 * Adds `key` to the filesystem of `dir` and, when `dir` is empty and plain, gives it a policy
 * under that key (what is written inside is encrypted from then on). A directory already
 * encrypted under another key is an error; one that already holds plain files stays plain.
 */
export function unlockDir(dir: string, key: Buffer): Promise<DirEncryption> {
  if (key.length !== FSCRYPT_KEY_BYTES) {
    return Promise.reject(
      new IsolationError(`an fscrypt key has ${FSCRYPT_KEY_BYTES} bytes, got ${key.length}`, dir),
    );
  }
  return tool("unlock", dir, key);
}

/** Removes the key of `dir` from its filesystem: its files cannot be read until unlocked again. */
export function lockDir(dir: string): Promise<DirEncryption> {
  return tool("lock", dir);
}

/** Encrypted and readable: a v2 policy and its key present. */
export function isUnlocked(e: DirEncryption): boolean {
  return e.state === "encrypted" && e.key === "present";
}

/** One line for a status: "AES-256-XTS/AES-256-CTS, key present" or why not encrypted. */
export function describeEncryption(e: DirEncryption): string {
  if (e.state !== "encrypted") return e.detail ?? e.state;
  return `${e.contents}/${e.filenames}, key ${e.key}${e.detail ? ` (${e.detail})` : ""}`;
}
