// The only module that reads process.env. Everything else receives a Config.
import path from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

export interface RegionConfig {
  name: string;
  displayName: string;
  azs: string[];
}

export interface Config {
  /** Where Cellar keeps its state: embedded control-plane PostgreSQL, host data, secrets. */
  dataDir: string;
  /** External control-plane PostgreSQL; when unset Cellar runs its own under dataDir. */
  databaseUrl: string | undefined;
  listenHost: string;
  port: number;
  /** URL clients use to reach this Cellar (region discovery points here). */
  publicUrl: string;
  adminToken: string | undefined;
  rateLimitPerMinute: number;
  regions: RegionConfig[];
  defaultRegion: string;
  catalogPath: string;
  /** Secret for signing bearer JWTs; when unset one is generated and kept in the store. */
  jwtSecret: string | undefined;
  reconcileIntervalMs: number;
  logLevel: "debug" | "info" | "warn" | "error";
}

export class ConfigError extends Error {}

function intVar(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`${name}=${raw} is invalid: expected an integer from ${min} to ${max}`);
  }
  return value;
}

const REGION_NAME = /^[a-z][a-z0-9-]{1,30}$/;

function parseRegions(raw: string | undefined): RegionConfig[] {
  const names = (raw ?? "osc-fr1,osc-secnum-fr1")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  if (names.length === 0) throw new ConfigError("CELLAR_REGIONS is empty: name at least one region");
  return names.map((name) => {
    if (!REGION_NAME.test(name)) {
      throw new ConfigError(
        `CELLAR_REGIONS: "${name}" is not a valid region name (lowercase letters, digits, -)`,
      );
    }
    return { name, displayName: name, azs: [`${name}-a`, `${name}-b`, `${name}-c`] };
  });
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const port = intVar(env, "CELLAR_PORT", 5080, 1, 65535);
  const listenHost = env.CELLAR_LISTEN_HOST || "127.0.0.1";
  const regions = parseRegions(env.CELLAR_REGIONS);
  const defaultRegion = env.CELLAR_DEFAULT_REGION || regions[0]!.name;
  if (!regions.some((r) => r.name === defaultRegion)) {
    throw new ConfigError(`CELLAR_DEFAULT_REGION=${defaultRegion} is not one of CELLAR_REGIONS`);
  }
  const logLevel = env.CELLAR_LOG_LEVEL || "info";
  if (!["debug", "info", "warn", "error"].includes(logLevel)) {
    throw new ConfigError(`CELLAR_LOG_LEVEL=${logLevel} is invalid: expected debug, info, warn or error`);
  }
  return {
    dataDir: path.resolve(env.CELLAR_DATA_DIR || path.join(REPO_ROOT, ".cellar")),
    databaseUrl: env.CELLAR_DATABASE_URL || undefined,
    listenHost,
    port,
    publicUrl: (env.CELLAR_PUBLIC_URL || `http://${listenHost}:${port}`).replace(/\/$/, ""),
    adminToken: env.CELLAR_ADMIN_TOKEN || undefined,
    rateLimitPerMinute: intVar(env, "CELLAR_RATE_LIMIT_PER_MINUTE", 60, 1, 1_000_000),
    regions,
    defaultRegion,
    catalogPath: path.resolve(env.CELLAR_CATALOG || path.join(REPO_ROOT, "config", "catalog.json")),
    jwtSecret: env.CELLAR_JWT_SECRET || undefined,
    reconcileIntervalMs: intVar(env, "CELLAR_RECONCILE_INTERVAL_MS", 2000, 50, 3_600_000),
    logLevel: logLevel as Config["logLevel"],
  };
}
