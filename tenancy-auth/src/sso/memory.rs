//! [`MemorySsoStore`]: the SSO store in memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tenancy_core::{SessionId, TenantId, TokenHash, UserId};
use time::OffsetDateTime;

use super::connection::{
    ConnectionId, DomainName, EmailDomain, EnterpriseConnection, ExternalIdentity, SignInState,
    SsoPolicy,
};
use super::error::SsoStoreError;
use super::store::{MAX_PER_TENANT, SsoStore};

type Result<T> = std::result::Result<T, SsoStoreError>;

#[derive(Default)]
struct State {
    connections: BTreeMap<(TenantId, ConnectionId), EnterpriseConnection>,
    domains: BTreeMap<DomainName, EmailDomain>,
    policies: HashMap<TenantId, SsoPolicy>,
    states: HashMap<[u8; 32], SignInState>,
    identities: BTreeMap<(String, String), ExternalIdentity>,
    sessions: HashMap<SessionId, OffsetDateTime>,
}

/// The SSO store in memory (one process). Tenants are not checked for
/// existence: the memory backend of tenancy-core is a separate store.
#[derive(Clone, Default)]
pub struct MemorySsoStore {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for MemorySsoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySsoStore").finish_non_exhaustive()
    }
}

impl MemorySsoStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl SsoStore for MemorySsoStore {
    async fn insert_connection(&self, connection: &EnterpriseConnection) -> Result<()> {
        self.lock()
            .connections
            .insert((connection.tenant_id, connection.id), connection.clone());
        Ok(())
    }

    async fn get_connection(
        &self,
        tenant: TenantId,
        id: ConnectionId,
    ) -> Result<Option<EnterpriseConnection>> {
        Ok(self.lock().connections.get(&(tenant, id)).cloned())
    }

    async fn list_connections(&self, tenant: TenantId) -> Result<Vec<EnterpriseConnection>> {
        let state = self.lock();
        let mut list: Vec<EnterpriseConnection> = state
            .connections
            .values()
            .filter(|c| c.tenant_id == tenant)
            .cloned()
            .collect();
        list.sort_by_key(|c| (c.created_at, c.id));
        list.truncate(MAX_PER_TENANT);
        Ok(list)
    }

    async fn update_connection(&self, connection: &EnterpriseConnection) -> Result<()> {
        let mut state = self.lock();
        let slot = state
            .connections
            .get_mut(&(connection.tenant_id, connection.id))
            .ok_or(SsoStoreError::ConnectionNotFound)?;
        *slot = connection.clone();
        Ok(())
    }

    async fn delete_connection(&self, tenant: TenantId, id: ConnectionId) -> Result<()> {
        self.lock()
            .connections
            .remove(&(tenant, id))
            .map(|_| ())
            .ok_or(SsoStoreError::ConnectionNotFound)
    }

    async fn insert_domain(&self, domain: &EmailDomain) -> Result<()> {
        let mut state = self.lock();
        if state.domains.contains_key(&domain.domain) {
            return Err(SsoStoreError::DomainTaken);
        }
        state.domains.insert(domain.domain.clone(), domain.clone());
        Ok(())
    }

    async fn find_domain(&self, domain: &DomainName) -> Result<Option<EmailDomain>> {
        Ok(self.lock().domains.get(domain).cloned())
    }

    async fn list_domains(&self, tenant: TenantId) -> Result<Vec<EmailDomain>> {
        Ok(self
            .lock()
            .domains
            .values()
            .filter(|d| d.tenant_id == tenant)
            .take(MAX_PER_TENANT)
            .cloned()
            .collect())
    }

    async fn verify_domain(
        &self,
        tenant: TenantId,
        domain: &DomainName,
        at: OffsetDateTime,
    ) -> Result<EmailDomain> {
        let mut state = self.lock();
        let record = state
            .domains
            .get_mut(domain)
            .filter(|d| d.tenant_id == tenant)
            .ok_or(SsoStoreError::DomainNotFound)?;
        record.verified_at.get_or_insert(at);
        Ok(record.clone())
    }

    async fn delete_domain(&self, tenant: TenantId, domain: &DomainName) -> Result<()> {
        let mut state = self.lock();
        match state.domains.get(domain) {
            Some(record) if record.tenant_id == tenant => {
                state.domains.remove(domain);
                Ok(())
            }
            _ => Err(SsoStoreError::DomainNotFound),
        }
    }

    async fn policy(&self, tenant: TenantId) -> Result<SsoPolicy> {
        Ok(self
            .lock()
            .policies
            .get(&tenant)
            .copied()
            .unwrap_or_default())
    }

    async fn set_policy(&self, tenant: TenantId, policy: SsoPolicy) -> Result<()> {
        self.lock().policies.insert(tenant, policy);
        Ok(())
    }

    async fn insert_state(&self, state: &SignInState) -> Result<()> {
        let mut locked = self.lock();
        let key = *state.state_hash.as_bytes();
        if locked.states.contains_key(&key) {
            return Err(SsoStoreError::StateTaken);
        }
        locked.states.insert(key, state.clone());
        Ok(())
    }

    async fn take_state(
        &self,
        state_hash: &TokenHash,
        now: OffsetDateTime,
    ) -> Result<Option<SignInState>> {
        Ok(self
            .lock()
            .states
            .remove(state_hash.as_bytes())
            .filter(|s| s.expires_at > now))
    }

    async fn purge_states(&self, now: OffsetDateTime) -> Result<u64> {
        let mut state = self.lock();
        let before = state.states.len();
        state.states.retain(|_, s| s.expires_at > now);
        let purged = before - state.states.len();
        let before = state.sessions.len();
        state.sessions.retain(|_, expires_at| *expires_at > now);
        Ok((purged + before - state.sessions.len()) as u64)
    }

    async fn insert_identity(&self, identity: &ExternalIdentity) -> Result<()> {
        let mut state = self.lock();
        let key = (identity.provider.clone(), identity.subject.clone());
        if state.identities.contains_key(&key) {
            return Err(SsoStoreError::IdentityTaken);
        }
        state.identities.insert(key, identity.clone());
        Ok(())
    }

    async fn find_identity(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<ExternalIdentity>> {
        Ok(self
            .lock()
            .identities
            .get(&(provider.to_owned(), subject.to_owned()))
            .cloned())
    }

    async fn user_identities(&self, user: UserId) -> Result<Vec<ExternalIdentity>> {
        Ok(self
            .lock()
            .identities
            .values()
            .filter(|i| i.user_id == user)
            .cloned()
            .collect())
    }

    async fn delete_provider_identities(&self, provider: &str) -> Result<u64> {
        let mut state = self.lock();
        let before = state.identities.len();
        state.identities.retain(|(p, _), _| p != provider);
        Ok((before - state.identities.len()) as u64)
    }

    async fn insert_sso_session(
        &self,
        session: SessionId,
        expires_at: OffsetDateTime,
    ) -> Result<()> {
        self.lock().sessions.insert(session, expires_at);
        Ok(())
    }

    async fn is_sso_session(&self, session: SessionId) -> Result<bool> {
        Ok(self.lock().sessions.contains_key(&session))
    }
}
