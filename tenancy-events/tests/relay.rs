//! The relay against the in-memory and Postgres outboxes (`DATABASE_URL`;
//! skipped without it unless `CI=true`): order per tenant, partial
//! failures, independent sinks, timeouts, a relay stopped in the middle of
//! a batch, replay, lag and purge.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tenancy_core::outbox::ReplayFrom;
use tenancy_core::{
    AuditContext, Backend, ConsumerName, Directory, Email, Event, EventId, EventType, NewEvent,
    NewTenant, NewUser, Outbox, Owner, Slug, TenantId, TenantName,
};
use tenancy_events::{
    DeliveryError, EventSink, Relay, RelayConfig, RelayError, SinkError, Subscription, TypeFilter,
};

/// Records what it is given; fails or stalls on request.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Event>>,
    /// Refuse the event at this index of the next batch, once.
    fail_at: Mutex<Option<usize>>,
    /// Never answer the next batch.
    stall: AtomicBool,
    batches: AtomicUsize,
}

struct RecorderSink {
    consumer: ConsumerName,
    recorder: Arc<Recorder>,
}

#[async_trait]
impl EventSink for RecorderSink {
    fn consumer(&self) -> &ConsumerName {
        &self.consumer
    }

    async fn deliver(&self, events: &[Event]) -> Result<(), DeliveryError> {
        self.recorder.batches.fetch_add(1, Ordering::SeqCst);
        if self.recorder.stall.swap(false, Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let fail_at = self.recorder.fail_at.lock().unwrap().take();
        for (i, event) in events.iter().enumerate() {
            if fail_at == Some(i) {
                return Err(DeliveryError::new(i, SinkError::Refused("full".into())));
            }
            self.recorder.seen.lock().unwrap().push(event.clone());
        }
        Ok(())
    }
}

fn sink(name: &str) -> (Arc<RecorderSink>, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let sink = Arc::new(RecorderSink {
        consumer: ConsumerName::new(name).unwrap(),
        recorder: Arc::clone(&recorder),
    });
    (sink, recorder)
}

fn fast() -> RelayConfig {
    let mut config = RelayConfig::default();
    config.batch_size = 3;
    config.poll_interval = Duration::from_millis(10);
    config.base_backoff = Duration::from_millis(5);
    config.max_backoff = Duration::from_millis(20);
    config.delivery_timeout = Duration::from_millis(500);
    config
}

async fn tenant(backend: &Arc<dyn Backend>, slug: &str) -> TenantId {
    let slug = format!("{slug}-{}", &TenantId::new().to_string()[24..]);
    Directory::new(Arc::clone(backend))
        .create_tenant(
            NewTenant::new(Slug::new(&slug).unwrap(), TenantName::new(&slug).unwrap()),
            Owner::New(NewUser::new(
                Email::new(&format!("owner@{slug}.test")).unwrap(),
            )),
            &AuditContext::system(),
        )
        .await
        .unwrap()
        .tenant
        .id
}

async fn publish(backend: &Arc<dyn Backend>, tenant_id: TenantId, n: usize) -> Vec<Event> {
    let mut out = Vec::new();
    for i in 0..n {
        let event = NewEvent::new(
            EventType::new("test.step").unwrap(),
            serde_json::json!({ "i": i }),
        );
        out.push(backend.append_event(tenant_id, event).await.unwrap());
    }
    out
}

fn by_tenant(events: &[Event]) -> BTreeMap<TenantId, Vec<u64>> {
    let mut map: BTreeMap<TenantId, Vec<u64>> = BTreeMap::new();
    for event in events {
        map.entry(event.tenant_id).or_default().push(event.seq);
    }
    map
}

/// Every event reaches every sink once, in order per tenant; a partial
/// failure keeps what was accepted; sinks do not hold each other up.
async fn delivers_in_order_and_resumes_after_failures(backend: Arc<dyn Backend>) {
    let a = tenant(&backend, "order-a").await;
    let b = tenant(&backend, "order-b").await;
    publish(&backend, a, 5).await;
    publish(&backend, b, 2).await;
    let (good, good_seen) = sink("good");
    let (flaky, flaky_seen) = sink("flaky");
    *flaky_seen.fail_at.lock().unwrap() = Some(1);
    let relay = Relay::new(backend.clone())
        .config(fast())
        .sink(good)
        .sink(flaky);

    let failed = relay.run_once().await.unwrap_err();
    assert!(
        matches!(&failed, RelayError::Sink { delivered: 1, consumer, .. } if consumer.as_str() == "flaky"),
        "{failed:?}"
    );
    // The good sink has everything (it ran first); flaky kept one.
    assert_eq!(good_seen.seen.lock().unwrap().len(), 9);
    assert_eq!(flaky_seen.seen.lock().unwrap().len(), 1);
    assert!(relay.lag().await.unwrap() > Duration::ZERO);

    relay.run_once().await.unwrap();
    for recorder in [&good_seen, &flaky_seen] {
        let seen = recorder.seen.lock().unwrap().clone();
        let grouped = by_tenant(&seen);
        assert_eq!(
            grouped[&a],
            (1..=6).collect::<Vec<u64>>(),
            "tenant.created, then 5"
        );
        assert_eq!(grouped[&b], (1..=3).collect::<Vec<u64>>());
        let ids: HashSet<EventId> = seen.iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), seen.len(), "no event twice");
        let created = seen
            .iter()
            .filter(|e| e.event_type.as_str() == "tenant.created")
            .count();
        assert_eq!(created, 2);
    }
    assert_eq!(relay.lag().await.unwrap(), Duration::ZERO);
    assert_eq!(relay.run_once().await.unwrap(), 0);
}

