//! Outbox suites: appends commit with their transaction and are numbered in
//! commit order; consumers claim, acknowledge, rewind and purge alike on
//! every backend.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use serde_json::json;
use time::Duration;

use super::{new_tenant, now};
use crate::audit::{AuditAction, AuditContext, NewAuditEvent, Target};
use crate::error::{Conflict, Entity, StoreError, ValidationError};
use crate::id::{EventId, TenantId};
use crate::outbox::{ConsumerName, EventFeed, EventType, NewEvent, Outbox, ReplayFrom};
use crate::store::{Backend, TenantStore};
use crate::tenant::Tenant;
use crate::text::Metadata;

/// What an outbox suite runs against: the backend, and its feed.
pub type OutboxSetup = (Arc<dyn Backend>, Arc<dyn EventFeed>);

fn event(kind: &str, n: u64) -> NewEvent {
    NewEvent::new(EventType::new(kind).unwrap(), json!({ "n": n }))
}

fn consumer(name: &str) -> ConsumerName {
    ConsumerName::new(name).unwrap()
}

async fn tenant(backend: &Arc<dyn Backend>, slug: &str) -> Tenant {
    let tenant = new_tenant(&format!("{slug}-{}", &TenantId::new().to_string()[24..]));
    backend.insert_tenant(&tenant).await.unwrap();
    tenant
}

async fn append(backend: &Arc<dyn Backend>, tenant_id: TenantId, n: u64) -> crate::Event {
    backend
        .append_event(tenant_id, event("thing.happened", n))
        .await
        .unwrap()
}

/// Appends are numbered 1, 2, 3… per tenant; reads start where asked; bad
/// input is refused with its own error.
pub async fn outbox_append_and_read((backend, feed): OutboxSetup) {
    let a = tenant(&backend, "a").await;
    let b = tenant(&backend, "b").await;
    let first = append(&backend, a.id, 1).await;
    append(&backend, b.id, 1).await;
    let second = append(&backend, a.id, 2).await;
    append(&backend, a.id, 3).await;
    assert_eq!((first.seq, second.seq), (1, 2));
    assert_eq!(first.tenant_id, a.id);
    assert_eq!(first.version, 1);

    let all = feed.read_events(a.id, ReplayFrom::Start, 10).await.unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(all[0], first);
    assert!(all.iter().all(|e| e.tenant_id == a.id));
    let after = feed
        .read_events(a.id, ReplayFrom::AfterEvent(first.id), 10)
        .await
        .unwrap();
    assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
    let after = feed
        .read_events(a.id, ReplayFrom::AfterSeq(2), 1)
        .await
        .unwrap();
    assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
    let since = feed
        .read_events(a.id, ReplayFrom::Since(second.occurred_at), 10)
        .await
        .unwrap();
    assert_eq!(since.first().map(|e| e.seq), Some(2));
    let future = feed
        .read_events(a.id, ReplayFrom::Since(now() + Duration::hours(1)), 10)
        .await
        .unwrap();
    assert!(future.is_empty());

    // Another tenant's event id is not in this stream.
    let b_events = feed.read_events(b.id, ReplayFrom::Start, 10).await.unwrap();
    assert!(matches!(
        feed.read_events(a.id, ReplayFrom::AfterEvent(b_events[0].id), 10)
            .await,
        Err(StoreError::NotFound(Entity::Event))
    ));
    assert!(matches!(
        feed.read_events(a.id, ReplayFrom::AfterSeq(4), 10).await,
        Err(StoreError::InvalidInput(ValidationError::EventSeq {
            seq: 4
        }))
    ));
    for limit in [0, crate::outbox::MAX_BATCH + 1] {
        assert!(matches!(
            feed.read_events(a.id, ReplayFrom::Start, limit).await,
            Err(StoreError::InvalidInput(ValidationError::PageSize { .. }))
        ));
    }
    assert!(matches!(
        backend.append_event(TenantId::new(), event("a.b", 0)).await,
        Err(StoreError::NotFound(Entity::Tenant))
    ));
    let reused = event("a.b", 0).with_id(first.id);
    assert!(matches!(
        backend.append_event(b.id, reused).await,
        Err(StoreError::Conflict(Conflict::Id(Entity::Event)))
    ));
    assert!(matches!(
        backend
            .append_event(a.id, event("a.b", 0).with_version(0))
            .await,
        Err(StoreError::InvalidInput(ValidationError::EventVersion))
    ));
    let versioned = backend
        .append_event(a.id, event("a.b", 0).with_version(3))
        .await
        .unwrap();
    assert_eq!((versioned.seq, versioned.version), (4, 3));
}

