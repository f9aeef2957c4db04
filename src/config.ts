// The only module that reads process.env. Everything else receives a Config.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { checkPublicNetwork, NODE_LINK_RANGE } from "./domain/network-rules.ts";
import { privateNetworkProblem } from "./domain/private-network.ts";

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
  /**
   * The controller's master key (0600, made at first start): it seals the nodes' encryption
   * keys in the store. Controllers sharing one store must share this file.
   */
  masterKeyFile: string;
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
  /** TLS listener for host agents. */
  agentPort: number;
  /** Run the local fleet of emulated hosts with `cellar up` (all-in-one). */
  localFleet: boolean;
  /** Shared hosts may promise this many times their RAM and disk (idle databases use little). */
  sharedOvercommit: number;
  /** A host silent for this long is marked unreachable. */
  hostSilenceMs: number;
  /**
   * HA failover settings of new clusters: "cellar" (ttl 10 s, the agent releases a dead
   * node's leader key at once) or "patroni-defaults" (ttl 30 s, no release: the baseline of
   * the failover benchmark).
   */
  haTiming: "cellar" | "patroni-defaults";
  /** The public side of the embedded mode's networks (domain/network-rules.ts publicLayout). */
  publicNetwork: string;
  /** The regions' private networks of the embedded mode (domain/private-network.ts). */
  privateNetwork: string;
  /** Continuous backups (pgBackRest): repositories, full-backup period, RPO bound, checks. */
  backup: BackupConfig;
  logLevel: "debug" | "info" | "warn" | "error";
}

export interface BackupConfig {
  /** Continuous backups of new and updated single-node databases (CELLAR_BACKUPS=off: none). */
  enabled: boolean;
  /** Root of the posix repositories: <repo>/<region>/<database id>, one per database. */
  repoPath: string;
  /** A new full backup once the newest is this old (weekly by default). */
  fullEveryHours: number;
  /** archive_timeout of every node: the longest a commit waits before its WAL is archived. */
  archiveTimeoutS: number;
  /** How often agents check each node's archive (the recovery window's freshness). */
  checkEveryS: number;
  /** Every full backup restored into a scratch instance and checked (CELLAR_BACKUP_VERIFY=off: not). */
  verify: boolean;
  /** The S3-compatible repository of new databases' continuous backups (null: posix, repoPath). */
  s3: S3RepoConfig | null;
}

/** An S3-compatible bucket (CELLAR_BACKUP_S3_*): pgBackRest's repo1-type=s3. */
export interface S3RepoConfig {
  /** Host name (or address) of the endpoint; pgBackRest always speaks TLS to it. */
  endpoint: string;
  port: number;
  bucket: string;
  region: string;
  accessKey: string;
  secretKey: string;
  /** "path" for MinIO-like servers (bucket in the path), "host" for AWS (bucket.endpoint). */
  uriStyle: "host" | "path";
  verifyTls: boolean;
  /** A CA bundle (PEM) for a private endpoint, at the same path on every host. */
  caFile: string | null;
  /** Where in the bucket the repositories go: <prefix>/<region>/<database id>. */
  prefix: string;
}

export class ConfigError extends Error {}

function haTimingVar(raw: string | undefined): Config["haTiming"] {
  const value = raw || "cellar";
  if (value !== "cellar" && value !== "patroni-defaults") {
    throw new ConfigError(`CELLAR_HA_TIMING must be "cellar" or "patroni-defaults", not "${value}"`);
  }
  return value;
}

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
  const duplicate = names.find((n, i) => names.indexOf(n) !== i);
  if (duplicate) throw new ConfigError(`CELLAR_REGIONS names ${duplicate} twice: name each region once`);
  return names.map((name) => {
    if (!REGION_NAME.test(name)) {
      throw new ConfigError(
        `CELLAR_REGIONS: "${name}" is not a valid region name (lowercase letters, digits, -)`,
      );
    }
    return { name, displayName: name, azs: [`${name}-a`, `${name}-b`, `${name}-c`] };
  });
}

