//! What the OAuth authorization server ([`crate::oidc::OAuthProvider`])
//! needs of [`Auth`]: sessions opened and refreshed for OAuth clients,
//! client-credentials tokens, and audit events.

use std::sync::Arc;

use tenancy_core::{
    Actor, AuditContext, Membership, SessionId, TenantId, Transaction, User, UserId, UserStatus,
    UserStore,
};
use time::OffsetDateTime;

use crate::error::Error;
use crate::keys::KeyRing;
use crate::secret::SecretToken;
use crate::session::{ClientInfo, OAUTH_REFRESH_PREFIX, RevokeReason};
use crate::store::{AuthStore, AuthTransaction};
use crate::token::{self, AccessToken};

use super::{Auth, LoginSuccess, Result};

impl Auth {
    /// The user and their active membership in `tenant`, in an active
    /// tenant; [`Error::AccountDisabled`], [`Error::NotAMember`] or
    /// [`Error::TenantNotActive`] otherwise.
    pub(crate) async fn member_of(
        &self,
        user: UserId,
        tenant: TenantId,
    ) -> Result<(User, Membership)> {
        let user = self.inner.backend.get_user(user).await?;
        if user.status == UserStatus::Disabled {
            return Err(Error::AccountDisabled);
        }
        let membership = self.membership_for(&user, Some(tenant)).await?;
        Ok((user, membership))
    }

    /// Opens a session (a refresh-token family) for an OAuth client acting
    /// for `user` in `tenant` with `scope`, with its login event, in one
    /// transaction; `before_commit` writes the grant riding on it in the
    /// same breath (the store of the grant is not the auth store's, so it
    /// runs just before the commit).
    pub(crate) async fn open_oauth_session(
        &self,
        user: UserId,
        tenant: TenantId,
        client_id: &str,
        scope: &str,
        client: &ClientInfo,
    ) -> Result<LoginSuccess> {
        let (user, membership) = self.member_of(user, tenant).await?;
        let tx = self.begin().await?;
        let opened = self
            .open_session_for(
                &*tx,
                &user,
                &membership,
                client,
                Some((client_id, scope)),
                None,
            )
            .await?;
        tx.commit().await?;
        Ok(self.opened(opened))
    }

    /// Rotates an OAuth refresh token (prefix `ort_`), issuing an access
    /// token for `client_id` with `scope`.
    pub(crate) async fn rotate_oauth(
        &self,
        presented: &SecretToken,
        client_id: &str,
        scope: &str,
        client: &ClientInfo,
    ) -> Result<LoginSuccess> {
        self.rotate(
            presented,
            OAUTH_REFRESH_PREFIX,
            client,
            Some((client_id, scope)),
        )
        .await
    }

    /// Ends a session (an OAuth grant's, or a browser's at logout): its
    /// refresh token stops working and its access tokens are refused.
    pub(crate) async fn end_session_by_id(
        &self,
        session: SessionId,
        reason: RevokeReason,
    ) -> Result<()> {
        let found = self.inner.store.get_session(session).await?;
        self.revoke(session, reason, found.absolute_expires_at)
            .await?;
        Ok(())
    }

    /// A `client_credentials` access token.
    pub(crate) fn client_access_token(
        &self,
        client_id: &str,
        tenant: TenantId,
        scope: &str,
        minted_by: Actor,
    ) -> Result<AccessToken> {
        Ok(token::issue_for_client(
            &self.inner.keys,
            &self.inner.config.tokens,
            client_id,
            tenant,
            scope,
            minted_by,
            self.now(),
        )?)
    }

    /// The auth store.
    pub(crate) fn auth_store(&self) -> &Arc<dyn AuthStore> {
        &self.inner.store
    }

    /// The access-token signing keys.
    pub(crate) fn access_keys(&self) -> &KeyRing {
        &self.inner.keys
    }

    /// The current time, as every record stores it.
    pub(crate) fn current_time(&self) -> OffsetDateTime {
        self.now()
    }

    /// Opens a transaction over the auth store and the core backend, for a
    /// change and its audit event.
    pub(crate) async fn begin_audited(&self) -> Result<Box<dyn AuthTransaction>> {
        self.begin().await
    }

    /// Records an audit event as part of `tx`.
    pub(crate) async fn audit_within(
        &self,
        tx: &dyn Transaction,
        tenant: TenantId,
        context: &AuditContext,
        action: &str,
        target: (&str, String),
        metadata: serde_json::Value,
    ) -> Result<()> {
        self.audit_in(tx, tenant, context, action, target, metadata)
            .await
    }

    /// Records an audit event on its own, logging a failure.
    pub(crate) async fn audit_alone(
        &self,
        tenant: TenantId,
        context: &AuditContext,
        action: &str,
        target: (&str, String),
        metadata: serde_json::Value,
    ) {
        self.audit(tenant, context, action, target, metadata).await;
    }
}
