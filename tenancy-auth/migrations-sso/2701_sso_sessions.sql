-- Sessions opened through a tenant's enterprise connection. Such a
-- session speaks for that tenant only: switching it into another tenant
-- needs a fresh sign-in. Keyed by the session, which is global.
CREATE TABLE tenancy_sso_sessions (
    session_id  uuid PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX tenancy_sso_sessions_expiry_idx ON tenancy_sso_sessions (expires_at);
