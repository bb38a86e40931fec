//! Limits on account flows beyond failed logins: registrations and account
//! mail per client and address (counted in the [`LockoutStore`], so every
//! replica shares them), and per process the rate and concurrency of logins
//! per client and the queue of password hashes waiting for a CPU.
//!
//! [`LockoutStore`]: crate::LockoutStore

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use time::{Duration, OffsetDateTime};

use crate::lockout::ThrottleRule;

/// Limits on account flows: a setting of [`crate::AuthConfig`]. Start from
/// [`AbuseLimits::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AbuseLimits {
    /// Registrations from one client: the 10th within an hour is refused
    /// and blocks the client for an hour.
    pub registration: ThrottleRule,
    /// Reset or verification mail asked for one address (per purpose): the
    /// 5th within an hour is refused and blocks it for an hour.
    pub mail_per_address: ThrottleRule,
    /// Reset or verification mail asked by one client, for any address:
    /// the 20th within an hour is refused and blocks it for an hour.
    pub mail_per_client: ThrottleRule,
    /// After a link is mailed, how long further requests for the same
    /// address and purpose send nothing (default 5 minutes). Links already
    /// sent stay valid until they expire or one of them is used, so a
    /// request by someone else never spoils the link the owner holds.
    pub mail_cooldown: Duration,
    /// Logins (any outcome) one client may start per minute in this
    /// process, on average (default 60).
    pub logins_per_minute: u32,
    /// Logins one client may start at once above that average (default 20).
    pub login_burst: u32,
    /// Logins of one client in progress at once in this process (default 4).
    pub login_concurrency: u32,
    /// Password hashes allowed to wait for a CPU, beyond those running
    /// (default 64). Past it, work that needs a hash answers
    /// [`Error::Overloaded`](crate::Error::Overloaded) at once instead of
    /// queueing without end.
    pub hash_queue: usize,
    /// Password hashes run at once (default 0: one per CPU).
    pub hash_concurrency: usize,
    /// Account mail flows waiting or running in the background (default
    /// 1,024); past it, starting one answers
    /// [`Error::Overloaded`](crate::Error::Overloaded).
    pub mail_queue: usize,
}

impl Default for AbuseLimits {
    fn default() -> Self {
        let hourly = |max| ThrottleRule::new(max, Duration::hours(1), Duration::hours(1));
        Self {
            registration: hourly(10),
            mail_per_address: hourly(5),
            mail_per_client: hourly(20),
            mail_cooldown: Duration::minutes(5),
            logins_per_minute: 60,
            login_burst: 20,
            login_concurrency: 4,
            hash_queue: 64,
            hash_concurrency: 0,
            mail_queue: 1024,
        }
    }
}

impl AbuseLimits {
    /// Replaces the per-client registration rule.
    pub fn with_registration(mut self, rule: ThrottleRule) -> Self {
        self.registration = rule;
        self
    }

    /// Replaces the per-address mail rule.
    pub fn with_mail_per_address(mut self, rule: ThrottleRule) -> Self {
        self.mail_per_address = rule;
        self
    }

    /// Replaces the per-client mail rule.
    pub fn with_mail_per_client(mut self, rule: ThrottleRule) -> Self {
        self.mail_per_client = rule;
        self
    }

    /// Sets how long a mailed link stands before another is sent.
    pub fn with_mail_cooldown(mut self, cooldown: Duration) -> Self {
        self.mail_cooldown = cooldown;
        self
    }

    /// Sets the per-client login rate: `per_minute` on average, `burst`
    /// above it (both at least 1).
    pub fn with_login_rate(mut self, per_minute: u32, burst: u32) -> Self {
        self.logins_per_minute = per_minute.max(1);
        self.login_burst = burst.max(1);
        self
    }

    /// Sets how many logins of one client may run at once (at least 1).
    pub fn with_login_concurrency(mut self, concurrency: u32) -> Self {
        self.login_concurrency = concurrency.max(1);
        self
    }

    /// Sets how many password hashes may wait for a CPU, and how many run
    /// at once (0: one per CPU).
    pub fn with_hash_queue(mut self, queue: usize, concurrency: usize) -> Self {
        self.hash_queue = queue;
        self.hash_concurrency = concurrency;
        self
    }