/// An event exists if and only if its transaction committed, and a rolled
/// back append leaves no gap in the numbers.
pub async fn outbox_transactions((backend, feed): OutboxSetup) {
    let a = tenant(&backend, "tx").await;
    let tx = backend.begin().await.unwrap();
    tx.append_event(a.id, event("a.b", 1)).await.unwrap();
    drop(tx);
    assert!(
        feed.read_events(a.id, ReplayFrom::Start, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let tx = backend.begin().await.unwrap();
    let first = tx.append_event(a.id, event("a.b", 1)).await.unwrap();
    let second = tx.append_event(a.id, event("a.b", 2)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!((first.seq, second.seq), (1, 2));
    let read = feed.read_events(a.id, ReplayFrom::Start, 10).await.unwrap();
    assert_eq!(read, [first, second]);
}

/// Audited actions in the published list append their event in the same
/// transaction; other actions do not.
pub async fn outbox_audit_publishes((backend, feed): OutboxSetup) {
    let a = tenant(&backend, "audit").await;
    let target = Target::new("member", "m_1").unwrap();
    let published = NewAuditEvent::new(
        &AuditContext::system(),
        AuditAction::new("member.role_changed").unwrap(),
        target.clone(),
        Metadata::new(json!({ "before": ["member"], "after": ["admin"] })).unwrap(),
        now(),
    );
    let quiet = NewAuditEvent::new(
        &AuditContext::system(),
        AuditAction::new("auth.login").unwrap(),
        target,
        Metadata::empty(),
        now(),
    );

    let tx = backend.begin().await.unwrap();
    tx.append_audit(a.id, published.clone()).await.unwrap();
    drop(tx);
    assert!(
        feed.read_events(a.id, ReplayFrom::Start, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let tx = backend.begin().await.unwrap();
    let audited = tx.append_audit(a.id, published).await.unwrap();
    tx.append_audit(a.id, quiet).await.unwrap();
    tx.commit().await.unwrap();
    let events = feed.read_events(a.id, ReplayFrom::Start, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event.event_type.as_str(), "member.role_changed");
    assert_eq!(event.id.as_uuid(), audited.id.as_uuid());
    assert_eq!(event.occurred_at, audited.occurred_at);
    assert_eq!(
        event.data["target"],
        json!({ "type": "member", "id": "m_1" })
    );
    assert_eq!(event.data["metadata"]["after"], json!(["admin"]));
    assert_eq!(event.data["actor"], json!({ "type": "system" }));
}

/// A claim holds one tenant for one consumer until acknowledged or
/// dropped; consumers keep their own positions; tenants take turns.
pub async fn outbox_claims((backend, feed): OutboxSetup) {
    let a = tenant(&backend, "claim-a").await;
    let b = tenant(&backend, "claim-b").await;
    for n in 1..=3 {
        append(&backend, a.id, n).await;
    }
    append(&backend, b.id, 1).await;
    let (one, two) = (consumer("one"), consumer("two"));

    let first = feed.claim(&one, 2).await.unwrap().unwrap();
    let first_tenant = first.tenant_id();
    let other_tenant = if first_tenant == a.id { b.id } else { a.id };
    // The same consumer cannot claim that tenant again meanwhile.
    let second = feed.claim(&one, 10).await.unwrap().unwrap();
    assert_eq!(second.tenant_id(), other_tenant);
    assert!(feed.claim(&one, 10).await.unwrap().is_none());
    // Another consumer can.
    let theirs = feed.claim(&two, 10).await.unwrap().unwrap();
    theirs.release().await.unwrap();

    // A dropped claim gives its events back.
    let seqs: Vec<u64> = first.events().iter().map(|e| e.seq).collect();
    first.release().await.unwrap();
    let again = feed.claim(&one, 2).await.unwrap().unwrap();
    assert_eq!(again.tenant_id(), first_tenant);
    assert_eq!(
        again.events().iter().map(|e| e.seq).collect::<Vec<_>>(),
        seqs
    );
    let last = again.events().last().unwrap().seq;
    second.release().await.unwrap();

    // Acknowledging outside the batch is refused (and gives the claim back).
    let refused = again.ack(last + 1).await;
    assert!(
        matches!(refused, Err(StoreError::InvalidInput(ValidationError::EventSeq { seq })) if seq == last + 1),
        "{refused:?}"
    );

    // Drain tenant a for consumer one, acknowledging a prefix first.
    let mut delivered: Vec<u64> = Vec::new();
    while let Some(claim) = feed.claim(&one, 2).await.unwrap() {
        if claim.tenant_id() != a.id {
            let through = claim.events().last().unwrap().seq;
            claim.ack(through).await.unwrap();
            continue;
        }
        let through = claim.events()[0].seq;
        delivered.push(through);
        claim.ack(through).await.unwrap();
    }
    assert_eq!(delivered, [1, 2, 3]);
    assert!(feed.claim(&one, 10).await.unwrap().is_none());
    assert_eq!(feed.oldest_pending(&one).await.unwrap(), None);

    // Consumer two has not moved.
    let mut seen = 0;
    while let Some(claim) = feed.claim(&two, 10).await.unwrap() {
        seen += claim.events().len();
        let through = claim.events().last().unwrap().seq;
        claim.ack(through).await.unwrap();
    }
    assert_eq!(seen, 4);

    // A tenant that just had its turn waits for the others.
    append(&backend, a.id, 4).await;
    append(&backend, b.id, 2).await;
    let turn = feed.claim(&one, 10).await.unwrap().unwrap();
    let turn_tenant = turn.tenant_id();
    let through = turn.events().last().unwrap().seq;
    turn.ack(through).await.unwrap();
    append(&backend, turn_tenant, 5).await;
    let next = feed.claim(&one, 10).await.unwrap().unwrap();
    assert_ne!(next.tenant_id(), turn_tenant);
}

/// Rewinding makes the relay deliver again from a point; the oldest
/// pending event tells the lag.
pub async fn outbox_rewind_and_lag((backend, feed): OutboxSetup) {
    let a = tenant(&backend, "rewind").await;
    let mut events = Vec::new();
    for n in 1..=4 {
        events.push(append(&backend, a.id, n).await);
    }
    let relay = consumer("relay");
    assert_eq!(
        feed.oldest_pending(&relay).await.unwrap(),
        Some(events[0].occurred_at)
    );
    let claim = feed.claim(&relay, 10).await.unwrap().unwrap();
    claim.ack(4).await.unwrap();
    assert_eq!(feed.oldest_pending(&relay).await.unwrap(), None);

    feed.rewind(&relay, a.id, ReplayFrom::AfterEvent(events[1].id))
        .await
        .unwrap();
    assert_eq!(
        feed.oldest_pending(&relay).await.unwrap(),
        Some(events[2].occurred_at)
    );
    let claim = feed.claim(&relay, 10).await.unwrap().unwrap();
    assert_eq!(claim.events(), &events[2..]);
    claim.ack(4).await.unwrap();

    feed.rewind(&relay, a.id, ReplayFrom::Start).await.unwrap();
    let claim = feed.claim(&relay, 10).await.unwrap().unwrap();
    assert_eq!(claim.events(), &events[..]);
    // A rewind during a claim wins over that claim's acknowledgement.
    let rewinding = {
        let feed = Arc::clone(&feed);
        let relay = relay.clone();
        tokio::spawn(async move { feed.rewind(&relay, a.id, ReplayFrom::AfterSeq(1)).await })
    };
    tokio::time::sleep(StdDuration::from_millis(50)).await;
    claim.ack(4).await.unwrap();
    rewinding.await.unwrap().unwrap();
    let claim = feed.claim(&relay, 10).await.unwrap().unwrap();
    assert_eq!(claim.events(), &events[1..]);
    claim.release().await.unwrap();

    assert!(matches!(
        feed.rewind(&relay, a.id, ReplayFrom::AfterEvent(EventId::new()))
            .await,
        Err(StoreError::NotFound(Entity::Event))
    ));
    assert!(matches!(
        feed.rewind(&relay, TenantId::new(), ReplayFrom::Start)
            .await,
        Err(StoreError::NotFound(Entity::Tenant))
    ));
}

/// Purging keeps what a consumer has not acknowledged, deletes only from
/// the start of a stream, and a consumer whose events were purged unread
/// moves past them.
pub async fn outbox_purge((backend, feed): OutboxSetup) {
    let a = tenant(&backend, "purge").await;
    for n in 1..=3 {
        append(&backend, a.id, n).await;
    }
    let (fast, slow) = (consumer("fast"), consumer("slow"));
    let claim = feed.claim(&fast, 2).await.unwrap().unwrap();
    claim.ack(2).await.unwrap();
    let claim = feed.claim(&slow, 1).await.unwrap().unwrap();
    claim.ack(1).await.unwrap();
    let later = now() + Duration::minutes(1);

    assert_eq!(
        feed.purge_events(now() - Duration::hours(1), std::slice::from_ref(&fast))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        feed.purge_events(later, &[fast.clone(), slow.clone()])
            .await
            .unwrap(),
        1
    );
    let left = feed.read_events(a.id, ReplayFrom::Start, 10).await.unwrap();
    assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(
        feed.purge_events(later, std::slice::from_ref(&fast))
            .await
            .unwrap(),
        1
    );
    // None listed: every consumer with a position counts, and neither has 3.
    assert_eq!(feed.purge_events(later, &[]).await.unwrap(), 0);
    // Retired consumers hold nothing back; with no position left, age decides.
    assert!(feed.forget_consumer(&slow).await.unwrap() >= 1);
    assert!(feed.forget_consumer(&fast).await.unwrap() >= 1);
    assert_eq!(feed.forget_consumer(&fast).await.unwrap(), 0);
    assert_eq!(feed.purge_events(later, &[]).await.unwrap(), 1);

    // A consumer starting after the purge gets what is retained.
    append(&backend, a.id, 4).await;
    let claim = feed.claim(&slow, 10).await.unwrap().unwrap();
    assert_eq!(
        claim.events().iter().map(|e| e.seq).collect::<Vec<_>>(),
        [4]
    );
    claim.ack(4).await.unwrap();
    assert_eq!(
        feed.purge_events(later + Duration::hours(1), &[])
            .await
            .unwrap(),
        1
    );
    // A consumer behind a stream purged to its end is caught up, not
    // pending forever.
    append(&backend, a.id, 5).await;
    let claim = feed.claim(&slow, 10).await.unwrap().unwrap();
    claim.ack(5).await.unwrap();
    feed.rewind(&fast, a.id, ReplayFrom::AfterSeq(0))
        .await
        .unwrap();
    assert_eq!(
        feed.purge_events(later + Duration::hours(1), std::slice::from_ref(&slow))
            .await
            .unwrap(),
        1
    );
    assert!(feed.claim(&fast, 10).await.unwrap().is_none());
    assert_eq!(feed.oldest_pending(&fast).await.unwrap(), None);

    // Only a prefix goes: an old event after a young one stays.
    let b = tenant(&backend, "purge-prefix").await;
    append(&backend, b.id, 1).await;
    backend
        .append_event(
            b.id,
            event("thing.happened", 2).with_occurred_at(now() - Duration::days(30)),
        )
        .await
        .unwrap();
    assert_eq!(
        feed.purge_events(now() - Duration::days(1), &[])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        feed.read_events(b.id, ReplayFrom::Start, 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

/// A tenant that appears while another always has events pending is
/// claimed within a bounded time, and a tenant whose batch was given back
/// waits behind the others.
pub async fn outbox_tenants_take_turns((backend, feed): OutboxSetup) {
    let busy = tenant(&backend, "busy").await;
    append(&backend, busy.id, 0).await;
    let relay = consumer("turns");
    let claim = feed.claim(&relay, 1).await.unwrap().unwrap();
    claim.release().await.unwrap();
    let late = tenant(&backend, "late").await;
    append(&backend, late.id, 0).await;

    // The busy tenant never runs dry.
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(10);
    let mut n = 1;
    loop {
        append(&backend, busy.id, n).await;
        n += 1;
        let claim = feed.claim(&relay, 1).await.unwrap().unwrap();
        let tenant_id = claim.tenant_id();
        let through = claim.events()[0].seq;
        claim.ack(through).await.unwrap();
        if tenant_id == late.id {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a new tenant was starved by a busy one"
        );
    }

    // A batch given back goes behind the other tenant's.
    append(&backend, late.id, 1).await;
    let first = feed.claim(&relay, 1).await.unwrap().unwrap();
    let given_back = first.tenant_id();
    first.release().await.unwrap();
    let next = feed.claim(&relay, 1).await.unwrap().unwrap();
    assert_ne!(next.tenant_id(), given_back);
}

/// Writers on several tenants and several relays of one consumer at once:
/// every committed event is delivered once, in order, per tenant.
pub async fn outbox_concurrent_relays((backend, feed): OutboxSetup) {
    const TENANTS: usize = 3;
    const PER_WRITER: u64 = 15;
    let mut tenants = Vec::new();
    for i in 0..TENANTS {
        tenants.push(tenant(&backend, &format!("race{i}")).await.id);
    }
    let relay = consumer("race");
    let delivered = Arc::new(std::sync::Mutex::new(BTreeMap::<TenantId, Vec<u64>>::new()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let mut writers = Vec::new();
    for (i, &tenant_id) in tenants.iter().enumerate() {
        for w in 0..2 {
            let backend = Arc::clone(&backend);
            writers.push(tokio::spawn(async move {
                for n in 0..PER_WRITER {
                    let tx = backend.begin().await.unwrap();
                    tx.append_event(tenant_id, event("race.step", n))
                        .await
                        .unwrap();
                    // Odd writers roll back now and then: no gap may follow.
                    if (i + w) % 2 == 1 && n % 5 == 0 {
                        drop(tx);
                    } else {
                        tx.commit().await.unwrap();
                    }
                }
            }));
        }
    }
    let mut relays = Vec::new();
    for _ in 0..3 {
        let feed = Arc::clone(&feed);
        let relay = relay.clone();
        let delivered = Arc::clone(&delivered);
        let done = Arc::clone(&done);
        relays.push(tokio::spawn(async move {
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                match feed.claim(&relay, 4).await.unwrap() {
                    Some(claim) => {
                        let seqs: Vec<u64> = claim.events().iter().map(|e| e.seq).collect();
                        delivered
                            .lock()
                            .unwrap()
                            .entry(claim.tenant_id())
                            .or_default()
                            .extend(&seqs);
                        claim.ack(*seqs.last().unwrap()).await.unwrap();
                    }
                    None if finished => break,
                    None => tokio::time::sleep(StdDuration::from_millis(2)).await,
                }
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for relay in relays {
        relay.await.unwrap();
    }
    let delivered = delivered.lock().unwrap().clone();
    let mut ids = HashSet::new();
    for &tenant_id in &tenants {
        let stored = feed
            .read_events(tenant_id, ReplayFrom::Start, 1000)
            .await
            .unwrap();
        let expected: Vec<u64> = (1..=stored.len() as u64).collect();
        assert_eq!(stored.iter().map(|e| e.seq).collect::<Vec<_>>(), expected);
        assert_eq!(
            delivered.get(&tenant_id).cloned().unwrap_or_default(),
            expected
        );
        ids.extend(stored.iter().map(|e| e.id));
    }
    assert_eq!(feed.oldest_pending(&relay).await.unwrap(), None);
    assert!(!ids.is_empty());
}

/// Transactions appending an event and an audit record in either order,
/// concurrently on one tenant, all commit: no deadlock between them.
pub async fn outbox_lock_order((backend, feed): OutboxSetup) {
    let a = tenant(&backend, "locks").await;
    let mut tasks = Vec::new();
    for i in 0..12u64 {
        let backend = Arc::clone(&backend);
        tasks.push(tokio::spawn(async move {
            let audit = NewAuditEvent::new(
                &AuditContext::system(),
                AuditAction::new("auth.login").unwrap(),
                Target::new("user", "u_1").unwrap(),
                Metadata::empty(),
                now(),
            );
            let tx = backend.begin().await.unwrap();
            if i % 2 == 0 {
                tx.append_event(a.id, event("lock.order", i)).await.unwrap();
                tokio::time::sleep(StdDuration::from_millis(2)).await;
                tx.append_audit(a.id, audit).await.unwrap();
            } else {
                tx.append_audit(a.id, audit).await.unwrap();
                tokio::time::sleep(StdDuration::from_millis(2)).await;
                tx.append_event(a.id, event("lock.order", i)).await.unwrap();
            }
            tx.commit().await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let events = feed
        .read_events(a.id, ReplayFrom::Start, 100)
        .await
        .unwrap();
    assert_eq!(events.len(), 12);
}
