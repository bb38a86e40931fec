//! Usage metering for the tenancy SDK.
//!
//! This crate will hold usage events, sharded counters flushed in batches,
//! quotas and rate limits, rollups, and export of usage to billing. It is not
//! implemented yet.
#![forbid(unsafe_code)]

pub use tenancy_core;
