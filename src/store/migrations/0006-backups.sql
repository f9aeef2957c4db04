-- Continuous backups (pgBackRest): one stanza per database in its own repository, encrypted
-- with its own key; the backups its node reported; point-in-time restores asked for.

CREATE TABLE continuous_backups (
  database_id text PRIMARY KEY REFERENCES databases (id),
  -- Spec, fixed at the first placement.
  stanza text NOT NULL UNIQUE CHECK (stanza ~ '^[a-z0-9][a-z0-9-]{1,63}$'),
  repo_path text NOT NULL UNIQUE CHECK (repo_path LIKE '/%'),
  cipher_pass text NOT NULL CHECK (length(cipher_pass) >= 32),
  retention_days integer NOT NULL CHECK (retention_days > 0),
  -- Status, from the reports of the database's node.
  timeline integer,
  earliest_recoverable_at timestamptz,
  latest_recoverable_at timestamptz,
  archive_error text,
  last_failure text,
  last_failure_at timestamptz,
  reported_at timestamptz,
  -- Health of the archive as last told in an event: healthy, delayed (> 12 h), stale (> 24 h).
  health text CHECK (health IN ('healthy', 'delayed', 'stale')),
  -- Set once the repository is gone with its database.
  repo_removed_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  CHECK (earliest_recoverable_at <= latest_recoverable_at)
);

-- Backup sets seen in a repository; a set expired by retention keeps its row.
CREATE TABLE base_backups (
  database_id text NOT NULL REFERENCES continuous_backups (database_id),
  label text NOT NULL,
  type text NOT NULL CHECK (type IN ('full', 'diff', 'incr')),
  timeline integer NOT NULL CHECK (timeline >= 1),
  started_at timestamptz NOT NULL,
  stopped_at timestamptz NOT NULL,
  size_bytes bigint NOT NULL CHECK (size_bytes >= 0),
  repo_size_bytes bigint NOT NULL CHECK (repo_size_bytes >= 0),
  reason text,
  expired_at timestamptz,
  recorded_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (database_id, label),
  CHECK (started_at <= stopped_at)
);

CREATE TABLE pitr_restores (
  id text PRIMARY KEY,
  database_id text NOT NULL REFERENCES databases (id),
  operation_id text NOT NULL UNIQUE REFERENCES operations (id),
  target_time timestamptz NOT NULL,
  user_id text,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'error')),
  error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  CHECK ((status = 'pending') = (finished_at IS NULL))
);
-- One restore at a time per database, whatever two API calls decide at once.
CREATE UNIQUE INDEX pitr_restores_one_pending ON pitr_restores (database_id) WHERE status = 'pending';
