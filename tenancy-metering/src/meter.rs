//! Meters: what the host counts, and how events of one meter combine.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The longest meter or dimension name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// The most dimensions a meter keeps: each kept dimension multiplies the
/// rollup rows of a tenant, so the set stays small.
pub const MAX_KEPT_DIMENSIONS: usize = 8;

/// Why a meter could not be declared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeterError {
    /// A meter or dimension name that is empty, too long, or holds a
    /// character other than `a-z`, `0-9`, `_`, `-` and `.`.
    #[error("invalid name {name:?}: use 1 to 64 of a-z, 0-9, '_', '-', '.'")]
    InvalidName {
        /// The refused name.
        name: String,
    },
    /// A unit label that is empty or longer than 32 bytes.
    #[error("invalid unit {unit:?}: use 1 to 32 bytes")]
    InvalidUnit {
        /// The refused unit.
        unit: String,
    },
    /// More kept dimensions than [`MAX_KEPT_DIMENSIONS`].
    #[error("meter {meter} keeps {count} dimensions, at most {MAX_KEPT_DIMENSIONS} are allowed")]
    TooManyDimensions {
        /// The meter.
        meter: MeterName,
        /// How many it asked for.
        count: usize,
    },
    /// Two meters with one name in a catalog.
    #[error("meter {0} is declared twice")]
    Duplicate(MeterName),
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.'))
}

macro_rules! name_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl $name {
            /// Checks and wraps `name`: 1 to 64 bytes of `a-z`, `0-9`, `_`,
            /// `-` and `.`.
            pub fn new(name: &str) -> Result<Self, MeterError> {
                if valid_name(name) {
                    Ok(Self(Arc::from(name)))
                } else {
                    Err(MeterError::InvalidName {
                        name: name.chars().take(MAX_NAME_LEN * 2).collect(),
                    })
                }
            }

            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), &*self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = MeterError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// The name of a meter, such as `api_calls` or `tokens.input`.
    MeterName
);
name_type!(
    /// The name of an event dimension, such as `route` or `model`.
    DimensionName
);

/// How the events of a meter combine into one figure per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Aggregation {
    /// The sum of the values (tokens, bytes).
    Sum,
    /// The number of events, whatever their values (API calls).
    Count,
    /// The largest value (peak seats, peak storage).
    Max,
    /// The number of distinct values: the value is the identifier to count
    /// (for example a user's number for monthly active users).
    UniqueCount,
    /// The value of the latest event by timestamp (a gauge such as storage
    /// in use); among events of one instant, the largest value.
    Latest,
}

impl Aggregation {
    /// The name used in storage and exports.
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::Sum => "sum",
            Aggregation::Count => "count",
            Aggregation::Max => "max",
            Aggregation::UniqueCount => "unique_count",
            Aggregation::Latest => "latest",
        }
    }
}

/// A meter declared by the host: its name, how events combine, the unit
/// shown to customers, and which event dimensions its rollups keep (others
/// are dropped at ingest, so a chatty client cannot grow the rollups).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meter {
    name: MeterName,
    aggregation: Aggregation,
    unit: String,
    dimensions: BTreeSet<DimensionName>,
    allow_negative: bool,
}

impl Meter {
    /// A meter with no kept dimensions that refuses negative values.
    pub fn new(name: MeterName, aggregation: Aggregation, unit: &str) -> Result<Self, MeterError> {
        if unit.is_empty() || unit.len() > 32 {
            return Err(MeterError::InvalidUnit {
                unit: unit.chars().take(64).collect(),
            });
        }
        Ok(Self {
            name,
            aggregation,
            unit: unit.to_owned(),
            dimensions: BTreeSet::new(),
            allow_negative: false,
        })
    }

