//! Conformance suites every [`RoleStore`] and [`PolicyStore`] must pass
//! (feature `testkit`).
//!
//! Each suite takes a fresh [`Fixture`] (the stores under test and the
//! tenancy-core backend holding tenants and the audit log) and checks,
//! through the public traits only: round trips, epochs and stale writes,
//! not-found, isolation between tenants, concurrent writers, audit events,
//! the cache following epochs (and not caching reads that raced a change,
//! and loading each tenant once), and that [`AuthzAdmin`](crate::AuthzAdmin)
//! refuses privilege escalation, deny statements beyond the writer's own
//! permissions, roles that do not exist or are still held, and policies
//! past the limits, while owners keep managing policies and roles whatever
//! is stored. The memory and Postgres adapters run the identical suites;
//! a third-party store proves itself the same way:
//!
//! ```ignore
//! async fn my_fixture() -> Option<tenancy_authz::testkit::Fixture> { /* … */ }
//! tenancy_authz::conformance_tests!(my_fixture());
//! ```
//!
//! Suites panic on the first failed check, like any test assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod cache;
#[cfg(feature = "postgres")]
pub mod postgres;
mod probe;
mod suites;

use std::sync::Arc;

use tenancy_core::{
    AuditContext, Backend, Directory, Email, NewTenant, NewUser, Owner, Slug, TenantId, TenantName,
    UserId,
};

#[cfg(feature = "memory")]
use crate::store::MemoryAuthzStore;
use crate::store::{PolicyStore, RoleStore};

pub use admin::{
    admin_enforces_limits, admin_rate_limits_policy_writes, admin_write_compiles_once,
    owners_cannot_be_locked_out, roles_must_exist_to_be_held,
};
pub use cache::{cache_loads_once_per_tenant, cache_skips_raced_reads};
pub use suites::{
    admin_prevents_escalation, audit_trail, cache_follows_epochs, concurrent_writers, policy_store,
    role_store, shared_epoch, tenant_isolation,
};

/// What a suite runs against.
#[derive(Clone)]
pub struct Fixture {
    /// Holds tenants and the audit log.
    pub backend: Arc<dyn Backend>,
    /// The role store under test.
    pub roles: Arc<dyn RoleStore>,
    /// The policy store under test (sharing the role store's epoch).
    pub policies: Arc<dyn PolicyStore>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture").finish_non_exhaustive()
    }
}

/// A fixture over a fresh `MemoryBackend` and [`MemoryAuthzStore`].
#[cfg(feature = "memory")]
pub async fn memory() -> Option<Fixture> {
    let backend: Arc<dyn Backend> = Arc::new(tenancy_core::MemoryBackend::new());
    let store = Arc::new(MemoryAuthzStore::new(Arc::clone(&backend)));
    Some(Fixture {
        backend,
        roles: store.clone(),
        policies: store,
    })
}

/// Generates one `#[tokio::test]` per conformance suite. `$fixture` is an
/// expression evaluating to a future of `Option<Fixture>`, run afresh for
/// every test; `None` skips the test.
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:expr) => {
        $crate::conformance_tests!(@suites $fixture;
            role_store, policy_store, shared_epoch, tenant_isolation, concurrent_writers,
            audit_trail, cache_follows_epochs, admin_prevents_escalation,
            owners_cannot_be_locked_out, roles_must_exist_to_be_held, admin_enforces_limits,
            cache_skips_raced_reads, cache_loads_once_per_tenant, admin_write_compiles_once,
            admin_rate_limits_policy_writes
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

/// Creates a tenant with a fresh owner in the fixture's backend.
pub async fn create_tenant(fixture: &Fixture) -> (TenantId, UserId) {
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let slug = format!("t-{}", &suffix[suffix.len() - 12..]);
    let created = Directory::new(Arc::clone(&fixture.backend))
        .create_tenant(
            NewTenant::new(
                Slug::new(slug.clone()).unwrap(),
                TenantName::new(&slug).unwrap(),
            ),
            Owner::New(NewUser::new(
                Email::new(&format!("owner@{slug}.test")).unwrap(),
            )),
            &AuditContext::system(),
        )
        .await
        .unwrap();
    (created.tenant.id, created.owner.id)
}
