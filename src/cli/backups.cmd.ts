// Continuous backups (reference §5): the recovery window, and a point-in-time restore in
// place after a typed confirmation (it replaces the data). Database-API calls go with a
// fresh add-on token, as the reference's client does.
import type { Command } from "commander";
import { act, enc } from "./context.ts";
import { CliError, isObject, rooted, type Response } from "./http.ts";
import { formatSize, keyValues, table, text } from "./output.ts";
import { confirmByTyping } from "./prompt.ts";
import type { Session } from "./session.ts";
import { resolveTarget, type Target, type TargetOpts } from "./targets.ts";
import { parseDuration, waitFor } from "./wait.ts";

async function pitrCall(session: Session, t: Target, method: string, suffix: string, body?: unknown) {
  const tok = await session.call("POST", `/apps/${enc(t.scope)}/addons/${enc(t.databaseId)}/token`);
  const token = rooted(tok, "addon").token;
  if (typeof token !== "string") throw new CliError("the API gave no add-on token");
  return session.dbApiWithToken(token, method, `/databases/${enc(t.databaseId)}/pitr${suffix}`, body);
}

const targetOptions = (c: Command): Command =>
  c
    .option("-a, --app <name>", "the app")
    .option("--addon <id>", "the add-on, when the app has several")
    .option("--database <id>", "a Dedicated database instead of an app");

/** RFC 3339 with a zone, checked here so a typo never reaches the confirmation. */
function restoreTime(raw: string | undefined): string {
  if (!raw || Number.isNaN(Date.parse(raw)) || !/([Zz]|[+-]\d{2}:\d{2})$/.test(raw)) {
    throw new CliError(`"${raw ?? ""}" is not an RFC 3339 time with a zone, such as 2026-01-31T12:00:00Z`);
  }
  return raw;
}

async function waitForOperation(session: Session, t: Target, id: string, timeoutMs: number) {
  await waitFor({
    label: `the restore of ${t.label}`,
    timeoutMs,
    intervalMs: 2000,
    note: (line) => process.stderr.write(`${line}\n`),
    hint: `check on it later with the operation ${id}`,
    observe: async () => {
      const op = rooted(
        await session.call("GET", `/apps/${enc(t.scope)}/operations/${enc(id)}`),
        "operation",
      );
      const status = text(op.status, "unknown");
      return {
        state: status,
        done: status === "done",
        ...(status === "error" ? { failed: text(op.error, "the restore failed") } : {}),
      };
    },
  });
}

/** The source's plan id (a fork's default plan). */
async function planOf(session: Session, t: Target): Promise<string> {
  const addon = rooted(
    await session.call("GET", `/apps/${enc(t.scope)}/addons/${enc(t.databaseId)}`),
    "addon",
  );
  const plan = addon.plan;
  if (!isObject(plan) || typeof plan.id !== "string")
    throw new CliError("the API gave no plan for the source");
  return plan.id;
}

type ForkOpts = TargetOpts & { toApp?: string; name?: string; plan?: string };

/** A new database from the source's backups at `time`: an add-on of another app, or a Dedicated one. */
async function fork(session: Session, source: Target, time: string, opts: ForkOpts): Promise<Response> {
  const plan = opts.plan ?? (await planOf(session, source));
  const restoreFrom = { database_id: source.databaseId, restore_time: time };
  if (opts.database) {
    if (!opts.name)
      throw new CliError("a fork of a Dedicated database is a new one: name it with --name <name>");
    return session.call("POST", "/databases", {
      database: { name: opts.name, technology: "postgresql-ng", plan, restore_from: restoreFrom },
    });
  }
  if (!opts.toApp)
    throw new CliError("which app gets the fork? pass --to-app <app> (not the source's own app)");
  return session.call("POST", `/apps/${enc(opts.toApp)}/addons`, {
    addon: { addon_provider_id: "postgresql", plan_id: plan, restore_from: restoreFrom },
  });
}

/** "verified at <time>", "failed: <why>", or "pending" (not restored and read yet). */
function verificationCell(b: Record<string, unknown>): string {
  const status = text(b.verification_status, "pending");
  if (status === "verified") return `verified ${text(b.verification_checked_at)}`.trim();
  if (status === "failed") return `FAILED: ${text(b.verification_detail, "no detail")}`;
  return status;
}

