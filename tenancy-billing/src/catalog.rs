//! The catalog: which features exist and what each plan grants.
//!
//! A [`Catalog`] is built once at startup, from code ([`CatalogDocument`]'s
//! builder methods) or from a TOML or JSON document, and validated as a
//! whole: every error names the path of the offending field
//! (`plans.pro.features.seats`), so a typo in a config file is found before
//! the first request.
//!
//! Feature names are interned: [`Catalog::feature`] turns a name into a
//! [`FeatureId`] once, and [`crate::Entitlements`] answers by indexing an
//! array with it.
//!
//! ```
//! use tenancy_billing::{Catalog, Limit};
//!
//! let catalog = Catalog::from_toml(r#"
//!     default_plan = "free"
//!
//!     [features.sso]
//!     kind = "gate"
//!
//!     [features.seats]
//!     kind = "limit"
//!     enforcement = "hard"
//!
//!     [features.api_calls]
//!     kind = "metered"
//!     period = "billing_period"
//!     enforcement = "soft"
//!     overage = true
//!
//!     [plans.free.features]
//!     seats = 3
//!     api_calls = 1000
//!
//!     [plans.pro]
//!     name = "Pro"
//!     lookup_key = "pro_monthly"
//!     [plans.pro.features]
//!     sso = true
//!     seats = 50
//!     api_calls = "unlimited"
//! "#)?;
//! let seats = catalog.feature("seats").unwrap();
//! assert_eq!(catalog.plan("free").unwrap().value(seats).limit(), Some(Limit::Max(3)));
//! assert_eq!(catalog.plan_by_lookup_key("pro_monthly").unwrap().key(), "pro");
//! # Ok::<(), tenancy_billing::CatalogError>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest feature or plan name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Most features one catalog may declare.
pub const MAX_FEATURES: usize = 1024;

/// A feature, interned by its [`Catalog`]: an index, valid only with the
/// catalog that issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FeatureId(u32);

impl FeatureId {
    /// The index into the catalog's features.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// How often a limit's counter starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// Every UTC day.
    Day,
    /// Every calendar month (UTC).
    Month,
    /// Every subscription billing period, following the billing anchor
    /// rather than the calendar.
    BillingPeriod,
}

/// What happens when usage reaches a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Refused at the limit.
    #[default]
    Hard,
    /// Allowed past the limit, reported (and billed as overage when the
    /// feature allows it).
    Soft,
}

/// What kind of thing a feature is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeatureKind {
    /// On or off (`sso`, `audit_export`).
    Gate,
    /// A number: a stock without a period (`seats`, `projects`) or a flow
    /// per period (`exports` per month).
    Limit {
        /// When the count starts again; `None` for a stock.
        period: Option<Period>,
        /// Refuse or allow past the limit.
        enforcement: Enforcement,
        /// Usage past a soft limit is billed.
        overage: bool,
    },
    /// A limit on usage that tenancy-metering counts (`api_calls`); always
    /// has a period.
    Metered {
        /// When the count starts again.
        period: Period,
        /// Refuse or allow past the limit.
        enforcement: Enforcement,
        /// Usage past a soft limit is billed.
        overage: bool,
    },
}

impl FeatureKind {
    /// Whether values of this feature are numbers.
    pub fn is_numeric(self) -> bool {
        !matches!(self, FeatureKind::Gate)
    }
}

/// A numeric limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Limit {
    /// At most this many.
    Max(u64),
    /// No limit.
    Unlimited,
}

impl Limit {
    /// Whether `used + wanted` stays within the limit.
    pub fn allows(self, used: u64, wanted: u64) -> bool {
        match self {
            Limit::Unlimited => true,
            Limit::Max(max) => used.checked_add(wanted).is_some_and(|total| total <= max),
        }
    }

