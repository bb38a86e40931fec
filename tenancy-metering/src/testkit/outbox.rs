//! The outbox conformance suite: usage reaches a sink exactly once
//! through any [`OutboxStore`], with failures, lost answers and racing
//! exporters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tenancy_core::{Clock, ManualClock, TenantId, TenantScope};

use super::{Fixture, NOW, create_tenant, meters};
use crate::{
    BufferConfig, ExportConfig, Metering, OutboxStore, SinkError, UsageExporter, UsageReport,
    UsageSink,
};

/// What an outbox suite runs against.
#[derive(Clone)]
pub struct OutboxFixture {
    /// Usage.
    pub usage: Fixture,
    /// The outbox under test.
    pub outbox: Arc<dyn OutboxStore>,
}

impl std::fmt::Debug for OutboxFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxFixture").finish_non_exhaustive()
    }
}

/// An outbox fixture in memory.
#[cfg(feature = "memory")]
pub async fn memory() -> Option<OutboxFixture> {
    Some(OutboxFixture {
        usage: super::memory().await?,
        outbox: Arc::new(crate::MemoryOutbox::new()),
    })
}

/// A sink behaving as a provider that deduplicates by identifier, failing
/// as told: `fail` calls answer a retryable error without applying, and
/// `lose` calls apply and then answer an error (the answer was lost).
#[derive(Default)]
pub struct FlakySink {
    customers: Mutex<Vec<(TenantId, String)>>,
    received: Mutex<HashMap<String, (String, u64)>>,
    calls: AtomicU32,
    fail: AtomicU32,
    lose: AtomicU32,
}

impl std::fmt::Debug for FlakySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlakySink").finish_non_exhaustive()
    }
}

impl FlakySink {
    /// Bills `tenant` as `customer`.
    pub fn bill(&self, tenant: TenantId, customer: &str) {
        self.customers
            .lock()
            .unwrap()
            .push((tenant, customer.to_owned()));
    }

    /// The next `fail` calls fail, then the next `lose` calls lose their
    /// answer.
    pub fn inject(&self, fail: u32, lose: u32) {
        self.fail.store(fail, Ordering::SeqCst);
        self.lose.store(lose, Ordering::SeqCst);
    }

    /// The usage received for `customer` and `meter`, deduplicated.
    pub fn total(&self, customer: &str, meter: &str) -> u64 {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(id, (c, _))| c == customer && id.ends_with(&meter_suffix(meter)))
            .map(|(_, (_, v))| v)
            .sum()
    }

    /// Calls made.
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

fn meter_suffix(meter: &str) -> String {
    let id = crate::identifier(
        TenantId::new(),
        &crate::MeterName::new(meter).unwrap(),
        NOW,
        1,
    );
    id.rsplit('-').next().unwrap().to_owned()
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[async_trait]
impl UsageSink for FlakySink {
    async fn customers(&self) -> Result<Vec<(TenantId, String)>, SinkError> {
        Ok(self.customers.lock().unwrap().clone())
    }

    async fn send(&self, customer: &str, report: &UsageReport) -> Result<(), SinkError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if take(&self.fail) {
            return Err(SinkError::Retryable("injected failure".into()));
        }
        self.received
            .lock()
            .unwrap()
            .entry(report.identifier.clone())
            .or_insert_with(|| (customer.to_owned(), report.value));
        if take(&self.lose) {
            return Err(SinkError::Retryable("answer lost".into()));
        }
        Ok(())
    }
}

/// A clock at [`NOW`], a sink billing a new tenant as `cus_1`, and an
/// exporter of `calls` and `tokens` to it.
async fn setup(
    f: &OutboxFixture,
) -> (
    Arc<ManualClock>,
    Arc<FlakySink>,
    Metering,
    UsageExporter,
    TenantScope,
) {
    let clock = Arc::new(ManualClock::new(NOW));
    let sink = Arc::new(FlakySink::default());
    let tenant = create_tenant(&f.usage).await;
    sink.bill(tenant.tenant_id(), "cus_1");
    let metering = Metering::new(meters(), Arc::clone(&f.usage.store)).with_clock(clock.clone());
    let exporter = UsageExporter::new(
        metering.clone(),
        &["calls", "tokens"],
        None,
        Arc::clone(&f.outbox),
        sink.clone(),
        ExportConfig::default()
            .with_backoff(Duration::from_secs(1), Duration::from_secs(8))
            .with_calls_per_second(1_000),
    )
    .unwrap();
    (clock, sink, metering, exporter, tenant)
}

