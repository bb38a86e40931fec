//! The conformance suite of [`IdempotencyStore`]: every adapter claims,
//! replays, refuses and expires keys alike.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use crate::clock::truncate_to_micros;
use crate::id::TenantId;
use crate::idempotency::{
    Claim, Fingerprint, IdempotencyKey, IdempotencyScope, IdempotencyStore, LeaseToken, Lifetimes,
    StoredResponse,
};

const LIFETIMES: Lifetimes = Lifetimes {
    ttl: Duration::hours(24),
    lease: Duration::seconds(60),
};

fn scope(tenant: TenantId, caller: &str, key: &str) -> IdempotencyScope {
    IdempotencyScope::new(tenant, caller, IdempotencyKey::new(key).unwrap()).unwrap()
}

fn response(body: &str) -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("location".into(), "/projects/1".into()),
        ],
        body: body.as_bytes().to_vec(),
    }
}

fn acquired(claim: Claim) -> LeaseToken {
    match claim {
        Claim::Acquired(token) => token,
        other => panic!("expected the key to be acquired, got {other:?}"),
    }
}

fn start() -> OffsetDateTime {
    truncate_to_micros(OffsetDateTime::now_utc())
}

/// First claim, in-flight duplicate, mismatch, completion, replay.
pub async fn idempotency_claim_and_replay(store: Arc<dyn IdempotencyStore>) {
    let now = start();
    let s = scope(TenantId::new(), "user:a", "key-1");
    let same = Fingerprint::of("POST", "/projects", b"{\"name\":\"a\"}");
    let other = Fingerprint::of("POST", "/projects", b"{\"name\":\"b\"}");
    let token = acquired(store.claim(&s, &same, now, LIFETIMES).await.unwrap());
    assert_eq!(
        store.claim(&s, &same, now, LIFETIMES).await.unwrap(),
        Claim::InFlight
    );
    assert_eq!(
        store.claim(&s, &other, now, LIFETIMES).await.unwrap(),
        Claim::Mismatch
    );
    let stored = response("{\"id\":1}");
    assert!(store.complete(&s, token, &stored).await.unwrap());
    // Completing twice, or with a stranger's token, stores nothing.
    assert!(!store.complete(&s, token, &response("x")).await.unwrap());
    assert!(
        !store
            .complete(&s, LeaseToken::new(), &response("y"))
            .await
            .unwrap()
    );
    let later = now + Duration::hours(1);
    assert_eq!(
        store.claim(&s, &same, later, LIFETIMES).await.unwrap(),
        Claim::Replay(stored.clone())
    );
    assert_eq!(
        store.claim(&s, &other, later, LIFETIMES).await.unwrap(),
        Claim::Mismatch
    );
    // Releasing a completed key does nothing.
    store.release(&s, token).await.unwrap();
    assert_eq!(
        store.claim(&s, &same, later, LIFETIMES).await.unwrap(),
        Claim::Replay(stored)
    );
}

/// A released key runs again; a stranger's token releases nothing.
pub async fn idempotency_release(store: Arc<dyn IdempotencyStore>) {
    let now = start();
    let s = scope(TenantId::new(), "user:a", "key-2");
    let fingerprint = Fingerprint::of("POST", "/x", b"");
    let token = acquired(store.claim(&s, &fingerprint, now, LIFETIMES).await.unwrap());
    store.release(&s, LeaseToken::new()).await.unwrap();
    assert_eq!(
        store.claim(&s, &fingerprint, now, LIFETIMES).await.unwrap(),
        Claim::InFlight
    );
    store.release(&s, token).await.unwrap();
    // Free again, even for another fingerprint.
    let other = Fingerprint::of("POST", "/y", b"");
    let second = acquired(store.claim(&s, &other, now, LIFETIMES).await.unwrap());
    assert_ne!(second, token);
}

/// A lease whose owner crashed lapses; the old owner can no longer
/// complete. A key past its lifetime runs again.
pub async fn idempotency_expiry(store: Arc<dyn IdempotencyStore>) {
    let now = start();
    let s = scope(TenantId::new(), "api_key:k", "key-3");
    let fingerprint = Fingerprint::of("POST", "/x", b"1");
    let crashed = acquired(store.claim(&s, &fingerprint, now, LIFETIMES).await.unwrap());
    let almost = now + LIFETIMES.lease - Duration::seconds(1);
    assert_eq!(
        store
            .claim(&s, &fingerprint, almost, LIFETIMES)
            .await
            .unwrap(),
        Claim::InFlight
    );
    let lapsed = now + LIFETIMES.lease;
    let token = acquired(
        store
            .claim(&s, &fingerprint, lapsed, LIFETIMES)
            .await
            .unwrap(),
    );
    assert!(!store.complete(&s, crashed, &response("old")).await.unwrap());
    store.release(&s, crashed).await.unwrap();
    assert!(store.complete(&s, token, &response("new")).await.unwrap());
    let before_expiry = lapsed + LIFETIMES.ttl - Duration::seconds(1);
    assert_eq!(
        store
            .claim(&s, &fingerprint, before_expiry, LIFETIMES)
            .await
            .unwrap(),
        Claim::Replay(response("new"))
    );
    let expired = lapsed + LIFETIMES.ttl;
    let other = Fingerprint::of("POST", "/x", b"2");
    acquired(store.claim(&s, &other, expired, LIFETIMES).await.unwrap());
}