    /// This limit raised by `extra`, saturating.
    pub fn plus(self, extra: u64) -> Limit {
        match self {
            Limit::Unlimited => Limit::Unlimited,
            Limit::Max(max) => Limit::Max(max.saturating_add(extra)),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Max(n) => write!(f, "{n}"),
            Limit::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// What a plan (or an override) grants for one feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeatureValue {
    /// A gate, on or off.
    Gate(bool),
    /// A limit.
    Limit(Limit),
}

impl FeatureValue {
    /// The value of a feature a plan does not mention: off, or a limit of 0.
    pub fn none(kind: FeatureKind) -> Self {
        if kind.is_numeric() {
            FeatureValue::Limit(Limit::Max(0))
        } else {
            FeatureValue::Gate(false)
        }
    }

    /// Whether the feature may be used at all: an open gate, or a limit
    /// above zero.
    pub fn grants(self) -> bool {
        match self {
            FeatureValue::Gate(open) => open,
            FeatureValue::Limit(Limit::Max(n)) => n > 0,
            FeatureValue::Limit(Limit::Unlimited) => true,
        }
    }

    /// The limit, for a numeric feature.
    pub fn limit(self) -> Option<Limit> {
        match self {
            FeatureValue::Limit(limit) => Some(limit),
            FeatureValue::Gate(_) => None,
        }
    }

    fn fits(self, kind: FeatureKind) -> bool {
        matches!(self, FeatureValue::Limit(_)) == kind.is_numeric()
    }
}

/// A feature as declared in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    key: Box<str>,
    kind: FeatureKind,
    description: Option<String>,
}

impl Feature {
    /// Its name.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Its kind.
    pub fn kind(&self) -> FeatureKind {
        self.kind
    }

    /// Its description, if declared.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
}

/// A plan: a name, an optional Stripe price lookup key, and a value for
/// every feature of the catalog (the ones it does not mention are off or 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    key: Arc<str>,
    name: String,
    lookup_key: Option<String>,
    values: Arc<[FeatureValue]>,
}

impl Plan {
    /// Its key (`free`, `pro`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Its key, shared.
    pub fn key_arc(&self) -> Arc<str> {
        Arc::clone(&self.key)
    }

    /// Its display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lookup key of the provider price selling it, if it is sold.
    pub fn lookup_key(&self) -> Option<&str> {
        self.lookup_key.as_deref()
    }

    /// What it grants for `feature`.
    pub fn value(&self, feature: FeatureId) -> FeatureValue {
        self.values
            .get(feature.index())
            .copied()
            .unwrap_or(FeatureValue::Gate(false))
    }

    /// Every value, indexed by [`FeatureId`].
    pub fn values(&self) -> &Arc<[FeatureValue]> {
        &self.values
    }
}

/// A validated catalog. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Catalog {
    inner: Arc<CatalogInner>,
}

#[derive(Debug)]
struct CatalogInner {
    features: Vec<Feature>,
    feature_index: HashMap<Box<str>, FeatureId>,
    plans: Vec<Plan>,
    plan_index: HashMap<Arc<str>, usize>,
    default_plan: Plan,
}

impl PartialEq for Catalog {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Catalog {
    /// Validates a document.
    pub fn from_document(document: &CatalogDocument) -> Result<Self, CatalogError> {
        build(document)
    }

    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, CatalogError> {
        let document: CatalogDocument =
            toml::from_str(text).map_err(|e| CatalogError::Syntax(Box::new(e)))?;
        build(&document)
    }

    /// Parses and validates a JSON document.
    pub fn from_json(text: &str) -> Result<Self, CatalogError> {
        let document: CatalogDocument =
            serde_json::from_str(text).map_err(|e| CatalogError::Syntax(Box::new(e)))?;
        build(&document)
    }

    /// The feature named `key`.
    pub fn feature(&self, key: &str) -> Option<FeatureId> {
        self.inner.feature_index.get(key).copied()
    }

    /// The declaration of `feature`.
    pub fn feature_def(&self, feature: FeatureId) -> Option<&Feature> {
        self.inner.features.get(feature.index())
    }

    /// Every feature, in [`FeatureId`] order.
    pub fn features(&self) -> &[Feature] {
        &self.inner.features
    }

    /// The plan `key`.
    pub fn plan(&self, key: &str) -> Option<&Plan> {
        self.inner
            .plan_index
            .get(key)
            .and_then(|i| self.inner.plans.get(*i))
    }

    /// The plan sold by the price with `lookup_key`.
    pub fn plan_by_lookup_key(&self, lookup_key: &str) -> Option<&Plan> {
        self.inner
            .plans
            .iter()
            .find(|p| p.lookup_key.as_deref() == Some(lookup_key))
    }

