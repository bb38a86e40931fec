//! The pipeline's overhead over a bare route, measured to survive a busy
//! machine: each variant runs in short batches, interleaved with the other
//! variants, and the fastest batch counts (preemption and other processes
//! only ever add time, so the minimum is the cost of the code). Prints bare
//! route, pipeline (cached token), overhead and overhead / bare for axum and
//! actix-web, from the same run. Same setup as `http.rs`.
//!
//! ```text
//! cargo bench -p tenancy-benches --bench http_overhead
//! ```

#![allow(clippy::expect_used, clippy::print_stdout)] // a measurement program

use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderValue, Request, StatusCode};
use axum::routing::get;
use tenancy::actix;
use tenancy::axum::{TenancyLayer, require};
use tenancy::http::auth::{Argon2Config, AuthConfig, ClientInfo, Password, Registration};
use tenancy::http::authz::Catalog;
use tenancy::http::{HttpConfig, Tenancy};
use tenancy::{Email, NewTenant, NewUser, Slug, TenantName};
use tower::ServiceExt;

/// Requests per batch, and batches per variant.
const BATCH: u32 = 200;
const ROUNDS: usize = 300;

async fn tenancy() -> (Tenancy, HeaderValue) {
    let mut auth = AuthConfig::new("https://bench.example", "bench");
    auth.argon2 = Argon2Config::new(1024, 1, 1);
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
    let header = format!("Bearer {}", registered.access_token.token);
    (tenancy, HeaderValue::from_str(&header).expect("header"))
}

async fn ping() -> &'static str {
    "pong"
}

/// The fastest and the median batch, per request.
fn summary(mut batches: Vec<Duration>) -> (Duration, Duration) {
    batches.sort();
    (batches[0], batches[batches.len() / 2])
}

fn report(framework: &str, bare: Vec<Duration>, pipeline: Vec<Duration>) {
    let (bare_min, bare_median) = summary(bare);
    let (pipeline_min, pipeline_median) = summary(pipeline);
    let overhead = pipeline_min.saturating_sub(bare_min);
    println!(
        "{framework}: bare {bare_min:?} (median {bare_median:?}), pipeline {pipeline_min:?} \
         (median {pipeline_median:?}), overhead {overhead:?}, overhead/bare {:.2}",
        overhead.as_secs_f64() / bare_min.as_secs_f64()
    );
}

fn axum_overhead() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (tenancy, token) = runtime.block_on(tenancy());
    let bare = Router::new().route("/ping", get(ping));
    let guarded = Router::new()
        .route(
            "/ping",
            get(ping).layer(require(
                tenancy.permission("projects:read").expect("declared"),
            )),
        )
        .layer(TenancyLayer::new(tenancy));
    let request = |authorization: Option<&HeaderValue>| {
        let mut builder = Request::builder().uri("/ping");
        if let Some(value) = authorization {
            builder = builder.header(AUTHORIZATION, value.clone());
        }
        builder.body(Body::empty()).expect("request")
    };
    let batch = |app: &Router, authorization: Option<&HeaderValue>| {
        let started = Instant::now();
        runtime.block_on(async {
            for _ in 0..BATCH {
                let response = app
                    .clone()
                    .oneshot(black_box(request(authorization)))
                    .await
                    .expect("response");
                assert_eq!(response.status(), StatusCode::OK);
            }
        });
        started.elapsed() / BATCH
    };
    let (mut bare_times, mut pipeline_times) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        bare_times.push(batch(&bare, None));
        pipeline_times.push(batch(&guarded, Some(&token)));
    }
    report("axum", bare_times, pipeline_times);
    // `axum::serve` finalizes the router (`with_state(())`), so handlers and
    // their route layers are built once, not on every request as when an
    // unfinalized `Router` is called directly (as above and in `http.rs`).
    let (bare, guarded) = (bare.with_state(()), guarded.with_state(()));
    let (mut bare_times, mut pipeline_times) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        bare_times.push(batch(&bare, None));
        pipeline_times.push(batch(&guarded, Some(&token)));
    }
    report("axum, finalized routers", bare_times, pipeline_times);
}

fn actix_overhead() {
    use actix::actix_web::{App, test, web};
    use actix::{TenancyMiddleware, require};

    let runtime = actix::actix_web::rt::Runtime::new().expect("runtime");
    let (tenancy, token) = runtime.block_on(tenancy());
    let token =
        actix::actix_web::http::header::HeaderValue::from_bytes(token.as_bytes()).expect("header");
    let bare = runtime.block_on(test::init_service(
        App::new().service(web::resource("/ping").route(web::get().to(ping))),
    ));
    let guarded = runtime.block_on(test::init_service(
        App::new().service(
            web::resource("/ping")
                .route(web::get().to(ping))
                .wrap(require(
                    tenancy.permission("projects:read").expect("declared"),
                ))
                .wrap(TenancyMiddleware::new(tenancy)),
        ),
    ));
    let request = |authorization: Option<&actix::actix_web::http::header::HeaderValue>| {
        let mut request = test::TestRequest::get().uri("/ping");
        if let Some(value) = authorization {
            request = request
                .insert_header((actix::actix_web::http::header::AUTHORIZATION, value.clone()));
        }
        request.to_request()
    };
    let mut bare_times = Vec::new();
    let mut pipeline_times = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        runtime.block_on(async {
            for _ in 0..BATCH {
                let response = test::call_service(&bare, black_box(request(None))).await;
                assert_eq!(response.status().as_u16(), 200);
            }
        });
        bare_times.push(started.elapsed() / BATCH);
        let started = Instant::now();
        runtime.block_on(async {
            for _ in 0..BATCH {
                let response = test::call_service(&guarded, black_box(request(Some(&token)))).await;
                assert_eq!(response.status().as_u16(), 200);
            }
        });
        pipeline_times.push(started.elapsed() / BATCH);
    }
    report("actix-web", bare_times, pipeline_times);
}

fn main() {
    axum_overhead();
    actix_overhead();
}
