//! Email verification and password reset.

use serde_json::json;
use tenancy_core::{Email, User, UserId, UserStatus, UserStore};

use crate::error::Error;
use crate::lockout::ThrottleKey;
use crate::one_time::{Mail, OneTimeToken, TokenPurpose};
use crate::password::Password;
use crate::secret::SecretToken;
use crate::session::{ClientInfo, RevokeReason};

use super::{Auth, Result, actions};

impl Auth {
    async fn send_token(&self, user: &User, purpose: TokenPurpose) -> Result<()> {
        let now = self.now();
        let token = SecretToken::generate(purpose.prefix());
        let record = OneTimeToken {
            token_hash: token.hash(),
            purpose,
            user_id: user.id,
            email: user.email.clone(),
            created_at: now,
            expires_at: now + purpose.lifetime(),
            used_at: None,
        };
        self.inner.store.insert_one_time_token(&record).await?;
        self.inner
            .mailer
            .send(Mail {
                to: user.email.clone(),
                purpose,
                token,
            })
            .await
            .map_err(Error::Mail)
    }

    /// Mails `user` a link to prove their address (valid 24 hours).
    pub async fn start_email_verification(&self, user: UserId) -> Result<()> {
        let user = self.inner.backend.get_user(user).await?;
        self.send_token(&user, TokenPurpose::EmailVerification)
            .await
    }

    /// Redeems an email-verification token and marks the address verified.
    /// [`Error::InvalidOneTimeToken`] if it is unknown, used or expired, or
    /// the user's address changed since it was sent.
    pub async fn finish_email_verification(&self, token: &str) -> Result<User> {
        let record = self.consume(token, TokenPurpose::EmailVerification).await?;
        let mut user = self.inner.backend.get_user(record.user_id).await?;
        if !user.email.same_address(&record.email) {
            return Err(Error::InvalidOneTimeToken);
        }
        user.email_verified = true;
        user.updated_at = self.now();
        self.inner.backend.update_user(&user).await?;
        Ok(user)
    }

    /// Mails a password-reset link (valid 1 hour) if `email` has an
    /// account. Answers the same either way, so it reveals nothing.
    pub async fn start_password_reset(&self, email: &str) -> Result<()> {
        let Ok(email) = Email::new(email) else {
            return Ok(());
        };
        match self.inner.backend.find_user_by_email(&email).await? {
            Some(user) if user.status == UserStatus::Active => {
                self.send_token(&user, TokenPurpose::PasswordReset).await
            }
            _ => Ok(()),
        }
    }

    /// Sets a new password with a reset token, ends every session of the
    /// user and clears their lockout, with an audit event in each of the
    /// user's tenants: one transaction, so a failure leaves the link usable
    /// and the old password in place. The password is checked before the
    /// token is spent, so a refused password leaves the link usable too.
    ///
    /// Errors: [`Error::InvalidOneTimeToken`], [`Error::WeakPassword`].
    pub async fn finish_password_reset(
        &self,
        token: &str,
        password: &Password,
        client: &ClientInfo,
    ) -> Result<()> {
        let parsed = SecretToken::parse(TokenPurpose::PasswordReset.prefix(), token)
            .ok_or(Error::InvalidOneTimeToken)?;
        let pending = self
            .inner
            .store
            .find_one_time_token(&parsed.hash())
            .await?
            .filter(|t| t.purpose == TokenPurpose::PasswordReset && t.used_at.is_none())
            .ok_or(Error::InvalidOneTimeToken)?;
        self.inner
            .config
            .password
            .check(password, Some(&pending.email))?;
        let hash = self.inner.hasher.hash(password).await?;
        let now = self.now();
        let tx = self.begin().await?;
        let record = tx
            .consume_one_time_token(&parsed.hash(), TokenPurpose::PasswordReset, now)
            .await?
            .ok_or(Error::InvalidOneTimeToken)?;
        tx.set_password_hash(record.user_id, &hash, now).await?;
        let ended = tx
            .revoke_user_sessions(record.user_id, None, RevokeReason::PasswordChanged, now)
            .await?;
        tx.clear_throttle(&ThrottleKey::account(&record.email))
            .await?;
        let context = Self::context(record.user_id, client);
        for tenant in Self::user_tenant_ids_in(tx.core(), record.user_id).await? {
            self.audit_in(
                tx.core(),
                tenant,
                &context,
                actions::PASSWORD_RESET,
                ("user", record.user_id.to_string()),
                json!({ "sessions_ended": ended.len() }),
            )
            .await?;
        }
        tx.commit().await?;
        self.revoke_many(ended)?;
        Ok(())
    }

    async fn consume(&self, token: &str, purpose: TokenPurpose) -> Result<OneTimeToken> {
        let parsed =
            SecretToken::parse(purpose.prefix(), token).ok_or(Error::InvalidOneTimeToken)?;
        self.inner
            .store
            .consume_one_time_token(&parsed.hash(), purpose, self.now())
            .await?
            .ok_or(Error::InvalidOneTimeToken)
    }
}
