// Finding the database a command is about (an app's add-on, or a Dedicated database) and
// watching it converge.
import { enc } from "./context.ts";
import { ApiError, CliError, isObject, rooted, rootedList, type JsonObject, type Response } from "./http.ts";
import type { Session } from "./session.ts";
import { text } from "./output.ts";
import type { Observation } from "./wait.ts";

/** A database as the main API addresses it: `/v1/apps/<scope>/addons/<databaseId>`. */
export interface Target {
  /** The app name, or the Dedicated database's id (it is its own app). */
  scope: string;
  databaseId: string;
  /** What to call it in messages. */
  label: string;
}

const providerOf = (a: JsonObject) => (isObject(a.addon_provider) ? String(a.addon_provider.id) : "");

/** The add-on of `app` named by its id or its provider (`postgresql`) when the app has one of those. */
export async function findAddon(session: Session, app: string, ref: string | undefined): Promise<JsonObject> {
  const addons = rootedList(await session.call("GET", `/apps/${enc(app)}/addons`), "addons");
  const matches = ref ? addons.filter((a) => a.id === ref || providerOf(a) === ref) : addons;
  if (matches.length === 1) return matches[0]!;
  const list = addons.map((a) => `${String(a.id)} (${providerOf(a)})`).join(", ");
  if (matches.length === 0) {
    throw new CliError(
      ref
        ? `app ${app} has no add-on ${ref}` + (list ? `; its add-ons: ${list}` : "")
        : `app ${app} has no add-on yet: add one with "cellar addons-add --app ${app} postgresql <plan>"`,
    );
  }
  throw new CliError(`app ${app} has several add-ons (${list}): say which with --addon <id>`);
}

export interface TargetOpts {
  app?: string;
  addon?: string;
  database?: string;
}

/** `--app [--addon]` or `--database`: the database a database-level command works on. */
export async function resolveTarget(session: Session, opts: TargetOpts): Promise<Target> {
  if (opts.database) {
    if (opts.app) throw new CliError("--database and --app cannot be combined: pass one of them");
    const db = rooted(await session.call("GET", `/databases/${enc(opts.database)}`), "database");
    const id = String(db.id);
    return { scope: id, databaseId: id, label: `database ${String(db.name)} (${id})` };
  }
  if (!opts.app) throw new CliError("which database? pass --app <app> [--addon <id>] or --database <id>");
  const addon = await findAddon(session, opts.app, opts.addon);
  const id = String(addon.id);
  return { scope: opts.app, databaseId: id, label: `add-on ${id} of ${opts.app}` };
}

/** The operation id of a 201/200 that started one (its `Location`). */
export function operationIdOf(res: Response): string | null {
  const location = res.headers.get("location");
  const last = location?.split("?")[0]?.split("/").pop();
  return last ? decodeURIComponent(last) : null;
}

/** The platform's explanation of the current state, under whichever name the API gives it. */
function reasonOf(db: JsonObject): string | undefined {
  for (const key of ["phase_reason", "status_reason", "reason"]) {
    const v = db[key];
    if (typeof v === "string" && v) return v;
  }
  return undefined;
}

async function databaseOrNull(session: Session, id: string): Promise<JsonObject | null> {
  try {
    return rooted(await session.dbApi("GET", `/databases/${enc(id)}`), "database");
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return null;
    throw err;
  }
}

/**
 * One look at a database for `--wait`: its database-API status and reason; the operation
 * (when one is followed) is read only once the database looks settled, to keep within
 * the API's rate limit.
 */
export function observeDatabase(
  session: Session,
  t: Target,
  goal: "running" | "deleted",
  operationId: string | null,
): () => Promise<Observation> {
  return async () => {
    const db = await databaseOrNull(session, t.databaseId);
    if (!db) {
      return goal === "deleted"
        ? { state: "deleted", done: true }
        : { state: "gone", done: false, failed: "it no longer exists" };
    }
    const state = String(db.status);
    const reason = reasonOf(db);
    const base: Observation = { state, done: false, ...(reason ? { reason } : {}) };
    if (goal === "deleted" || (state !== "running" && state !== "failed")) return base;
    if (operationId) {
      const op = rooted(
        await session.call("GET", `/apps/${enc(t.scope)}/operations/${enc(operationId)}`),
        "operation",
      );
      if (op.status === "error") return { ...base, failed: text(op.error, "the operation ended in error") };
      if (op.status !== "done") return base;
    }
    if (state === "failed") return { ...base, failed: reason ?? "the platform reports it failed" };
    return { ...base, done: true };
  };
}
