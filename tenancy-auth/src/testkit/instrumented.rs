//! [`InstrumentedStore`]: an auth store wrapper that counts calls and fails
//! a chosen one, for suites that prove workflows leave nothing
//! half-written and that hot paths stay off the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
use crate::store::{
    ApiKeyStore, AuthStore, AuthTransaction, AuthTransactions, CredentialStore, KeyStore,
    LockoutStore, OneTimeTokenStore, SessionStore,
};

type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Default)]
struct Probe {
    calls: Mutex<HashMap<&'static str, u64>>,
    fail: Mutex<Option<&'static str>>,
}

impl Probe {
    /// Counts a call of `method`, and fails it if it was chosen.
    fn hit(&self, method: &'static str) -> Result<()> {
        *self.calls.lock().unwrap().entry(method).or_default() += 1;
        let mut fail = self.fail.lock().unwrap();
        if *fail == Some(method) {
            *fail = None;
            return Err(StoreError::unavailable(format!(
                "injected failure in {method}"
            )));
        }
        Ok(())
    }
}

/// Wraps an auth store: counts each call by method name (transactional
/// writes count under the same name as direct ones) and fails the next
/// call of a method chosen with [`InstrumentedStore::fail_next`].
#[derive(Clone)]
pub struct InstrumentedStore {
    inner: Arc<dyn AuthStore>,
    probe: Arc<Probe>,
}

impl std::fmt::Debug for InstrumentedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstrumentedStore").finish_non_exhaustive()
    }
}

impl InstrumentedStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn AuthStore>) -> Self {
        Self {
            inner,
            probe: Arc::new(Probe::default()),
        }
    }

    /// The next call of `method` (such as `"create_session"`) fails as if
    /// the store were unreachable.
    pub fn fail_next(&self, method: &'static str) {
        *self.probe.fail.lock().unwrap() = Some(method);
    }

    /// How many times `method` was called.
    pub fn calls(&self, method: &str) -> u64 {
        self.probe
            .calls
            .lock()
            .unwrap()
            .get(method)
            .copied()
            .unwrap_or_default()
    }

    /// Every call so far, by method.
    pub fn all_calls(&self) -> HashMap<&'static str, u64> {
        self.probe.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl CredentialStore for InstrumentedStore {
    async fn set_password_hash(
        &self,
        user_id: UserId,
        hash: &PasswordHashString,
        at: OffsetDateTime,
    ) -> Result<()> {
        self.probe.hit("set_password_hash")?;
        self.inner.set_password_hash(user_id, hash, at).await
    }

    async fn password_hash(&self, user_id: UserId) -> Result<Option<PasswordHashString>> {
        self.probe.hit("password_hash")?;
        self.inner.password_hash(user_id).await
    }
}

#[async_trait]
impl LockoutStore for InstrumentedStore {
    async fn record_login_failure(
        &self,
        key: &ThrottleKey,
        rule: &ThrottleRule,
        now: OffsetDateTime,
    ) -> Result<ThrottleState> {
        self.probe.hit("record_login_failure")?;
        self.inner.record_login_failure(key, rule, now).await
    }

    async fn throttle_state(&self, key: &ThrottleKey) -> Result<Option<ThrottleState>> {
        self.probe.hit("throttle_state")?;
        self.inner.throttle_state(key).await
    }

    async fn clear_throttle(&self, key: &ThrottleKey) -> Result<()> {
        self.probe.hit("clear_throttle")?;
        self.inner.clear_throttle(key).await
    }

    async fn purge_expired(&self, now: OffsetDateTime, keep: Duration) -> Result<u64> {
        self.probe.hit("purge_throttles")?;
        LockoutStore::purge_expired(&*self.inner, now, keep).await
    }
}

#[async_trait]
impl KeyStore for InstrumentedStore {
    async fn list_signing_keys(&self) -> Result<Vec<StoredKey>> {
        self.probe.hit("list_signing_keys")?;
        self.inner.list_signing_keys().await
    }

    async fn activate_signing_key(&self, key: &StoredKey, at: OffsetDateTime) -> Result<()> {
        self.probe.hit("activate_signing_key")?;
        self.inner.activate_signing_key(key, at).await
    }

