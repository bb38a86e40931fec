-- tenancy-billing schema. Migration versions 4000-4999 belong to
-- tenancy-billing; tenancy-core's migrations (1000-1999) must run first.

-- Each tenant's billing state: its revision (one more on every change;
-- writes lock this row, so changes of one tenant are serialized) and its
-- subscription as last heard from the provider.
CREATE TABLE tenancy_billing_states (
    tenant_id     uuid PRIMARY KEY CONSTRAINT tenancy_billing_states_tenant_fkey REFERENCES tenancy_tenants (id),
    revision      bigint NOT NULL CHECK (revision >= 0),
    subscription  jsonb
);

-- Tenant <-> provider customer, one to one. Not under row-level security,
-- like tenancy_tenants: webhooks are routed by customer before the tenant
-- is known. It holds ids only.
CREATE TABLE tenancy_billing_accounts (
    customer_id  text PRIMARY KEY,
    tenant_id    uuid NOT NULL UNIQUE CONSTRAINT tenancy_billing_accounts_tenant_fkey REFERENCES tenancy_tenants (id),
    created_at   timestamptz NOT NULL
);

CREATE TABLE tenancy_billing_overrides (
    tenant_id   uuid NOT NULL CONSTRAINT tenancy_billing_overrides_tenant_fkey REFERENCES tenancy_tenants (id),
    id          uuid NOT NULL,
    document    jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

-- Provider events already applied (or acknowledged), so each is applied
-- once: the id is inserted in the transaction of the change it causes.
-- Not under row-level security: an event's tenant is known only after
-- parsing, and some events have none.
CREATE TABLE tenancy_billing_events (
    event_id     text PRIMARY KEY,
    event_type   text NOT NULL,
    received_at  timestamptz NOT NULL
);

SELECT tenancy_enable_rls('tenancy_billing_states');
SELECT tenancy_enable_rls('tenancy_billing_overrides');
