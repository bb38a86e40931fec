//! Usage events: what happened, for which tenant, once.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tenancy_core::{TenantId, truncate_to_micros};
use time::{Duration, OffsetDateTime};

use crate::meter::{DimensionName, Meter, MeterName, Meters};

/// The longest idempotency key, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// The longest dimension value, in bytes.
pub const MAX_DIMENSION_VALUE_LEN: usize = 256;

/// Why an event was refused. Each variant is a fault of the caller's input:
/// sending the same event again will not help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// No meter of this name is declared.
    #[error("unknown meter {0:?}")]
    UnknownMeter(String),
    /// A negative value for a meter that refuses them.
    #[error("meter {meter} does not accept negative values, got {value}")]
    NegativeValue {
        /// The meter.
        meter: MeterName,
        /// The refused value.
        value: i64,
    },
    /// A timestamp older than the ingest window allows.
    #[error("event timestamp {timestamp} is older than the accepted {max_age}")]
    TooOld {
        /// The event's timestamp.
        timestamp: OffsetDateTime,
        /// How far back events are accepted.
        max_age: Duration,
    },
    /// A timestamp further ahead than the ingest window allows.
    #[error("event timestamp {timestamp} is more than {max_ahead} in the future")]
    InFuture {
        /// The event's timestamp.
        timestamp: OffsetDateTime,
        /// How far ahead events are accepted.
        max_ahead: Duration,
    },
    /// An idempotency key that is empty, longer than 255 bytes, or holds a
    /// control character.
    #[error("idempotency key must be 1 to 255 bytes without control characters")]
    InvalidKey,
    /// A dimension name that is not a valid name.
    #[error("invalid dimension name {0:?}")]
    InvalidDimension(String),
    /// A dimension value longer than [`MAX_DIMENSION_VALUE_LEN`] bytes.
    #[error("dimension {dimension} has a value of {len} bytes, at most 256 are allowed")]
    DimensionTooLong {
        /// The dimension.
        dimension: DimensionName,
        /// The value's length in bytes.
        len: usize,
    },
}

/// A caller-chosen key that makes an event count once: it is scoped to the
/// tenant, so two tenants may use the same key.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Checks and wraps `key`: 1 to 255 bytes, no control characters.
    pub fn new(key: &str) -> Result<Self, EventError> {
        if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
            return Err(EventError::InvalidKey);
        }
        Ok(Self(key.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({:?})", self.0)
    }
}

impl<'de> Deserialize<'de> for IdempotencyKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// The kept dimensions of an event, in name order.
pub type Dimensions = BTreeMap<DimensionName, String>;

/// An event as the caller reports it, before it is checked against its
/// meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The meter's name.
    pub meter: String,
    /// The value (ignored by `count` meters, which count events).
    pub value: i64,
    /// When the usage happened.
    pub timestamp: OffsetDateTime,
    /// What makes a retry of this event count once.
    pub key: IdempotencyKey,
    /// Dimensions; those the meter does not keep are dropped.
    pub dimensions: BTreeMap<String, String>,
}

impl NewEvent {
    /// An event without dimensions.
    pub fn new(meter: &str, value: i64, timestamp: OffsetDateTime, key: IdempotencyKey) -> Self {
        Self {
            meter: meter.to_owned(),
            value,
            timestamp,
            key,
            dimensions: BTreeMap::new(),
        }
    }

    /// Adds a dimension.
    pub fn dimension(mut self, name: &str, value: &str) -> Self {
        self.dimensions.insert(name.to_owned(), value.to_owned());
        self
    }
}

/// How far from now event timestamps may be. The defaults follow what
/// billing providers accept (Stripe: 35 days back, 5 minutes ahead), so an
/// accepted event can still be billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestWindow {
    /// How far back.
    pub max_age: Duration,
    /// How far ahead (clock skew between replicas and clients).
    pub max_ahead: Duration,
}

impl Default for IngestWindow {
    fn default() -> Self {
        Self {
            max_age: Duration::days(35),
            max_ahead: Duration::minutes(5),
        }
    }
}

/// Checks an event's meter, value and timestamp; answers the meter.
pub(crate) fn check<'m>(
    meters: &'m Meters,
    meter: &str,
    value: i64,
    timestamp: OffsetDateTime,
    now: OffsetDateTime,
    window: IngestWindow,
) -> Result<&'m Arc<Meter>, EventError> {
    let meter = meters
        .get(meter)
        .ok_or_else(|| EventError::UnknownMeter(meter.chars().take(128).collect()))?;
    if value < 0 && !meter.allows_negative() {
        return Err(EventError::NegativeValue {
            meter: meter.name().clone(),
            value,
        });
    }
    if timestamp < now - window.max_age {
        return Err(EventError::TooOld {
            timestamp,
            max_age: window.max_age,
        });
    }
    if timestamp > now + window.max_ahead {
        return Err(EventError::InFuture {
            timestamp,
            max_ahead: window.max_ahead,
        });
    }
    Ok(meter)
}

/// Checks dimensions and keeps those `meter` keeps.
pub(crate) fn keep_dimensions<'a, I>(meter: &Meter, dimensions: I) -> Result<Dimensions, EventError>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut kept = Dimensions::new();
    for (name, value) in dimensions {
        let name = DimensionName::new(name)
            .map_err(|_| EventError::InvalidDimension(name.chars().take(128).collect()))?;
        if value.len() > MAX_DIMENSION_VALUE_LEN {
            return Err(EventError::DimensionTooLong {
                dimension: name,
                len: value.len(),
            });
        }
        if meter.dimensions().contains(&name) {
            kept.insert(name, value.to_owned());
        }
    }
    Ok(kept)
}

