//! Role and policy stores: tenant-scoped, versioned, audited.
//!
//! Every tenant has an [`Epoch`]: a counter that moves on each role or
//! policy change of that tenant (the adapters here share one counter
//! between roles and policies). Writes name the epoch they were based on
//! and fail with [`AuthzStoreError::StaleEpoch`] if it moved meanwhile, so
//! two admins editing at once never overwrite each other blindly, and
//! checks that span several roles (cycles, escalation) hold at write time.
//! [`crate::PolicyCache`] compares epochs to know when a compiled
//! [`crate::Authorizer`] is out of date.
//!
//! Each write appends an audit event (`role.created`, `policy.deleted`, …)
//! to tenancy-core's [`tenancy_core::AuditLog`]: on Postgres in the same
//! transaction as the change; in memory see [`MemoryAuthzStore`].
//!
//! Lists are not paginated: the compiler needs every role and policy of a
//! tenant at once, and a tenant holds at most [`MAX_ROLES`] roles and
//! [`MAX_POLICIES`] policies.

#[cfg(feature = "memory")]
mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tenancy_core::{
    AuditAction, AuditContext, Metadata, NewAuditEvent, RoleName, StoreError, Target, TenantId,
};
use time::OffsetDateTime;

use crate::policy::{PolicyDocument, PolicyId};
use crate::role::RoleDefinition;

#[cfg(feature = "memory")]
pub use memory::MemoryAuthzStore;

/// Most custom roles one tenant may define.
pub const MAX_ROLES: usize = 1000;
/// Most policies one tenant may hold.
pub const MAX_POLICIES: usize = 1000;

/// The audit actions role and policy changes record.
pub mod actions {
    /// A custom role was created.
    pub const ROLE_CREATED: &str = "role.created";
    /// A custom role was changed.
    pub const ROLE_UPDATED: &str = "role.updated";
    /// A custom role was deleted.
    pub const ROLE_DELETED: &str = "role.deleted";
    /// A policy was created.
    pub const POLICY_CREATED: &str = "policy.created";
    /// A policy was changed.
    pub const POLICY_UPDATED: &str = "policy.updated";
    /// A policy was deleted.
    pub const POLICY_DELETED: &str = "policy.deleted";
}

/// The version of a tenant's roles and policies: 0 before the first
/// change, then one more on every change.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Epoch(pub u64);

impl Epoch {
    /// Before any change.
    pub const ZERO: Epoch = Epoch(0);

    /// The epoch after this one.
    pub fn next(self) -> Epoch {
        Epoch(self.0.saturating_add(1))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A value read at an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The epoch the value was read at.
    pub epoch: Epoch,
    /// The value.
    pub value: T,
}

/// What a role or policy store can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthzStoreError {
    /// The tenant's roles or policies changed since the epoch the write was
    /// based on; reload and retry.
    #[error(
        "roles or policies changed meanwhile (epoch is {actual}, the write expected {expected})"
    )]
    StaleEpoch {
        /// The epoch the write was based on.
        expected: Epoch,
        /// The current epoch.
        actual: Epoch,
    },
    /// No such custom role in this tenant.
    #[error("role `{0}` not found")]
    RoleNotFound(RoleName),
    /// No such policy in this tenant.
    #[error("policy `{0}` not found")]
    PolicyNotFound(PolicyId),
    /// The tenant does not exist.
    #[error("tenant not found")]
    TenantNotFound,
    /// The tenant already holds the most roles or policies allowed.
    #[error("a tenant may hold at most {max} {what}")]
    Limit {
        /// `roles` or `policies`.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// The backend or the audit log failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AuthzStoreError {
    #[cfg_attr(not(any(feature = "memory", feature = "postgres")), allow(dead_code))] // used by the adapters
    pub(crate) fn from_audit(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(tenancy_core::Entity::Tenant) => AuthzStoreError::TenantNotFound,
            other => AuthzStoreError::Store(other),
        }
    }
}

/// Custom roles of each tenant (built-in roles live in code, in
/// [`crate::Engine`]). Object-safe: hold it as `Arc<dyn RoleStore>`.
#[async_trait]
pub trait RoleStore: Send + Sync {
    /// The tenant's current epoch.
    async fn roles_epoch(&self, tenant_id: TenantId) -> Result<Epoch, AuthzStoreError>;

    /// Every custom role of the tenant, by name, with the epoch they were read at.
    async fn list_roles(
        &self,
        tenant_id: TenantId,
    ) -> Result<Versioned<Vec<RoleDefinition>>, AuthzStoreError>;

