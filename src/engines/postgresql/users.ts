// Database users on a live instance, as the control plane manages them: connected through
// the database's gateway as its protected user, calling the functions of user-admin.ts.
// Passwords travel to the server only as SCRAM verifiers, and are kept nowhere.
import pg from "pg";
import type { DatabaseUserView } from "../../domain/database-users.ts";
import { CellarError, NotFoundError, ValidationError } from "../../domain/errors.ts";
import { scramVerifier } from "./roles.ts";
import { ADMIN_SCHEMA } from "./user-admin.ts";

export type AdminConnection = Pick<
  pg.ClientConfig,
  "host" | "port" | "user" | "password" | "database" | "ssl"
>;

const CONNECT_TIMEOUT_MS = 5000;
const STATEMENT_TIMEOUT_MS = 15_000;

async function withAdmin<T>(conn: AdminConnection, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({
    ...conn,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    statement_timeout: STATEMENT_TIMEOUT_MS,
    application_name: "cellar-controller",
  });
  // A socket error after connect must reject the query, not crash the controller.
  client.on("error", () => undefined);
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw new CellarError(
      "unavailable",
      `cannot reach the database through its gateway ${String(conn.host)}:${String(conn.port)}: ${(err as Error).message}`,
    );
  }
  try {
    return await fn(client);
  } catch (err) {
    throw translate(err);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The functions' SQLSTATEs, in the API's vocabulary. */
function translate(err: unknown): unknown {
  const e = err as { code?: string; message?: string };
  switch (e.code) {
    case "42710": // duplicate_object
      return ValidationError.field("name", "is already taken by another user of this database");
    case "42704": // undefined_object
      return new NotFoundError("database_user");
    case "42501": // insufficient_privilege
      return ValidationError.field("name", `cannot be changed: ${e.message ?? "protected"}`);
    case "22023": // invalid_parameter_value
      return ValidationError.field("name", e.message ?? "is invalid");
    case "42883": // undefined_function: the agent has not installed the functions yet
    case "3F000": // invalid_schema_name
      return new CellarError(
        "unavailable",
        "user management is not installed on this database yet: its host agent installs it at the next convergence",
      );
    default:
      if (typeof e.code === "string" && /^(08|57)/.test(e.code)) {
        return new CellarError("unavailable", `the database is not available: ${e.message ?? e.code}`);
      }
      return err;
  }
}

export async function listDatabaseUsers(conn: AdminConnection): Promise<DatabaseUserView[]> {
  return withAdmin(conn, async (c) => {
    const { rows } = await c.query<{
      name: string;
      read_only: boolean;
      protected: boolean;
      password_encryption: string | null;
    }>(`SELECT name, read_only, protected, password_encryption FROM ${ADMIN_SCHEMA}.list_users()`);
    return rows.map((r) => ({
      name: r.name,
      readOnly: r.read_only,
      protected: r.protected,
      passwordEncryption: r.password_encryption,
    }));
  });
}

export async function createDatabaseUser(
  conn: AdminConnection,
  user: { name: string; password: string; readOnly: boolean },
): Promise<void> {
  const verifier = await scramVerifier(user.password);
  await withAdmin(conn, (c) =>
    c.query(`SELECT ${ADMIN_SCHEMA}.create_user($1, $2, $3)`, [user.name, verifier, user.readOnly]),
  );
}

export async function setDatabaseUserPassword(
  conn: AdminConnection,
  name: string,
  password: string,
): Promise<void> {
  const verifier = await scramVerifier(password);
  await withAdmin(conn, (c) => c.query(`SELECT ${ADMIN_SCHEMA}.set_password($1, $2)`, [name, verifier]));
}

export async function dropDatabaseUser(conn: AdminConnection, name: string): Promise<void> {
  await withAdmin(conn, (c) => c.query(`SELECT ${ADMIN_SCHEMA}.drop_user($1)`, [name]));
}
