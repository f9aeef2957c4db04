// Dedicated Resources databases: databases, database-info, database-list-plans,
// database-create, database-upgrade, database-destroy.
import type { Command } from "commander";
import { listPlans, plansTable, waitForDatabase, waitOptions } from "./addons.cmd.ts";
import { act, enc } from "./context.ts";
import { rooted, rootedList, type JsonObject } from "./http.ts";
import { field, keyValues, table, text } from "./output.ts";
import { confirmByTyping } from "./prompt.ts";
import type { Session } from "./session.ts";
import { operationIdOf, type Target } from "./targets.ts";

interface WaitOpts {
  wait?: boolean;
  timeout: string;
}

interface CreateOpts extends WaitOpts {
  type: string;
  plan: string;
  ipRange?: string;
  project?: string;
}

async function showDatabase(session: Session, ref: string): Promise<{ json: unknown; db: JsonObject }> {
  const res = await session.call("GET", `/databases/${enc(ref)}`);
  return { json: res.json, db: rooted(res, "database") };
}

const targetOf = (db: JsonObject): Target => ({
  scope: String(db.id),
  databaseId: String(db.id),
  label: `database ${String(db.name)} (${String(db.id)})`,
});

const hintFor = (db: JsonObject) =>
  `The platform keeps working on it: check with "cellar database-info ${String(db.id)}".`;

export function registerDatabaseCommands(program: Command): void {
  program
    .command("databases")
    .description("list your Dedicated Resources databases (owned or collaborated on)")
    .action(
      act(async (ctx) => {
        const res = await ctx.session().call("GET", "/databases");
        const dbs = rootedList(res, "databases");
        ctx.out.result(res.json, () =>
          dbs.length === 0
            ? 'no Dedicated databases: create one with "cellar database-create --type postgresql-ng --plan <plan> <name>"'
            : table(
                ["ID", "NAME", "TYPE", "PLAN", "ROLE", "STATUS", "PROJECT"],
                dbs.map((d) =>
                  ["id", "name", "technology", "plan", "role", "status", "project_id"].map((k) =>
                    field(d, k),
                  ),
                ),
              ),
        );
      }),
    );

  program
    .command("database-info <database>")
    .description("show a Dedicated database (by id or name)")
    .action(
      act(async (ctx, [ref]) => {
        const { json, db } = await showDatabase(ctx.session(), ref!);
        ctx.out.result(json, () =>
          keyValues([
            ["ID", field(db, "id")],
            ["Name", field(db, "name")],
            ["Type", field(db, "technology")],
            ["Plan", field(db, "plan")],
            ["Status", field(db, "status")],
            ["Reason", field(db, "phase_reason"), "optional"],
            ["Role", field(db, "role")],
            ["Region", field(db, "region")],
            ["IP range", field(db, "ip_range")],
            ["Project", field(db, "project_id")],
            ["Created", field(db, "created_at")],
          ]),
        );
      }),
    );

  program
    .command("database-list-plans <technology>")
    .description("list the plans of a Dedicated technology (postgresql-ng)")
    .action(
      act(async (ctx, [technology]) => {
        const { json, plans } = await listPlans(ctx, technology!);
        ctx.out.result(json, () => plansTable(plans));
      }),
    );

  waitOptions(
    program
      .command("database-create <name>")
      .description("create a Dedicated Resources database")
      .requiredOption("--type <technology>", "postgresql-ng")
      .requiredOption("--plan <plan>", 'a plan of "cellar database-list-plans postgresql-ng"')
      .option("--ip-range <cidr>", "the private network range of its nodes")
      .option("--project <id>", "the project it belongs to"),
  ).action(
    act<CreateOpts>(async (ctx, [name], opts) => {
      const session = ctx.session();
      const body = {
        database: {
          name,
          technology: opts.type,
          plan: opts.plan,
          ...(opts.ipRange ? { ip_range: opts.ipRange } : {}),
          ...(opts.project ? { project_id: opts.project } : {}),
        },
      };
      const res = await session.call("POST", "/databases", body);
      const db = rooted(res, "database");
      if (!ctx.out.json)
        ctx.out.print(`Your ${opts.type} database ${String(db.id)} ('${name}') is being provisioned.`);
      if (!opts.wait) return ctx.out.json ? ctx.out.print(JSON.stringify(res.json, null, 2)) : undefined;
      await waitForDatabase(ctx, targetOf(db), "running", null, opts.timeout, hintFor(db));
      const now = await showDatabase(session, String(db.id));
      ctx.out.result(now.json, () => `Database ${name} is running.`);
    }),
  );

  waitOptions(
    program
      .command("database-upgrade <database> <plan>")
      .description("change the plan of a Dedicated database (scale up only)"),
  ).action(
    act<WaitOpts>(async (ctx, [ref, plan], opts) => {
      const session = ctx.session();
      const { db } = await showDatabase(session, ref!);
      const t = targetOf(db);
      const res = await session.call("PATCH", `/apps/${enc(t.scope)}/addons/${enc(t.databaseId)}`, {
        addon: { plan_id: plan },
      });
      const opId = operationIdOf(res);
      if (!ctx.out.json) ctx.out.print(text((res.json as JsonObject).message, "Plan change requested."));
      if (!opts.wait || !opId)
        return ctx.out.json ? ctx.out.print(JSON.stringify(res.json, null, 2)) : undefined;
      await waitForDatabase(ctx, t, "running", opId, opts.timeout, hintFor(db));
      const now = await showDatabase(session, t.databaseId);
      ctx.out.result(now.json, () => `Database ${String(db.name)} now runs on ${String(now.db.plan)}.`);
    }),
  );

  program
    .command("database-destroy <database>")
    .description("delete a Dedicated database and its data (asks to type its id or name)")
    .option("-y, --yes", "do not ask for confirmation")
    .action(
      act(async (ctx, [ref]) => {
        const session = ctx.session();
        const { db } = await showDatabase(session, ref!);
        const id = String(db.id);
        const name = String(db.name);
        if (!ctx.yes) await confirmByTyping(`the database ${name} (${id}) and its data`, id, name);
        await session.call("DELETE", `/apps/${enc(id)}?current_name=${enc(name)}`);
        ctx.out.result({}, () => `Database ${name} (${id}) is being deleted.`);
      }),
    );
}
