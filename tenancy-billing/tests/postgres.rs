//! The conformance suites against Postgres, plus what only Postgres has:
//! row-level security on the billing tables (as a non-superuser role) and
//! change notifications reaching another replica's cache.
//!
//! Needs `DATABASE_URL`; skipped without it unless `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers report failure by panicking

use std::sync::Arc;
use std::time::Duration;

use tenancy_billing::store::postgres::CHANGE_CHANNEL;
use tenancy_billing::testkit::postgres::fixture_with_schema;
use tenancy_billing::testkit::{create_tenant, subscription, unique_id};
use tenancy_billing::*;
use tenancy_core::AuditContext;
use tenancy_core::postgres::{Listener, begin_tenant_transaction};

tenancy_billing::conformance_tests!(tenancy_billing::testkit::postgres::fixture());

fn catalog() -> Catalog {
    Catalog::from_document(
        &CatalogDocument::new("free")
            .gate("sso")
            .plan("free", PlanDocument::default())
            .plan("pro", PlanDocument::default().grant("sso", true)),
    )
    .unwrap()
}

#[tokio::test]
async fn row_level_security_hides_other_tenants_rows() {
    let Some((schema, f)) = fixture_with_schema().await else {
        return;
    };
    let (superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&schema.pool)
            .await
            .unwrap();
    assert!(
        !superuser && !bypass,
        "connect as an ordinary role to test row-level security"
    );
    let a = create_tenant(&f.backend).await;
    let b = create_tenant(&f.backend).await;
    let c = CustomerId::new(unique_id("cus")).unwrap();
    let s = SubscriptionId::new(unique_id("sub")).unwrap();
    f.store
        .sync_subscription(
            a,
            &subscription(&s, &c, "pro", SubscriptionStatus::Active, 1),
            None,
            &AuditContext::system(),
        )
        .await
        .unwrap();
    f.store
        .add_override(
            &Override {
                id: OverrideId::new(),
                tenant_id: a,
                feature: "sso".into(),
                change: OverrideChange::Enable,
                expires_at: None,
                reason: "deal".into(),
                created_at: time::OffsetDateTime::now_utc(),
            },
            &AuditContext::system(),
        )
        .await
        .unwrap();
    for table in ["tenancy_billing_states", "tenancy_billing_overrides"] {
        let count = |tenant| {
            let pool = schema.pool.clone();
            async move {
                let mut tx = match tenant {
                    Some(t) => begin_tenant_transaction(&pool, t).await.unwrap(),
                    None => pool.begin().await.unwrap(),
                };
                let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT count(*) FROM {table}"
                )))
                .fetch_one(&mut *tx)
                .await
                .unwrap();
                n
            }
        };
        assert_eq!(count(None).await, 0, "{table} unscoped");
        assert_eq!(count(Some(b)).await, 0, "{table} seen from B");
        assert_eq!(count(Some(a)).await, 1, "{table} seen from A");
    }
    let mut tx = begin_tenant_transaction(&schema.pool, b).await.unwrap();
    let forged = sqlx::query(
        "INSERT INTO tenancy_billing_overrides (tenant_id, id, document, created_at) \
         VALUES ($1, gen_random_uuid(), '{}', now())",
    )
    .bind(a.as_uuid())
    .execute(&mut *tx)
    .await;
    assert!(
        forged
            .unwrap_err()
            .to_string()
            .contains("row-level security")
    );
    drop(tx);
    let mut tx = begin_tenant_transaction(&schema.pool, b).await.unwrap();
    let bumped = sqlx::query("UPDATE tenancy_billing_states SET revision = revision + 100")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(bumped.rows_affected(), 0);
    tx.commit().await.unwrap();
    assert_eq!(f.store.state(a).await.unwrap().revision, Revision(3));
}

/// Two replicas: a change written through one is announced by NOTIFY and
/// the other's cache resolves again.
#[tokio::test]
async fn another_replica_learns_of_changes() {
    let Some((schema, f)) = fixture_with_schema().await else {
        return;
    };
    let t = create_tenant(&f.backend).await;
    let sso = catalog().feature("sso").unwrap();
    let replica = Arc::new(EntitlementCache::new(
        Arc::clone(&f.store),
        catalog(),
        AccessPolicy::new(),
    ));
    let mut listener = Listener::new(schema.pool.clone());
    listener.subscribe([CHANGE_CHANNEL], replica.clone());
    let running = listener.start().await.unwrap();
    assert!(!replica.get(t).await.unwrap().check(sso));
    let c = CustomerId::new(unique_id("cus")).unwrap();
    let s = SubscriptionId::new(unique_id("sub")).unwrap();
    f.store
        .sync_subscription(
            t,
            &subscription(&s, &c, "pro", SubscriptionStatus::Active, 1),
            None,
            &AuditContext::system(),
        )
        .await
        .unwrap();
    let mut granted = false;
    for _ in 0..100 {
        if replica.get(t).await.unwrap().check(sso) {
            granted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(granted, "the other replica never heard of the change");
    drop(running);
}
