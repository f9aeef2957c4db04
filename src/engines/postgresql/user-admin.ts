// The user-management functions installed in each database (by the agent, as superuser).
//
// Why not CREATEROLE for the protected user: on PostgreSQL 15 a CREATEROLE role may grant
// itself any non-superuser role, including pg_execute_server_program, which runs shell
// commands as the `postgres` OS user, the owner of every instance's files on a Shared host.
// The protected user's password is in the app's environment, so that would hand every app
// its neighbours' data. Instead, SECURITY DEFINER functions in schema `cellar` (owned by the
// superuser, executable by the protected user only) do exactly what the database API needs:
// create, re-password and drop the database's own users, nothing else.
//
// Grants go through two group roles: members of cellar_read_write get ALL on the tables and
// sequences of schema public, members of cellar_read_only SELECT. Default privileges for
// every writer (protected user, normal users, superuser) keep new tables covered.
import pg from "pg";
import { EngineError } from "./errors.ts";

/** Bump when the SQL below changes: databases get the new functions at their next converge. */
export const USER_ADMIN_VERSION = "cellar user admin v1";
export const ADMIN_SCHEMA = "cellar";
export const READ_WRITE_GROUP = "cellar_read_write";
export const READ_ONLY_GROUP = "cellar_read_only";

// Shared by every function: who owns the database (the protected user) and which roles are
// users the functions may touch (members of a group, never the owner or a superuser).
const HELPERS = `
CREATE OR REPLACE FUNCTION cellar.owner_name() RETURNS name
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $f$
  SELECT r.rolname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba
  WHERE d.datname = current_database()
$f$;

CREATE OR REPLACE FUNCTION cellar.managed_user(p_name text) RETURNS name
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
  r record;
BEGIN
  SELECT a.rolname, a.rolsuper INTO r FROM pg_roles a WHERE a.rolname = p_name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'user % does not exist', p_name USING ERRCODE = 'undefined_object';
  END IF;
  IF r.rolname = cellar.owner_name() THEN
    RAISE EXCEPTION 'user % is the protected user of this database', p_name
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF r.rolsuper OR NOT EXISTS (
    SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
    WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = p_name)
      AND g.rolname IN ('${READ_WRITE_GROUP}', '${READ_ONLY_GROUP}')
  ) THEN
    RAISE EXCEPTION 'role % is not a user of this database', p_name USING ERRCODE = 'undefined_object';
  END IF;
  RETURN r.rolname;
END
$f$;

CREATE OR REPLACE FUNCTION cellar.check_verifier(p_verifier text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
  -- A plain password here would be hashed by the server, but could reach its log first.
  IF p_verifier IS NULL OR p_verifier !~ '^SCRAM-SHA-256\\$[0-9]+:[A-Za-z0-9+/=]+\\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$' THEN
    RAISE EXCEPTION 'the password must be given as a SCRAM-SHA-256 verifier'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
END
$f$;
`;

const FUNCTIONS = `
CREATE OR REPLACE FUNCTION cellar.list_users()
RETURNS TABLE (name text, read_only boolean, protected boolean, password_encryption text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
  SELECT a.rolname::text,
         EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                 WHERE m.member = a.oid AND g.rolname = '${READ_ONLY_GROUP}'),
         a.rolname = cellar.owner_name(),
         CASE WHEN a.rolpassword LIKE 'SCRAM-SHA-256$%' THEN 'SCRAM-SHA-256'
              WHEN a.rolpassword LIKE 'md5%' THEN 'MD5' END
  FROM pg_authid a
  WHERE a.rolcanlogin AND NOT a.rolsuper AND (
    a.rolname = cellar.owner_name() OR EXISTS (
      SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
      WHERE m.member = a.oid AND g.rolname IN ('${READ_WRITE_GROUP}', '${READ_ONLY_GROUP}')))
  ORDER BY a.rolname = cellar.owner_name() DESC, a.rolname
$f$;

CREATE OR REPLACE FUNCTION cellar.create_user(p_name text, p_verifier text, p_read_only boolean)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
  grp text := CASE WHEN p_read_only THEN '${READ_ONLY_GROUP}' ELSE '${READ_WRITE_GROUP}' END;
BEGIN
  IF p_name IS NULL OR p_name !~ '^[A-Za-z][A-Za-z0-9_]{5,31}$' OR lower(p_name) = 'postgres'
     OR lower(p_name) LIKE 'pg\\_%' OR lower(p_name) LIKE 'cellar\\_%' THEN
    RAISE EXCEPTION 'invalid user name %', p_name USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM cellar.check_verifier(p_verifier);
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = p_name) THEN
    RAISE EXCEPTION 'user % already exists', p_name USING ERRCODE = 'duplicate_object';
  END IF;
  EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS IN ROLE %I PASSWORD %L',
                 p_name, grp, p_verifier);
  IF p_read_only THEN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), p_name);
    -- Tables made before the group had default privileges (or by hand) are covered too.
    EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', grp);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA public TO %I', grp);
    EXECUTE format('GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO %I', grp);
  ELSE
    EXECUTE format('GRANT ALL PRIVILEGES ON DATABASE %I TO %I', current_database(), p_name);
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA public TO %I', p_name);
    EXECUTE format('GRANT ALL ON ALL TABLES IN SCHEMA public TO %I', grp);
    EXECUTE format('GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO %I', grp);
    PERFORM cellar.writer_defaults(p_name);
  END IF;
END
$f$;

CREATE OR REPLACE FUNCTION cellar.set_password(p_name text, p_verifier text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
  PERFORM cellar.check_verifier(p_verifier);
  EXECUTE format('ALTER ROLE %I PASSWORD %L', cellar.managed_user(p_name), p_verifier);
END
$f$;

CREATE OR REPLACE FUNCTION cellar.drop_user(p_name text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
  target name := cellar.managed_user(p_name);
BEGIN
  -- A deleted user must not keep working through a session opened before.
  PERFORM pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = target;
  -- The user's tables stay, handed to the protected user; then its grants and the role go.
  EXECUTE format('REASSIGN OWNED BY %I TO %I', target, cellar.owner_name());
  EXECUTE format('DROP OWNED BY %I', target);
  EXECUTE format('DROP ROLE %I', target);
END
$f$;
`;

