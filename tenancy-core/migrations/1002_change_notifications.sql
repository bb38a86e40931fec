-- Replicas that cache tenant status and members' roles learn of changes as
-- they commit, through LISTEN tenancy_tenant_changed ('<tenant id>') and
-- LISTEN tenancy_member_changed ('<tenant id>:<user id>').
CREATE FUNCTION tenancy_notify_tenant_changed() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_notify('tenancy_tenant_changed', NEW.id::text);
    RETURN NEW;
END
$$;
CREATE TRIGGER tenancy_tenants_notify_changed
    AFTER UPDATE OF status, slug ON tenancy_tenants
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.slug IS DISTINCT FROM NEW.slug)
    EXECUTE FUNCTION tenancy_notify_tenant_changed();

CREATE FUNCTION tenancy_notify_member_changed() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('tenancy_member_changed', OLD.tenant_id::text || ':' || OLD.user_id::text);
        RETURN OLD;
    END IF;
    PERFORM pg_notify('tenancy_member_changed', NEW.tenant_id::text || ':' || NEW.user_id::text);
    RETURN NEW;
END
$$;
CREATE TRIGGER tenancy_memberships_notify_changed
    AFTER INSERT OR UPDATE OR DELETE ON tenancy_memberships
    FOR EACH ROW EXECUTE FUNCTION tenancy_notify_member_changed();
