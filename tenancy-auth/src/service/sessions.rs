//! Sessions: opening them, refresh, logout, listing, revoking, switching tenants.

use serde_json::json;
use tenancy_core::{
    Membership, MembershipStatus, MembershipStore, SessionId, StoreError, TenantId, TenantStatus,
    TenantStore, User, UserId, UserStatus, UserStore,
};
use time::OffsetDateTime;

use crate::error::Error;
use crate::principal::Principal;
use crate::secret::SecretToken;
use crate::session::{
    ClientInfo, REFRESH_PREFIX, RefreshRecord, RevokeReason, RotateOutcome, Session,
};
use crate::store::AuthTransaction;
use crate::token::{self, AccessToken, Grant};

use super::{Auth, LoginSuccess, Result, actions};

/// A session written in a transaction not yet committed, with the
/// sessions its creation evicted.
pub(crate) struct OpenedSession {
    success: LoginSuccess,
    evicted: Vec<SessionId>,
}

impl Auth {
    /// Opens a session (with its login event) in a transaction of its own.
    pub(super) async fn open_session(
        &self,
        user: &User,
        membership: &Membership,
        client: &ClientInfo,
    ) -> Result<LoginSuccess> {
        let tx = self.begin().await?;
        let opened = self.open_session_in(&*tx, user, membership, client).await?;
        tx.commit().await?;
        Ok(self.opened(opened))
    }

    /// Writes a session, its first refresh token and its login event as
    /// part of `tx`, and issues the access token. Call
    /// [`Auth::opened`] once `tx` has committed.
    pub(crate) async fn open_session_in(
        &self,
        tx: &dyn AuthTransaction,
        user: &User,
        membership: &Membership,
        client: &ClientInfo,
    ) -> Result<OpenedSession> {
        let now = self.now();
        let sessions = self.inner.config.sessions;
        let refresh_token = SecretToken::generate(REFRESH_PREFIX);
        let absolute = now + sessions.absolute_timeout;
        let session = Session {
            id: SessionId::new(),
            user_id: user.id,
            tenant_id: membership.tenant_id,
            user_agent: client.user_agent.clone(),
            ip: client.ip,
            created_at: now,
            last_seen_at: now,
            idle_expires_at: (now + sessions.idle_timeout).min(absolute),
            absolute_expires_at: absolute,
            revoked_at: None,
            revoke_reason: None,
        };
        let record = RefreshRecord {
            token_hash: refresh_token.hash(),
            session_id: session.id,
            issued_at: now,
        };
        let access_token = self.issue(user, membership, session.id, now)?;
        let evicted = tx
            .create_session(&session, &record, sessions.max_per_user)
            .await?;
        self.audit_in(
            tx.core(),
            membership.tenant_id,
            &Self::context(user.id, client),
            actions::LOGIN,
            ("session", session.id.to_string()),
            json!({}),
        )
        .await?;
        Ok(OpenedSession {
            success: LoginSuccess {
                user: user.clone(),
                membership: membership.clone(),
                session,
                access_token,
                refresh_token,
            },
            evicted,
        })
    }

    /// After the session's transaction committed: the sessions it evicted
    /// are refused from now on.
    pub(crate) fn opened(&self, opened: OpenedSession) -> LoginSuccess {
        let until = self.now() + self.inner.config.sessions.absolute_timeout;
        for id in opened.evicted {
            self.inner.revocations.insert(id, until);
        }
        self.inner
            .authenticator
            .remember_session(&opened.success.session);
        opened.success
    }

    fn issue(
        &self,
        user: &User,
        membership: &Membership,
        session: SessionId,
        now: OffsetDateTime,
    ) -> Result<AccessToken> {
        let grant = Grant {
            user,
            membership,
            session,
            now,
        };
        Ok(token::issue(
            &self.inner.keys,
            &self.inner.config.tokens,
            self.inner.hook.as_deref(),
            &grant,
        )?)
    }

