// Verification of continuous backups' full backups: the verdicts nodes report, and the
// backups listed with them for the database API.
import type { Queryable } from "./db.ts";

export interface VerificationVerdict {
  label: string;
  status: "verified" | "failed";
  detail: string | null;
  at: Date;
}

/** Records verdicts of backups still pending; returns those recorded now (each once). */
export async function recordVerifications(
  q: Queryable,
  databaseId: string,
  verdicts: VerificationVerdict[],
): Promise<VerificationVerdict[]> {
  const recorded: VerificationVerdict[] = [];
  for (const v of verdicts) {
    const { rowCount } = await q.query(
      `UPDATE base_backups SET verification_status = $3, verification_detail = $4, verification_at = $5
       WHERE database_id = $1 AND label = $2 AND verification_status = 'pending'`,
      [databaseId, v.label, v.status, v.detail, v.at],
    );
    if (rowCount) recorded.push(v);
  }
  return recorded;
}

export interface ContinuousBackupView {
  label: string;
  type: "full" | "diff" | "incr";
  timeline: number;
  startedAt: Date;
  stoppedAt: Date;
  sizeBytes: number;
  repoSizeBytes: number;
  reason: string | null;
  verificationStatus: "pending" | "verified" | "failed";
  verificationDetail: string | null;
  verificationAt: Date | null;
}

/** The backup sets still in the database's repository, newest first. */
export async function listContinuousBackups(
  q: Queryable,
  databaseId: string,
): Promise<ContinuousBackupView[]> {
  const { rows } = await q.query<{
    label: string;
    type: ContinuousBackupView["type"];
    timeline: number;
    started_at: Date;
    stopped_at: Date;
    size_bytes: string;
    repo_size_bytes: string;
    reason: string | null;
    verification_status: ContinuousBackupView["verificationStatus"];
    verification_detail: string | null;
    verification_at: Date | null;
  }>(
    `SELECT * FROM base_backups WHERE database_id = $1 AND expired_at IS NULL
     ORDER BY stopped_at DESC, label DESC`,
    [databaseId],
  );
  return rows.map((r) => ({
    label: r.label,
    type: r.type,
    timeline: r.timeline,
    startedAt: r.started_at,
    stoppedAt: r.stopped_at,
    sizeBytes: Number(r.size_bytes),
    repoSizeBytes: Number(r.repo_size_bytes),
    reason: r.reason,
    verificationStatus: r.verification_status,
    verificationDetail: r.verification_detail,
    verificationAt: r.verification_at,
  }));
}
