-- SCIM Groups and per-tenant SCIM settings. Every table is tenant-owned and
-- under row-level security like tenancy_scim_users.

CREATE TABLE tenancy_scim_groups (
    tenant_id     uuid NOT NULL CONSTRAINT tenancy_scim_groups_tenant_fkey REFERENCES tenancy_tenants (id),
    id            uuid NOT NULL,
    display_name  text NOT NULL,
    external_id   text,
    version       bigint NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX tenancy_scim_groups_display_name_key ON tenancy_scim_groups (tenant_id, lower(display_name));

-- A member is a SCIM user record of the same tenant: deleting the record
-- (or the group) removes the membership.
CREATE TABLE tenancy_scim_group_members (
    tenant_id  uuid NOT NULL,
    group_id   uuid NOT NULL,
    user_id    uuid NOT NULL,
    PRIMARY KEY (tenant_id, group_id, user_id),
    CONSTRAINT tenancy_scim_group_members_group_fkey FOREIGN KEY (tenant_id, group_id)
        REFERENCES tenancy_scim_groups (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT tenancy_scim_group_members_user_fkey FOREIGN KEY (tenant_id, user_id)
        REFERENCES tenancy_scim_users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX tenancy_scim_group_members_user_idx ON tenancy_scim_group_members (tenant_id, user_id);

-- What a tenant chose: the deprovisioning mode and the group → role mapping.
CREATE TABLE tenancy_scim_settings (
    tenant_id    uuid PRIMARY KEY CONSTRAINT tenancy_scim_settings_tenant_fkey REFERENCES tenancy_tenants (id),
    deprovision  text NOT NULL CHECK (deprovision IN ('suspend', 'remove')),
    group_roles  jsonb NOT NULL,
    updated_at   timestamptz NOT NULL
);

SELECT tenancy_enable_rls('tenancy_scim_groups');
SELECT tenancy_enable_rls('tenancy_scim_group_members');
SELECT tenancy_enable_rls('tenancy_scim_settings');
