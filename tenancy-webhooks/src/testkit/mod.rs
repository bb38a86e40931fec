//! The conformance suite every [`WebhookStore`] passes, run on memory and
//! on Postgres by [`crate::conformance_tests!`].
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers report failure by panicking

use std::sync::Arc;

use tenancy_core::{
    AuditContext, Backend, Directory, Email, Event, EventId, EventType, NewTenant, NewUser, Owner,
    PageRequest, PageSize, Slug, TenantId, TenantName,
};
use time::OffsetDateTime;
use time::macros::datetime;

use crate::endpoint::{
    AttemptOutcome, DeliveryAttempt, DeliveryId, Endpoint, EndpointId, EndpointStatus, EventTypes,
    StoredSecrets,
};
use crate::error::WebhookError;
use crate::secret::SealedSecret;
use crate::store::{Purged, WebhookStore};

#[cfg(feature = "postgres")]
pub mod postgres;

/// A store under test and the backend its tenants are created in.
#[derive(Clone)]
pub struct Fixture {
    /// The tenancy-core backend (tenants must exist for foreign keys).
    pub backend: Arc<dyn Backend>,
    /// The store under test.
    pub store: Arc<dyn WebhookStore>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture").finish_non_exhaustive()
    }
}

/// An in-memory fixture.
#[cfg(feature = "memory")]
pub async fn memory_fixture() -> Option<Fixture> {
    Some(Fixture {
        backend: Arc::new(tenancy_core::MemoryBackend::new()),
        store: Arc::new(crate::memory::MemoryWebhookStore::new()),
    })
}

/// Runs every suite against the fixture `$fixture` (an expression giving
/// `Option<Fixture>`, `None` to skip).
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:expr) => {
        $crate::conformance_tests!(@suites $fixture;
            endpoints_round_trip, endpoints_are_bounded_per_tenant, tenants_are_isolated,
            secrets_round_trip, messages_are_kept_once, attempts_update_health_and_paginate,
            pause_once_and_resume, purge_drops_old_rows_and_unreferenced_events
        );
    };
    (@suites $fixture:expr; $($suite:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $suite() {
                if let Some(fixture) = $fixture.await {
                    $crate::testkit::$suite(fixture).await;
                }
            }
        )+
    };
}

/// The instant the suites' rows carry.
pub const NOW: OffsetDateTime = datetime!(2030-01-10 12:30 UTC);