/// An event checked against its meter: the stores take only these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    tenant_id: TenantId,
    meter: Arc<Meter>,
    value: i64,
    timestamp: OffsetDateTime,
    key: IdempotencyKey,
    dimensions: Dimensions,
}

impl Event {
    /// Checks `event` for `tenant_id` against `meters` at `now`: a known
    /// meter, a value it accepts, a timestamp inside `window` (kept to the
    /// microsecond, in UTC), valid dimensions (those the meter does not
    /// keep are dropped).
    pub fn validate(
        meters: &Meters,
        tenant_id: TenantId,
        event: NewEvent,
        now: OffsetDateTime,
        window: IngestWindow,
    ) -> Result<Self, EventError> {
        let meter = check(
            meters,
            &event.meter,
            event.value,
            event.timestamp,
            now,
            window,
        )?;
        let dimensions = keep_dimensions(
            meter,
            event
                .dimensions
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )?;
        Ok(Self {
            tenant_id,
            meter: Arc::clone(meter),
            value: event.value,
            timestamp: truncate_to_micros(event.timestamp),
            key: event.key,
            dimensions,
        })
    }

    /// The tenant.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    /// The meter.
    pub fn meter(&self) -> &Arc<Meter> {
        &self.meter
    }

    /// The value.
    pub fn value(&self) -> i64 {
        self.value
    }

    /// When the usage happened (microseconds, UTC).
    pub fn timestamp(&self) -> OffsetDateTime {
        self.timestamp
    }

    /// The idempotency key.
    pub fn key(&self) -> &IdempotencyKey {
        &self.key
    }

    /// The kept dimensions.
    pub fn dimensions(&self) -> &Dimensions {
        &self.dimensions
    }

    /// Whether `other` reports the same usage (a retry), apart from the
    /// key: same meter, value, timestamp and kept dimensions.
    pub fn same_usage(&self, other: &Event) -> bool {
        self.tenant_id == other.tenant_id
            && self.meter.name() == other.meter.name()
            && self.value == other.value
            && self.timestamp == other.timestamp
            && self.dimensions == other.dimensions
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::meter::Aggregation;
    use time::macros::datetime;

    fn meters() -> Meters {
        Meters::new([
            Meter::new(
                MeterName::new("calls").unwrap(),
                Aggregation::Count,
                "calls",
            )
            .unwrap()
            .keep([DimensionName::new("route").unwrap()])
            .unwrap(),
            Meter::new(MeterName::new("credit").unwrap(), Aggregation::Sum, "usd")
                .unwrap()
                .allow_negative(true),
        ])
        .unwrap()
    }

    const NOW: OffsetDateTime = datetime!(2030-01-10 12:00 UTC);

    fn check(event: NewEvent) -> Result<Event, EventError> {
        Event::validate(
            &meters(),
            TenantId::new(),
            event,
            NOW,
            IngestWindow::default(),
        )
    }

    fn key() -> IdempotencyKey {
        IdempotencyKey::new("k-1").unwrap()
    }

    #[test]
    fn keeps_only_declared_dimensions() {
        let e = check(
            NewEvent::new("calls", 1, NOW, key())
                .dimension("route", "/a")
                .dimension("ip", "1.2.3.4"),
        )
        .unwrap();
        assert_eq!(e.dimensions().len(), 1);
        assert_eq!(e.dimensions()[&DimensionName::new("route").unwrap()], "/a");
    }

    #[test]
    fn refuses_bad_events_with_typed_errors() {
        assert_eq!(
            check(NewEvent::new("nope", 1, NOW, key())),
            Err(EventError::UnknownMeter("nope".into()))
        );
        assert!(matches!(
            check(NewEvent::new("calls", -1, NOW, key())),
            Err(EventError::NegativeValue { value: -1, .. })
        ));
        assert!(check(NewEvent::new("credit", -5, NOW, key())).is_ok());
        assert!(matches!(
            check(NewEvent::new("calls", 1, NOW - Duration::days(36), key())),
            Err(EventError::TooOld { .. })
        ));
        assert!(matches!(
            check(NewEvent::new("calls", 1, NOW + Duration::minutes(6), key())),
            Err(EventError::InFuture { .. })
        ));
        assert!(matches!(
            check(NewEvent::new("calls", 1, NOW, key()).dimension("Bad Name", "x")),
            Err(EventError::InvalidDimension(_))
        ));
        assert!(matches!(
            check(NewEvent::new("calls", 1, NOW, key()).dimension("route", &"x".repeat(257))),
            Err(EventError::DimensionTooLong { len: 257, .. })
        ));
        for bad in ["", "a\nb", &"k".repeat(256)] {
            assert_eq!(IdempotencyKey::new(bad), Err(EventError::InvalidKey));
        }
    }

    #[test]
    fn timestamps_are_kept_to_the_microsecond_in_utc() {
        let at = datetime!(2030-01-10 13:00:00.123_456_789 +01:00);
        let e = check(NewEvent::new("calls", 1, at, key())).unwrap();
        assert_eq!(e.timestamp(), datetime!(2030-01-10 12:00:00.123_456 UTC));
    }
}
