// What a stanza holds, read from `pgbackrest info --output=json`, and the decisions taken
// from it: which backup a restore starts from, when a new full backup is due, and the
// recovery window. Pure.
import type { BaseBackupReport, VerificationReport } from "./types.ts";

export interface BackupSet {
  label: string;
  type: "full" | "diff" | "incr";
  timeline: number;
  startedAt: Date;
  stoppedAt: Date;
  size: number;
  repoSize: number;
  annotations: Record<string, string>;
}

export interface StanzaInfo {
  /** pgBackRest's status: 0 ok, 1 missing stanza, 2 no valid backup, ... */
  statusCode: number;
  statusMessage: string;
  backups: BackupSet[];
}

const SEGMENT = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$/;

/** A WAL segment name's parts; null for history, partial and backup-label files. */
export function parseSegment(name: string): { timeline: number; log: number; seg: number } | null {
  const m = SEGMENT.exec(name);
  if (!m) return null;
  return { timeline: parseInt(m[1]!, 16), log: parseInt(m[2]!, 16), seg: parseInt(m[3]!, 16) };
}

/** The LSN just past a segment (segments of `segmentBytes`), as a bigint. */
export function segmentEndLsn(name: string, segmentBytes: number): bigint | null {
  const s = parseSegment(name);
  if (!s) return null;
  return (BigInt(s.log) << 32n) + BigInt(s.seg + 1) * BigInt(segmentBytes);
}

