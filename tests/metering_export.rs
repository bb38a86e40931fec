//! Usage exported to a (fake) Stripe through billing's provider: with
//! failures and lost answers injected, the meter events Stripe counts add
//! up to the rollups, each identifier once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tenancy::billing::MemoryBillingStore;
use tenancy::billing::stripe::{
    BreakerConfig, RetryConfig, StripeConfig, StripeProvider, StripeSecretKey,
};
use tenancy::billing::testkit::fake_stripe::{FakeStripe, Fault};
use tenancy::billing::{BillingService, BillingStore, Catalog, CatalogDocument, CustomerId};
use tenancy::metering::{
    Aggregation, BufferConfig, ExportConfig, MemoryMeteringStore, MemoryOutbox, Meter, MeterName,
    Metering, Meters, UsageExporter,
};
use tenancy::metering_billing::BillingUsageSink;
use tenancy::{
    AuditContext, Clock, Directory, Email, ManualClock, MemoryBackend, NewTenant, NewUser, Owner,
    Slug, TenantName,
};

const KEY: &str = "sk_test_metering";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_receives_the_rollups_exactly_once() {
    let fake = FakeStripe::start(KEY, "whsec_metering").await;
    let stripe = StripeProvider::with_config(
        StripeSecretKey::new(KEY),
        StripeConfig {
            base_url: fake.base_url(),
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_millis(300),
            retry: RetryConfig {
                attempts: 1,
                base_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(5),
            },
            breaker: BreakerConfig::default(),
        },
    )
    .unwrap();

    let backend = Arc::new(MemoryBackend::new());
    let tenant = Directory::new(backend.clone())
        .create_tenant(
            NewTenant::new(Slug::new("acme").unwrap(), TenantName::new("Acme").unwrap()),
            Owner::New(NewUser::new(Email::new("ada@acme.example").unwrap())),
            &AuditContext::system(),
        )
        .await
        .unwrap()
        .tenant;
    let billing_store = Arc::new(MemoryBillingStore::new(backend.clone()));
    billing_store
        .link_customer(
            tenant.id,
            &CustomerId::new("cus_acme").unwrap(),
            None,
            &AuditContext::system(),
        )
        .await
        .unwrap();
    let catalog =
        Catalog::from_document(&CatalogDocument::new("free").plan("free", Default::default()))
            .unwrap();
    let billing = Arc::new(BillingService::new(billing_store, catalog));

    let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
    let meters = Meters::new([
        Meter::new(
            MeterName::new("api_calls").unwrap(),
            Aggregation::Count,
            "calls",
        )
        .unwrap(),
        Meter::new(
            MeterName::new("tokens").unwrap(),
            Aggregation::Sum,
            "tokens",
        )
        .unwrap(),
    ])
    .unwrap();
    let metering = Metering::new(meters, Arc::new(MemoryMeteringStore::new(backend)))
        .with_clock(clock.clone());
    let exporter = UsageExporter::new(
        metering.clone(),
        &["api_calls", "tokens"],
        None,
        Arc::new(MemoryOutbox::new()),
        Arc::new(BillingUsageSink::new(billing, Arc::new(stripe))),
        ExportConfig::default().with_backoff(Duration::from_secs(1), Duration::from_secs(4)),
    )
    .unwrap();

    let ingest = metering.buffered(BufferConfig::default());
    let scope = tenancy::TenantScope::assume_resolved(tenant.id);
    let (mut calls, mut tokens) = (0u64, 0u64);
    let faults = [
        vec![Fault::Status(500, Some(true))],
        vec![Fault::Delay(Duration::from_millis(600))],
        vec![],
        vec![Fault::Status(503, None), Fault::Status(500, Some(true))],
        vec![Fault::Delay(Duration::from_millis(600))],
    ];
    for (round, faults) in faults.into_iter().enumerate() {
        for i in 0..(20 + round as i64) {
            ingest
                .add(&scope, "api_calls", 1, clock.now(), &[])
                .unwrap();
            ingest
                .add(&scope, "tokens", i * 7, clock.now(), &[])
                .unwrap();
            calls += 1;
            tokens += u64::try_from(i * 7).unwrap();
        }
        ingest.flush().await;
        fake.inject(faults);
        exporter.run_once().await.unwrap();
        clock.advance(time::Duration::seconds(5));
    }
    for _ in 0..8 {
        exporter.run_once().await.unwrap();
        clock.advance(time::Duration::seconds(5));
    }

    let events = fake.meter_events();
    let identifiers: HashSet<_> = events.iter().map(|e| e["identifier"].clone()).collect();
    assert_eq!(identifiers.len(), events.len());
    let received = |name: &str| -> u64 {
        events
            .iter()
            .filter(|e| e["event_name"] == name)
            .inspect(|e| assert_eq!(e["payload"]["stripe_customer_id"], "cus_acme"))
            .map(|e| {
                e["payload"]["value"]
                    .as_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum()
    };
    assert_eq!(received("api_calls"), calls);
    assert_eq!(received("tokens"), tokens);
    for line in exporter.reconcile(tenant.id).await.unwrap() {
        assert_eq!(line.outbox.sent, line.usage, "{line:?}");
    }
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}
