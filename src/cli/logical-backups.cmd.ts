// Logical backups of Shared databases (reference §5): list, create, download, and the daily
// schedule. Database-API calls go with a fresh add-on token, as the reference's client does.
import fs from "node:fs";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Command } from "commander";
import { act, enc } from "./context.ts";
import { CliError, isObject, rooted, rootedList, type JsonObject, type Response } from "./http.ts";
import { formatSize, table, text } from "./output.ts";
import type { Session } from "./session.ts";
import { resolveTarget, type Target, type TargetOpts } from "./targets.ts";
import { parseDuration, waitFor } from "./wait.ts";

async function dbCall(session: Session, t: Target, method: string, suffix: string, body?: unknown) {
  const tok = await session.call("POST", `/apps/${enc(t.scope)}/addons/${enc(t.databaseId)}/token`);
  const token = rooted(tok, "addon").token;
  if (typeof token !== "string") throw new CliError("the API gave no add-on token");
  return session.dbApiWithToken(token, method, `/databases/${enc(t.databaseId)}${suffix}`, body);
}

const targetOptions = (c: Command): Command =>
  c
    .option("-a, --app <name>", "the app")
    .option("--addon <id>", "the add-on, when the app has several")
    .option("--database <id>", "a Dedicated database instead of an app");

/** The offset (whole hours) of a time zone now; refuses zones off by minutes. */
function offsetHours(timeZone: string, now: Date): number {
  let parts: Intl.DateTimeFormatPart[];
  try {
    parts = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
    }).formatToParts(now);
  } catch {
    throw new CliError(`unknown time zone ${timeZone}: use a name such as Europe/Paris, or UTC`);
  }
  const n = (type: string) => Number(parts.find((p) => p.type === type)?.value);
  const local = Date.UTC(n("year"), n("month") - 1, n("day"), n("hour"), n("minute"));
  const minutes = Math.round(
    (local -
      Date.UTC(
        now.getUTCFullYear(),
        now.getUTCMonth(),
        now.getUTCDate(),
        now.getUTCHours(),
        now.getUTCMinutes(),
      )) /
      60_000,
  );
  if (minutes % 60 !== 0)
    throw new CliError(`${timeZone} is not a whole number of hours from UTC: give the hour in UTC`);
  return minutes / 60;
}

/**
 * `--schedule-at`: "4", "4:00 UTC", "6 Europe/Paris" (the reference CLI's forms; without a
 * zone, this machine's). Returns the hour in UTC; minutes are not supported.
 */
export function scheduleHourUtc(raw: string, localZone: string, now = new Date()): number {
  const m = /^\s*(\d{1,2})(?::(\d{2}))?\s*(\S+)?\s*$/.exec(raw);
  const hour = Number(m?.[1]);
  if (!m || hour > 23 || (m[2] !== undefined && m[2] !== "00")) {
    throw new CliError(
      `"${raw}" is not an hour: give one such as "4", "4:00 UTC" or "6 Europe/Paris" (no minutes)`,
    );
  }
  const zone = m[3] ?? localZone;
  const offset = zone.toUpperCase() === "UTC" ? 0 : offsetHours(zone, now);
  return (((hour - offset) % 24) + 24) % 24;
}

/** The backup to download: the one named, else the most recent done one. */
function pickBackup(list: JsonObject[], id: string | undefined): JsonObject {
  if (id) {
    const b = list.find((x) => x.id === id);
    if (!b) throw new CliError(`no backup ${id}: run "cellar backups" to list them`);
    return b;
  }
  const done = list.filter((b) => b.status === "done");
  if (!done[0]) throw new CliError('no backup is done yet: create one with "cellar backups-create"');
  return done[0];
}

