//! One tenant's policy writes must not slow another tenant down: `GET
//! /members` of a quiet tenant, through the full axum pipeline and route,
//! measured alone and while another tenant rewrites large policies (nine
//! policies of 100 statements with conditions, about 240 KiB, near the
//! per-tenant bounds) as fast as it can, with the write rate limit off so
//! only compile isolation is measured.
//!
//! ```text
//! cargo bench -p tenancy-benches --bench noisy_neighbour
//! ```
//!
//! Before criterion's medians it prints the quiet tenant's p50/p99/max over
//! 2,000 requests each way.

#![allow(clippy::expect_used)] // benchmark setup: a failure should stop the run

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use criterion::{Criterion, criterion_group, criterion_main};
use tenancy::http::auth::{Argon2Config, AuthConfig, ClientInfo, Password, Registration};
use tenancy::http::authz::Catalog;
use tenancy::http::{HttpConfig, Tenancy};
use tenancy::{Email, NewTenant, NewUser, Slug, TenantName};
use tower::ServiceExt;

async fn owner(tenancy: &Tenancy, slug: &str) -> String {
    let registered = tenancy
        .auth()
        .register(
            Registration {
                user: NewUser::new(Email::new(&format!("owner@{slug}.example")).expect("email")),
                password: Password::new("correct horse battery staple"),
                tenant: NewTenant::new(
                    Slug::new(slug).expect("slug"),
                    TenantName::new(slug).expect("name"),
                ),
            },
            &ClientInfo::default(),
        )
        .await
        .expect("register");
    format!("Bearer {}", registered.access_token.token)
}

fn fat_policy() -> String {
    let statements: Vec<String> = (0..100)
        .map(|i| {
            let names: Vec<String> = (0..6)
                .map(|j| format!("resource.name == \"project-{i}-{j}-abcdefghij\""))
                .collect();
            format!(
                r#"{{"effect":"deny","actions":["projects:delete"],"condition":"{}"}}"#,
                names.join(" || ").replace('"', "\\\"")
            )
        })
        .collect();
    format!(r#"{{"statements":[{}]}}"#, statements.join(","))
}

fn members(token: &str) -> Request<Body> {
    Request::builder()
        .uri("/members")
        .header("authorization", token)
        .body(Body::empty())
        .expect("request")
}

async fn percentiles(app: &Router, token: &str, label: &str) {
    let mut times = Vec::with_capacity(2_000);
    for _ in 0..2_000 {
        let started = Instant::now();
        let response = app.clone().oneshot(members(token)).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        times.push(started.elapsed());
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize];
    println!(
        "{label}: p50 {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        times[times.len() - 1]
    );
}

fn noisy_neighbour(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (tenancy, quiet, noisy) = runtime.block_on(async {
        let mut auth = AuthConfig::new("https://bench.example", "bench");
        auth.argon2 = Argon2Config::new(1024, 1, 1);
        let tenancy = Tenancy::builder(
            Catalog::new(["projects:read", "projects:delete"]).expect("catalog"),
            auth,
        )
        .http(HttpConfig::default())
        .policy_write_rate(None)
        .build()
        .await
        .expect("tenancy");
        let quiet = owner(&tenancy, "quiet").await;
        let noisy = owner(&tenancy, "noisy").await;
        (tenancy, quiet, noisy)
    });
    let app = tenancy::axum::router::<()>(tenancy);
    let policy = fat_policy();
    let writing = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    {
        let (app, writing, written) = (app.clone(), writing.clone(), written.clone());
        runtime.spawn(async move {
            let mut i = 0u64;
            loop {
                if !writing.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let request = Request::put(format!("/policies/p{}", i % 9))
                    .header("authorization", &noisy)
                    .header("content-type", "application/json")
                    .body(Body::from(policy.clone()))
                    .expect("request");
                let response = app.clone().oneshot(request).await.expect("response");
                assert_eq!(response.status(), StatusCode::OK, "policy write refused");
                written.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        });
    }

    runtime.block_on(percentiles(&app, &quiet, "quiet tenant, alone"));
    writing.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        // The neighbour's policies are all stored before measuring.
        while written.load(Ordering::Relaxed) < 9 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let before = written.load(Ordering::Relaxed);
    let started = Instant::now();
    runtime.block_on(percentiles(&app, &quiet, "quiet tenant, neighbour writing"));
    println!(
        "neighbour wrote {} large policies/s meanwhile",
        (written.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64()
    );
    writing.store(false, Ordering::Relaxed);

    let mut group = c.benchmark_group("GET /members of a quiet tenant");
    group.bench_function("alone", |b| {
        b.to_async(&runtime).iter(|| async {
            app.clone()
                .oneshot(members(&quiet))
                .await
                .expect("response")
        })
    });
    writing.store(true, Ordering::Relaxed);
    group.bench_function("while another tenant rewrites large policies", |b| {
        b.to_async(&runtime).iter(|| async {
            app.clone()
                .oneshot(members(&quiet))
                .await
                .expect("response")
        })
    });
    writing.store(false, Ordering::Relaxed);
    group.finish();
}

criterion_group!(benches, noisy_neighbour);
criterion_main!(benches);
