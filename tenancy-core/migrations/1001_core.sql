-- tenancy-core schema. Migration versions 1000-1999 belong to tenancy-core;
-- other tenancy crates use their own ranges in the same database.

-- The tenant (or user) a transaction acts for, set with
-- set_config('tenancy.tenant_id', <uuid>, true). Unset means none.
CREATE FUNCTION tenancy_current_tenant() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('tenancy.tenant_id', true), '')::uuid $$;

CREATE FUNCTION tenancy_current_user() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('tenancy.user_id', true), '')::uuid $$;

-- Gives a table the tenant-isolation policy the tenancy tables use: rows are
-- visible and writable only inside a transaction scoped to their tenant.
-- FORCE makes the policy apply to the table owner too (superusers and roles
-- with BYPASSRLS still bypass it).
CREATE FUNCTION tenancy_enable_rls(target regclass, tenant_column name DEFAULT 'tenant_id')
    RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', target);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', target);
    EXECUTE format('DROP POLICY IF EXISTS tenancy_tenant_isolation ON %s', target);
    EXECUTE format(
        'CREATE POLICY tenancy_tenant_isolation ON %s USING (%I = tenancy_current_tenant()) WITH CHECK (%I = tenancy_current_tenant())',
        target, tenant_column, tenant_column);
END
$$;

CREATE TABLE tenancy_tenants (
    id          uuid PRIMARY KEY,
    slug        text NOT NULL,
    name        text NOT NULL,
    status      text NOT NULL CHECK (status IN ('active', 'suspended', 'deleted')),
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    CONSTRAINT tenancy_tenants_slug_key UNIQUE (slug)
);

