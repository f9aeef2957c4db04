// Rendering of a node's pgBackRest configuration and of the server settings that archive
// into it. Pure: the agent writes the files.
import type { NodeBackupSpec, NodeSeedSpec } from "./types.ts";

/** Where a node's pgBackRest files live (all owned by the postgres OS user). */
export interface NodeBackupPaths {
  /** <instance dir>/backup/pgbackrest.conf (0600: it holds the cipher pass). */
  configFile: string;
  /** Lock files of pgBackRest's commands on this node. */
  lockDir: string;
  logDir: string;
}

export interface StanzaNode {
  dataDir: string;
  port: number;
  socketDir: string;
}

/** The server's archive settings (pg-config.ts renders them into cellar.conf). */
export interface ArchiveSettings {
  command: string;
  timeoutS: number;
}

/** Compression of WAL and backups: lz4 costs a Starter's quarter vCPU the least. */
const COMPRESS_TYPE = "lz4";

/** Quotes one word for /bin/sh (archive_command and restore_command run through it). */
export function shellWord(word: string): string {
  return /^[A-Za-z0-9_./=%:-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

const confValue = (v: string): string => {
  // pgBackRest reads one option per line: a newline would inject another option.
  if (/[\r\n]/.test(v)) throw new Error("pgBackRest option values cannot contain line breaks");
  return v;
};

export function renderPgBackRestConf(spec: NodeBackupSpec, node: StanzaNode, paths: NodeBackupPaths): string {
  const global: Array<[string, string]> = [
    ...repoOptions(spec),
    ["repo1-cipher-type", "aes-256-cbc"],
    ["repo1-cipher-pass", spec.cipherPass],
    // Time-based: every full backup younger than the window is kept, plus the newest older one.
    ["repo1-retention-full-type", "time"],
    ["repo1-retention-full", String(spec.retentionDays)],
    ["compress-type", COMPRESS_TYPE],
    ["start-fast", "y"],
    ["process-max", "1"],
    ["log-path", paths.logDir],
    ["lock-path", paths.lockDir],
    ["log-level-console", "warn"],
    ["log-level-stderr", "error"],
    ["log-level-file", "off"],
  ];
  const stanza: Array<[string, string]> = [
    ["pg1-path", node.dataDir],
    ["pg1-port", String(node.port)],
    ["pg1-socket-path", node.socketDir],
    ["pg1-user", "postgres"],
  ];
  const lines = (entries: Array<[string, string]>) => entries.map(([k, v]) => `${k}=${confValue(v)}`);
  return [
    "# Written by Cellar from the node's spec; edits are overwritten.",
    "[global]",
    ...lines(global),
    "",
    `[${confValue(spec.stanza)}]`,
    ...lines(stanza),
    "",
  ].join("\n");
}

/** repo1's type and location: a posix directory, or a path in an S3-compatible bucket. */
export function repoOptions(spec: Pick<NodeBackupSpec, "repoPath" | "s3">): Array<[string, string]> {
  const s3 = spec.s3;
  if (!s3) {
    return [
      ["repo1-type", "posix"],
      ["repo1-path", spec.repoPath],
    ];
  }
  return [
    ["repo1-type", "s3"],
    ["repo1-path", spec.repoPath],
    ["repo1-s3-endpoint", s3.endpoint],
    ["repo1-storage-port", String(s3.port)],
    ["repo1-s3-bucket", s3.bucket],
    ["repo1-s3-region", s3.region],
    ["repo1-s3-uri-style", s3.uriStyle],
    ["repo1-s3-key-type", "shared"],
    ["repo1-s3-key", s3.accessKey],
    ["repo1-s3-key-secret", s3.secretKey],
    ...(s3.verifyTls ? [] : [["repo1-storage-verify-tls", "n"] as [string, string]]),
    ...(s3.caFile ? [["repo1-storage-ca-file", s3.caFile] as [string, string]] : []),
  ];
}

/**
 * The spec of a fork's seed config: the source's stanza, repository and key (its own bucket
 * settings, which may differ from the fork's), never its retention (no backup runs with it).
 */
export function seedSourceSpec(spec: NodeBackupSpec, seed: NodeSeedSpec): NodeBackupSpec {
  const own = { ...spec };
  delete own.s3;
  return {
    ...own,
    stanza: seed.stanza,
    repoPath: seed.repoPath,
    cipherPass: seed.cipherPass,
    retentionDays: 9999,
    ...(seed.s3 ? { s3: seed.s3 } : {}),
  };
}

/** Where a database's repository is, as the store keeps it (continuous_backups.repo_path). */
export type RepoLocation = { kind: "posix"; path: string } | { kind: "s3"; bucket: string; path: string };

const S3_LOCATION = /^s3:\/\/([a-z0-9][a-z0-9.-]+[a-z0-9])(\/.*)$/;

/** The store's form of an S3 root: s3://<bucket><prefix> (repositories go under it). */
export function s3RepoRoot(bucket: string, prefix: string): string {
  return `s3://${bucket}${prefix}`;
}

export function parseRepoLocation(repoPath: string): RepoLocation {
  if (!repoPath.startsWith("s3://")) return { kind: "posix", path: repoPath };
  const m = S3_LOCATION.exec(repoPath);
  if (!m) throw new Error(`invalid S3 repository location ${repoPath}: expected s3://<bucket>/<path>`);
  return { kind: "s3", bucket: m[1]!, path: m[2]! };
}

/** The pgbackrest invocation of this node: its own config file and stanza. */
export function pgBackRestArgs(configFile: string, stanza: string): string[] {
  return [`--config=${configFile}`, `--stanza=${stanza}`];
}

export function archiveSettings(spec: NodeBackupSpec, paths: NodeBackupPaths): ArchiveSettings {
  const words = ["pgbackrest", ...pgBackRestArgs(paths.configFile, spec.stanza), "archive-push", "%p"];
  return { command: words.map(shellWord).join(" "), timeoutS: spec.archiveTimeoutS };
}

/**
 * restore_command of a restored data dir. pgBackRest would name the directory it restored
 * into, which is renamed into place afterwards: this one names the node's own config.
 */
export function restoreCommand(configFile: string, stanza: string, pg1Path?: string): string {
  // archive-get refuses a server whose data dir is not the config's pg1-path (a scratch copy).
  const dir = pg1Path ? [`--pg1-path=${pg1Path}`] : [];
  const words = ["pgbackrest", ...pgBackRestArgs(configFile, stanza), ...dir, "archive-get", "%f"];
  return `${words.map(shellWord).join(" ")} "%p"`;
}
