-- Network exposure and isolation: features (Force TLS, Internet access), firewall rules of
-- Dedicated databases, addresses on the public side, Dedicated databases' own networks.

-- A feature's row lives from its activation until its removal has been applied everywhere.
CREATE TABLE database_features (
  database_id text NOT NULL REFERENCES databases (id) ON DELETE CASCADE,
  name text NOT NULL CHECK (name IN ('force-ssl', 'publicly-available')),
  state text NOT NULL CHECK (state IN ('active', 'removing')),
  -- The database generation carrying the latest change: applied once every instance runs it.
  generation integer NOT NULL CHECK (generation > 0),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (database_id, name)
);

-- Allow-list entries of a Dedicated database (deny by default). Create and delete only.
CREATE TABLE firewall_rules (
  id text PRIMARY KEY,
  database_id text NOT NULL REFERENCES databases (id) ON DELETE CASCADE,
  type text NOT NULL CHECK (type IN ('custom_range', 'managed_range')),
  cidr cidr CHECK (family(cidr) = 4),
  label text CHECK (char_length(label) <= 100),
  range_id text,
  created_at timestamptz NOT NULL DEFAULT now(),
  CHECK (
    (type = 'custom_range' AND cidr IS NOT NULL AND range_id IS NULL)
    OR (type = 'managed_range' AND range_id IS NOT NULL AND cidr IS NULL AND label IS NULL)
  ),
  UNIQUE (database_id, cidr),
  UNIQUE (database_id, range_id)
);

-- Addresses on the public side: a Shared host's (its gateways publish there) or a Dedicated
-- database's own (its network's uplink); never both, never twice.
CREATE TABLE public_addresses (
  address inet PRIMARY KEY CHECK (family(address) = 4 AND masklen(address) = 32),
  host_id text UNIQUE REFERENCES hosts (id) ON DELETE CASCADE,
  database_id text UNIQUE REFERENCES databases (id) ON DELETE CASCADE,
  CHECK ((host_id IS NULL) <> (database_id IS NULL))
);

-- A Dedicated database's network: its own range (its ip_range, or one allocated) and the
-- port of its public endpoint, both fixed for its life.
CREATE TABLE database_networks (
  database_id text PRIMARY KEY REFERENCES databases (id) ON DELETE CASCADE,
  ip_range cidr NOT NULL CHECK (family(ip_range) = 4 AND masklen(ip_range) <= 25),
  allocated boolean NOT NULL,
  public_port integer NOT NULL CHECK (public_port BETWEEN 1 AND 65535)
);
-- Allocated ranges are handed out once; a range the user chose may repeat (its own VPC).
CREATE UNIQUE INDEX database_networks_allocated ON database_networks (ip_range) WHERE allocated;
