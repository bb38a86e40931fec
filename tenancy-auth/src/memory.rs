//! In-memory auth stores (feature `memory`).

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use imbl::{HashMap, OrdMap};
use tenancy_core::{
    ApiKeyId, Backend, Conflict, Cursor, Entity, Page, PageRequest, SessionId, StoreError,
    TenantId, TokenHash, Transaction, UserId, truncate_to_micros,
};
use time::{Duration, OffsetDateTime};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

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
    ApiKeyStore, AuthTransaction, AuthTransactions, CredentialStore, KeyStore, LockoutStore,
    OneTimeTokenStore, SessionStore,
};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Every auth store in process memory, behind one lock, so each call is
/// atomic. It does not check that users and tenants exist (they live in the
/// core backend); the [`crate::Auth`] service only refers to existing ones.
///
/// A transaction ([`AuthTransactions::begin`]) holds the lock until it
/// ends and works on a copy (persistent maps make the copy O(1)); on commit
/// it commits the core backend's transaction first and then installs the
/// copy, which cannot fail, so both sides change or neither does.
///
/// Signing keys are encrypted like in any store; unless the configuration
/// names a key-encryption key, under one this store generates and keeps
/// for its lifetime ([`KeyStore::process_encryption_key`]).
pub struct MemoryAuthStore {
    state: Arc<AsyncMutex<State>>,
    holder: Arc<Mutex<Option<Holder>>>,
    process_key: KeyEncryptionKey,
}

impl Default for MemoryAuthStore {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            holder: Arc::default(),
            process_key: KeyEncryptionKey::random("process"),
        }
    }
}

impl std::fmt::Debug for MemoryAuthStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryAuthStore").finish_non_exhaustive()
    }
}

/// Who holds the state lock for a transaction: a tokio task, or a thread
/// blocking on a future outside any task.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Holder {
    Task(tokio::task::Id),
    Thread(std::thread::ThreadId),
}

impl Holder {
    fn current() -> Self {
        tokio::task::try_id()
            .map_or_else(|| Holder::Thread(std::thread::current().id()), Holder::Task)
    }
}

/// Clears the holder when its transaction ends, however it ends, unless
/// the next transaction's holder has already replaced it.
struct HolderGuard {
    slot: Arc<Mutex<Option<Holder>>>,
    holder: Holder,
}

impl Drop for HolderGuard {
    fn drop(&mut self) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if *slot == Some(self.holder) {
            *slot = None;
        }
    }
}

#[derive(Debug, Default, Clone)]
struct State {
    passwords: HashMap<UserId, PasswordHashString>,
    throttles: HashMap<ThrottleKey, ThrottleState>,
    keys: OrdMap<String, StoredKey>,
    sessions: OrdMap<SessionId, Session>,
    refresh: HashMap<[u8; 32], RefreshEntry>,
    api_keys: OrdMap<ApiKeyId, ApiKey>,
    one_time: HashMap<[u8; 32], OneTimeToken>,
}

#[derive(Debug, Clone)]
struct RefreshEntry {
    session_id: SessionId,
    rotated: bool,
    rotated_at: Option<OffsetDateTime>,
}

impl MemoryAuthStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state, for one call. A task that holds this store's transaction
    /// would wait for itself forever: it is refused instead.
    async fn state(&self) -> Result<tokio::sync::MutexGuard<'_, State>> {
        if *self.holder.lock().unwrap_or_else(PoisonError::into_inner) == Some(Holder::current()) {
            return Err(StoreError::NestedTransaction);
        }
        Ok(self.state.lock().await)
    }
}

impl State {
    fn revoke(&mut self, id: SessionId, reason: RevokeReason, at: OffsetDateTime) -> bool {
        match self.sessions.get_mut(&id) {
            Some(session) if session.revoked_at.is_none() => {
                session.revoked_at = Some(at);
                session.revoke_reason = Some(reason);
                true
            }
            _ => false,
        }
    }

    fn revoke_where(
        &mut self,
        reason: RevokeReason,
        at: OffsetDateTime,
        filter: impl Fn(&Session) -> bool,
    ) -> Vec<SessionId> {
        let ids: Vec<SessionId> = self
            .sessions
            .values()
            .filter(|s| s.revoked_at.is_none() && s.absolute_expires_at > at && filter(s))
            .map(|s| s.id)
            .collect();
        for id in &ids {
            self.revoke(*id, reason, at);
        }
        ids
    }

