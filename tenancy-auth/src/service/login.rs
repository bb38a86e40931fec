//! Login, lockout and passwords.

use serde_json::json;
use tenancy_core::{
    Actor, AuditContext, Email, Entity, Membership, MembershipStatus, MembershipStore, PageRequest,
    PageSize, StoreError, TenantId, TenantStatus, TenantStore, User, UserId, UserStatus, UserStore,
};
use time::OffsetDateTime;

use crate::error::Error;
use crate::lockout::{ThrottleKey, ThrottleState};
use crate::password::{Password, Verification};
use crate::session::{ClientInfo, RefreshToken, Session};
use crate::token::AccessToken;

use super::{Auth, Result, actions, ensure_active};

/// A successful login, registration, refresh or tenant switch.
#[derive(Debug, Clone)]
pub struct LoginSuccess {
    /// The user.
    pub user: User,
    /// The membership the tokens act through.
    pub membership: Membership,
    /// The session.
    pub session: Session,
    /// The access token.
    pub access_token: AccessToken,
    /// The new refresh token, shown once.
    pub refresh_token: RefreshToken,
}

/// Decides whether a tenant accepts password logins: the SSO policy of
/// each tenant ([`crate::sso`] implements it; `tenancy-http` wires the
/// SSO module's store in). Asked after the password is verified, for the
/// tenant the session would act in.
#[async_trait::async_trait]
pub trait PasswordLoginCheck: Send + Sync {
    /// Whether `user` may sign in to `tenant` with a password.
    async fn password_allowed(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<bool, tenancy_core::StoreError>;

    /// Whether `session` of `user` in `tenant` may go on (asked at each
    /// refresh): a tenant that now requires single sign-on refuses the
    /// sessions opened by password (default: every session may).
    async fn session_allowed(
        &self,
        _tenant: TenantId,
        _user: UserId,
        _session: tenancy_core::SessionId,
    ) -> Result<bool, tenancy_core::StoreError> {
        Ok(true)
    }

    /// Whether `session` may be switched into another tenant without a
    /// fresh sign-in. A session opened through one tenant's identity
    /// provider speaks for that tenant only (default: every session may).
    async fn switch_allowed(
        &self,
        _session: tenancy_core::SessionId,
    ) -> Result<bool, tenancy_core::StoreError> {
        Ok(true)
    }
}

/// What a login presents.
#[derive(Debug, Clone)]
pub struct LoginRequest {
    /// The email as typed.
    pub email: String,
    /// The password.
    pub password: Password,
    /// The tenant to act in; `None` picks the user's oldest active membership.
    pub tenant: Option<TenantId>,
}

impl Auth {
    /// Checks `password` against the policy and stores its hash for `user`.
    /// Returns [`Error::WeakPassword`](crate::Error::WeakPassword) for a refused password.
    pub async fn set_password(&self, user: &User, password: &Password) -> Result<()> {
        self.inner
            .config
            .password
            .check(password, Some(&user.email))?;
        let hash = self.hash_password(password).await?;
        self.inner
            .store
            .set_password_hash(user.id, &hash, self.now())
            .await?;
        Ok(())
    }

    /// Logs a user in with email and password.
    ///
    /// Unknown emails and wrong passwords do the same argon2 work and both
    /// answer [`Error::InvalidCredentials`](crate::Error::InvalidCredentials). Failures count against the
    /// account and the client ([`ClientInfo::ip`]); past the limits the
    /// answer is [`Error::AccountLocked`](crate::Error::AccountLocked) or [`Error::ClientThrottled`](crate::Error::ClientThrottled), with
    /// the unlock time. Every login, whatever its outcome, also counts
    /// against the client's rate and concurrency in this process
    /// ([`AbuseLimits`](crate::AbuseLimits)): past them,
    /// [`Error::RateLimited`](crate::Error::RateLimited). When password hashing is saturated the answer
    /// is [`Error::Overloaded`](crate::Error::Overloaded) at once, for any account. Other errors:
    /// [`Error::AccountDisabled`](crate::Error::AccountDisabled), [`Error::NotAMember`](crate::Error::NotAMember),
    /// [`Error::TenantNotActive`](crate::Error::TenantNotActive).
    #[tracing::instrument(skip_all, fields(tenant_id = ?request.tenant), err)]
    pub async fn login(&self, request: LoginRequest, client: &ClientInfo) -> Result<LoginSuccess> {
        let store = &self.inner.store;
        let now = self.now();
        let _permit = self
            .inner
            .logins
            .admit(client.ip, now)
            .map_err(|until| Error::RateLimited { until })?;
        let client_key = client.ip.map(|ip| ThrottleKey::client(&ip.to_string()));
        if let Some(key) = &client_key
            && let Some(until) = store
                .throttle_state(key)
                .await?
                .and_then(|s| s.locked_at(now))
        {
            return Err(Error::ClientThrottled { until });
        }
        let email = Email::new(&request.email).ok();
        let account_key = email.as_ref().map(ThrottleKey::account);
        let account_state = match &account_key {
            Some(key) => store.throttle_state(key).await?,
            None => None,
        };
        if let Some(until) = account_state.and_then(|s| s.locked_at(now)) {
            return Err(Error::AccountLocked { until });
        }
        self.inner
            .config
            .password
            .check_length_only(&request.password)
            .map_err(|_| Error::InvalidCredentials)?;

        let user = match &email {
            Some(email) => self.inner.backend.find_user_by_email(email).await?,
            None => None,
        };
        let stored = match &user {
            Some(user) => store.password_hash(user.id).await?,
            None => None,
        };
        let verification = match &stored {
            Some(hash) => self.verify_password(&request.password, hash).await?,
            None => self.verify_dummy(&request.password).await?,
        };
        let (user, needs_rehash) = match (user, verification) {
            (Some(user), Verification::Valid { needs_rehash }) => (user, needs_rehash),
            (user, _) => {
                return Err(self
                    .login_failed(
                        account_key.as_ref(),
                        client_key.as_ref(),
                        user.as_ref(),
                        client,
                        now,
                    )
                    .await?);
            }
        };
        if user.status == UserStatus::Disabled {
            return Err(Error::AccountDisabled);
        }
        if let Some(key) = &account_key {
            store.clear_throttle(key).await?;
        }
        if needs_rehash {
            let fresh = self.hash_password(&request.password).await?;
            store.set_password_hash(user.id, &fresh, now).await?;
        }
        let membership = self.membership_for(&user, request.tenant).await?;
        self.check_password_allowed(&membership).await?;
        if account_state.is_some_and(|s| s.locked_until.is_some()) {
            let context = Self::context(user.id, client);
            self.audit(
                membership.tenant_id,
                &context,
                actions::ACCOUNT_UNLOCKED,
                ("user", user.id.to_string()),
                json!({ "reason": "lock_expired" }),
            )
            .await;
        }
        self.open_session(&user, &membership, client).await
    }

