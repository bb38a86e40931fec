//! The crate's error type.

use tenancy_core::{BoxError, StoreError};
use tenancy_jobs::JobError;

use crate::ssrf::TargetRefused;

/// What can go wrong managing endpoints or delivering to them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The endpoint, delivery or event does not exist in this tenant.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The input is not acceptable (URL, description, event types, ids).
    #[error("invalid webhook input: {0}")]
    InvalidInput(String),
    /// The tenant already has the maximum number of endpoints.
    #[error("a tenant has at most {max} webhook endpoints")]
    TooManyEndpoints {
        /// The limit.
        max: usize,
    },
    /// The endpoint's address is refused by the SSRF policy.
    #[error("the endpoint's address is refused")]
    Refused(#[source] TargetRefused),
    /// A secret could not be encrypted or decrypted (wrong or missing
    /// key-encryption key, corrupt ciphertext).
    #[error("a webhook secret could not be sealed or opened")]
    Secret(#[source] BoxError),
    /// Stored data does not decode.
    #[error("stored webhook data is corrupt")]
    Corrupt(#[source] BoxError),
    /// The core store (outbox, audit log) failed.
    #[error("the tenancy store failed")]
    Store(#[source] StoreError),
    /// The job store failed.
    #[error("the job store failed")]
    Jobs(#[source] JobError),
    /// The webhook store is unreachable.
    #[error("webhook store unavailable")]
    Unavailable(#[source] BoxError),
}

impl WebhookError {
    /// A [`WebhookError::Unavailable`] from any error.
    pub fn unavailable(source: impl Into<BoxError>) -> Self {
        WebhookError::Unavailable(source.into())
    }

    /// A [`WebhookError::Corrupt`] from any error.
    pub fn corrupt(source: impl Into<BoxError>) -> Self {
        WebhookError::Corrupt(source.into())
    }
}

impl From<StoreError> for WebhookError {
    fn from(error: StoreError) -> Self {
        WebhookError::Store(error)
    }
}

impl From<JobError> for WebhookError {
    fn from(error: JobError) -> Self {
        WebhookError::Jobs(error)
    }
}
