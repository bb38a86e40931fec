//! In-memory auth stores (feature `memory`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use tenancy_core::{
    ApiKeyId, Conflict, Cursor, Entity, Page, PageRequest, SessionId, StoreError, TenantId,
    TokenHash, UserId, truncate_to_micros,
};
use time::{Duration, OffsetDateTime};

use crate::api_key::ApiKey;
use crate::keys::StoredKey;
use crate::lockout::{ThrottleKey, ThrottleRule, ThrottleState};
use crate::one_time::{OneTimeToken, TokenPurpose};
use crate::password::PasswordHashString;
use crate::session::{
    RefreshRecord, RefreshTokenOwner, Revocation, RevokeReason, RotateOutcome, Session,
};
use crate::store::{
    ApiKeyStore, CredentialStore, KeyStore, LockoutStore, OneTimeTokenStore, SessionStore,
};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Every auth store in process memory, behind one lock, so each call is
/// atomic. It does not check that users and tenants exist (they live in the
/// core backend); the [`crate::Auth`] service only refers to existing ones.
#[derive(Debug, Default)]
pub struct MemoryAuthStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    passwords: HashMap<UserId, PasswordHashString>,
    throttles: HashMap<ThrottleKey, ThrottleState>,
    keys: BTreeMap<String, StoredKey>,
    sessions: BTreeMap<SessionId, Session>,
    refresh: HashMap<[u8; 32], RefreshEntry>,
    api_keys: BTreeMap<ApiKeyId, ApiKey>,
    one_time: HashMap<[u8; 32], OneTimeToken>,
}

#[derive(Debug, Clone)]
struct RefreshEntry {
    session_id: SessionId,
    rotated: bool,
}

impl MemoryAuthStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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
        self.state().passwords.insert(user_id, hash.clone());
        Ok(())
    }

    async fn password_hash(&self, user_id: UserId) -> Result<Option<PasswordHashString>> {
        Ok(self.state().passwords.get(&user_id).cloned())
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
        let mut state = self.state();
        let previous = state.throttles.get(key).copied();
        let mut next = ThrottleState::after_failure(previous, rule, truncate_to_micros(now));
        next.window_started = truncate_to_micros(next.window_started);
        next.locked_until = next.locked_until.map(truncate_to_micros);
        state.throttles.insert(key.clone(), next);
        Ok(next)
    }

    async fn throttle_state(&self, key: &ThrottleKey) -> Result<Option<ThrottleState>> {
        Ok(self.state().throttles.get(key).copied())
    }

    async fn clear_throttle(&self, key: &ThrottleKey) -> Result<()> {
        self.state().throttles.remove(key);
        Ok(())
    }
}

