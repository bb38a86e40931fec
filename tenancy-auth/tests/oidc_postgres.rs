//! The OAuth store conformance suite against Postgres (each test on a
//! fresh schema, as a role without `BYPASSRLS`: consents are behind
//! row-level security).
//!
//! Needs `DATABASE_URL`; skipped without it unless `CI=true`.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use tenancy_auth::oidc::PgOAuthStore;
use tenancy_auth::testkit::oidc::OAuthFixture;
use tenancy_core::postgres::PgBackend;
use tenancy_core::testkit::postgres::TestSchema;

async fn postgres() -> Option<OAuthFixture> {
    let schema = TestSchema::create().await?;
    let store = PgOAuthStore::new(schema.pool.clone());
    store.migrate().await.unwrap();
    Some(OAuthFixture {
        backend: Arc::new(PgBackend::new(schema.pool)),
        store: Arc::new(store),
    })
}

tenancy_auth::oauth_store_conformance_tests!(postgres());

/// Consents are invisible outside a transaction scoped to their tenant.
#[tokio::test]
async fn consents_are_behind_row_level_security() {
    use tenancy_auth::oidc::{ClientId, ClientKind, Consent, OAuthStore as _};
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store = PgOAuthStore::new(schema.pool.clone());
    store.migrate().await.unwrap();
    let backend = PgBackend::new(schema.pool.clone());
    let tenant = tenancy_core::Tenant {
        id: tenancy_core::TenantId::new(),
        slug: tenancy_core::Slug::new("rls-oauth").unwrap(),
        name: tenancy_core::TenantName::new("Rls").unwrap(),
        status: tenancy_core::TenantStatus::Active,
        metadata: tenancy_core::Metadata::empty(),
        created_at: time::OffsetDateTime::now_utc(),
        updated_at: time::OffsetDateTime::now_utc(),
    };
    tenancy_core::TenantStore::insert_tenant(&backend, &tenant)
        .await
        .unwrap();
    let id = ClientId::new();
    sqlx::query(
        "INSERT INTO tenancy_oauth_clients (id, tenant_id, name, kind, redirect_uris, post_logout_redirect_uris, grant_types, scopes, first_party, id_token_alg, created_by_kind, created_at, updated_at) \
         VALUES ($1, NULL, 'c', $2, '{}', '{}', '{}', '{}', false, 'RS256', 'system', now(), now())",
    )
    .bind(id.id().as_uuid())
    .bind(ClientKind::Public.as_str())
    .execute(&schema.pool)
    .await
    .unwrap();
    let user = tenancy_core::UserId::new();
    store
        .put_consent(&Consent::new(
            user,
            id.clone(),
            tenant.id,
            vec!["openid".into()],
            time::OffsetDateTime::now_utc(),
        ))
        .await
        .unwrap();
    assert!(
        store
            .find_consent(user, &id, tenant.id)
            .await
            .unwrap()
            .is_some()
    );
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy_oauth_consents")
        .fetch_one(&schema.pool)
        .await
        .unwrap();
    assert_eq!(visible, 0, "no tenant set: no consent visible");
}
