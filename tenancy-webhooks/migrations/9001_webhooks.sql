-- tenancy-webhooks schema. Migration versions 9000-9999 belong to
-- tenancy-webhooks; tenancy-core's migrations (1000-1999) must run first.

-- A tenant's endpoints, with their encrypted secrets (JWE, never the
-- plaintext) and the health the circuit breaker reads.
CREATE TABLE tenancy_webhook_endpoints (
    id                     uuid PRIMARY KEY,
    tenant_id              uuid NOT NULL CONSTRAINT tenancy_webhook_endpoints_tenant_fkey REFERENCES tenancy_tenants (id),
    url                    text NOT NULL,
    description            text NOT NULL,
    event_types            jsonb NOT NULL,
    status                 text NOT NULL CHECK (status IN ('active', 'paused', 'disabled')),
    paused_reason          text,
    paused_since           timestamptz,
    consecutive_failures   integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    healthy_at             timestamptz NOT NULL,
    secret                 text NOT NULL,
    previous_secret        text,
    previous_secret_until  timestamptz,
    created_at             timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL,
    CHECK ((status = 'paused') = (paused_since IS NOT NULL))
);
CREATE INDEX tenancy_webhook_endpoints_tenant_idx ON tenancy_webhook_endpoints (tenant_id, id);

-- The events to deliver, kept so that every attempt and a redelivery
-- send the same body.
CREATE TABLE tenancy_webhook_messages (
    tenant_id   uuid NOT NULL CONSTRAINT tenancy_webhook_messages_tenant_fkey REFERENCES tenancy_tenants (id),
    event_id    uuid NOT NULL,
    event       jsonb NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id)
);

-- One row per attempt. No foreign key to the endpoint: the log outlives it.
CREATE TABLE tenancy_webhook_deliveries (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL CONSTRAINT tenancy_webhook_deliveries_tenant_fkey REFERENCES tenancy_tenants (id),
    endpoint_id       uuid NOT NULL,
    event_id          uuid NOT NULL,
    event_type        text NOT NULL,
    attempt           integer NOT NULL CHECK (attempt >= 1),
    outcome           text NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'dead', 'skipped')),
    status_code       integer,
    latency_ms        bigint,
    error             text,
    response_excerpt  text,
    at                timestamptz NOT NULL
);
CREATE INDEX tenancy_webhook_deliveries_endpoint_idx
    ON tenancy_webhook_deliveries (tenant_id, endpoint_id, id DESC);

SELECT tenancy_enable_rls('tenancy_webhook_endpoints');
SELECT tenancy_enable_rls('tenancy_webhook_messages');
SELECT tenancy_enable_rls('tenancy_webhook_deliveries');