/// Usage flushed in several rounds, with failures and lost answers in
/// between, reaches the sink exactly once: the totals received equal the
/// rollups, and reconciliation shows everything sent.
pub async fn usage_is_exported_exactly_once(f: OutboxFixture) {
    let (clock, sink, metering, exporter, tenant) = setup(&f).await;
    let ingest = metering.buffered(BufferConfig::default());
    let mut expected = (0, 0);
    for round in 0..6u32 {
        for i in 0..(10 + round) {
            ingest
                .add(&tenant, "calls", 1, Clock::now(&*clock), &[("route", "/a")])
                .unwrap();
            ingest
                .add(&tenant, "tokens", i64::from(i), Clock::now(&*clock), &[])
                .unwrap();
            expected.0 += 1;
            expected.1 += u64::from(i);
        }
        ingest.flush().await;
        sink.inject(round % 2, u32::from(round == 3));
        exporter.run_once().await.unwrap();
        clock.advance(time::Duration::seconds(10));
    }
    // Let every retry come due.
    for _ in 0..10 {
        exporter.run_once().await.unwrap();
        clock.advance(time::Duration::seconds(10));
    }
    assert_eq!(sink.total("cus_1", "calls"), expected.0);
    assert_eq!(sink.total("cus_1", "tokens"), expected.1);
    for line in exporter.reconcile(tenant.tenant_id()).await.unwrap() {
        assert_eq!(line.outbox.enqueued, line.usage, "{line:?}");
        assert_eq!(line.outbox.sent, line.usage, "{line:?}");
        assert_eq!(line.outbox.parked, 0);
    }
    // Nothing new: nothing enqueued, nothing sent.
    let calls = sink.calls();
    let idle = exporter.run_once().await.unwrap();
    assert_eq!((idle.enqueued, idle.sent), (0, 0));
    assert_eq!(sink.calls(), calls);
}

/// Exporters racing over the same tenant enqueue each unit of usage once.
pub async fn racing_exporters_enqueue_once(f: OutboxFixture) {
    let (clock, sink, metering, exporter, tenant) = setup(&f).await;
    let ingest = metering.buffered(BufferConfig::default());
    for _ in 0..50 {
        ingest
            .add(&tenant, "calls", 1, Clock::now(&*clock), &[("route", "/a")])
            .unwrap();
    }
    ingest.flush().await;
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let exporter = exporter.clone();
            let tenant = tenant.tenant_id();
            tokio::spawn(async move { exporter.enqueue(tenant).await.unwrap() })
        })
        .collect();
    let mut rows = 0;
    for racer in racers {
        rows += racer.await.unwrap();
    }
    assert!(rows >= 1);
    let lines = exporter.reconcile(tenant.tenant_id()).await.unwrap();
    let calls = lines
        .iter()
        .find(|l| l.meter.as_str() == "calls" && l.usage > 0)
        .unwrap();
    assert_eq!(calls.usage, 50);
    assert_eq!(calls.outbox.enqueued, 50, "never enqueued twice");
    exporter.run_once().await.unwrap();
    assert_eq!(sink.total("cus_1", "calls"), 50);
}

/// Generates the outbox suites for `$fixture` (a future of
/// `Option<OutboxFixture>`).
#[macro_export]
macro_rules! outbox_conformance_tests {
    ($fixture:expr) => {
        $crate::outbox_conformance_tests!(@suites $fixture;
            usage_is_exported_exactly_once, racing_exporters_enqueue_once);
    };
    (@suites $fixture:expr; $($suite:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $suite() {
                if let Some(fixture) = $fixture.await {
                    $crate::testkit::outbox::$suite(fixture).await;
                }
            }
        )+
    };
}