    /// Trades a refresh token for a new access token and a new refresh
    /// token. The roles in the new access token are read afresh.
    ///
    /// Errors: [`Error::InvalidRefreshToken`](crate::Error::InvalidRefreshToken); [`Error::RefreshTokenReused`](crate::Error::RefreshTokenReused)
    /// when the token was already spent (the session is then revoked and a
    /// security event recorded); [`Error::SessionInactive`](crate::Error::SessionInactive) when the session
    /// ended, the membership is no longer active or the tenant is suspended.
    ///
    /// Of two concurrent refreshes with one token exactly one wins; the
    /// other is a reuse like any other ([`Error::RefreshTokenReused`](crate::Error::RefreshTokenReused)), so
    /// the session ends, the winner's new tokens with it. Clients must not
    /// refresh in parallel (share one refresh across tabs).
    #[tracing::instrument(skip_all, err)]
    pub async fn refresh(&self, refresh_token: &str, client: &ClientInfo) -> Result<LoginSuccess> {
        let presented =
            SecretToken::parse(REFRESH_PREFIX, refresh_token).ok_or(Error::InvalidRefreshToken)?;
        let next = SecretToken::generate(REFRESH_PREFIX);
        let now = self.now();
        let outcome = self
            .inner
            .store
            .rotate_refresh_token(
                &presented.hash(),
                &next.hash(),
                now,
                self.inner.config.sessions.idle_timeout,
            )
            .await?;
        let session = match outcome {
            RotateOutcome::Rotated(session) => session,
            RotateOutcome::Reused(session) => {
                self.inner
                    .revocations
                    .insert(session.id, session.absolute_expires_at);
                self.audit_reuse(&session, client).await;
                return Err(Error::RefreshTokenReused);
            }
            RotateOutcome::Inactive(_) => return Err(Error::SessionInactive),
            RotateOutcome::Unknown => return Err(Error::InvalidRefreshToken),
        };
        let backend = &self.inner.backend;
        let user = backend.get_user(session.user_id).await?;
        let tenant = backend.get_tenant(session.tenant_id).await?;
        let membership = backend
            .find_membership(session.tenant_id, session.user_id)
            .await?
            .filter(|m| m.status == MembershipStatus::Active);
        let ended = match (&membership, user.status, tenant.status) {
            (None, _, _) => Some(RevokeReason::MembershipEnded),
            (_, UserStatus::Disabled, _) => Some(RevokeReason::Revoked),
            (_, _, TenantStatus::Suspended | TenantStatus::Deleted) => {
                Some(RevokeReason::TenantInactive)
            }
            _ => None,
        };
        // A tenant that came to require single sign-on ends the sessions
        // opened otherwise at their next refresh.
        let ended = match (ended, &self.inner.password_check) {
            (None, Some(check))
                if !check
                    .session_allowed(session.tenant_id, session.user_id, session.id)
                    .await? =>
            {
                Some(RevokeReason::Revoked)
            }
            (ended, _) => ended,
        };
        let membership = match (ended, membership) {
            (None, Some(membership)) => membership,
            (reason, _) => {
                self.revoke(
                    session.id,
                    reason.unwrap_or(RevokeReason::Revoked),
                    session.absolute_expires_at,
                )
                .await?;
                return Err(Error::SessionInactive);
            }
        };
        let access_token = self.issue(&user, &membership, session.id, now)?;
        self.inner.authenticator.remember_session(&session);
        Ok(LoginSuccess {
            user,
            membership,
            session,
            access_token,
            refresh_token: next,
        })
    }

    async fn revoke(
        &self,
        id: SessionId,
        reason: RevokeReason,
        expires_at: OffsetDateTime,
    ) -> Result<bool> {
        let revoked = self
            .inner
            .store
            .revoke_session(id, reason, self.now())
            .await?;
        self.inner.revocations.insert(id, expires_at);
        Ok(revoked)
    }

    fn session_of(principal: &Principal) -> Result<(UserId, SessionId)> {
        match (principal.user_id(), principal.session_id) {
            (Some(user), Some(session)) => Ok((user, session)),
            _ => Err(Error::UserRequired),
        }
    }

    /// Ends the caller's session: its refresh token stops working and every
    /// access token carrying its `sid` is refused from now on.
    pub async fn logout(&self, principal: &Principal, client: &ClientInfo) -> Result<()> {
        let (_, session) = Self::session_of(principal)?;
        let session = self.inner.store.get_session(session).await?;
        self.end_session(&session, client).await
    }

    /// Ends the session a refresh token belongs to, for a client that
    /// holds no valid access token (a browser whose access cookie expired).
    /// A session that already ended is left as it is.
    ///
    /// Errors: [`Error::InvalidRefreshToken`](crate::Error::InvalidRefreshToken) when the token is malformed or
    /// unknown; [`Error::RefreshTokenReused`](crate::Error::RefreshTokenReused) when it was already spent: the
    /// session still ends, as a detected reuse, and the security event is
    /// recorded as [`Auth::refresh`] would.
    pub async fn logout_with_refresh_token(
        &self,
        refresh_token: &str,
        client: &ClientInfo,
    ) -> Result<()> {
        let presented =
            SecretToken::parse(REFRESH_PREFIX, refresh_token).ok_or(Error::InvalidRefreshToken)?;
        let owner = self
            .inner
            .store
            .find_session_by_refresh_token(&presented.hash())
            .await?
            .ok_or(Error::InvalidRefreshToken)?;
        let session = owner.session;
        if !session.is_live_at(self.now()) {
            return Ok(());
        }
        if owner.spent {
            self.revoke(
                session.id,
                RevokeReason::RefreshTokenReuse,
                session.absolute_expires_at,
            )
            .await?;
            self.audit_reuse(&session, client).await;
            return Err(Error::RefreshTokenReused);
        }
        self.end_session(&session, client).await
    }

