//! Access-token and API-key verification through the `Authenticator`,
//! side by side with bare `jsonwebtoken::decode` on the same tokens, and
//! argon2id at its default cost.
//!
//! ```text
//! cargo bench -p tenancy-benches --bench auth
//! ```

#![allow(clippy::expect_used)] // benchmark setup: a failure should stop the run

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use tenancy::auth::{
    Argon2Config, Auth, AuthConfig, ClientInfo, Credentials, KeyAlgorithm, MemoryAuthStore,
    NewApiKey, Password, PasswordHasher, Registration, Scope,
};
use tenancy::{AuditContext, Email, MemoryBackend, NewTenant, NewUser, Slug, TenantName};

const ISSUER: &str = "https://bench.example";
const AUDIENCE: &str = "bench";

struct Setup {
    cached: Auth,
    uncached: Auth,
    token: String,
    api_key: String,
    decoding: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
}

async fn setup(algorithm: KeyAlgorithm) -> Setup {
    let backend = Arc::new(MemoryBackend::new());
    let store = Arc::new(MemoryAuthStore::new());
    let config = |cache: usize| {
        let mut config = AuthConfig::new(ISSUER, AUDIENCE);
        config.algorithm = algorithm;
        config.allow_hs256 = true;
        config.token_cache_capacity = cache;
        config.argon2 = Argon2Config::new(1024, 1, 1);
        // The baseline below reads the HS256 secret back from the store.
        config.key_encryption = tenancy::auth::KeyEncryption::InsecurePlaintext;
        config
    };
    let cached = Auth::builder(backend.clone(), store.clone(), config(10_000))
        .build()
        .await
        .expect("auth");
    let uncached = Auth::builder(backend, store.clone(), config(0))
        .build()
        .await
        .expect("auth");
    let registered = cached
        .register(
            Registration {
                user: NewUser::new(Email::new("bench@bench.example").expect("email")),
                password: Password::new("correct horse battery staple"),
                tenant: NewTenant::new(
                    Slug::new("bench").expect("slug"),
                    TenantName::new("Bench").expect("name"),
                ),
            },
            &ClientInfo::default(),
        )
        .await
        .expect("register");
    let scope = cached
        .directory()
        .scope(registered.membership.tenant_id)
        .await
        .expect("scope");
    let (_, secret) = cached
        .create_api_key(
            &scope,
            NewApiKey {
                name: "bench".into(),
                scopes: vec![Scope::new("projects:read").expect("scope")],
                expires_at: None,
            },
            &AuditContext::system(),
        )
        .await
        .expect("api key");
    let token = registered.access_token.token.clone();
    // The bare comparison: the same key and the same iss/aud/exp checks.
    let kid = jsonwebtoken::decode_header(&token)
        .expect("header")
        .kid
        .expect("kid");
    let decoding = match algorithm {
        KeyAlgorithm::Hs256 => {
            let key = store_key(&store, &kid).await;
            let secret = match &key.private_key {
                tenancy::auth::StoredPrivateKey::Plaintext(jwk) => {
                    jwk.expose_secret()["k"].as_str()
                }
                _ => None,
            }
            .expect("the bench stores keys in plaintext")
            .to_owned();
            jsonwebtoken::DecodingKey::from_base64_secret(&to_standard_base64(&secret))
                .expect("secret")
        }
        _ => {
            let jwks = cached.jwks();
            let jwk = jwks["keys"]
                .as_array()
                .expect("keys")
                .iter()
                .find(|k| k["kid"] == kid.as_str())
                .expect("published key");
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).expect("jwk");
            jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("decoding key")
        }
    };
    let mut validation = jsonwebtoken::Validation::new(algorithm_of(algorithm));
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    Setup {
        cached,
        uncached,
        token,
        api_key: secret.expose_secret().to_owned(),
        decoding,
        validation,
    }
}

async fn store_key(store: &MemoryAuthStore, kid: &str) -> tenancy::auth::StoredKey {
    use tenancy::auth::KeyStore as _;
    store
        .list_signing_keys()
        .await
        .expect("keys")
        .into_iter()
        .find(|k| k.kid == kid)
        .expect("key")
}

fn to_standard_base64(url_safe: &str) -> String {
    let mut text = url_safe.replace('-', "+").replace('_', "/");
    while !text.len().is_multiple_of(4) {
        text.push('=');
    }
    text
}

fn algorithm_of(algorithm: KeyAlgorithm) -> jsonwebtoken::Algorithm {
    algorithm.as_str().parse().expect("a JWS algorithm")
}

fn verification(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for algorithm in [
        KeyAlgorithm::EdDsa,
        KeyAlgorithm::Es256,
        KeyAlgorithm::Rs256,
        KeyAlgorithm::Hs256,
    ] {
        let s = runtime.block_on(setup(algorithm));
        let header = format!("Bearer {}", s.token);
        let mut group = c.benchmark_group(format!("verify/{algorithm}"));
        group.bench_function("jsonwebtoken::decode", |b| {
            b.iter(|| {
                jsonwebtoken::decode::<serde_json::Value>(
                    black_box(&s.token),
                    &s.decoding,
                    &s.validation,
                )
                .expect("valid")
            })
        });
        group.bench_function("Authenticator, uncached", |b| {
            b.to_async(&runtime).iter(|| async {
                s.uncached
                    .authenticator()
                    .authenticate(Credentials::bearer(black_box(&header)))
                    .await
                    .expect("valid")
            })
        });
        group.bench_function("Authenticator, cached repeat", |b| {
            b.to_async(&runtime).iter(|| async {
                s.cached
                    .authenticator()
                    .authenticate(Credentials::bearer(black_box(&header)))
                    .await
                    .expect("valid")
            })
        });
        group.finish();
        if algorithm == KeyAlgorithm::EdDsa {
            c.bench_function("api_key/verify (memory store)", |b| {
                b.to_async(&runtime).iter(|| async {
                    s.cached
                        .authenticator()
                        .verify_api_key(black_box(&s.api_key), None)
                        .await
                        .expect("valid")
                })
            });
        }
    }
}

fn argon2(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let hasher = PasswordHasher::new(Argon2Config::default()).expect("hasher");
    let password = Password::new("correct horse battery staple");
    let hash = runtime.block_on(hasher.hash(&password)).expect("hash");
    let mut group = c.benchmark_group("argon2id (m=19456 KiB, t=2, p=1)");
    group.sample_size(10);
    group.bench_function("hash", |b| {
        b.to_async(&runtime)
            .iter(|| async { hasher.hash(black_box(&password)).await.expect("hash") })
    });
    group.bench_function("verify", |b| {
        b.to_async(&runtime).iter(|| async {
            hasher
                .verify(black_box(&password), &hash)
                .await
                .expect("verify")
        })
    });
    group.finish();
}

criterion_group!(benches, verification, argon2);
criterion_main!(benches);