export function registerLogicalBackupCommands(program: Command): void {
  targetOptions(
    program.command("backups").description("list the logical backups (dumps) of a database"),
  ).action(
    act<TargetOpts>(async (ctx, _args, opts) => {
      const target = await resolveTarget(ctx.session(), opts);
      const res = await dbCall(ctx.session(), target, "GET", "/backups");
      const list = rootedList(res, "database_backups");
      ctx.out.result(res.json, () =>
        list.length === 0
          ? `${target.label} has no backup yet.`
          : table(
              ["ID", "Created At", "Size", "Status", "Method"],
              list.map((b) => [
                text(b.id),
                text(b.created_at),
                formatSize(b.size),
                text(b.status),
                text(b.method),
              ]),
            ),
      );
    }),
  );

  targetOptions(
    program
      .command("backups-create")
      .description("take a logical backup (dump) of the database now")
      .option("--wait", "wait until the backup is done")
      .option("--timeout <duration>", "how long --wait waits", "30m"),
  ).action(
    act<TargetOpts & { wait?: boolean; timeout: string }>(async (ctx, _args, opts) => {
      const timeoutMs = parseDuration(opts.timeout);
      const target = await resolveTarget(ctx.session(), opts);
      const res: Response = await dbCall(ctx.session(), target, "POST", "/backups");
      const b = rooted(res, "database_backup");
      const id = text(b.id);
      ctx.out.result(res.json, () => `Backup ${id} of ${target.label} is ${text(b.status)}.`);
      if (!opts.wait) return;
      await waitFor({
        label: `backup ${id}`,
        timeoutMs,
        intervalMs: 2000,
        note: (line) => ctx.out.note(line),
        hint: `check on it later with "cellar backups"`,
        observe: async () => {
          const now = rooted(
            await dbCall(ctx.session(), target, "GET", `/backups/${enc(id)}`),
            "database_backup",
          );
          const status = text(now.status, "unknown");
          return {
            state: status,
            done: status === "done",
            ...(status === "error" ? { failed: text(now.error, "the backup failed") } : {}),
          };
        },
      });
      if (!ctx.out.json) ctx.out.print(`Backup ${id} is done.`);
    }),
  );

  targetOptions(
    program
      .command("backups-download")
      .alias("backup-download")
      .description("download a backup as <name>.tar.gz (default: the most recent done one)")
      .option("-b, --backup <id>", "the backup to download")
      .option("-o, --output <file>", "where to write it (- for stdout)")
      .option("-s, --silent", "print nothing but errors"),
  ).action(
    act<TargetOpts & { backup?: string; output?: string; silent?: boolean }>(async (ctx, _args, opts) => {
      const target = await resolveTarget(ctx.session(), opts);
      const list = rootedList(await dbCall(ctx.session(), target, "GET", "/backups"), "database_backups");
      const b = pickBackup(list, opts.backup);
      if (b.status !== "done")
        throw new CliError(`backup ${text(b.id)} is ${text(b.status)}: only done backups download`);
      const link = await dbCall(ctx.session(), target, "GET", `/backups/${enc(text(b.id))}/archive`);
      const url = isObject(link.json) ? link.json.download_url : undefined;
      if (typeof url !== "string") throw new CliError("the API gave no download link");
      const res = await fetch(url);
      if (!res.ok || !res.body) throw new CliError(`the download failed: HTTP ${res.status}`);
      const output = opts.output ?? `${text(b.name, text(b.id))}.tar.gz`;
      const sink = output === "-" ? process.stdout : fs.createWriteStream(output, { mode: 0o600 });
      await pipeline(Readable.fromWeb(res.body as import("node:stream/web").ReadableStream), sink);
      if (!opts.silent && output !== "-")
        ctx.out.note(`Backup ${text(b.id)} written to ${output} (${formatSize(b.size)}).`);
    }),
  );

  targetOptions(
    program
      .command("backups-config")
      .description('the daily backup\'s hour (--schedule-at "4:00 UTC"), or no daily backup (--unschedule)')
      .option("--schedule-at <hour>", 'hour of the daily backup: "4" (local), "4:00 UTC", "6 Europe/Paris"')
      .option("--unschedule", "stop the daily backups"),
  ).action(
    act<TargetOpts & { scheduleAt?: string; unschedule?: boolean }>(async (ctx, _args, opts) => {
      if (opts.scheduleAt !== undefined && opts.unschedule) {
        throw new CliError("--schedule-at and --unschedule cannot be combined: pass one of them");
      }
      const target = await resolveTarget(ctx.session(), opts);
      const current = rooted(await dbCall(ctx.session(), target, "GET", ""), "database");
      const hours = Array.isArray(current.periodic_backups_scheduled_at)
        ? current.periodic_backups_scheduled_at
        : [];
      let change: JsonObject | null = null;
      if (opts.unschedule) change = { periodic_backups_enabled: false };
      if (opts.scheduleAt !== undefined) {
        // Several hours a day are set by an operator: one hour here would silently drop the others.
        if (hours.length > 1) {
          throw new CliError(
            `backups run at several hours (${hours.join(", ")} UTC): ask an operator to change them`,
          );
        }
        const local = Intl.DateTimeFormat().resolvedOptions().timeZone;
        change = {
          periodic_backups_enabled: true,
          periodic_backups_scheduled_at: scheduleHourUtc(opts.scheduleAt, local),
        };
      }
      const db = change
        ? rooted(await dbCall(ctx.session(), target, "PATCH", "", { database: change }), "database")
        : current;
      const at = (Array.isArray(db.periodic_backups_scheduled_at) ? db.periodic_backups_scheduled_at : [])
        .map((h) => `${String(h)}:00`)
        .join(", ");
      ctx.out.result({ database: db }, () =>
        db.periodic_backups_enabled === true
          ? `Daily backups of ${target.label} run at ${at} UTC.`
          : `Daily backups of ${target.label} are off.`,
      );
    }),
  );
}
