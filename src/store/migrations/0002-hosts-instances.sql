-- Hosts (machines or emulated machines running an agent) and the instances placed on them.

CREATE TABLE hosts (
  id text PRIMARY KEY,
  name text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
  region text NOT NULL,
  az text NOT NULL,
  pool text NOT NULL CHECK (pool IN ('shared', 'dedicated')),
  -- Where the host's instances and gateways listen.
  address inet NOT NULL,
  capacity_vcpu numeric NOT NULL CHECK (capacity_vcpu > 0),
  capacity_ram_mb integer NOT NULL CHECK (capacity_ram_mb > 0),
  capacity_disk_gb integer NOT NULL CHECK (capacity_disk_gb > 0),
  -- The agent's credential: only its SHA-256 is kept.
  token_hash bytea NOT NULL UNIQUE,
  -- What the host's isolation runtime can enforce, as the agent reported it.
  isolation jsonb NOT NULL DEFAULT '{}',
  status text NOT NULL DEFAULT 'registered' CHECK (status IN ('registered', 'ready', 'unreachable')),
  status_reason text NOT NULL DEFAULT '',
  last_heartbeat_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE instances (
  id text PRIMARY KEY,
  database_id text NOT NULL REFERENCES databases (id),
  host_id text NOT NULL REFERENCES hosts (id),
  kind text NOT NULL CHECK (kind IN ('node', 'gateway')),
  ordinal integer NOT NULL DEFAULT 0,
  port integer NOT NULL CHECK (port BETWEEN 1024 AND 65535),
  -- Desired state, written by the controller's reconciler.
  spec jsonb NOT NULL,
  spec_generation integer NOT NULL DEFAULT 1,
  desired_state text NOT NULL DEFAULT 'running' CHECK (desired_state IN ('running', 'stopped', 'deleted')),
  -- Observed state, written from the agent's reports.
  observed_generation integer NOT NULL DEFAULT 0,
  status text NOT NULL DEFAULT 'booting'
    CHECK (status IN ('booting', 'running', 'restarting', 'stopped', 'removing', 'removed', 'failed')),
  status_message text NOT NULL DEFAULT '',
  role text NOT NULL DEFAULT '',
  -- Resource usage read on the host: {cpu_seconds, memory_bytes, memory_limit_bytes, disk_bytes}.
  usage jsonb NOT NULL DEFAULT '{}',
  observed_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  -- Two instances never share a port on a host, whatever two controllers decide.
  UNIQUE (host_id, port),
  UNIQUE (database_id, kind, ordinal)
);
CREATE INDEX instances_host ON instances (host_id);

-- Per-database secrets the control plane keeps to hand to agents (protected user's password).
CREATE TABLE database_credentials (
  database_id text PRIMARY KEY REFERENCES databases (id) ON DELETE CASCADE,
  username text NOT NULL,
  password text NOT NULL,
  dbname text NOT NULL
);
