-- Foundation: identity, apps, collaborators, databases, operations, events, reconcile queue.
-- Ids are prefixed random strings made by the application (us-, tok-, app-, col-, ad-, op-, ev-).

CREATE TABLE settings (
  key text PRIMARY KEY,
  value text NOT NULL
);

CREATE TABLE users (
  id text PRIMARY KEY,
  username text NOT NULL UNIQUE CHECK (username ~ '^[a-z][a-z0-9_-]{1,47}$'),
  email text NOT NULL UNIQUE CHECK (length(email) BETWEEN 3 AND 254),
  fullname text NOT NULL DEFAULT '',
  is_admin boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
  id text PRIMARY KEY,
  user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  name text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  -- Only the SHA-256 of the secret is stored.
  token_hash bytea NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now(),
  issued_at timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

-- Apps and Dedicated databases are both addressed by name under /v1/apps/:name, so their
-- names share one namespace, guarded here rather than by a check-then-insert.
CREATE TABLE resource_names (
  name text PRIMARY KEY,
  kind text NOT NULL CHECK (kind IN ('app', 'database'))
);

CREATE TABLE apps (
  id text PRIMARY KEY,
  name text NOT NULL UNIQUE REFERENCES resource_names (name) ON UPDATE CASCADE,
  region text NOT NULL,
  owner_id text NOT NULL REFERENCES users (id),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX apps_owner ON apps (owner_id);

CREATE TABLE databases (
  id text PRIMARY KEY,
  model text NOT NULL CHECK (model IN ('shared', 'dedicated')),
  -- Shared databases are add-ons of an app; Dedicated ones stand alone with a name of their own.
  app_id text REFERENCES apps (id),
  name text,
  resource_id text NOT NULL UNIQUE,
  owner_id text NOT NULL REFERENCES users (id),
  project_id text,
  region text NOT NULL,
  provider_id text NOT NULL,
  engine text NOT NULL,
  -- Desired state (spec), written by the API.
  plan_id text NOT NULL,
  ip_range cidr,
  generation integer NOT NULL DEFAULT 1 CHECK (generation >= 1),
  delete_requested_at timestamptz,
  -- Observed state (status), written by reconcilers only.
  observed_generation integer NOT NULL DEFAULT 0,
  phase text NOT NULL DEFAULT 'provisioning'
    CHECK (phase IN ('provisioning', 'running', 'updating', 'deleting', 'deleted', 'suspended', 'failed')),
  phase_reason text NOT NULL DEFAULT '',
  current_plan_id text,
  deleted_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CHECK ((model = 'shared') = (app_id IS NOT NULL)),
  CHECK ((model = 'dedicated') = (name IS NOT NULL)),
  CHECK (observed_generation <= generation)
);
CREATE UNIQUE INDEX databases_live_name ON databases (name) WHERE deleted_at IS NULL AND name IS NOT NULL;
CREATE INDEX databases_app ON databases (app_id) WHERE deleted_at IS NULL;
CREATE INDEX databases_owner ON databases (owner_id) WHERE deleted_at IS NULL;

-- A collaborator belongs to exactly one scope: an app (Shared databases inherit it) or a
-- Dedicated database (its own list).
CREATE TABLE collaborators (
  id text PRIMARY KEY,
  app_id text REFERENCES apps (id) ON DELETE CASCADE,
  database_id text REFERENCES databases (id) ON DELETE CASCADE,
  email text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
  user_id text REFERENCES users (id) ON DELETE CASCADE,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted')),
  is_limited boolean NOT NULL DEFAULT false,
  invitation_token_hash bytea UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now(),
  CHECK ((app_id IS NULL) <> (database_id IS NULL)),
  -- Dedicated databases know only the Collaborator role.
  CHECK (database_id IS NULL OR NOT is_limited),
  CHECK (status = 'pending' OR user_id IS NOT NULL),
  UNIQUE (app_id, email),
  UNIQUE (database_id, email)
);
CREATE INDEX collaborators_user ON collaborators (user_id);

-- Environment of an app (Shared add-ons write theirs) or of a Dedicated database.
CREATE TABLE variables (
  id text PRIMARY KEY,
  app_id text REFERENCES apps (id) ON DELETE CASCADE,
  database_id text REFERENCES databases (id) ON DELETE CASCADE,
  name text NOT NULL CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_]*$'),
  value text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CHECK (app_id IS NOT NULL OR database_id IS NOT NULL)
);
CREATE UNIQUE INDEX variables_scope_name ON variables (coalesce(app_id, database_id), name);

CREATE TABLE operations (
  id text PRIMARY KEY,
  app_id text,
  database_id text NOT NULL REFERENCES databases (id),
  type text NOT NULL,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'error')),
  -- The spec generation whose convergence finishes this operation.
  target_generation integer NOT NULL,
  error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz
);
CREATE INDEX operations_database ON operations (database_id, created_at);

CREATE TABLE events (
  id text PRIMARY KEY,
  app_id text,
  database_id text,
  user_id text,
  type text NOT NULL,
  type_data jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_app ON events (app_id, created_at);
CREATE INDEX events_database ON events (database_id, created_at);
CREATE INDEX events_user ON events (user_id, created_at);

-- One row per database that needs a reconcile pass: the primary key de-duplicates.
-- `version` moves on every enqueue so a pass that finishes does not drop a newer request.
CREATE TABLE reconcile_queue (
  database_id text PRIMARY KEY REFERENCES databases (id) ON DELETE CASCADE,
  run_after timestamptz NOT NULL DEFAULT now(),
  version integer NOT NULL DEFAULT 1,
  attempts integer NOT NULL DEFAULT 0,
  locked_by text,
  locked_until timestamptz,
  last_message text
);
CREATE INDEX reconcile_queue_due ON reconcile_queue (run_after);
