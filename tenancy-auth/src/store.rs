//! Store traits for credentials, lockout counters, signing keys, sessions,
//! API keys and one-time tokens. [`AuthStore`] is all six at once, plus
//! [`AuthTransactions`], which is what [`crate::Auth`] holds.
//!
//! Each multi-row change (rotating a refresh token, activating a key,
//! creating a session past the per-user limit) is one atomic call, so every
//! backend keeps the same guarantees under concurrency. Workflows that
//! change several stores (registration: tenant, user, membership, password,
//! session, audit) run in one [`AuthTransaction`] spanning the auth records
//! and tenancy-core's. Tenant-owned reads take the tenant; lookups by
//! credential (API key id, token hash) do not, because the credential names
//! its tenant.

use async_trait::async_trait;
use tenancy_core::{
    ApiKeyId, Backend, Page, PageRequest, SessionId, StoreError, TenantId, TokenHash, Transaction,
    UserId,
};
use time::{Duration, OffsetDateTime};

use crate::api_key::ApiKey;
use crate::key_encryption::{KeyEncryptionKey, StoredPrivateKey};
use crate::keys::StoredKey;
use crate::lockout::{ThrottleKey, ThrottleRule, ThrottleState};
use crate::one_time::{OneTimeToken, TokenPurpose};
use crate::password::PasswordHashString;
use crate::session::{
    RefreshRecord, RefreshTokenOwner, Revocation, RevokeReason, RotateOutcome, Session,
    SessionPurge,
};

/// Password hashes, one per user.
#[async_trait]
pub trait CredentialStore: Send + Sync {
    /// Sets (or replaces) the user's password hash.
    async fn set_password_hash(
        &self,
        user_id: UserId,
        hash: &PasswordHashString,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// The user's password hash, if they have one.
    async fn password_hash(
        &self,
        user_id: UserId,
    ) -> Result<Option<PasswordHashString>, StoreError>;
}

/// Failed-login counters.
#[async_trait]
pub trait LockoutStore: Send + Sync {
    /// Counts one failure for `key` under `rule` (see
    /// [`ThrottleState::after_failure`]), atomically, and returns the new state.
    async fn record_login_failure(
        &self,
        key: &ThrottleKey,
        rule: &ThrottleRule,
        now: OffsetDateTime,
    ) -> Result<ThrottleState, StoreError>;

    /// The counter of `key`, if any.
    async fn throttle_state(&self, key: &ThrottleKey) -> Result<Option<ThrottleState>, StoreError>;

    /// Forgets `key`'s failures and lock.
    async fn clear_throttle(&self, key: &ThrottleKey) -> Result<(), StoreError>;

    /// Deletes counters whose window and lock both ended before
    /// `now - keep` (keep at least the longest rule's window); returns how
    /// many went.
    async fn purge_expired(&self, now: OffsetDateTime, keep: Duration) -> Result<u64, StoreError>;
}

/// Token-signing keys. At most one is active.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Every stored key, active and retired, oldest first.
    async fn list_signing_keys(&self) -> Result<Vec<StoredKey>, StoreError>;

    /// Retires the active key (if any) at `at` and stores `key` as the
    /// active one, atomically. [`tenancy_core::Conflict::ActiveSigningKey`]
    /// if another key became active meanwhile; `Conflict::Id` if the kid exists.
    async fn activate_signing_key(
        &self,
        key: &StoredKey,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Deletes keys retired before `cutoff`; returns how many.
    async fn delete_signing_keys_retired_before(
        &self,
        cutoff: OffsetDateTime,
    ) -> Result<u64, StoreError>;

    /// Replaces the stored private key of `kid` (to encrypt it, or
    /// re-encrypt it under another key-encryption key). `NotFound` if no
    /// key has that id.
    async fn replace_private_key(
        &self,
        kid: &str,
        private_key: &StoredPrivateKey,
    ) -> Result<(), StoreError>;

    /// For a store whose keys end with the process (in memory): a
    /// key-encryption key of the same lifetime, used when none is
    /// configured. `None` (the default) for stores that outlive the
    /// process, which then need one configured.
    fn process_encryption_key(&self) -> Option<KeyEncryptionKey> {
        None
    }
}

/// Sessions and their refresh-token families.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session with its first refresh token. If the user then
    /// has more than `max_per_user` live sessions, the oldest are revoked
    /// ([`RevokeReason::Evicted`]); their ids are returned.
    async fn create_session(
        &self,
        session: &Session,
        refresh: &RefreshRecord,
        max_per_user: u32,
    ) -> Result<Vec<SessionId>, StoreError>;

