-- tenancy-auth schema. Migration versions 2000-2999 belong to tenancy-auth;
-- it runs after tenancy-core's migrations (1000-1999), whose tables it references.
--
-- These tables are read before a tenant is known (a credential is resolved
-- first, and it names the tenant), so they are not under tenant row-level
-- security; only the auth stores touch them, by unguessable ids and hashes.

CREATE TABLE tenancy_password_credentials (
    user_id     uuid PRIMARY KEY CONSTRAINT tenancy_password_credentials_user_fkey REFERENCES tenancy_users (id),
    phc         text NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- Failed-login counters, keyed by account (normalized email) or client.
CREATE TABLE tenancy_login_throttle (
    key              text PRIMARY KEY,
    failures         integer NOT NULL,
    window_started   timestamptz NOT NULL,
    locked_until     timestamptz
);

CREATE TABLE tenancy_signing_keys (
    kid          text PRIMARY KEY,
    algorithm    text NOT NULL,
    private_jwk  jsonb NOT NULL,
    public_jwk   jsonb,
    created_at   timestamptz NOT NULL,
    retired_at   timestamptz
);
-- At most one active signing key, even when two replicas rotate at once.
CREATE UNIQUE INDEX tenancy_signing_keys_one_active ON tenancy_signing_keys ((true)) WHERE retired_at IS NULL;

CREATE TABLE tenancy_sessions (
    id                   uuid PRIMARY KEY,
    user_id              uuid NOT NULL CONSTRAINT tenancy_sessions_user_fkey REFERENCES tenancy_users (id),
    tenant_id            uuid NOT NULL CONSTRAINT tenancy_sessions_tenant_fkey REFERENCES tenancy_tenants (id),
    user_agent           text,
    ip                   inet,
    created_at           timestamptz NOT NULL,
    last_seen_at         timestamptz NOT NULL,
    idle_expires_at      timestamptz NOT NULL,
    absolute_expires_at  timestamptz NOT NULL,
    revoked_at           timestamptz,
    revoke_reason        text
);
CREATE INDEX tenancy_sessions_user_idx ON tenancy_sessions (user_id, created_at);
CREATE INDEX tenancy_sessions_tenant_idx ON tenancy_sessions (tenant_id, user_id);
CREATE INDEX tenancy_sessions_revoked_idx ON tenancy_sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- One family per session: each refresh marks its token rotated and adds the next.
CREATE TABLE tenancy_refresh_tokens (
    token_hash  bytea PRIMARY KEY,
    session_id  uuid NOT NULL CONSTRAINT tenancy_refresh_tokens_session_fkey REFERENCES tenancy_sessions (id),
    issued_at   timestamptz NOT NULL,
    rotated_at  timestamptz
);
CREATE INDEX tenancy_refresh_tokens_session_idx ON tenancy_refresh_tokens (session_id);

CREATE TABLE tenancy_api_keys (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL CONSTRAINT tenancy_api_keys_tenant_fkey REFERENCES tenancy_tenants (id),
    name             text NOT NULL,
    scopes           text[] NOT NULL,
    secret_hash      bytea NOT NULL,
    created_by_kind  text NOT NULL,
    created_by_id    uuid,
    created_at       timestamptz NOT NULL,
    expires_at       timestamptz,
    last_used_at     timestamptz,
    revoked_at       timestamptz
);
CREATE INDEX tenancy_api_keys_tenant_idx ON tenancy_api_keys (tenant_id, id);

CREATE TABLE tenancy_one_time_tokens (
    token_hash  bytea PRIMARY KEY,
    purpose     text NOT NULL CHECK (purpose IN ('email_verification', 'password_reset')),
    user_id     uuid NOT NULL CONSTRAINT tenancy_one_time_tokens_user_fkey REFERENCES tenancy_users (id),
    email       text NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX tenancy_one_time_tokens_user_idx ON tenancy_one_time_tokens (user_id, purpose);

-- Replicas learn of revoked sessions at once through LISTEN tenancy_session_revoked.
CREATE FUNCTION tenancy_notify_session_revoked() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL THEN
        PERFORM pg_notify('tenancy_session_revoked', NEW.id::text);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER tenancy_sessions_notify_revoked
    AFTER UPDATE OF revoked_at ON tenancy_sessions
    FOR EACH ROW EXECUTE FUNCTION tenancy_notify_session_revoked();
