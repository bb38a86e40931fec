//! The durable records of a provisioning run: the run itself and one
//! record per step, as every store keeps them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

/// Identifies one provisioning run. A UUIDv7, so ids sort by creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(Uuid);

impl RunId {
    /// A fresh id.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The id held in `uuid` (for example read back from a store).
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The underlying UUID.
    pub const fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RunId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::from_str(s).map(Self)
    }
}

/// Where a run is.
///
/// ```text
/// pending ──► running ──► succeeded
///    │           │  └──► failed (dead letter) ──retry──► pending
///    └───────────┴──cancel / deadline──► cancelling ──► cancelled
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunStatus {
    /// Waiting for a worker (new, or between attempts of a step).
    Pending,
    /// A worker has started it.
    Running,
    /// Every step succeeded.
    Succeeded,
    /// A step failed for good (and, under [`crate::OnFailure::Compensate`],
    /// the steps before it were compensated): the dead letter a person
    /// inspects and then retries or cancels.
    Failed,
    /// Cancel was asked for (or the deadline passed): the started steps
    /// are being compensated.
    Cancelling,
    /// Compensated and stopped.
    Cancelled,
}

impl RunStatus {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelling => "cancelling",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// Whether a worker still has something to do.
    pub const fn is_active(self) -> bool {
        matches!(
            self,
            RunStatus::Pending | RunStatus::Running | RunStatus::Cancelling
        )
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored status name no variant matches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for RunStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => RunStatus::Pending,
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "cancelling" => RunStatus::Cancelling,
            "cancelled" => RunStatus::Cancelled,
            other => return Err(UnknownStatus(other.to_owned())),
        })
    }
}

/// Where one step of a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepStatus {
    /// Not started, or waiting for its next attempt.
    Pending,
    /// An attempt started and has not finished. Seen after a crash: the
    /// step is run again (steps are idempotent) or compensated.
    Running,
    /// Done; its output is in the run's state.
    Succeeded,
    /// Its last attempt failed and no attempt is left.
    Failed,
    /// Compensated, or never run because the run was cancelled.
    Cancelled,
}

impl StepStatus {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StepStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => StepStatus::Pending,
            "running" => StepStatus::Running,
            "succeeded" => StepStatus::Succeeded,
            "failed" => StepStatus::Failed,
            "cancelled" => StepStatus::Cancelled,
            other => return Err(UnknownStatus(other.to_owned())),
        })
    }
}

/// The durable record of one step of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StepRecord {
    /// Its position in the pipeline, from 0.
    pub index: u32,
    /// The step's name ([`crate::Step::name`]).
    pub name: String,
    /// Where it is.
    pub status: StepStatus,
    /// Attempts started since the run was created or last retried by hand.
    pub attempts: u32,
    /// When its latest attempt started.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When its latest attempt (or its compensation) finished.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// The error of its latest failed attempt or compensation.
    pub last_error: Option<String>,
}

impl StepRecord {
    /// A step that has not started.
    pub fn pending(index: u32, name: impl Into<String>) -> Self {
        Self {
            index,
            name: name.into(),
            status: StepStatus::Pending,
            attempts: 0,
            started_at: None,
            finished_at: None,
            last_error: None,
        }
    }
}

/// The durable record of one provisioning run, with its steps in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Run {
    /// Its id.
    pub id: RunId,
    /// The name of the pipeline it runs ([`crate::Pipeline::name`]).
    pub definition: String,
    /// What the caller started it with (for example slug, name and owner
    /// email of the new tenant).
    pub input: Value,
    /// What the steps produced so far, merged from each
    /// [`crate::StepOutput`]; read by later steps and by compensation.
    /// Never holds secrets.
    pub state: Map<String, Value>,
    /// Where it is.
    pub status: RunStatus,
    /// After this instant a run still pending or running is cancelled.
    #[serde(with = "time::serde::rfc3339")]
    pub deadline: OffsetDateTime,
    /// No worker takes it up before this instant (backoff between attempts).
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// How often a person retried it after it failed.
    pub manual_retries: u32,
    /// Why it failed or was cancelled.
    pub last_error: Option<String>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Its steps, by index.
    pub steps: Vec<StepRecord>,
}

impl Run {
    /// A pending run of `definition` with the steps named `steps`.
    pub fn new(
        definition: impl Into<String>,
        input: Value,
        steps: impl IntoIterator<Item = String>,
        now: OffsetDateTime,
        deadline: OffsetDateTime,
    ) -> Self {
        let now = tenancy_core::truncate_to_micros(now);
        Self {
            id: RunId::new(),
            definition: definition.into(),
            input,
            state: Map::new(),
            status: RunStatus::Pending,
            deadline: tenancy_core::truncate_to_micros(deadline),
            not_before: now,
            manual_retries: 0,
            last_error: None,
            created_at: now,
            updated_at: now,
            steps: steps
                .into_iter()
                .enumerate()
                .map(|(i, name)| StepRecord::pending(u32::try_from(i).unwrap_or(u32::MAX), name))
                .collect(),
        }
    }

    /// The step record named `name`, if the run has one.
    pub fn step(&self, name: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// The right to write a claimed run until `until`, held by one worker.
/// Every write of the runner names its lease; a write under a lease that
/// expired and was taken by another worker is refused
/// ([`crate::ProvisioningStoreError::LeaseLost`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The run held.
    pub run_id: RunId,
    /// Unique per claim.
    pub token: Uuid,
    /// When it lapses unless renewed.
    pub until: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_names() {
        for s in [
            RunStatus::Pending,
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Cancelling,
            RunStatus::Cancelled,
        ] {
            assert_eq!(s.as_str().parse::<RunStatus>(), Ok(s));
        }
        for s in [
            StepStatus::Pending,
            StepStatus::Running,
            StepStatus::Succeeded,
            StepStatus::Failed,
            StepStatus::Cancelled,
        ] {
            assert_eq!(s.as_str().parse::<StepStatus>(), Ok(s));
        }
        assert!("done".parse::<RunStatus>().is_err());
    }
}