export function registerBackupCommands(program: Command): void {
  targetOptions(
    program
      .command("database-pitr-fork <time>")
      .description(
        "make a new database from this one's backups at an RFC 3339 time (the source is untouched)",
      )
      .option("--to-app <app>", "the app that gets the forked add-on")
      .option("--name <name>", "the name of the forked Dedicated database")
      .option("--plan <plan>", "the fork's plan: the source's (default) or a bigger one"),
  ).action(
    act<ForkOpts>(async (ctx, [raw], opts) => {
      const time = restoreTime(raw);
      const source = await resolveTarget(ctx.session(), opts);
      const res = await fork(ctx.session(), source, time, opts);
      const body =
        isObject(res.json) && isObject(res.json.database) ? res.json.database : rooted(res, "addon");
      const where = opts.database ? `database ${opts.name ?? ""}` : `add-on of ${opts.toApp ?? ""}`;
      ctx.out.result(
        res.json,
        () => `Fork ${text(body.id)} (${where}) of ${source.label} at ${time} is being provisioned.`,
      );
    }),
  );

  targetOptions(
    program
      .command("database-pitr-recovery-window")
      .description("the earliest and latest times a point-in-time restore can reach"),
  ).action(
    act<TargetOpts>(async (ctx, _args, opts) => {
      const target = await resolveTarget(ctx.session(), opts);
      const res: Response = await pitrCall(ctx.session(), target, "GET", "/recovery_window");
      const w = rooted(res, "recovery_window");
      ctx.out.result(res.json, () =>
        w.earliest_recoverable_at
          ? keyValues([
              ["Earliest recoverable at", text(w.earliest_recoverable_at)],
              ["Latest recoverable at", text(w.latest_recoverable_at)],
            ])
          : `${target.label} has no recoverable point yet: its first full backup has not finished.`,
      );
    }),
  );

  targetOptions(
    program
      .command("database-pitr-backups")
      .description("the full backups behind the recovery window, and whether each was verified"),
  ).action(
    act<TargetOpts>(async (ctx, _args, opts) => {
      const target = await resolveTarget(ctx.session(), opts);
      const res: Response = await pitrCall(ctx.session(), target, "GET", "/backups");
      const sets = isObject(res.json) ? res.json.continuous_backups : null;
      if (!Array.isArray(sets)) throw new CliError("the API gave no list of backups");
      ctx.out.result(res.json, () =>
        sets.length === 0
          ? `${target.label} has no full backup yet.`
          : table(
              ["ID", "Timeline", "Ended At", "Size", "Verification"],
              sets
                .filter(isObject)
                .map((b) => [
                  text(b.id),
                  text(b.timeline),
                  text(b.ended_at),
                  formatSize(b.size),
                  verificationCell(b),
                ]),
            ),
      );
    }),
  );

  targetOptions(
    program
      .command("database-pitr-restore <time>")
      .description(
        "restore the database in place to an RFC 3339 time (asks to confirm; data after it is lost)",
      )
      .option("-y, --yes", "do not ask for confirmation")
      .option("--wait", "wait until the restore is done")
      .option("--timeout <duration>", "how long --wait waits", "30m"),
  ).action(
    act<TargetOpts & { wait?: boolean; timeout: string }>(async (ctx, [raw], opts) => {
      const time = restoreTime(raw);
      const timeoutMs = parseDuration(opts.timeout);
      const target = await resolveTarget(ctx.session(), opts);
      if (!ctx.yes) {
        await confirmByTyping(
          `every change to ${target.label} made after ${time} (the database is down while it restores)`,
          ...new Set([target.scope, target.databaseId]),
        );
      }
      const res = await pitrCall(ctx.session(), target, "POST", "/restore", { restore_time: time });
      const id = text(rooted(res, "operation").id);
      ctx.out.result(res.json, () => `Restore of ${target.label} to ${time} started: operation ${id}.`);
      if (opts.wait) {
        await waitForOperation(ctx.session(), target, id, timeoutMs);
        if (!ctx.out.json) process.stdout.write(`${target.label} is restored to ${time}.\n`);
      }
    }),
  );
}
