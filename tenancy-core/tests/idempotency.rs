//! The idempotency store conformance suite, in memory and on Postgres
//! (`DATABASE_URL`; skipped without it unless `CI=true`), and the row-level
//! security of the Postgres table under an ordinary role.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use tenancy_core::{IdempotencyStore, MemoryIdempotencyStore};

mod memory {
    use super::*;

    async fn store() -> Option<Arc<dyn IdempotencyStore>> {
        Some(Arc::new(MemoryIdempotencyStore::new()))
    }

    tenancy_core::idempotency_store_tests!(store());
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use sqlx::Row;
    use tenancy_core::postgres::{PgBackend, PgIdempotencyStore, begin_tenant_transaction};
    use tenancy_core::testkit::postgres::TestSchema;
    use tenancy_core::{Fingerprint, IdempotencyKey, IdempotencyScope, Lifetimes, TenantId};

    async fn migrated() -> Option<TestSchema> {
        let schema = TestSchema::create().await?;
        PgBackend::new(schema.pool.clone()).migrate().await.unwrap();
        Some(schema)
    }

    async fn store() -> Option<Arc<dyn IdempotencyStore>> {
        let schema = migrated().await?;
        Some(Arc::new(PgIdempotencyStore::new(schema.pool)))
    }

    tenancy_core::idempotency_store_tests!(store());

    /// The test role is an ordinary one, so row-level security applies:
    /// a tenant's transaction sees its own keys only, and a transaction of
    /// no tenant sees none.
    #[tokio::test]
    async fn keys_are_tenant_isolated_by_row_level_security() {
        let Some(schema) = migrated().await else {
            return;
        };
        let store = PgIdempotencyStore::new(schema.pool.clone());
        let (a, b) = (TenantId::new(), TenantId::new());
        let lifetimes = Lifetimes {
            ttl: time::Duration::hours(1),
            lease: time::Duration::seconds(60),
        };
        for tenant in [a, b] {
            let scope =
                IdempotencyScope::new(tenant, "user:x", IdempotencyKey::new("k").unwrap()).unwrap();
            store
                .claim(
                    &scope,
                    &Fingerprint::of("POST", "/", b""),
                    time::OffsetDateTime::now_utc(),
                    lifetimes,
                )
                .await
                .unwrap();
        }
        let mut tx = begin_tenant_transaction(&schema.pool, a).await.unwrap();
        let rows = sqlx::query("SELECT tenant_id FROM tenancy_idempotency_keys")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        let seen: uuid::Uuid = rows[0].get("tenant_id");
        assert_eq!(seen, a.as_uuid());
        // Writing another tenant's row is refused by the policy.
        let refused = sqlx::query(
            "INSERT INTO tenancy_idempotency_keys \
             (tenant_id, caller, key, fingerprint, token, locked_until, expires_at, created_at) \
             VALUES ($1, 'user:y', 'k', decode(repeat('00', 32), 'hex'), gen_random_uuid(), now(), now(), now())",
        )
        .bind(b.as_uuid())
        .execute(&mut *tx)
        .await;
        assert!(refused.is_err());
        drop(tx);
        let mut conn = schema.pool.acquire().await.unwrap();
        let none: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy_idempotency_keys")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(none, 0);
    }
}