function publicUrlVar(raw: string | undefined, fallback: string): string {
  if (!raw) return fallback;
  let url: URL | undefined;
  try {
    url = new URL(raw);
  } catch {
    url = undefined;
  }
  // Region discovery appends paths to it: a query, fragment or other scheme would break them.
  if (!url || !/^https?:$/.test(url.protocol) || url.search || url.hash) {
    throw new ConfigError(
      `CELLAR_PUBLIC_URL=${raw} is invalid: expected an http(s) URL without query, such as https://cellar.example.com`,
    );
  }
  return raw.replace(/\/+$/, "");
}

function databaseUrlVar(raw: string | undefined): string | undefined {
  if (!raw) return undefined;
  if (!/^postgres(ql)?:\/\//.test(raw)) {
    // Why: the URL may hold a password, so the message never repeats it.
    throw new ConfigError(
      "CELLAR_DATABASE_URL is invalid: expected postgresql://user:password@host:port/database",
    );
  }
  return raw;
}

function jwtSecretVar(raw: string | undefined): string | undefined {
  if (!raw) return undefined;
  // A short HS256 key can be brute-forced offline from any bearer token.
  if (raw.length < 32) {
    throw new ConfigError(
      `CELLAR_JWT_SECRET is too short (${raw.length} characters): use at least 32, or unset it to have one generated`,
    );
  }
  return raw;
}

const dataDirOf = (env: NodeJS.ProcessEnv): string =>
  path.resolve(env.CELLAR_DATA_DIR || path.join(REPO_ROOT, ".cellar"));

function backupConfig(env: NodeJS.ProcessEnv, dataDir: string): BackupConfig {
  const repo = env.CELLAR_BACKUP_REPO;
  // Agents of every host run pgBackRest against this path: a relative one would differ per process.
  if (repo && !path.isAbsolute(repo)) {
    throw new ConfigError(`CELLAR_BACKUP_REPO=${repo} is invalid: expected an absolute path`);
  }
  return {
    enabled: (env.CELLAR_BACKUPS ?? "on") !== "off",
    repoPath: repo ? path.resolve(repo) : path.join(dataDir, "backups"),
    fullEveryHours: intVar(env, "CELLAR_BACKUP_FULL_EVERY_HOURS", 168, 1, 24 * 365),
    archiveTimeoutS: intVar(env, "CELLAR_BACKUP_ARCHIVE_TIMEOUT_S", 30, 1, 3600),
    checkEveryS: intVar(env, "CELLAR_BACKUP_CHECK_EVERY_S", 60, 1, 3600),
    verify: (env.CELLAR_BACKUP_VERIFY ?? "on") !== "off",
    s3: s3RepoConfig(env),
  };
}

const S3_VARS = {
  endpoint: "CELLAR_BACKUP_S3_ENDPOINT",
  bucket: "CELLAR_BACKUP_S3_BUCKET",
  region: "CELLAR_BACKUP_S3_REGION",
  accessKey: "CELLAR_BACKUP_S3_ACCESS_KEY",
  secretKey: "CELLAR_BACKUP_S3_SECRET_KEY",
} as const;
const S3_OPTIONAL_VARS = [
  "CELLAR_BACKUP_S3_URI_STYLE",
  "CELLAR_BACKUP_S3_VERIFY_TLS",
  "CELLAR_BACKUP_S3_CA_FILE",
  "CELLAR_BACKUP_S3_PREFIX",
];

