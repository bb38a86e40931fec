//! The in-process set of revoked sessions that access-token checks consult.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};

use tenancy_core::{SessionId, StoreError};
use time::{Duration, OffsetDateTime};

use crate::store::SessionStore;

/// Revoked sessions whose access tokens may still be unexpired.
///
/// Access tokens are checked without touching the store, so revocation must
/// reach every replica's set:
/// - the replica that revokes inserts at once;
/// - every replica calls [`RevocationSet::sync`] periodically (see
///   `Auth::spawn_revocation_sync`), reading the store's revocations since its
///   last sync; a token of a session revoked elsewhere is refused at most one
///   sync interval later;
/// - on Postgres, `postgres::listen_revocations` also applies each
///   revocation the moment it commits, through `LISTEN tenancy_session_revoked`.
///
/// Entries are dropped once the session would have expired anyway, so the
/// set stays as small as the number of recent revocations.
#[derive(Debug, Default)]
pub struct RevocationSet {
    revoked: RwLock<HashMap<SessionId, OffsetDateTime>>,
    synced_to: Mutex<Option<OffsetDateTime>>,
}

/// Overlap between syncs, covering clock skew between replicas and the store.
const SYNC_OVERLAP: Duration = Duration::seconds(5);

impl RevocationSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `session` is revoked; it can be forgotten after `expires_at`.
    pub fn insert(&self, session: SessionId, expires_at: OffsetDateTime) {
        self.revoked
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(session, expires_at);
    }

    /// Whether `session` is revoked.
    pub fn contains(&self, session: SessionId) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&session)
    }

    /// How many sessions are held.
    pub fn len(&self) -> usize {
        self.revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads revocations from `store` since the last sync (or, the first
    /// time, since `now - lookback`), adds them, and drops expired entries.
    /// Returns how many revocations were read.
    pub async fn sync(
        &self,
        store: &dyn SessionStore,
        now: OffsetDateTime,
        lookback: Duration,
    ) -> Result<usize, StoreError> {
        let since = self
            .synced_to
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map_or(now - lookback, |last| last - SYNC_OVERLAP);
        let revocations = store.revocations_since(since, now).await?;
        {
            let mut revoked = self.revoked.write().unwrap_or_else(PoisonError::into_inner);
            for revocation in &revocations {
                revoked.insert(revocation.session_id, revocation.expires_at);
            }
            revoked.retain(|_, expires_at| *expires_at > now);
        }
        *self
            .synced_to
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(now);
        Ok(revocations.len())
    }
}
