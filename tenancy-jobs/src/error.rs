//! The error of job stores and workers.

use tenancy_core::BoxError;

use crate::job::{JobId, JobState};

/// Why a job operation failed. Not-found, a lost lease, a state that does
/// not allow the operation and bad input are distinct variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// No job has this id (or it was purged).
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The lease is no longer valid: it expired and the job was claimed
    /// again, or the job left the running state. The holder must stop
    /// working on it; its outcome would be ignored.
    #[error("the lease on job {0} was lost")]
    LeaseLost(JobId),
    /// The job is in a state that does not allow the operation, such as
    /// cancelling a running job or retrying one that is not dead.
    #[error("job {id} is {state}, which does not allow this")]
    InvalidState {
        /// The job.
        id: JobId,
        /// Its state.
        state: JobState,
    },
    /// An active job already holds the dedupe key (manual retry of a dead
    /// job whose key was taken since).
    #[error("an active job already holds dedupe key {0:?}")]
    DuplicateKey(String),
    /// The input broke a rule; the message says which.
    #[error("invalid job input: {0}")]
    InvalidInput(String),
    /// Stored data does not decode into a job: it was changed outside
    /// this crate. Retrying will not help.
    #[error("stored job data is corrupt")]
    Corrupt(#[source] BoxError),
    /// The store could not be reached or failed; retrying may help.
    #[error("job store unavailable")]
    Unavailable(#[source] BoxError),
}

impl JobError {
    /// Wraps a backend failure.
    pub fn unavailable(source: impl Into<BoxError>) -> Self {
        JobError::Unavailable(source.into())
    }

    /// Wraps undecodable stored data.
    pub fn corrupt(source: impl Into<BoxError>) -> Self {
        JobError::Corrupt(source.into())
    }
}
