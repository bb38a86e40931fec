//! Tenant and membership changes announced by the core migration's
//! triggers, for replicas that cache what they read.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};

use crate::id::{TenantId, UserId};

/// The channel a tenant's status or slug change is announced on, with the
/// tenant id as payload.
pub const TENANT_CHANGED_CHANNEL: &str = "tenancy_tenant_changed";

/// The channel a membership's creation, change or removal is announced on,
/// with `<tenant id>:<user id>` as payload.
pub const MEMBER_CHANGED_CHANNEL: &str = "tenancy_member_changed";

/// What a replica should forget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryChange {
    /// A tenant's status or slug changed.
    Tenant(TenantId),
    /// A user's membership of a tenant was created, changed or removed.
    Member(TenantId, UserId),
    /// Notices may have been missed (the listener reconnected): forget
    /// everything.
    Unknown,
}

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

/// Calls `on_change` for every tenant and membership change as it commits,
/// from any process writing to the database. A lost connection is
/// reported as [`DirectoryChange::Unknown`] (notices sent meanwhile are
/// gone) and re-established. Returns once listening; abort the handle to
/// stop.
///
/// Errors: the first connection or subscription failed.
pub async fn listen_directory_changes<F>(
    pool: &PgPool,
    on_change: F,
) -> Result<tokio::task::JoinHandle<()>, sqlx::Error>
where
    F: Fn(DirectoryChange) + Send + 'static,
{
    let listener = subscribe(pool).await?;
    Ok(tokio::spawn(relay(pool.clone(), listener, on_change)))
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener
        .listen_all([TENANT_CHANGED_CHANNEL, MEMBER_CHANGED_CHANNEL])
        .await?;
    Ok(listener)
}

async fn relay<F>(pool: PgPool, mut listener: PgListener, on_change: F)
where
    F: Fn(DirectoryChange) + Send + 'static,
{
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                match DirectoryChange::parse(notification.channel(), notification.payload()) {
                    Some(change) => on_change(change),
                    None => tracing::warn!(
                        channel = notification.channel(),
                        "ignoring an unreadable directory change notice"
                    ),
                }
            }
            // The connection dropped and was re-established: whatever was
            // announced in between is gone.
            Ok(None) => {
                tracing::warn!("directory change listener reconnected; forgetting everything");
                on_change(DirectoryChange::Unknown);
            }
            Err(sqlx::Error::PoolClosed) => return,
            // Reconnecting failed. Subscribe afresh, and only then forget:
            // what is read before the subscription holds must not outlive it.
            Err(error) => {
                tracing::warn!(%error, "directory change listener lost its connection");
                listener = loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match subscribe(&pool).await {
                        Ok(listener) => break listener,
                        Err(sqlx::Error::PoolClosed) => return,
                        Err(error) => {
                            tracing::warn!(%error, "directory change listener cannot resubscribe");
                        }
                    }
                };
                on_change(DirectoryChange::Unknown);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
