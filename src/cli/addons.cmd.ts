// Add-ons (Shared databases of an app): addons-plans, addons, addons-add, addons-info,
// addons-upgrade, addons-remove.
import type { Command } from "commander";
import { act, enc, requireApp, type Ctx } from "./context.ts";
import { request, rooted, rootedList, type JsonObject } from "./http.ts";
import { field, formatPrice, formatRam, keyValues, table, text } from "./output.ts";
import { knownApiUrl } from "./session.ts";
import { findAddon, observeDatabase, operationIdOf, type Target } from "./targets.ts";
import { parseDuration, waitFor } from "./wait.ts";

interface AppOpts {
  app?: string;
}

interface WaitOpts extends AppOpts {
  wait?: boolean;
  timeout: string;
}

export const waitOptions = (c: Command): Command =>
  c
    .option("--wait", "wait until the change is done, showing progress on stderr")
    .option("--timeout <duration>", "give up waiting after this long (e.g. 90s, 10m)", "10m");

export function plansTable(plans: JsonObject[]): string {
  return table(
    ["NAME", "DISPLAY NAME", "RAM", "STORAGE", "CONNECTIONS", "NODES", "PRICE/MONTH"],
    plans.map((p) => [
      field(p, "name"),
      field(p, "display_name"),
      formatRam(p.ram_mb),
      typeof p.storage_gb === "number" ? `${p.storage_gb} GB` : undefined,
      field(p, "max_connections"),
      field(p, "nodes"),
      formatPrice(p.price, String(field(p, "pricings", "default", "currency") ?? "EUR")),
    ]),
  );
}

/** The catalog is public: listing plans needs an API URL, not a login. */
export async function listPlans(ctx: Ctx, provider: string): Promise<{ json: unknown; plans: JsonObject[] }> {
  const res = await request({
    method: "GET",
    url: `${knownApiUrl(ctx.configDir, ctx.env)}/v1/addon_providers/${enc(provider)}/plans`,
  });
  return { json: res.json, plans: rootedList(res, "plans") };
}

/** After `--wait`: the database reaches `goal`, then the add-on as it is now. */
export async function waitForDatabase(
  ctx: Ctx,
  t: Target,
  goal: "running" | "deleted",
  operationId: string | null,
  timeout: string,
  hint: string,
): Promise<void> {
  await waitFor({
    label: `${t.label} to be ${goal}`,
    timeoutMs: parseDuration(timeout),
    intervalMs: 2000,
    observe: observeDatabase(ctx.session(), t, goal, operationId),
    note: (line) => ctx.out.note(line),
    hint,
  });
}

export function registerAddonCommands(program: Command): void {
  program
    .command("addons-plans <provider>")
    .description("list the plans of an add-on provider (postgresql)")
    .action(
      act(async (ctx, [provider]) => {
        const { json, plans } = await listPlans(ctx, provider!);
        ctx.out.result(json, () => plansTable(plans));
      }),
    );

  program
    .command("addons")
    .description("list the add-ons of an app")
    .option("-a, --app <name>", "the app")
    .action(
      act<AppOpts>(async (ctx, _args, opts) => {
        const res = await ctx.session().call("GET", `/apps/${enc(requireApp(opts))}/addons`);
        const addons = rootedList(res, "addons");
        ctx.out.result(res.json, () =>
          addons.length === 0
            ? "no add-ons"
            : table(
                ["ID", "PROVIDER", "PLAN", "STATUS"],
                addons.map((a) => [
                  field(a, "id"),
                  field(a, "addon_provider", "id"),
                  field(a, "plan", "name"),
                  field(a, "status"),
                ]),
              ),
        );
      }),
    );

  waitOptions(
    program
      .command("addons-add <provider> <plan>")
      .description("add a database to an app, e.g. addons-add --app my-app postgresql postgresql-starter-512")
      .option("-a, --app <name>", "the app"),
  ).action(
    act<WaitOpts>(async (ctx, [provider, plan], opts) => {
      const app = requireApp(opts);
      const session = ctx.session();
      const body = { addon: { addon_provider_id: provider, plan_id: plan } };
      const res = await session.call("POST", `/apps/${enc(app)}/addons`, body);
      const addon = rooted(res, "addon");
      const id = String(addon.id);
      const vars = Array.isArray((res.json as JsonObject).variables)
        ? (res.json as JsonObject).variables
        : [];
      if (!ctx.out.json) {
        ctx.out.print(`Add-on ${id} (${String(field(addon, "plan", "name"))}) added to ${app}.`);
        ctx.out.print(text((res.json as JsonObject).message));
        ctx.out.print(`Its URL goes into ${(vars as string[]).join(", ")} (see "cellar env --app ${app}").`);
      }
      if (!opts.wait) return ctx.out.json ? ctx.out.print(JSON.stringify(res.json, null, 2)) : undefined;
      const target = { scope: app, databaseId: id, label: `add-on ${id}` };
      await waitForDatabase(ctx, target, "running", operationIdOf(res), opts.timeout, addonHint(app, id));
      const now = await session.call("GET", `/apps/${enc(app)}/addons/${enc(id)}`);
      ctx.out.result(
        now.json,
        () => `Add-on ${id} is running: open it with "cellar pgsql-console --app ${app}".`,
      );
    }),
  );

  program
    .command("addons-info <addon>")
    .description("show an add-on (by id, or by provider when the app has one of it)")
    .option("-a, --app <name>", "the app")
    .action(
      act<AppOpts>(async (ctx, [ref], opts) => {
        const app = requireApp(opts);
        const addon = await findAddon(ctx.session(), app, ref);
        const res = await ctx.session().dbApi("GET", `/databases/${enc(String(addon.id))}`);
        const db = rooted(res, "database");
        const window = db.maintenance_window as JsonObject | undefined;
        ctx.out.result({ addon, database: db }, () =>
          keyValues([
            ["ID", field(addon, "id")],
            ["Provider", field(addon, "addon_provider", "name")],
            ["Plan", field(addon, "plan", "name")],
            ["Status", field(db, "status")],
            ["Reason", field(db, "phase_reason"), "optional"],
            ["Resource ID", field(addon, "resource_id")],
            ["Database type", field(db, "type_name")],
            ["Version", field(db, "readable_version")],
            ["Current operation", field(db, "current_operation_id")],
            [
              "Maintenance window",
              window
                ? `${dayName(window.weekday_utc)} ${String(window.starting_hour_utc)}:00 UTC, ${String(window.duration_in_hour)} h`
                : undefined,
            ],
          ]),
        );
      }),
    );

  registerAddonChanges(program);
}

