-- tenancy-metering schema. Migration versions 5000-5999 belong to
-- tenancy-metering; tenancy-core's migrations (1000-1999) must run first.

-- Durably recorded events. The primary key is the tenant-scoped idempotency
-- key: the event and its key are one row, written in the transaction that
-- adds the event to the rollups, so a retry counts exactly once.
CREATE TABLE tenancy_metering_events (
    tenant_id        uuid NOT NULL CONSTRAINT tenancy_metering_events_tenant_fkey REFERENCES tenancy_tenants (id),
    idempotency_key  text NOT NULL,
    meter            text NOT NULL,
    value            bigint NOT NULL,
    occurred_at      timestamptz NOT NULL,
    dimensions       jsonb NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, idempotency_key)
);

-- Usage per tenant x meter x window x kept dimensions, one row per window
-- of each granularity. Every figure an aggregation needs is kept, so rows
-- merge in any order.
CREATE TABLE tenancy_metering_rollups (
    tenant_id     uuid NOT NULL CONSTRAINT tenancy_metering_rollups_tenant_fkey REFERENCES tenancy_tenants (id),
    meter         text NOT NULL,
    granularity   text NOT NULL CHECK (granularity IN ('minute', 'hour', 'day')),
    bucket        timestamptz NOT NULL,
    dimensions    jsonb NOT NULL,
    total         bigint NOT NULL,
    events        bigint NOT NULL CHECK (events >= 0),
    max_value     bigint,
    latest_at     timestamptz,
    latest_value  bigint,
    PRIMARY KEY (tenant_id, meter, granularity, bucket, dimensions)
);

-- The distinct values of unique_count meters, per rollup row.
CREATE TABLE tenancy_metering_uniques (
    tenant_id    uuid NOT NULL CONSTRAINT tenancy_metering_uniques_tenant_fkey REFERENCES tenancy_tenants (id),
    meter        text NOT NULL,
    granularity  text NOT NULL CHECK (granularity IN ('minute', 'hour', 'day')),
    bucket       timestamptz NOT NULL,
    dimensions   jsonb NOT NULL,
    member       bigint NOT NULL,
    PRIMARY KEY (tenant_id, meter, granularity, bucket, dimensions, member)
);

SELECT tenancy_enable_rls('tenancy_metering_events');
SELECT tenancy_enable_rls('tenancy_metering_rollups');
SELECT tenancy_enable_rls('tenancy_metering_uniques');
