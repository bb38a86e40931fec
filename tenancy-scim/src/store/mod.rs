//! What the SCIM service keeps: the tenants' provisioning tokens and, per
//! tenant, the SCIM view of each provisioned member.
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

/// Storage for tokens and user records. Every adapter passes
/// [`crate::testkit::store_suite`].
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
}
