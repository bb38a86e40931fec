//! Time as the stores see it.

use std::sync::Mutex;

use time::{Duration, OffsetDateTime};

/// Source of the current time, injectable so tests can move it.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> OffsetDateTime;
}

/// The system clock, in UTC.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that stands still until moved; for tests.
///
/// ```
/// use tenancy_core::{Clock, ManualClock};
/// let clock = ManualClock::new(time::macros::datetime!(2030-01-01 0:00 UTC));
/// clock.advance(time::Duration::days(8));
/// assert_eq!(clock.now(), time::macros::datetime!(2030-01-09 0:00 UTC));
/// ```
#[derive(Debug)]
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: OffsetDateTime) -> Self {
        Self(Mutex::new(start))
    }

    /// Moves the clock forward (or back, for a negative duration).
    pub fn advance(&self, by: Duration) {
        let mut now = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Drops sub-microsecond precision and converts to UTC, matching what
/// Postgres `timestamptz` keeps, so every backend returns equal values.
pub fn truncate_to_micros(at: OffsetDateTime) -> OffsetDateTime {
    let at = at.to_offset(time::UtcOffset::UTC);
    let nanos = at.nanosecond();
    at.replace_nanosecond(nanos - nanos % 1_000).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_micros_in_utc() {
        let at = time::macros::datetime!(2030-05-06 07:08:09.123_456_789 +02:00);
        let t = truncate_to_micros(at);
        assert_eq!(t, time::macros::datetime!(2030-05-06 05:08:09.123_456 UTC));
        assert_eq!(t.offset(), time::UtcOffset::UTC);
    }
}