/** null unless a CELLAR_BACKUP_S3_* variable is set; then the whole set must be complete. */
function s3RepoConfig(env: NodeJS.ProcessEnv): S3RepoConfig | null {
  const names = [...Object.values(S3_VARS), ...S3_OPTIONAL_VARS];
  if (!names.some((n) => env[n])) return null;
  const missing = Object.values(S3_VARS).filter((n) => !env[n]);
  if (missing.length > 0) {
    throw new ConfigError(
      `S3 backup repository: ${missing.join(", ")} must be set too (endpoint, bucket, region, access key and secret key go together)`,
    );
  }
  const value = (k: keyof typeof S3_VARS) => {
    const v = env[S3_VARS[k]]!;
    // pgBackRest reads one option per line: a line break would smuggle in another option.
    if (/[\r\n]/.test(v)) throw new ConfigError(`${S3_VARS[k]} cannot contain line breaks`);
    return v;
  };
  const cfg: S3RepoConfig = {
    ...s3Endpoint(value("endpoint")),
    bucket: s3Bucket(value("bucket")),
    region: s3Region(value("region")),
    accessKey: value("accessKey"),
    secretKey: value("secretKey"),
    uriStyle: s3UriStyle(env.CELLAR_BACKUP_S3_URI_STYLE),
    verifyTls: onOffVar("CELLAR_BACKUP_S3_VERIFY_TLS", env.CELLAR_BACKUP_S3_VERIFY_TLS, true),
    caFile: s3CaFile(env.CELLAR_BACKUP_S3_CA_FILE),
    prefix: s3Prefix(env.CELLAR_BACKUP_S3_PREFIX),
  };
  if (cfg.caFile && !cfg.verifyTls) {
    throw new ConfigError(
      "CELLAR_BACKUP_S3_CA_FILE is set but CELLAR_BACKUP_S3_VERIFY_TLS=off: unset one (the CA is only used to verify)",
    );
  }
  return cfg;
}

function s3Endpoint(raw: string): { endpoint: string; port: number } {
  const m = /^([A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(raw);
  const port = m?.[2] === undefined ? 443 : Number(m[2]);
  if (!m || port < 1 || port > 65535) {
    throw new ConfigError(
      `CELLAR_BACKUP_S3_ENDPOINT=${raw} is invalid: expected host[:port] without a scheme, such as s3.eu-west-3.amazonaws.com or minio.internal:9000 (always HTTPS)`,
    );
  }
  return { endpoint: m[1]!, port };
}

function s3Bucket(raw: string): string {
  // S3's naming rules; dots would break the TLS name of host-style URIs, but are allowed.
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(raw) || raw.includes("..")) {
    throw new ConfigError(
      `CELLAR_BACKUP_S3_BUCKET=${raw} is invalid: expected 3 to 63 lowercase letters, digits, dots or hyphens, starting and ending with a letter or digit`,
    );
  }
  return raw;
}

function s3Region(raw: string): string {
  if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(raw)) {
    throw new ConfigError(
      `CELLAR_BACKUP_S3_REGION=${raw} is invalid: expected a region name such as eu-west-3 (lowercase letters, digits, hyphens; us-east-1 for most MinIO servers)`,
    );
  }
  return raw;
}

function s3UriStyle(raw: string | undefined): S3RepoConfig["uriStyle"] {
  const value = raw || "host";
  if (value !== "host" && value !== "path") {
    throw new ConfigError(
      `CELLAR_BACKUP_S3_URI_STYLE=${value} is invalid: expected "host" (bucket.endpoint, AWS) or "path" (endpoint/bucket, MinIO-like servers)`,
    );
  }
  return value;
}

function onOffVar(name: string, raw: string | undefined, fallback: boolean): boolean {
  if (raw === undefined || raw === "") return fallback;
  if (raw !== "on" && raw !== "off") throw new ConfigError(`${name}=${raw} is invalid: expected on or off`);
  return raw === "on";
}

function s3CaFile(raw: string | undefined): string | null {
  if (!raw) return null;
  // Agents hand it to pgBackRest on every host: a relative path would differ per process.
  if (!path.isAbsolute(raw) || /[\r\n]/.test(raw)) {
    throw new ConfigError(
      `CELLAR_BACKUP_S3_CA_FILE=${raw} is invalid: expected an absolute path to a PEM file`,
    );
  }
  // The controller runs pgBackRest with it too (a deleted database's stanza): a typo shows now.
  if (!fs.existsSync(raw)) {
    throw new ConfigError(
      `CELLAR_BACKUP_S3_CA_FILE=${raw} does not exist: expected a PEM file of the endpoint's CA`,
    );
  }
  return path.resolve(raw);
}