    /// Keeps `dimensions` in the rollups, so usage can be grouped by them.
    pub fn keep<I>(mut self, dimensions: I) -> Result<Self, MeterError>
    where
        I: IntoIterator<Item = DimensionName>,
    {
        self.dimensions.extend(dimensions);
        if self.dimensions.len() > MAX_KEPT_DIMENSIONS {
            return Err(MeterError::TooManyDimensions {
                meter: self.name.clone(),
                count: self.dimensions.len(),
            });
        }
        Ok(self)
    }

    /// Accepts negative values (credits, corrections of a sum). Off by
    /// default: a negative API call count is a bug in the caller.
    pub fn allow_negative(mut self, allow: bool) -> Self {
        self.allow_negative = allow;
        self
    }

    /// The name.
    pub fn name(&self) -> &MeterName {
        &self.name
    }

    /// How events combine.
    pub fn aggregation(&self) -> Aggregation {
        self.aggregation
    }

    /// The unit label.
    pub fn unit(&self) -> &str {
        &self.unit
    }

    /// The dimensions the rollups keep.
    pub fn dimensions(&self) -> &BTreeSet<DimensionName> {
        &self.dimensions
    }

    /// Whether negative values are accepted.
    pub fn allows_negative(&self) -> bool {
        self.allow_negative
    }
}

/// The meters a host declared, looked up by name on every event.
#[derive(Debug, Clone, Default)]
pub struct Meters {
    /// Hashed with foldhash: names are the host's, not an attacker's, and
    /// the lookup is on every event.
    by_name: HashMap<MeterName, Arc<Meter>, foldhash::fast::RandomState>,
}

impl Meters {
    /// A catalog of `meters`; a name declared twice is refused.
    pub fn new<I>(meters: I) -> Result<Self, MeterError>
    where
        I: IntoIterator<Item = Meter>,
    {
        let mut by_name = HashMap::default();
        for meter in meters {
            let name = meter.name.clone();
            if by_name.insert(name.clone(), Arc::new(meter)).is_some() {
                return Err(MeterError::Duplicate(name));
            }
        }
        Ok(Self { by_name })
    }

    /// The meter named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Meter>> {
        self.by_name.get(name)
    }

    /// Every meter, in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Meter>> {
        let mut meters: Vec<_> = self.by_name.values().collect();
        meters.sort_by(|a, b| a.name.cmp(&b.name));
        meters.into_iter()
    }
}

impl std::borrow::Borrow<str> for MeterName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(MeterName::new("api_calls").is_ok());
        assert!(MeterName::new("tokens.input-v2").is_ok());
        for bad in ["", "Api", "a b", "é", &"x".repeat(65)] {
            assert!(
                matches!(MeterName::new(bad), Err(MeterError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(serde_json::from_str::<DimensionName>("\"Route\"").is_err());
    }

    #[test]
    fn meters_are_declared_once_with_few_dimensions() {
        let calls = Meter::new(
            MeterName::new("calls").unwrap(),
            Aggregation::Count,
            "calls",
        )
        .unwrap();
        assert_eq!(
            Meters::new([calls.clone(), calls]).unwrap_err(),
            MeterError::Duplicate(MeterName::new("calls").unwrap())
        );
        let many = (0..9).map(|i| DimensionName::new(&format!("d{i}")).unwrap());
        let err = Meter::new(MeterName::new("m").unwrap(), Aggregation::Sum, "x")
            .unwrap()
            .keep(many)
            .unwrap_err();
        assert!(matches!(
            err,
            MeterError::TooManyDimensions { count: 9, .. }
        ));
        assert!(matches!(
            Meter::new(MeterName::new("m").unwrap(), Aggregation::Sum, ""),
            Err(MeterError::InvalidUnit { .. })
        ));
    }

    #[test]
    fn aggregation_names_round_trip() {
        for a in [
            Aggregation::Sum,
            Aggregation::Count,
            Aggregation::Max,
            Aggregation::UniqueCount,
            Aggregation::Latest,
        ] {
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.as_str()));
            assert_eq!(serde_json::from_str::<Aggregation>(&json).unwrap(), a);
        }
    }
}
