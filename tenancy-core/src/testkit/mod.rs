//! Conformance suites every [`Backend`](crate::Backend) must pass (feature `testkit`).
//!
//! Each suite takes a fresh backend and checks one store or workflow through
//! the public traits only: creation and reads, every uniqueness conflict,
//! not-found, invalid input, pagination order and cursor stability,
//! cross-tenant isolation, rollback, and races where exactly one writer may
//! win. The in-memory and Postgres backends run the identical suites;
//! a third-party backend proves itself the same way:
//!
//! ```ignore
//! async fn my_backend() -> Option<std::sync::Arc<dyn tenancy_core::Backend>> {
//!     Some(std::sync::Arc::new(MyBackend::connect().await))
//! }
//! tenancy_core::conformance_tests!(my_backend());
//! ```
//!
//! Suites panic on the first failed check, like any test assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod directory;
mod idempotency;
mod outbox;
#[cfg(feature = "postgres")]
pub mod postgres;
mod stores;

use time::OffsetDateTime;

use crate::clock::truncate_to_micros;
use crate::id::{MembershipId, TenantId, UserId};
use crate::membership::{Membership, MembershipStatus, RoleSet};
use crate::tenant::{Slug, Tenant, TenantName, TenantStatus};
use crate::text::Metadata;
use crate::user::{Email, User, UserStatus};

pub use directory::{
    directory_atomic_rollback, directory_audit_trail, directory_invitation_races,
    directory_invitations, directory_invitations_follow_their_senders_powers,
    directory_invitations_leave_with_their_sender, directory_last_owner_race, directory_members,
    directory_seat_limits, directory_tenant_lifecycle,
};
pub use idempotency::{
    idempotency_claim_and_replay, idempotency_concurrent_claims, idempotency_expiry,
    idempotency_isolation, idempotency_purge, idempotency_release,
};
pub use outbox::{
    OutboxSetup, outbox_append_and_read, outbox_audit_publishes, outbox_claims,
    outbox_concurrent_relays, outbox_lock_order, outbox_purge, outbox_rewind_and_lag,
    outbox_tenants_take_turns, outbox_transactions,
};
pub use stores::{
    audit_concurrent_appends, audit_log, invitation_store, membership_store, tenant_store,
    tenant_store_concurrent_slug, transactions, user_store, user_store_concurrent_email,
};

/// Generates one `#[tokio::test]` per outbox suite. `$setup` is an
/// expression evaluating to a future of `Option<`[`OutboxSetup`]`>`: a
/// backend and its [`EventFeed`](crate::EventFeed), run afresh for every
/// test; `None` skips the test.
#[macro_export]
macro_rules! outbox_tests {
    ($setup:expr) => {
        $crate::outbox_tests!(@suites $setup;
            outbox_append_and_read, outbox_transactions, outbox_audit_publishes, outbox_claims,
            outbox_rewind_and_lag, outbox_purge, outbox_concurrent_relays, outbox_lock_order,
            outbox_tenants_take_turns
        );
    };
    (@suites $setup:expr; $($suite:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $suite() {
                if let Some(setup) = $setup.await {
                    $crate::testkit::$suite(setup).await;
                }
            }
        )+
    };
}

/// Generates one `#[tokio::test]` per conformance suite. `$backend` is an
/// expression evaluating to a future of `Option<Arc<dyn Backend>>`, run
/// afresh for every test; `None` skips the test (for example, no database
/// configured outside CI).
#[macro_export]
macro_rules! conformance_tests {
    ($backend:expr) => {
        $crate::conformance_tests!(@suites $backend;
            tenant_store, tenant_store_concurrent_slug, user_store, user_store_concurrent_email,
            membership_store, invitation_store, audit_log, audit_concurrent_appends, transactions,
            directory_tenant_lifecycle, directory_atomic_rollback, directory_invitations,
            directory_invitation_races, directory_invitations_leave_with_their_sender,
            directory_invitations_follow_their_senders_powers, directory_members, directory_last_owner_race, directory_audit_trail,
            directory_seat_limits
        );
    };
    (@suites $backend:expr; $($suite:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $suite() {
                if let Some(backend) = $backend.await {
                    $crate::testkit::$suite(backend).await;
                }
            }
        )+
    };
}

pub(crate) fn now() -> OffsetDateTime {
    truncate_to_micros(OffsetDateTime::now_utc())
}

pub(crate) fn slug(text: &str) -> Slug {
    Slug::new(text).unwrap()
}

pub(crate) fn email(text: &str) -> Email {
    Email::new(text).unwrap()
}

pub(crate) fn roles(names: &[&str]) -> RoleSet {
    RoleSet::parse(names).unwrap()
}

pub(crate) fn new_tenant(slug_text: &str) -> Tenant {
    let at = now();
    Tenant {
        id: TenantId::new(),
        slug: slug(slug_text),
        name: TenantName::new(&format!("Tenant {slug_text}")).unwrap(),
        status: TenantStatus::Active,
        metadata: Metadata::empty(),
        created_at: at,
        updated_at: at,
    }
}

pub(crate) fn new_user(address: &str) -> User {
    let at = now();
    User {
        id: UserId::new(),
        email: email(address),
        display_name: None,
        email_verified: false,
        status: UserStatus::Active,
        created_at: at,
        updated_at: at,
    }
}

pub(crate) fn new_membership(tenant: &Tenant, user: &User, role_names: &[&str]) -> Membership {
    let at = now();
    Membership {
        id: MembershipId::new(),
        tenant_id: tenant.id,
        user_id: user.id,
        roles: roles(role_names),
        status: MembershipStatus::Active,
        created_at: at,
        updated_at: at,
    }
}
