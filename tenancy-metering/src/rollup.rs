//! Rollups: the usage of one tenant × meter × window × kept dimensions,
//! combined so that windows merge in any order.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tenancy_core::TenantId;
use time::{Duration, OffsetDateTime, Time};

use crate::event::{Dimensions, Event};
use crate::meter::{Aggregation, MeterName};

/// The width of a rollup window. Windows start on UTC minute, hour and day
/// boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One UTC day.
    Day,
}

impl Granularity {
    /// Every granularity, finest first: each event lands in one window of
    /// each.
    pub const ALL: [Granularity; 3] = [Granularity::Minute, Granularity::Hour, Granularity::Day];

    /// The name used in storage, queries and exports.
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }

    /// The width of a window.
    pub fn width(self) -> Duration {
        match self {
            Granularity::Minute => Duration::MINUTE,
            Granularity::Hour => Duration::HOUR,
            Granularity::Day => Duration::DAY,
        }
    }

    /// The start of the window holding `at`, in UTC.
    pub fn floor(self, at: OffsetDateTime) -> OffsetDateTime {
        let at = at.to_offset(time::UtcOffset::UTC);
        let t = at.time();
        let time = match self {
            Granularity::Minute => Time::from_hms(t.hour(), t.minute(), 0),
            Granularity::Hour => Time::from_hms(t.hour(), 0, 0),
            Granularity::Day => Ok(Time::MIDNIGHT),
        };
        // from_hms cannot fail on parts of a valid time.
        at.replace_time(time.unwrap_or(Time::MIDNIGHT))
    }

    /// Parses `minute`, `hour` or `day`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == name)
    }
}

/// Events of one window combined: every figure an aggregation needs, so
/// windows merge in any order and any grouping (a merge is commutative
/// and associative).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aggregate {
    /// The sum of the values (saturating at the `i64` bounds).
    pub sum: i64,
    /// The number of events.
    pub count: i64,
    /// The largest value, if any event.
    pub max: Option<i64>,
    /// The latest event's timestamp and value (the largest value among
    /// events of one instant), if any event.
    pub latest: Option<(OffsetDateTime, i64)>,
    /// The distinct values, kept only for `unique_count` meters.
    pub members: BTreeSet<i64>,
}

impl Aggregate {
    /// Adds one event's `value` at `at`.
    pub fn add(&mut self, aggregation: Aggregation, value: i64, at: OffsetDateTime) {
        self.sum = self.sum.saturating_add(value);
        self.count = self.count.saturating_add(1);
        self.max = Some(self.max.map_or(value, |m| m.max(value)));
        if self.latest.is_none_or(|l| (at, value) > l) {
            self.latest = Some((at, value));
        }
        if aggregation == Aggregation::UniqueCount {
            self.members.insert(value);
        }
    }

    /// Adds everything `other` holds.
    pub fn merge(&mut self, other: &Aggregate) {
        self.sum = self.sum.saturating_add(other.sum);
        self.count = self.count.saturating_add(other.count);
        self.max = match (self.max, other.max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.latest = match (self.latest, other.latest) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.members.extend(other.members.iter().copied());
    }

    /// The figure `aggregation` reports (0 when no event).
    pub fn value(&self, aggregation: Aggregation) -> i64 {
        match aggregation {
            Aggregation::Sum => self.sum,
            Aggregation::Count => self.count,
            Aggregation::Max => self.max.unwrap_or(0),
            Aggregation::Latest => self.latest.map_or(0, |(_, v)| v),
            Aggregation::UniqueCount => i64::try_from(self.members.len()).unwrap_or(i64::MAX),
        }
    }
}

/// What identifies one rollup row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RollupKey {
    /// The meter.
    pub meter: MeterName,
    /// The window width.
    pub granularity: Granularity,
    /// The window start (UTC).
    pub bucket: OffsetDateTime,
    /// The kept dimensions.
    pub dimensions: Dimensions,
}

/// Usage to add to one tenant's rollups: the stores apply a batch of these
/// in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollup {
    /// Which row.
    pub key: RollupKey,
    /// The meter's aggregation (decides whether distinct values are kept).
    pub aggregation: Aggregation,
    /// What to add.
    pub aggregate: Aggregate,
}

