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

/// Measures another client's login latency during a storm of valid logins
/// from one client (50 at a time), with the default limits and with them
/// lifted. A measurement, ignored by default; run it in release:
///
/// ```text
/// cargo test --release -p tenancy-auth --features testkit --test memory \
///     login_storm -- --ignored --nocapture
/// ```
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a timing measurement: run it in release, on a quiet machine"]
async fn login_storm_latency() {
    use std::time::{Duration, Instant};
    use tenancy_auth::{
        AbuseLimits, Auth, AuthConfig, ClientInfo, Error, LoginRequest, Password, Registration,
    };
    use tenancy_core::{Email, NewTenant, NewUser, Slug, TenantName};

    async fn run(limits: AbuseLimits, storm_size: usize) -> (Duration, Duration, usize, usize) {
        let auth = Auth::builder(
            Arc::new(MemoryBackend::new()),
            Arc::new(MemoryAuthStore::new()),
            AuthConfig::new("https://storm.test", "storm").with_limits(limits),
        )
        .build()
        .await
        .unwrap();
        for (slug, email) in [("storm", "mallory@storm.test"), ("calm", "bob@storm.test")] {
            auth.register(
                Registration {
                    user: NewUser::new(Email::new(email).unwrap()),
                    password: Password::new("correct horse battery"),
                    tenant: NewTenant::new(
                        Slug::new(slug).unwrap(),
                        TenantName::new(slug).unwrap(),
                    ),
                },
                &ClientInfo::default(),
            )
            .await
            .unwrap();
        }
        let request = |email: &str| LoginRequest {
            email: email.to_owned(),
            password: Password::new("correct horse battery"),
            tenant: None,
        };
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let storm = ClientInfo::from_ip("203.0.113.50".parse().unwrap());
        let attackers: Vec<_> = (0..storm_size)
            .map(|_| {
                let (auth, stop, storm) = (auth.clone(), stop.clone(), storm.clone());
                let request = request("mallory@storm.test");
                tokio::spawn(async move {
                    let (mut ok, mut refused) = (0, 0);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        match auth.login(request.clone(), &storm).await {
                            Ok(_) => ok += 1,
                            Err(Error::RateLimited { .. } | Error::Overloaded { .. }) => {
                                refused += 1;
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            Err(other) => panic!("{other:?}"),
                        }
                    }
                    (ok, refused)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let calm = ClientInfo::from_ip("198.51.100.9".parse().unwrap());
        let mut latencies = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            auth.login(request("bob@storm.test"), &calm).await.unwrap();
            latencies.push(started.elapsed());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut ok, mut refused) = (0, 0);
        for attacker in attackers {
            let (o, r) = attacker.await.unwrap();
            ok += o;
            refused += r;
        }
        latencies.sort();
        (
            latencies[latencies.len() / 2],
            latencies[latencies.len() - 1],
            ok,
            refused,
        )
    }

    let unlimited = AbuseLimits::default()
        .with_login_rate(u32::MAX, u32::MAX)
        .with_login_concurrency(u32::MAX)
        .with_hash_queue(usize::MAX / 2, 0);
    let (quiet_p50, quiet_max, _, _) = run(AbuseLimits::default(), 0).await;
    let (before_p50, before_max, before_ok, _) = run(unlimited, 50).await;
    let (after_p50, after_max, after_ok, after_refused) = run(AbuseLimits::default(), 50).await;
    println!("no storm: bob's login p50 {quiet_p50:?}, max {quiet_max:?}");
    println!(
        "storm without limits: bob's login p50 {before_p50:?}, max {before_max:?}; \
         mallory's logins {before_ok}"
    );
    println!(
        "storm with the default limits: bob's login p50 {after_p50:?}, max {after_max:?}; \
         mallory's logins {after_ok}, refused {after_refused}"
    );
    assert!(after_p50 < before_p50);
}

/// Limits at their extremes are accepted, never a panic.
#[tokio::test]
async fn extreme_limits_build() {
    use tenancy_auth::{AbuseLimits, Auth, AuthConfig};
    let limits = AbuseLimits::default()
        .with_login_rate(u32::MAX, u32::MAX)
        .with_login_concurrency(u32::MAX)
        .with_hash_queue(usize::MAX, usize::MAX)
        .with_mail_queue(usize::MAX);
    let auth = Auth::builder(
        Arc::new(MemoryBackend::new()),
        Arc::new(MemoryAuthStore::new()),
        AuthConfig::new("https://edge.test", "edge").with_limits(limits),
    )
    .build()
    .await
    .unwrap();
    auth.wait_for_mail().await;
}
