//! Login sessions and their refresh-token families.

use std::net::IpAddr;

use serde::Serialize;
use tenancy_core::{SessionId, TenantId, TokenHash, UserId};
use time::{Duration, OffsetDateTime};

use crate::secret::SecretToken;

/// Where a request came from, recorded on sessions and audit events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// A client at `ip` (also the key failed logins are counted under).
    pub fn from_ip(ip: IpAddr) -> Self {
        Self {
            ip: Some(ip),
            user_agent: None,
        }
    }

    /// Adds the user agent, cut to 512 characters without control characters.
    pub fn with_user_agent(mut self, user_agent: &str) -> Self {
        self.user_agent = tenancy_core::AuditContext::system()
            .with_user_agent(user_agent)
            .user_agent;
        self
    }
}

/// Session lifetimes and limits. Start from [`SessionConfig::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionConfig {
    /// A session unused this long ends (default 14 days); each refresh extends it.
    pub idle_timeout: Duration,
    /// A session ends this long after login whatever its use (default 30 days).
    pub absolute_timeout: Duration,
    /// Most live sessions per user; logging in beyond it ends the oldest (default 20).
    pub max_per_user: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::days(14),
            absolute_timeout: Duration::days(30),
            max_per_user: 20,
        }
    }
}

impl SessionConfig {
    /// Sets how long an unused session lives.
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// Sets how long a session lives at most.
    pub fn with_absolute_timeout(mut self, absolute_timeout: Duration) -> Self {
        self.absolute_timeout = absolute_timeout;
        self
    }

    /// Sets the most live sessions per user (at least 1).
    pub fn with_max_per_user(mut self, max_per_user: u32) -> Self {
        self.max_per_user = max_per_user.max(1);
        self
    }
}

/// Why a session ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RevokeReason {
    /// The user logged out.
    Logout,
    /// The user or an administrator ended it.
    Revoked,
    /// A rotated refresh token was presented again: the family may be stolen.
    RefreshTokenReuse,
    /// More sessions than allowed; this was the oldest.
    Evicted,
    /// The user left the tenant or lost access to it.
    MembershipEnded,
    /// The tenant was suspended or deleted.
    TenantInactive,
    /// The password changed.
    PasswordChanged,
}

impl RevokeReason {
    /// The snake_case name used in storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Logout => "logout",
            RevokeReason::Revoked => "revoked",
            RevokeReason::RefreshTokenReuse => "refresh_token_reuse",
            RevokeReason::Evicted => "evicted",
            RevokeReason::MembershipEnded => "membership_ended",
            RevokeReason::TenantInactive => "tenant_inactive",
            RevokeReason::PasswordChanged => "password_changed",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            RevokeReason::Logout,
            RevokeReason::Revoked,
            RevokeReason::RefreshTokenReuse,
            RevokeReason::Evicted,
            RevokeReason::MembershipEnded,
            RevokeReason::TenantInactive,
            RevokeReason::PasswordChanged,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == text)
    }
}

/// A login session: one user in one tenant, on one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    /// Its id, the access token's `sid`.
    pub id: SessionId,
    /// Who is logged in.
    pub user_id: UserId,
    /// The tenant the session acts in.
    pub tenant_id: TenantId,
    /// The client's user agent at login.
    pub user_agent: Option<String>,
    /// The client's address at login.
    pub ip: Option<IpAddr>,
    /// When it began: when the user authenticated, kept by a session that
    /// continues another (a tenant switch).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was last refreshed.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
    /// It ends if not refreshed before this.
    #[serde(with = "time::serde::rfc3339")]
    pub idle_expires_at: OffsetDateTime,
    /// It ends at this instant whatever its use.
    #[serde(with = "time::serde::rfc3339")]
    pub absolute_expires_at: OffsetDateTime,
    /// When it was revoked, if it was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Why it was revoked.
    pub revoke_reason: Option<RevokeReason>,
}

impl Session {
    /// Whether the session can still be used at `now`.
    pub fn is_live_at(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && now < self.idle_expires_at && now < self.absolute_expires_at
    }
}

/// A refresh token as stored: only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    /// SHA-256 of the token.
    pub token_hash: TokenHash,
    /// The session (and family) it belongs to.
    pub session_id: SessionId,
    /// When it was issued.
    pub issued_at: OffsetDateTime,
}

/// The session a refresh token belongs to, and whether the token was
/// already spent (presenting a spent token is a sign of theft).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenOwner {
    /// The family's session.
    pub session: Session,
    /// Whether the token was already traded for its successor.
    pub spent: bool,
}

/// The outcome of presenting a refresh token to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The token was live: it is now spent, the next one is stored, and the
    /// session's idle expiry moved forward.
    Rotated(Session),
    /// The token had already been spent: the whole family and its session
    /// are now revoked.
    Reused(Session),
    /// The session is revoked or expired.
    Inactive(Session),
    /// No such token.
    Unknown,
}

/// A refresh token: opaque, 256 random bits, single use. Shown once.
pub type RefreshToken = SecretToken;

pub(crate) const REFRESH_PREFIX: &str = "rt_";

/// The prefix of refresh tokens held by OAuth clients of the SDK's
/// authorization server: the SDK's own refresh route refuses them.
pub(crate) const OAUTH_REFRESH_PREFIX: &str = "ort_";

/// A revoked session, as replicas learn of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    /// The session.
    pub session_id: SessionId,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
    /// When it would have expired anyway; the revocation can be forgotten after.
    pub expires_at: OffsetDateTime,
}

/// What [`SessionStore::purge_expired`](crate::SessionStore::purge_expired) deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionPurge {
    /// Ended sessions.
    pub sessions: u64,
    /// Refresh tokens: those of the ended sessions, and spent ones.
    pub refresh_tokens: u64,
}

impl SessionPurge {
    /// Counts of `sessions` and `refresh_tokens`.
    pub fn new(sessions: u64, refresh_tokens: u64) -> Self {
        Self {
            sessions,
            refresh_tokens,
        }
    }
}

/// How long ended records are kept before
/// [`Auth::purge_expired`](crate::Auth::purge_expired) deletes them.
/// Start from [`Retention::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Ended sessions (revoked, idle, past their absolute expiry) and
    /// their refresh tokens, after they ended (default 7 days, and never
    /// less than an access token's lifetime and leeway).
    pub ended_sessions: Duration,
    /// Spent refresh tokens of live sessions, after they were spent, so a
    /// replay is still caught as reuse (default 14 days).
    pub spent_refresh_tokens: Duration,
    /// Throttle counters, after their window and lock ended (default 1
    /// day, and never less than the longest rule's window).
    pub throttles: Duration,
    /// Used or expired one-time tokens (default 1 day).
    pub one_time_tokens: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            ended_sessions: Duration::days(7),
            spent_refresh_tokens: Duration::days(14),
            throttles: Duration::days(1),
            one_time_tokens: Duration::days(1),
        }
    }
}

impl Retention {
    /// Sets how long ended sessions are kept.
    pub fn with_ended_sessions(mut self, keep: Duration) -> Self {
        self.ended_sessions = keep;
        self
    }

    /// Sets how long spent refresh tokens are kept.
    pub fn with_spent_refresh_tokens(mut self, keep: Duration) -> Self {
        self.spent_refresh_tokens = keep;
        self
    }

    /// Sets how long ended throttle counters are kept.
    pub fn with_throttles(mut self, keep: Duration) -> Self {
        self.throttles = keep;
        self
    }

    /// Sets how long used or expired one-time tokens are kept.
    pub fn with_one_time_tokens(mut self, keep: Duration) -> Self {
        self.one_time_tokens = keep;
        self
    }
}
