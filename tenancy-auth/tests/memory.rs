//! The auth conformance suites against the in-memory stores.

#![allow(clippy::unwrap_used)] // test assertions

use std::sync::Arc;

use tenancy_auth::MemoryAuthStore;
use tenancy_auth::testkit::Fixture;
use tenancy_core::MemoryBackend;

async fn memory() -> Option<Fixture> {
    Some(Fixture {
        backend: Arc::new(MemoryBackend::new()),
        store: Arc::new(MemoryAuthStore::new()),
    })
}

tenancy_auth::auth_conformance_tests!(memory());

/// Host claims from a `ClaimsHook` reach the principal; registered claim
/// names cannot be overridden through it.
#[tokio::test]
async fn host_claims_travel_in_the_token() {
    use serde_json::{Map, Value, json};
    use tenancy_auth::{
        Argon2Config, Auth, AuthConfig, ClaimsHook, ClientInfo, Credentials, Password, Registration,
    };
    use tenancy_core::{Email, Membership, NewTenant, NewUser, Slug, TenantName, User};

    struct Plan;
    impl ClaimsHook for Plan {
        fn extra_claims(&self, _user: &User, membership: &Membership) -> Map<String, Value> {
            let mut claims = Map::new();
            claims.insert("plan".into(), json!("pro"));
            claims.insert("seats".into(), json!(12));
            claims.insert("tid".into(), json!("forged"));
            claims.insert(
                "tenant_roles".into(),
                json!(membership.roles.as_slice().len()),
            );
            claims
        }
    }

    let config =
        AuthConfig::new("https://claims.test", "claims").with_argon2(Argon2Config::new(1024, 1, 1));
    let auth = Auth::builder(
        Arc::new(MemoryBackend::new()),
        Arc::new(MemoryAuthStore::new()),
        config,
    )
    .claims_hook(Arc::new(Plan))
    .build()
    .await
    .unwrap();
    let registered = auth
        .register(
            Registration {
                user: NewUser::new(Email::new("ada@claims.test").unwrap()),
                password: Password::new("correct horse battery"),
                tenant: NewTenant::new(
                    Slug::new("claims").unwrap(),
                    TenantName::new("Claims").unwrap(),
                ),
            },
            &ClientInfo::default(),
        )
        .await
        .unwrap();
    let principal = auth
        .authenticator()
        .authenticate(Credentials::bearer(&format!(
            "Bearer {}",
            registered.access_token.token
        )))
        .await
        .unwrap();
    assert_eq!(principal.claim::<String>("plan").unwrap().unwrap(), "pro");
    assert_eq!(principal.claim::<u32>("seats").unwrap().unwrap(), 12);
    assert!(principal.claim::<u32>("plan").unwrap().is_err());
    assert!(principal.claim::<String>("missing").is_none());
    assert_eq!(principal.tenant_id, registered.membership.tenant_id);
    assert!(principal.extra.get("tid").is_none());
}

/// In memory, with no key-encryption key configured, signing keys are
/// encrypted under a key made for the process; plaintext is an explicit
/// choice.
#[tokio::test]
async fn memory_stores_encrypt_under_a_process_key() {
    use tenancy_auth::{Auth, AuthConfig, KeyEncryption, KeyStore as _, StoredPrivateKey};
    for (encryption, encrypted) in [
        (KeyEncryption::Unconfigured, true),
        (KeyEncryption::InsecurePlaintext, false),
    ] {
        let store = Arc::new(MemoryAuthStore::new());
        let auth = Auth::builder(
            Arc::new(MemoryBackend::new()),
            store.clone(),
            AuthConfig::new("https://mem.test", "mem").with_key_encryption(encryption),
        )
        .build()
        .await
        .unwrap();
        auth.rotate_signing_key().await.unwrap();
        for key in store.list_signing_keys().await.unwrap() {
            assert_eq!(
                matches!(key.private_key, StoredPrivateKey::Encrypted(_)),
                encrypted
            );
        }
    }
    // The process key belongs to the store: another Auth over it reads its keys.
    let (backend, store) = (
        Arc::new(MemoryBackend::new()),
        Arc::new(MemoryAuthStore::new()),
    );
    let config = AuthConfig::new("https://mem.test", "mem");
    let first = Auth::builder(backend.clone(), store.clone(), config.clone())
        .build()
        .await
        .unwrap();
    let second = Auth::builder(backend, store, config).build().await.unwrap();
    assert_eq!(first.keys().active_kid(), second.keys().active_kid());
}