    /// Refuses a password session in a tenant that requires single sign-on.
    pub(super) async fn check_password_allowed(&self, membership: &Membership) -> Result<()> {
        let Some(check) = &self.inner.password_check else {
            return Ok(());
        };
        if check
            .password_allowed(membership.tenant_id, membership.user_id)
            .await?
        {
            Ok(())
        } else {
            Err(Error::SsoRequired {
                tenant_id: membership.tenant_id,
            })
        }
    }

    /// Counts a failed login and returns the error to answer with.
    async fn login_failed(
        &self,
        account: Option<&ThrottleKey>,
        client_key: Option<&ThrottleKey>,
        user: Option<&User>,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) -> Result<Error> {
        let store = &self.inner.store;
        let policy = self.inner.config.lockout;
        if let Some(key) = client_key {
            store.record_login_failure(key, &policy.client, now).await?;
        }
        let Some(key) = account else {
            return Ok(Error::InvalidCredentials);
        };
        let state: ThrottleState = store
            .record_login_failure(key, &policy.account, now)
            .await?;
        let Some(until) = state.locked_at(now) else {
            return Ok(Error::InvalidCredentials);
        };
        if let Some(user) = user {
            let context = AuditContext {
                actor: Actor::System,
                ip: client.ip,
                user_agent: client.user_agent.clone(),
            };
            for tenant in self.user_tenant_ids(user.id).await? {
                self.audit(
                    tenant,
                    &context,
                    actions::ACCOUNT_LOCKED,
                    ("user", user.id.to_string()),
                    json!({ "until": until.unix_timestamp() }),
                )
                .await;
            }
        }
        Ok(Error::AccountLocked { until })
    }

    async fn user_tenant_ids(&self, user: UserId) -> Result<Vec<TenantId>> {
        Self::user_tenant_ids_in(&*self.inner.backend, user).await
    }

    /// The tenants `user` belongs to (the first thousand), read from `store`.
    pub(super) async fn user_tenant_ids_in(
        store: &(impl MembershipStore + ?Sized),
        user: UserId,
    ) -> Result<Vec<TenantId>> {
        let page = store
            .list_user_tenants(user, &PageRequest::first(PageSize::MAX))
            .await?;
        Ok(page.items.into_iter().map(|ut| ut.tenant.id).collect())
    }

    /// Lifts an account lock before it runs out.
    pub async fn unlock_account(&self, email: &Email, context: &AuditContext) -> Result<()> {
        self.inner
            .store
            .clear_throttle(&ThrottleKey::account(email))
            .await?;
        if let Some(user) = self.inner.backend.find_user_by_email(email).await? {
            for tenant in self.user_tenant_ids(user.id).await? {
                self.audit(
                    tenant,
                    context,
                    actions::ACCOUNT_UNLOCKED,
                    ("user", user.id.to_string()),
                    json!({ "reason": "operator" }),
                )
                .await;
            }
        }
        Ok(())
    }

    /// The active membership `user` acts through in `tenant`, or in their
    /// oldest active tenant when `tenant` is `None`.
    pub(crate) async fn membership_for(
        &self,
        user: &User,
        tenant: Option<TenantId>,
    ) -> Result<Membership> {
        let backend = &self.inner.backend;
        match tenant {
            Some(tenant_id) => {
                let tenant = match backend.get_tenant(tenant_id).await {
                    Err(StoreError::NotFound(Entity::Tenant)) => return Err(Error::NotAMember),
                    other => other?,
                };
                let membership = backend
                    .find_membership(tenant_id, user.id)
                    .await?
                    .filter(|m| m.status == MembershipStatus::Active)
                    .ok_or(Error::NotAMember)?;
                ensure_active(&tenant)?;
                Ok(membership)
            }
            None => {
                let mut request = PageRequest::first(PageSize::MAX);
                loop {
                    let page = backend.list_user_tenants(user.id, &request).await?;
                    if let Some(found) = page.items.into_iter().find(|ut| {
                        ut.membership.status == MembershipStatus::Active
                            && ut.tenant.status == TenantStatus::Active
                    }) {
                        return Ok(found.membership);
                    }
                    match page.next {
                        Some(cursor) => request = request.after(cursor),
                        None => return Err(Error::NotAMember),
                    }
                }
            }
        }
    }
}
