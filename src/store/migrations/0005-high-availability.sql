-- High availability: the region's etcd cluster (Patroni's DCS), a second port per node
-- (Patroni's REST API), and the secrets of each HA cluster.

-- One etcd member per host at most; the agent runs it like an instance.
CREATE TABLE dcs_members (
  id text PRIMARY KEY,
  region text NOT NULL,
  host_id text NOT NULL UNIQUE REFERENCES hosts (id),
  name text NOT NULL,
  spec jsonb NOT NULL,
  spec_generation integer NOT NULL DEFAULT 1,
  observed_generation integer NOT NULL DEFAULT 0,
  status text NOT NULL DEFAULT 'booting'
    CHECK (status IN ('booting', 'running', 'restarting', 'stopped', 'removing', 'removed', 'failed')),
  status_message text NOT NULL DEFAULT '',
  observed_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (region, name)
);

-- The region's cluster: formed once, its root password kept to manage per-cluster users.
CREATE TABLE dcs_clusters (
  region text PRIMARY KEY,
  token text NOT NULL,
  root_password text NOT NULL,
  auth_enabled boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE instances
  ADD COLUMN extra_port integer CHECK (extra_port BETWEEN 30000 AND 39999),
  ADD CONSTRAINT instances_host_extra_port UNIQUE (host_id, extra_port);

-- Secrets of an HA cluster: its DCS user, replication and rewind roles, REST API user.
CREATE TABLE database_ha_secrets (
  database_id text PRIMARY KEY REFERENCES databases (id) ON DELETE CASCADE,
  dcs_user text NOT NULL,
  dcs_password text NOT NULL,
  replication_password text NOT NULL,
  rewind_password text NOT NULL,
  rest_password text NOT NULL,
  dcs_user_created boolean NOT NULL DEFAULT false
);
