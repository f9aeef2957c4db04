// Database users and the one named database of an instance, driven over the superuser socket.
import { createHash, createHmac, pbkdf2, randomBytes } from "node:crypto";
import { promisify } from "node:util";
import pg from "pg";
import { ValidationError } from "../../domain/errors.ts";
import { ensureUserAdmin } from "./user-admin.ts";

const pbkdf2Async = promisify(pbkdf2);
const SCRAM_ITERATIONS = 4096;

/**
 * The SCRAM-SHA-256 verifier PostgreSQL would store for `password`. Computing it here
 * means the plain password never reaches the server, so it cannot leak into the server
 * log (a failed ALTER ROLE is logged with its statement text). PostgreSQL first applies
 * SASLprep: identity for ASCII (all generated passwords); NFKC covers common non-ASCII.
 */
export async function scramVerifier(password: string, salt = randomBytes(16)): Promise<string> {
  const prepared = /^[\x20-\x7e]*$/.test(password) ? password : password.normalize("NFKC");
  const salted = await pbkdf2Async(Buffer.from(prepared, "utf8"), salt, SCRAM_ITERATIONS, 32, "sha256");
  const clientKey = createHmac("sha256", salted).update("Client Key").digest();
  const storedKey = createHash("sha256").update(clientKey).digest();
  const serverKey = createHmac("sha256", salted).update("Server Key").digest();
  const b64 = (b: Buffer) => b.toString("base64");
  return `SCRAM-SHA-256$${SCRAM_ITERATIONS}:${b64(salt)}$${b64(storedKey)}:${b64(serverKey)}`;
}

export interface RoleAndDatabase {
  user: string;
  password: string;
  database: string;
}

/** An empty database made in advance (see PgTemplate), renamed into the user's database. */
export const SPARE_DATABASE = "cellar_spare";

const IDENTIFIER = /^[A-Za-z][A-Za-z0-9_]{0,62}$/;

function checkSpec(spec: RoleAndDatabase): void {
  for (const [field, value] of [
    ["user", spec.user],
    ["database", spec.database],
  ] as const) {
    if (!IDENTIFIER.test(value)) {
      throw ValidationError.field(field, "must start with a letter and hold up to 63 letters, digits or '_'");
    }
  }
  if (spec.user === "postgres") throw ValidationError.field("user", "postgres is reserved for Cellar");
  if (spec.password.length === 0) throw ValidationError.field("password", "must not be empty");
}

const DUPLICATE_OBJECT = "42710";
const DUPLICATE_DATABASE = "42P04";
const UNDEFINED_DATABASE = "3D000";
const isPgError = (err: unknown, code: string) => (err as { code?: string }).code === code;

async function databaseExists(c: pg.Client, name: string): Promise<boolean> {
  return ((await c.query("SELECT 1 FROM pg_database WHERE datname = $1", [name])).rowCount ?? 0) > 0;
}

/** Renames the spare database when there is one (instant), else CREATE DATABASE. */
async function createDatabase(c: pg.Client, name: string): Promise<void> {
  const db = pg.escapeIdentifier(name);
  if (await databaseExists(c, SPARE_DATABASE)) {
    const renamed = await c.query(`ALTER DATABASE ${SPARE_DATABASE} RENAME TO ${db}`).then(
      () => true,
      (err: unknown) => {
        // A concurrent twin took the spare first; fall through to CREATE or its result.
        if (isPgError(err, UNDEFINED_DATABASE) || isPgError(err, DUPLICATE_DATABASE)) return false;
        throw err;
      },
    );
    if (renamed || (await databaseExists(c, name))) return;
  }
  // CREATE DATABASE has no IF NOT EXISTS; a concurrent twin gets 42P04, which is fine.
  await c.query(`CREATE DATABASE ${db}`).catch((err: unknown) => {
    if (!isPgError(err, DUPLICATE_DATABASE)) throw err;
  });
}

async function withClient<T>(config: pg.ClientConfig, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client(config);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/**
 * Creates or updates a login role (password set every time), its database owned by it,
 * and the reference's grants (§2.10). Safe to rerun and to race with itself.
 * `superuser` is a connection to the instance as the postgres superuser (any database).
 */
export async function ensureRoleAndDatabase(
  superuser: pg.ClientConfig,
  spec: RoleAndDatabase,
): Promise<void> {
  checkSpec(spec);
  const role = pg.escapeIdentifier(spec.user);
  const db = pg.escapeIdentifier(spec.database);
  const attributes = `LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD ${pg.escapeLiteral(
    await scramVerifier(spec.password),
  )}`;
  await withClient({ ...superuser, database: "postgres" }, async (c) => {
    // Look before creating: a failed CREATE would log an ERROR in the user-visible log.
    const roleExists = await c.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [spec.user]);
    const created =
      roleExists.rowCount === 0 &&
      (await c.query(`CREATE ROLE ${role} ${attributes}`).then(
        () => true,
        (err: unknown) => {
          if (!isPgError(err, DUPLICATE_OBJECT)) throw err;
          return false;
        },
      ));
    if (!created) await c.query(`ALTER ROLE ${role} ${attributes}`);
    if (!(await databaseExists(c, spec.database))) await createDatabase(c, spec.database);
    await c.query(`ALTER DATABASE ${db} OWNER TO ${role}`);
    await c.query(`GRANT ALL PRIVILEGES ON DATABASE ${db} TO ${role}`);
  });
  await withClient({ ...superuser, database: spec.database }, async (c) => {
    await c.query(`GRANT USAGE, CREATE ON SCHEMA public TO ${role}`);
    await c.query(`GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA public TO ${role}`);
    await c.query(`GRANT ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA public TO ${role}`);
    // Objects the platform creates as superuser later (extensions' tables) stay usable.
    await c.query(`ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO ${role}`);
    await c.query(`ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO ${role}`);
    // The protected user manages the other users through these functions (not CREATEROLE).
    await ensureUserAdmin(c, spec.user);
  });
}
