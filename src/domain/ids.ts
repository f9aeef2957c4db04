// Prefixed random ids: the prefix says what an id names in logs and URLs.
import { randomBytes, randomUUID } from "node:crypto";

export type IdPrefix = "us" | "tok" | "app" | "col" | "ad" | "op" | "ev" | "var" | "host" | "inst";

export function newId(prefix: IdPrefix): string {
  if (prefix === "ad") return `ad-${randomUUID()}`;
  return `${prefix}-${randomBytes(10).toString("hex")}`;
}

/** Random string of [A-Za-z0-9_], as the reference uses for generated passwords. */
export function randomSecret(length: number): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_";
  const bytes = randomBytes(length * 2);
  let out = "";
  for (const b of bytes) {
    // 252 = 4 * 63: reject the tail to keep the distribution uniform.
    if (b < 252) out += alphabet[b % 63];
    if (out.length === length) return out;
  }
  return out + randomSecret(length - out.length);
}
