//! Per-tenant overrides: grants and limit changes on top of the plan.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tenancy_core::TenantId;
use time::OffsetDateTime;

use crate::catalog::{Catalog, CatalogError, FeatureId, FeatureValue, Limit, check_value};

/// Most overrides one tenant may hold (expired ones included until removed).
pub const MAX_OVERRIDES: usize = 256;
/// Longest override reason, in characters.
pub const MAX_REASON_CHARS: usize = 512;

/// An override's id (UUIDv7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OverrideId(uuid::Uuid);

impl OverrideId {
    /// A fresh id.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// The UUID.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }

    /// From a stored UUID.
    pub fn from_uuid(id: uuid::Uuid) -> Self {
        Self(id)
    }
}

impl Default for OverrideId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for OverrideId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for OverrideId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(Self)
    }
}

/// What an override does to one feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", content = "value", rename_all = "snake_case")]
pub enum OverrideChange {
    /// Opens a gate.
    Enable,
    /// Closes a gate.
    Disable,
    /// Replaces a limit (`None` is unlimited).
    SetLimit(Option<u64>),
    /// Raises a limit by this much (support credits, add-ons).
    AddToLimit(u64),
}

impl OverrideChange {
    fn apply(self, current: FeatureValue) -> FeatureValue {
        match (self, current) {
            (OverrideChange::Enable, FeatureValue::Gate(_)) => FeatureValue::Gate(true),
            (OverrideChange::Disable, FeatureValue::Gate(_)) => FeatureValue::Gate(false),
            (OverrideChange::SetLimit(limit), FeatureValue::Limit(_)) => {
                FeatureValue::Limit(limit.map_or(Limit::Unlimited, Limit::Max))
            }
            (OverrideChange::AddToLimit(extra), FeatureValue::Limit(limit)) => {
                FeatureValue::Limit(limit.plus(extra))
            }
            // Refused by validation; ignored if a stored one no longer fits.
            (_, current) => current,
        }
    }

    fn sample(self) -> FeatureValue {
        match self {
            OverrideChange::Enable | OverrideChange::Disable => FeatureValue::Gate(true),
            OverrideChange::SetLimit(_) | OverrideChange::AddToLimit(_) => {
                FeatureValue::Limit(Limit::Unlimited)
            }
        }
    }
}

/// One override of one tenant's feature, merged onto the plan's value for
/// that feature only: an override never replaces the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    /// Its id.
    pub id: OverrideId,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The feature's name.
    pub feature: String,
    /// The change.
    pub change: OverrideChange,
    /// When it stops applying, if ever.
    pub expires_at: Option<OffsetDateTime>,
    /// Why (the deal, the ticket): kept for the audit trail.
    pub reason: String,
    /// When it was made; overrides apply in this order.
    pub created_at: OffsetDateTime,
}

/// An override is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OverrideError {
    /// The feature is unknown or the change does not fit its kind.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The reason is longer than [`MAX_REASON_CHARS`] or has control characters.
    #[error("override reason: at most {MAX_REASON_CHARS} characters, no control characters")]
    Reason,
    /// It expires before it was made.
    #[error("override expires before it starts")]
    Expired,
}

impl Override {
    /// Checks the override against `catalog` and returns its feature.
    pub fn validate(&self, catalog: &Catalog) -> Result<FeatureId, OverrideError> {
        if self.reason.chars().count() > MAX_REASON_CHARS
            || self.reason.chars().any(char::is_control)
        {
            return Err(OverrideError::Reason);
        }
        if self.expires_at.is_some_and(|at| at <= self.created_at) {
            return Err(OverrideError::Expired);
        }
        let path = format!("overrides.{}", self.feature);
        Ok(check_value(
            catalog,
            &path,
            &self.feature,
            self.change.sample(),
        )?)
    }

    /// Whether it applies at `now`.
    pub fn active_at(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// Merges the active `overrides` onto `values` (a plan's), in creation
/// order, and returns the earliest expiry among those applied (when the
/// merge must be redone). Overrides of unknown features are skipped.
pub(crate) fn merge(
    catalog: &Catalog,
    values: &mut [FeatureValue],
    overrides: &[Override],
    now: OffsetDateTime,
) -> Option<OffsetDateTime> {
    let mut ordered: Vec<&Override> = overrides.iter().filter(|o| o.active_at(now)).collect();
    ordered.sort_by_key(|o| (o.created_at, o.id));
    let mut next_expiry: Option<OffsetDateTime> = None;
    for o in ordered {
        let Some(id) = catalog.feature(&o.feature) else {
            tracing::warn!(feature = %o.feature, "override of an unknown feature skipped");
            continue;
        };
        if let Some(value) = values.get_mut(id.index()) {
            *value = o.change.apply(*value);
        }
        if let Some(at) = o.expires_at {
            next_expiry = Some(next_expiry.map_or(at, |n| n.min(at)));
        }
    }
    next_expiry
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{CatalogDocument, Enforcement, PlanDocument};
    use time::macros::datetime;

    fn catalog() -> Catalog {
        Catalog::from_document(
            &CatalogDocument::new("free")
                .gate("sso")
                .limit("seats", None, Enforcement::Hard)
                .plan("free", PlanDocument::default().grant("seats", 3)),
        )
        .unwrap()
    }

    fn o(feature: &str, change: OverrideChange, minute: u8) -> Override {
        Override {
            id: OverrideId::new(),
            tenant_id: TenantId::new(),
            feature: feature.into(),
            change,
            expires_at: None,
            reason: "deal".into(),
            created_at: datetime!(2030-01-01 0:00 UTC) + time::Duration::minutes(minute.into()),
        }
    }

    #[test]
    fn merges_field_by_field_in_order() {
        let c = catalog();
        let sso = c.feature("sso").unwrap();
        let seats = c.feature("seats").unwrap();
        let mut values = c.default_plan().values().to_vec();
        let mut expiring = o("seats", OverrideChange::AddToLimit(2), 2);
        expiring.expires_at = Some(datetime!(2030-02-01 0:00 UTC));
        let list = [
            expiring,
            o("sso", OverrideChange::Enable, 0),
            o("seats", OverrideChange::SetLimit(Some(10)), 1),
        ];
        let next = merge(&c, &mut values, &list, datetime!(2030-01-02 0:00 UTC));
        assert_eq!(values[sso.index()], FeatureValue::Gate(true));
        assert_eq!(values[seats.index()], FeatureValue::Limit(Limit::Max(12)));
        assert_eq!(next, Some(datetime!(2030-02-01 0:00 UTC)));

        let mut later = c.default_plan().values().to_vec();
        merge(&c, &mut later, &list, datetime!(2030-02-01 0:00 UTC));
        assert_eq!(later[seats.index()], FeatureValue::Limit(Limit::Max(10)));
    }

    #[test]
    fn validation_names_the_feature() {
        let c = catalog();
        assert_eq!(
            o("sso", OverrideChange::AddToLimit(1), 0)
                .validate(&c)
                .unwrap_err()
                .to_string(),
            "overrides.sso: expected a boolean"
        );
        assert_eq!(
            o("sos", OverrideChange::Enable, 0)
                .validate(&c)
                .unwrap_err()
                .to_string(),
            "overrides.sos: unknown feature"
        );
        let mut bad = o("sso", OverrideChange::Enable, 0);
        bad.expires_at = Some(bad.created_at);
        assert!(matches!(bad.validate(&c), Err(OverrideError::Expired)));
        bad.expires_at = None;
        bad.reason = "a\nb".into();
        assert!(matches!(bad.validate(&c), Err(OverrideError::Reason)));
    }
}
