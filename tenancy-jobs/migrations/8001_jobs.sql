-- tenancy-jobs: background jobs (versions 8001+).
--
-- Not under row-level security, unlike the tenant-owned tables of the
-- other tenancy crates: workers claim jobs across tenants, so they could
-- not run in a tenant-scoped transaction. tenant_id is kept for filtering
-- and for the handler; it has no foreign key so a job survives (and can
-- clean up after) a deleted tenant.
CREATE TABLE tenancy_jobs (
    id uuid PRIMARY KEY,
    queue text NOT NULL,
    kind text NOT NULL,
    payload jsonb NOT NULL,
    tenant_id uuid,
    state text NOT NULL
        CHECK (state IN ('queued', 'running', 'retrying', 'succeeded', 'dead', 'cancelled')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts integer NOT NULL CHECK (max_attempts >= 1),
    run_at timestamptz NOT NULL,
    dedupe_key text,
    last_error text,
    -- Changes with every claim: only the current holder can finish the job.
    lease_token uuid,
    lease_expires_at timestamptz,
    locked_by text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    finished_at timestamptz,
    CHECK ((state = 'running') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL))
);

-- Claiming: due jobs in run_at order (one ordered scan, queues filtered
-- on the way, so a backlog is never sorted).
CREATE INDEX tenancy_jobs_due ON tenancy_jobs (run_at, id)
    WHERE state IN ('queued', 'retrying');
-- Reclaiming: running jobs whose lease ran out.
CREATE INDEX tenancy_jobs_leases ON tenancy_jobs (lease_expires_at)
    WHERE state = 'running';
-- One active job per dedupe key.
CREATE UNIQUE INDEX tenancy_jobs_dedupe ON tenancy_jobs (dedupe_key)
    WHERE dedupe_key IS NOT NULL AND state IN ('queued', 'running', 'retrying');
-- Retention.
CREATE INDEX tenancy_jobs_finished ON tenancy_jobs (finished_at)
    WHERE finished_at IS NOT NULL;
-- Listing a tenant's jobs.
CREATE INDEX tenancy_jobs_tenant ON tenancy_jobs (tenant_id, id)
    WHERE tenant_id IS NOT NULL;

-- Periodic jobs: one row per schedule; the replica that locks the row
-- enqueues the tick and moves next_run_at on, in one transaction.
CREATE TABLE tenancy_job_schedules (
    name text PRIMARY KEY,
    next_run_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
