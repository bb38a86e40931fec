-- The export outbox: usage of a meter in a billing period, in rows that
-- each add what the rows before them lack, sent once to the billing
-- provider under a deterministic identifier. The primary key makes two
-- exporters racing for the next sequence insert one row.
CREATE TABLE tenancy_metering_outbox (
    tenant_id        uuid NOT NULL CONSTRAINT tenancy_metering_outbox_tenant_fkey REFERENCES tenancy_tenants (id),
    meter            text NOT NULL,
    period_start     timestamptz NOT NULL,
    sequence         bigint NOT NULL CHECK (sequence > 0),
    value            bigint NOT NULL CHECK (value > 0),
    identifier       text NOT NULL,
    occurred_at      timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT '-infinity',
    sent_at          timestamptz,
    parked_at        timestamptz,
    last_error       text,
    PRIMARY KEY (tenant_id, meter, period_start, sequence)
);

CREATE INDEX tenancy_metering_outbox_due ON tenancy_metering_outbox (tenant_id, next_attempt_at)
    WHERE sent_at IS NULL AND parked_at IS NULL;

SELECT tenancy_enable_rls('tenancy_metering_outbox');
