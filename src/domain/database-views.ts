// How a database's state is told to clients, in the reference's vocabularies, and the small
// input rules of the database endpoints. Pure.
import { ValidationError } from "./errors.ts";

export type DatabasePhase =
  "provisioning" | "running" | "updating" | "deleting" | "deleted" | "suspended" | "failed";

export type AddonStatus = "provisioning" | "running" | "suspended";

/** The add-on status of the main API. Only a database that runs is ever `running`. */
export function addonStatusOf(phase: DatabasePhase): AddonStatus {
  if (phase === "running") return "running";
  if (phase === "suspended") return "suspended";
  return "provisioning";
}

/**
 * The database status of the database API (`creating, running, migrating, updating,
 * upgrading, stopped`). A running database whose spec moved on is `updating`; phases the
 * reference has no word for (deleting, failed) are reported as they are.
 */
export function databaseApiStatusOf(
  phase: DatabasePhase,
  generation: number,
  observedGeneration: number,
): string {
  switch (phase) {
    case "provisioning":
      return "creating";
    case "running":
      return generation > observedGeneration ? "updating" : "running";
    case "suspended":
      return "stopped";
    default:
      return phase;
  }
}

/** Environment variables an add-on of this engine gives its app (reference §4.4). */
export function variableNamesOf(engine: string): string[] {
  const prefix = engine === "postgresql" ? "POSTGRESQL" : engine.toUpperCase().replace(/[^A-Z0-9]/g, "_");
  return [`SCALINGO_${prefix}_URL`, "DATABASE_URL"];
}

const PROJECT_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

/** Project ids are opaque, but only letters, digits, `-` and `_` ever reach the store. */
export function validateProjectId(value: unknown, field = "project_id"): string {
  if (typeof value !== "string" || !PROJECT_ID_RE.test(value)) {
    throw ValidationError.field(
      field,
      "must be 1 to 64 letters, digits, hyphens or underscores, starting with a letter or digit",
    );
  }
  return value;
}

/**
 * Add-on options at provisioning. The reference knows `version`; Cellar does not let one
 * choose a version yet, and says so rather than ignoring it.
 */
export function validateAddonOptions(value: unknown): void {
  if (value === undefined || value === null) return;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw ValidationError.field("options", "must be a JSON object");
  }
  for (const key of Object.keys(value)) {
    if (key === "version") {
      throw ValidationError.field(
        "options.version",
        "choosing a version is not supported yet: new databases get the platform's PostgreSQL version",
      );
    }
    throw ValidationError.field(`options.${key}`, "is not a known option");
  }
}

/** The weekly maintenance window every database gets until one is configured (8 hours). */
export const DEFAULT_MAINTENANCE_WINDOW = {
  weekday_utc: 1,
  starting_hour_utc: 2,
  duration_in_hour: 8,
} as const;