    /// Every plan, in key order.
    pub fn plans(&self) -> &[Plan] {
        &self.inner.plans
    }

    /// The plan of tenants without a subscription, and the fallback when a
    /// subscription stops granting its plan.
    pub fn default_plan(&self) -> &Plan {
        &self.inner.default_plan
    }

    /// The first plan, in key order, that grants `feature`: for messages
    /// such as "upgrade to pro".
    pub fn plan_granting(&self, feature: FeatureId) -> Option<&Plan> {
        self.inner.plans.iter().find(|p| p.value(feature).grants())
    }
}

/// What is wrong with a catalog document. Each variant names the path of
/// the field at fault (`plans.pro.features.seats`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The document is not valid TOML or JSON, or has the wrong shape.
    #[error("catalog syntax: {0}")]
    Syntax(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A feature or plan name is empty, too long or has characters other
    /// than lowercase letters, digits, `_`, `-` and `.`.
    #[error("{path}: invalid name (1 to 64 of a-z, 0-9, _ - .)")]
    InvalidName {
        /// Where.
        path: String,
    },
    /// A plan names a feature the catalog does not declare.
    #[error("{path}: unknown feature")]
    UnknownFeature {
        /// Where.
        path: String,
    },
    /// A gate was given a number, or a limit a boolean.
    #[error("{path}: expected {expected}")]
    WrongValueType {
        /// Where.
        path: String,
        /// `a boolean` or `a number or "unlimited"`.
        expected: &'static str,
    },
    /// A metered feature has no period.
    #[error("{path}: a metered feature needs a period")]
    MissingPeriod {
        /// Where.
        path: String,
    },
    /// A setting that does not apply to the feature's kind (a period or
    /// enforcement on a gate, overage on a hard limit).
    #[error("{path}: {reason}")]
    Inapplicable {
        /// Where.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// Two plans are sold by the same price lookup key.
    #[error("{path}: lookup key already used by plan `{other}`")]
    DuplicateLookupKey {
        /// Where.
        path: String,
        /// The other plan.
        other: String,
    },
    /// The default plan is not declared (or no plan is).
    #[error("{path}: unknown plan")]
    UnknownDefaultPlan {
        /// Where.
        path: String,
    },
    /// More features than [`MAX_FEATURES`].
    #[error("features: at most {max} features")]
    TooManyFeatures {
        /// The limit.
        max: usize,
    },
}

/// Whether `name` is a valid feature or plan name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
}

/// The kind of a feature, as written in a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KindDocument {
    /// See [`FeatureKind::Gate`].
    Gate,
    /// See [`FeatureKind::Limit`].
    Limit,
    /// See [`FeatureKind::Metered`].
    Metered,
}

/// A feature as written in a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureDocument {
    /// Gate, limit or metered.
    pub kind: KindDocument,
    /// For limits (optional: none makes a stock) and metered features
    /// (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
    /// For limits and metered features; hard when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
    /// For soft limits: usage past the limit is billed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overage: bool,
    /// What it is, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A plan's value for one feature, as written: `true`, `10`, `"unlimited"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ValueDocument {
    /// A gate.
    Bool(bool),
    /// A limit.
    Number(u64),
    /// `"unlimited"` (anything else is refused).
    Text(String),
}

impl From<bool> for ValueDocument {
    fn from(value: bool) -> Self {
        ValueDocument::Bool(value)
    }
}

impl From<u64> for ValueDocument {
    fn from(value: u64) -> Self {
        ValueDocument::Number(value)
    }
}

impl From<Limit> for ValueDocument {
    fn from(value: Limit) -> Self {
        match value {
            Limit::Max(n) => ValueDocument::Number(n),
            Limit::Unlimited => ValueDocument::Text("unlimited".into()),
        }
    }
}

impl ValueDocument {
    /// Checks this value against a feature's kind.
    pub(crate) fn resolve(&self, kind: FeatureKind) -> Option<FeatureValue> {
        let value = match self {
            ValueDocument::Bool(b) => FeatureValue::Gate(*b),
            ValueDocument::Number(n) => FeatureValue::Limit(Limit::Max(*n)),
            ValueDocument::Text(t) if t == "unlimited" => FeatureValue::Limit(Limit::Unlimited),
            ValueDocument::Text(_) => return None,
        };
        value.fits(kind).then_some(value)
    }
}

