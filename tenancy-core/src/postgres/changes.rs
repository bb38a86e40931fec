//! Tenant and membership changes announced by the core migration's
//! triggers, for replicas that cache what they read.

use std::sync::Arc;

use sqlx::postgres::PgPool;

use super::listener::{FnSubscriber, Listener, RunningListener, Subscriber};
use crate::cache::{CachingStore, DirectoryChange};

/// The channel a tenant's status or slug change is announced on, with the
/// tenant id as payload.
pub const TENANT_CHANGED_CHANNEL: &str = "tenancy_tenant_changed";

/// The channel a membership's creation, change or removal is announced on,
/// with `<tenant id>:<user id>` as payload.
pub const MEMBER_CHANGED_CHANNEL: &str = "tenancy_member_changed";

impl DirectoryChange {
    /// Reads a notification; `None` for another channel or a payload that
    /// is not one of ours.
    pub fn parse(channel: &str, payload: &str) -> Option<Self> {
        match channel {
            TENANT_CHANGED_CHANNEL => payload.parse().ok().map(Self::Tenant),
            MEMBER_CHANGED_CHANNEL => {
                let (tenant, user) = payload.split_once(':')?;
                Some(Self::Member(tenant.parse().ok()?, user.parse().ok()?))
            }
            _ => None,
        }
    }
}

/// The channels tenancy-core announces changes on.
pub const DIRECTORY_CHANNELS: [&str; 2] = [TENANT_CHANGED_CHANNEL, MEMBER_CHANGED_CHANNEL];

/// A [`CachingStore`] forgets what each announced change made stale, and
/// everything after a reconnection: register it on a [`Listener`] for
/// [`DIRECTORY_CHANNELS`].
impl Subscriber for CachingStore {
    fn notify(&self, channel: &str, payload: &str) {
        match DirectoryChange::parse(channel, payload) {
            Some(change) => self.apply(change),
            None => tracing::warn!(channel, "ignoring an unreadable directory change notice"),
        }
    }

    fn resync(&self) {
        self.forget_all();
    }
}

/// Calls `on_change` for every tenant and membership change as it commits,
/// from any process writing to the database, over a connection of its own;
/// a lost connection is reported as [`DirectoryChange::Unknown`] once the
/// new one listens. To share one connection with other modules, register
/// on a [`Listener`] instead.
///
/// Errors: the first connection or subscription failed.
pub async fn listen_directory_changes<F>(
    pool: &PgPool,
    on_change: F,
) -> Result<RunningListener, sqlx::Error>
where
    F: Fn(DirectoryChange) + Send + Sync + 'static,
{
    let on_change = Arc::new(on_change);
    let on_notice = on_change.clone();
    let mut listener = Listener::new(pool.clone());
    listener.subscribe(
        DIRECTORY_CHANNELS,
        FnSubscriber::new(
            move |channel, payload| match DirectoryChange::parse(channel, payload) {
                Some(change) => on_notice(change),
                None => tracing::warn!(channel, "ignoring an unreadable directory change notice"),
            },
            move || on_change(DirectoryChange::Unknown),
        ),
    );
    listener.start().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{TenantId, UserId};

    #[test]
    fn parses_only_its_own_notices() {
        let tenant = TenantId::new();
        let user = UserId::new();
        assert_eq!(
            DirectoryChange::parse(TENANT_CHANGED_CHANNEL, &tenant.to_string()),
            Some(DirectoryChange::Tenant(tenant))
        );
        assert_eq!(
            DirectoryChange::parse(MEMBER_CHANGED_CHANNEL, &format!("{tenant}:{user}")),
            Some(DirectoryChange::Member(tenant, user))
        );
        for (channel, payload) in [
            (TENANT_CHANGED_CHANNEL, "not-a-uuid"),
            (MEMBER_CHANGED_CHANNEL, &tenant.to_string()),
            (MEMBER_CHANGED_CHANNEL, &format!("{tenant}:x")),
            ("elsewhere", &tenant.to_string()),
        ] {
            assert_eq!(DirectoryChange::parse(channel, payload), None, "{payload}");
        }
    }
}
