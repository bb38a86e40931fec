-- The transactional outbox: per-tenant streams of events, appended in the
-- transaction of the change they report.
--
-- tenancy_outbox_heads holds each stream's last number. An append updates
-- that row, whose lock it keeps until its transaction ends: appends to one
-- tenant wait for each other, so numbers are given in commit order and a
-- reader never sees number n+1 before number n.
CREATE TABLE tenancy_outbox_heads (
    tenant_id  uuid PRIMARY KEY CONSTRAINT tenancy_outbox_heads_tenant_fkey REFERENCES tenancy_tenants (id),
    seq        bigint NOT NULL CHECK (seq > 0)
);

CREATE TABLE tenancy_outbox_events (
    tenant_id    uuid NOT NULL CONSTRAINT tenancy_outbox_events_tenant_fkey REFERENCES tenancy_tenants (id),
    seq          bigint NOT NULL CHECK (seq > 0),
    id           uuid NOT NULL,
    event_type   text NOT NULL CHECK (length(event_type) BETWEEN 3 AND 128),
    version      bigint NOT NULL CHECK (version BETWEEN 1 AND 4294967295),
    occurred_at  timestamptz NOT NULL,
    data         jsonb NOT NULL,
    CONSTRAINT tenancy_outbox_events_pkey PRIMARY KEY (tenant_id, seq),
    CONSTRAINT tenancy_outbox_events_id_key UNIQUE (id)
);
CREATE INDEX tenancy_outbox_events_occurred_idx ON tenancy_outbox_events (occurred_at);

SELECT tenancy_enable_rls('tenancy_outbox_heads');
SELECT tenancy_enable_rls('tenancy_outbox_events');

-- Relays read and purge across tenants: a transaction that sets
-- tenancy.outbox_relay to 'on' sees every tenant's heads and events (and
-- changes neither). Like tenancy.tenant_id, the setting guards against a
-- query that forgot its tenant, not against SQL the app role runs on
-- purpose.
CREATE POLICY tenancy_outbox_relay_read ON tenancy_outbox_heads
    FOR SELECT USING (current_setting('tenancy.outbox_relay', true) = 'on');
CREATE POLICY tenancy_outbox_relay_read ON tenancy_outbox_events
    FOR SELECT USING (current_setting('tenancy.outbox_relay', true) = 'on');
CREATE POLICY tenancy_outbox_relay_purge ON tenancy_outbox_events
    FOR DELETE USING (current_setting('tenancy.outbox_relay', true) = 'on');

-- Each consumer's position in each tenant's stream. A relay claims a
-- tenant by locking its row (FOR UPDATE SKIP LOCKED) for as long as it
-- delivers the batch; turn orders tenants so they take turns.
CREATE TABLE tenancy_outbox_cursors (
    consumer   text NOT NULL CHECK (length(consumer) BETWEEN 1 AND 64),
    tenant_id  uuid NOT NULL CONSTRAINT tenancy_outbox_cursors_tenant_fkey REFERENCES tenancy_tenants (id),
    seq        bigint NOT NULL DEFAULT 0 CHECK (seq >= 0),
    turn       timestamptz NOT NULL DEFAULT '-infinity',
    CONSTRAINT tenancy_outbox_cursors_pkey PRIMARY KEY (consumer, tenant_id)
);
CREATE INDEX tenancy_outbox_cursors_turn_idx ON tenancy_outbox_cursors (consumer, turn);

-- A tenant's transaction moves only its own positions (a rewind); relays
-- move every tenant's.
SELECT tenancy_enable_rls('tenancy_outbox_cursors');
CREATE POLICY tenancy_outbox_relay ON tenancy_outbox_cursors
    USING (current_setting('tenancy.outbox_relay', true) = 'on')
    WITH CHECK (current_setting('tenancy.outbox_relay', true) = 'on');