/// A plan as written in a document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanDocument {
    /// Display name; the key when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The lookup key of the provider price selling this plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup_key: Option<String>,
    /// Values by feature name.
    #[serde(default)]
    pub features: BTreeMap<String, ValueDocument>,
}

impl PlanDocument {
    /// Sets the display name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the price lookup key.
    pub fn lookup_key(mut self, lookup_key: impl Into<String>) -> Self {
        self.lookup_key = Some(lookup_key.into());
        self
    }

    /// Grants `feature` the value `value` (`true`, `3`, `Limit::Unlimited`).
    pub fn grant(mut self, feature: &str, value: impl Into<ValueDocument>) -> Self {
        self.features.insert(feature.to_owned(), value.into());
        self
    }
}

/// A catalog as written in TOML or JSON, or built in code.
///
/// ```
/// use tenancy_billing::{Catalog, CatalogDocument, Enforcement, Limit, PlanDocument};
///
/// let catalog = Catalog::from_document(
///     &CatalogDocument::new("free")
///         .gate("sso")
///         .limit("seats", None, Enforcement::Hard)
///         .plan("free", PlanDocument::default().grant("seats", 3))
///         .plan("pro", PlanDocument::default().lookup_key("pro").grant("sso", true).grant("seats", Limit::Unlimited)),
/// )?;
/// assert_eq!(catalog.plans().len(), 2);
/// # Ok::<(), tenancy_billing::CatalogError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogDocument {
    /// The plan of tenants without a subscription (and the fallback).
    pub default_plan: String,
    /// Features by name.
    #[serde(default)]
    pub features: BTreeMap<String, FeatureDocument>,
    /// Plans by key.
    #[serde(default)]
    pub plans: BTreeMap<String, PlanDocument>,
}

impl CatalogDocument {
    /// An empty catalog whose default plan is `default_plan`.
    pub fn new(default_plan: impl Into<String>) -> Self {
        Self {
            default_plan: default_plan.into(),
            features: BTreeMap::new(),
            plans: BTreeMap::new(),
        }
    }

    /// Declares a gate.
    pub fn gate(mut self, key: &str) -> Self {
        self.features.insert(
            key.to_owned(),
            FeatureDocument {
                kind: KindDocument::Gate,
                period: None,
                enforcement: None,
                overage: false,
                description: None,
            },
        );
        self
    }

    /// Declares a limit (a stock when `period` is `None`).
    pub fn limit(mut self, key: &str, period: Option<Period>, enforcement: Enforcement) -> Self {
        self.features.insert(
            key.to_owned(),
            FeatureDocument {
                kind: KindDocument::Limit,
                period,
                enforcement: Some(enforcement),
                overage: false,
                description: None,
            },
        );
        self
    }

    /// Declares a metered feature.
    pub fn metered(
        mut self,
        key: &str,
        period: Period,
        enforcement: Enforcement,
        overage: bool,
    ) -> Self {
        self.features.insert(
            key.to_owned(),
            FeatureDocument {
                kind: KindDocument::Metered,
                period: Some(period),
                enforcement: Some(enforcement),
                overage,
                description: None,
            },
        );
        self
    }

    /// Declares a plan.
    pub fn plan(mut self, key: &str, plan: PlanDocument) -> Self {
        self.plans.insert(key.to_owned(), plan);
        self
    }
}

fn feature_kind(path: &str, doc: &FeatureDocument) -> Result<FeatureKind, CatalogError> {
    let enforcement = doc.enforcement.unwrap_or_default();
    let inapplicable = |field: &str, reason| CatalogError::Inapplicable {
        path: format!("{path}.{field}"),
        reason,
    };
    if doc.overage && enforcement == Enforcement::Hard && doc.kind != KindDocument::Gate {
        return Err(inapplicable("overage", "overage needs soft enforcement"));
    }
    match doc.kind {
        KindDocument::Gate => {
            if doc.period.is_some() {
                return Err(inapplicable("period", "a gate has no period"));
            }
            if doc.enforcement.is_some() {
                return Err(inapplicable("enforcement", "a gate has no enforcement"));
            }
            if doc.overage {
                return Err(inapplicable("overage", "a gate has no overage"));
            }
            Ok(FeatureKind::Gate)
        }
        KindDocument::Limit => Ok(FeatureKind::Limit {
            period: doc.period,
            enforcement,
            overage: doc.overage,
        }),
        KindDocument::Metered => {
            let period = doc.period.ok_or_else(|| CatalogError::MissingPeriod {
                path: format!("{path}.period"),
            })?;
            Ok(FeatureKind::Metered {
                period,
                enforcement,
                overage: doc.overage,
            })
        }
    }
}

