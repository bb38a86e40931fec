//! How long a failed job waits before its next attempt.

use std::time::Duration;

/// Exponential backoff with full jitter: attempt `n` (1-based) waits a
/// uniformly random time between zero and `min(max, base · 2^(n-1))`, so
/// jobs that failed together (an outage) do not come back together.
/// Without jitter the wait is exactly that cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first attempt's cap.
    pub base: Duration,
    /// The largest wait.
    pub max: Duration,
    /// Whether to draw the wait at random below the cap.
    pub jitter: bool,
}

impl Default for Backoff {
    /// 1 s doubling up to 1 h, with jitter.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(3600),
            jitter: true,
        }
    }
}

impl Backoff {
    /// The cap for the wait after failed attempt `attempt` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(63);
        let factor = 1u64 << doublings;
        let base = u64::try_from(self.base.as_millis()).unwrap_or(u64::MAX);
        let millis = base.saturating_mul(factor);
        Duration::from_millis(millis).min(self.max)
    }

    /// The wait after failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        if !self.jitter {
            return ceiling;
        }
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        let mut bytes = [0u8; 8];
        rand::fill(&mut bytes);
        let draw = u64::from_le_bytes(bytes) % millis.saturating_add(1);
        Duration::from_millis(draw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_max() {
        let b = Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
            jitter: false,
        };
        assert_eq!(b.delay(1), Duration::from_secs(2));
        assert_eq!(b.delay(2), Duration::from_secs(4));
        assert_eq!(b.delay(5), Duration::from_secs(32));
        assert_eq!(b.delay(6), Duration::from_secs(60));
        assert_eq!(b.delay(200), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_below_the_ceiling_and_varies() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(3600),
            jitter: true,
        };
        let draws: Vec<Duration> = (0..200).map(|_| b.delay(10)).collect();
        assert!(draws.iter().all(|d| *d <= b.ceiling(10)));
        let first = draws[0];
        assert!(draws.iter().any(|d| *d != first), "jitter must vary");
    }
}