function s3Prefix(raw: string | undefined): string {
  const value = raw || "/cellar";
  const clean = `/${value.replace(/^\/+|\/+$/g, "")}`.replace(/^\/$/, "");
  if (!/^(\/[A-Za-z0-9._-]+)*$/.test(clean) || /\/\.\.?(\/|$)/.test(clean)) {
    throw new ConfigError(
      `CELLAR_BACKUP_S3_PREFIX=${value} is invalid: expected a path in the bucket such as /cellar (letters, digits, . _ - and /)`,
    );
  }
  return clean;
}

function publicNetworkVar(raw: string | undefined): string {
  // 198.18.0.0/15 is reserved for benchmarks (RFC 2544): never someone else's real addresses.
  const value = raw || "198.18.0.0/16";
  const problem = checkPublicNetwork(value);
  if (problem) throw new ConfigError(`CELLAR_PUBLIC_NETWORK=${value} is invalid: ${problem}`);
  return value;
}

function privateNetworkVar(raw: string | undefined, publicRaw: string | undefined): string {
  const value = raw || "172.30.0.0/16";
  const problem =
    checkPublicNetwork(value) ??
    privateNetworkProblem(value, [
      ["CELLAR_PUBLIC_NETWORK", publicNetworkVar(publicRaw)],
      ["the nodes' links", NODE_LINK_RANGE],
    ]);
  if (problem) throw new ConfigError(`CELLAR_PRIVATE_NETWORK=${value} is invalid: ${problem}`);
  return value;
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
    dataDir: dataDirOf(env),
    databaseUrl: databaseUrlVar(env.CELLAR_DATABASE_URL),
    masterKeyFile: path.resolve(env.CELLAR_MASTER_KEY_FILE || path.join(dataDirOf(env), "master-key")),
    listenHost,
    port,
    publicUrl: publicUrlVar(env.CELLAR_PUBLIC_URL, `http://${listenHost}:${port}`),
    adminToken: env.CELLAR_ADMIN_TOKEN || undefined,
    rateLimitPerMinute: intVar(env, "CELLAR_RATE_LIMIT_PER_MINUTE", 60, 1, 1_000_000),
    regions,
    defaultRegion,
    catalogPath: path.resolve(env.CELLAR_CATALOG || path.join(REPO_ROOT, "config", "catalog.json")),
    jwtSecret: jwtSecretVar(env.CELLAR_JWT_SECRET),
    reconcileIntervalMs: intVar(env, "CELLAR_RECONCILE_INTERVAL_MS", 2000, 50, 3_600_000),
    agentPort: intVar(env, "CELLAR_AGENT_PORT", 5443, 1, 65535),
    localFleet: (env.CELLAR_LOCAL_FLEET ?? "on") !== "off",
    sharedOvercommit: intVar(env, "CELLAR_SHARED_OVERCOMMIT", 8, 1, 100),
    hostSilenceMs: intVar(env, "CELLAR_HOST_SILENCE_MS", 10_000, 1000, 3_600_000),
    haTiming: haTimingVar(env.CELLAR_HA_TIMING),
    publicNetwork: publicNetworkVar(env.CELLAR_PUBLIC_NETWORK),
    privateNetwork: privateNetworkVar(env.CELLAR_PRIVATE_NETWORK, env.CELLAR_PUBLIC_NETWORK),
    backup: backupConfig(env, dataDirOf(env)),
    logLevel: logLevel as Config["logLevel"],
  };
}

/** What the `cellar` client reads from its environment (the server's settings are above). */
export interface ClientEnv {
  apiUrl: string | undefined;
  token: string | undefined;
  configDir: string | undefined;
  xdgConfigHome: string | undefined;
}

export function loadClientEnv(env: NodeJS.ProcessEnv = process.env): ClientEnv {
  return {
    apiUrl: env.CELLAR_API_URL || undefined,
    token: env.CELLAR_TOKEN || undefined,
    configDir: env.CELLAR_CONFIG_DIR || undefined,
    xdgConfigHome: env.XDG_CONFIG_HOME || undefined,
  };
}
