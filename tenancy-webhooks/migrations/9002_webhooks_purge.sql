-- Purging old delivery-log rows and kept events (Webhooks::purge).

-- A purge deletes across tenants: a transaction that sets
-- tenancy.webhook_purge to 'on' sees and deletes every tenant's delivery
-- log and kept events. Nothing else sets it.
CREATE POLICY tenancy_webhook_deliveries_purge_read ON tenancy_webhook_deliveries
    FOR SELECT USING (current_setting('tenancy.webhook_purge', true) = 'on');
CREATE POLICY tenancy_webhook_deliveries_purge ON tenancy_webhook_deliveries
    FOR DELETE USING (current_setting('tenancy.webhook_purge', true) = 'on');
CREATE POLICY tenancy_webhook_messages_purge_read ON tenancy_webhook_messages
    FOR SELECT USING (current_setting('tenancy.webhook_purge', true) = 'on');
CREATE POLICY tenancy_webhook_messages_purge ON tenancy_webhook_messages
    FOR DELETE USING (current_setting('tenancy.webhook_purge', true) = 'on');

-- What a purge looks up: log rows by time, log rows of an event, events
-- by the time they were kept.
CREATE INDEX tenancy_webhook_deliveries_at_idx ON tenancy_webhook_deliveries (at);
CREATE INDEX tenancy_webhook_deliveries_event_idx
    ON tenancy_webhook_deliveries (tenant_id, event_id);
CREATE INDEX tenancy_webhook_messages_stored_at_idx ON tenancy_webhook_messages (stored_at);
