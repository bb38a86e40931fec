//! [`SsoStore`]: where connections, domains, policies, pending sign-ins and
//! linked identities live.

use async_trait::async_trait;
use tenancy_core::{SessionId, TenantId, TokenHash, UserId};
use time::OffsetDateTime;

use super::connection::{
    ConnectionId, DomainName, EmailDomain, EnterpriseConnection, ExternalIdentity, SignInState,
    SsoPolicy,
};
use super::error::SsoStoreError;

type Result<T> = std::result::Result<T, SsoStoreError>;

/// Most connections or domains a tenant may hold; lists return at most this many.
pub const MAX_PER_TENANT: usize = 100;

/// The SSO store. Tenant-owned records (connections, domains, policy) are
/// read and written with their tenant; domains are also found by name
/// (before the tenant is known, when routing an email), pending sign-ins by
/// the hash of their state, identities by provider and subject.
#[async_trait]
pub trait SsoStore: Send + Sync {
    /// Inserts a connection; [`SsoStoreError::TenantNotFound`] if the tenant does not exist.
    async fn insert_connection(&self, connection: &EnterpriseConnection) -> Result<()>;

    /// Reads a connection of `tenant`.
    async fn get_connection(
        &self,
        tenant: TenantId,
        id: ConnectionId,
    ) -> Result<Option<EnterpriseConnection>>;

    /// The connections of `tenant`, oldest first (at most [`MAX_PER_TENANT`]).
    async fn list_connections(&self, tenant: TenantId) -> Result<Vec<EnterpriseConnection>>;

    /// Replaces a connection; [`SsoStoreError::ConnectionNotFound`] if absent.
    async fn update_connection(&self, connection: &EnterpriseConnection) -> Result<()>;

    /// Deletes a connection; [`SsoStoreError::ConnectionNotFound`] if absent.
    async fn delete_connection(&self, tenant: TenantId, id: ConnectionId) -> Result<()>;

    /// Claims a domain; [`SsoStoreError::DomainTaken`] if any tenant holds it.
    async fn insert_domain(&self, domain: &EmailDomain) -> Result<()>;

    /// Finds a domain by name, whichever tenant holds it.
    async fn find_domain(&self, domain: &DomainName) -> Result<Option<EmailDomain>>;

    /// The domains of `tenant`, by name (at most [`MAX_PER_TENANT`]).
    async fn list_domains(&self, tenant: TenantId) -> Result<Vec<EmailDomain>>;

    /// Marks a domain of `tenant` verified at `at` (keeps an earlier time);
    /// [`SsoStoreError::DomainNotFound`] if `tenant` does not hold it.
    async fn verify_domain(
        &self,
        tenant: TenantId,
        domain: &DomainName,
        at: OffsetDateTime,
    ) -> Result<EmailDomain>;

    /// Releases a domain; [`SsoStoreError::DomainNotFound`] if `tenant` does not hold it.
    async fn delete_domain(&self, tenant: TenantId, domain: &DomainName) -> Result<()>;

    /// The tenant's policy (the default when none was set).
    async fn policy(&self, tenant: TenantId) -> Result<SsoPolicy>;

    /// Sets the tenant's policy.
    async fn set_policy(&self, tenant: TenantId, policy: SsoPolicy) -> Result<()>;

    /// Records a pending sign-in; [`SsoStoreError::StateTaken`] if its hash exists.
    async fn insert_state(&self, state: &SignInState) -> Result<()>;

    /// Removes and returns the pending sign-in with this state hash if it
    /// has not expired at `now`: of two concurrent takes, one wins.
    async fn take_state(
        &self,
        state_hash: &TokenHash,
        now: OffsetDateTime,
    ) -> Result<Option<SignInState>>;

    /// Deletes pending sign-ins (and records of SSO sessions) expired at
    /// `now`; returns how many.
    async fn purge_states(&self, now: OffsetDateTime) -> Result<u64>;

    /// Links an identity; [`SsoStoreError::IdentityTaken`] if `(provider, subject)` is linked.
    async fn insert_identity(&self, identity: &ExternalIdentity) -> Result<()>;

    /// Finds the identity `(provider, subject)`.
    async fn find_identity(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<ExternalIdentity>>;

    /// The identities linked to `user`.
    async fn user_identities(&self, user: UserId) -> Result<Vec<ExternalIdentity>>;

    /// Records that `session` was opened through an enterprise connection
    /// (kept until `expires_at`, the session's absolute expiry).
    async fn insert_sso_session(
        &self,
        session: SessionId,
        expires_at: OffsetDateTime,
    ) -> Result<()>;

    /// Whether `session` was opened through an enterprise connection.
    async fn is_sso_session(&self, session: SessionId) -> Result<bool>;

    /// Forgets every identity linked through `provider` (a connection that
    /// now points at another issuer or client, or is gone: the same `sub`
    /// there names someone else); returns how many.
    async fn delete_provider_identities(&self, provider: &str) -> Result<u64>;
}
