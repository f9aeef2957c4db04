-- Verified backups: each full backup is restored into a scratch instance and read by the
-- agent of its database's node; the verdict, as the node reported it.
ALTER TABLE base_backups
  ADD COLUMN verification_status text NOT NULL DEFAULT 'pending'
    CHECK (verification_status IN ('pending', 'verified', 'failed')),
  -- What was checked, or why it failed.
  ADD COLUMN verification_detail text,
  ADD COLUMN verification_at timestamptz,
  ADD CONSTRAINT base_backups_verification_when
    CHECK ((verification_status = 'pending') = (verification_at IS NULL));