/// Creates a tenant in the fixture's backend.
pub async fn create_tenant(fixture: &Fixture, slug: &str) -> TenantId {
    let slug = format!("{slug}-{}", &TenantId::new().to_string()[24..]);
    Directory::new(Arc::clone(&fixture.backend))
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

/// An active endpoint of `tenant_id` at `https://example.com/hook`.
pub fn sample_endpoint(tenant_id: TenantId) -> Endpoint {
    endpoint(tenant_id, "https://example.com/hook")
}

/// Stored secrets with a placeholder ciphertext.
pub fn sample_secrets() -> StoredSecrets {
    secrets("sealed")
}

fn endpoint(tenant_id: TenantId, url: &str) -> Endpoint {
    Endpoint {
        id: EndpointId::new(),
        tenant_id,
        url: url.to_owned(),
        description: "orders".to_owned(),
        event_types: EventTypes::new(["member.*", "tenant.created"]).unwrap(),
        status: EndpointStatus::Active,
        consecutive_failures: 0,
        healthy_at: NOW,
        created_at: NOW,
        updated_at: NOW,
    }
}

fn secrets(text: &str) -> StoredSecrets {
    StoredSecrets::new(SealedSecret::from_compact(text))
}

fn event(tenant_id: TenantId) -> Event {
    Event {
        id: EventId::new(),
        tenant_id,
        seq: 1,
        event_type: EventType::new("member.joined").unwrap(),
        version: 1,
        occurred_at: NOW,
        data: serde_json::json!({"user": "u1"}),
    }
}

fn attempt(endpoint: &Endpoint, n: u32, outcome: AttemptOutcome) -> DeliveryAttempt {
    DeliveryAttempt {
        id: DeliveryId::new(),
        tenant_id: endpoint.tenant_id,
        endpoint_id: endpoint.id,
        event_id: EventId::new(),
        event_type: "member.joined".to_owned(),
        attempt: n,
        outcome,
        status_code: Some(500),
        latency_ms: Some(12),
        error: Some("status 500".to_owned()),
        response_excerpt: Some("broken".to_owned()),
        at: NOW + time::Duration::seconds(i64::from(n)),
    }
}

/// Create, read, list in pages, update and delete.
pub async fn endpoints_round_trip(f: Fixture) {
    let tenant = create_tenant(&f, "round").await;
    let mut made = Vec::new();
    for i in 0..3 {
        let e = endpoint(tenant, &format!("https://example.com/{i}"));
        f.store
            .create_endpoint(&e, &secrets("s"), 10)
            .await
            .unwrap();
        made.push(e);
    }
    assert_eq!(
        f.store.get_endpoint(tenant, made[0].id).await.unwrap(),
        made[0]
    );

    let size = PageSize::new(2).unwrap();
    let first = f
        .store
        .list_endpoints(tenant, &PageRequest::first(size))
        .await
        .unwrap();
    assert_eq!(first.items, made[..2]);
    let next = PageRequest::first(size).after(first.next.clone().unwrap());
    let second = f.store.list_endpoints(tenant, &next).await.unwrap();
    assert_eq!(second.items, made[2..]);
    assert!(second.next.is_none());

    let mut changed = made[1].clone();
    changed.url = "https://example.org/new".to_owned();
    changed.description = "new".to_owned();
    changed.event_types = EventTypes::all();
    changed.status = EndpointStatus::Disabled;
    changed.updated_at = NOW + time::Duration::minutes(1);
    f.store.update_endpoint(&changed).await.unwrap();
    assert_eq!(
        f.store.get_endpoint(tenant, changed.id).await.unwrap(),
        changed
    );
    let active: Vec<_> = f
        .store
        .active_endpoints(tenant)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(active.len(), 2);
    assert!(!active.contains(&changed.id));

    f.store.delete_endpoint(tenant, made[0].id).await.unwrap();
    assert!(matches!(
        f.store.get_endpoint(tenant, made[0].id).await,
        Err(WebhookError::NotFound(_))
    ));
    assert!(matches!(
        f.store.delete_endpoint(tenant, made[0].id).await,
        Err(WebhookError::NotFound(_))
    ));
    assert!(matches!(
        f.store.secrets(tenant, made[0].id).await,
        Err(WebhookError::NotFound(_))
    ));
}

/// The per-tenant limit holds, and only per tenant.
pub async fn endpoints_are_bounded_per_tenant(f: Fixture) {
    let a = create_tenant(&f, "bound-a").await;
    let b = create_tenant(&f, "bound-b").await;
    for i in 0..2 {
        f.store
            .create_endpoint(
                &endpoint(a, &format!("https://a.example/{i}")),
                &secrets("s"),
                2,
            )
            .await
            .unwrap();
    }
    assert!(matches!(
        f.store
            .create_endpoint(&endpoint(a, "https://a.example/x"), &secrets("s"), 2)
            .await,
        Err(WebhookError::TooManyEndpoints { max: 2 })
    ));
    f.store
        .create_endpoint(&endpoint(b, "https://b.example/"), &secrets("s"), 2)
        .await
        .unwrap();
}

/// Another tenant's endpoint, secrets, events and deliveries are not found.
pub async fn tenants_are_isolated(f: Fixture) {
    let a = create_tenant(&f, "iso-a").await;
    let b = create_tenant(&f, "iso-b").await;
    let e = endpoint(a, "https://a.example/");
    f.store
        .create_endpoint(&e, &secrets("s"), 10)
        .await
        .unwrap();
    let row = attempt(&e, 1, AttemptOutcome::Failed);
    f.store.record_attempt(&row).await.unwrap();
    let ev = event(a);
    f.store.put_message(&ev).await.unwrap();

    let nf =
        |r: Result<(), WebhookError>| assert!(matches!(r, Err(WebhookError::NotFound(_))), "{r:?}");
    nf(f.store.get_endpoint(b, e.id).await.map(drop));
    nf(f.store.secrets(b, e.id).await.map(drop));
    nf(f.store.set_secrets(b, e.id, &secrets("x")).await);
    nf(f.store.delete_endpoint(b, e.id).await);
    nf(f.store.get_attempt(b, row.id).await.map(drop));
    nf(f.store.get_message(b, ev.id).await.map(drop));
    nf(f.store.pause_if_active(b, e.id, "x", NOW).await.map(drop));
    nf(f.store.resume(b, e.id, NOW).await.map(drop));
    let mut foreign = e.clone();
    foreign.tenant_id = b;
    nf(f.store.update_endpoint(&foreign).await);
    assert!(
        f.store
            .list_endpoints(b, &PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(f.store.active_endpoints(b).await.unwrap().is_empty());
    assert!(
        f.store
            .list_attempts(b, e.id, &PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        f.store.get_endpoint(a, e.id).await.unwrap().status,
        EndpointStatus::Active
    );
}

/// Secrets are stored as given, with the previous one and its end.
pub async fn secrets_round_trip(f: Fixture) {
    let t = create_tenant(&f, "secrets").await;
    let e = endpoint(t, "https://example.com/");
    f.store
        .create_endpoint(&e, &secrets("first"), 10)
        .await
        .unwrap();
    assert_eq!(f.store.secrets(t, e.id).await.unwrap(), secrets("first"));
    let rotated = StoredSecrets {
        current: SealedSecret::from_compact("second"),
        previous: Some((
            SealedSecret::from_compact("first"),
            NOW + time::Duration::hours(24),
        )),
    };
    f.store.set_secrets(t, e.id, &rotated).await.unwrap();
    assert_eq!(f.store.secrets(t, e.id).await.unwrap(), rotated);
}

/// An event is kept once: storing it again changes nothing.
pub async fn messages_are_kept_once(f: Fixture) {
    let t = create_tenant(&f, "messages").await;
    let ev = event(t);
    f.store.put_message(&ev).await.unwrap();
    let mut again = ev.clone();
    again.data = serde_json::json!({"changed": true});
    f.store.put_message(&again).await.unwrap();
    assert_eq!(f.store.get_message(t, ev.id).await.unwrap(), ev);
    assert!(matches!(
        f.store.get_message(t, EventId::new()).await,
        Err(WebhookError::NotFound(_))
    ));
}

/// Failures count up, a success resets, a skip changes nothing; the log
/// reads newest first in pages.
pub async fn attempts_update_health_and_paginate(f: Fixture) {
    let t = create_tenant(&f, "health").await;
    let e = endpoint(t, "https://example.com/");
    f.store
        .create_endpoint(&e, &secrets("s"), 10)
        .await
        .unwrap();
    let mut rows = Vec::new();
    for (n, outcome) in [
        AttemptOutcome::Failed,
        AttemptOutcome::Failed,
        AttemptOutcome::Skipped,
        AttemptOutcome::Dead,
    ]
    .into_iter()
    .enumerate()
    {
        let row = attempt(&e, n as u32 + 1, outcome);
        let after = f.store.record_attempt(&row).await.unwrap();
        rows.push(row);
        let expected = [1, 2, 2, 3][n];
        assert_eq!(after.consecutive_failures, expected);
        assert_eq!(after.healthy_at, NOW);
    }
    let mut ok = attempt(&e, 5, AttemptOutcome::Succeeded);
    ok.status_code = Some(200);
    ok.error = None;
    let after = f.store.record_attempt(&ok).await.unwrap();
    rows.push(ok.clone());
    assert_eq!(after.consecutive_failures, 0);
    assert_eq!(after.healthy_at, ok.at);
    assert_eq!(f.store.get_attempt(t, ok.id).await.unwrap(), ok);

    let size = PageSize::new(3).unwrap();
    let first = f
        .store
        .list_attempts(t, e.id, &PageRequest::first(size))
        .await
        .unwrap();
    let newest: Vec<_> = rows.iter().rev().cloned().collect();
    assert_eq!(first.items, newest[..3]);
    let second = f
        .store
        .list_attempts(
            t,
            e.id,
            &PageRequest::first(size).after(first.next.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(second.items, newest[3..]);
    assert!(second.next.is_none());

    // The log of a deleted endpoint stays; recording for it is NotFound.
    f.store.delete_endpoint(t, e.id).await.unwrap();
    let late = attempt(&e, 6, AttemptOutcome::Failed);
    assert!(matches!(
        f.store.record_attempt(&late).await,
        Err(WebhookError::NotFound(_))
    ));
    assert_eq!(f.store.get_attempt(t, ok.id).await.unwrap(), ok);
}

/// Pausing happens once; resume resets the health.
pub async fn pause_once_and_resume(f: Fixture) {
    let t = create_tenant(&f, "pause").await;
    let e = endpoint(t, "https://example.com/");
    f.store
        .create_endpoint(&e, &secrets("s"), 10)
        .await
        .unwrap();
    f.store
        .record_attempt(&attempt(&e, 1, AttemptOutcome::Failed))
        .await
        .unwrap();
    let at = NOW + time::Duration::hours(30);
    let (first, second) = tokio::join!(
        f.store.pause_if_active(t, e.id, "failing", at),
        f.store.pause_if_active(t, e.id, "failing", at)
    );
    assert_eq!(
        [first.unwrap(), second.unwrap()]
            .iter()
            .filter(|p| **p)
            .count(),
        1
    );
    let paused = f.store.get_endpoint(t, e.id).await.unwrap();
    assert_eq!(
        paused.status,
        EndpointStatus::Paused {
            reason: "failing".to_owned(),
            since: at
        }
    );
    assert!(f.store.active_endpoints(t).await.unwrap().is_empty());

    let later = at + time::Duration::hours(1);
    let resumed = f.store.resume(t, e.id, later).await.unwrap();
    assert_eq!(resumed.status, EndpointStatus::Active);
    assert_eq!(resumed.consecutive_failures, 0);
    assert_eq!(resumed.healthy_at, later);
    assert_eq!(f.store.get_endpoint(t, e.id).await.unwrap(), resumed);
}

/// A purge deletes, in every tenant, log rows older than the cutoff and
/// old events no remaining row refers to; it keeps the rest.
pub async fn purge_drops_old_rows_and_unreferenced_events(f: Fixture) {
    let a = create_tenant(&f, "purge-a").await;
    let b = create_tenant(&f, "purge-b").await;
    let ea = sample_endpoint(a);
    let eb = sample_endpoint(b);
    f.store
        .create_endpoint(&ea, &sample_secrets(), 10)
        .await
        .unwrap();
    f.store
        .create_endpoint(&eb, &sample_secrets(), 10)
        .await
        .unwrap();
    // Events are stored now; the cutoff is an hour ahead, so all of them
    // are old enough to go unless a recent row refers to them.
    let now = tenancy_core::truncate_to_micros(OffsetDateTime::now_utc());
    let cutoff = now + time::Duration::hours(1);
    let (lone_a, lone_b, retried) = (event(a), event(b), event(a));
    for ev in [&lone_a, &lone_b, &retried] {
        f.store.put_message(ev).await.unwrap();
    }
    let mut old_a = attempt(&ea, 1, AttemptOutcome::Failed);
    old_a.event_id = retried.id;
    old_a.at = now - time::Duration::days(40);
    let mut old_b = attempt(&eb, 1, AttemptOutcome::Succeeded);
    old_b.event_id = lone_b.id;
    old_b.at = now - time::Duration::days(40);
    let mut recent = attempt(&ea, 2, AttemptOutcome::Failed);
    recent.event_id = retried.id;
    recent.at = cutoff + time::Duration::minutes(5);
    for row in [&old_a, &old_b, &recent] {
        f.store.record_attempt(row).await.unwrap();
    }

    // A cutoff before everything deletes nothing.
    let none = f.store.purge(now - time::Duration::days(41)).await.unwrap();
    assert_eq!(none, Purged::default());

    let purged = f.store.purge(cutoff).await.unwrap();
    assert_eq!(purged.deliveries, 2, "{purged:?}");
    assert_eq!(purged.messages, 2, "{purged:?}");
    for (tenant, id) in [(a, old_a.id), (b, old_b.id)] {
        assert!(matches!(
            f.store.get_attempt(tenant, id).await,
            Err(WebhookError::NotFound(_))
        ));
    }
    assert_eq!(f.store.get_attempt(a, recent.id).await.unwrap(), recent);
    // The event a recent row refers to stays (it may be retried or
    // redelivered); the others went, in both tenants.
    assert_eq!(f.store.get_message(a, retried.id).await.unwrap(), retried);
    for (tenant, id) in [(a, lone_a.id), (b, lone_b.id)] {
        assert!(matches!(
            f.store.get_message(tenant, id).await,
            Err(WebhookError::NotFound(_))
        ));
    }
    // Endpoints are not touched; purging again finds nothing more.
    f.store.get_endpoint(a, ea.id).await.unwrap();
    assert_eq!(f.store.purge(cutoff).await.unwrap(), Purged::default());
}
