//! Registration and accepting invitations: the ways an account comes to be.

use tenancy_core::{
    Acceptance, Acceptor, Actor, AuditContext, DirectoryError, DisplayName, InvitationStore,
    InvitationToken, NewTenant, NewUser, Owner, UserId,
};

use crate::error::Error;
use crate::lockout::ThrottleKey;
use crate::password::Password;
use crate::session::ClientInfo;

use super::{Auth, LoginSuccess, RegistrationMode, Result};

/// What a registration presents: a new user and their first tenant.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The new user.
    pub user: NewUser,
    /// Their password.
    pub password: Password,
    /// The tenant they will own.
    pub tenant: NewTenant,
}

/// Who accepts an invitation through [`Auth::accept_invitation`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum InvitationAcceptor {
    /// A signed-in user (the caller authenticated them); their email must
    /// be the invited address.
    User(UserId),
    /// Someone without an account: one is created for the invited address,
    /// marked verified since the token reached it, with `password` as its
    /// password when given.
    NewUser {
        /// How the new user is shown to others.
        display_name: Option<DisplayName>,
        /// The new account's password.
        password: Option<Password>,
    },
}

impl Auth {
    /// Creates a user, their password and their first tenant (which they
    /// own), and logs them in there: the tenant, the user, the owner
    /// membership, the password, the session and their audit events are
    /// one transaction. The password is checked and hashed before anything
    /// is written.
    ///
    /// Only while registration is [`RegistrationMode::Open`]; each attempt
    /// counts against the client's allowance
    /// ([`AbuseLimits::registration`](crate::AbuseLimits::registration)).
    ///
    /// Errors: [`Error::InvitationRequired`](crate::Error::InvitationRequired), [`Error::RegistrationClosed`](crate::Error::RegistrationClosed),
    /// [`Error::RateLimited`](crate::Error::RateLimited), [`Error::WeakPassword`](crate::Error::WeakPassword),
    /// [`Error::Directory`](crate::Error::Directory) (slug or email taken…).
    #[tracing::instrument(skip_all, err)]
    pub async fn register(
        &self,
        registration: Registration,
        client: &ClientInfo,
    ) -> Result<LoginSuccess> {
        match self.inner.config.registration {
            RegistrationMode::Open => {}
            RegistrationMode::InviteOnly => return Err(Error::InvitationRequired),
            RegistrationMode::Closed => return Err(Error::RegistrationClosed),
        }
        if let Some(ip) = client.ip {
            self.count_attempt(
                &ThrottleKey::registrations(&ip.to_string()),
                &self.inner.config.limits.registration,
            )
            .await?;
        }
        let Registration {
            user,
            password,
            tenant,
        } = registration;
        self.inner
            .config
            .password
            .check(&password, Some(&user.email))?;
        let hash = self.hash_password(&password).await?;
        let context = Self::system_context(client);
        let tx = self.begin().await?;
        let created = self
            .inner
            .directory
            .create_tenant_in(tx.core(), tenant, Owner::New(user), &context)
            .await?;
        tx.set_password_hash(created.owner.id, &hash, self.now())
            .await?;
        let opened = self
            .open_session_in(&*tx, &created.owner, &created.membership, client)
            .await?;
        tx.commit().await?;
        Ok(self.opened(opened))
    }

    /// Redeems an invitation (see [`tenancy_core::Directory::accept_invitation`]).
    /// A new user's account, membership and password are one transaction,
    /// so a failure leaves neither an account without its password nor a
    /// spent invitation. The password is checked (against the invited
    /// address) and hashed before anything is written.
    ///
    /// A new user is refused while registration is
    /// [`RegistrationMode::Closed`]; an invitation works in the other modes.
    ///
    /// Errors: [`Error::RegistrationClosed`](crate::Error::RegistrationClosed), [`Error::WeakPassword`](crate::Error::WeakPassword),
    /// [`Error::Directory`](crate::Error::Directory) (unknown, used, revoked or expired invitation,
    /// account exists, a sender who can no longer grant its roles: then
    /// the invitation is revoked, see
    /// [`tenancy_core::Directory::withdraw_unbacked_invitation`]…).
    #[tracing::instrument(skip_all, fields(tenant_id = %token.tenant_id()), err)]
    pub async fn accept_invitation(
        &self,
        token: &InvitationToken,
        acceptor: InvitationAcceptor,
        client: &ClientInfo,
    ) -> Result<Acceptance> {
        let (acceptor, password) = match acceptor {
            InvitationAcceptor::User(id) => (Acceptor::User(id), None),
            InvitationAcceptor::NewUser { .. }
                if self.inner.config.registration == RegistrationMode::Closed =>
            {
                return Err(Error::RegistrationClosed);
            }
            InvitationAcceptor::NewUser {
                display_name,
                password,
            } => (Acceptor::NewUser { display_name }, password),
        };
        let context = Self::system_context(client);
        // Before any transaction: an API key sender's powers are read from
        // the auth store, which the acceptance's transaction holds.
        self.inner
            .directory
            .check_invitation_sender(token, &context)
            .await?;
        let hash = match &password {
            Some(password) => {
                let invitation = self
                    .inner
                    .backend
                    .find_invitation_by_token(token.tenant_id(), token.hash())
                    .await?
                    .ok_or(DirectoryError::InvitationNotFound)?;
                self.inner
                    .config
                    .password
                    .check(password, Some(&invitation.email))?;
                Some(self.hash_password(password).await?)
            }
            None => None,
        };
        let seat_limit = self.inner.directory.seat_limit(token.tenant_id()).await?;
        let tx = self.begin().await?;
        let accepted = match self
            .inner
            .directory
            .accept_invitation_in(tx.core(), token, acceptor, seat_limit, &context)
            .await
        {
            Err(DirectoryError::InviterLacksPower) => {
                drop(tx);
                self.inner
                    .directory
                    .withdraw_unbacked_invitation(token, &context)
                    .await?;
                return Err(DirectoryError::InviterLacksPower.into());
            }
            other => other?,
        };
        if let Some(hash) = &hash
            && accepted.user_created
        {
            tx.set_password_hash(accepted.user.id, hash, self.now())
                .await?;
        }
        tx.commit().await?;
        self.inner
            .directory
            .members_changed(accepted.membership.tenant_id);
        Ok(accepted)
    }

    /// The audit context of an anonymous request from `client`.
    pub(super) fn system_context(client: &ClientInfo) -> AuditContext {
        AuditContext {
            actor: Actor::System,
            ip: client.ip,
            user_agent: client.user_agent.clone(),
        }
    }
}