/** Default privileges so the groups can use what `writer` creates in schema public. */
const WRITER_DEFAULTS = `
CREATE OR REPLACE FUNCTION cellar.writer_defaults(p_writer name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
  EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public GRANT ALL ON TABLES TO %I',
                 p_writer, '${READ_WRITE_GROUP}');
  EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public GRANT ALL ON SEQUENCES TO %I',
                 p_writer, '${READ_WRITE_GROUP}');
  EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public GRANT SELECT ON TABLES TO %I',
                 p_writer, '${READ_ONLY_GROUP}');
  EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public GRANT SELECT ON SEQUENCES TO %I',
                 p_writer, '${READ_ONLY_GROUP}');
END
$f$;
`;

function groupSql(group: string): string {
  return `DO $d$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${group}') THEN
      CREATE ROLE ${group} NOLOGIN;
    END IF;
  END $d$;`;
}

async function installedVersion(c: pg.Client): Promise<string | null | undefined> {
  const { rows } = await c.query<{ owner: string; description: string | null }>(
    `SELECT pg_get_userbyid(n.nspowner) AS owner, obj_description(n.oid, 'pg_namespace') AS description
     FROM pg_namespace n WHERE n.nspname = $1`,
    [ADMIN_SCHEMA],
  );
  const row = rows[0];
  if (!row) return undefined;
  // A schema of that name made by a user must never get functions that run as superuser.
  const { rows: me } = await c.query<{ user: string }>("SELECT current_user AS user");
  if (row.owner !== me[0]?.user) {
    throw new EngineError(`schema ${ADMIN_SCHEMA} exists and is owned by ${row.owner}, not by the platform`);
  }
  return row.description;
}

/**
 * Installs (or upgrades) the user-management functions in the database `c` is connected to,
 * as superuser, for the protected user `owner`. Idempotent; a no-op when up to date.
 */
export async function ensureUserAdmin(c: pg.Client, owner: string): Promise<void> {
  if ((await installedVersion(c)) === USER_ADMIN_VERSION) return;
  const o = pg.escapeIdentifier(owner);
  await c.query("BEGIN");
  try {
    await c.query(`CREATE SCHEMA IF NOT EXISTS ${ADMIN_SCHEMA}`);
    await c.query(`REVOKE ALL ON SCHEMA ${ADMIN_SCHEMA} FROM PUBLIC`);
    await c.query(groupSql(READ_WRITE_GROUP));
    await c.query(groupSql(READ_ONLY_GROUP));
    await c.query(HELPERS + WRITER_DEFAULTS + FUNCTIONS);
    await c.query(`REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ${ADMIN_SCHEMA} FROM PUBLIC`);
    await c.query(`GRANT USAGE ON SCHEMA ${ADMIN_SCHEMA} TO ${o}`);
    for (const fn of [
      "list_users()",
      "create_user(text, text, boolean)",
      "set_password(text, text)",
      "drop_user(text)",
    ]) {
      await c.query(`GRANT EXECUTE ON FUNCTION ${ADMIN_SCHEMA}.${fn} TO ${o}`);
    }
    // The protected user reads and writes what the other users create, and the groups
    // what it and the superuser (extensions) create.
    await c.query(`GRANT ${READ_WRITE_GROUP} TO ${o}`);
    await c.query(`SELECT ${ADMIN_SCHEMA}.writer_defaults($1)`, [owner]);
    await c.query(`SELECT ${ADMIN_SCHEMA}.writer_defaults(current_user)`);
    await c.query(`COMMENT ON SCHEMA ${ADMIN_SCHEMA} IS '${USER_ADMIN_VERSION}'`);
    await c.query("COMMIT");
  } catch (err) {
    await c.query("ROLLBACK").catch(() => undefined);
    throw err;
  }
}
