//! [`MemoryOAuthStore`]: the provider's records in process memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use tenancy_core::{
    Conflict, Cursor, Entity, OAuthClientId, Page, PageRequest, SessionId, StoreError, TenantId,
    TokenHash, UserId, truncate_to_micros,
};
use time::OffsetDateTime;

use super::store::OAuthStore;
use super::types::{
    AuthorizationCode, ClientId, CodeRedemption, Consent, Interaction, InteractionId, OAuthClient,
    SessionGrant,
};
use crate::memory::MemoryAuthStore;
use crate::store::KeyStore;

#[derive(Default)]
struct State {
    clients: BTreeMap<OAuthClientId, OAuthClient>,
    interactions: HashMap<String, Interaction>,
    codes: HashMap<[u8; 32], AuthorizationCode>,
    consents: HashMap<(UserId, OAuthClientId, TenantId), Consent>,
    grants: HashMap<SessionId, SessionGrant>,
    assertions: HashMap<(OAuthClientId, String), OffsetDateTime>,
    /// Hashes of spent codes presented again.
    replayed: std::collections::HashSet<[u8; 32]>,
}

/// The provider's records in memory: for tests, examples and single-process
/// apps. ID-token keys live in a [`MemoryAuthStore`] of their own.
pub struct MemoryOAuthStore {
    state: Mutex<State>,
    keys: Arc<MemoryAuthStore>,
}

impl std::fmt::Debug for MemoryOAuthStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryOAuthStore")
    }
}

