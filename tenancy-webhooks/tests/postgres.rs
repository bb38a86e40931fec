//! The conformance suite on Postgres (`DATABASE_URL`; skipped without it
//! unless `CI=true`), plus row-level security as a non-superuser role.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

tenancy_webhooks::conformance_tests!(tenancy_webhooks::testkit::postgres::fixture());

#[tokio::test]
async fn row_level_security_hides_other_tenants_rows() {
    let Some((schema, f)) = tenancy_webhooks::testkit::postgres::fixture_with_schema().await else {
        return;
    };
    let (superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&schema.pool)
            .await
            .unwrap();
    assert!(
        !superuser && !bypass,
        "RLS is only proven as an ordinary role"
    );
    let a = tenancy_webhooks::testkit::create_tenant(&f, "rls-a").await;
    let b = tenancy_webhooks::testkit::create_tenant(&f, "rls-b").await;
    let webhooks_store = f.store.clone();
    let endpoint = tenancy_webhooks::testkit::sample_endpoint(a);
    webhooks_store
        .create_endpoint(&endpoint, &tenancy_webhooks::testkit::sample_secrets(), 10)
        .await
        .unwrap();
    // Scoped to tenant b, even a query without a tenant filter sees nothing.
    let mut tx = tenancy_core::postgres::begin_tenant_transaction(&schema.pool, b)
        .await
        .unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy_webhook_endpoints")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, 0);
    // Nor can it write a row for tenant a.
    let write = sqlx::query(
        "UPDATE tenancy_webhook_endpoints SET url = 'https://evil.example/' WHERE id = $1",
    )
    .bind(endpoint.id.as_uuid())
    .execute(&mut *tx)
    .await
    .unwrap();
    assert_eq!(write.rows_affected(), 0);
    drop(tx);
    let mut tx = tenancy_core::postgres::begin_tenant_transaction(&schema.pool, a)
        .await
        .unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy_webhook_endpoints")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, 1);
}
