// Where databases' continuous backups go, seen from the controller: the root under which a
// new database's repository is placed, the repository part of a node's spec (the bucket's
// settings and credentials come from the operator's configuration, never from the store),
// and the removal of a deleted database's stanza from S3.
import type { BackupConfig, S3RepoConfig } from "../config.ts";
import { parseRepoLocation, s3RepoRoot } from "../engines/postgresql/backup/pgbackrest-config.ts";
import { removeStanza } from "../engines/postgresql/backup/stanza-removal.ts";
import type { NodeBackupSpec, S3RepoSpec } from "../engines/postgresql/backup/types.ts";
import type { ContinuousBackup } from "../store/backups.store.ts";

/** New databases' repositories go under this root: s3://<bucket><prefix>, or a posix path. */
export function repoRootOf(cfg: BackupConfig): string {
  return cfg.s3 ? s3RepoRoot(cfg.s3.bucket, cfg.s3.prefix) : cfg.repoPath;
}

/**
 * The repository of a spec, from where the store says it is. A database keeps the repository
 * it was given (switching CELLAR_BACKUP_S3_* on applies to new databases; its older ones stay
 * posix); one in S3 needs the S3 settings, from which only the bucket may differ.
 */
export function repoSpecOf(
  s3: S3RepoConfig | null,
  repoPath: string,
): Pick<NodeBackupSpec, "repoPath" | "s3"> {
  const loc = parseRepoLocation(repoPath);
  if (loc.kind === "posix") return { repoPath: loc.path };
  if (!s3) {
    throw new Error(
      `the backups are in ${repoPath}, but the S3 repository is not configured (CELLAR_BACKUP_S3_ENDPOINT and the rest)`,
    );
  }
  return { repoPath: loc.path, s3: s3Spec(s3, loc.bucket) };
}

function s3Spec(s3: S3RepoConfig, bucket: string): S3RepoSpec {
  return {
    endpoint: s3.endpoint,
    port: s3.port,
    bucket,
    region: s3.region,
    uriStyle: s3.uriStyle,
    verifyTls: s3.verifyTls,
    ...(s3.caFile ? { caFile: s3.caFile } : {}),
    accessKey: s3.accessKey,
    secretKey: s3.secretKey,
  };
}

export const isS3Repository = (cb: Pick<ContinuousBackup, "repoPath">): boolean =>
  parseRepoLocation(cb.repoPath).kind === "s3";

/** Only ever the database's own stanza, in its own repository path (named after its id). */
export async function removeS3Repository(
  s3: S3RepoConfig | null,
  cb: ContinuousBackup,
  databaseId: string,
): Promise<void> {
  const loc = parseRepoLocation(cb.repoPath);
  if (loc.kind !== "s3" || !loc.path.endsWith(`/${databaseId}`) || cb.stanza !== databaseId) {
    throw new Error(`refusing to remove ${cb.repoPath}: not the repository of ${databaseId}`);
  }
  await removeStanza({ stanza: cb.stanza, cipherPass: cb.cipherPass, ...repoSpecOf(s3, cb.repoPath) });
}
