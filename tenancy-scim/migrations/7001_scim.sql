-- tenancy-scim schema. Migration versions 7000-7999 belong to tenancy-scim;
-- tenancy-core's migrations (1000-1999) must run first.

-- Provisioning tokens. Like tenancy_api_keys, a token is found by the hash
-- of its secret before its tenant is known, so this table is not under
-- row-level security; every statement that lists or revokes names the
-- tenant.
CREATE TABLE tenancy_scim_tokens (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL CONSTRAINT tenancy_scim_tokens_tenant_fkey REFERENCES tenancy_tenants (id),
    name             text NOT NULL,
    secret_hash      bytea NOT NULL CONSTRAINT tenancy_scim_tokens_secret_key UNIQUE,
    created_by_kind  text NOT NULL,
    created_by_id    uuid,
    created_at       timestamptz NOT NULL,
    last_used_at     timestamptz,
    revoked_at       timestamptz
);
CREATE INDEX tenancy_scim_tokens_tenant_idx ON tenancy_scim_tokens (tenant_id, created_at);

-- The SCIM view of each provisioned member, per tenant.
CREATE TABLE tenancy_scim_users (
    tenant_id    uuid NOT NULL CONSTRAINT tenancy_scim_users_tenant_fkey REFERENCES tenancy_tenants (id),
    id           uuid NOT NULL,
    user_id      uuid NOT NULL REFERENCES tenancy_users (id) ON DELETE CASCADE,
    user_name    text NOT NULL,
    external_id  text,
    active       boolean NOT NULL,
    attributes   jsonb NOT NULL,
    version      bigint NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT tenancy_scim_users_account_key UNIQUE (tenant_id, user_id)
);
CREATE UNIQUE INDEX tenancy_scim_users_user_name_key ON tenancy_scim_users (tenant_id, lower(user_name));

SELECT tenancy_enable_rls('tenancy_scim_users');