/// The same key from two tenants or two callers are two keys.
pub async fn idempotency_isolation(store: Arc<dyn IdempotencyStore>) {
    let now = start();
    let (t1, t2) = (TenantId::new(), TenantId::new());
    let fingerprint = Fingerprint::of("POST", "/x", b"same");
    let a = scope(t1, "user:a", "shared");
    let token = acquired(store.claim(&a, &fingerprint, now, LIFETIMES).await.unwrap());
    assert!(store.complete(&a, token, &response("a")).await.unwrap());
    for s in [scope(t2, "user:a", "shared"), scope(t1, "user:b", "shared")] {
        let token = acquired(store.claim(&s, &fingerprint, now, LIFETIMES).await.unwrap());
        // A token of one scope does nothing in another.
        assert!(!store.complete(&a, token, &response("z")).await.unwrap());
        assert!(store.complete(&s, token, &response("other")).await.unwrap());
        assert_eq!(
            store.claim(&s, &fingerprint, now, LIFETIMES).await.unwrap(),
            Claim::Replay(response("other"))
        );
    }
    assert_eq!(
        store.claim(&a, &fingerprint, now, LIFETIMES).await.unwrap(),
        Claim::Replay(response("a"))
    );
}

/// The purge deletes every tenant's expired keys and nothing else.
pub async fn idempotency_purge(store: Arc<dyn IdempotencyStore>) {
    let now = start();
    let fingerprint = Fingerprint::of("POST", "/x", b"");
    let short = Lifetimes {
        ttl: Duration::minutes(5),
        lease: Duration::seconds(60),
    };
    let old_a = scope(TenantId::new(), "user:a", "old");
    let old_b = scope(TenantId::new(), "user:b", "old");
    let young = scope(TenantId::new(), "user:c", "young");
    for s in [&old_a, &old_b] {
        let token = acquired(store.claim(s, &fingerprint, now, short).await.unwrap());
        assert!(store.complete(s, token, &response("old")).await.unwrap());
    }
    let token = acquired(
        store
            .claim(&young, &fingerprint, now, LIFETIMES)
            .await
            .unwrap(),
    );
    assert!(
        store
            .complete(&young, token, &response("young"))
            .await
            .unwrap()
    );
    let later = now + Duration::minutes(10);
    let purged = store.purge_expired(later).await.unwrap();
    assert!(purged >= 2, "purged {purged}");
    assert_eq!(store.purge_expired(later).await.unwrap(), 0);
    assert_eq!(
        store
            .claim(&young, &fingerprint, later, LIFETIMES)
            .await
            .unwrap(),
        Claim::Replay(response("young"))
    );
    // A purged key is free (even at the old time, which shows it is gone).
    acquired(store.claim(&old_a, &fingerprint, now, short).await.unwrap());
}

/// Of many concurrent claims of one free key, exactly one acquires it.
pub async fn idempotency_concurrent_claims(store: Arc<dyn IdempotencyStore>) {
    let now = start();
    let s = scope(TenantId::new(), "user:a", "race");
    let fingerprint = Fingerprint::of("POST", "/x", b"race");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let s = s.clone();
            tokio::spawn(async move { store.claim(&s, &fingerprint, now, LIFETIMES).await })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            Claim::Acquired(_) => won += 1,
            Claim::InFlight => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(won, 1);
}

/// Generates one `#[tokio::test]` per idempotency suite. `$store` is an
/// expression evaluating to a future of
/// `Option<Arc<dyn IdempotencyStore>>`, run afresh for every test; `None`
/// skips the test.
#[macro_export]
macro_rules! idempotency_store_tests {
    ($store:expr) => {
        $crate::idempotency_store_tests!(@suites $store;
            idempotency_claim_and_replay, idempotency_release, idempotency_expiry,
            idempotency_isolation, idempotency_purge, idempotency_concurrent_claims
        );
    };
    (@suites $store:expr; $($suite:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $suite() {
                if let Some(store) = $store.await {
                    $crate::testkit::$suite(store).await;
                }
            }
        )+
    };
}