    async fn delete_signing_keys_retired_before(&self, cutoff: OffsetDateTime) -> Result<u64> {
        self.probe.hit("delete_signing_keys_retired_before")?;
        self.inner.delete_signing_keys_retired_before(cutoff).await
    }

    async fn replace_private_key(&self, kid: &str, private_key: &StoredPrivateKey) -> Result<()> {
        self.probe.hit("replace_private_key")?;
        self.inner.replace_private_key(kid, private_key).await
    }

    fn process_encryption_key(&self) -> Option<KeyEncryptionKey> {
        self.inner.process_encryption_key()
    }
}

#[async_trait]
impl SessionStore for InstrumentedStore {
    async fn create_session(
        &self,
        session: &Session,
        refresh: &RefreshRecord,
        max_per_user: u32,
    ) -> Result<Vec<SessionId>> {
        self.probe.hit("create_session")?;
        self.inner
            .create_session(session, refresh, max_per_user)
            .await
    }

    async fn get_session(&self, id: SessionId) -> Result<Session> {
        self.probe.hit("get_session")?;
        self.inner.get_session(id).await
    }

    async fn find_session_by_refresh_token(
        &self,
        token: &TokenHash,
    ) -> Result<Option<RefreshTokenOwner>> {
        self.probe.hit("find_session_by_refresh_token")?;
        self.inner.find_session_by_refresh_token(token).await
    }

