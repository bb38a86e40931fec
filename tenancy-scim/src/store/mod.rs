//! What the SCIM service keeps: the tenants' provisioning tokens and, per
//! tenant, the SCIM view of each provisioned member, the tenant's groups
//! and its SCIM settings.
//!
//! The SDK user and membership stay in the directory; a [`UserRecord`]
//! holds what only the tenant's identity provider says about its member
//! (`userName`, `externalId`, names, emails, the enterprise extension),
//! so two tenants provisioning one person never see or overwrite each
//! other's attributes.

#[cfg(feature = "memory")]
mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{Map, Value};
use tenancy_core::{Actor, ScimTokenId, TenantId, TokenHash, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ScimStoreError;

#[cfg(feature = "memory")]
pub use memory::MemoryScimStore;

/// A tenant's SCIM bearer token, as stored: only the hash of its secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScimToken {
    /// Its id: the actor of every change made with it.
    pub id: ScimTokenId,
    /// The tenant it provisions.
    pub tenant_id: TenantId,
    /// A label chosen by whoever issued it (`okta`, `entra`).
    pub name: String,
    /// SHA-256 of the secret.
    #[serde(skip)]
    pub secret_hash: TokenHash,
    /// Who issued it.
    pub created_by: Actor,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last authenticated a request (to the minute).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// When it was revoked.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// The SCIM view of one member of a tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    /// The SCIM `id`: per tenant, never the SDK user id (which would link
    /// one person's records across tenants).
    pub id: Uuid,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The SDK user this record provisions.
    pub user_id: UserId,
    /// The `userName`, unique in the tenant without regard to case.
    pub user_name: String,
    /// The identity provider's id for the user.
    pub external_id: Option<String>,
    /// Whether the identity provider says the user is active.
    pub active: bool,
    /// The other writable attributes, cleaned against the schema.
    pub attributes: Map<String, Value>,
    /// Bumped on every change: the ETag.
    pub version: i64,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
}

/// Storage for tokens, user records, groups and per-tenant settings.
/// Every adapter passes [`crate::testkit::store_suite`].
#[async_trait]
pub trait ScimStore: Send + Sync + 'static {
    /// Stores a new token.
    async fn insert_token(&self, token: &ScimToken) -> Result<(), ScimStoreError>;

    /// The token whose secret hashes to `hash`, in any tenant, revoked or not.
    async fn find_token(&self, hash: &TokenHash) -> Result<Option<ScimToken>, ScimStoreError>;

    /// The tenant's tokens, oldest first.
    async fn list_tokens(&self, tenant: TenantId) -> Result<Vec<ScimToken>, ScimStoreError>;

    /// Marks a token of `tenant` revoked at `at` (kept if already revoked)
    /// and returns it; `NotFound` for a token of another tenant.
    async fn revoke_token(
        &self,
        tenant: TenantId,
        id: ScimTokenId,
        at: OffsetDateTime,
    ) -> Result<ScimToken, ScimStoreError>;

    /// Records that a token was used at `at`.
    async fn touch_token(&self, id: ScimTokenId, at: OffsetDateTime) -> Result<(), ScimStoreError>;

    /// Stores a new record; `Conflict` if its `userName` (any case) or its
    /// user already has one in the tenant.
    async fn insert_user(&self, record: &UserRecord) -> Result<(), ScimStoreError>;

    /// A record of `tenant` by SCIM id.
    async fn get_user(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<Option<UserRecord>, ScimStoreError>;

    /// The record of `tenant` with this `userName`, compared without case.
    async fn find_user_by_name(
        &self,
        tenant: TenantId,
        user_name: &str,
    ) -> Result<Option<UserRecord>, ScimStoreError>;

    /// The record of `tenant` provisioning `user`.
    async fn find_user_by_account(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<UserRecord>, ScimStoreError>;

    /// Every record of `tenant`, oldest first.
    async fn list_users(&self, tenant: TenantId) -> Result<Vec<UserRecord>, ScimStoreError>;

    /// Replaces a record if its stored version is `expected`
    /// (`VersionMismatch` otherwise, `Conflict` for a taken `userName`).
    async fn update_user(&self, record: &UserRecord, expected: i64) -> Result<(), ScimStoreError>;

    /// Deletes a record of `tenant`; `NotFound` if there is none.
    async fn delete_user(&self, tenant: TenantId, id: Uuid) -> Result<(), ScimStoreError>;

    /// Stores a new group; `Conflict` if its `displayName` (any case) is
    /// taken in the tenant, `UnknownMember` if a member is not a user
    /// record of the tenant.
    async fn insert_group(&self, group: &GroupRecord) -> Result<(), ScimStoreError>;

    /// A group of `tenant` by SCIM id.
    async fn get_group(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<Option<GroupRecord>, ScimStoreError>;

    /// Every group of `tenant`, oldest first.
    async fn list_groups(&self, tenant: TenantId) -> Result<Vec<GroupRecord>, ScimStoreError>;

    /// The groups of `tenant` that have the user record `member`, oldest first.
    async fn groups_of(
        &self,
        tenant: TenantId,
        member: Uuid,
    ) -> Result<Vec<GroupRecord>, ScimStoreError>;

    /// Replaces a group if its stored version is `expected`
    /// (`VersionMismatch` otherwise; `NotFound`, `Conflict` and
    /// `UnknownMember` as for inserts).
    async fn update_group(&self, group: &GroupRecord, expected: i64) -> Result<(), ScimStoreError>;

    /// Deletes a group of `tenant` if its stored version is `expected`;
    /// `NotFound` if there is none, `VersionMismatch` if it changed.
    async fn delete_group(
        &self,
        tenant: TenantId,
        id: Uuid,
        expected: i64,
    ) -> Result<(), ScimStoreError>;

    /// The tenant's settings, if it ever saved any.
    async fn get_settings(
        &self,
        tenant: TenantId,
    ) -> Result<Option<TenantSettings>, ScimStoreError>;

    /// Saves the tenant's settings, replacing earlier ones.
    async fn put_settings(&self, settings: &TenantSettings) -> Result<(), ScimStoreError>;
}

/// The SCIM view of one group of a tenant (RFC 7643 §4.2).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRecord {
    /// The SCIM `id`.
    pub id: Uuid,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The `displayName`, unique in the tenant without regard to case; a
    /// tenant's role mapping names groups by it.
    pub display_name: String,
    /// The identity provider's id for the group.
    pub external_id: Option<String>,
    /// The members: SCIM ids of user records of the same tenant, sorted
    /// and without duplicates. Deleting a user record removes it here.
    pub members: Vec<Uuid>,
    /// Bumped on every change: the ETag.
    pub version: i64,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
}

impl GroupRecord {
    /// Sorts and de-duplicates the members, as every store keeps them.
    pub fn normalize(&mut self) {
        self.members.sort_unstable();
        self.members.dedup();
    }
}

/// One entry of a tenant's group → role mapping: members of the group
/// named `group` (its `displayName`, compared without case) hold `role`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct GroupRole {
    /// The group's `displayName`.
    pub group: String,
    /// The tenant role its members hold.
    pub role: tenancy_core::RoleName,
}

/// A tenant's SCIM settings, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantSettings {
    /// The tenant.
    pub tenant_id: TenantId,
    /// What deactivation does in this tenant.
    pub deprovision: crate::module::Deprovision,
    /// Which group grants which role.
    pub group_roles: Vec<GroupRole>,
    /// When they last changed.
    pub updated_at: OffsetDateTime,
}
