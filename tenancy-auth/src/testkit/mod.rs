//! Conformance suites for auth stores and the [`Auth`](crate::Auth) service
//! (feature `testkit`).
//!
//! Each suite takes a [`Fixture`]: a core backend and an auth store over the
//! same data. The in-memory and Postgres adapters run the identical suites
//! through [`auth_conformance_tests!`](crate::auth_conformance_tests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(feature = "testkit-idp")]
pub mod idp;
mod instrumented;
#[cfg(feature = "oidc")]
pub mod oidc;
mod service;
#[cfg(feature = "sso")]
pub mod sso;
#[cfg(all(feature = "sso", feature = "testkit-idp"))]
pub mod sso_flows;
mod stores;

use std::sync::Arc;

use tenancy_core::{
    Backend, Email, Membership, MembershipId, MembershipStatus, MembershipStore, Metadata, RoleSet,
    Slug, Tenant, TenantId, TenantName, TenantStatus, TenantStore, User, UserId, UserStatus,
    UserStore, truncate_to_micros,
};
use time::OffsetDateTime;

use crate::store::AuthStore;

pub use instrumented::InstrumentedStore;
pub use service::{
    service_api_keys, service_atomic_workflows, service_email_flows, service_key_encryption,
    service_key_rotation, service_login_and_lockout, service_login_limits, service_mail_limits,
    service_refresh_and_sessions, service_refresh_race, service_registration_modes,
    service_reset_reveals_nothing_by_timing, service_retention, service_session_bound_tokens,
    service_tenant_access, service_token_rejections,
};
pub use stores::{
    api_key_store, credential_store, key_store, key_store_concurrent_activation, lockout_store,
    one_time_token_store, session_store, session_store_refresh_race, store_retention,
};

/// A core backend and an auth store over the same data.
#[derive(Clone)]
pub struct Fixture {
    /// Tenants, users, memberships, audit.
    pub backend: Arc<dyn Backend>,
    /// Credentials, sessions, keys, API keys, one-time tokens.
    pub store: Arc<dyn AuthStore>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fixture")
    }
}

/// Generates one `#[tokio::test]` per auth suite. `$fixture` is an
/// expression evaluating to a future of `Option<Fixture>`; `None` skips.
#[macro_export]
macro_rules! auth_conformance_tests {
    ($fixture:expr) => {
        $crate::auth_conformance_tests!(@suites $fixture;
            credential_store, lockout_store, key_store, key_store_concurrent_activation,
            session_store, session_store_refresh_race, api_key_store, one_time_token_store, store_retention,
            service_login_and_lockout, service_refresh_and_sessions, service_refresh_race,
            service_tenant_access, service_api_keys, service_email_flows, service_token_rejections,
            service_key_rotation, service_atomic_workflows, service_key_encryption,
            service_session_bound_tokens, service_reset_reveals_nothing_by_timing, service_mail_limits,
            service_registration_modes, service_login_limits, service_retention
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

pub(crate) fn now() -> OffsetDateTime {
    truncate_to_micros(OffsetDateTime::now_utc())
}

/// Stores a tenant and a user who is an active member of it with `roles`.
pub(crate) async fn seed(
    backend: &dyn Backend,
    slug: &str,
    email: &str,
    roles: &[&str],
) -> (Tenant, User) {
    let at = now();
    let tenant = Tenant {
        id: TenantId::new(),
        slug: Slug::new(slug).unwrap(),
        name: TenantName::new(slug).unwrap(),
        status: TenantStatus::Active,
        metadata: Metadata::empty(),
        created_at: at,
        updated_at: at,
    };
    backend.insert_tenant(&tenant).await.unwrap();
    let user = match backend
        .find_user_by_email(&Email::new(email).unwrap())
        .await
        .unwrap()
    {
        Some(user) => user,
        None => {
            let user = User {
                id: UserId::new(),
                email: Email::new(email).unwrap(),
                display_name: None,
                email_verified: true,
                status: UserStatus::Active,
                created_at: at,
                updated_at: at,
            };
            backend.insert_user(&user).await.unwrap();
            user
        }
    };
    backend
        .insert_membership(&Membership {
            id: MembershipId::new(),
            tenant_id: tenant.id,
            user_id: user.id,
            roles: RoleSet::parse(roles).unwrap(),
            status: MembershipStatus::Active,
            created_at: at,
            updated_at: at,
        })
        .await
        .unwrap();
    (tenant, user)
}
