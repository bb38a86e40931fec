//! Billing for the tenancy SDK.
//!
//! This crate will hold plans and entitlements, a subscription state machine,
//! a `BillingProvider` trait with a Stripe adapter, and webhook verification
//! with idempotent, order-safe synchronisation. It is not implemented yet.
#![forbid(unsafe_code)]

pub use tenancy_core;
