//! Failed-login counting, account lockout and client throttling; the same
//! counters limit registrations and account mail (see [`crate::AbuseLimits`]).

use std::fmt;

use tenancy_core::Email;
use time::{Duration, OffsetDateTime};

/// What failed logins (and other limited attempts) are counted against.
///
/// Accounts are keyed by normalized email, not user id, so an address with
/// no account locks exactly like one with an account: lockout reveals
/// nothing about which addresses exist. Each kind of attempt has its own
/// prefix, so one kind never uses up another's allowance.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ThrottleKey(String);

impl ThrottleKey {
    /// The account behind `email`.
    pub fn account(email: &Email) -> Self {
        Self(format!("account:{}", email.unique_key()))
    }

    /// A client, identified by the host (usually its IP address).
    pub fn client(identifier: &str) -> Self {
        Self(format!("client:{identifier}"))
    }

    /// Registrations from a client.
    pub fn registrations(client: &str) -> Self {
        Self(format!("register:{client}"))
    }

    /// Account mail (`purpose` is `password_reset` or
    /// `email_verification`) asked for the address `email`.
    pub fn mail_to(purpose: &str, email: &Email) -> Self {
        Self(format!("mail:{purpose}:{}", email.unique_key()))
    }

    /// Account mail asked by a client.
    pub fn mail_from(client: &str) -> Self {
        Self(format!("mail-client:{client}"))
    }

    /// The stored key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Rebuilds a key read from storage.
    pub fn from_stored(key: String) -> Self {
        Self(key)
    }
}

impl fmt::Debug for ThrottleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ThrottleKey({})", self.0)
    }
}

/// How many failures (or attempts) within a window lock a key, and for how
/// long. The attempt that reaches `max_failures` is itself refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ThrottleRule {
    /// Failures that trigger the lock.
    pub max_failures: u32,
    /// The window failures are counted in.
    pub window: Duration,
    /// How long the lock lasts.
    pub lock_for: Duration,
}

impl ThrottleRule {
    /// `max_failures` (at least 1) within `window` lock the key for `lock_for`.
    pub fn new(max_failures: u32, window: Duration, lock_for: Duration) -> Self {
        Self {
            max_failures: max_failures.max(1),
            window,
            lock_for,
        }
    }
}

/// Lockout settings: one rule per account, one per client. Start from
/// [`LockoutPolicy::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockoutPolicy {
    /// Per account: 5 failures in 15 minutes lock it for 15 minutes.
    pub account: ThrottleRule,
    /// Per client: 20 failures in 15 minutes block it for 15 minutes
    /// (higher than per account, as many users may share an address).
    pub client: ThrottleRule,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            account: ThrottleRule::new(5, Duration::minutes(15), Duration::minutes(15)),
            client: ThrottleRule::new(20, Duration::minutes(15), Duration::minutes(15)),
        }
    }
}

impl LockoutPolicy {
    /// Replaces the per-account rule.
    pub fn with_account(mut self, rule: ThrottleRule) -> Self {
        self.account = rule;
        self
    }

    /// Replaces the per-client rule.
    pub fn with_client(mut self, rule: ThrottleRule) -> Self {
        self.client = rule;
        self
    }
}

/// The counter of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleState {
    /// Failures in the current window.
    pub failures: u32,
    /// When the current window began.
    pub window_started: OffsetDateTime,
    /// Until when the key is locked, if it was locked.
    pub locked_until: Option<OffsetDateTime>,
}

impl ThrottleState {
    /// Until when the key is locked at `now`, if it is.
    pub fn locked_at(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.locked_until.filter(|until| *until > now)
    }

    /// The state after one more failure at `now`: a new window if the old
    /// one ended, and a lock once `rule.max_failures` is reached (the
    /// count then starts again). Failures while locked change nothing.
    /// Every store applies this same rule, atomically.
    pub fn after_failure(previous: Option<Self>, rule: &ThrottleRule, now: OffsetDateTime) -> Self {
        if let Some(state) = previous.filter(|s| s.locked_at(now).is_some()) {
            return state;
        }
        let mut state = match previous {
            Some(state) if state.window_started + rule.window > now => state,
            _ => ThrottleState {
                failures: 0,
                window_started: now,
                locked_until: None,
            },
        };
        state.failures = state.failures.saturating_add(1);
        if state.failures >= rule.max_failures {
            state.failures = 0;
            state.window_started = now;
            state.locked_until = Some(now + rule.lock_for);
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_lock_and_the_lock_expires() {
        let rule = LockoutPolicy::default().account;
        let t0 = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let mut state = None;
        for i in 1..=4 {
            let next = ThrottleState::after_failure(state, &rule, t0 + Duration::seconds(i));
            assert_eq!(next.failures, i as u32);
            assert_eq!(next.locked_at(t0), None);
            state = Some(next);
        }
        let locked = ThrottleState::after_failure(state, &rule, t0 + Duration::seconds(5));
        let until = t0 + Duration::seconds(5) + Duration::minutes(15);
        assert_eq!(locked.locked_until, Some(until));
        // More failures while locked do not extend the lock.
        let again = ThrottleState::after_failure(Some(locked), &rule, t0 + Duration::minutes(1));
        assert_eq!(again, locked);
        assert_eq!(locked.locked_at(until), None);
        let after = ThrottleState::after_failure(Some(locked), &rule, until + Duration::seconds(1));
        assert_eq!((after.failures, after.locked_at(until)), (1, None));
    }

    #[test]
    fn failures_outside_the_window_start_over() {
        let rule = LockoutPolicy::default().account;
        let t0 = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let first = ThrottleState::after_failure(None, &rule, t0);
        let second = ThrottleState::after_failure(Some(first), &rule, t0 + Duration::minutes(16));
        assert_eq!(second.failures, 1);
        assert_eq!(second.window_started, t0 + Duration::minutes(16));
    }

    #[test]
    fn account_keys_ignore_case() {
        let a = ThrottleKey::account(&Email::new("Ann@X.io").unwrap());
        let b = ThrottleKey::account(&Email::new("ann@x.io").unwrap());
        assert_eq!(a, b);
        assert_eq!(
            ThrottleKey::client("203.0.113.9").as_str(),
            "client:203.0.113.9"
        );
    }
}
