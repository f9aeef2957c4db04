// Rules for the users of a database (reference §2.10): names, passwords, the protected
// user, and how a user is shown. Pure: the SQL that applies them is in the engine.
import { ValidationError } from "./errors.ts";
import { randomSecret } from "./ids.ts";

export const USERNAME_RULE = "must be 6 to 32 characters, letters, digits or '_', starting with a letter";
export const PASSWORD_RULE = "must be 24 to 64 characters, without quotes (\" or ') or control characters";
export const GENERATED_PASSWORD_LENGTH = 64;

const USERNAME = /^[A-Za-z][A-Za-z0-9_]{5,31}$/;

/**
 * Names the platform uses for its own roles. `pg_` is refused by PostgreSQL itself; the
 * `cellar_` groups carry the users' grants, and `postgres` is the superuser.
 */
export function isReservedUsername(name: string): boolean {
  const lower = name.toLowerCase();
  return lower === "postgres" || lower.startsWith("pg_") || lower.startsWith("cellar_");
}

export function validateUsername(value: unknown): string {
  if (typeof value !== "string" || !USERNAME.test(value)) {
    throw ValidationError.field("name", USERNAME_RULE);
  }
  if (isReservedUsername(value)) {
    throw ValidationError.field("name", `${value} is reserved by the platform (postgres, pg_*, cellar_*)`);
  }
  return value;
}

export function validatePassword(value: string): string {
  // Counted in code points, as a person counts characters.
  const length = [...value].length;
  if (length < 24 || length > 64 || /["'\p{Cc}]/u.test(value)) {
    throw ValidationError.field("password", PASSWORD_RULE);
  }
  return value;
}

/**
 * The password a request sets: the one given (checked, and equal to its confirmation when
 * one is sent), or a generated one when none is given. `generated` says whether the
 * response must return it (generated passwords are shown once; a chosen one never echoed).
 */
export function passwordOfRequest(
  password: unknown,
  confirmation: unknown,
): { password: string; generated: boolean } {
  for (const [field, v] of [
    ["password", password],
    ["password_confirmation", confirmation],
  ] as const) {
    if (v !== undefined && v !== null && typeof v !== "string") {
      throw ValidationError.field(field, "must be a string");
    }
  }
  const given = typeof password === "string" ? password : "";
  if (given === "") {
    if (typeof confirmation === "string" && confirmation !== "") {
      throw ValidationError.field("password", "is required when password_confirmation is given");
    }
    return { password: randomSecret(GENERATED_PASSWORD_LENGTH), generated: true };
  }
  validatePassword(given);
  if (typeof confirmation === "string" && confirmation !== "" && confirmation !== given) {
    throw ValidationError.field("password_confirmation", "does not match password");
  }
  return { password: given, generated: false };
}

/** The protected user is made at provisioning and belongs to the platform (reference §2.10). */
export function assertNotProtected(name: string, protectedName: string): void {
  if (name === protectedName) {
    throw ValidationError.field(
      "name",
      `${name} is the protected user of this database: it cannot be changed or deleted; create another user instead`,
    );
  }
}

export interface DatabaseUserView {
  name: string;
  readOnly: boolean;
  protected: boolean;
  /** "SCRAM-SHA-256" or "MD5" as the server stores it; null if it has no password. */
  passwordEncryption: string | null;
}

export function databaseUserJson(u: DatabaseUserView, password?: string) {
  return {
    name: u.name,
    read_only: u.readOnly,
    protected: u.protected,
    dbms_attributes: { password_encryption: u.passwordEncryption },
    ...(password !== undefined ? { password } : {}),
  };
}
