#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod access;
pub mod catalog;
mod entitlements;
mod overrides;
mod subscription;

pub use access::{Access, AccessPolicy};
pub use catalog::{
    Catalog, CatalogDocument, CatalogError, Enforcement, Feature, FeatureDocument, FeatureId,
    FeatureKind, FeatureValue, KindDocument, Limit, Period, Plan, PlanDocument, ValueDocument,
};
pub use entitlements::{BillingState, Entitlements, Revision};
pub use overrides::{
    MAX_OVERRIDES, MAX_REASON_CHARS, Override, OverrideChange, OverrideError, OverrideId,
};
pub use subscription::{
    BillingAccount, CustomerId, EventId, InvalidProviderId, MAX_PROVIDER_ID_LEN, Subscription,
    SubscriptionId, SubscriptionStatus, UnknownStatus,
};
pub use tenancy_core;
