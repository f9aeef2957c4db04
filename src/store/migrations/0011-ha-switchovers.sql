-- Planned switchovers of HA clusters (plan changes, later upgrades) and the progress of
-- operations. A switchover names the leader it moves away from and the standby it moves
-- to; the agent of the leader's host asks Patroni for it, the reconciler sees the result
-- in the roles the agents report.
CREATE TABLE database_switchovers (
  id text PRIMARY KEY,
  database_id text NOT NULL REFERENCES databases (id) ON DELETE CASCADE,
  operation_id text REFERENCES operations (id),
  leader_id text NOT NULL,
  candidate_id text NOT NULL CHECK (candidate_id <> leader_id),
  reason text NOT NULL CHECK (length(reason) BETWEEN 1 AND 200),
  status text NOT NULL DEFAULT 'requested' CHECK (status IN ('requested', 'done', 'failed')),
  error text,
  requested_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  CHECK ((status = 'requested') = (finished_at IS NULL))
);
-- One switchover in flight per cluster: two at once would fight over the leader.
CREATE UNIQUE INDEX database_switchovers_in_flight ON database_switchovers (database_id)
  WHERE status = 'requested';
CREATE INDEX database_switchovers_database ON database_switchovers (database_id, requested_at);

-- What a running operation is doing now (a rolling resize's steps), shown with it.
ALTER TABLE operations ADD COLUMN progress text NOT NULL DEFAULT '';
