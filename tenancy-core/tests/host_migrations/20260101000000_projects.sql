-- A host application's own migration, run by its own `sqlx::migrate!()`
-- on the database tenancy migrates too.
CREATE TABLE host_projects (id uuid PRIMARY KEY, tenant_id uuid NOT NULL, name text NOT NULL);