    fn set_password_hash(&mut self, user_id: UserId, hash: &PasswordHashString) {
        self.passwords.insert(user_id, hash.clone());
    }

    fn clear_throttle(&mut self, key: &ThrottleKey) {
        self.throttles.remove(key);
    }

    fn create_session(
        &mut self,
        session: &Session,
        refresh: &RefreshRecord,
        max_per_user: u32,
    ) -> Result<Vec<SessionId>> {
        if self.sessions.contains_key(&session.id) {
            return Err(StoreError::Conflict(Conflict::Id(Entity::Session)));
        }
        let session = normalize_session(session.clone());
        let now = session.created_at;
        self.sessions.insert(session.id, session.clone());
        self.refresh.insert(
            *refresh.token_hash.as_bytes(),
            RefreshEntry {
                session_id: session.id,
                rotated: false,
                rotated_at: None,
            },
        );
        let mut live: Vec<(OffsetDateTime, SessionId)> = self
            .sessions
            .values()
            .filter(|s| s.user_id == session.user_id && s.is_live_at(now))
            .map(|s| (s.created_at, s.id))
            .collect();
        live.sort();
        let excess = live.len().saturating_sub(max_per_user.max(1) as usize);
        let evicted: Vec<SessionId> = live.into_iter().take(excess).map(|(_, id)| id).collect();
        for id in &evicted {
            self.revoke(*id, RevokeReason::Evicted, now);
        }
        Ok(evicted)
    }

    fn revoke_session(
        &mut self,
        id: SessionId,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Result<bool> {
        if !self.sessions.contains_key(&id) {
            return Err(StoreError::NotFound(Entity::Session));
        }
        Ok(self.revoke(id, reason, truncate_to_micros(at)))
    }

    fn revoke_user_sessions(
        &mut self,
        user_id: UserId,
        tenant_id: Option<TenantId>,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Vec<SessionId> {
        self.revoke_where(reason, truncate_to_micros(at), |s| {
            s.user_id == user_id && tenant_id.is_none_or(|t| s.tenant_id == t)
        })
    }

    fn insert_api_key(&mut self, key: &ApiKey) -> Result<()> {
        if self.api_keys.contains_key(&key.id) {
            return Err(StoreError::Conflict(Conflict::Id(Entity::ApiKey)));
        }
        let mut stored = key.clone();
        stored.created_at = truncate_to_micros(stored.created_at);
        stored.expires_at = stored.expires_at.map(truncate_to_micros);
        stored.last_used_at = stored.last_used_at.map(truncate_to_micros);
        stored.revoked_at = stored.revoked_at.map(truncate_to_micros);
        self.api_keys.insert(key.id, stored);
        Ok(())
    }

    fn revoke_api_key(
        &mut self,
        tenant_id: TenantId,
        id: ApiKeyId,
        at: OffsetDateTime,
    ) -> Result<ApiKey> {
        let key = self
            .api_keys
            .get_mut(&id)
            .filter(|k| k.tenant_id == tenant_id)
            .ok_or(StoreError::NotFound(Entity::ApiKey))?;
        if key.revoked_at.is_none() {
            key.revoked_at = Some(truncate_to_micros(at));
        }
        Ok(key.clone())
    }

    fn consume_one_time_token(
        &mut self,
        hash: &TokenHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Option<OneTimeToken> {
        let now = truncate_to_micros(now);
        let token = self.one_time.get_mut(hash.as_bytes())?;
        if token.purpose != purpose || token.used_at.is_some() || token.expires_at <= now {
            return None;
        }
        token.used_at = Some(now);
        let used = token.clone();
        for (_, sibling) in self.one_time.iter_mut() {
            if sibling.user_id == used.user_id
                && sibling.purpose == purpose
                && sibling.used_at.is_none()
            {
                sibling.used_at = Some(now);
            }
        }
        Some(used)
    }
}

fn normalize_session(mut session: Session) -> Session {
    session.created_at = truncate_to_micros(session.created_at);
    session.last_seen_at = truncate_to_micros(session.last_seen_at);
    session.idle_expires_at = truncate_to_micros(session.idle_expires_at);
    session.absolute_expires_at = truncate_to_micros(session.absolute_expires_at);
    session.revoked_at = session.revoked_at.map(truncate_to_micros);
    session
}

#[async_trait]
impl CredentialStore for MemoryAuthStore {
    async fn set_password_hash(
        &self,
        user_id: UserId,
        hash: &PasswordHashString,
        _at: OffsetDateTime,
    ) -> Result<()> {
        self.state().await?.set_password_hash(user_id, hash);
        Ok(())
    }

    async fn password_hash(&self, user_id: UserId) -> Result<Option<PasswordHashString>> {
        Ok(self.state().await?.passwords.get(&user_id).cloned())
    }
}

#[async_trait]
impl LockoutStore for MemoryAuthStore {
    async fn record_login_failure(
        &self,
        key: &ThrottleKey,
        rule: &ThrottleRule,
        now: OffsetDateTime,
    ) -> Result<ThrottleState> {
        let mut state = self.state().await?;
        let previous = state.throttles.get(key).copied();
        let mut next = ThrottleState::after_failure(previous, rule, truncate_to_micros(now));
        next.window_started = truncate_to_micros(next.window_started);
        next.locked_until = next.locked_until.map(truncate_to_micros);
        state.throttles.insert(key.clone(), next);
        Ok(next)
    }

    async fn throttle_state(&self, key: &ThrottleKey) -> Result<Option<ThrottleState>> {
        Ok(self.state().await?.throttles.get(key).copied())
    }

    async fn clear_throttle(&self, key: &ThrottleKey) -> Result<()> {
        self.state().await?.clear_throttle(key);
        Ok(())
    }

    async fn purge_expired(&self, now: OffsetDateTime, keep: Duration) -> Result<u64> {
        let cutoff = now - keep;
        let mut state = self.state().await?;
        let before = state.throttles.len();
        state.throttles.retain(|_, throttle| {
            throttle.window_started >= cutoff || throttle.locked_until.is_some_and(|t| t >= cutoff)
        });
        Ok((before - state.throttles.len()) as u64)
    }
}

#[async_trait]
impl KeyStore for MemoryAuthStore {
    async fn list_signing_keys(&self) -> Result<Vec<StoredKey>> {
        let mut keys: Vec<StoredKey> = self.state().await?.keys.values().cloned().collect();
        keys.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.kid.cmp(&b.kid))
        });
        Ok(keys)
    }

