//! Usage metering for the tenancy SDK: meters declared by the host, usage
//! events that count exactly once, rollups per minute, hour and day, and
//! usage queries with CSV and JSON-lines export.
//!
//! - [`Meter`]s name what is counted, how events combine
//!   ([`Aggregation`]: sum, count, max, unique count, latest), the unit,
//!   and which event dimensions the rollups keep.
//! - Two ingest modes:
//!
//! | mode | returns when | on a crash | on a retry |
//! | --- | --- | --- | --- |
//! | durable: [`Metering::record`] | the event, its key and its rollups are committed in one transaction | nothing committed is lost | counted once: the key is scoped to the tenant and stored with the event |
//! | buffered: [`BufferedIngest::add`] | the event is added to an in-process counter | loses what was added since the last committed flush (at most [`BufferConfig::flush_every`], default 1 s); a graceful [`Flusher::shutdown`] loses nothing | no key: each call counts |
//!
//! - [`Metering::usage`] answers a tenant's usage of one meter in windows of
//!   one [`Granularity`], optionally grouped by kept dimensions;
//!   [`write_csv`] and [`write_jsonl`] export it.
//! - [`Quotas`] enforce per-period limits from a [`LimitSource`] (billing's
//!   entitlements, wired by the builder): soft limits record and call
//!   [`QuotaHook`]s at 80% and 100%, hard limits refuse through an atomic
//!   check-and-consume in a [`QuotaStore`] (memory, Postgres's conditional
//!   upsert, or Redis's Lua script with feature `redis`);
//!   [`QuotaLeases`] lease quota in chunks per replica.
//! - [`RateLimiter`] applies GCRA limits per key through a
//!   [`RateLimitStore`]: in process ([`MemoryRateLimitStore`]) or shared
//!   in Redis (feature `redis`), failing open or closed per limit when the
//!   store is down ([`OnStoreError`]).
//! - [`PlanSource`] gives each tenant's plan (quotas and the billing
//!   [`Cycle`] they reset on); [`PlanLimits`] makes it the quotas'
//!   [`LimitSource`].
//! - Feature `http`: [`http::MeteringModule`] (`GET /usage`,
//!   `GET /usage/export`, background flush) and [`http::MeteringGuard`]
//!   (rate limits, quotas and usage per route, with `RateLimit` headers).
//! - [`UsageExporter`] reports `sum` and `count` meters to the billing
//!   provider ([`UsageSink`]) exactly once through an [`OutboxStore`]
//!   ([`MemoryOutbox`], or the Postgres store): rows per tenant, meter,
//!   period and sequence with deterministic identifiers, sent with
//!   backoff under a global rate, and reconciled against the rollups.
//! - Stores implement [`MeteringStore`]: [`MemoryMeteringStore`] (feature
//!   `memory`, default) and [`store::postgres::PgMeteringStore`] (feature
//!   `postgres`: tenant-owned tables under row-level security, migrations
//!   5000–5999). Both pass the conformance suites in `testkit` (feature
//!   `testkit`).
//!
//! ```
//! # #[cfg(feature = "memory")]
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use tenancy_core::{AuditContext, Directory, Email, MemoryBackend, NewTenant, NewUser, Owner, Slug, TenantName, TenantScope};
//! use tenancy_metering::*;
//!
//! let backend = Arc::new(MemoryBackend::new());
//! let tenant = Directory::new(backend.clone())
//!     .create_tenant(
//!         NewTenant::new(Slug::new("acme")?, TenantName::new("Acme")?),
//!         Owner::New(NewUser::new(Email::new("ada@acme.example")?)),
//!         &AuditContext::system(),
//!     )
//!     .await?
//!     .tenant;
//! let scope = TenantScope::assume_resolved(tenant.id);
//! let meters = Meters::new([Meter::new(MeterName::new("api_calls")?, Aggregation::Count, "calls")?])?;
//! let metering = Metering::new(meters, Arc::new(MemoryMeteringStore::new(backend)));
//!
//! let now = time::OffsetDateTime::now_utc();
//! let event = NewEvent::new("api_calls", 1, now, IdempotencyKey::new("req-1")?);
//! assert_eq!(metering.record(&scope, event.clone()).await?, Recorded::Counted);
//! assert_eq!(metering.record(&scope, event).await?, Recorded::Duplicate); // a retry
//!
//! let day = Granularity::Day.floor(now);
//! let (_, points) = metering
//!     .usage(&scope, "api_calls", day, day + time::Duration::DAY, Granularity::Day, vec![])
//!     .await?;
//! assert_eq!(points[0].value, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod buffer;
mod event;
mod export;
#[cfg(feature = "http")]
pub mod http;
mod meter;
mod metering;
mod period;
mod quota;
mod ratelimit;
#[cfg(feature = "redis")]
pub mod redis;
mod rollup;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
mod usage;

pub use tenancy_core;

pub use buffer::{BufferConfig, BufferedIngest, FlushReport, Flusher};
pub use event::{
    Dimensions, Event, EventError, IdempotencyKey, IngestWindow, MAX_DIMENSION_VALUE_LEN,
    MAX_KEY_LEN, NewEvent,
};
pub use export::{
    ExportConfig, ExportReport, MemoryOutbox, OutboxStore, OutboxTotals, Reconciled, SinkError,
    UsageExportError, UsageExporter, UsageReport, UsageSink, identifier,
};
pub use meter::{
    Aggregation, DimensionName, MAX_KEPT_DIMENSIONS, MAX_NAME_LEN, Meter, MeterError, MeterName,
    Meters,
};
pub use metering::{IngestError, Metering, UsageError};
pub use period::{Cycle, Period, PlanLimits, PlanQuota, PlanSource, StaticPlans, TenantPlan};
pub use quota::{
    Consumption, Limit, LimitError, LimitKind, LimitSource, MAX_COUNTER, MemoryQuotaStore,
    QuotaDecision, QuotaError, QuotaHook, QuotaKey, QuotaLeases, QuotaStore, QuotaStoreError,
    Quotas, StaticLimits, ThresholdCrossed,
};
pub use ratelimit::{
    MemoryRateLimitStore, OnStoreError, RateDecision, RateLimit, RateLimitError, RateLimitStore,
    RateLimiter,
};
pub use rollup::{Aggregate, Granularity, Rollup, RollupBatch, RollupKey, TenantRollups};
#[cfg(feature = "memory")]
pub use store::MemoryMeteringStore;
pub use store::{IngestStep, MeteringStore, MeteringStoreError, Recorded};
pub use usage::{
    ExportError, MAX_BUCKETS, QueryError, UsagePoint, UsageQuery, sort_points, write_csv,
    write_jsonl,
};
