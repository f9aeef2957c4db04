// Time-limited download links for logical backups: `token = <expiry>.<HMAC-SHA256>` over the
// backup id and the expiry, keyed by a key derived from the store's JWT secret. No session
// is needed to follow one (the reference's pre-signed URLs); a forged or expired one is refused.
import { createHmac, timingSafeEqual } from "node:crypto";

/** The key of download links: derived, so a link never reveals anything about session keys. */
export function downloadKey(jwtSecret: Buffer): Buffer {
  return createHmac("sha256", jwtSecret).update("cellar logical-backup download links v1").digest();
}

const mac = (key: Buffer, backupId: string, expiresAt: number) =>
  createHmac("sha256", key).update(`${backupId}.${expiresAt}`).digest();

export function signDownload(key: Buffer, backupId: string, expiresAt: number): string {
  return `${expiresAt}.${mac(key, backupId, expiresAt).toString("base64url")}`;
}

/** Whether `token` was signed for this backup and has not expired (seconds since the epoch). */
export function verifyDownload(key: Buffer, backupId: string, token: string, nowSeconds: number): boolean {
  const m = /^(\d{1,12})\.([A-Za-z0-9_-]{43})$/.exec(token);
  if (!m) return false;
  const expiresAt = Number(m[1]);
  const given = Buffer.from(m[2]!, "base64url");
  const expected = mac(key, backupId, expiresAt);
  return given.length === expected.length && timingSafeEqual(given, expected) && expiresAt > nowSeconds;
}
