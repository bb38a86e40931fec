#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod access;
mod cache;
pub mod catalog;
mod entitlements;
pub mod event;
#[cfg(feature = "http")]
pub mod http;
mod overrides;
pub mod provider;
mod service;
pub mod store;
#[cfg(feature = "stripe")]
pub mod stripe;
mod subscription;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod webhook;

pub use access::{Access, AccessPolicy};
pub use cache::{DEFAULT_MAX_TENANTS, EntitlementCache, MalformedNotification};
pub use catalog::{
    Catalog, CatalogDocument, CatalogError, Enforcement, Feature, FeatureDocument, FeatureId,
    FeatureKind, FeatureValue, KindDocument, Limit, Period, Plan, PlanDocument, ValueDocument,
};
pub use entitlements::{BillingState, Entitlements, Revision};
pub use overrides::{
    MAX_OVERRIDES, MAX_REASON_CHARS, Override, OverrideChange, OverrideError, OverrideId,
};
pub use provider::{BillingProvider, CheckoutRequest, Proration, ProviderError};
pub use service::{
    BillingService, OverrideWriteError, ReconcileError, ReconcileReport, WebhookError,
    WebhookOutcome,
};
#[cfg(feature = "memory")]
pub use store::MemoryBillingStore;
pub use store::{Applied, BillingStore, BillingStoreError, EventRecord};
pub use subscription::{
    BillingAccount, CustomerId, EventId, InvalidProviderId, MAX_PROVIDER_ID_LEN, Subscription,
    SubscriptionId, SubscriptionStatus, UnknownStatus,
};
pub use tenancy_core;
#[cfg(feature = "http")]
pub use tenancy_http;