/// A sink slower than the delivery timeout fails the batch, which stays
/// pending; a relay stopped in the middle of a batch loses nothing.
async fn stalled_and_stopped_relays_lose_nothing(backend: Arc<dyn Backend>) {
    let a = tenant(&backend, "stall").await;
    publish(&backend, a, 4).await;
    let (stalling, recorder) = sink("stalling");
    recorder.stall.store(true, Ordering::SeqCst);
    let relay = Relay::new(backend.clone())
        .config(fast())
        .sink(stalling.clone());
    let timed_out = relay.run_once().await.unwrap_err();
    assert!(
        matches!(timed_out, RelayError::Timeout { .. }),
        "{timed_out:?}"
    );
    assert!(recorder.seen.lock().unwrap().is_empty());

    // A started relay stuck in a batch, then aborted (a crashed process).
    recorder.stall.store(true, Ordering::SeqCst);
    let mut config = fast();
    config.delivery_timeout = Duration::from_secs(3600);
    let running = Relay::new(backend.clone())
        .config(config)
        .sink(stalling.clone())
        .start()
        .unwrap();
    while recorder.batches.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(running);

    // Its replacement delivers everything, and keeps up with new events.
    let running = Relay::new(backend.clone())
        .config(fast())
        .sink(stalling)
        .start()
        .unwrap();
    publish(&backend, a, 2).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while recorder.seen.lock().unwrap().len() < 7 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "relay did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.shutdown(Duration::from_secs(5)).await;
    let seen = recorder.seen.lock().unwrap().clone();
    assert_eq!(by_tenant(&seen)[&a], (1..=7).collect::<Vec<u64>>());
}

/// Replays re-deliver from an event or an instant; duplicate sink names
/// are refused; the purge keeps what a sink still lacks.
async fn replay_and_purge(backend: Arc<dyn Backend>) {
    let a = tenant(&backend, "replay").await;
    let events = publish(&backend, a, 3).await;
    let (first, recorder) = sink("replayed");
    let relay = Relay::new(backend.clone())
        .config(fast())
        .sink(first.clone());
    assert_eq!(relay.run_once().await.unwrap(), 4);

    relay
        .replay(first.consumer(), a, ReplayFrom::AfterEvent(events[0].id))
        .await
        .unwrap();
    assert_eq!(relay.run_once().await.unwrap(), 2);
    relay
        .replay(
            first.consumer(),
            a,
            ReplayFrom::Since(events[2].occurred_at),
        )
        .await
        .unwrap();
    assert_eq!(relay.run_once().await.unwrap(), 1);
    let seqs: Vec<u64> = recorder
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 3, 4, 4]);

    let (twin, _) = sink("replayed");
    let doubled = Relay::new(backend.clone()).sink(first).sink(twin);
    assert!(matches!(
        doubled.run_once().await,
        Err(RelayError::DuplicateConsumer(_))
    ));

    // Retention zero: while a consumer with a position lacks the events
    // (another relay's, say), they stay...
    let mut config = fast();
    config.retention = Some(Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let late = ConsumerName::new("late").unwrap();
    let claim = backend.claim(&late, 1).await.unwrap().unwrap();
    claim.release().await.unwrap();
    let (replayed, _) = sink("replayed");
    let purging = Relay::new(backend.clone()).config(config).sink(replayed);
    assert_eq!(purging.purge().await.unwrap(), 0);
    // ...and once it has them, or is retired, they go.
    assert!(backend.forget_consumer(&late).await.unwrap() >= 1);
    assert!(purging.purge().await.unwrap() >= 4);
    let left = backend.read_events(a, ReplayFrom::Start, 10).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
}

/// In-process subscriptions see what they filter for, once.
async fn subscriptions_filter_types(backend: Arc<dyn Backend>) {
    let a = tenant(&backend, "subs").await;
    publish(&backend, a, 2).await;
    let created = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&created);
    let subscription = Subscription::new(
        ConsumerName::new("created").unwrap(),
        move |event: Event| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push(event.event_type.to_string());
                Ok(())
            }
        },
    )
    .only(TypeFilter::new(["tenant.*"]).unwrap());
    let relay = Relay::new(backend.clone()).sink(Arc::new(subscription));
    assert_eq!(relay.run_once().await.unwrap(), 3);
    assert_eq!(*created.lock().unwrap(), ["tenant.created"]);
}

macro_rules! suites {
    ($backend:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn delivers_in_order_and_resumes_after_failures() {
            if let Some(backend) = $backend.await {
                super::delivers_in_order_and_resumes_after_failures(backend).await;
            }
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn stalled_and_stopped_relays_lose_nothing() {
            if let Some(backend) = $backend.await {
                super::stalled_and_stopped_relays_lose_nothing(backend).await;
            }
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn replay_and_purge() {
            if let Some(backend) = $backend.await {
                super::replay_and_purge(backend).await;
            }
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn subscriptions_filter_types() {
            if let Some(backend) = $backend.await {
                super::subscriptions_filter_types(backend).await;
            }
        }
    };
}

mod memory {
    use super::*;
    async fn backend() -> Option<Arc<dyn Backend>> {
        Some(Arc::new(tenancy_core::MemoryBackend::new()))
    }
    suites!(backend());
}

#[cfg(feature = "postgres")]
mod postgres {
    suites!(tenancy_core::testkit::postgres::backend());
}