    /// Reads a session.
    async fn get_session(&self, id: SessionId) -> Result<Session, StoreError>;

    /// The session a refresh token belongs to, whether the token is the
    /// family's live one or already spent; `None` for an unknown token.
    async fn find_session_by_refresh_token(
        &self,
        token: &TokenHash,
    ) -> Result<Option<RefreshTokenOwner>, StoreError>;

    /// The user's live sessions at `now`, newest first.
    async fn list_user_sessions(
        &self,
        user_id: UserId,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError>;

    /// Presents a refresh token, atomically: a live token is spent, `next`
    /// (the hash of its successor) joins its family, and the session's idle
    /// expiry becomes `min(now + idle_timeout, absolute expiry)`; a spent
    /// token revokes the whole session ([`RevokeReason::RefreshTokenReuse`]).
    /// Of two concurrent presentations of one token, at most one rotates.
    async fn rotate_refresh_token(
        &self,
        presented: &TokenHash,
        next: &TokenHash,
        now: OffsetDateTime,
        idle_timeout: Duration,
    ) -> Result<RotateOutcome, StoreError>;

    /// Revokes one session; `false` if it was already revoked.
    async fn revoke_session(
        &self,
        id: SessionId,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Revokes every live session of `user_id` (in `tenant_id` only, if
    /// given) and returns their ids.
    async fn revoke_user_sessions(
        &self,
        user_id: UserId,
        tenant_id: Option<TenantId>,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Result<Vec<SessionId>, StoreError>;

    /// Revokes every live session in `tenant_id` and returns their ids.
    async fn revoke_tenant_sessions(
        &self,
        tenant_id: TenantId,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Result<Vec<SessionId>, StoreError>;

    /// Sessions revoked at or after `since` that have not expired by `now`,
    /// for replicas to update their revocation sets.
    async fn revocations_since(
        &self,
        since: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Vec<Revocation>, StoreError>;

    /// Deletes sessions that ended (revoked, idle or past their absolute
    /// expiry) before `now - keep_ended`, with their refresh tokens, and
    /// refresh tokens spent before `now - keep_spent`; returns how many of
    /// each went. Live sessions and their current tokens stay.
    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        keep_ended: Duration,
        keep_spent: Duration,
    ) -> Result<SessionPurge, StoreError>;
}

/// API keys.
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// Stores a new key.
    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), StoreError>;

    /// Reads a key by id, in whatever tenant: the verification lookup.
    async fn get_api_key(&self, id: ApiKeyId) -> Result<ApiKey, StoreError>;

    /// Lists `tenant_id`'s keys, oldest first.
    async fn list_api_keys(
        &self,
        tenant_id: TenantId,
        page: &PageRequest,
    ) -> Result<Page<ApiKey>, StoreError>;

    /// Revokes a key of `tenant_id` and returns it; `NotFound` in another tenant.
    async fn revoke_api_key(
        &self,
        tenant_id: TenantId,
        id: ApiKeyId,
        at: OffsetDateTime,
    ) -> Result<ApiKey, StoreError>;

    /// Moves `last_used_at` forward to `at` (never back).
    async fn touch_api_key(&self, id: ApiKeyId, at: OffsetDateTime) -> Result<(), StoreError>;
}

/// Single-use tokens.
#[async_trait]
pub trait OneTimeTokenStore: Send + Sync {
    /// Stores `token`, atomically, unless the user already holds an unused,
    /// unexpired token of the same purpose issued at or after
    /// `cooldown_since` (then nothing changes); returns whether it was
    /// stored. The user's earlier tokens stay valid: a new request never
    /// spoils a link already sent.
    async fn insert_one_time_token(
        &self,
        token: &OneTimeToken,
        cooldown_since: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Reads a token without using it.
    async fn find_one_time_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<OneTimeToken>, StoreError>;

    /// Marks a token used, atomically, if it exists, has `purpose`, is unused
    /// and unexpired at `now`; returns it then, else `None`. The user's
    /// other unused tokens of that purpose are spent with it. Of concurrent
    /// calls with one token, at most one gets it.
    async fn consume_one_time_token(
        &self,
        hash: &TokenHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<Option<OneTimeToken>, StoreError>;

    /// Deletes tokens used or expired before `now - keep`; returns how
    /// many went.
    async fn purge_expired(&self, now: OffsetDateTime, keep: Duration) -> Result<u64, StoreError>;
}

/// Writes to auth records that commit together with tenancy-core's
/// (tenants, users, memberships, audit) on [`AuthTransaction::commit`], or
/// not at all: dropping the transaction uncommitted discards every change.
///
/// Each write means what the store method of the same name means. After a
/// write fails, drop the transaction: a database may refuse anything more,
/// and [`AuthTransaction::commit`] answers
/// [`StoreError::TransactionAborted`].
#[async_trait]
pub trait AuthTransaction: Send + Sync {
    /// The tenancy-core stores inside this transaction.
    fn core(&self) -> &dyn Transaction;

    /// See [`CredentialStore::set_password_hash`].
    async fn set_password_hash(
        &self,
        user_id: UserId,
        hash: &PasswordHashString,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// See [`LockoutStore::clear_throttle`].
    async fn clear_throttle(&self, key: &ThrottleKey) -> Result<(), StoreError>;

    /// See [`SessionStore::create_session`].
    async fn create_session(
        &self,
        session: &Session,
        refresh: &RefreshRecord,
        max_per_user: u32,
    ) -> Result<Vec<SessionId>, StoreError>;

    /// See [`SessionStore::revoke_session`].
    async fn revoke_session(
        &self,
        id: SessionId,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// See [`SessionStore::revoke_user_sessions`].
    async fn revoke_user_sessions(
        &self,
        user_id: UserId,
        tenant_id: Option<TenantId>,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Result<Vec<SessionId>, StoreError>;

    /// See [`ApiKeyStore::insert_api_key`].
    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), StoreError>;

    /// See [`ApiKeyStore::revoke_api_key`].
    async fn revoke_api_key(
        &self,
        tenant_id: TenantId,
        id: ApiKeyId,
        at: OffsetDateTime,
    ) -> Result<ApiKey, StoreError>;

    /// See [`OneTimeTokenStore::consume_one_time_token`].
    async fn consume_one_time_token(
        &self,
        hash: &TokenHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<Option<OneTimeToken>, StoreError>;

    /// Makes every change of the transaction durable and visible, auth
    /// and core alike.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// Opens [`AuthTransaction`]s.
#[async_trait]
pub trait AuthTransactions: Send + Sync {
    /// Opens a transaction over this store and `backend`, the core records.
    ///
    /// A store in a database runs both in one database transaction; its
    /// `backend` must then be the same database (the auth tables' foreign
    /// keys to users and tenants require that anyway), and the store may
    /// open the transaction on its own connections. A store in memory
    /// opens one on `backend` and installs its own changes only once that
    /// one has committed.
    async fn begin(&self, backend: &dyn Backend) -> Result<Box<dyn AuthTransaction>, StoreError>;
}

/// Every auth store in one object.
pub trait AuthStore:
    CredentialStore
    + LockoutStore
    + KeyStore
    + SessionStore
    + ApiKeyStore
    + OneTimeTokenStore
    + AuthTransactions
    + 'static
{
}

impl<T> AuthStore for T where
    T: CredentialStore
        + LockoutStore
        + KeyStore
        + SessionStore
        + ApiKeyStore
        + OneTimeTokenStore
        + AuthTransactions
        + 'static
{
}