const addonHint = (app: string, id: string) =>
  `The platform keeps working on it: check with "cellar addons-info --app ${app} ${id}".`;

function dayName(d: unknown): string {
  const days = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
  return typeof d === "number" ? (days[d] ?? String(d)) : "-";
}

function registerAddonChanges(program: Command): void {
  waitOptions(
    program
      .command("addons-upgrade <addon> <plan>")
      .description("change the plan of an add-on")
      .option("-a, --app <name>", "the app"),
  ).action(
    act<WaitOpts>(async (ctx, [ref, plan], opts) => {
      const app = requireApp(opts);
      const session = ctx.session();
      const id = String((await findAddon(session, app, ref)).id);
      const res = await session.call("PATCH", `/apps/${enc(app)}/addons/${enc(id)}`, {
        addon: { plan_id: plan },
      });
      const opId = operationIdOf(res);
      if (!ctx.out.json)
        ctx.out.print(text((res.json as JsonObject).message, `Plan change of ${id} requested.`));
      if (!opts.wait || !opId)
        return ctx.out.json ? ctx.out.print(JSON.stringify(res.json, null, 2)) : undefined;
      const target = { scope: app, databaseId: id, label: `add-on ${id}` };
      await waitForDatabase(ctx, target, "running", opId, opts.timeout, addonHint(app, id));
      const now = await session.call("GET", `/apps/${enc(app)}/addons/${enc(id)}`);
      ctx.out.result(
        now.json,
        () => `Add-on ${id} now runs on ${String(field(rooted(now, "addon"), "plan", "name"))}.`,
      );
    }),
  );

  waitOptions(
    program
      .command("addons-remove <addon>")
      .description("remove an add-on: its database and data are deleted")
      .option("-a, --app <name>", "the app"),
  ).action(
    act<WaitOpts>(async (ctx, [ref], opts) => {
      const app = requireApp(opts);
      const session = ctx.session();
      const id = String((await findAddon(session, app, ref)).id);
      await session.call("DELETE", `/apps/${enc(app)}/addons/${enc(id)}`);
      if (!ctx.out.json) ctx.out.print(`Add-on ${id} is being removed from ${app}.`);
      if (opts.wait) {
        const target = { scope: app, databaseId: id, label: `add-on ${id}` };
        await waitForDatabase(
          ctx,
          target,
          "deleted",
          null,
          opts.timeout,
          `Check with "cellar addons --app ${app}".`,
        );
        if (!ctx.out.json) ctx.out.print(`Add-on ${id} is deleted.`);
      }
      if (ctx.out.json) ctx.out.print("{}");
    }),
  );
}
