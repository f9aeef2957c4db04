// How far a node's WAL archive reaches, read from the running server (pg_stat_archiver and
// its current WAL position): the latest point a restore can reach today.
import fs from "node:fs/promises";
import path from "node:path";
import type pg from "pg";
import { queryOnce } from "../superuser.ts";
import { parseLsn, parseSegment, segmentEndLsn } from "./backup-info.ts";

export interface ArchiverRow {
  last_archived_wal: string | null;
  last_archived_time: Date | null;
  last_failed_wal: string | null;
  last_failed_time: Date | null;
  insert_lsn: string;
  current_wal: string;
  segment_bytes: string;
  now: Date;
}

export interface ArchiveStatus {
  /** The timeline the server writes now. */
  timeline: number;
  /** Every change committed before this time is in the repository (null: nothing yet). */
  archivedUntil: Date | null;
  /** Why archiving does not keep up, when the archiver is failing. */
  error: string | null;
}

/**
 * An idle server's insert position after a segment switch: just past the long page header
 * that opens the next segment (no record is there yet).
 */
const LONG_PAGE_HEADER_BYTES = 40n;

const ARCHIVER_SQL = `
  SELECT last_archived_wal, last_archived_time, last_failed_wal, last_failed_time,
         pg_current_wal_insert_lsn()::text AS insert_lsn,
         pg_walfile_name(pg_current_wal_insert_lsn()) AS current_wal,
         current_setting('wal_segment_size') AS segment_bytes, now() AS now
  FROM pg_stat_archiver`;

/** "16MB" (SHOW style) or "16777216" -> bytes. */
function segmentBytes(raw: string): number {
  const m = /^(\d+)\s*(B|kB|MB|GB)?$/.exec(raw.trim());
  const units: Record<string, number> = { B: 1, kB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 };
  return m ? Number(m[1]) * (units[m[2] ?? "B"] ?? 1) : 16 * 1024 ** 2;
}

/**
 * Pure: when nothing was written since the end of the last archived segment, the
 * repository holds everything up to now; otherwise up to the moment that segment was
 * complete (`completedAt`, when its `.ready` file was made): commits after it went into the
 * next segment. The archiver's own time is later by the push's duration (1-2 s under load,
 * measured by bench/backup.ts), so it is only the fallback. A failing archiver is said.
 */
export function archiveStatusOf(row: ArchiverRow, completedAt: Date | null = null): ArchiveStatus {
  const timeline = parseSegment(row.current_wal)?.timeline ?? 0;
  const failing =
    row.last_failed_time !== null &&
    (row.last_archived_time === null || row.last_failed_time > row.last_archived_time);
  const error = failing
    ? `archiving of WAL ${row.last_failed_wal ?? "?"} fails since ${row.last_failed_time!.toISOString()}`
    : null;
  const last = row.last_archived_wal;
  if (!last || !row.last_archived_time) return { timeline, archivedUntil: null, error };
  const end = segmentEndLsn(last, segmentBytes(row.segment_bytes));
  const caughtUp =
    !failing &&
    end !== null &&
    parseSegment(last)?.timeline === timeline &&
    parseLsn(row.insert_lsn) <= end + LONG_PAGE_HEADER_BYTES;
  const archived = completedAt && completedAt < row.last_archived_time ? completedAt : row.last_archived_time;
  return { timeline, archivedUntil: caughtUp ? row.now : archived, error };
}

/** With the data dir: the last archived segment's completion time from its status file. */
export async function readArchiveStatus(
  superuser: pg.ClientConfig,
  dataDir?: string,
): Promise<ArchiveStatus> {
  const row = (await queryOnce<ArchiverRow>(superuser, ARCHIVER_SQL))[0]!;
  const last = row.last_archived_wal;
  // `.ready` is made when the segment is complete; renamed to `.done` once archived, it keeps
  // its mtime. Gone after a checkpoint recycled the segment: then the archiver's time.
  const done =
    dataDir && last && /^[0-9A-F]{24}$/.test(last)
      ? await fs.stat(path.join(dataDir, "pg_wal", "archive_status", `${last}.done`)).catch(() => null)
      : null;
  return archiveStatusOf(row, done?.mtime ?? null);
}
