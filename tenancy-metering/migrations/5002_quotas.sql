-- Quota counters: usage (or leased quota) per tenant x meter x period. A
-- hard limit moves the counter with one conditional upsert, so concurrent
-- callers never overshoot; a new period is a new row starting at zero.
CREATE TABLE tenancy_metering_quotas (
    tenant_id     uuid NOT NULL CONSTRAINT tenancy_metering_quotas_tenant_fkey REFERENCES tenancy_tenants (id),
    meter         text NOT NULL,
    period_start  timestamptz NOT NULL,
    used          bigint NOT NULL CHECK (used >= 0),
    PRIMARY KEY (tenant_id, meter, period_start)
);

SELECT tenancy_enable_rls('tenancy_metering_quotas');
