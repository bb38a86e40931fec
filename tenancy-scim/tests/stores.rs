//! The store conformance suite on memory and Postgres, and row-level
//! security on the SCIM tables (as an ordinary role).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use tenancy_core::MemoryBackend;
use tenancy_scim::store::MemoryScimStore;
use tenancy_scim::testkit::store_suite;

#[tokio::test]
async fn memory_store_conforms() {
    store_suite(
        Arc::new(MemoryBackend::new()),
        Arc::new(MemoryScimStore::new()),
    )
    .await;
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::sync::Arc;

    use serde_json::json;
    use tenancy_core::postgres::{PgBackend, begin_tenant_transaction, migrate_all};
    use tenancy_core::testkit::postgres::TestSchema;
    use tenancy_core::{
        AuditContext, Directory, Email, NewTenant, NewUser, Owner, Slug, TenantName,
    };
    use tenancy_scim::store::postgres::{PgScimStore, migrator};
    use tenancy_scim::testkit::store_suite;
    use tenancy_scim::{Deprovision, GroupRecord, ScimStore, TenantSettings, UserRecord};

    async fn migrated() -> Option<(TestSchema, PgBackend)> {
        let schema = TestSchema::create().await?;
        migrate_all(
            &schema.pool,
            [tenancy_core::postgres::migrator(), migrator()],
        )
        .await
        .unwrap();
        let backend = PgBackend::new(schema.pool.clone());
        Some((schema, backend))
    }

    #[tokio::test]
    async fn postgres_store_conforms() {
        let Some((schema, backend)) = migrated().await else {
            return;
        };
        store_suite(
            Arc::new(backend),
            Arc::new(PgScimStore::new(schema.pool.clone())),
        )
        .await;
    }

    #[tokio::test]
    async fn row_level_security_hides_other_tenants_records() {
        let Some((schema, backend)) = migrated().await else {
            return;
        };
        let (superuser, bypass): (bool, bool) = sqlx::query_as(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
        )
        .fetch_one(&schema.pool)
        .await
        .unwrap();
        assert!(
            !superuser && !bypass,
            "connect as an ordinary role to test row-level security"
        );
        let directory = Directory::new(Arc::new(backend));
        let mut tenants = Vec::new();
        for slug in ["rls-a", "rls-b"] {
            let created = directory
                .create_tenant(
                    NewTenant::new(Slug::new(slug).unwrap(), TenantName::new(slug).unwrap()),
                    Owner::New(NewUser::new(Email::new(&format!("o@{slug}.test")).unwrap())),
                    &AuditContext::system(),
                )
                .await
                .unwrap();
            tenants.push((created.tenant.id, created.membership.user_id));
        }
        let store = PgScimStore::new(schema.pool.clone());
        let now = time::OffsetDateTime::now_utc();
        let (a, a_user) = tenants[0];
        let (b, _) = tenants[1];
        let record = UserRecord {
            id: uuid::Uuid::now_v7(),
            tenant_id: a,
            user_id: a_user,
            user_name: "o@rls-a.test".into(),
            external_id: None,
            active: true,
            attributes: serde_json::Map::new(),
            version: 1,
            created_at: now,
            updated_at: now,
        };
        store.insert_user(&record).await.unwrap();
        store
            .insert_group(&GroupRecord {
                id: uuid::Uuid::now_v7(),
                tenant_id: a,
                display_name: "Admins".into(),
                external_id: None,
                members: vec![record.id],
                version: 1,
                created_at: now,
                updated_at: now,
            })
            .await
            .unwrap();
        store
            .put_settings(&TenantSettings {
                tenant_id: a,
                deprovision: Deprovision::Remove,
                group_roles: Vec::new(),
                updated_at: now,
            })
            .await
            .unwrap();
        let count_in = |table: &'static str, tenant: Option<tenancy_core::TenantId>| {
            let pool = schema.pool.clone();
            async move {
                let mut tx = match tenant {
                    Some(t) => begin_tenant_transaction(&pool, t).await.unwrap(),
                    None => pool.begin().await.unwrap(),
                };
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                    "SELECT count(*) FROM {table}"
                )))
                .fetch_one(&mut *tx)
                .await
                .unwrap()
            }
        };
        for table in [
            "tenancy_scim_users",
            "tenancy_scim_groups",
            "tenancy_scim_group_members",
            "tenancy_scim_settings",
        ] {
            assert_eq!(count_in(table, None).await, 0, "{table} unscoped");
            assert_eq!(count_in(table, Some(b)).await, 0, "{table} seen from B");
            assert_eq!(count_in(table, Some(a)).await, 1, "{table} seen from A");
        }
        // B's scope can neither change A's record nor write one for A.
        let mut tx = begin_tenant_transaction(&schema.pool, b).await.unwrap();
        let updated = sqlx::query("UPDATE tenancy_scim_users SET user_name = 'x'")
            .execute(&mut *tx)
            .await
            .unwrap();
        assert_eq!(updated.rows_affected(), 0);
        let forged = sqlx::query(
            "INSERT INTO tenancy_scim_users (tenant_id, id, user_id, user_name, active, attributes, version, created_at, updated_at) \
             VALUES ($1, gen_random_uuid(), $2, 'forged', true, $3, 1, now(), now())",
        )
        .bind(a.as_uuid())
        .bind(a_user.as_uuid())
        .bind(json!({}))
        .execute(&mut *tx)
        .await;
        assert!(
            forged.is_err(),
            "row-level security refuses a row of another tenant"
        );
    }
}
