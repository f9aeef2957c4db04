-- The recent PostgreSQL log of a node, fetched on demand. Agents have no listener, so the
-- controller records a request here; the node's agent sees it in the answer to its next
-- report and sends the tail of the current log file, which the log endpoint then serves.
CREATE TABLE instance_log_tails (
  instance_id text PRIMARY KEY REFERENCES instances (id) ON DELETE CASCADE,
  requested_at timestamptz NOT NULL,
  -- The last lines the agent sent, and when it read them.
  tail text NOT NULL DEFAULT '' CHECK (octet_length(tail) <= 1048576),
  read_at timestamptz
);
