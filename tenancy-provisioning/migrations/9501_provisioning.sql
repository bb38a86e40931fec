-- Provisioning runs and their steps. Operator data, not tenant-owned: a run
-- starts before its tenant exists, so these tables carry no row-level
-- security; only the provisioner (and operator routes) read them.
CREATE TABLE tenancy_provisioning_runs (
    id             uuid PRIMARY KEY,
    definition     text NOT NULL,
    input          jsonb NOT NULL,
    state          jsonb NOT NULL DEFAULT '{}'::jsonb,
    status         text NOT NULL CHECK (status IN
                       ('pending', 'running', 'succeeded', 'failed', 'cancelling', 'cancelled')),
    deadline       timestamptz NOT NULL,
    not_before     timestamptz NOT NULL,
    manual_retries integer NOT NULL DEFAULT 0 CHECK (manual_retries >= 0),
    last_error     text,
    lease_token    uuid,
    locked_until   timestamptz,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);

-- What workers scan when they claim: only runs with work left.
CREATE INDEX tenancy_provisioning_runs_active
    ON tenancy_provisioning_runs (not_before)
    WHERE status IN ('pending', 'running', 'cancelling');

CREATE TABLE tenancy_provisioning_steps (
    run_id      uuid NOT NULL REFERENCES tenancy_provisioning_runs (id) ON DELETE CASCADE,
    index       integer NOT NULL CHECK (index >= 0),
    name        text NOT NULL,
    status      text NOT NULL CHECK (status IN
                    ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts    integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    started_at  timestamptz,
    finished_at timestamptz,
    last_error  text,
    PRIMARY KEY (run_id, index)
);
