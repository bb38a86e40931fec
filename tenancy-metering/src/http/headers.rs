//! The `RateLimit-Policy` and `RateLimit` fields of the IETF httpapi
//! draft "RateLimit header fields for HTTP",
//! draft-ietf-httpapi-ratelimit-headers-09 (March 2025): each field is a
//! structured-field List (RFC 9651) of Items whose value is the policy
//! name as an sf-string, with parameters `q` (quota) and `w` (window,
//! seconds) on a policy, `r` (remaining) and `t` (seconds until the quota
//! resets) on a state. The quota unit (`qu`) is the default, `requests`,
//! and no partition key (`pk`) is sent: the key may be the client's
//! address, which the answer need not repeat.

use std::fmt::Write as _;
use std::time::Duration;

/// One policy and its current state, for both fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PolicyState {
    /// The policy's name (checked: lowercase letters, digits, `_`, `-`,
    /// `.`, `:`, so no escaping is needed inside the sf-string).
    pub(crate) name: String,
    /// The quota: requests (or units) per window.
    pub(crate) quota: u64,
    /// The window, in seconds (at least 1).
    pub(crate) window: u64,
    /// What remains.
    pub(crate) remaining: u64,
    /// Seconds until the quota is whole again.
    pub(crate) reset: u64,
}

/// Whole seconds, rounded up: a client waiting that long is not early.
pub(crate) fn ceil_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// Whether `name` may name a policy.
pub(crate) fn valid_policy_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.' | b':')
        })
}

/// `RateLimit-Policy: "name";q=100;w=60, …`
pub(crate) fn policy_field(states: &[PolicyState]) -> String {
    let mut out = String::new();
    for (i, s) in states.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "\"{}\";q={};w={}", s.name, s.quota, s.window.max(1));
    }
    out
}

/// `RateLimit: "name";r=50;t=30, …`
pub(crate) fn state_field(states: &[PolicyState]) -> String {
    let mut out = String::new();
    for (i, s) in states.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "\"{}\";r={};t={}", s.name, s.remaining, s.reset);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_structured_lists() {
        let states = [
            PolicyState {
                name: "per-key".into(),
                quota: 100,
                window: 60,
                remaining: 99,
                reset: 1,
            },
            PolicyState {
                name: "quota:api_calls".into(),
                quota: 1000,
                window: 0,
                remaining: 0,
                reset: 30,
            },
        ];
        assert_eq!(
            policy_field(&states),
            "\"per-key\";q=100;w=60, \"quota:api_calls\";q=1000;w=1"
        );
        assert_eq!(
            state_field(&states),
            "\"per-key\";r=99;t=1, \"quota:api_calls\";r=0;t=30"
        );
        assert!(valid_policy_name("quota:api_calls"));
        assert!(!valid_policy_name("Per Key"));
        assert!(!valid_policy_name("a\"b"));
        assert_eq!(ceil_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(ceil_seconds(Duration::from_secs(3)), 3);
    }
}
