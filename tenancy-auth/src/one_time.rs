//! Single-use tokens for email verification and password reset, and the
//! [`Mailer`] that delivers them.

use std::fmt;

use async_trait::async_trait;
use tenancy_core::{BoxError, Email, TokenHash, UserId};
use time::{Duration, OffsetDateTime};

use crate::secret::SecretToken;

/// What a one-time token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenPurpose {
    /// Proves the user receives mail at their address. Valid 24 hours.
    EmailVerification,
    /// Lets the user set a new password. Valid 1 hour.
    PasswordReset,
}

impl TokenPurpose {
    /// The snake_case name used in storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            TokenPurpose::EmailVerification => "email_verification",
            TokenPurpose::PasswordReset => "password_reset",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "email_verification" => Some(TokenPurpose::EmailVerification),
            "password_reset" => Some(TokenPurpose::PasswordReset),
            _ => None,
        }
    }

    /// How long a token of this purpose stays valid.
    pub const fn lifetime(self) -> Duration {
        match self {
            TokenPurpose::EmailVerification => Duration::hours(24),
            TokenPurpose::PasswordReset => Duration::hours(1),
        }
    }

    pub(crate) const fn prefix(self) -> &'static str {
        match self {
            TokenPurpose::EmailVerification => "ev_",
            TokenPurpose::PasswordReset => "pr_",
        }
    }
}

/// A one-time token as stored: only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeToken {
    /// SHA-256 of the token.
    pub token_hash: TokenHash,
    /// What it is for.
    pub purpose: TokenPurpose,
    /// Whose it is.
    pub user_id: UserId,
    /// The address it was sent to.
    pub email: Email,
    /// When it was issued.
    pub created_at: OffsetDateTime,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
    /// When it was used, if it was.
    pub used_at: Option<OffsetDateTime>,
}

/// A message for the host to deliver.
#[derive(Clone)]
pub struct Mail {
    /// The recipient.
    pub to: Email,
    /// Why it is sent.
    pub purpose: TokenPurpose,
    /// The secret to put in the link. Never log it.
    pub token: SecretToken,
}

impl fmt::Debug for Mail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mail")
            .field("to", &self.to)
            .field("purpose", &self.purpose)
            .field("token", &self.token)
            .finish()
    }
}

/// Delivers verification and reset mail. The host implements it with its
/// mail provider; the link it builds carries [`Mail::token`].
#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    /// Sends `mail`.
    async fn send(&self, mail: Mail) -> Result<(), BoxError>;
}

/// A mailer that sends nothing; for apps without email flows.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMailer;

#[async_trait]
impl Mailer for NoMailer {
    async fn send(&self, _mail: Mail) -> Result<(), BoxError> {
        Ok(())
    }
}
