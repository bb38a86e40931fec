-- tenancy-authz schema. Migration versions 3000-3999 belong to tenancy-authz;
-- tenancy-core's migrations (1000-1999) must run first.

-- The epoch of each tenant's roles and policies: one more on every change.
-- Writes lock this row, so changes of one tenant are serialized.
CREATE TABLE tenancy_authz_epochs (
    tenant_id  uuid PRIMARY KEY CONSTRAINT tenancy_authz_epochs_tenant_fkey REFERENCES tenancy_tenants (id),
    epoch      bigint NOT NULL CHECK (epoch >= 0)
);

CREATE TABLE tenancy_authz_roles (
    tenant_id   uuid NOT NULL CONSTRAINT tenancy_authz_roles_tenant_fkey REFERENCES tenancy_tenants (id),
    name        text NOT NULL,
    definition  jsonb NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE tenancy_authz_policies (
    tenant_id   uuid NOT NULL CONSTRAINT tenancy_authz_policies_tenant_fkey REFERENCES tenancy_tenants (id),
    id          text NOT NULL,
    document    jsonb NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

SELECT tenancy_enable_rls('tenancy_authz_epochs');
SELECT tenancy_enable_rls('tenancy_authz_roles');
SELECT tenancy_enable_rls('tenancy_authz_policies');
