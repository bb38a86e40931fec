//! What the request pipeline (JWT authentication, tenant resolution and
//! status, RBAC check) adds to a trivial handler, in-process, against the
//! same handler with no pipeline.
//!
//! ```text
//! cargo bench --bench http --features axum
//! ```

#![allow(clippy::expect_used)] // benchmark setup: a failure should stop the run

use std::hint::black_box;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use tenancy::axum::{TenancyLayer, require};
use tenancy::http::auth::{Argon2Config, AuthConfig, ClientInfo, Password, Registration};
use tenancy::http::authz::Catalog;
use tenancy::http::{HttpConfig, Tenancy};
use tenancy::{Email, NewTenant, NewUser, Slug, TenantName};
use tower::ServiceExt;

async fn tenancy(cache: usize) -> (Tenancy, String) {
    let mut auth = AuthConfig::new("https://bench.example", "bench");
    auth.argon2 = Argon2Config {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };
    auth.token_cache_capacity = cache;
    let tenancy = Tenancy::in_memory(
        Catalog::new(["projects:read"]).expect("catalog"),
        auth,
        HttpConfig::default(),
    )
    .await
    .expect("tenancy");
    let registered = tenancy
        .auth()
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
    (tenancy, format!("Bearer {}", registered.access_token.token))
}

async fn ping() -> &'static str {
    "pong"
}

fn guarded(tenancy: Tenancy) -> Router {
    Router::new()
        .route("/ping", get(ping).layer(require("projects:read")))
        .layer(TenancyLayer::new(tenancy))
}

fn request(authorization: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder().uri("/ping");
    if let Some(value) = authorization {
        builder = builder.header("authorization", value);
    }
    builder.body(Body::empty()).expect("request")
}

fn axum_pipeline(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (cached, token) = runtime.block_on(tenancy(10_000));
    let (uncached, cold_token) = runtime.block_on(tenancy(0));
    let bare = Router::new().route("/ping", get(ping));
    let with_cache = guarded(cached);
    let without_cache = guarded(uncached);
    for (app, header) in [(&with_cache, &token), (&without_cache, &cold_token)] {
        let response = runtime
            .block_on(app.clone().oneshot(request(Some(header))))
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let mut group = c.benchmark_group("axum (tower::ServiceExt::oneshot)");
    group.bench_function("bare route", |b| {
        b.to_async(&runtime).iter(|| async {
            bare.clone()
                .oneshot(black_box(request(None)))
                .await
                .expect("response")
        })
    });
    group.bench_function("pipeline, cached token", |b| {
        b.to_async(&runtime).iter(|| async {
            with_cache
                .clone()
                .oneshot(black_box(request(Some(&token))))
                .await
                .expect("response")
        })
    });
    group.bench_function("pipeline, cold verify", |b| {
        b.to_async(&runtime).iter(|| async {
            without_cache
                .clone()
                .oneshot(black_box(request(Some(&cold_token))))
                .await
                .expect("response")
        })
    });
    group.finish();
}

criterion_group!(benches, axum_pipeline);
criterion_main!(benches);
