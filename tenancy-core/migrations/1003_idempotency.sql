-- Idempotency keys (draft-ietf-httpapi-idempotency-key-header): one row per
-- (tenant, caller, key). status IS NULL while the first request runs (its
-- lease ends at locked_until); then status, headers and body hold the
-- response replayed to retries until expires_at.
CREATE TABLE tenancy_idempotency_keys (
    tenant_id    uuid NOT NULL,
    caller       text NOT NULL,
    key          text NOT NULL,
    fingerprint  bytea NOT NULL,
    token        uuid NOT NULL,
    locked_until timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL,
    status       smallint,
    headers      jsonb,
    body         bytea,
    CONSTRAINT tenancy_idempotency_keys_pkey PRIMARY KEY (tenant_id, caller, key),
    CONSTRAINT tenancy_idempotency_keys_key_check CHECK (length(key) BETWEEN 1 AND 255),
    CONSTRAINT tenancy_idempotency_keys_caller_check CHECK (length(caller) BETWEEN 1 AND 255),
    CONSTRAINT tenancy_idempotency_keys_fingerprint_check CHECK (length(fingerprint) = 32),
    CONSTRAINT tenancy_idempotency_keys_completed_check
        CHECK ((status IS NULL) = (headers IS NULL) AND (status IS NULL) = (body IS NULL))
);
CREATE INDEX tenancy_idempotency_keys_expires_idx ON tenancy_idempotency_keys (expires_at);

SELECT tenancy_enable_rls('tenancy_idempotency_keys');

-- The purge crosses tenants: a transaction that sets
-- tenancy.idempotency_purge_before sees, and may delete, the rows expired by
-- then (and no others outside its tenant).
CREATE POLICY tenancy_idempotency_purge_read ON tenancy_idempotency_keys
    FOR SELECT USING (
        expires_at <= nullif(current_setting('tenancy.idempotency_purge_before', true), '')::timestamptz);
CREATE POLICY tenancy_idempotency_purge ON tenancy_idempotency_keys
    FOR DELETE USING (
        expires_at <= nullif(current_setting('tenancy.idempotency_purge_before', true), '')::timestamptz);
