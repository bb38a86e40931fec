-- tenancy-auth single sign-on (feature `sso`). Versions 2700-2799 belong to
-- it; tenancy-core's migrations (1000-1999) must run first.

-- A tenant's OpenID Connect identity providers. The client secret is a
-- compact JWE under the host's key-encryption key, bound to its row.
CREATE TABLE tenancy_sso_connections (
    tenant_id      uuid NOT NULL CONSTRAINT tenancy_sso_connections_tenant_fkey REFERENCES tenancy_tenants (id),
    id             uuid NOT NULL,
    name           text NOT NULL,
    issuer         text NOT NULL,
    client_id      text NOT NULL,
    client_secret  text NOT NULL,
    default_role   text NOT NULL,
    create_users   boolean NOT NULL,
    enabled        boolean NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
SELECT tenancy_enable_rls('tenancy_sso_connections');

-- A tenant's SSO policy; no row means the default (passwords allowed).
CREATE TABLE tenancy_sso_policies (
    tenant_id    uuid PRIMARY KEY CONSTRAINT tenancy_sso_policies_tenant_fkey REFERENCES tenancy_tenants (id),
    require_sso  boolean NOT NULL
);
SELECT tenancy_enable_rls('tenancy_sso_policies');

-- Email domains, one tenant each. A sign-in by email finds its domain
-- before the tenant is known (like API keys by hash), so this table is not
-- under row-level security; every statement that lists, verifies or
-- deletes names the tenant.
CREATE TABLE tenancy_sso_domains (
    domain              text PRIMARY KEY,
    tenant_id           uuid NOT NULL CONSTRAINT tenancy_sso_domains_tenant_fkey REFERENCES tenancy_tenants (id),
    verification_token  text NOT NULL,
    verified_at         timestamptz,
    created_at          timestamptz NOT NULL
);
CREATE INDEX tenancy_sso_domains_tenant_idx ON tenancy_sso_domains (tenant_id, domain);

-- Pending sign-ins, found by the hash of their state before any tenant is
-- known (social sign-ins have none). Only hashes are stored.
CREATE TABLE tenancy_sso_states (
    state_hash     bytea PRIMARY KEY,
    binding_hash   bytea NOT NULL,
    social_key     text,
    tenant_id      uuid,
    connection_id  uuid,
    return_to      text,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    CONSTRAINT tenancy_sso_states_connection_check CHECK (
        (social_key IS NOT NULL AND tenant_id IS NULL AND connection_id IS NULL)
        OR (social_key IS NULL AND tenant_id IS NOT NULL AND connection_id IS NOT NULL))
);
CREATE INDEX tenancy_sso_states_expiry_idx ON tenancy_sso_states (expires_at);

-- Provider accounts linked to users. Users are global, so are identities.
CREATE TABLE tenancy_sso_identities (
    provider    text NOT NULL,
    subject     text NOT NULL,
    user_id     uuid NOT NULL REFERENCES tenancy_users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX tenancy_sso_identities_user_idx ON tenancy_sso_identities (user_id);