    async fn activate_signing_key(&self, key: &StoredKey, at: OffsetDateTime) -> Result<()> {
        let mut state = self.state().await?;
        if state.keys.contains_key(&key.kid) {
            return Err(StoreError::Conflict(Conflict::Id(Entity::SigningKey)));
        }
        let at = truncate_to_micros(at);
        let active: Vec<String> = state
            .keys
            .values()
            .filter(|k| k.retired_at.is_none())
            .map(|k| k.kid.clone())
            .collect();
        for kid in active {
            if let Some(existing) = state.keys.get_mut(&kid) {
                existing.retired_at = Some(at);
            }
        }
        let mut stored = key.clone();
        stored.created_at = truncate_to_micros(stored.created_at);
        stored.retired_at = None;
        state.keys.insert(stored.kid.clone(), stored);
        Ok(())
    }

    async fn delete_signing_keys_retired_before(&self, cutoff: OffsetDateTime) -> Result<u64> {
        let mut state = self.state().await?;
        let old: Vec<String> = state
            .keys
            .values()
            .filter(|key| key.retired_at.is_some_and(|retired| retired < cutoff))
            .map(|key| key.kid.clone())
            .collect();
        for kid in &old {
            state.keys.remove(kid);
        }
        Ok(old.len() as u64)
    }

    async fn replace_private_key(&self, kid: &str, private_key: &StoredPrivateKey) -> Result<()> {
        let mut state = self.state().await?;
        let key = state
            .keys
            .get_mut(kid)
            .ok_or(StoreError::NotFound(Entity::SigningKey))?;
        key.private_key = private_key.clone();
        Ok(())
    }

    /// Keys in memory end with the process, and so does this key.
    fn process_encryption_key(&self) -> Option<KeyEncryptionKey> {
        Some(self.process_key.clone())
    }
}