/** "16/B374D848" -> bigint. */
export function parseLsn(lsn: string): bigint {
  const m = /^([0-9A-Fa-f]+)\/([0-9A-Fa-f]+)$/.exec(lsn);
  if (!m) throw new Error(`not an LSN: ${lsn}`);
  return (BigInt(`0x${m[1]}`) << 32n) + BigInt(`0x${m[2]}`);
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json => (typeof v === "object" && v !== null ? (v as Json) : {});

function parseSet(raw: unknown): BackupSet | null {
  const b = obj(raw);
  const type = b.type;
  const start = obj(b.timestamp).start;
  const stop = obj(b.timestamp).stop;
  const archiveStart = obj(b.archive).start;
  if (b.error === true || typeof b.label !== "string") return null;
  if (type !== "full" && type !== "diff" && type !== "incr") return null;
  if (typeof start !== "number" || typeof stop !== "number" || typeof archiveStart !== "string") return null;
  const segment = parseSegment(archiveStart);
  if (!segment) return null;
  const info = obj(b.info);
  const annotations = Object.fromEntries(
    Object.entries(obj(b.annotation)).filter((e): e is [string, string] => typeof e[1] === "string"),
  );
  return {
    label: b.label,
    type,
    timeline: segment.timeline,
    startedAt: new Date(start * 1000),
    stoppedAt: new Date(stop * 1000),
    size: Number(info.size) || 0,
    repoSize: Number(obj(info.repository).size) || 0,
    annotations,
  };
}

/** Parses the JSON of `info --output=json --stanza=<stanza>` (an array of one stanza). */
export function parseStanzaInfo(json: string, stanza: string): StanzaInfo {
  const parsed: unknown = JSON.parse(json);
  const list = Array.isArray(parsed) ? parsed : [];
  const entry = obj(list.find((s) => obj(s).name === stanza));
  const status = obj(entry.status);
  const backups = (Array.isArray(entry.backup) ? entry.backup : [])
    .map(parseSet)
    .filter((b): b is BackupSet => b !== null)
    .sort((a, b) => a.stoppedAt.getTime() - b.stoppedAt.getTime());
  return {
    statusCode: typeof status.code === "number" ? status.code : -1,
    statusMessage: typeof status.message === "string" ? status.message : "no such stanza in the repository",
    backups,
  };
}

/**
 * The timelines whose backups and WAL lead to the current one: a single timeline, or (when
 * given as a list) the current one and the ancestors it continues (lineageOf).
 */
export type Lineage = number | readonly number[] | null;

const onLineage = (timeline: number, lineage: Lineage): boolean =>
  typeof lineage === "number" || lineage === null ? timeline === lineage : lineage.includes(timeline);

/** One line of a timeline history file: `parent` was left at `switchLsn`, for `reason`. */
export interface HistoryEntry {
  parent: number;
  switchLsn: string;
  reason: string;
}

/** Parses PostgreSQL's `<timeline>.history` (tab-separated lines; `#` comments). */
export function parseTimelineHistory(text: string): HistoryEntry[] {
  const entries: HistoryEntry[] = [];
  for (const line of text.split("\n")) {
    const m = /^\s*(\d+)\s+([0-9A-Fa-f]+\/[0-9A-Fa-f]+)\s*(.*)$/.exec(line);
    if (m) entries.push({ parent: Number(m[1]), switchLsn: m[2]!, reason: m[3]!.trim() });
  }
  return entries;
}

/** The reason PostgreSQL writes when a server is promoted with no recovery target: a failover. */
export const PROMOTION_REASON = "no recovery target specified";

/**
 * The current timeline and the ancestors it continues without a break: an HA failover or
 * switchover promotes a standby with no recovery target, so the history goes on. A
 * point-in-time restore stops at a target (its reason names it): what came before it is
 * not offered again (the reference's timeline reset), so the walk stops there.
 */
export function lineageOf(current: number, history: HistoryEntry[]): number[] {
  const lineage = [current];
  for (let i = history.length - 1; i >= 0; i--) {
    const entry = history[i]!;
    if (entry.reason !== PROMOTION_REASON) break;
    lineage.push(entry.parent);
  }
  return lineage;
}

/**
 * The backup a restore to `target` starts from: the newest one of the current lineage that
 * ended at or before the target (a restore never crosses back before an earlier restore:
 * the reference's restores reset the timeline, and what came before is no longer offered).
 */
export function chooseBackupSet(backups: BackupSet[], lineage: Lineage, target: Date): BackupSet | null {
  const usable = backups.filter(
    (b) => onLineage(b.timeline, lineage) && b.stoppedAt.getTime() <= target.getTime(),
  );
  return usable.at(-1) ?? null;
}

export type FullBackupReason = "initial" | "new-timeline" | "scheduled";

/** Why a full backup is due now, or null when the newest full of the lineage is recent enough. */
export function fullBackupDue(
  backups: BackupSet[],
  lineage: Lineage,
  now: Date,
  fullEveryHours: number,
): FullBackupReason | null {
  if (backups.length === 0) return "initial";
  const fulls = backups.filter((b) => b.type === "full" && onLineage(b.timeline, lineage));
  const newest = fulls.at(-1);
  if (!newest) return "new-timeline";
  const ageMs = now.getTime() - newest.startedAt.getTime();
  return ageMs >= fullEveryHours * 3_600_000 ? "scheduled" : null;
}

export interface RecoveryWindow {
  earliest: Date | null;
  latest: Date | null;
}

/**
 * From the end of the oldest backup of the current lineage to the latest point known to be
 * archived (never before the newest backup's end: a backup waits for its own WAL).
 */
export function recoveryWindow(
  backups: Array<{ timeline: number; stoppedAt: Date }>,
  lineage: Lineage,
  archivedUntil: Date | null,
): RecoveryWindow {
  const own = backups.filter((b) => onLineage(b.timeline, lineage));
  const first = own[0];
  const last = own.at(-1);
  if (!first || !last) return { earliest: null, latest: null };
  const latest = archivedUntil && archivedUntil > last.stoppedAt ? archivedUntil : last.stoppedAt;
  return { earliest: first.stoppedAt, latest };
}

export function backupReportOf(b: BackupSet): BaseBackupReport {
  return {
    label: b.label,
    type: b.type,
    timeline: b.timeline,
    started_at: b.startedAt.toISOString(),
    stopped_at: b.stoppedAt.toISOString(),
    size: b.size,
    repo_size: b.repoSize,
    reason: b.annotations["cellar-reason"] ?? null,
    verification: verificationOf(b),
  };
}

/** Annotations holding a backup's verification: in the repository, which outlives any agent. */
export const VERIFY_ANNOTATIONS = {
  status: "cellar-verify",
  at: "cellar-verify-at",
  detail: "cellar-verify-detail",
} as const;

export function verificationOf(b: BackupSet): VerificationReport {
  const status = b.annotations[VERIFY_ANNOTATIONS.status];
  if (status !== "verified" && status !== "failed") return { status: "pending", at: null, detail: null };
  return {
    status,
    at: b.annotations[VERIFY_ANNOTATIONS.at] ?? null,
    detail: b.annotations[VERIFY_ANNOTATIONS.detail] ?? null,
  };
}

/**
 * The next backup to verify: the newest full backup of the current lineage not verified
 * yet (restores only ever start from those). Timelines before a restore are never restored from again.
 */
export function backupToVerify(backups: BackupSet[], lineage: Lineage): BackupSet | null {
  const todo = backups.filter(
    (b) => b.type === "full" && onLineage(b.timeline, lineage) && verificationOf(b).status === "pending",
  );
  return todo.at(-1) ?? null;
}