    async fn audit_reuse(&self, session: &Session, client: &ClientInfo) {
        self.audit(
            session.tenant_id,
            &Self::context(session.user_id, client),
            actions::REFRESH_TOKEN_REUSED,
            ("session", session.id.to_string()),
            json!({ "user_id": session.user_id }),
        )
        .await;
    }

    /// Revokes `session` as a logout, with its audit event.
    async fn end_session(&self, session: &Session, client: &ClientInfo) -> Result<()> {
        let tx = self.begin().await?;
        tx.revoke_session(session.id, RevokeReason::Logout, self.now())
            .await?;
        self.audit_in(
            tx.core(),
            session.tenant_id,
            &Self::context(session.user_id, client),
            actions::LOGOUT,
            ("session", session.id.to_string()),
            json!({}),
        )
        .await?;
        tx.commit().await?;
        self.inner
            .revocations
            .insert(session.id, session.absolute_expires_at);
        Ok(())
    }

    /// The user's live sessions, newest first.
    pub async fn list_sessions(&self, user: UserId) -> Result<Vec<Session>> {
        Ok(self
            .inner
            .store
            .list_user_sessions(user, self.now())
            .await?)
    }

    /// Ends one of `user`'s sessions. [`Error::SessionNotFound`](crate::Error::SessionNotFound) if it is
    /// not theirs.
    pub async fn revoke_session(&self, user: UserId, session: SessionId) -> Result<()> {
        let found = match self.inner.store.get_session(session).await {
            Ok(found) if found.user_id == user => found,
            Ok(_) | Err(StoreError::NotFound(_)) => return Err(Error::SessionNotFound),
            Err(other) => return Err(other.into()),
        };
        self.revoke(session, RevokeReason::Revoked, found.absolute_expires_at)
            .await?;
        Ok(())
    }

    /// Ends every session of `user`; returns how many.
    pub async fn revoke_all_sessions(&self, user: UserId) -> Result<usize> {
        self.revoke_many(
            self.inner
                .store
                .revoke_user_sessions(user, None, RevokeReason::Revoked, self.now())
                .await?,
        )
    }

    pub(super) fn revoke_many(&self, ids: Vec<SessionId>) -> Result<usize> {
        let until = self.now() + self.inner.config.sessions.absolute_timeout;
        for id in &ids {
            self.inner.revocations.insert(*id, until);
        }
        Ok(ids.len())
    }

    /// Opens a session in another tenant for the calling user, who must
    /// hold an active membership there in a tenant that is active.
    ///
    /// A tenant that requires single sign-on is entered only by signing in
    /// through its identity provider: switching into it answers
    /// [`Error::SsoRequired`](crate::Error::SsoRequired).
    ///
    /// A session opened through a tenant's enterprise identity provider
    /// does not switch into another tenant: that answers
    /// [`Error::ReauthenticationRequired`](crate::Error::ReauthenticationRequired)
    /// (sign in again, by password or the other tenant's provider).
    ///
    /// Errors: [`Error::UserRequired`](crate::Error::UserRequired), [`Error::NotAMember`](crate::Error::NotAMember), [`Error::TenantNotActive`](crate::Error::TenantNotActive).
    pub async fn switch_tenant(
        &self,
        principal: &Principal,
        tenant: TenantId,
        client: &ClientInfo,
    ) -> Result<LoginSuccess> {
        let (user_id, session) = Self::session_of(principal)?;
        let user = self.inner.backend.get_user(user_id).await?;
        if user.status == UserStatus::Disabled {
            return Err(Error::AccountDisabled);
        }
        let membership = self.membership_for(&user, Some(tenant)).await?;
        if principal.tenant_id != tenant
            && let Some(check) = &self.inner.password_check
            && !check.switch_allowed(session).await?
        {
            return Err(Error::ReauthenticationRequired);
        }
        self.check_password_allowed(&membership).await?;
        self.open_session(&user, &membership, client).await
    }
}
