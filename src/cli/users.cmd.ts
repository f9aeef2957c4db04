// Database users (reference §4.3): list, create, update password, delete. Each call goes to
// the database API with a fresh add-on token, as the reference's client does.
import type { Command } from "commander";
import { act, enc } from "./context.ts";
import { CliError, isObject, rooted, rootedList, type JsonObject, type Response } from "./http.ts";
import { field, table, text } from "./output.ts";
import { ask } from "./prompt.ts";
import type { Session } from "./session.ts";
import { resolveTarget, type Target, type TargetOpts } from "./targets.ts";

async function addonToken(session: Session, t: Target): Promise<string> {
  const res = await session.call("POST", `/apps/${enc(t.scope)}/addons/${enc(t.databaseId)}/token`);
  const token = rooted(res, "addon").token;
  if (typeof token !== "string") throw new CliError("the API gave no add-on token");
  return token;
}

/** One database-API call on the target's users, with a fresh add-on token. */
async function usersCall(
  session: Session,
  target: Target,
  method: string,
  suffix: string,
  body?: unknown,
): Promise<Response> {
  const token = await addonToken(session, target);
  return session.dbApiWithToken(token, method, `/databases/${enc(target.databaseId)}/users${suffix}`, body);
}

/**
 * Asks for a password twice on a terminal (once when piped). Empty means "let the
 * platform generate one", which it returns once.
 */
async function askPassword(): Promise<string> {
  const first = await ask("Password (empty: generate one): ", { hidden: true });
  if (first === null || first === "") return "";
  if (process.stdin.isTTY) {
    const again = await ask("Password again: ", { hidden: true });
    if (again !== first) throw new CliError("the two passwords differ: nothing was changed");
  }
  return first;
}

const targetOptions = (c: Command): Command =>
  c
    .option("-a, --app <name>", "the app")
    .option("--addon <id>", "the add-on, when the app has several")
    .option("--database <id>", "a Dedicated database instead of an app");

function userOf(res: Response): JsonObject {
  return rooted(res, "database_user");
}

function passwordLine(user: JsonObject): string {
  return typeof user.password === "string" ? `\nPassword (shown only now): ${user.password}` : "";
}

export function registerUserCommands(program: Command): void {
  targetOptions(
    program.command("database-users-list").alias("database-list-users").description("list database users"),
  ).action(
    act<TargetOpts>(async (ctx, _args, opts) => {
      const res = await usersCall(ctx.session(), await resolveTarget(ctx.session(), opts), "GET", "");
      const users =
        isObject(res.json) && Array.isArray(res.json["database-users"])
          ? rootedList(res, "database-users")
          : [];
      ctx.out.result(res.json, () =>
        table(
          ["NAME", "READ-ONLY", "PROTECTED", "PASSWORD ENCRYPTION"],
          users.map((u) => [
            field(u, "name"),
            field(u, "read_only"),
            field(u, "protected"),
            field(u, "dbms_attributes", "password_encryption"),
          ]),
        ),
      );
    }),
  );

  targetOptions(
    program
      .command("database-users-create <user>")
      .description("create a database user (asks for a password; empty generates one)")
      .option("--read-only", "grant read access only"),
  ).action(
    act<TargetOpts & { readOnly?: boolean }>(async (ctx, [name], opts) => {
      const target = await resolveTarget(ctx.session(), opts);
      const password = await askPassword();
      const res = await usersCall(ctx.session(), target, "POST", "", {
        database_user: {
          database_id: target.databaseId,
          name,
          read_only: opts.readOnly === true,
          ...(password ? { password, password_confirmation: password } : {}),
        },
      });
      const user = userOf(res);
      ctx.out.result(
        res.json,
        () => `User ${String(user.name)} created on ${target.label}.${passwordLine(user)}`,
      );
    }),
  );

  targetOptions(
    program
      .command("database-users-update-password <user>")
      .description("change a database user's password (asks for it; empty generates one)"),
  ).action(
    act<TargetOpts>(async (ctx, [name], opts) => {
      const target = await resolveTarget(ctx.session(), opts);
      const password = await askPassword();
      const res = password
        ? await usersCall(ctx.session(), target, "PATCH", `/${enc(name!)}`, {
            database_user: { database_id: target.databaseId, password, password_confirmation: password },
          })
        : await usersCall(ctx.session(), target, "POST", `/${enc(name!)}/reset_password`);
      const user = userOf(res);
      ctx.out.result(res.json, () => `Password of ${text(user.name, name)} changed.${passwordLine(user)}`);
    }),
  );

  targetOptions(program.command("database-users-delete <user>").description("delete a database user")).action(
    act<TargetOpts>(async (ctx, [name], opts) => {
      const target = await resolveTarget(ctx.session(), opts);
      await usersCall(ctx.session(), target, "DELETE", `/${enc(name!)}`);
      ctx.out.result({}, () => `User ${name} deleted from ${target.label}.`);
    }),
  );
}
