//! [`OAuthStore`]: what the authorization server keeps.

use std::sync::Arc;

use async_trait::async_trait;
use tenancy_core::{Page, PageRequest, SessionId, StoreError, TenantId, TokenHash, UserId};
use time::OffsetDateTime;

use super::types::{
    AuthorizationCode, ClientId, CodeRedemption, Consent, Interaction, InteractionId, OAuthClient,
    SessionGrant,
};
use crate::store::KeyStore;

/// Clients, pending authorization requests, authorization codes, consents
/// and the grants riding on sessions, plus the ID-token signing keys.
///
/// Each operation is atomic on its own: redeeming a code and taking an
/// interaction are single-use under concurrency (of two concurrent calls
/// at most one gets the record).
#[async_trait]
pub trait OAuthStore: Send + Sync {
    /// Stores a new client; `Conflict::Id(OAuthClient)` if the id exists.
    async fn insert_client(&self, client: &OAuthClient) -> Result<(), StoreError>;

    /// Reads a client by id, in whatever tenant (the token endpoint's
    /// lookup); `NotFound(OAuthClient)` if none.
    async fn get_client(&self, id: &ClientId) -> Result<OAuthClient, StoreError>;

    /// Lists the clients of `tenant_id` (or the global ones for `None`),
    /// oldest first.
    async fn list_clients(
        &self,
        tenant_id: Option<TenantId>,
        page: &PageRequest,
    ) -> Result<Page<OAuthClient>, StoreError>;

    /// Replaces a client's registration (name, URIs, grants, scopes, JWKS,
    /// registrant, `updated_at`), never its secret hash (so a concurrent
    /// update cannot restore a rotated secret); `NotFound(OAuthClient)`
    /// unless a client with its id exists in its tenant.
    async fn update_client(&self, client: &OAuthClient) -> Result<(), StoreError>;

    /// Replaces a client's secret hash, with its registrant and
    /// `updated_at`; `NotFound(OAuthClient)` unless a client with its id
    /// exists in its tenant.
    async fn set_client_secret(&self, client: &OAuthClient) -> Result<(), StoreError>;

    /// Deletes a client of `tenant_id` (or a global one for `None`) with its
    /// consents, codes and grants; returns the sessions its grants rode on
    /// (for the caller to revoke). `NotFound(OAuthClient)` otherwise.
    async fn delete_client(
        &self,
        tenant_id: Option<TenantId>,
        id: &ClientId,
    ) -> Result<Vec<SessionId>, StoreError>;

    /// Stores a pending authorization request.
    async fn insert_interaction(&self, interaction: &Interaction) -> Result<(), StoreError>;

    /// Reads a pending request, `None` if unknown or expired at `now`.
    async fn get_interaction(
        &self,
        id: &InteractionId,
        now: OffsetDateTime,
    ) -> Result<Option<Interaction>, StoreError>;

    /// Replaces a pending request's progress (`logged_in`, `consent_user`);
    /// `false` if it is gone.
    async fn update_interaction(&self, interaction: &Interaction) -> Result<bool, StoreError>;

    /// Removes and returns a pending request, `None` if unknown, already
    /// taken or expired at `now`.
    async fn take_interaction(
        &self,
        id: &InteractionId,
        now: OffsetDateTime,
    ) -> Result<Option<Interaction>, StoreError>;

    /// Stores a new authorization code.
    async fn insert_code(&self, code: &AuthorizationCode) -> Result<(), StoreError>;

    /// Presents a code for `client_id`, atomically: a live, unexpired code
    /// of that client is marked redeemed at `now`; a redeemed one (of any
    /// client) is reported as replayed; an unknown or expired one, or a
    /// live one of another client (left unspent, so a client holding a
    /// stolen code cannot burn it), as unknown.
    async fn redeem_code(
        &self,
        code_hash: &TokenHash,
        client_id: &ClientId,
        now: OffsetDateTime,
    ) -> Result<CodeRedemption, StoreError>;

    /// Records the session a code's redemption opened; `true` if the code
    /// was replayed meanwhile (the caller then ends that session: the
    /// replay could not, not knowing it yet).
    async fn set_code_session(
        &self,
        code_hash: &TokenHash,
        session_id: SessionId,
    ) -> Result<bool, StoreError>;

    /// The consent `user_id` gave `client_id` in `tenant_id`, if any.
    async fn find_consent(
        &self,
        user_id: UserId,
        client_id: &ClientId,
        tenant_id: TenantId,
    ) -> Result<Option<Consent>, StoreError>;

    /// Stores a consent, replacing the one of the same user, client and tenant.
    async fn put_consent(&self, consent: &Consent) -> Result<(), StoreError>;

    /// Stores the grant riding on a new session.
    async fn insert_grant(&self, grant: &SessionGrant) -> Result<(), StoreError>;

    /// The grant riding on `session_id`, if it is an OAuth session.
    async fn get_grant(&self, session_id: SessionId) -> Result<Option<SessionGrant>, StoreError>;

    /// Records a client assertion's `jti` until `expires_at`, atomically:
    /// `false` if the client already used it (a replay).
    async fn use_assertion(
        &self,
        client_id: &ClientId,
        jti: &str,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Deletes interactions, unspent codes and assertion ids that expired
    /// before `before`, spent codes that expired before `spent_before`
    /// (kept as long as what they issued may live, so a late replay still
    /// revokes it), and grants created before `spent_before` (their
    /// sessions have ended by then); returns how many went.
    async fn purge_expired(
        &self,
        before: OffsetDateTime,
        spent_before: OffsetDateTime,
    ) -> Result<u64, StoreError>;

    /// The store of the ID-token signing keys (RS256 by default), kept apart
    /// from the access-token keys.
    fn id_token_keys(&self) -> Arc<dyn KeyStore>;
}
