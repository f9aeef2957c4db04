// Auth API (reference §4.1): token exchange, API tokens, the current user, and the
// operator's admin endpoints for users.
import { Hono } from "hono";
import { ForbiddenError, NotFoundError, UnauthorizedError, ValidationError } from "../../domain/errors.ts";
import { isPgError, UNIQUE_VIOLATION } from "../../store/db.ts";
import type { ApiToken, User } from "../../store/users.store.ts";
import {
  deleteToken,
  findTokenBySecret,
  getUser,
  insertToken,
  insertUser,
  listTokens,
  listUsers,
  renewToken,
} from "../../store/users.store.ts";
import type { RateLimiter } from "../auth.ts";
import { basicPasswordOf, requireAuth } from "../auth.ts";
import type { Deps, Env } from "../deps.ts";
import { signJwt } from "../jwt.ts";
import { optBool, optStr, readJson, root, str } from "../request.ts";

export const SESSION_SECONDS = 3600;

export const tokenJson = (t: ApiToken, secret?: string) => ({
  id: t.id,
  name: t.name,
  created_at: t.createdAt.toISOString(),
  issued_at: t.issuedAt.toISOString(),
  last_used_at: t.lastUsedAt?.toISOString() ?? null,
  ...(secret ? { token: secret } : {}),
});

export const userJson = (u: User) => ({
  id: u.id,
  username: u.username,
  fullname: u.fullname,
  email: u.email,
  is_admin: u.isAdmin,
  created_at: u.createdAt.toISOString(),
});

const EMAIL_RE = /^[^\s@"'<>;\\]+@[^\s@"'<>;\\]+\.[^\s@"'<>;\\]+$/;

export function validateEmail(v: string, field = "email"): string {
  if (!EMAIL_RE.test(v)) throw ValidationError.field(field, `${JSON.stringify(v)} is not an email address`);
  return v.toLowerCase();
}

export function tokenRoutes(deps: Deps, limiter: RateLimiter): Hono<Env> {
  const app = new Hono<Env>();
  const auth = requireAuth(deps, limiter);

  app.post("/tokens/exchange", async (c) => {
    const secret = basicPasswordOf(c);
    if (!secret) {
      throw new UnauthorizedError("send your API token as HTTP Basic auth password: -u :tk-us-...");
    }
    const token = await findTokenBySecret(deps.db, secret);
    if (!token) throw new UnauthorizedError("invalid API token");
    const limit = limiter.take(token.id);
    if (!limit.allowed) throw new UnauthorizedError("rate limit exceeded for this token");
    const iat = Math.floor(deps.now().getTime() / 1000);
    const jwt = signJwt(
      { sub: token.userId, tok: token.id, iat, exp: iat + SESSION_SECONDS, iss: "cellar" },
      deps.jwtSecret,
    );
    return c.json({ token: jwt });
  });

  app.get("/tokens", auth, async (c) => {
    const tokens = await listTokens(deps.db, c.get("user").id);
    return c.json({ tokens: tokens.map((t) => tokenJson(t)) });
  });

  app.post("/tokens", auth, async (c) => {
    const body = root(await readJson(c), "token");
    const name = str(body, "name", { max: 100 });
    const { token, secret } = await insertToken(deps.db, c.get("user").id, name);
    return c.json({ token: tokenJson(token, secret) }, 201);
  });

  app.patch("/tokens/:id/renew", auth, async (c) => {
    const renewed = await renewToken(deps.db, c.get("user").id, c.req.param("id"));
    if (!renewed) throw new NotFoundError("token");
    return c.json({ token: tokenJson(renewed.token, renewed.secret) });
  });

  app.delete("/tokens/:id", auth, async (c) => {
    if (!(await deleteToken(deps.db, c.get("user").id, c.req.param("id")))) throw new NotFoundError("token");
    return c.body(null, 204);
  });

  app.get("/users/self", auth, (c) => c.json({ user: userJson(c.get("user")) }));

  // Admin: the operator creates users and their first tokens.
  const admin = new Hono<Env>();
  admin.use(auth, async (c, next) => {
    if (!c.get("user").isAdmin) throw new ForbiddenError("admin only", "admin_required");
    await next();
  });
  admin.get("/users", async (c) => c.json({ users: (await listUsers(deps.db)).map(userJson) }));
  admin.post("/users", async (c) => {
    const body = root(await readJson(c), "user");
    const username = str(body, "username", { max: 48 });
    if (!/^[a-z][a-z0-9_-]{1,47}$/.test(username)) {
      throw ValidationError.field(
        "username",
        "must be 2 to 48 lowercase letters, digits, _ or -, starting with a letter",
      );
    }
    const email = validateEmail(str(body, "email", { max: 254 }));
    try {
      const user = await insertUser(deps.db, {
        username,
        email,
        fullname: optStr(body, "fullname", { max: 200 }) ?? "",
        isAdmin: optBool(body, "is_admin") ?? false,
      });
      return c.json({ user: userJson(user) }, 201);
    } catch (err) {
      if (isPgError(err, UNIQUE_VIOLATION)) {
        throw new ValidationError({ username: ["or email is already taken"] });
      }
      throw err;
    }
  });
  admin.post("/users/:id/tokens", async (c) => {
    const user = await getUser(deps.db, c.req.param("id"));
    if (!user) throw new NotFoundError("user");
    const body = root(await readJson(c), "token");
    const { token, secret } = await insertToken(
      deps.db,
      user.id,
      optStr(body, "name", { max: 100 }) ?? "default",
    );
    return c.json({ token: tokenJson(token, secret) }, 201);
  });
  app.route("/admin", admin);

  return app;
}
