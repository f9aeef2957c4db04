// Giving a copied data directory its own identity. Copies of one initdb share the
// system identifier, which pgBackRest (stanzas) and Patroni (cluster membership) use to
// tell clusters apart, and the SCRAM mock-authentication nonce. PostgreSQL 15's
// pg_resetwal cannot set the identifier, so we rewrite it in global/pg_control, then let
// pg_resetwal write fresh WAL stamped with it (WAL page headers carry the identifier too;
// pg_upgrade runs pg_resetwal on fresh clusters the same way). data-dir.ts does both.
// Also read here: the cluster state and latest checkpoint, as pg_controldata shows them
// (a planned switchover watches the old leader's shutdown, switchover-release.ts).
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { CommandFailedError } from "./errors.ts";

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32C (Castagnoli), the checksum pg_control uses. */
export function crc32c(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = (CRC32C_TABLE[(c ^ b) & 0xff] ?? 0) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const NONCE_LENGTH = 32;

/**
 * Where the CRC sits: ControlFileData ends with the 32-byte nonce then the CRC of all
 * bytes before it. Found by search rather than hard-coded, so a layout change between
 * major versions fails loudly instead of corrupting the file.
 */
function findCrcOffset(control: Buffer): number {
  const offset = crcOffsetOf(control);
  if (offset === null)
    throw new CommandFailedError("pg_control rewrite", "no valid CRC found: unknown pg_control layout");
  return offset;
}

function crcOffsetOf(control: Buffer): number | null {
  for (let offset = 64; offset + 4 <= Math.min(control.length, 1024); offset += 4) {
    if (crc32c(control.subarray(0, offset)) === control.readUInt32LE(offset)) return offset;
  }
  return null;
}

/** A system identifier shaped like initdb's: creation time in the high 32 bits, random low bits. */
export function newSystemIdentifier(now = Date.now()): bigint {
  return (BigInt(Math.floor(now / 1000)) << 32n) | BigInt(randomBytes(4).readUInt32LE(0));
}

export function readSystemIdentifier(control: Buffer): bigint {
  return control.readBigUInt64LE(0);
}

/**
 * A copy of a cleanly shut-down cluster's pg_control with a new system identifier and
 * nonce (and its CRC). pg_resetwal must run on the data dir afterwards: it writes fresh
 * WAL stamped with the new identifier.
 */
export function withNewIdentity(control: Buffer): { id: bigint; control: Buffer } {
  const copy = Buffer.from(control);
  const crcOffset = findCrcOffset(copy);
  const id = newSystemIdentifier();
  copy.writeBigUInt64LE(id, 0);
  randomBytes(NONCE_LENGTH).copy(copy, crcOffset - NONCE_LENGTH);
  copy.writeUInt32LE(crc32c(copy.subarray(0, crcOffset)), crcOffset);
  return { id, control: copy };
}

/** DBState, in the order of PostgreSQL's enum (pg_controldata's "Database cluster state"). */
const DB_STATES = [
  "starting up",
  "shut down",
  "shut down in recovery",
  "shutting down",
  "in crash recovery",
  "in archive recovery",
  "in production",
] as const;

export interface ControlState {
  state: (typeof DB_STATES)[number] | "unknown";
  /** Where the latest checkpoint record starts (pg_controldata's "Latest checkpoint location"). */
  checkpointLsn: bigint;
  /** The latest checkpoint's timeline. */
  timeline: number;
}

/**
 * The cluster state and latest checkpoint in pg_control (PostgreSQL 15's ControlFileData:
 * state at byte 16, checkPoint at 32, checkPointCopy.ThisTimeLineID at 48). Null when the
 * CRC does not match: a read that raced the server's rewrite of the file.
 */
export function parseControlState(control: Buffer): ControlState | null {
  if (control.length < 64 || crcOffsetOf(control) === null) return null;
  return {
    state: DB_STATES[control.readInt32LE(16)] ?? "unknown",
    checkpointLsn: control.readBigUInt64LE(32),
    timeline: control.readUInt32LE(48),
  };
}

export async function readControlState(dataDir: string): Promise<ControlState | null> {
  const control = await fs.readFile(path.join(dataDir, "global", "pg_control")).catch(() => null);
  return control === null ? null : parseControlState(control);
}

/** initdb's defaults, which Cellar keeps: 16 MiB WAL segments of 8 KiB pages. */
const WAL_SEGMENT_BYTES = 16n * 1024n * 1024n;
const WAL_PAGE_BYTES = 8192n;
/** A segment's first page starts with a long header, every other page with a short one. */
const LONG_PAGE_HEADER = 40n;
const SHORT_PAGE_HEADER = 24n;

/**
 * Where the WAL before a record starting at `lsn` ends: the record's start, or the start of
 * its page when only a page header lies between. With archive_mode on, a shutdown switches
 * segments first, so its checkpoint record opens a new segment and a standby's stream ends
 * at the segment boundary, before it; this is still "every record before the checkpoint".
 */
export function walEndBefore(lsn: bigint): bigint {
  if (lsn % WAL_SEGMENT_BYTES === LONG_PAGE_HEADER) return lsn - LONG_PAGE_HEADER;
  if (lsn % WAL_PAGE_BYTES === SHORT_PAGE_HEADER) return lsn - SHORT_PAGE_HEADER;
  return lsn;
}
