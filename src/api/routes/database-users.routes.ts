// Database users (reference §2.10, §4.3), under /api/databases/:id/users. Every call acts on
// the running database at once, through its gateway as the protected user; the response
// says what the database now holds.
import { Hono, type Context } from "hono";
import {
  assertNotProtected,
  databaseUserJson,
  passwordOfRequest,
  validateUsername,
  type DatabaseUserView,
} from "../../domain/database-users.ts";
import { ConflictError, NotFoundError, ValidationError } from "../../domain/errors.ts";
import {
  createDatabaseUser,
  dropDatabaseUser,
  listDatabaseUsers,
  setDatabaseUserPassword,
  type AdminConnection,
} from "../../engines/postgresql/users.ts";
import type { Database } from "../../store/databases.store.ts";
import { protectedAccess } from "../../store/database-users.store.ts";
import type { RateLimiter } from "../auth.ts";
import { requireAuth } from "../auth.ts";
import type { Deps } from "../deps.ts";
import { optBool, readJson, root, type Json } from "../request.ts";
import { requireDatabaseAccess, type DbEnv } from "./database-api.routes.ts";

/** The protected user's connection to a database that runs, verifying its certificate. */
async function adminConnection(deps: Deps, db: Database): Promise<{ conn: AdminConnection; owner: string }> {
  // A database being created or removed has no server to hold users yet (or any more).
  if (db.phase !== "running" && db.phase !== "updating") {
    throw new ConflictError(`database ${db.id} is ${db.phase}: users can be managed once it is running`);
  }
  const access = await protectedAccess(deps.db, db.id);
  if (!access)
    throw new ConflictError(`database ${db.id} has no gateway yet: users can be managed once it is running`);
  return {
    owner: access.user,
    conn: { ...access, ssl: { ca: deps.pki.ca(db.region).certPem, rejectUnauthorized: true } },
  };
}

/** The body's `database_user`; a `database_id` in it must name the database of the URL. */
async function userBody(c: Context, db: Database): Promise<Json> {
  const body = root(await readJson(c), "database_user");
  const given = body.database_id;
  if (given !== undefined && given !== null && given !== db.id) {
    throw ValidationError.field("database_id", `must be ${db.id}, the database of the URL`);
  }
  return body;
}

async function findUser(conn: AdminConnection, name: string): Promise<DatabaseUserView> {
  const user = (await listDatabaseUsers(conn)).find((u) => u.name === name);
  if (!user) throw new NotFoundError("database_user");
  return user;
}

export function databaseUserRoutes(deps: Deps, limiter: RateLimiter): Hono<DbEnv> {
  const app = new Hono<DbEnv>();
  const auth = requireAuth(deps, limiter, { addonTokens: true });
  const access = requireDatabaseAccess(deps);

  app.get("/databases/:id/users", auth, access, async (c) => {
    const { conn } = await adminConnection(deps, c.get("database"));
    const users = await listDatabaseUsers(conn);
    return c.json({ "database-users": users.map((u) => databaseUserJson(u)) });
  });

  app.post("/databases/:id/users", auth, access, async (c) => {
    const db = c.get("database");
    const body = await userBody(c, db);
    const name = validateUsername(body.name);
    const readOnly = optBool(body, "read_only") ?? false;
    const { password, generated } = passwordOfRequest(body.password, body.password_confirmation);
    const { conn, owner } = await adminConnection(deps, db);
    assertNotProtected(name, owner);
    await createDatabaseUser(conn, { name, password, readOnly });
    const user = await findUser(conn, name);
    return c.json({ database_user: databaseUserJson(user, generated ? password : undefined) }, 201);
  });

  app.patch("/databases/:id/users/:username", auth, access, async (c) => {
    const db = c.get("database");
    const body = await userBody(c, db);
    const name = c.req.param("username");
    const { password, generated } = passwordOfRequest(body.password, body.password_confirmation);
    const { conn, owner } = await adminConnection(deps, db);
    assertNotProtected(name, owner);
    await setDatabaseUserPassword(conn, name, password);
    const user = await findUser(conn, name);
    return c.json({ database_user: databaseUserJson(user, generated ? password : undefined) });
  });

  app.post("/databases/:id/users/:username/reset_password", auth, access, async (c) => {
    const db = c.get("database");
    const name = c.req.param("username");
    const { password } = passwordOfRequest(undefined, undefined);
    const { conn, owner } = await adminConnection(deps, db);
    assertNotProtected(name, owner);
    await setDatabaseUserPassword(conn, name, password);
    const user = await findUser(conn, name);
    return c.json({ database_user: databaseUserJson(user, password) });
  });

  app.delete("/databases/:id/users/:username", auth, access, async (c) => {
    const name = c.req.param("username");
    const { conn, owner } = await adminConnection(deps, c.get("database"));
    assertNotProtected(name, owner);
    await dropDatabaseUser(conn, name);
    return c.body(null, 204);
  });

  return app;
}
