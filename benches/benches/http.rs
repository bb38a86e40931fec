//! What the request pipeline (JWT authentication, tenant resolution and
//! status, RBAC check) adds to a trivial handler, in-process, against the
//! same handler with no pipeline: axum through `tower::ServiceExt::oneshot`,
//! actix-web through `actix_web::test::call_service`.
//!
//! ```text
//! cargo bench -p tenancy-benches --bench http
//! ```

#![allow(clippy::expect_used)] // benchmark setup: a failure should stop the run

use std::hint::black_box;

use axum::Router;
use axum::body::Body;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderValue, Request, StatusCode};
use axum::routing::get;
use criterion::async_executor::AsyncExecutor;
use criterion::{Criterion, criterion_group, criterion_main};
use tenancy::actix;
use tenancy::axum::{TenancyLayer, require};
use tenancy::http::auth::{Argon2Config, AuthConfig, ClientInfo, Password, Registration};
use tenancy::http::authz::Catalog;
use tenancy::http::{HttpConfig, Tenancy};
use tenancy::{Email, NewTenant, NewUser, Slug, TenantName};
use tower::ServiceExt;

async fn tenancy(cache: usize) -> (Tenancy, String) {
    let mut auth = AuthConfig::new("https://bench.example", "bench");
    auth.argon2 = Argon2Config::new(1024, 1, 1);
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
        .route(
            "/ping",
            get(ping).layer(require(
                tenancy.permission("projects:read").expect("declared"),
            )),
        )
        .layer(TenancyLayer::new(tenancy))
}

/// A request to `/ping`. The header value is parsed once, outside the
/// measured loop, and cloned (a reference count) into each request: checking
/// the bytes of a 600-byte token is the test client's cost, not the
/// pipeline's, and the bare route's request carries no header to check.
fn request(authorization: Option<&HeaderValue>) -> Request<Body> {
    let mut builder = Request::builder().uri("/ping");
    if let Some(value) = authorization {
        builder = builder.header(AUTHORIZATION, value.clone());
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
    let token = HeaderValue::from_str(&token).expect("header");
    let cold_token = HeaderValue::from_str(&cold_token).expect("header");
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

/// Runs criterion's async benches on an actix runtime.
struct Actix(actix::actix_web::rt::Runtime);

impl AsyncExecutor for &Actix {
    fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        self.0.block_on(future)
    }
}

fn actix_pipeline(c: &mut Criterion) {
    use actix::actix_web::http::header::{AUTHORIZATION, HeaderValue};
    use actix::actix_web::{App, test, web};
    use actix::{TenancyMiddleware, require};

    let runtime = Actix(actix::actix_web::rt::Runtime::new().expect("runtime"));
    let (cached, token) = runtime.0.block_on(tenancy(10_000));
    let (uncached, cold_token) = runtime.0.block_on(tenancy(0));
    let token = HeaderValue::from_str(&token).expect("header");
    let cold_token = HeaderValue::from_str(&cold_token).expect("header");
    let guarded = |tenancy: Tenancy| {
        App::new().service(
            web::resource("/ping")
                .route(web::get().to(ping))
                .wrap(require(
                    tenancy.permission("projects:read").expect("declared"),
                ))
                .wrap(TenancyMiddleware::new(tenancy)),
        )
    };
    let bare = runtime.0.block_on(test::init_service(
        App::new().service(web::resource("/ping").route(web::get().to(ping))),
    ));
    let with_cache = runtime.0.block_on(test::init_service(guarded(cached)));
    let without_cache = runtime.0.block_on(test::init_service(guarded(uncached)));
    // As for axum: the header value is checked once, then shared.
    let request = |authorization: Option<&HeaderValue>| {
        let mut request = test::TestRequest::get().uri("/ping");
        if let Some(value) = authorization {
            request = request.insert_header((AUTHORIZATION, value.clone()));
        }
        request.to_request()
    };
    for (app, header) in [(&with_cache, &token), (&without_cache, &cold_token)] {
        let response = runtime
            .0
            .block_on(test::call_service(app, request(Some(header))));
        assert_eq!(response.status().as_u16(), 200);
    }
    let mut group = c.benchmark_group("actix-web (actix_web::test::call_service)");
    group.bench_function("bare route", |b| {
        b.to_async(&runtime)
            .iter(|| async { test::call_service(&bare, black_box(request(None))).await })
    });
    group.bench_function("pipeline, cached token", |b| {
        b.to_async(&runtime).iter(|| async {
            test::call_service(&with_cache, black_box(request(Some(&token)))).await
        })
    });
    group.bench_function("pipeline, cold verify", |b| {
        b.to_async(&runtime).iter(|| async {
            test::call_service(&without_cache, black_box(request(Some(&cold_token)))).await
        })
    });
    group.finish();
}

criterion_group!(benches, axum_pipeline, actix_pipeline);
criterion_main!(benches);