#[async_trait]
impl KeyStore for MemoryAuthStore {
    async fn list_signing_keys(&self) -> Result<Vec<StoredKey>> {
        let mut keys: Vec<StoredKey> = self.state().keys.values().cloned().collect();
        keys.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.kid.cmp(&b.kid))
        });
        Ok(keys)
    }

    async fn activate_signing_key(&self, key: &StoredKey, at: OffsetDateTime) -> Result<()> {
        let mut state = self.state();
        if state.keys.contains_key(&key.kid) {
            return Err(StoreError::Conflict(Conflict::Id(Entity::SigningKey)));
        }
        let at = truncate_to_micros(at);
        for existing in state.keys.values_mut().filter(|k| k.retired_at.is_none()) {
            existing.retired_at = Some(at);
        }
        let mut stored = key.clone();
        stored.created_at = truncate_to_micros(stored.created_at);
        stored.retired_at = None;
        state.keys.insert(stored.kid.clone(), stored);
        Ok(())
    }

    async fn delete_signing_keys_retired_before(&self, cutoff: OffsetDateTime) -> Result<u64> {
        let mut state = self.state();
        let before = state.keys.len();
        state
            .keys
            .retain(|_, key| key.retired_at.is_none_or(|retired| retired >= cutoff));
        Ok((before - state.keys.len()) as u64)
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
        let mut state = self.state();
        if state.sessions.contains_key(&session.id) {
            return Err(StoreError::Conflict(Conflict::Id(Entity::Session)));
        }
        let session = normalize_session(session.clone());
        let now = session.created_at;
        state.sessions.insert(session.id, session.clone());
        state.refresh.insert(
            *refresh.token_hash.as_bytes(),
            RefreshEntry {
                session_id: session.id,
                rotated: false,
            },
        );
        let mut live: Vec<(OffsetDateTime, SessionId)> = state
            .sessions
            .values()
            .filter(|s| s.user_id == session.user_id && s.is_live_at(now))
            .map(|s| (s.created_at, s.id))
            .collect();
        live.sort();
        let excess = live.len().saturating_sub(max_per_user.max(1) as usize);
        let evicted: Vec<SessionId> = live.into_iter().take(excess).map(|(_, id)| id).collect();
        for id in &evicted {
            state.revoke(*id, RevokeReason::Evicted, now);
        }
        Ok(evicted)
    }

    async fn get_session(&self, id: SessionId) -> Result<Session> {
        self.state()
            .sessions
            .get(&id)
            .cloned()
            .ok_or(StoreError::NotFound(Entity::Session))
    }

    async fn find_session_by_refresh_token(
        &self,
        token: &TokenHash,
    ) -> Result<Option<RefreshTokenOwner>> {
        let state = self.state();
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
        let mut state = self.state();
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
        }
        state.refresh.insert(
            *next.as_bytes(),
            RefreshEntry {
                session_id: session.id,
                rotated: false,
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
        let mut state = self.state();
        if !state.sessions.contains_key(&id) {
            return Err(StoreError::NotFound(Entity::Session));
        }
        Ok(state.revoke(id, reason, truncate_to_micros(at)))
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
            .revoke_where(reason, truncate_to_micros(at), |s| {
                s.user_id == user_id && tenant_id.is_none_or(|t| s.tenant_id == t)
            }))
    }

    async fn revoke_tenant_sessions(
        &self,
        tenant_id: TenantId,
        reason: RevokeReason,
        at: OffsetDateTime,
    ) -> Result<Vec<SessionId>> {
        Ok(self
            .state()
            .revoke_where(reason, truncate_to_micros(at), |s| s.tenant_id == tenant_id))
    }

    async fn revocations_since(
        &self,
        since: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Vec<Revocation>> {
        let mut found: Vec<Revocation> = self
            .state()
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
}

#[async_trait]
impl ApiKeyStore for MemoryAuthStore {
    async fn insert_api_key(&self, key: &ApiKey) -> Result<()> {
        let mut state = self.state();
        if state.api_keys.contains_key(&key.id) {
            return Err(StoreError::Conflict(Conflict::Id(Entity::ApiKey)));
        }
        let mut stored = key.clone();
        stored.created_at = truncate_to_micros(stored.created_at);
        stored.expires_at = stored.expires_at.map(truncate_to_micros);
        stored.last_used_at = stored.last_used_at.map(truncate_to_micros);
        stored.revoked_at = stored.revoked_at.map(truncate_to_micros);
        state.api_keys.insert(key.id, stored);
        Ok(())
    }

    async fn get_api_key(&self, id: ApiKeyId) -> Result<ApiKey> {
        self.state()
            .api_keys
            .get(&id)
            .cloned()
            .ok_or(StoreError::NotFound(Entity::ApiKey))
    }

    async fn list_api_keys(&self, tenant_id: TenantId, page: &PageRequest) -> Result<Page<ApiKey>> {
        let after: Option<ApiKeyId> = page.after_key("api-keys")?;
        let items = self
            .state()
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
        let mut state = self.state();
        let key = state
            .api_keys
            .get_mut(&id)
            .filter(|k| k.tenant_id == tenant_id)
            .ok_or(StoreError::NotFound(Entity::ApiKey))?;
        if key.revoked_at.is_none() {
            key.revoked_at = Some(truncate_to_micros(at));
        }
        Ok(key.clone())
    }

    async fn touch_api_key(&self, id: ApiKeyId, at: OffsetDateTime) -> Result<()> {
        let mut state = self.state();
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
    async fn insert_one_time_token(&self, token: &OneTimeToken) -> Result<()> {
        let mut state = self.state();
        state.one_time.retain(|_, t| {
            !(t.user_id == token.user_id && t.purpose == token.purpose && t.used_at.is_none())
        });
        let mut stored = token.clone();
        stored.created_at = truncate_to_micros(stored.created_at);
        stored.expires_at = truncate_to_micros(stored.expires_at);
        state.one_time.insert(*token.token_hash.as_bytes(), stored);
        Ok(())
    }

    async fn find_one_time_token(&self, hash: &TokenHash) -> Result<Option<OneTimeToken>> {
        Ok(self.state().one_time.get(hash.as_bytes()).cloned())
    }

    async fn consume_one_time_token(
        &self,
        hash: &TokenHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<Option<OneTimeToken>> {
        let mut state = self.state();
        let Some(token) = state.one_time.get_mut(hash.as_bytes()) else {
            return Ok(None);
        };
        if token.purpose != purpose || token.used_at.is_some() || token.expires_at <= now {
            return Ok(None);
        }
        token.used_at = Some(truncate_to_micros(now));
        Ok(Some(token.clone()))
    }
}
