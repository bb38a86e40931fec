//! The in-memory SCIM store (feature `memory`).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use tenancy_core::{ScimTokenId, StoreError, TenantId, TokenHash, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{GroupRecord, ScimStore, ScimToken, TenantSettings, UserRecord};
use crate::error::ScimStoreError;

/// Tokens, user records, groups and settings in process memory, for tests and single-process
/// apps.
#[derive(Debug, Default)]
pub struct MemoryScimStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    tokens: Vec<ScimToken>,
    users: HashMap<(TenantId, Uuid), UserRecord>,
    groups: HashMap<(TenantId, Uuid), GroupRecord>,
    settings: HashMap<TenantId, TenantSettings>,
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

/// A taken `displayName`, or a member that is no user record of the tenant.
fn check_group(state: &State, group: &GroupRecord) -> Result<(), ScimStoreError> {
    if state.groups.values().any(|other| {
        other.tenant_id == group.tenant_id
            && other.id != group.id
            && same_name(&other.display_name, &group.display_name)
    }) {
        return Err(ScimStoreError::Conflict);
    }
    if group
        .members
        .iter()
        .any(|member| !state.users.contains_key(&(group.tenant_id, *member)))
    {
        return Err(ScimStoreError::UnknownMember);
    }
    Ok(())
}

impl MemoryScimStore {
    fn groups_where(
        &self,
        tenant: TenantId,
        keep: impl Fn(&GroupRecord) -> bool,
    ) -> Result<Vec<GroupRecord>, ScimStoreError> {
        let mut groups: Vec<GroupRecord> = self
            .state()?
            .groups
            .values()
            .filter(|g| g.tenant_id == tenant && keep(g))
            .cloned()
            .collect();
        groups.sort_by_key(|g| (g.created_at, g.id));
        Ok(groups)
    }
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
        let mut state = self.state()?;
        state
            .users
            .remove(&(tenant, id))
            .ok_or(ScimStoreError::NotFound)?;
        // Like the Postgres store: the record leaves its groups, which
        // change version.
        let at = tenancy_core::truncate_to_micros(OffsetDateTime::now_utc());
        for group in state.groups.values_mut() {
            if group.tenant_id == tenant && group.members.contains(&id) {
                group.members.retain(|member| *member != id);
                group.version += 1;
                group.updated_at = at;
            }
        }
        Ok(())
    }

    async fn insert_group(&self, group: &GroupRecord) -> Result<(), ScimStoreError> {
        let mut state = self.state()?;
        check_group(&state, group)?;
        if state.groups.contains_key(&(group.tenant_id, group.id)) {
            return Err(ScimStoreError::Conflict);
        }
        let mut group = group.clone();
        group.normalize();
        state.groups.insert((group.tenant_id, group.id), group);
        Ok(())
    }

    async fn get_group(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<Option<GroupRecord>, ScimStoreError> {
        Ok(self.state()?.groups.get(&(tenant, id)).cloned())
    }

    async fn list_groups(&self, tenant: TenantId) -> Result<Vec<GroupRecord>, ScimStoreError> {
        self.groups_where(tenant, |_| true)
    }

    async fn groups_of(
        &self,
        tenant: TenantId,
        member: Uuid,
    ) -> Result<Vec<GroupRecord>, ScimStoreError> {
        self.groups_where(tenant, |g| g.members.contains(&member))
    }

    async fn update_group(&self, group: &GroupRecord, expected: i64) -> Result<(), ScimStoreError> {
        let mut state = self.state()?;
        let current = state
            .groups
            .get(&(group.tenant_id, group.id))
            .ok_or(ScimStoreError::NotFound)?;
        if current.version != expected {
            return Err(ScimStoreError::VersionMismatch);
        }
        check_group(&state, group)?;
        let mut group = group.clone();
        group.normalize();
        state.groups.insert((group.tenant_id, group.id), group);
        Ok(())
    }

    async fn delete_group(
        &self,
        tenant: TenantId,
        id: Uuid,
        expected: i64,
    ) -> Result<(), ScimStoreError> {
        let mut state = self.state()?;
        let current = state
            .groups
            .get(&(tenant, id))
            .ok_or(ScimStoreError::NotFound)?;
        if current.version != expected {
            return Err(ScimStoreError::VersionMismatch);
        }
        state.groups.remove(&(tenant, id));
        Ok(())
    }

    async fn get_settings(
        &self,
        tenant: TenantId,
    ) -> Result<Option<TenantSettings>, ScimStoreError> {
        Ok(self.state()?.settings.get(&tenant).cloned())
    }

    async fn put_settings(&self, settings: &TenantSettings) -> Result<(), ScimStoreError> {
        self.state()?
            .settings
            .insert(settings.tenant_id, settings.clone());
        Ok(())
    }
}