/// Rollups of one tenant being assembled: adding an event adds it to one
/// window of each granularity; rows with one key are merged.
#[derive(Debug, Clone, Default)]
pub struct RollupBatch {
    rows: BTreeMap<RollupKey, (Aggregation, Aggregate)>,
}

impl RollupBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `event` to its minute, hour and day windows.
    pub fn add_event(&mut self, event: &Event) {
        let aggregation = event.meter().aggregation();
        let mut one = Aggregate::default();
        one.add(aggregation, event.value(), event.timestamp());
        self.add_minute(
            event.meter().name(),
            aggregation,
            event.timestamp(),
            event.dimensions(),
            &one,
        );
    }

    /// Adds `aggregate`, collected in the minute holding `at`, to its
    /// minute, hour and day windows.
    pub fn add_minute(
        &mut self,
        meter: &MeterName,
        aggregation: Aggregation,
        at: OffsetDateTime,
        dimensions: &Dimensions,
        aggregate: &Aggregate,
    ) {
        for granularity in Granularity::ALL {
            let key = RollupKey {
                meter: meter.clone(),
                granularity,
                bucket: granularity.floor(at),
                dimensions: dimensions.clone(),
            };
            self.rows
                .entry(key)
                .or_insert_with(|| (aggregation, Aggregate::default()))
                .1
                .merge(aggregate);
        }
    }

    /// Adds one row as it is (no other windows).
    pub fn add_exact(&mut self, rollup: &Rollup) {
        self.rows
            .entry(rollup.key.clone())
            .or_insert_with(|| (rollup.aggregation, Aggregate::default()))
            .1
            .merge(&rollup.aggregate);
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows, one per key.
    pub fn into_rollups(self) -> Vec<Rollup> {
        self.rows
            .into_iter()
            .map(|(key, (aggregation, aggregate))| Rollup {
                key,
                aggregation,
                aggregate,
            })
            .collect()
    }
}

/// The rollups of one tenant, keyed by tenant for batches spanning several.
pub type TenantRollups = BTreeMap<TenantId, RollupBatch>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use time::macros::datetime;

    #[test]
    fn windows_start_on_utc_boundaries() {
        let at = datetime!(2030-03-04 05:06:07.5 +02:00);
        assert_eq!(
            Granularity::Minute.floor(at),
            datetime!(2030-03-04 03:06 UTC)
        );
        assert_eq!(Granularity::Hour.floor(at), datetime!(2030-03-04 03:00 UTC));
        assert_eq!(Granularity::Day.floor(at), datetime!(2030-03-04 0:00 UTC));
        assert_eq!(Granularity::parse("hour"), Some(Granularity::Hour));
        assert_eq!(Granularity::parse("week"), None);
    }

    #[test]
    fn merging_is_order_free() {
        let t = datetime!(2030-01-01 0:00 UTC);
        let events = [
            (5, t),
            (-2, t + Duration::SECOND),
            (7, t),
            (3, t + Duration::SECOND),
        ];
        let mut forward = Aggregate::default();
        for (v, at) in events {
            forward.add(Aggregation::UniqueCount, v, at);
        }
        let mut backward = Aggregate::default();
        for (v, at) in events.iter().rev() {
            let mut one = Aggregate::default();
            one.add(Aggregation::UniqueCount, *v, *at);
            backward.merge(&one);
        }
        assert_eq!(forward, backward);
        assert_eq!(forward.value(Aggregation::Sum), 13);
        assert_eq!(forward.value(Aggregation::Count), 4);
        assert_eq!(forward.value(Aggregation::Max), 7);
        assert_eq!(forward.value(Aggregation::Latest), 3);
        assert_eq!(forward.value(Aggregation::UniqueCount), 4);
    }

    #[test]
    fn sums_saturate() {
        let mut a = Aggregate::default();
        a.add(Aggregation::Sum, i64::MAX, datetime!(2030-01-01 0:00 UTC));
        a.add(Aggregation::Sum, 1, datetime!(2030-01-01 0:00 UTC));
        assert_eq!(a.sum, i64::MAX);
    }
}