impl Default for MemoryOAuthStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryOAuthStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            keys: Arc::new(MemoryAuthStore::new()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn micros(client: &OAuthClient) -> OAuthClient {
    let mut client = client.clone();
    client.created_at = truncate_to_micros(client.created_at);
    client.updated_at = truncate_to_micros(client.updated_at);
    client
}

#[async_trait]
impl OAuthStore for MemoryOAuthStore {
    async fn insert_client(&self, client: &OAuthClient) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.clients.contains_key(&client.id.id()) {
            return Err(StoreError::Conflict(Conflict::Id(Entity::OAuthClient)));
        }
        state.clients.insert(client.id.id(), micros(client));
        Ok(())
    }

    async fn get_client(&self, id: &ClientId) -> Result<OAuthClient, StoreError> {
        self.state()
            .clients
            .get(&id.id())
            .cloned()
            .ok_or(StoreError::NotFound(Entity::OAuthClient))
    }

    async fn list_clients(
        &self,
        tenant_id: Option<TenantId>,
        page: &PageRequest,
    ) -> Result<Page<OAuthClient>, StoreError> {
        let after: Option<OAuthClientId> = page.after_key("oauth-clients")?;
        let items = self
            .state()
            .clients
            .values()
            .filter(|c| c.tenant_id == tenant_id && after.is_none_or(|after| c.id.id() > after))
            .take(page.size.get() + 1)
            .cloned()
            .collect();
        Ok(Page::from_overfetch(items, page.size, |c| {
            Cursor::encode("oauth-clients", c.id.id())
        }))
    }

    async fn update_client(&self, client: &OAuthClient) -> Result<(), StoreError> {
        let mut state = self.state();
        match state.clients.get_mut(&client.id.id()) {
            Some(current) if current.tenant_id == client.tenant_id => {
                let created_at = current.created_at;
                let secret_hash = current.secret_hash;
                *current = micros(client);
                current.created_at = created_at;
                current.secret_hash = secret_hash;
                Ok(())
            }
            _ => Err(StoreError::NotFound(Entity::OAuthClient)),
        }
    }

    async fn set_client_secret(&self, client: &OAuthClient) -> Result<(), StoreError> {
        let mut state = self.state();
        match state.clients.get_mut(&client.id.id()) {
            Some(current) if current.tenant_id == client.tenant_id => {
                let changed = micros(client);
                current.secret_hash = changed.secret_hash;
                current.created_by = changed.created_by;
                current.updated_at = changed.updated_at;
                Ok(())
            }
            _ => Err(StoreError::NotFound(Entity::OAuthClient)),
        }
    }

    async fn delete_client(
        &self,
        tenant_id: Option<TenantId>,
        id: &ClientId,
    ) -> Result<Vec<SessionId>, StoreError> {
        let mut state = self.state();
        match state.clients.get(&id.id()) {
            Some(current) if current.tenant_id == tenant_id => {}
            _ => return Err(StoreError::NotFound(Entity::OAuthClient)),
        }
        state.clients.remove(&id.id());
        state.consents.retain(|_, c| c.client_id != *id);
        state.codes.retain(|_, c| c.client_id != *id);
        state.assertions.retain(|(client, _), _| *client != id.id());
        state.interactions.retain(|_, i| i.request.client_id != *id);
        let mut sessions: Vec<SessionId> = state
            .grants
            .values()
            .filter(|g| g.client_id == *id)
            .map(|g| g.session_id)
            .collect();
        sessions.sort();
        state.grants.retain(|_, g| g.client_id != *id);
        Ok(sessions)
    }

    async fn insert_interaction(&self, interaction: &Interaction) -> Result<(), StoreError> {
        let mut state = self.state();
        let key = interaction.id.as_str().to_owned();
        if state.interactions.contains_key(&key) {
            return Err(StoreError::Conflict(Conflict::Id(Entity::Session)));
        }
        let mut stored = interaction.clone();
        stored.created_at = truncate_to_micros(stored.created_at);
        stored.expires_at = truncate_to_micros(stored.expires_at);
        state.interactions.insert(key, stored);
        Ok(())
    }

    async fn get_interaction(
        &self,
        id: &InteractionId,
        now: OffsetDateTime,
    ) -> Result<Option<Interaction>, StoreError> {
        Ok(self
            .state()
            .interactions
            .get(id.as_str())
            .filter(|i| i.expires_at > now)
            .cloned())
    }

    async fn update_interaction(&self, interaction: &Interaction) -> Result<bool, StoreError> {
        let mut state = self.state();
        match state.interactions.get_mut(interaction.id.as_str()) {
            Some(current) => {
                current.logged_in = interaction
                    .logged_in
                    .map(|(session, at)| (session, truncate_to_micros(at)));
                current.consent_user = interaction.consent_user;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn take_interaction(
        &self,
        id: &InteractionId,
        now: OffsetDateTime,
    ) -> Result<Option<Interaction>, StoreError> {
        Ok(self
            .state()
            .interactions
            .remove(id.as_str())
            .filter(|i| i.expires_at > now))
    }

    async fn insert_code(&self, code: &AuthorizationCode) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.codes.contains_key(code.code_hash.as_bytes()) {
            return Err(StoreError::Conflict(Conflict::Id(Entity::Session)));
        }
        let mut stored = code.clone();
        stored.created_at = truncate_to_micros(stored.created_at);
        stored.expires_at = truncate_to_micros(stored.expires_at);
        stored.auth_time = truncate_to_micros(stored.auth_time);
        state.codes.insert(*code.code_hash.as_bytes(), stored);
        Ok(())
    }

    async fn redeem_code(
        &self,
        code_hash: &TokenHash,
        client_id: &ClientId,
        now: OffsetDateTime,
    ) -> Result<CodeRedemption, StoreError> {
        let mut state = self.state();
        let Some(code) = state.codes.get_mut(code_hash.as_bytes()) else {
            return Ok(CodeRedemption::Unknown);
        };
        if code.redeemed_at.is_some() {
            let code = code.clone();
            state.replayed.insert(*code_hash.as_bytes());
            return Ok(CodeRedemption::Replayed(code));
        }
        if code.expires_at <= now || code.client_id != *client_id {
            return Ok(CodeRedemption::Unknown);
        }
        code.redeemed_at = Some(truncate_to_micros(now));
        Ok(CodeRedemption::Redeemed(code.clone()))
    }

    async fn set_code_session(
        &self,
        code_hash: &TokenHash,
        session_id: SessionId,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        if let Some(code) = state.codes.get_mut(code_hash.as_bytes()) {
            code.issued_session = Some(session_id);
        }
        Ok(state.replayed.contains(code_hash.as_bytes()))
    }

    async fn find_consent(
        &self,
        user_id: UserId,
        client_id: &ClientId,
        tenant_id: TenantId,
    ) -> Result<Option<Consent>, StoreError> {
        Ok(self
            .state()
            .consents
            .get(&(user_id, client_id.id(), tenant_id))
            .cloned())
    }

    async fn put_consent(&self, consent: &Consent) -> Result<(), StoreError> {
        let mut state = self.state();
        if !state.clients.contains_key(&consent.client_id.id()) {
            return Err(StoreError::NotFound(Entity::OAuthClient));
        }
        let mut stored = consent.clone();
        stored.granted_at = truncate_to_micros(stored.granted_at);
        stored.scopes.sort();
        stored.scopes.dedup();
        state.consents.insert(
            (consent.user_id, consent.client_id.id(), consent.tenant_id),
            stored,
        );
        Ok(())
    }

    async fn insert_grant(&self, grant: &SessionGrant) -> Result<(), StoreError> {
        let mut state = self.state();
        if !state.clients.contains_key(&grant.client_id.id()) {
            return Err(StoreError::NotFound(Entity::OAuthClient));
        }
        let mut stored = grant.clone();
        stored.auth_time = truncate_to_micros(stored.auth_time);
        stored.created_at = truncate_to_micros(stored.created_at);
        state.grants.insert(grant.session_id, stored);
        Ok(())
    }

    async fn get_grant(&self, session_id: SessionId) -> Result<Option<SessionGrant>, StoreError> {
        Ok(self.state().grants.get(&session_id).cloned())
    }

    async fn use_assertion(
        &self,
        client_id: &ClientId,
        jti: &str,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        let key = (client_id.id(), jti.to_owned());
        if state.assertions.contains_key(&key) {
            return Ok(false);
        }
        state.assertions.insert(key, truncate_to_micros(expires_at));
        Ok(true)
    }

    async fn purge_expired(
        &self,
        before: OffsetDateTime,
        spent_before: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let mut state = self.state();
        let count =
            |s: &State| s.interactions.len() + s.codes.len() + s.assertions.len() + s.grants.len();
        let start = count(&state);
        state.interactions.retain(|_, i| i.expires_at >= before);
        state.codes.retain(|_, c| {
            let keep_until = if c.redeemed_at.is_some() {
                spent_before
            } else {
                before
            };
            c.expires_at >= keep_until
        });
        state.assertions.retain(|_, at| *at >= before);
        state.grants.retain(|_, g| g.created_at >= spent_before);
        let State {
            codes, replayed, ..
        } = &mut *state;
        replayed.retain(|hash| codes.contains_key(hash));
        Ok((start - count(&state)) as u64)
    }

    fn id_token_keys(&self) -> Arc<dyn KeyStore> {
        self.keys.clone()
    }
}
