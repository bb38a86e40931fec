//! The in-memory SCIM store (feature `memory`).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use tenancy_core::{ScimTokenId, StoreError, TenantId, TokenHash, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{ScimStore, ScimToken, UserRecord};
use crate::error::ScimStoreError;

/// Tokens and user records in process memory, for tests and single-process
/// apps.
#[derive(Debug, Default)]
pub struct MemoryScimStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    tokens: Vec<ScimToken>,
    users: HashMap<(TenantId, Uuid), UserRecord>,
}

impl MemoryScimStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> Result<std::sync::MutexGuard<'_, State>, ScimStoreError> {
        self.state
            .lock()
            .map_err(|_| StoreError::unavailable("the scim store lock is poisoned").into())
    }
}

fn same_name(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

fn clash(state: &State, record: &UserRecord) -> bool {
    state.users.values().any(|other| {
        other.tenant_id == record.tenant_id
            && other.id != record.id
            && (same_name(&other.user_name, &record.user_name) || other.user_id == record.user_id)
    })
}

fn sorted(mut records: Vec<UserRecord>) -> Vec<UserRecord> {
    records.sort_by_key(|r| (r.created_at, r.id));
    records
}

#[async_trait]
impl ScimStore for MemoryScimStore {
    async fn insert_token(&self, token: &ScimToken) -> Result<(), ScimStoreError> {
        let mut state = self.state()?;
        if state
            .tokens
            .iter()
            .any(|t| t.id == token.id || t.secret_hash == token.secret_hash)
        {
            return Err(ScimStoreError::Conflict);
        }
        state.tokens.push(token.clone());
        Ok(())
    }

    async fn find_token(&self, hash: &TokenHash) -> Result<Option<ScimToken>, ScimStoreError> {
        Ok(self
            .state()?
            .tokens
            .iter()
            .find(|t| &t.secret_hash == hash)
            .cloned())
    }

    async fn list_tokens(&self, tenant: TenantId) -> Result<Vec<ScimToken>, ScimStoreError> {
        let mut tokens: Vec<_> = self
            .state()?
            .tokens
            .iter()
            .filter(|t| t.tenant_id == tenant)
            .cloned()
            .collect();
        tokens.sort_by_key(|t| (t.created_at, t.id));
        Ok(tokens)
    }

    async fn revoke_token(
        &self,
        tenant: TenantId,
        id: ScimTokenId,
        at: OffsetDateTime,
    ) -> Result<ScimToken, ScimStoreError> {
        let mut state = self.state()?;
        let token = state
            .tokens
            .iter_mut()
            .find(|t| t.id == id && t.tenant_id == tenant)
            .ok_or(ScimStoreError::NotFound)?;
        token.revoked_at.get_or_insert(at);
        Ok(token.clone())
    }

    async fn touch_token(&self, id: ScimTokenId, at: OffsetDateTime) -> Result<(), ScimStoreError> {
        if let Some(token) = self.state()?.tokens.iter_mut().find(|t| t.id == id) {
            token.last_used_at = Some(at);
        }
        Ok(())
    }

    async fn insert_user(&self, record: &UserRecord) -> Result<(), ScimStoreError> {
        let mut state = self.state()?;
        if clash(&state, record) || state.users.contains_key(&(record.tenant_id, record.id)) {
            return Err(ScimStoreError::Conflict);
        }
        state
            .users
            .insert((record.tenant_id, record.id), record.clone());
        Ok(())
    }

    async fn get_user(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<Option<UserRecord>, ScimStoreError> {
        Ok(self.state()?.users.get(&(tenant, id)).cloned())
    }

    async fn find_user_by_name(
        &self,
        tenant: TenantId,
        user_name: &str,
    ) -> Result<Option<UserRecord>, ScimStoreError> {
        Ok(self
            .state()?
            .users
            .values()
            .find(|r| r.tenant_id == tenant && same_name(&r.user_name, user_name))
            .cloned())
    }

    async fn find_user_by_account(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<UserRecord>, ScimStoreError> {
        Ok(self
            .state()?
            .users
            .values()
            .find(|r| r.tenant_id == tenant && r.user_id == user)
            .cloned())
    }

    async fn list_users(&self, tenant: TenantId) -> Result<Vec<UserRecord>, ScimStoreError> {
        let records = self
            .state()?
            .users
            .values()
            .filter(|r| r.tenant_id == tenant)
            .cloned()
            .collect();
        Ok(sorted(records))
    }

    async fn update_user(&self, record: &UserRecord, expected: i64) -> Result<(), ScimStoreError> {
        let mut state = self.state()?;
        let current = state
            .users
            .get(&(record.tenant_id, record.id))
            .ok_or(ScimStoreError::NotFound)?;
        if current.version != expected {
            return Err(ScimStoreError::VersionMismatch);
        }
        if clash(&state, record) {
            return Err(ScimStoreError::Conflict);
        }
        state
            .users
            .insert((record.tenant_id, record.id), record.clone());
        Ok(())
    }

    async fn delete_user(&self, tenant: TenantId, id: Uuid) -> Result<(), ScimStoreError> {
        self.state()?
            .users
            .remove(&(tenant, id))
            .map(|_| ())
            .ok_or(ScimStoreError::NotFound)
    }
}
