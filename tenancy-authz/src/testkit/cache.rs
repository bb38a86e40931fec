//! Suites for the policy cache over a store: reads that race a change
//! are not cached, and a tenant is loaded once however many ask.

use std::sync::Arc;

use tenancy_core::{AuditContext, RoleSet, UserId};

use super::probe::Probe;
use super::suites::{catalog, role};
use super::{Fixture, create_tenant};
use crate::cache::{CacheConfig, Freshness, PolicyCache};
use crate::engine::Engine;
use crate::request::{AuthzRequest, Principal, Resource};
use crate::store::Epoch;

/// A load that read the store before an invalidation, an announced epoch
/// or a forget-everything is not cached: the caller that raced gets what
/// it read, the next one the new state.
pub async fn cache_skips_raced_reads(f: Fixture) {
    let (tenant, _) = create_tenant(&f).await;
    let probe = Probe::new(Arc::clone(&f.roles), Arc::clone(&f.policies));
    let cache = Arc::new(PolicyCache::with_config(
        Engine::new(catalog()),
        probe.clone(),
        probe.clone(),
        CacheConfig::new().with_freshness(Freshness::Notified),
    ));
    let editor = Principal::user(UserId::new(), tenant, RoleSet::parse(["editor"]).unwrap());
    let project = Resource::new("project").in_tenant(tenant);
    let update = AuthzRequest::new(&editor, "projects:update", &project);

    // Each round: a load holds what it read at `read`; meanwhile the
    // store moves to `read + 1` and the cache hears of it (invalidated,
    // told the epoch, told to forget everything).
    for round in 0..3 {
        let read = Epoch(round as u64);
        cache.invalidate(tenant);
        probe.hold_next_policy_read();
        let loading = tokio::spawn({
            let cache = Arc::clone(&cache);
            async move { cache.authorizer(tenant).await }
        });
        probe.held().await;
        let grants: &[&str] = if round % 2 == 0 {
            &["projects:update"]
        } else {
            &["projects:read"]
        };
        let written = f
            .roles
            .put_role(
                tenant,
                &role("editor", grants, &[]),
                read,
                &AuditContext::system(),
            )
            .await
            .unwrap();
        match round {
            0 => cache.invalidate(tenant),
            1 => cache.observe_epoch(tenant, written),
            _ => cache.forget_all(),
        }
        probe.release();
        let raced = loading.await.unwrap().unwrap();
        assert_eq!(raced.epoch(), Some(read), "round {round}");
        assert_eq!(
            cache.cached_epoch(tenant),
            None,
            "round {round}: not cached"
        );
        let fresh = cache.authorizer(tenant).await.unwrap();
        assert_eq!(fresh.epoch(), Some(written), "round {round}");
        assert_eq!(
            fresh.check(&update).allowed(),
            round % 2 == 0,
            "round {round}"
        );
        assert_eq!(cache.cached_epoch(tenant), Some(written), "round {round}");
    }
}

/// Concurrent requests for a tenant that is not cached share one load.
pub async fn cache_loads_once_per_tenant(f: Fixture) {
    let (tenant, _) = create_tenant(&f).await;
    let probe = Probe::new(Arc::clone(&f.roles), Arc::clone(&f.policies));
    let cache = Arc::new(PolicyCache::with_config(
        Engine::new(catalog()),
        probe.clone(),
        probe.clone(),
        CacheConfig::new().with_freshness(Freshness::Notified),
    ));
    probe.hold_next_policy_read();
    let waiting: Vec<_> = (0..8)
        .map(|_| {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.authorizer(tenant).await })
        })
        .collect();
    probe.held().await;
    // Let every request reach the cache while the one load is held.
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    probe.release();
    let mut loaded = Vec::new();
    for request in waiting {
        loaded.push(request.await.unwrap().unwrap());
    }
    assert!(loaded.iter().all(|a| Arc::ptr_eq(a, &loaded[0])));
    assert_eq!(
        probe.lists(),
        2,
        "one read of the roles, one of the policies"
    );
}
