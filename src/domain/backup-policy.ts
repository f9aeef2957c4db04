// Continuous backups: the recovery window each class promises, how a restore time is read
// and checked against the window, and the health of the archive (reference §2.8). Pure.
import type { ArchitectureModel, Plan, ServiceClass } from "./catalog.ts";
import { ValidationError } from "./errors.ts";

/** Days a point-in-time restore can reach back: Shared 7; Dedicated 7, 14 or 30 by class. */
export function recoveryWindowDays(model: ArchitectureModel, serviceClass: ServiceClass): number {
  if (model === "shared") return 7;
  return { starter: 7, business: 14, enterprise: 30 }[serviceClass];
}

/** RFC 3339 with a time zone: `2026-01-31T12:00:00Z`, `...T13:00:00.5+01:00`. */
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

export function parseRestoreTime(raw: unknown): Date {
  if (typeof raw !== "string" || raw === "") {
    throw ValidationError.field("restore_time", "is required: an RFC 3339 time such as 2026-01-31T12:00:00Z");
  }
  const t = new Date(raw);
  if (!RFC3339.test(raw) || Number.isNaN(t.getTime())) {
    throw ValidationError.field(
      "restore_time",
      `"${raw.slice(0, 64)}" is not an RFC 3339 time with a time zone, such as 2026-01-31T12:00:00Z`,
    );
  }
  return t;
}

export interface Window {
  earliest: Date | null;
  latest: Date | null;
}

/** A restore time must be in the past and inside the recovery window as last reported. */
export function checkRestoreTime(t: Date, window: Window, now: Date): void {
  if (t.getTime() > now.getTime()) {
    throw ValidationError.field("restore_time", `${t.toISOString()} is in the future: pick a past time`);
  }
  const { earliest, latest } = window;
  if (!earliest || !latest) {
    throw ValidationError.field(
      "restore_time",
      "no point is recoverable yet: the first full backup of this database has not finished",
    );
  }
  if (t < earliest || t > latest) {
    throw ValidationError.field(
      "restore_time",
      `${t.toISOString()} is outside the recovery window: pick a time from ` +
        `${earliest.toISOString()} to ${latest.toISOString()}`,
    );
  }
}

export type ArchiveHealth = "healthy" | "delayed" | "stale";

/** Reference: delayed when the latest restorable point is over 12 h old, stale over 24 h. */
export function archiveHealth(latest: Date, now: Date): ArchiveHealth {
  const ageH = (now.getTime() - latest.getTime()) / 3_600_000;
  if (ageH > 24) return "stale";
  if (ageH > 12) return "delayed";
  return "healthy";
}

/** A fork runs on its source's plan or a bigger one (single node or HA cluster, from either). */
export function checkForkPlan(source: Plan, fork: Plan): void {
  if (fork.providerId !== source.providerId) {
    throw ValidationError.field(
      "restore_from.database_id",
      `a fork keeps its source's kind of database (${source.providerId}), not ${fork.providerId}`,
    );
  }
  if (fork.ramMb < source.ramMb || fork.storageGb < source.storageGb) {
    throw ValidationError.field(
      "plan_id",
      `${fork.id} is smaller than the source's ${source.id}: a fork needs the same plan or a bigger one`,
    );
  }
}