    async fn list_user_sessions(
        &self,
        user_id: UserId,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>> {
        self.probe.hit("list_user_sessions")?;
        self.inner.list_user_sessions(user_id, now).await
    }

    async fn rotate_refresh_token(
        &self,
        presented: &TokenHash,
        next: &TokenHash,
        now: OffsetDateTime,
        idle_timeout: Duration,
    ) -> Result<RotateOutcome> {
        self.probe.hit("rotate_refresh_token")?;
        self.inner
            .rotate_refresh_token(presented, next, now, idle_timeout)
            .await
    }

    async fn revoke_session(
        &self,
        id: SessionId,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Result<bool> {
        self.probe.hit("revoke_session")?;
        self.inner.revoke_session(id, reason, at).await
    }

    async fn revoke_user_sessions(
        &self,
        user_id: UserId,
        tenant_id: Option<TenantId>,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Result<Vec<SessionId>> {
        self.probe.hit("revoke_user_sessions")?;
        self.inner
            .revoke_user_sessions(user_id, tenant_id, reason, at)
            .await
    }

    async fn revoke_tenant_sessions(
        &self,
        tenant_id: TenantId,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Result<Vec<SessionId>> {
        self.probe.hit("revoke_tenant_sessions")?;
        self.inner
            .revoke_tenant_sessions(tenant_id, reason, at)
            .await
    }

    async fn revocations_since(
        &self,
        since: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Vec<Revocation>> {
        self.probe.hit("revocations_since")?;
        self.inner.revocations_since(since, now).await
    }

    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        keep_ended: Duration,
        keep_spent: Duration,
    ) -> Result<SessionPurge> {
        self.probe.hit("purge_sessions")?;
        SessionStore::purge_expired(&*self.inner, now, keep_ended, keep_spent).await
    }
}

#[async_trait]
impl ApiKeyStore for InstrumentedStore {
    async fn insert_api_key(&self, key: &ApiKey) -> Result<()> {
        self.probe.hit("insert_api_key")?;
        self.inner.insert_api_key(key).await
    }

    async fn get_api_key(&self, id: ApiKeyId) -> Result<ApiKey> {
        self.probe.hit("get_api_key")?;
        self.inner.get_api_key(id).await
    }

    async fn list_api_keys(&self, tenant_id: TenantId, page: &PageRequest) -> Result<Page<ApiKey>> {
        self.probe.hit("list_api_keys")?;
        self.inner.list_api_keys(tenant_id, page).await
    }

    async fn revoke_api_key(
        &self,
        tenant_id: TenantId,
        id: ApiKeyId,
        at: OffsetDateTime,
    ) -> Result<ApiKey> {
        self.probe.hit("revoke_api_key")?;
        self.inner.revoke_api_key(tenant_id, id, at).await
    }

    async fn touch_api_key(&self, id: ApiKeyId, at: OffsetDateTime) -> Result<()> {
        self.probe.hit("touch_api_key")?;
        self.inner.touch_api_key(id, at).await
    }
}

#[async_trait]
impl OneTimeTokenStore for InstrumentedStore {
    async fn insert_one_time_token(
        &self,
        token: &OneTimeToken,
        cooldown_since: OffsetDateTime,
    ) -> Result<bool> {
        self.probe.hit("insert_one_time_token")?;
        self.inner
            .insert_one_time_token(token, cooldown_since)
            .await
    }

    async fn find_one_time_token(&self, hash: &TokenHash) -> Result<Option<OneTimeToken>> {
        self.probe.hit("find_one_time_token")?;
        self.inner.find_one_time_token(hash).await
    }

    async fn consume_one_time_token(
        &self,
        hash: &TokenHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<Option<OneTimeToken>> {
        self.probe.hit("consume_one_time_token")?;
        self.inner.consume_one_time_token(hash, purpose, now).await
    }

    async fn purge_expired(&self, now: OffsetDateTime, keep: Duration) -> Result<u64> {
        self.probe.hit("purge_one_time_tokens")?;
        OneTimeTokenStore::purge_expired(&*self.inner, now, keep).await
    }
}

#[async_trait]
impl AuthTransactions for InstrumentedStore {
    async fn begin(&self, backend: &dyn Backend) -> Result<Box<dyn AuthTransaction>> {
        self.probe.hit("begin")?;
        Ok(Box::new(InstrumentedTransaction {
            inner: self.inner.begin(backend).await?,
            probe: Arc::clone(&self.probe),
        }))
    }
}

struct InstrumentedTransaction {
    inner: Box<dyn AuthTransaction>,
    probe: Arc<Probe>,
}

#[async_trait]
impl AuthTransaction for InstrumentedTransaction {
    fn core(&self) -> &dyn Transaction {
        self.inner.core()
    }

    async fn set_password_hash(
        &self,
        user_id: UserId,
        hash: &PasswordHashString,
        at: OffsetDateTime,
    ) -> Result<()> {
        self.probe.hit("set_password_hash")?;
        self.inner.set_password_hash(user_id, hash, at).await
    }

    async fn clear_throttle(&self, key: &ThrottleKey) -> Result<()> {
        self.probe.hit("clear_throttle")?;
        self.inner.clear_throttle(key).await
    }

    async fn create_session(
        &self,
        session: &Session,
        refresh: &RefreshRecord,
        max_per_user: u32,
    ) -> Result<Vec<SessionId>> {
        self.probe.hit("create_session")?;
        self.inner
            .create_session(session, refresh, max_per_user)
            .await
    }

    async fn revoke_session(
        &self,
        id: SessionId,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Result<bool> {
        self.probe.hit("revoke_session")?;
        self.inner.revoke_session(id, reason, at).await
    }

    async fn revoke_user_sessions(
        &self,
        user_id: UserId,
        tenant_id: Option<TenantId>,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Result<Vec<SessionId>> {
        self.probe.hit("revoke_user_sessions")?;
        self.inner
            .revoke_user_sessions(user_id, tenant_id, reason, at)
            .await
    }

    async fn insert_api_key(&self, key: &ApiKey) -> Result<()> {
        self.probe.hit("insert_api_key")?;
        self.inner.insert_api_key(key).await
    }

    async fn revoke_api_key(
        &self,
        tenant_id: TenantId,
        id: ApiKeyId,
        at: OffsetDateTime,
    ) -> Result<ApiKey> {
        self.probe.hit("revoke_api_key")?;
        self.inner.revoke_api_key(tenant_id, id, at).await
    }

    async fn consume_one_time_token(
        &self,
        hash: &TokenHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<Option<OneTimeToken>> {
        self.probe.hit("consume_one_time_token")?;
        self.inner.consume_one_time_token(hash, purpose, now).await
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.probe.hit("commit")?;
        self.inner.commit().await
    }
}