fn expected(kind: FeatureKind) -> &'static str {
    if kind.is_numeric() {
        "a number or \"unlimited\""
    } else {
        "a boolean"
    }
}

fn build(document: &CatalogDocument) -> Result<Catalog, CatalogError> {
    if document.features.len() > MAX_FEATURES {
        return Err(CatalogError::TooManyFeatures { max: MAX_FEATURES });
    }
    let mut features = Vec::with_capacity(document.features.len());
    let mut feature_index = HashMap::with_capacity(document.features.len());
    for (key, doc) in &document.features {
        let path = format!("features.{key}");
        if !valid_name(key) {
            return Err(CatalogError::InvalidName { path });
        }
        let kind = feature_kind(&path, doc)?;
        let id = FeatureId(u32::try_from(features.len()).unwrap_or(u32::MAX));
        features.push(Feature {
            key: key.as_str().into(),
            kind,
            description: doc.description.clone(),
        });
        feature_index.insert(Box::<str>::from(key.as_str()), id);
    }
    let mut plans = Vec::with_capacity(document.plans.len());
    let mut plan_index = HashMap::with_capacity(document.plans.len());
    let mut lookup_keys: HashMap<&str, &str> = HashMap::new();
    for (key, doc) in &document.plans {
        let path = format!("plans.{key}");
        if !valid_name(key) {
            return Err(CatalogError::InvalidName { path });
        }
        if let Some(lookup_key) = doc.lookup_key.as_deref()
            && let Some(other) = lookup_keys.insert(lookup_key, key)
        {
            return Err(CatalogError::DuplicateLookupKey {
                path: format!("{path}.lookup_key"),
                other: other.to_owned(),
            });
        }
        let mut values: Vec<FeatureValue> = features
            .iter()
            .map(|f| FeatureValue::none(f.kind))
            .collect();
        for (feature, value) in &doc.features {
            let path = format!("{path}.features.{feature}");
            let Some(id) = feature_index.get(feature.as_str()) else {
                return Err(CatalogError::UnknownFeature { path });
            };
            let kind = features[id.index()].kind;
            let value = value.resolve(kind).ok_or(CatalogError::WrongValueType {
                path,
                expected: expected(kind),
            })?;
            values[id.index()] = value;
        }
        let key: Arc<str> = key.as_str().into();
        plan_index.insert(Arc::clone(&key), plans.len());
        plans.push(Plan {
            name: doc.name.clone().unwrap_or_else(|| key.to_string()),
            key,
            lookup_key: doc.lookup_key.clone(),
            values: values.into(),
        });
    }
    let default_plan = plan_index
        .get(document.default_plan.as_str())
        .and_then(|i| plans.get(*i))
        .cloned()
        .ok_or_else(|| CatalogError::UnknownDefaultPlan {
            path: "default_plan".into(),
        })?;
    Ok(Catalog {
        inner: Arc::new(CatalogInner {
            features,
            feature_index,
            plans,
            plan_index,
            default_plan,
        }),
    })
}

