//! Billing's hot paths: an entitlement check on a cached snapshot (by
//! interned id and by name, and through the cache), side by side with a
//! Redis round trip answering the same question (`GET` of a flag, over a
//! plain RESP connection to the local Redis; skipped with a notice when
//! none listens); `Stripe-Signature` verification of a 4 KiB payload
//! against two secrets; and webhook processing on Postgres (verify, parse,
//! dedupe, apply in one transaction) when `DATABASE_URL` is set.
//!
//! ```text
//! cargo bench -p tenancy-benches --bench billing
//! ```

#![allow(clippy::expect_used, clippy::unwrap_used)] // benchmark setup: a failure should stop the run

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use tenancy::TenantId;
use tenancy::billing::testkit::provider::subscription_object;
use tenancy::billing::webhook::{WebhookSecret, WebhookVerifier};
use tenancy::billing::{
    AccessPolicy, BillingService, BillingState, Catalog, CustomerId, EntitlementCache,
    Entitlements, SubscriptionId,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn catalog() -> Catalog {
    Catalog::from_toml(
        r#"
        default_plan = "free"
        [features.sso]
        kind = "gate"
        [features.seats]
        kind = "limit"
        [features.api_calls]
        kind = "metered"
        period = "billing_period"
        enforcement = "soft"
        overage = true
        [plans.free.features]
        seats = 3
        [plans.pro]
        lookup_key = "pro_monthly"
        [plans.pro.features]
        sso = true
        seats = 50
        api_calls = "unlimited"
        "#,
    )
    .expect("catalog")
}

async fn redis_get(stream: &mut tokio::net::TcpStream, key: &str) -> bool {
    let command = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
    stream.write_all(command.as_bytes()).await.expect("write");
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).await.expect("read");
    // `$1\r\n1\r\n` for a set flag, `$-1\r\n` for none.
    buf[..n].starts_with(b"$1\r\n1")
}

