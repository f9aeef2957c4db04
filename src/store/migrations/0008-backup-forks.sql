-- Forks: databases whose first data is another database's backups at a point in time.
CREATE TABLE database_seeds (
  database_id text PRIMARY KEY REFERENCES databases (id),
  source_database_id text NOT NULL REFERENCES databases (id),
  target_time timestamptz NOT NULL,
  -- The source's timeline whose backups reach the target (restores never cross timelines).
  source_timeline integer NOT NULL CHECK (source_timeline >= 1),
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done')),
  created_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  CHECK (database_id <> source_database_id),
  CHECK ((status = 'pending') = (finished_at IS NULL))
);
-- The source's repository must outlive every pending fork.
CREATE INDEX database_seeds_source ON database_seeds (source_database_id) WHERE status = 'pending';