    /// Creates or replaces a role, if the epoch is still `expected`, and
    /// records `role.created` or `role.updated`. Returns the new epoch.
    async fn put_role(
        &self,
        tenant_id: TenantId,
        role: &RoleDefinition,
        expected: Epoch,
        audit: &AuditContext,
    ) -> Result<Epoch, AuthzStoreError>;

    /// Deletes a role, if the epoch is still `expected`, and records
    /// `role.deleted`. Returns the new epoch.
    async fn delete_role(
        &self,
        tenant_id: TenantId,
        name: &RoleName,
        expected: Epoch,
        audit: &AuditContext,
    ) -> Result<Epoch, AuthzStoreError>;
}

/// Policy documents of each tenant. Object-safe: hold it as `Arc<dyn PolicyStore>`.
#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// The tenant's current epoch.
    async fn policies_epoch(&self, tenant_id: TenantId) -> Result<Epoch, AuthzStoreError>;

    /// Every policy of the tenant, by id, with the epoch they were read at.
    async fn list_policies(
        &self,
        tenant_id: TenantId,
    ) -> Result<Versioned<Vec<PolicyDocument>>, AuthzStoreError>;

    /// Creates or replaces a policy, if the epoch is still `expected`, and
    /// records `policy.created` or `policy.updated`. Returns the new epoch.
    async fn put_policy(
        &self,
        tenant_id: TenantId,
        policy: &PolicyDocument,
        expected: Epoch,
        audit: &AuditContext,
    ) -> Result<Epoch, AuthzStoreError>;

    /// Deletes a policy, if the epoch is still `expected`, and records
    /// `policy.deleted`. Returns the new epoch.
    async fn delete_policy(
        &self,
        tenant_id: TenantId,
        id: &PolicyId,
        expected: Epoch,
        audit: &AuditContext,
    ) -> Result<Epoch, AuthzStoreError>;
}

/// A change, described for its audit event.
#[cfg_attr(not(any(feature = "memory", feature = "postgres")), allow(dead_code))] // used by the adapters
pub(crate) enum Change<'a> {
    PutRole {
        role: &'a RoleDefinition,
        created: bool,
    },
    DeleteRole {
        name: &'a RoleName,
    },
    PutPolicy {
        policy: &'a PolicyDocument,
        created: bool,
    },
    DeletePolicy {
        id: &'a PolicyId,
    },
}

impl Change<'_> {
    #[cfg_attr(not(any(feature = "memory", feature = "postgres")), allow(dead_code))] // used by the adapters
    /// The audit event of this change, which moved the tenant to `epoch`.
    /// The definition is recorded when it fits the metadata limit; a
    /// summary otherwise.
    pub(crate) fn audit_event(
        &self,
        context: &AuditContext,
        epoch: Epoch,
        at: OffsetDateTime,
    ) -> Result<NewAuditEvent, AuthzStoreError> {
        let invalid = |e| AuthzStoreError::Store(StoreError::InvalidInput(e));
        let (action, target, full, summary) = match self {
            Change::PutRole { role, created } => (
                if *created {
                    actions::ROLE_CREATED
                } else {
                    actions::ROLE_UPDATED
                },
                Target::new("role", role.name.as_str()).map_err(invalid)?,
                json!({ "epoch": epoch.0, "role": role }),
                json!({ "epoch": epoch.0, "permissions": role.permissions.len(), "inherits": role.inherits }),
            ),
            Change::DeleteRole { name } => (
                actions::ROLE_DELETED,
                Target::new("role", name.as_str()).map_err(invalid)?,
                json!({ "epoch": epoch.0 }),
                json!({ "epoch": epoch.0 }),
            ),
            Change::PutPolicy { policy, created } => (
                if *created {
                    actions::POLICY_CREATED
                } else {
                    actions::POLICY_UPDATED
                },
                Target::new("policy", policy.id.as_str()).map_err(invalid)?,
                json!({ "epoch": epoch.0, "policy": policy }),
                json!({ "epoch": epoch.0, "statements": policy.statements.len() }),
            ),
            Change::DeletePolicy { id } => (
                actions::POLICY_DELETED,
                Target::new("policy", id.as_str()).map_err(invalid)?,
                json!({ "epoch": epoch.0 }),
                json!({ "epoch": epoch.0 }),
            ),
        };
        let metadata = Metadata::new(full)
            .or_else(|_| Metadata::new(summary))
            .map_err(invalid)?;
        let action = AuditAction::new(action).map_err(invalid)?;
        Ok(NewAuditEvent::new(context, action, target, metadata, at))
    }
}
