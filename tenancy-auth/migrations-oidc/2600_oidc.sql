-- The OAuth 2.0 / OpenID Connect authorization server (tenancy-auth feature
-- `oidc`). Versions 2600-2699.
--
-- Clients, pending requests, codes and grants are found by a credential
-- (client id, code hash, interaction id, session), which names its tenant,
-- as tenancy-auth's API keys and sessions are; consents are read and
-- written only for a known tenant and carry row-level security.

CREATE TABLE tenancy_oauth_clients (
    id                         uuid PRIMARY KEY,
    -- NULL: a global (first-party) client.
    tenant_id                  uuid CONSTRAINT tenancy_oauth_clients_tenant_fkey REFERENCES tenancy_tenants (id),
    name                       text NOT NULL,
    kind                       text NOT NULL CHECK (kind IN ('confidential', 'public')),
    redirect_uris              text[] NOT NULL,
    post_logout_redirect_uris  text[] NOT NULL,
    grant_types                text[] NOT NULL,
    scopes                     text[] NOT NULL,
    first_party                boolean NOT NULL,
    id_token_alg               text NOT NULL,
    secret_hash                bytea,
    created_by_kind            text NOT NULL,
    created_by_id              uuid,
    created_at                 timestamptz NOT NULL,
    updated_at                 timestamptz NOT NULL,
    -- Public keys for private_key_jwt client authentication.
    jwks                       jsonb
);
CREATE INDEX tenancy_oauth_clients_tenant_idx ON tenancy_oauth_clients (tenant_id, id);

CREATE TABLE tenancy_oauth_interactions (
    id            text PRIMARY KEY,
    client_id     uuid NOT NULL CONSTRAINT tenancy_oauth_interactions_client_fkey REFERENCES tenancy_oauth_clients (id) ON DELETE CASCADE,
    request       jsonb NOT NULL,
    login_session uuid,
    logged_in_at  timestamptz,
    consent_user  uuid,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL
);
CREATE INDEX tenancy_oauth_interactions_expiry_idx ON tenancy_oauth_interactions (expires_at);

CREATE TABLE tenancy_oauth_codes (
    code_hash        bytea PRIMARY KEY,
    client_id        uuid NOT NULL CONSTRAINT tenancy_oauth_codes_client_fkey REFERENCES tenancy_oauth_clients (id) ON DELETE CASCADE,
    redirect_uri     text NOT NULL,
    code_challenge   text,
    nonce            text,
    user_id          uuid NOT NULL,
    tenant_id        uuid NOT NULL,
    browser_session  uuid NOT NULL,
    auth_time        timestamptz NOT NULL,
    scopes           text[] NOT NULL,
    created_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    redeemed_at      timestamptz,
    issued_session   uuid
);
CREATE INDEX tenancy_oauth_codes_expiry_idx ON tenancy_oauth_codes (expires_at);

CREATE TABLE tenancy_oauth_consents (
    tenant_id   uuid NOT NULL CONSTRAINT tenancy_oauth_consents_tenant_fkey REFERENCES tenancy_tenants (id),
    user_id     uuid NOT NULL,
    client_id   uuid NOT NULL CONSTRAINT tenancy_oauth_consents_client_fkey REFERENCES tenancy_oauth_clients (id) ON DELETE CASCADE,
    scopes      text[] NOT NULL,
    granted_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, user_id, client_id)
);
CREATE INDEX tenancy_oauth_consents_client_idx ON tenancy_oauth_consents (client_id);
SELECT tenancy_enable_rls('tenancy_oauth_consents');
-- Deleting a client cascades to its consents in every tenant: referential
-- actions bypass row-level security.

CREATE TABLE tenancy_oauth_grants (
    session_id  uuid PRIMARY KEY,
    client_id   uuid NOT NULL CONSTRAINT tenancy_oauth_grants_client_fkey REFERENCES tenancy_oauth_clients (id) ON DELETE CASCADE,
    user_id     uuid NOT NULL,
    tenant_id   uuid NOT NULL,
    scopes      text[] NOT NULL,
    auth_time   timestamptz NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX tenancy_oauth_grants_client_idx ON tenancy_oauth_grants (client_id);

-- The jti of each client assertion (private_key_jwt), kept until it
-- expires, so an assertion is accepted once.
CREATE TABLE tenancy_oauth_assertions (
    client_id   uuid NOT NULL CONSTRAINT tenancy_oauth_assertions_client_fkey REFERENCES tenancy_oauth_clients (id) ON DELETE CASCADE,
    jti         text NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX tenancy_oauth_assertions_expiry_idx ON tenancy_oauth_assertions (expires_at);

-- ID-token signing keys (RS256 by default), apart from the access-token keys.
CREATE TABLE tenancy_oidc_signing_keys (
    kid          text PRIMARY KEY,
    algorithm    text NOT NULL,
    private_jwk  jsonb,
    private_jwe  text,
    public_jwk   jsonb,
    created_at   timestamptz NOT NULL,
    retired_at   timestamptz,
    CONSTRAINT tenancy_oidc_signing_keys_private_key_check CHECK (num_nonnulls(private_jwk, private_jwe) = 1)
);
CREATE UNIQUE INDEX tenancy_oidc_signing_keys_one_active ON tenancy_oidc_signing_keys ((true)) WHERE retired_at IS NULL;