/// Looks up a feature's kind, for validating values outside a plan
/// (overrides).
pub(crate) fn check_value(
    catalog: &Catalog,
    path: &str,
    feature: &str,
    value: FeatureValue,
) -> Result<FeatureId, CatalogError> {
    let id = catalog
        .feature(feature)
        .ok_or_else(|| CatalogError::UnknownFeature { path: path.into() })?;
    let kind = catalog
        .feature_def(id)
        .map(Feature::kind)
        .ok_or_else(|| CatalogError::UnknownFeature { path: path.into() })?;
    if !value.fits(kind) {
        return Err(CatalogError::WrongValueType {
            path: path.into(),
            expected: expected(kind),
        });
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> &'static str {
        r#"
        default_plan = "free"
        [features.sso]
        kind = "gate"
        [features.seats]
        kind = "limit"
        [features.api_calls]
        kind = "metered"
        period = "month"
        enforcement = "soft"
        overage = true
        [plans.free.features]
        seats = 3
        [plans.pro]
        lookup_key = "pro"
        [plans.pro.features]
        sso = true
        seats = "unlimited"
        api_calls = 100000
        "#
    }

    #[test]
    fn loads_toml_and_json_alike() {
        let from_toml = Catalog::from_toml(base()).unwrap();
        let doc: CatalogDocument = toml::from_str(base()).unwrap();
        let json = serde_json::to_string(&doc).unwrap();
        let from_json = Catalog::from_json(&json).unwrap();
        for catalog in [&from_toml, &from_json] {
            let sso = catalog.feature("sso").unwrap();
            let seats = catalog.feature("seats").unwrap();
            let calls = catalog.feature("api_calls").unwrap();
            let free = catalog.plan("free").unwrap();
            let pro = catalog.plan("pro").unwrap();
            assert!(!free.value(sso).grants());
            assert_eq!(free.value(seats), FeatureValue::Limit(Limit::Max(3)));
            assert_eq!(free.value(calls), FeatureValue::Limit(Limit::Max(0)));
            assert!(pro.value(sso).grants());
            assert_eq!(pro.value(seats).limit(), Some(Limit::Unlimited));
            assert_eq!(catalog.default_plan().key(), "free");
            assert_eq!(catalog.plan_granting(sso).unwrap().key(), "pro");
            assert_eq!(
                catalog.feature_def(calls).unwrap().kind(),
                FeatureKind::Metered {
                    period: Period::Month,
                    enforcement: Enforcement::Soft,
                    overage: true
                }
            );
        }
    }

    fn error_of(text: &str) -> CatalogError {
        Catalog::from_toml(text).unwrap_err()
    }

    #[test]
    fn errors_name_the_path() {
        let cases = [
            (
                base().replace("seats = 3", "seat = 3"),
                "plans.free.features.seat: unknown feature",
            ),
            (
                base().replace("sso = true", "sso = 1"),
                "plans.pro.features.sso: expected a boolean",
            ),
            (
                base().replace("seats = 3", "seats = true"),
                "plans.free.features.seats: expected a number or \"unlimited\"",
            ),
            (
                base().replace("seats = \"unlimited\"", "seats = \"lots\""),
                "plans.pro.features.seats: expected a number or \"unlimited\"",
            ),
            (
                base().replace("period = \"month\"\n", ""),
                "features.api_calls.period: a metered feature needs a period",
            ),
            (
                base().replace("enforcement = \"soft\"", "enforcement = \"hard\""),
                "features.api_calls.overage: overage needs soft enforcement",
            ),
            (
                base().replace("default_plan = \"free\"", "default_plan = \"gratis\""),
                "default_plan: unknown plan",
            ),
            (
                base().replace("[features.sso]", "[features.SSO]"),
                "features.SSO: invalid name (1 to 64 of a-z, 0-9, _ - .)",
            ),
            (
                base().replace(
                    "[plans.free.features]",
                    "[plans.free]\nlookup_key = \"pro\"\n[plans.free.features]",
                ),
                "plans.pro.lookup_key: lookup key already used by plan `free`",
            ),
            (
                base().replace("kind = \"gate\"", "kind = \"gate\"\nperiod = \"day\""),
                "features.sso.period: a gate has no period",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(error_of(&text).to_string(), message);
        }
        assert!(matches!(
            error_of("default_plan = 1"),
            CatalogError::Syntax(_)
        ));
        assert!(matches!(
            error_of(&base().replace("kind = \"gate\"", "kind = \"gate\"\ncolour = 1")),
            CatalogError::Syntax(_)
        ));
    }

    #[test]
    fn limits_add_and_allow() {
        assert!(Limit::Max(3).allows(2, 1));
        assert!(!Limit::Max(3).allows(3, 1));
        assert!(!Limit::Max(3).allows(u64::MAX, 1));
        assert!(Limit::Unlimited.allows(u64::MAX, u64::MAX));
        assert_eq!(Limit::Max(u64::MAX).plus(1), Limit::Max(u64::MAX));
        assert_eq!(Limit::Unlimited.plus(1), Limit::Unlimited);
    }
}