CREATE TABLE tenancy_users (
    id              uuid PRIMARY KEY,
    email           text NOT NULL,
    display_name    text,
    email_verified  boolean NOT NULL,
    status          text NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
-- COLLATE "C": lower() folds ASCII only, whatever the database's locale
-- (emails are ASCII), so no locale can let two spellings of one address in.
CREATE UNIQUE INDEX tenancy_users_email_key ON tenancy_users (lower(email COLLATE "C"));

CREATE TABLE tenancy_memberships (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL CONSTRAINT tenancy_memberships_tenant_fkey REFERENCES tenancy_tenants (id),
    user_id     uuid NOT NULL CONSTRAINT tenancy_memberships_user_fkey REFERENCES tenancy_users (id),
    roles       text[] NOT NULL,
    status      text NOT NULL CHECK (status IN ('invited', 'active', 'suspended')),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    CONSTRAINT tenancy_memberships_tenant_user_key UNIQUE (tenant_id, user_id)
);
CREATE INDEX tenancy_memberships_tenant_idx ON tenancy_memberships (tenant_id, id);
CREATE INDEX tenancy_memberships_user_idx ON tenancy_memberships (user_id, id);

CREATE TABLE tenancy_invitations (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL CONSTRAINT tenancy_invitations_tenant_fkey REFERENCES tenancy_tenants (id),
    email           text NOT NULL,
    roles           text[] NOT NULL,
    invited_by_kind text NOT NULL,
    invited_by_id   uuid,
    status          text NOT NULL CHECK (status IN ('pending', 'accepted', 'revoked', 'expired')),
    token_hash      bytea NOT NULL,
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    accepted_by     uuid CONSTRAINT tenancy_invitations_accepted_by_fkey REFERENCES tenancy_users (id)
);
CREATE UNIQUE INDEX tenancy_invitations_pending_key
    ON tenancy_invitations (tenant_id, lower(email COLLATE "C")) WHERE status = 'pending';
CREATE INDEX tenancy_invitations_token_idx ON tenancy_invitations (tenant_id, token_hash);
CREATE INDEX tenancy_invitations_tenant_idx ON tenancy_invitations (tenant_id, id);

CREATE TABLE tenancy_audit_events (
    tenant_id    uuid NOT NULL CONSTRAINT tenancy_audit_events_tenant_fkey REFERENCES tenancy_tenants (id),
    seq          bigint NOT NULL CHECK (seq > 0),
    id           uuid NOT NULL,
    actor_kind   text NOT NULL,
    actor_id     uuid,
    action       text NOT NULL,
    target_type  text NOT NULL,
    target_id    text NOT NULL,
    -- json, not jsonb: the text is kept exactly as hashed (jsonb would
    -- rewrite numbers such as 1e16 and break the hash).
    metadata     json NOT NULL,
    ip           inet,
    user_agent   text,
    occurred_at  timestamptz NOT NULL,
    prev_hash    bytea NOT NULL,
    hash         bytea NOT NULL,
    PRIMARY KEY (tenant_id, seq),
    CONSTRAINT tenancy_audit_events_id_key UNIQUE (id)
);
CREATE INDEX tenancy_audit_events_action_idx ON tenancy_audit_events (tenant_id, action, seq);
CREATE INDEX tenancy_audit_events_actor_idx ON tenancy_audit_events (tenant_id, actor_id, seq);
CREATE INDEX tenancy_audit_events_target_idx ON tenancy_audit_events (tenant_id, target_type, seq);
CREATE INDEX tenancy_audit_events_time_idx ON tenancy_audit_events (tenant_id, occurred_at);

-- The newest link of each tenant's chain. Appends lock this row, so
-- concurrent appends for one tenant queue up instead of forking the chain.
CREATE TABLE tenancy_audit_heads (
    tenant_id  uuid PRIMARY KEY CONSTRAINT tenancy_audit_heads_tenant_fkey REFERENCES tenancy_tenants (id),
    seq        bigint NOT NULL,
    hash       bytea NOT NULL
);

-- Every inserted event must extend its tenant's chain, and moves the head:
-- an event slipped in by hand is either refused or recorded in the head,
-- where verification will check it.
CREATE FUNCTION tenancy_audit_extend_chain() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    head_seq  bigint;
    head_hash bytea;
BEGIN
    SELECT seq, hash INTO head_seq, head_hash
        FROM tenancy_audit_heads WHERE tenant_id = NEW.tenant_id FOR UPDATE;
    IF NOT FOUND THEN
        head_seq := 0;
        head_hash := decode(repeat('00', 32), 'hex');
        INSERT INTO tenancy_audit_heads (tenant_id, seq, hash) VALUES (NEW.tenant_id, 0, head_hash);
    END IF;
    IF NEW.seq <> head_seq + 1 OR NEW.prev_hash <> head_hash THEN
        RAISE EXCEPTION 'audit event % does not extend the chain of tenant %', NEW.seq, NEW.tenant_id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    UPDATE tenancy_audit_heads SET seq = NEW.seq, hash = NEW.hash WHERE tenant_id = NEW.tenant_id;
    RETURN NEW;
END
$$;
CREATE TRIGGER tenancy_audit_events_extend_chain
    BEFORE INSERT ON tenancy_audit_events
    FOR EACH ROW EXECUTE FUNCTION tenancy_audit_extend_chain();

-- A head never moves back and is never deleted.
CREATE FUNCTION tenancy_audit_head_forward_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.seq < OLD.seq THEN
        RAISE EXCEPTION 'tenancy audit chain heads only move forward' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER tenancy_audit_heads_forward_only
    BEFORE UPDATE OR DELETE ON tenancy_audit_heads
    FOR EACH ROW EXECUTE FUNCTION tenancy_audit_head_forward_only();

CREATE FUNCTION tenancy_audit_append_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION 'tenancy audit events are append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER tenancy_audit_events_append_only
    BEFORE UPDATE OR DELETE ON tenancy_audit_events
    FOR EACH ROW EXECUTE FUNCTION tenancy_audit_append_only();
CREATE TRIGGER tenancy_audit_events_no_truncate
    BEFORE TRUNCATE ON tenancy_audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy_audit_append_only();

-- Row-level security on every tenant-owned table.
SELECT tenancy_enable_rls('tenancy_memberships');
SELECT tenancy_enable_rls('tenancy_invitations');
SELECT tenancy_enable_rls('tenancy_audit_events');
SELECT tenancy_enable_rls('tenancy_audit_heads');

-- A user-scoped transaction may read (never write) that user's own
-- memberships across tenants, to list the tenants they belong to.
CREATE POLICY tenancy_own_memberships ON tenancy_memberships
    FOR SELECT USING (user_id = tenancy_current_user());
