-- When a spent authorization code was presented again: a replay arriving
-- while the first redemption is still opening its session is seen by that
-- redemption, which then ends the session it opened.
ALTER TABLE tenancy_oauth_codes ADD COLUMN replayed_at timestamptz;

-- Row-level security: consents carry it (2600). Clients, codes and grants
-- are a documented exception, like tenancy-auth's API keys and sessions:
-- each is found by a credential before any tenant is known (a client by its
-- client_id at the authorize, token, introspection and revocation endpoints;
-- a code by its hash at the token endpoint; a grant by its session at
-- refresh, introspection and revocation), global clients have no tenant at
-- all, and purging crosses tenants. Every tenant-facing statement on clients
-- (list, update, rotate, delete) names the tenant in its WHERE clause
-- (tenant_id IS NOT DISTINCT FROM the caller's), and only PgOAuthStore
-- touches these tables.
COMMENT ON TABLE tenancy_oauth_clients IS
    'No RLS by design: read by client_id before the tenant is known; tenant-facing statements filter tenant_id (see migration 2601).';
COMMENT ON TABLE tenancy_oauth_codes IS
    'No RLS by design: read by code hash before the tenant is known (see migration 2601).';
COMMENT ON TABLE tenancy_oauth_grants IS
    'No RLS by design: read by session id before the tenant is known, purged across tenants (see migration 2601).';
