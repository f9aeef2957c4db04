// Minimal HS256 JSON Web Tokens for bearer auth (user sessions and per-database add-on tokens).
import { createHmac, timingSafeEqual } from "node:crypto";

export interface JwtClaims {
  /** User id. */
  sub: string;
  /** API token id the session was exchanged from (revocation and rate limits key on it). */
  tok: string;
  /** Present on add-on tokens: the one database the token may act on. */
  db?: string;
  iat: number;
  exp: number;
  iss: "cellar";
}

const b64url = (buf: Buffer | string): string => Buffer.from(buf).toString("base64url");

export function signJwt(claims: JwtClaims, secret: Buffer): string {
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest();
  return `${head}.${body}.${b64url(sig)}`;
}

/** Returns the claims of a well-signed, unexpired token, or null. */
export function verifyJwt(token: string, secret: Buffer, nowSeconds: number): JwtClaims | null {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  const [head, body, sig] = parts as [string, string, string];
  const expected = createHmac("sha256", secret).update(`${head}.${body}`).digest();
  const given = Buffer.from(sig, "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  try {
    const header = JSON.parse(Buffer.from(head, "base64url").toString("utf8")) as { alg?: string };
    if (header.alg !== "HS256") return null;
    const claims = JSON.parse(Buffer.from(body, "base64url").toString("utf8")) as JwtClaims;
    if (claims.iss !== "cellar" || typeof claims.sub !== "string" || typeof claims.exp !== "number")
      return null;
    if (claims.exp <= nowSeconds) return null;
    return claims;
  } catch {
    return null;
  }
}
