//! What every [`ProvisioningStore`] must pass (feature `testkit`): the
//! store suite (claims, leases, cancel and retry transitions, concurrent
//! claims) and runner scenarios over a real [`tenancy_core::Directory`] (happy path,
//! transient failure, permanent failure with compensation and retry,
//! cancel mid-step, deadline, an attempt timing out, a worker killed
//! mid-step, two workers on one store), plus [`SimulatedDns`], an external step to drive them with.
//!
//! ```ignore
//! async fn my_fixture() -> Option<tenancy_provisioning::testkit::Fixture> { /* … */ }
//! tenancy_provisioning::conformance_tests!(my_fixture());
//! ```
//!
//! Suites panic on the first failed check, like any test assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(feature = "postgres")]
pub mod postgres;
mod scenarios;
mod simulated;
mod suite;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use tenancy_core::{Backend, ManualClock};
use time::OffsetDateTime;
use time::macros::datetime;

pub use scenarios::*;
pub use simulated::{Recorder, SimulatedDns};
pub use suite::*;

use crate::store::ProvisioningStore;

/// What the suites run against.
#[derive(Clone)]
pub struct Fixture {
    /// The store under test.
    pub store: Arc<dyn ProvisioningStore>,
    /// Tenants and users, for the built-in steps.
    pub backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture").finish_non_exhaustive()
    }
}

/// The instant the suites' clock starts at.
pub const NOW: OffsetDateTime = datetime!(2030-01-10 12:30 UTC);

/// A manual clock at [`NOW`].
pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(NOW))
}

/// Waits (polling every 10 ms, at most 10 s) until `check` holds.
///
/// # Panics
/// When it does not within 10 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = tokio::time::Instant::now() + StdDuration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
}

/// Declares one `#[tokio::test]` per suite and scenario, each on a fresh
/// fixture from `$fixture` (an expression giving a future of
/// `Option<Fixture>`, `None` to skip).
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:expr) => {
        $crate::conformance_tests!(@suites $fixture;
            store_round_trip, claims_are_exclusive_and_leases_lapse,
            claims_respect_backoff_and_deadline, cancel_and_retry_transitions,
            concurrent_claims_never_share, runs_are_listed_by_status,
            happy_path, transient_failure_is_retried, permanent_failure_compensates_then_retry_completes,
            hold_keeps_earlier_steps_and_retry_resumes, cancel_mid_step_compensates_in_reverse,
            deadline_cancels_stale_runs, crashed_worker_is_resumed_without_duplicates,
            two_workers_never_run_one_run_at_once, timed_out_attempt_is_retried,
            failed_runs_are_restored_by_retry_or_deleted_by_cancel,
            a_retry_lifts_only_its_own_suspension
        );
    };
    (@suites $fixture:expr; $($suite:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $suite() {
                if let Some(fixture) = $fixture.await {
                    $crate::testkit::$suite(fixture).await;
                }
            }
        )+
    };
}