#[async_trait]
impl SessionStore for MemoryAuthStore {
    async fn create_session(
        &self,
        session: &Session,
        refresh: &RefreshRecord,
        max_per_user: u32,
    ) -> Result<Vec<SessionId>> {
        self.state()
            .await?
            .create_session(session, refresh, max_per_user)
    }

    async fn get_session(&self, id: SessionId) -> Result<Session> {
        self.state()
            .await?
            .sessions
            .get(&id)
            .cloned()
            .ok_or(StoreError::NotFound(Entity::Session))
    }

    async fn find_session_by_refresh_token(
        &self,
        token: &TokenHash,
    ) -> Result<Option<RefreshTokenOwner>> {
        let state = self.state().await?;
        Ok(state.refresh.get(token.as_bytes()).and_then(|entry| {
            state
                .sessions
                .get(&entry.session_id)
                .map(|session| RefreshTokenOwner {
                    session: session.clone(),
                    spent: entry.rotated,
                })
        }))
    }

    async fn list_user_sessions(
        &self,
        user_id: UserId,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>> {
        let mut sessions: Vec<Session> = self
            .state()
            .await?
            .sessions
            .values()
            .filter(|s| s.user_id == user_id && s.is_live_at(now))
            .cloned()
            .collect();
        sessions.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        Ok(sessions)
    }

    async fn rotate_refresh_token(
        &self,
        presented: &TokenHash,
        next: &TokenHash,
        now: OffsetDateTime,
        idle_timeout: Duration,
    ) -> Result<RotateOutcome> {
        let now = truncate_to_micros(now);
        let mut state = self.state().await?;
        let Some(entry) = state.refresh.get(presented.as_bytes()).cloned() else {
            return Ok(RotateOutcome::Unknown);
        };
        let session = state
            .sessions
            .get(&entry.session_id)
            .cloned()
            .ok_or(StoreError::NotFound(Entity::Session))?;
        if !session.is_live_at(now) {
            return Ok(RotateOutcome::Inactive(session));
        }
        if entry.rotated {
            state.revoke(session.id, RevokeReason::RefreshTokenReuse, now);
            let revoked = state.sessions.get(&session.id).cloned().unwrap_or(session);
            return Ok(RotateOutcome::Reused(revoked));
        }
        if let Some(spent) = state.refresh.get_mut(presented.as_bytes()) {
            spent.rotated = true;
            spent.rotated_at = Some(now);
        }
        state.refresh.insert(
            *next.as_bytes(),
            RefreshEntry {
                session_id: session.id,
                rotated: false,
                rotated_at: None,
            },
        );
        let updated = match state.sessions.get_mut(&session.id) {
            Some(stored) => {
                stored.last_seen_at = now;
                stored.idle_expires_at = (now + idle_timeout).min(stored.absolute_expires_at);
                stored.clone()
            }
            None => return Err(StoreError::NotFound(Entity::Session)),
        };
        Ok(RotateOutcome::Rotated(updated))
    }

    async fn revoke_session(
        &self,
        id: SessionId,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Result<bool> {
        self.state().await?.revoke_session(id, reason, at)
    }

    async fn revoke_user_sessions(
        &self,
        user_id: UserId,
        tenant_id: Option<TenantId>,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Result<Vec<SessionId>> {
        Ok(self
            .state()
            .await?
            .revoke_user_sessions(user_id, tenant_id, reason, at))
    }

    async fn revoke_tenant_sessions(
        &self,
        tenant_id: TenantId,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Result<Vec<SessionId>> {
        Ok(self
            .state()
            .await?
            .revoke_where(reason, truncate_to_micros(at), |s| s.tenant_id == tenant_id))
    }

    async fn revocations_since(
        &self,
        since: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Vec<Revocation>> {
        let mut found: Vec<Revocation> = self
            .state()
            .await?
            .sessions
            .values()
            .filter_map(|s| {
                let revoked_at = s.revoked_at?;
                (revoked_at >= since && s.absolute_expires_at > now).then_some(Revocation {
                    session_id: s.id,
                    revoked_at,
                    expires_at: s.absolute_expires_at,
                })
            })
            .collect();
        found.sort_by_key(|r| (r.revoked_at, r.session_id));
        Ok(found)
    }

    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        keep_ended: Duration,
        keep_spent: Duration,
    ) -> Result<SessionPurge> {
        let (ended_before, spent_before) = (now - keep_ended, now - keep_spent);
        let mut state = self.state().await?;
        let ended: std::collections::HashSet<SessionId> = state
            .sessions
            .values()
            .filter(|s| {
                s.revoked_at.is_some_and(|at| at < ended_before)
                    || s.idle_expires_at.min(s.absolute_expires_at) < ended_before
            })
            .map(|s| s.id)
            .collect();
        for id in &ended {
            state.sessions.remove(id);
        }
        let before = state.refresh.len();
        state.refresh.retain(|_, entry| {
            !ended.contains(&entry.session_id)
                && entry.rotated_at.is_none_or(|at| at >= spent_before)
        });
        Ok(SessionPurge::new(
            ended.len() as u64,
            (before - state.refresh.len()) as u64,
        ))
    }
}

#[async_trait]
impl ApiKeyStore for MemoryAuthStore {
    async fn insert_api_key(&self, key: &ApiKey) -> Result<()> {
        self.state().await?.insert_api_key(key)
    }

    async fn get_api_key(&self, id: ApiKeyId) -> Result<ApiKey> {
        self.state()
            .await?
            .api_keys
            .get(&id)
            .cloned()
            .ok_or(StoreError::NotFound(Entity::ApiKey))
    }

    async fn list_api_keys(&self, tenant_id: TenantId, page: &PageRequest) -> Result<Page<ApiKey>> {
        let after: Option<ApiKeyId> = page.after_key("api-keys")?;
        let items = self
            .state()
            .await?
            .api_keys
            .values()
            .filter(|k| k.tenant_id == tenant_id && after.is_none_or(|after| k.id > after))
            .take(page.size.get() + 1)
            .cloned()
            .collect();
        Ok(Page::from_overfetch(items, page.size, |k| {
            Cursor::encode("api-keys", k.id)
        }))
    }

    async fn revoke_api_key(
        &self,
        tenant_id: TenantId,
        id: ApiKeyId,
        at: OffsetDateTime,
    ) -> Result<ApiKey> {
        self.state().await?.revoke_api_key(tenant_id, id, at)
    }

    async fn touch_api_key(&self, id: ApiKeyId, at: OffsetDateTime) -> Result<()> {
        let mut state = self.state().await?;
        let key = state
            .api_keys
            .get_mut(&id)
            .ok_or(StoreError::NotFound(Entity::ApiKey))?;
        let at = truncate_to_micros(at);
        if key.last_used_at.is_none_or(|last| last < at) {
            key.last_used_at = Some(at);
        }
        Ok(())
    }
}

#[async_trait]
impl OneTimeTokenStore for MemoryAuthStore {
    async fn insert_one_time_token(
        &self,
        token: &OneTimeToken,
        cooldown_since: OffsetDateTime,
    ) -> Result<bool> {
        let mut state = self.state().await?;
        let now = token.created_at;
        let recent = state.one_time.values().any(|t| {
            t.user_id == token.user_id
                && t.purpose == token.purpose
                && t.used_at.is_none()
                && t.expires_at > now
                && t.created_at >= cooldown_since
        });
        if recent {
            return Ok(false);
        }
        let mut stored = token.clone();
        stored.created_at = truncate_to_micros(stored.created_at);
        stored.expires_at = truncate_to_micros(stored.expires_at);
        state.one_time.insert(*token.token_hash.as_bytes(), stored);
        Ok(true)
    }

    async fn find_one_time_token(&self, hash: &TokenHash) -> Result<Option<OneTimeToken>> {
        Ok(self.state().await?.one_time.get(hash.as_bytes()).cloned())
    }

    async fn consume_one_time_token(
        &self,
        hash: &TokenHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<Option<OneTimeToken>> {
        Ok(self
            .state()
            .await?
            .consume_one_time_token(hash, purpose, now))
    }

    async fn purge_expired(&self, now: OffsetDateTime, keep: Duration) -> Result<u64> {
        let cutoff = now - keep;
        let mut state = self.state().await?;
        let before = state.one_time.len();
        state
            .one_time
            .retain(|_, t| t.expires_at >= cutoff && t.used_at.is_none_or(|at| at >= cutoff));
        Ok((before - state.one_time.len()) as u64)
    }
}

#[async_trait]
impl AuthTransactions for MemoryAuthStore {
    async fn begin(&self, backend: &dyn Backend) -> Result<Box<dyn AuthTransaction>> {
        // The core lock first, then this store's: every transaction takes
        // them in this order, so two cannot wait for each other.
        let core = backend.begin().await?;
        let me = Holder::current();
        if *self.holder.lock().unwrap_or_else(PoisonError::into_inner) == Some(me) {
            return Err(StoreError::NestedTransaction);
        }
        let committed = Arc::clone(&self.state).lock_owned().await;
        *self.holder.lock().unwrap_or_else(PoisonError::into_inner) = Some(me);
        let work = committed.clone();
        Ok(Box::new(MemoryAuthTransaction {
            core,
            inner: Mutex::new(TxState {
                committed,
                work,
                aborted: false,
            }),
            _holder: HolderGuard {
                slot: Arc::clone(&self.holder),
                holder: me,
            },
        }))
    }
}

/// A transaction of [`MemoryAuthStore`] joined to a core one.
struct MemoryAuthTransaction {
    core: Box<dyn Transaction>,
    inner: Mutex<TxState>,
    _holder: HolderGuard,
}

struct TxState {
    committed: OwnedMutexGuard<State>,
    work: State,
    aborted: bool,
}

impl MemoryAuthTransaction {
    /// Runs one write on the copy; a failed one aborts the transaction, as
    /// in a database.
    fn write<R>(&self, f: impl FnOnce(&mut State) -> Result<R>) -> Result<R> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.aborted {
            return Err(StoreError::TransactionAborted);
        }
        let out = f(&mut inner.work);
        if out.is_err() {
            inner.aborted = true;
        }
        out
    }
}

#[async_trait]
impl AuthTransaction for MemoryAuthTransaction {
    fn core(&self) -> &dyn Transaction {
        &*self.core
    }

    async fn set_password_hash(
        &self,
        user_id: UserId,
        hash: &PasswordHashString,
        _at: OffsetDateTime,
    ) -> Result<()> {
        self.write(|s| {
            s.set_password_hash(user_id, hash);
            Ok(())
        })
    }

    async fn clear_throttle(&self, key: &ThrottleKey) -> Result<()> {
        self.write(|s| {
            s.clear_throttle(key);
            Ok(())
        })
    }

    async fn create_session(
        &self,
        session: &Session,
        refresh: &RefreshRecord,
        max_per_user: u32,
    ) -> Result<Vec<SessionId>> {
        self.write(|s| s.create_session(session, refresh, max_per_user))
    }

    async fn revoke_session(
        &self,
        id: SessionId,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Result<bool> {
        self.write(|s| s.revoke_session(id, reason, at))
    }

    async fn revoke_user_sessions(
        &self,
        user_id: UserId,
        tenant_id: Option<TenantId>,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Result<Vec<SessionId>> {
        self.write(|s| Ok(s.revoke_user_sessions(user_id, tenant_id, reason, at)))
    }

    async fn insert_api_key(&self, key: &ApiKey) -> Result<()> {
        self.write(|s| s.insert_api_key(key))
    }

    async fn revoke_api_key(
        &self,
        tenant_id: TenantId,
        id: ApiKeyId,
        at: OffsetDateTime,
    ) -> Result<ApiKey> {
        self.write(|s| s.revoke_api_key(tenant_id, id, at))
    }

    async fn consume_one_time_token(
        &self,
        hash: &TokenHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<Option<OneTimeToken>> {
        self.write(|s| Ok(s.consume_one_time_token(hash, purpose, now)))
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let this = *self;
        let mut inner = this
            .inner
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        if inner.aborted {
            return Err(StoreError::TransactionAborted);
        }
        this.core.commit().await?;
        *inner.committed = inner.work;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenancy_core::MemoryBackend;

    #[tokio::test]
    async fn a_store_call_inside_this_tasks_transaction_is_refused_not_deadlocked() {
        let store = MemoryAuthStore::new();
        let backend = MemoryBackend::new();
        let tx = store.begin(&backend).await.unwrap();
        assert!(matches!(
            store.password_hash(UserId::new()).await,
            Err(StoreError::NestedTransaction)
        ));
        drop(tx);
        assert_eq!(store.password_hash(UserId::new()).await.unwrap(), None);
    }
}
