-- Continuous backups in an S3-compatible bucket (CELLAR_BACKUP_S3_*): a repository's location
-- is an absolute posix path, or s3://<bucket>/<path> for one in a bucket.
ALTER TABLE continuous_backups DROP CONSTRAINT continuous_backups_repo_path_check;
ALTER TABLE continuous_backups ADD CONSTRAINT continuous_backups_repo_path_check
  CHECK (repo_path LIKE '/%' OR repo_path ~ '^s3://[a-z0-9][a-z0-9.-]+[a-z0-9]/');
