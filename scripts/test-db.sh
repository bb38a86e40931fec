#!/usr/bin/env bash
# Creates the Postgres role and database the test suite uses, and prints the
# DATABASE_URL to export. The role is an ordinary one (no SUPERUSER, no
# BYPASSRLS), so row-level security applies to it as it would to an app.
#
#   export DATABASE_URL=$(bash scripts/test-db.sh)
#
# Connects as PGADMIN_USER (default postgres) over PGHOST/PGPORT (default
# 127.0.0.1:5432). The database is dropped and recreated each time.
set -euo pipefail

host=${PGHOST:-127.0.0.1}
port=${PGPORT:-5432}
admin=${PGADMIN_USER:-postgres}
role=${TENANCY_TEST_ROLE:-tenancy_test}
# A second ordinary role the example apps can run as while $role owns the
# tables (APP_DATABASE_URL): it gets rows, never the tables themselves.
app_role=${TENANCY_APP_ROLE:-tenancy_app}
db=${TENANCY_TEST_DB:-tenancy_test}

for name in "$role" "$app_role" "$db" "$admin"; do
    [[ $name =~ ^[a-z_][a-z0-9_]*$ ]] || { echo "invalid identifier: $name" >&2; exit 2; }
done

psql_admin() {
    PGOPTIONS="--client-min-messages=warning" \
    psql -X -q -v ON_ERROR_STOP=1 -h "$host" -p "$port" -U "$admin" -d postgres "$@"
}

psql_admin >/dev/null <<SQL
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') THEN
        CREATE ROLE $role LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE;
    END IF;
END
\$\$;
ALTER ROLE $role NOSUPERUSER NOBYPASSRLS;
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$app_role') THEN
        CREATE ROLE $app_role LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE;
    END IF;
END
\$\$;
ALTER ROLE $app_role NOSUPERUSER NOBYPASSRLS;
DROP DATABASE IF EXISTS $db WITH (FORCE);
CREATE DATABASE $db OWNER $role;
SQL

echo "postgres://$role@$host:$port/$db"
