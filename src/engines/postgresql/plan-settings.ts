// PostgreSQL settings derived from a plan's resources. Pure: no I/O, table-tested.
import type { ArchitectureModel } from "../../domain/catalog.ts";
import { ValidationError } from "../../domain/errors.ts";

export interface PlanResources {
  ramMb: number;
  /** The plan's advertised connection count; derived from RAM and model when absent. */
  maxConnections?: number;
  model: ArchitectureModel;
}

export interface PlanSettings {
  /** Server max_connections: the plan's connections plus the superuser reserve. */
  maxConnections: number;
  /** Connections reserved for the superuser (the agent's own monitoring and user management). */
  superuserReservedConnections: number;
  sharedBuffersMb: number;
  effectiveCacheSizeMb: number;
  workMemKb: number;
  maintenanceWorkMemMb: number;
  /** How often the autovacuum launcher visits each database. */
  autovacuumNaptimeS: number;
}

/** Connections per GB of RAM the product promises (issue 3, reference plans). */
export const CONNECTIONS_PER_GB: Record<ArchitectureModel, number> = { shared: 60, dedicated: 100 };

const SUPERUSER_RESERVED = 3;
/** PostgreSQL's own default; below it ordinary ORDER BY / hash joins start spilling to disk. */
const WORK_MEM_FLOOR_KB = 4096;
const MIN_RAM_MB = 128;
/** Shared plans up to this size are packed densely (Starter). */
const SMALL_SHARED_RAM_MB = 1024;

export function planPostgresSettings(plan: PlanResources): PlanSettings {
  if (!Number.isInteger(plan.ramMb) || plan.ramMb < MIN_RAM_MB) {
    throw ValidationError.field("ram_mb", `must be an integer of at least ${MIN_RAM_MB}`);
  }
  const userConnections =
    plan.maxConnections ?? Math.floor((plan.ramMb / 1024) * CONNECTIONS_PER_GB[plan.model]);
  if (!Number.isInteger(userConnections) || userConnections < 1) {
    throw ValidationError.field("max_connections", "must be a positive integer");
  }
  // The plan's number is what users can open: the superuser reserve comes on top, so the
  // agent can still connect when an application exhausts its connections.
  const maxConnections = userConnections + SUPERUSER_RESERVED;

  // 25% of RAM is the usual starting point for shared_buffers; more leaves too little for
  // the OS page cache, which PostgreSQL relies on for double buffering.
  const sharedBuffersMb = Math.floor(plan.ramMb / 4);
  // A planner hint, not an allocation: the RAM likely available for caching (shared
  // buffers + page cache). 75% leaves a quarter for connections and the OS.
  const effectiveCacheSizeMb = Math.floor((plan.ramMb * 3) / 4);

  // Each connection's fair share of the RAM outside shared_buffers, halved because one
  // query commonly runs a sort and a hash side by side. Connections scale with RAM (per
  // GB), so this stays roughly constant across sizes while the total budget scales with
  // RAM; the floor keeps small queries in memory on connection-heavy Dedicated plans.
  const perConnectionKb = ((plan.ramMb - sharedBuffersMb) * 1024) / maxConnections;
  const workMemKb = Math.max(WORK_MEM_FLOOR_KB, Math.floor(perConnectionKb / 2));

  // VACUUM, CREATE INDEX and autovacuum workers (up to 3) each may use this much: RAM/16
  // keeps three of them under ~20% of RAM; 2 GB is where extra memory stops helping.
  const maintenanceWorkMemMb = Math.min(2048, Math.max(16, Math.floor(plan.ramMb / 16)));

  // The launcher visits every database (three on a fresh node) once per naptime, each visit a
  // forked worker: on a host packed with idle small Shared instances, the default minute
  // costs more CPU than the databases' own work. Five minutes cuts that ~5x; a table that
  // needs vacuuming waits at most that long.
  const autovacuumNaptimeS = plan.model === "shared" && plan.ramMb <= SMALL_SHARED_RAM_MB ? 300 : 60;

  return {
    maxConnections,
    superuserReservedConnections: SUPERUSER_RESERVED,
    sharedBuffersMb,
    effectiveCacheSizeMb,
    workMemKb,
    maintenanceWorkMemMb,
    autovacuumNaptimeS,
  };
}