    /// Sets how many account mail flows may wait or run in the background
    /// (at least 1).
    pub fn with_mail_queue(mut self, queue: usize) -> Self {
        self.mail_queue = queue.max(1);
        self
    }
}

/// Per-client login rate (a token bucket) and concurrency, in this
/// process. Clients are held in a bounded cache: under a flood of distinct
/// addresses the least recent ones are forgotten, which only ever lets
/// them start afresh.
pub(crate) struct LoginGate {
    per_second: f64,
    burst: f64,
    concurrency: u32,
    clients: quick_cache::sync::Cache<IpAddr, Arc<Mutex<Bucket>>>,
}

struct Bucket {
    tokens: f64,
    refilled: OffsetDateTime,
    in_flight: u32,
}

/// A login in progress; dropping it frees its concurrency slot.
pub(crate) struct LoginPermit(Option<Arc<Mutex<Bucket>>>);

impl Drop for LoginPermit {
    fn drop(&mut self) {
        if let Some(bucket) = &self.0 {
            let mut bucket = bucket.lock().unwrap_or_else(PoisonError::into_inner);
            bucket.in_flight = bucket.in_flight.saturating_sub(1);
        }
    }
}

impl LoginGate {
    /// Clients remembered at once.
    const CLIENTS: usize = 100_000;

    pub(crate) fn new(limits: &AbuseLimits) -> Self {
        Self {
            per_second: f64::from(limits.logins_per_minute.max(1)) / 60.0,
            burst: f64::from(limits.login_burst.max(1)),
            concurrency: limits.login_concurrency.max(1),
            clients: quick_cache::sync::Cache::new(Self::CLIENTS),
        }
    }

    /// Admits one login of `client` at `now`, or says when to retry. A
    /// request without a client address is not limited here.
    pub(crate) fn admit(
        &self,
        client: Option<IpAddr>,
        now: OffsetDateTime,
    ) -> Result<LoginPermit, OffsetDateTime> {
        let Some(client) = client else {
            return Ok(LoginPermit(None));
        };
        let bucket = self
            .clients
            .get_or_insert_with(&client, || {
                Ok::<_, std::convert::Infallible>(Arc::new(Mutex::new(Bucket {
                    tokens: self.burst,
                    refilled: now,
                    in_flight: 0,
                })))
            })
            .unwrap_or_else(|never| match never {});
        {
            let mut state = bucket.lock().unwrap_or_else(PoisonError::into_inner);
            let elapsed = (now - state.refilled).as_seconds_f64().max(0.0);
            state.tokens = (state.tokens + elapsed * self.per_second).min(self.burst);
            state.refilled = now;
            if state.in_flight >= self.concurrency {
                return Err(now + Duration::SECOND);
            }
            if state.tokens < 1.0 {
                let wait = (1.0 - state.tokens) / self.per_second;
                return Err(now + Duration::seconds_f64(wait.max(0.001)));
            }
            state.tokens -= 1.0;
            state.in_flight += 1;
        }
        Ok(LoginPermit(Some(bucket)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_admits_a_burst_then_the_rate_and_caps_concurrency() {
        let limits = AbuseLimits::default()
            .with_login_rate(60, 3)
            .with_login_concurrency(2);
        let gate = LoginGate::new(&limits);
        let t0 = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let first = gate.admit(Some(ip), t0).unwrap();
        let second = gate.admit(Some(ip), t0).unwrap();
        // Two in flight: a third waits for one to finish.
        assert_eq!(gate.admit(Some(ip), t0).err(), Some(t0 + Duration::SECOND));
        drop(first);
        let third = gate.admit(Some(ip), t0).unwrap();
        drop((second, third));
        // The burst of 3 is spent: the next token comes in a second.
        assert_eq!(gate.admit(Some(ip), t0).err(), Some(t0 + Duration::SECOND));
        assert!(gate.admit(Some(ip), t0 + Duration::SECOND).is_ok());
        // Other clients, and requests without an address, are not affected.
        assert!(gate.admit(Some("203.0.113.8".parse().unwrap()), t0).is_ok());
        assert!(gate.admit(None, t0).is_ok());
    }
}
