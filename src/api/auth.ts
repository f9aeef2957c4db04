// Bearer authentication and per-token rate limiting.
import type { MiddlewareHandler } from "hono";
import { CellarError, UnauthorizedError } from "../domain/errors.ts";
import { getUser, tokenExists } from "../store/users.store.ts";
import type { Deps, Env } from "./deps.ts";
import { verifyJwt } from "./jwt.ts";

type WithHeaders = { req: { header(name: string): string | undefined } };

export function bearerOf(c: WithHeaders): string | null {
  const header = c.req.header("authorization") ?? "";
  const m = /^Bearer\s+(\S+)$/i.exec(header);
  return m ? m[1]! : null;
}

/** Reads `Authorization: Basic base64(":<api token>")` (the reference's token exchange). */
export function basicPasswordOf(c: WithHeaders): string | null {
  const header = c.req.header("authorization") ?? "";
  const m = /^Basic\s+(\S+)$/i.exec(header);
  if (!m) return null;
  const decoded = Buffer.from(m[1]!, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  return colon >= 0 ? decoded.slice(colon + 1) : decoded;
}

/** Token bucket per API token: `limit` requests per minute, refilled continuously. */
export class RateLimiter {
  private buckets = new Map<string, { tokens: number; at: number }>();
  constructor(
    readonly limitPerMinute: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Takes one request; returns the seconds to wait when the bucket is empty, else 0. */
  take(key: string): { allowed: boolean; remaining: number; retryAfter: number } {
    const t = this.now();
    const b = this.buckets.get(key) ?? { tokens: this.limitPerMinute, at: t };
    const refill = ((t - b.at) / 60_000) * this.limitPerMinute;
    b.tokens = Math.min(this.limitPerMinute, b.tokens + refill);
    b.at = t;
    this.buckets.set(key, b);
    if (b.tokens < 1) {
      const retryAfter = Math.ceil(((1 - b.tokens) * 60) / this.limitPerMinute);
      return { allowed: false, remaining: 0, retryAfter };
    }
    b.tokens -= 1;
    if (this.buckets.size > 100_000) this.buckets.clear(); // bounded memory under token churn
    return { allowed: true, remaining: Math.floor(b.tokens), retryAfter: 0 };
  }
}

export function requireAuth(
  deps: Deps,
  limiter: RateLimiter,
  opts: { addonTokens?: boolean } = {},
): MiddlewareHandler<Env> {
  return async (c, next) => {
    const bearer = bearerOf(c);
    if (!bearer) throw new UnauthorizedError();
    const nowSeconds = Math.floor(deps.now().getTime() / 1000);
    const claims = verifyJwt(bearer, deps.jwtSecret, nowSeconds);
    if (!claims) {
      throw new UnauthorizedError(
        "invalid or expired bearer token: exchange your API token at POST /v1/tokens/exchange",
      );
    }
    // An add-on token is scoped to one database: it must not open the rest of the account.
    if (claims.db !== undefined && !opts.addonTokens) {
      throw new UnauthorizedError("an add-on token is valid only on the database API (/api/databases/:id)");
    }
    const limit = limiter.take(claims.tok);
    c.header("X-RateLimit-Limit", String(limiter.limitPerMinute));
    c.header("X-RateLimit-Remaining", String(limit.remaining));
    if (!limit.allowed) {
      c.header("Retry-After", String(limit.retryAfter));
      throw new CellarError(
        "rate_limited",
        `rate limit of ${limiter.limitPerMinute} requests per minute exceeded: retry in ${limit.retryAfter} s`,
      );
    }
    // Revoked or renewed API tokens end their sessions at once.
    if (!(await tokenExists(deps.db, claims.tok, new Date(claims.iat * 1000)))) {
      throw new UnauthorizedError("the API token behind this session was revoked or renewed");
    }
    const user = await getUser(deps.db, claims.sub);
    if (!user) throw new UnauthorizedError("user no longer exists");
    c.set("user", user);
    c.set("claims", claims);
    await next();
  };
}
