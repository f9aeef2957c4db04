// Removing a deleted database's stanza from a repository no host reaches as a directory (S3):
// pgBackRest's own stanza-delete, run from a throwaway config with no server behind it.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { ensureDir, postgresUser, writeFileAtomic } from "../command.ts";
import { PgBackRest } from "./pgbackrest.ts";
import { renderPgBackRestConf } from "./pgbackrest-config.ts";
import type { NodeBackupSpec } from "./types.ts";

export type StanzaToRemove = Pick<NodeBackupSpec, "stanza" | "repoPath" | "s3" | "cipherPass">;

/**
 * Deletes the stanza's archive and backups (idempotent: a missing stanza is no error). The
 * config (it holds the bucket's secret and the key) lives in a 0600 file of a private
 * directory removed afterwards, whatever happens.
 */
export async function removeStanza(target: StanzaToRemove, signal?: AbortSignal): Promise<void> {
  const owner = postgresUser();
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cellar-stanza-delete-"));
  try {
    const paths = {
      configFile: path.join(dir, "pgbackrest.conf"),
      lockDir: path.join(dir, "lock"),
      logDir: path.join(dir, "log"),
    };
    const pgDir = path.join(dir, "pg");
    await ensureDir(dir, 0o700, owner);
    for (const d of [paths.lockDir, paths.logDir, pgDir]) await ensureDir(d, 0o700, owner);
    const spec: NodeBackupSpec = {
      ...target,
      retentionDays: 9999,
      fullEveryHours: 168,
      archiveTimeoutS: 60,
      checkEveryS: 60,
    };
    const conf = renderPgBackRestConf(spec, { dataDir: pgDir, port: 5432, socketDir: dir }, paths);
    await writeFileAtomic(paths.configFile, conf, 0o600, owner);
    await new PgBackRest(paths.configFile, target.stanza).stanzaDelete(pgDir, signal);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}