fn entitlements(c: &mut Criterion) {
    let catalog = catalog();
    let sso = catalog.feature("sso").expect("sso");
    let seats = catalog.feature("seats").expect("seats");
    let snapshot = Entitlements::resolve(
        &catalog,
        &AccessPolicy::new(),
        TenantId::new(),
        &BillingState::default(),
        time::OffsetDateTime::now_utc(),
    );
    let mut group = c.benchmark_group("entitlements");
    group.bench_function("check (interned id)", |b| {
        b.iter(|| black_box(&snapshot).check(black_box(sso)))
    });
    group.bench_function("limit (interned id)", |b| {
        b.iter(|| black_box(&snapshot).limit(black_box(seats)))
    });
    group.bench_function("check_key (by name)", |b| {
        b.iter(|| black_box(&snapshot).check_key(black_box("sso")))
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let backend: Arc<dyn tenancy::Backend> = Arc::new(tenancy::MemoryBackend::new());
    let store = Arc::new(tenancy::billing::MemoryBillingStore::new(backend));
    let cache = EntitlementCache::new(store, catalog.clone(), AccessPolicy::new());
    let tenant = TenantId::new();
    runtime.block_on(cache.get(tenant)).expect("warm");
    group.bench_function("cache hit + check", |b| {
        b.iter(|| {
            runtime
                .block_on(cache.get(black_box(tenant)))
                .expect("get")
                .check(sso)
        })
    });

    match runtime.block_on(tokio::net::TcpStream::connect("127.0.0.1:6379")) {
        Ok(mut stream) => {
            stream.set_nodelay(true).ok();
            runtime.block_on(async {
                let key = "bench:tenant:1:sso";
                let set = format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\n1\r\n", key.len());
                stream.write_all(set.as_bytes()).await.expect("set");
                let mut buf = [0u8; 16];
                let _ = stream.read(&mut buf).await.expect("ok");
            });
            group.bench_function("redis GET round trip (same question)", |b| {
                b.iter(|| runtime.block_on(redis_get(&mut stream, "bench:tenant:1:sso")))
            });
        }
        Err(error) => eprintln!("no Redis on 127.0.0.1:6379 ({error}): skipping the comparison"),
    }
    group.finish();
}

fn webhook_body(size: usize) -> Vec<u8> {
    let object = subscription_object(
        &SubscriptionId::new("sub_bench").expect("id"),
        &CustomerId::new("cus_bench").expect("id"),
        None,
        "pro_monthly",
        "active",
        1,
    );
    let mut event = json!({
        "id": "evt_bench", "object": "event", "type": "customer.subscription.updated",
        "created": 1_900_000_000, "data": { "object": object }, "padding": "",
    });
    let base = serde_json::to_vec(&event).expect("json").len();
    event["padding"] = json!("x".repeat(size.saturating_sub(base)));
    serde_json::to_vec(&event).expect("json")
}

fn webhooks(c: &mut Criterion) {
    let body = webhook_body(4096);
    assert_eq!(body.len(), 4096);
    let old = WebhookSecret::new("whsec_old_secret_for_rotation").expect("secret");
    let new = WebhookSecret::new("whsec_new_secret_for_rotation").expect("secret");
    let verifier = WebhookVerifier::new([old, new.clone()]);
    let header = new.sign(time::OffsetDateTime::now_utc().unix_timestamp(), &body);
    let mut group = c.benchmark_group("webhook");
    group.bench_function("verify 4 KiB, two secrets", |b| {
        b.iter(|| {
            verifier
                .verify(Some(black_box(&header)), black_box(&body))
                .expect("verifies")
        })
    });
    // The worst case: no secret matches, so both are computed.
    let stranger = WebhookSecret::new("whsec_not_configured")
        .expect("secret")
        .sign(time::OffsetDateTime::now_utc().unix_timestamp(), &body);
    group.bench_function("refuse 4 KiB, two secrets, none matching", |b| {
        b.iter(|| {
            verifier
                .verify(Some(black_box(&stranger)), black_box(&body))
                .expect_err("refused")
        })
    });
    group.finish();
}

/// Webhook processing on Postgres: each iteration verifies, parses,
/// dedupes and applies one new `customer.subscription.updated` event.
fn postgres_webhooks(c: &mut Criterion) {
    if std::env::var("DATABASE_URL").is_err() {
        eprintln!("DATABASE_URL is not set: skipping the Postgres webhook benchmark");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (_schema, fixture) = runtime
        .block_on(tenancy::billing::testkit::postgres::fixture_with_schema())
        .expect("postgres");
    let tenant = runtime.block_on(tenancy::billing::testkit::create_tenant(&fixture.backend));
    let service = BillingService::new(Arc::clone(&fixture.store), catalog());
    let secret = WebhookSecret::new("whsec_bench").expect("secret");
    let verifier = WebhookVerifier::new([secret.clone()]);
    let customer = CustomerId::new(format!("cus_{}", uuid_like())).expect("id");
    let sub = SubscriptionId::new(format!("sub_{}", uuid_like())).expect("id");
    let mut created = time::OffsetDateTime::now_utc().unix_timestamp() - 86_400;
    let mut n = 0u64;
    let mut group = c.benchmark_group("webhook");
    group.sample_size(20);
    group.bench_function("process on Postgres (verify + dedupe + apply)", |b| {
        b.iter_custom(|iters| {
            let mut events = Vec::with_capacity(iters as usize);
            for _ in 0..iters {
                n += 1;
                created += 1;
                let mut object = subscription_object(
                    &sub,
                    &customer,
                    Some(tenant),
                    "pro_monthly",
                    if n.is_multiple_of(2) {
                        "active"
                    } else {
                        "past_due"
                    },
                    1 + (n % 5) as u32,
                );
                object.cancel_at_period_end = n.is_multiple_of(3);
                let body = serde_json::to_vec(&json!({
                    "id": format!("evt_bench{n}_{}", uuid_like()),
                    "object": "event", "type": "customer.subscription.updated",
                    "created": created, "data": { "object": object },
                }))
                .expect("json");
                let header = secret.sign(time::OffsetDateTime::now_utc().unix_timestamp(), &body);
                events.push((header, body));
            }
            let start = Instant::now();
            runtime.block_on(async {
                for (header, body) in &events {
                    service
                        .handle_webhook(&verifier, Some(header), body)
                        .await
                        .expect("applied");
                }
            });
            start.elapsed()
        })
    });
    group.finish();
}

fn uuid_like() -> String {
    TenantId::new().to_string().replace('-', "")
}

criterion_group!(benches, entitlements, webhooks, postgres_webhooks);
criterion_main!(benches);
