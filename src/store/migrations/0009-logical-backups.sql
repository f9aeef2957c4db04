-- Logical backups of Shared databases (pg_dump, reference §2.8): the daily schedule of each
-- database, and every backup taken (periodic or manual) with the state of its dump job.

-- No row: the defaults (enabled, at 00:00 UTC, in force since the database was created).
CREATE TABLE logical_backup_schedules (
  database_id text PRIMARY KEY REFERENCES databases (id),
  enabled boolean NOT NULL DEFAULT true,
  -- Hours (UTC) of the day a periodic backup starts; the reference allows several.
  hours integer[] NOT NULL CHECK (
    cardinality(hours) BETWEEN 1 AND 24
    AND array_position(hours, NULL) IS NULL
    AND hours <@ '{0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23}'::integer[]
  ),
  -- Slots before this moment are never taken (enabling at 15:00 does not back up "00:00 today").
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE logical_backups (
  id text PRIMARY KEY CHECK (id ~ '^bkp-[0-9a-f]{20}$'),
  database_id text NOT NULL REFERENCES databases (id),
  method text NOT NULL CHECK (method IN ('periodic', 'manual')),
  -- The reference's name: <YYYYMMDDHHMMSS>_<resource id>; the download is <name>.tar.gz.
  name text NOT NULL,
  -- A periodic backup's scheduled hour: one backup per database and slot, whatever two
  -- controllers decide at once.
  slot timestamptz,
  status text NOT NULL DEFAULT 'scheduled' CHECK (status IN ('scheduled', 'running', 'done', 'error')),
  -- The archive, under <backup repo>/<region>/logical/<database id>/ (named after the id).
  file_path text NOT NULL UNIQUE CHECK (file_path LIKE '/%'),
  size_bytes bigint CHECK (size_bytes >= 0),
  -- The dump job: which try this is, who runs it, and until when its runner counts as alive.
  attempt integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
  host_id text REFERENCES hosts (id),
  instance_id text,
  source_role text,
  lease_until timestamptz,
  progress_bytes bigint,
  not_before timestamptz NOT NULL DEFAULT now(),
  error text,
  user_id text,
  created_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz,
  finished_at timestamptz,
  -- Evicted by retention, or its database deleted: hidden, its file removed, then the row.
  expired_at timestamptz,
  CHECK ((method = 'periodic') = (slot IS NOT NULL)),
  CHECK (status <> 'running' OR (host_id IS NOT NULL AND lease_until IS NOT NULL AND instance_id IS NOT NULL)),
  CHECK ((status IN ('done', 'error')) = (finished_at IS NOT NULL)),
  CHECK (status <> 'done' OR size_bytes IS NOT NULL)
);
CREATE UNIQUE INDEX logical_backups_slot ON logical_backups (database_id, slot) WHERE method = 'periodic';
-- One manual backup waiting or running per database: a second request is refused, not queued.
CREATE UNIQUE INDEX logical_backups_one_manual ON logical_backups (database_id)
  WHERE method = 'manual' AND status IN ('scheduled', 'running');
CREATE INDEX logical_backups_database ON logical_backups (database_id, created_at);
CREATE INDEX logical_backups_active ON logical_backups (status) WHERE status IN ('scheduled', 'running');
CREATE INDEX logical_backups_expired ON logical_backups (expired_at) WHERE expired_at IS NOT NULL;
