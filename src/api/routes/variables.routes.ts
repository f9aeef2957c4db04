// Environment variables of an app or of a Dedicated database (reference: /apps/:app/variables).
// Users manage their own; those a database wrote are read-only.
import { Hono } from "hono";
import {
  assertCanAccessVariables,
  assertScopeTakesUserVariables,
  assertVariableWritable,
} from "../../domain/collaborator-rules.ts";
import { NotFoundError, ValidationError } from "../../domain/errors.ts";
import { isPgError, UNIQUE_VIOLATION } from "../../store/db.ts";
import { recordEvent } from "../../store/events.store.ts";
import {
  deleteUserVariable,
  findVariable,
  insertUserVariable,
  listVariables,
  updateUserVariable,
  type Variable,
  type VariableScope,
} from "../../store/variables.store.ts";
import type { RateLimiter } from "../auth.ts";
import { requireAuth } from "../auth.ts";
import type { Deps, Env } from "../deps.ts";
import { readJson, root, str, typeName, type Json } from "../request.ts";
import { resolveScope, scopeIdentity, type Scope } from "../scope.ts";

const MAX_VALUE = 16 * 1024;
const NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

const variableJson = (v: Variable) => ({ id: v.id, name: v.name, value: v.value });

const variableScope = (s: Scope): VariableScope =>
  s.kind === "app" ? { kind: "app", id: s.app.id } : { kind: "database", id: s.database.id };

function variableName(o: Json): string {
  const name = str(o, "name", { max: 128 });
  if (!NAME_RE.test(name)) {
    throw ValidationError.field(
      "name",
      "may contain only letters, digits and _, and must not start with a digit",
    );
  }
  return name;
}

/** Values may be empty, but must be strings. */
function variableValue(o: Json): string {
  const v = o.value;
  if (v === undefined || v === null) throw ValidationError.field("value", "is required");
  if (typeof v !== "string") throw ValidationError.field("value", `must be a string, not ${typeName(v)}`);
  if (v.length > MAX_VALUE)
    throw ValidationError.field("value", `is too long (maximum ${MAX_VALUE} characters)`);
  return v;
}

export function variableRoutes(deps: Deps, limiter: RateLimiter): Hono<Env> {
  const app = new Hono<Env>();
  const auth = requireAuth(deps, limiter);

  /** The scope and the variable named by the URL, checked writable by this user. */
  const writableVariable = async (scope: Scope, ref: string): Promise<Variable> => {
    assertCanAccessVariables(scope.role);
    const v = await findVariable(deps.db, variableScope(scope), ref);
    if (!v) throw new NotFoundError("variable");
    assertVariableWritable(v);
    return v;
  };

  app.get("/apps/:app/variables", auth, async (c) => {
    const scope = await resolveScope(deps, c, c.req.param("app"));
    assertCanAccessVariables(scope.role);
    const vars = await listVariables(deps.db, variableScope(scope));
    return c.json({ variables: vars.map(variableJson) });
  });

  app.post("/apps/:app/variables", auth, async (c) => {
    const scope = await resolveScope(deps, c, c.req.param("app"));
    assertCanAccessVariables(scope.role);
    const body = root(await readJson(c), "variable");
    const name = variableName(body);
    const value = variableValue(body);
    assertScopeTakesUserVariables(scope.kind);
    const appId = scopeIdentity(scope).id;
    const existing = await findVariable(deps.db, { kind: "app", id: appId }, name);
    if (existing) {
      assertVariableWritable(existing);
      throw ValidationError.field(
        "name",
        `${name} already exists: change it with PATCH .../variables/${existing.id}`,
      );
    }
    try {
      const created = await deps.db.tx(async (tx) => {
        const v = await insertUserVariable(tx, appId, { name, value });
        await recordEvent(tx, { appId, userId: c.get("user").id, type: "new_variable", typeData: { name } });
        return v;
      });
      return c.json({ variable: variableJson(created) }, 201);
    } catch (err) {
      if (isPgError(err, UNIQUE_VIOLATION)) throw ValidationError.field("name", `${name} already exists`);
      throw err;
    }
  });

  app.patch("/apps/:app/variables/:id", auth, async (c) => {
    const scope = await resolveScope(deps, c, c.req.param("app"));
    const v = await writableVariable(scope, c.req.param("id"));
    const value = variableValue(root(await readJson(c), "variable"));
    const updated = await deps.db.tx(async (tx) => {
      const u = await updateUserVariable(tx, v.id, value);
      if (!u) throw new NotFoundError("variable");
      await recordEvent(tx, {
        appId: scopeIdentity(scope).id,
        userId: c.get("user").id,
        type: "edit_variable",
        typeData: { name: v.name },
      });
      return u;
    });
    return c.json({ variable: variableJson(updated) });
  });

  app.delete("/apps/:app/variables/:id", auth, async (c) => {
    const scope = await resolveScope(deps, c, c.req.param("app"));
    const v = await writableVariable(scope, c.req.param("id"));
    await deps.db.tx(async (tx) => {
      if (!(await deleteUserVariable(tx, v.id))) throw new NotFoundError("variable");
      await recordEvent(tx, {
        appId: scopeIdentity(scope).id,
        userId: c.get("user").id,
        type: "delete_variable",
        typeData: { name: v.name },
      });
    });
    return c.body(null, 204);
  });

  return app;
}
