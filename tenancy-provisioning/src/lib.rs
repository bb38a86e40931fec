#![doc = include_str!("../README.md")]
//!
//! # Features
//!
//! - `memory` (default): [`MemoryProvisioningStore`].
//! - `postgres`: [`postgres::PgProvisioningStore`] (migrations 9501+,
//!   leases through `FOR UPDATE SKIP LOCKED`) and the
//!   [`steps::TenantSchema`] step.
//! - `http`: [`http::ProvisioningModule`], the provisioner as a
//!   tenancy-http module with its operator routes and workers.
//! - `testkit`: [`testkit`], the store conformance suite and runner
//!   scenarios every backend passes, and [`testkit::SimulatedDns`].
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "memory")]
mod memory;
mod model;
#[cfg(feature = "postgres")]
pub mod postgres;
mod runner;
mod step;
pub mod steps;
mod store;
#[cfg(feature = "testkit")]
pub mod testkit;

#[cfg(feature = "memory")]
pub use memory::MemoryProvisioningStore;
pub use model::{Lease, Run, RunId, RunStatus, StepRecord, StepStatus, UnknownStatus};
pub use runner::{OnFailure, Pipeline, ProvisionError, Provisioner, StepPolicy, WorkerConfig};
pub use step::{Compensation, Retry, Step, StepContext, StepError, StepOutput};
pub use store::{ProvisioningStore, ProvisioningStoreError, RUNS_LIST};
