//! The policy cache's own behaviour, over the in-memory stores: compiles
//! off the async workers, the tenant bound, idle eviction and
//! notifications. (What it shares with every store, such as not caching
//! reads that raced a change, is in the conformance suites.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests report failure by panicking

use std::sync::Arc;
use std::time::{Duration, Instant};

use tenancy_authz::testkit::{Fixture, create_tenant, memory};
use tenancy_authz::*;
use tenancy_core::{AuditContext, TenantId};

fn catalog() -> Catalog {
    Catalog::new(["projects:read", "projects:update", "projects:delete"]).unwrap()
}

fn cache(f: &Fixture, engine: Engine, config: CacheConfig) -> Arc<PolicyCache> {
    Arc::new(PolicyCache::with_config(
        engine,
        Arc::clone(&f.roles),
        Arc::clone(&f.policies),
        config,
    ))
}

/// A tenant whose policies take a long while to compile is compiled on
/// the blocking pool: on a runtime with a single thread, another tenant's
/// requests keep answering at once meanwhile.
#[tokio::test(flavor = "current_thread")]
async fn a_large_compile_does_not_stall_other_tenants() {
    let f = memory().await.unwrap();
    let (big, _) = create_tenant(&f).await;
    let (small, _) = create_tenant(&f).await;
    let mut epoch = Epoch::ZERO;
    for p in 0..20 {
        let mut document = PolicyDocument::new(PolicyId::new(format!("p{p}")).unwrap());
        for s in 0..2_500 {
            document = document.with_statement(
                StatementDocument::new(Effect::Deny, ["projects:delete".parse().unwrap()])
                    .with_resource_types(["project"])
                    .with_condition(format!(
                        "resource.owner_{s} == principal.id && context.ip in cidr(\"10.{}.0.0/16\")",
                        s % 256
                    )),
            );
        }
        epoch = f
            .policies
            .put_policy(big, &document, epoch, &AuditContext::system())
            .await
            .unwrap();
    }
    let engine = Engine::builder(catalog())
        .limits(
            Limits::new()
                .with_max_statements(100_000)
                .with_max_condition_bytes(usize::MAX),
        )
        .build();
    let cache = cache(
        &f,
        engine,
        CacheConfig::new().with_freshness(Freshness::Notified),
    );
    cache.authorizer(small).await.unwrap();

    let started = Instant::now();
    let loading = tokio::spawn({
        let cache = Arc::clone(&cache);
        async move { cache.authorizer(big).await }
    });
    let mut answered = 0;
    let mut slowest = Duration::ZERO;
    while !loading.is_finished() {
        let asked = Instant::now();
        let small = tokio::spawn({
            let cache = Arc::clone(&cache);
            async move { cache.authorizer(small).await }
        });
        small.await.unwrap().unwrap();
        slowest = slowest.max(asked.elapsed());
        answered += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = started.elapsed();
    let compiled = loading.await.unwrap().unwrap();
    assert_eq!(
        compiled
            .policies()
            .iter()
            .map(|p| p.document().statements.len())
            .sum::<usize>(),
        50_000
    );
    assert!(
        took > Duration::from_millis(100),
        "the large compile took only {took:?}: too quick to show anything"
    );
    assert!(
        answered >= 5 && slowest * 5 < took,
        "the other tenant answered {answered} times, the slowest in {slowest:?}, while the compile took {took:?}"
    );
}

/// At most `max_tenants` tenants stay compiled.
#[tokio::test]
async fn the_cache_holds_at_most_max_tenants() {
    let f = memory().await.unwrap();
    let cache = cache(
        &f,
        Engine::new(catalog()),
        CacheConfig::new().with_max_tenants(2),
    );
    for _ in 0..6 {
        cache.authorizer(TenantId::new()).await.unwrap();
        assert!(cache.cached_tenants() <= 2, "{}", cache.cached_tenants());
    }
    assert!(cache.cached_tenants() >= 1);
}

/// Tenants unused for the idle timeout are dropped.
#[tokio::test]
async fn idle_tenants_are_dropped() {
    let f = memory().await.unwrap();
    let cache = cache(
        &f,
        Engine::new(catalog()),
        CacheConfig::new().with_idle_timeout(Some(Duration::from_secs(1))),
    );
    let (idle, busy) = (TenantId::new(), TenantId::new());
    cache.authorizer(idle).await.unwrap();
    assert_eq!(cache.cached_epoch(idle), Some(Epoch::ZERO));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    cache.authorizer(busy).await.unwrap();
    assert_eq!(cache.cached_epoch(idle), None);
    assert_eq!(cache.cached_epoch(busy), Some(Epoch::ZERO));
    assert_eq!(cache.cached_tenants(), 1);
}

/// The entry points for a listener shared with other channels: one
/// payload at a time, and forgetting everything after a lost connection.
#[tokio::test]
async fn notifications_from_a_shared_listener() {
    let f = memory().await.unwrap();
    let cache = cache(
        &f,
        Engine::new(catalog()),
        CacheConfig::new().with_freshness(Freshness::Notified),
    );
    let (a, b) = (TenantId::new(), TenantId::new());
    cache.authorizer(a).await.unwrap();
    cache.authorizer(b).await.unwrap();
    // An epoch the cached authorizer already has changes nothing.
    cache.apply_notification(&format!("{a}:0")).unwrap();
    assert_eq!(cache.cached_epoch(a), Some(Epoch::ZERO));
    cache.apply_notification(&format!("{a}:3")).unwrap();
    assert_eq!(cache.cached_epoch(a), None);
    assert_eq!(cache.cached_epoch(b), Some(Epoch::ZERO));
    for bad in [
        "",
        "x:1",
        &format!("{a}"),
        &format!("{a}:-1"),
        &format!("{a}:1:2"),
    ] {
        let err = cache.apply_notification(bad).unwrap_err();
        assert_eq!(err.payload(), bad);
        assert!(
            err.to_string()
                .starts_with("malformed authz epoch notification")
        );
    }
    assert_eq!(cache.cached_epoch(b), Some(Epoch::ZERO));
    cache.forget_all();
    assert_eq!(cache.cached_tenants(), 0);
}
