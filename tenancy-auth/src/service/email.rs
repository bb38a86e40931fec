//! Email verification and password reset.

use std::sync::Arc;

use serde_json::json;
use tenancy_core::{Email, User, UserId, UserStatus, UserStore};
use time::Duration;

use crate::error::Error;
use crate::lockout::ThrottleKey;
use crate::one_time::{Mail, OneTimeToken, TokenPurpose};
use crate::password::Password;
use crate::secret::SecretToken;
use crate::session::{ClientInfo, RevokeReason};

use super::{Auth, Result, actions};

/// Account mail to prepare and send in the background.
enum MailJob {
    /// A reset link for the account of this address, if it has one.
    Reset(Email),
    /// A verification link for this user.
    Verify(User),
}

impl Auth {
    /// Issues a token for `user` unless one was issued within the cooldown
    /// (the link already sent stands), and mails it.
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
        let cooldown_since = now - self.inner.config.limits.mail_cooldown;
        if !self
            .inner
            .store
            .insert_one_time_token(&record, cooldown_since)
            .await?
        {
            return Ok(());
        }
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

    /// Counts a mail request against the client and the address; past
    /// either limit, [`Error::RateLimited`](crate::Error::RateLimited).
    async fn count_mail_request(
        &self,
        purpose: TokenPurpose,
        email: Option<&Email>,
        client: &ClientInfo,
    ) -> Result<()> {
        let limits = &self.inner.config.limits;
        if let Some(ip) = client.ip {
            self.count_attempt(
                &ThrottleKey::mail_from(&ip.to_string()),
                &limits.mail_per_client,
            )
            .await?;
        }
        if let Some(email) = email {
            self.count_attempt(
                &ThrottleKey::mail_to(purpose.as_str(), email),
                &limits.mail_per_address,
            )
            .await?;
        }
        Ok(())
    }

    /// Runs `job` in the background, so the caller's answer never waits for
    /// (or reveals) the lookup, the token or the mailer. A full queue
    /// answers [`Error::Overloaded`](crate::Error::Overloaded).
    fn queue_mail(&self, job: MailJob) -> Result<()> {
        let permit = Arc::clone(&self.inner.mail_queue)
            .try_acquire_owned()
            .map_err(|_| Error::Overloaded {
                until: self.now() + Duration::SECOND,
            })?;
        let auth = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let purpose = match &job {
                MailJob::Reset(_) => TokenPurpose::PasswordReset,
                MailJob::Verify(_) => TokenPurpose::EmailVerification,
            };
            if let Err(error) = auth.run_mail(job).await {
                tracing::warn!(purpose = purpose.as_str(), %error, "account mail failed");
            }
        });
        Ok(())
    }

    async fn run_mail(&self, job: MailJob) -> Result<()> {
        match job {
            MailJob::Reset(email) => match self.inner.backend.find_user_by_email(&email).await? {
                Some(user) if user.status == UserStatus::Active => {
                    self.send_token(&user, TokenPurpose::PasswordReset).await
                }
                _ => Ok(()),
            },
            MailJob::Verify(user) => {
                self.send_token(&user, TokenPurpose::EmailVerification)
                    .await
            }
        }
    }

    /// Waits until every account mail flow started so far has finished:
    /// for graceful shutdown, and for tests.
    pub async fn wait_for_mail(&self) {
        let queue = &self.inner.mail_queue;
        if let Ok(permits) = queue.acquire_many(self.inner.mail_capacity).await {
            drop(permits);
        }
    }

    /// Mails `user` a link to prove their address (valid 24 hours), in the
    /// background (see [`Auth::start_password_reset`] for the limits and
    /// the cooldown, which apply alike).
    ///
    /// Errors: [`Error::RateLimited`](crate::Error::RateLimited), [`Error::Overloaded`](crate::Error::Overloaded),
    /// [`Error::Store`](crate::Error::Store) with `NotFound(User)`.
    pub async fn start_email_verification(&self, user: UserId, client: &ClientInfo) -> Result<()> {
        let user = self.inner.backend.get_user(user).await?;
        self.count_mail_request(TokenPurpose::EmailVerification, Some(&user.email), client)
            .await?;
        self.queue_mail(MailJob::Verify(user))
    }

    /// Redeems an email-verification token and marks the address verified.
    /// [`Error::InvalidOneTimeToken`](crate::Error::InvalidOneTimeToken) if it is unknown, used or expired, or
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
    /// active account. Answers at once and alike either way: the lookup,
    /// the token and the mail run in the background, so neither the answer
    /// nor its timing reveals whether the account exists.
    ///
    /// Each request counts against the client and the address
    /// ([`AbuseLimits`](crate::AbuseLimits)); past either limit the answer
    /// is [`Error::RateLimited`](crate::Error::RateLimited) with the time to retry, whether or not the
    /// address has an account. Within the cooldown after a link is sent,
    /// requests send nothing more, and a new link never ends the earlier
    /// ones: a request by someone else cannot spoil the link the owner
    /// holds. [`Error::Overloaded`](crate::Error::Overloaded) when the background queue is full.
    pub async fn start_password_reset(&self, email: &str, client: &ClientInfo) -> Result<()> {
        let email = Email::new(email).ok();
        self.count_mail_request(TokenPurpose::PasswordReset, email.as_ref(), client)
            .await?;
        match email {
            Some(email) => self.queue_mail(MailJob::Reset(email)),
            None => Ok(()),
        }
    }

    /// Sets a new password with a reset token, ends every session of the
    /// user and clears their lockout, with an audit event in each of the
    /// user's tenants: one transaction, so a failure leaves the link usable
    /// and the old password in place. The password is checked before the
    /// token is spent, so a refused password leaves the link usable too.
    ///
    /// Errors: [`Error::InvalidOneTimeToken`](crate::Error::InvalidOneTimeToken), [`Error::WeakPassword`](crate::Error::WeakPassword).
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
        let hash = self.hash_password(password).await?;
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
