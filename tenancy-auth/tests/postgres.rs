//! The auth conformance suites against Postgres (each test on a fresh
//! schema), plus the LISTEN/NOTIFY revocation path.
//!
//! Needs `DATABASE_URL` (see the README); skipped without it unless `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers report failure by panicking

use std::sync::Arc;

use tenancy_auth::postgres::{PgAuthStore, listen_revocations};
use tenancy_auth::testkit::Fixture;
use tenancy_auth::{RevocationSet, RevokeReason, SessionStore};
use tenancy_core::postgres::PgBackend;
use tenancy_core::testkit::postgres::TestSchema;

async fn stores() -> Option<(PgBackend, PgAuthStore)> {
    let schema = TestSchema::create().await?;
    let store = PgAuthStore::new(schema.pool.clone());
    store.migrate().await.unwrap();
    Some((PgBackend::new(schema.pool), store))
}

async fn postgres() -> Option<Fixture> {
    let (backend, store) = stores().await?;
    Some(Fixture {
        backend: Arc::new(backend),
        store: Arc::new(store),
    })
}

tenancy_auth::auth_conformance_tests!(postgres());

/// A revocation committed anywhere reaches a listening replica's set
/// without waiting for a sync.
#[tokio::test]
async fn revocations_arrive_through_listen_notify() {
    let Some((backend, store)) = stores().await else {
        return;
    };
    let store = Arc::new(store);
    let fixture = Fixture {
        backend: Arc::new(backend),
        store: store.clone(),
    };
    let (tenant, user) = tenancy_auth_seed(&fixture).await;
    let set = Arc::new(RevocationSet::new());
    let listener = listen_revocations(
        store.pool().clone(),
        store.clone(),
        set.clone(),
        time::Duration::days(30),
    );
    // Let the listener subscribe.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let session = tenancy_auth::Session {
        id: tenancy_core::SessionId::new(),
        user_id: user,
        tenant_id: tenant,
        user_agent: None,
        ip: None,
        created_at: time::OffsetDateTime::now_utc(),
        last_seen_at: time::OffsetDateTime::now_utc(),
        idle_expires_at: time::OffsetDateTime::now_utc() + time::Duration::days(1),
        absolute_expires_at: time::OffsetDateTime::now_utc() + time::Duration::days(2),
        revoked_at: None,
        revoke_reason: None,
    };
    let record = tenancy_auth::RefreshRecord {
        token_hash: tenancy_core::TokenHash::of(b"listen-notify"),
        session_id: session.id,
        issued_at: session.created_at,
    };
    store.create_session(&session, &record, 10).await.unwrap();
    assert!(!set.contains(session.id));
    store
        .revoke_session(
            session.id,
            RevokeReason::Revoked,
            time::OffsetDateTime::now_utc(),
        )
        .await
        .unwrap();
    let mut seen = false;
    for _ in 0..50 {
        if set.contains(session.id) {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    listener.abort();
    assert!(seen, "the revocation never arrived");
}

async fn tenancy_auth_seed(fixture: &Fixture) -> (tenancy_core::TenantId, tenancy_core::UserId) {
    use tenancy_core::{Directory, Email, NewTenant, NewUser, Owner, Slug, TenantName};
    let created = Directory::new(fixture.backend.clone())
        .create_tenant(
            NewTenant::new(
                Slug::new("listening").unwrap(),
                TenantName::new("Listening").unwrap(),
            ),
            Owner::New(NewUser::new(Email::new("ada@listen.test").unwrap())),
            &tenancy_core::AuditContext::system(),
        )
        .await
        .unwrap();
    (created.tenant.id, created.owner.id)
}

/// Whoever reads the signing-key table finds no private key material; and
/// with no key-encryption key configured, Auth refuses to start.
#[tokio::test]
async fn private_signing_keys_are_not_stored_in_plaintext() {
    use tenancy_auth::{Auth, AuthConfig, ConfigError, KeyEncryption, KeyEncryptionKey};
    let Some((backend, store)) = stores().await else {
        return;
    };
    let pool = store.pool().clone();
    let (backend, store) = (Arc::new(backend), Arc::new(store));
    let config = AuthConfig::new("https://rest.test", "rest");
    assert!(matches!(
        Auth::builder(backend.clone(), store.clone(), config.clone())
            .build()
            .await,
        Err(ConfigError::KeyEncryptionRequired)
    ));
    let kek = KeyEncryptionKey::generate("rest-1").unwrap();
    Auth::builder(
        backend,
        store,
        config.with_key_encryption(KeyEncryption::key(kek)),
    )
    .build()
    .await
    .unwrap();
    let rows: Vec<(Option<serde_json::Value>, Option<String>)> =
        sqlx::query_as("SELECT private_jwk, private_jwe FROM tenancy_signing_keys")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    let (plaintext, encrypted) = &rows[0];
    assert_eq!(plaintext, &None);
    let encrypted = encrypted.as_deref().unwrap();
    // A compact JWE: five parts, the header naming dir, A256GCM and the key.
    assert_eq!(encrypted.split('.').count(), 5);
    assert!(!encrypted.contains("\"d\""));
}
