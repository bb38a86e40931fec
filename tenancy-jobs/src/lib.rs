#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod error;
mod job;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
mod worker;

pub use backoff::Backoff;
pub use error::JobError;
pub use job::{
    ClaimedJob, DEFAULT_MAX_ATTEMPTS, Enqueued, Job, JobId, JobKind, JobState, Lease, MAX_ATTEMPTS,
    MAX_NAME_LEN, MAX_PAYLOAD_BYTES, NewJob, Queue,
};
#[cfg(feature = "memory")]
pub use memory::MemoryJobStore;
pub use store::{ClaimRequest, JobFilter, JobStore};
pub use worker::{
    HandlerError, JobContext, JobHandler, Periodic, Retention, ShutdownReport, Worker,
    WorkerConfig, WorkerHandle, WorkerWaker, handler_fn, typed_handler,
};
