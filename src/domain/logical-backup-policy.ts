// Logical backups (pg_dump) of Shared databases, reference §2.8: who gets them, the daily
// schedule, the names, and which backups retention keeps. Pure.
import type { ArchitectureModel, ServiceClass } from "./catalog.ts";
import { ValidationError } from "./errors.ts";

export interface LogicalRetention {
  /** The newest periodic backups kept. */
  daily: number;
  /** One periodic backup per week (its Sunday's) for this many weeks. */
  weekly: number;
  /** One periodic backup per month (its first Sunday's) for this many months. */
  monthly: number;
  /** Manual backups kept; the oldest goes when a new one is done. */
  manualCap: number;
}

/** Starter: 7 daily + 4 weekly, 10 manual. Business: 7 daily + 8 weekly + 12 monthly, 50 manual. */
export function logicalRetention(serviceClass: ServiceClass): LogicalRetention {
  if (serviceClass === "starter") return { daily: 7, weekly: 4, monthly: 0, manualCap: 10 };
  return { daily: 7, weekly: 8, monthly: 12, manualCap: 50 };
}

/** The schedule of a database that never set one: enabled, at 00:00 UTC (≈ 01:00 CET). */
export const DEFAULT_SCHEDULE_HOURS = [0];

/** Reference §3.7: Dedicated databases have continuous backups only; dumps are the customer's. */
export function assertLogicalBackupsOffered(model: ArchitectureModel, engine: string): void {
  if (model === "dedicated") {
    throw ValidationError.field(
      "database",
      "Dedicated databases have no managed logical backups: they get continuous backups " +
        "(point-in-time recovery, /pitr/...); take dumps yourself with pg_dump",
    );
  }
  if (engine !== "postgresql") {
    throw ValidationError.field("database", `logical backups exist for PostgreSQL only, not ${engine}`);
  }
}

const HOUR_MESSAGE = "must be an hour of the day in UTC: an integer from 0 to 23 (or a list of them)";

/** `periodic_backups_scheduled_at`: an hour (the reference's clients) or a list of hours. */
export function parseScheduleHours(raw: unknown): number[] {
  const list = Array.isArray(raw) ? (raw as unknown[]) : [raw];
  if (list.length === 0 || list.length > 24) {
    throw ValidationError.field("periodic_backups_scheduled_at", HOUR_MESSAGE);
  }
  for (const h of list) {
    if (typeof h !== "number" || !Number.isInteger(h) || h < 0 || h > 23) {
      throw ValidationError.field(
        "periodic_backups_scheduled_at",
        `${JSON.stringify(h) ?? "undefined"} ${HOUR_MESSAGE}`,
      );
    }
  }
  return [...new Set(list as number[])].sort((a, b) => a - b);
}

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

/**
 * The scheduled hours that have passed within the last `lookbackMs` (at most a day) and
 * not before `since` (when the schedule was set): each is one periodic backup to take.
 * A controller that was down at the hour still takes that day's backup later.
 */
export function dueSlots(hours: number[], now: Date, since: Date, lookbackMs = DAY_MS - HOUR_MS): Date[] {
  const slots: Date[] = [];
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  for (const h of hours) {
    for (const day of [today, today - DAY_MS]) {
      const t = day + h * HOUR_MS;
      if (t <= now.getTime() && now.getTime() - t < lookbackMs && t >= since.getTime()) {
        slots.push(new Date(t));
      }
    }
  }
  return slots.sort((a, b) => a.getTime() - b.getTime());
}

/** The reference's name: `20231207000608_my_app_4553` (UTC time, then the resource id). */
export function backupName(at: Date, resourceId: string): string {
  const stamp = at.toISOString().replace(/[-:T]/g, "").slice(0, 14);
  return `${stamp}_${resourceId}`;
}

export interface Dated {
  id: string;
  /** A periodic backup's slot; a manual backup's creation time. */
  at: Date;
}

const newestFirst = (a: Dated, b: Dated) => b.at.getTime() - a.at.getTime() || (a.id < b.id ? 1 : -1);
const utcDay = (t: Date) => Date.UTC(t.getUTCFullYear(), t.getUTCMonth(), t.getUTCDate());
/** Monday 00:00 UTC of the week holding `t` (weeks run Monday to Sunday). */
const weekStart = (t: Date) => utcDay(t) - ((t.getUTCDay() + 6) % 7) * DAY_MS;
const monthKey = (t: Date) => t.getUTCFullYear() * 12 + t.getUTCMonth();
/** Day of the month (1-7) of the month's first Sunday. */
const firstSunday = (t: Date) => {
  const first = new Date(Date.UTC(t.getUTCFullYear(), t.getUTCMonth(), 1));
  return 1 + ((7 - first.getUTCDay()) % 7);
};

/** Picks one backup per group: groups keyed by `keyOf`, the representative chosen by `pick`. */
function representatives(
  sorted: Dated[],
  keyOf: (b: Dated) => number,
  pick: (group: Dated[], key: number) => Dated | undefined,
): Dated[] {
  const groups = new Map<number, Dated[]>();
  for (const b of sorted) {
    const key = keyOf(b);
    groups.set(key, [...(groups.get(key) ?? []), b]);
  }
  const chosen: Dated[] = [];
  for (const [key, group] of groups) {
    const rep = pick(group, key);
    if (rep) chosen.push(rep);
  }
  return chosen.sort(newestFirst);
}

/**
 * Done periodic backups retention no longer keeps (reference §2.8): the newest `daily`; the
 * Sunday backup of each of the last `weekly` weeks (the week's last backup once the week is
 * over, if its Sunday's failed); the first Sunday's backup of each of the last `monthly`
 * months (the month's last backup once it is over, if none came on or after that Sunday).
 */
export function periodicToEvict(backups: Dated[], r: LogicalRetention, now: Date): string[] {
  const sorted = [...backups].sort(newestFirst);
  const keep = new Set(sorted.slice(0, r.daily).map((b) => b.id));
  const weekly = representatives(
    sorted,
    (b) => weekStart(b.at),
    (group, start) => {
      const last = group[0]!;
      const over = now.getTime() >= start + 7 * DAY_MS;
      return last.at.getUTCDay() === 0 || over ? last : undefined;
    },
  );
  for (const b of weekly.slice(0, r.weekly)) keep.add(b.id);
  const monthly = representatives(
    sorted,
    (b) => monthKey(b.at),
    (group, key) => {
      const onOrAfter = group.filter((b) => b.at.getUTCDate() >= firstSunday(b.at));
      if (onOrAfter.length) return onOrAfter[onOrAfter.length - 1];
      return monthKey(now) > key ? group[0] : undefined;
    },
  );
  for (const b of monthly.slice(0, r.monthly)) keep.add(b.id);
  return sorted.filter((b) => !keep.has(b.id)).map((b) => b.id);
}

/** Done manual backups over the cap, oldest first evicted. */
export function manualToEvict(backups: Dated[], cap: number): string[] {
  return [...backups]
    .sort(newestFirst)
    .slice(cap)
    .map((b) => b.id);
}
