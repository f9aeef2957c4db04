// Apps, their environment and collaborators: apps, create, apps-info, destroy, env, collaborators*.
import type { Command } from "commander";
import { act, enc, requireApp } from "./context.ts";
import { CliError, rooted, rootedList } from "./http.ts";
import { field, keyValues, table } from "./output.ts";
import { confirmByTyping } from "./prompt.ts";

interface AppOpts {
  app?: string;
}

export function registerAppCommands(program: Command): void {
  program
    .command("apps")
    .description("list your apps")
    .action(
      act(async (ctx) => {
        const res = await ctx.session().call("GET", "/apps");
        const apps = rootedList(res, "apps");
        ctx.out.result(res.json, () =>
          apps.length === 0
            ? 'no apps yet: create one with "cellar create <name>"'
            : table(
                ["NAME", "OWNER", "REGION", "CREATED"],
                apps.map((a) => [
                  a.name as string,
                  field(a, "owner", "username"),
                  field(a, "region"),
                  field(a, "created_at"),
                ]),
              ),
        );
      }),
    );

  program
    .command("create <app>")
    .description("create an app (a place for add-ons, collaborators and variables)")
    .action(
      act(async (ctx, [name]) => {
        const res = await ctx.session().call("POST", "/apps", { app: { name } });
        const app = rooted(res, "app");
        ctx.out.result(res.json, () => `App ${String(app.name)} created (${String(app.id)}).`);
      }),
    );

  program
    .command("apps-info")
    .description("show an app")
    .option("-a, --app <name>", "the app")
    .action(
      act<AppOpts>(async (ctx, _args, opts) => {
        const res = await ctx.session().call("GET", `/apps/${enc(requireApp(opts))}`);
        const app = rooted(res, "app");
        ctx.out.result(res.json, () =>
          keyValues([
            ["Name", field(app, "name")],
            ["ID", field(app, "id")],
            ["Owner", field(app, "owner", "username")],
            ["Region", field(app, "region")],
            ["Dedicated database", field(app, "flags", "dedicated-database") === true ? "yes" : "no"],
            ["Created", field(app, "created_at")],
          ]),
        );
      }),
    );

  program
    .command("destroy")
    .description("delete an app (its add-ons must be removed first; asks to type its name)")
    .option("-a, --app <name>", "the app")
    .option("-y, --yes", "do not ask for confirmation")
    .action(
      act<AppOpts>(async (ctx, _args, opts) => {
        const name = requireApp(opts);
        const session = ctx.session();
        // Checked before asking: a typo should say "not found", not ask to confirm.
        await session.call("GET", `/apps/${enc(name)}`);
        if (!ctx.yes) await confirmByTyping(`the app ${name}`, name);
        await session.call("DELETE", `/apps/${enc(name)}?current_name=${enc(name)}`);
        ctx.out.result({}, () => `App ${name} deleted.`);
      }),
    );

  program
    .command("env")
    .description("list the environment variables of an app (add-ons write their URLs there)")
    .option("-a, --app <name>", "the app")
    .action(
      act<AppOpts>(async (ctx, _args, opts) => {
        const res = await ctx.session().call("GET", `/apps/${enc(requireApp(opts))}/variables`);
        const vars = rootedList(res, "variables");
        ctx.out.result(res.json, () =>
          vars.length ? vars.map((v) => `${String(v.name)}=${String(v.value)}`).join("\n") : "no variables",
        );
      }),
    );

  registerCollaboratorCommands(program);
}

function registerCollaboratorCommands(program: Command): void {
  program
    .command("collaborators")
    .description("list the collaborators of an app")
    .option("-a, --app <name>", "the app")
    .action(
      act<AppOpts>(async (ctx, _args, opts) => {
        const res = await ctx.session().call("GET", `/apps/${enc(requireApp(opts))}/collaborators`);
        const list = rootedList(res, "collaborators");
        ctx.out.result(res.json, () =>
          list.length === 0
            ? "no collaborators"
            : table(
                ["EMAIL", "USERNAME", "STATUS", "LIMITED"],
                list.map((k) => [
                  field(k, "email"),
                  field(k, "username"),
                  field(k, "status"),
                  field(k, "is_limited"),
                ]),
              ),
        );
      }),
    );

  program
    .command("collaborators-add <email>")
    .description("invite someone to collaborate on an app")
    .option("-a, --app <name>", "the app")
    .action(
      act<AppOpts>(async (ctx, [email], opts) => {
        const app = requireApp(opts);
        const res = await ctx
          .session()
          .call("POST", `/apps/${enc(app)}/collaborators`, { collaborator: { email } });
        const k = rooted(res, "collaborator");
        ctx.out.result(res.json, () =>
          [
            `${String(k.email)} is invited to ${app}.`,
            `Invitation link (they accept it while logged in): ${String(k.invitation_link)}`,
          ].join("\n"),
        );
      }),
    );

  program
    .command("collaborators-remove <email>")
    .description("remove a collaborator (or an invitation) from an app")
    .option("-a, --app <name>", "the app")
    .action(
      act<AppOpts>(async (ctx, [email], opts) => {
        const app = requireApp(opts);
        const session = ctx.session();
        const list = rootedList(
          await session.call("GET", `/apps/${enc(app)}/collaborators`),
          "collaborators",
        );
        const wanted = email!.toLowerCase();
        const k = list.find((c) => String(c.email).toLowerCase() === wanted);
        if (!k) throw new CliError(`${email} is not a collaborator of ${app}`);
        await session.call("DELETE", `/apps/${enc(app)}/collaborators/${enc(String(k.id))}`);
        ctx.out.result({}, () => `${email} no longer collaborates on ${app}.`);
      }),
    );
}
