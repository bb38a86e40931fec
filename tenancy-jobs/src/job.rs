//! Jobs and the values that describe them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tenancy_core::TenantId;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::JobError;

/// The largest payload accepted, in bytes of its JSON text: jobs carry ids
/// and small parameters, not documents.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// The longest queue name, job kind or dedupe key, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// The most attempts a job may be given.
pub const MAX_ATTEMPTS: u32 = 100;
/// The attempts a job gets unless its [`NewJob`] says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// Identifies a job: a UUIDv7, so ids sort by enqueue time (lists are
/// keyset-paginated on it).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(Uuid);

impl JobId {
    /// A fresh, time-ordered id.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps a UUID read from storage.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The underlying UUID, for storage.
    pub const fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({})", self.0.hyphenated())
    }
}

impl FromStr for JobId {
    type Err = JobError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| JobError::InvalidInput("a job id must be a UUID".into()))
    }
}

impl Serialize for JobId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0.hyphenated())
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn check_name(what: &str, text: &str, extra: &[char]) -> Result<(), JobError> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(&c);
    if text.is_empty() || text.len() > MAX_NAME_LEN || !text.chars().all(ok_char) {
        let allowed: String = extra.iter().collect();
        return Err(JobError::InvalidInput(format!(
            "a {what} is 1 to {MAX_NAME_LEN} characters of a-z, 0-9 and {allowed:?}"
        )));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$meta:meta])* $name:ident, $what:literal, $extra:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates `text`; [`JobError::InvalidInput`] names the rule.
            pub fn new(text: impl Into<String>) -> Result<Self, JobError> {
                let text = text.into();
                check_name($what, &text, $extra)?;
                Ok(Self(text))
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = JobError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Self::new(text).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A queue: workers claim from the queues they are given, so slow or
    /// bulky kinds can get workers of their own. `a-z`, `0-9`, `_`, `-`.
    Queue,
    "queue name",
    &['_', '-']
);
name_type!(
    /// What a job does: the key of the handler that runs it, such as
    /// `billing.sync_invoice`. `a-z`, `0-9`, `_`, `.`.
    JobKind,
    "job kind",
    &['_', '.']
);

impl Queue {
    /// The queue jobs go to unless they name one.
    pub fn default_queue() -> Self {
        Self("default".to_owned())
    }
}

/// Where a job is in its life.
///
/// ```text
/// queued ──claim──▶ running ──complete──▶ succeeded
///   ▲  ▲              │  │
///   │  └──release─────┘  ├──fail (attempts left)──▶ retrying ──claim──▶ running
///   │                    └──fail (no attempts left or permanent)──▶ dead
///   └──────────────retry_dead──────────────────────────────────────────────┘
/// queued / retrying ──cancel──▶ cancelled
/// ```
///
/// A job enqueued for later is `Queued` with a future `run_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobState {
    /// Waiting for `run_at`, then for a worker.
    Queued,
    /// Claimed by a worker holding a lease.
    Running,
    /// Failed an attempt and waits for `run_at` to be tried again.
    Retrying,
    /// Ran to completion.
    Succeeded,
    /// Failed its last attempt, or failed permanently: the dead-letter
    /// state, kept with its last error until retried by hand or purged.
    Dead,
    /// Cancelled before it ran.
    Cancelled,
}

impl JobState {
    /// All states, in life order.
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Retrying,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job still has to run (a dedupe key is held only by such
    /// jobs).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            JobState::Queued | JobState::Running | JobState::Retrying
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = JobError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| JobError::InvalidInput(format!("unknown job state {s:?}")))
    }
}

/// A job to enqueue, built with [`NewJob::new`] and its `with_*` methods.
///
/// ```
/// use tenancy_jobs::{JobKind, NewJob, Queue};
/// let job = NewJob::new(JobKind::new("email.welcome")?, serde_json::json!({"user": 7}))?
///     .with_queue(Queue::new("mail")?)
///     .with_max_attempts(3)?
///     .with_dedupe_key("welcome:7")?;
/// assert_eq!(job.max_attempts(), 3);
/// # Ok::<(), tenancy_jobs::JobError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    kind: JobKind,
    queue: Queue,
    payload: serde_json::Value,
    tenant_id: Option<TenantId>,
    run_at: Option<OffsetDateTime>,
    max_attempts: u32,
    dedupe_key: Option<String>,
}

impl NewJob {
    /// A job of `kind` on the default queue, due now, with
    /// [`DEFAULT_MAX_ATTEMPTS`]. The payload's JSON text must fit in
    /// [`MAX_PAYLOAD_BYTES`].
    pub fn new(kind: JobKind, payload: serde_json::Value) -> Result<Self, JobError> {
        let size = serde_json::to_vec(&payload)
            .map_err(|e| JobError::InvalidInput(format!("payload does not serialize: {e}")))?
            .len();
        if size > MAX_PAYLOAD_BYTES {
            return Err(JobError::InvalidInput(format!(
                "payload is {size} bytes, more than the {MAX_PAYLOAD_BYTES} allowed"
            )));
        }
        Ok(Self {
            kind,
            queue: Queue::default_queue(),
            payload,
            tenant_id: None,
            run_at: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            dedupe_key: None,
        })
    }

    /// A job whose payload is `payload` serialized to JSON.
    pub fn from_serde<T: Serialize>(kind: JobKind, payload: &T) -> Result<Self, JobError> {
        let value = serde_json::to_value(payload)
            .map_err(|e| JobError::InvalidInput(format!("payload does not serialize: {e}")))?;
        Self::new(kind, value)
    }

    /// Puts the job on `queue`.
    pub fn with_queue(mut self, queue: Queue) -> Self {
        self.queue = queue;
        self
    }

    /// Records the tenant the job works for (for filtering and for the
    /// handler; workers claim across tenants).
    pub fn with_tenant(mut self, tenant_id: TenantId) -> Self {
        self.tenant_id = Some(tenant_id);
        self
    }

    /// Runs the job no earlier than `at`.
    pub fn with_run_at(mut self, at: OffsetDateTime) -> Self {
        self.run_at = Some(at);
        self
    }

    /// How many times the job may be tried, 1 to [`MAX_ATTEMPTS`].
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Result<Self, JobError> {
        if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
            return Err(JobError::InvalidInput(format!(
                "max attempts must be 1 to {MAX_ATTEMPTS}"
            )));
        }
        self.max_attempts = max_attempts;
        Ok(self)
    }

    /// While a job with this key is queued, running or retrying, enqueuing
    /// another one with the same key returns the first one's id instead.
    /// 1 to [`MAX_NAME_LEN`] bytes, no control characters.
    pub fn with_dedupe_key(mut self, key: impl Into<String>) -> Result<Self, JobError> {
        let key = key.into();
        if key.is_empty() || key.len() > MAX_NAME_LEN || key.chars().any(char::is_control) {
            return Err(JobError::InvalidInput(format!(
                "a dedupe key is 1 to {MAX_NAME_LEN} bytes without control characters"
            )));
        }
        self.dedupe_key = Some(key);
        Ok(self)
    }

    /// The job's kind.
    pub fn kind(&self) -> &JobKind {
        &self.kind
    }
    /// The job's queue.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }
    /// The payload.
    pub fn payload(&self) -> &serde_json::Value {
        &self.payload
    }
    /// The tenant, if any.
    pub fn tenant_id(&self) -> Option<TenantId> {
        self.tenant_id
    }
    /// When the job is due; `None` is "now".
    pub fn run_at(&self) -> Option<OffsetDateTime> {
        self.run_at
    }
    /// How many attempts it gets.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
    /// Its dedupe key, if any.
    pub fn dedupe_key(&self) -> Option<&str> {
        self.dedupe_key.as_deref()
    }
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// Its kind.
    pub kind: JobKind,
    /// Its queue.
    pub queue: Queue,
    /// Its payload.
    pub payload: serde_json::Value,
    /// The tenant it works for, if any.
    pub tenant_id: Option<TenantId>,
    /// Where it is.
    pub state: JobState,
    /// Attempts started so far (a claim starts one; a release gives it back).
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// When it is due (for a retry: when the backoff ends).
    #[serde(with = "time::serde::rfc3339")]
    pub run_at: OffsetDateTime,
    /// Its dedupe key, if any.
    pub dedupe_key: Option<String>,
    /// The error of its last failed attempt.
    pub last_error: Option<String>,
    /// The worker holding it, while running.
    pub locked_by: Option<String>,
    /// When the running attempt's lease ends.
    #[serde(with = "time::serde::rfc3339::option")]
    pub lease_expires_at: Option<OffsetDateTime>,
    /// When it was enqueued.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it reached succeeded, dead or cancelled.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

impl Job {
    /// The payload deserialized into `T`.
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_value(self.payload.clone())
            .map_err(|e| JobError::InvalidInput(format!("payload does not match: {e}")))
    }
}

/// The proof that a worker holds a running job: the token changes with
/// every claim, so a worker whose lease expired and whose job was claimed
/// again can no longer complete, fail, release or extend it.
#[derive(Clone, PartialEq, Eq)]
pub struct Lease {
    /// The job held.
    pub job_id: JobId,
    token: Uuid,
}

impl Lease {
    /// A lease on `job_id` with `token`. For store implementations.
    pub fn new(job_id: JobId, token: Uuid) -> Self {
        Self { job_id, token }
    }

    /// The token, for store implementations.
    pub fn token(&self) -> Uuid {
        self.token
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("job_id", &self.job_id)
            .finish_non_exhaustive()
    }
}

/// A job a worker claimed, with its lease.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClaimedJob {
    /// The job, as running (attempts already counts this attempt).
    pub job: Job,
    /// The lease to complete, fail, release or extend it with.
    pub lease: Lease,
}

impl ClaimedJob {
    /// Pairs a job and its lease. For store implementations.
    pub fn new(job: Job, lease: Lease) -> Self {
        Self { job, lease }
    }
}

/// What an enqueue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Enqueued {
    /// A new job.
    Created(JobId),
    /// An active job already held the dedupe key: its id.
    Existing(JobId),
}

impl Enqueued {
    /// The job's id, new or existing.
    pub fn id(self) -> JobId {
        match self {
            Enqueued::Created(id) | Enqueued::Existing(id) => id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(JobKind::new("billing.sync_invoice").is_ok());
        assert!(JobKind::new("Billing").is_err());
        assert!(JobKind::new("").is_err());
        assert!(JobKind::new("a-b").is_err());
        assert!(JobKind::new("x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(Queue::new("mail-bulk_2").is_ok());
        assert!(Queue::new("mail.bulk").is_err());
        let err = serde_json::from_str::<JobKind>("\"NO\"").unwrap_err();
        assert!(err.to_string().contains("job kind"));
    }

    #[test]
    fn payload_size_is_capped() {
        let kind = JobKind::new("k").unwrap();
        let big = serde_json::Value::String("x".repeat(MAX_PAYLOAD_BYTES));
        let err = NewJob::new(kind.clone(), big).unwrap_err();
        assert!(matches!(err, JobError::InvalidInput(_)));
        assert!(NewJob::new(kind, serde_json::json!({"a": 1})).is_ok());
    }

    #[test]
    fn builder_checks_attempts_and_keys() {
        let job = NewJob::new(JobKind::new("k").unwrap(), serde_json::Value::Null).unwrap();
        assert_eq!(job.max_attempts(), DEFAULT_MAX_ATTEMPTS);
        assert!(job.clone().with_max_attempts(0).is_err());
        assert!(job.clone().with_max_attempts(MAX_ATTEMPTS + 1).is_err());
        assert!(job.clone().with_dedupe_key("").is_err());
        assert!(job.clone().with_dedupe_key("a\nb").is_err());
        assert_eq!(
            job.with_dedupe_key("k:1").unwrap().dedupe_key(),
            Some("k:1")
        );
    }

    #[test]
    fn states_round_trip() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), state);
        }
        assert!("nope".parse::<JobState>().is_err());
    }

    #[test]
    fn ids_parse_and_print() {
        let id = JobId::new();
        assert_eq!(id.to_string().parse::<JobId>().unwrap(), id);
        assert!("x".parse::<JobId>().is_err());
    }
}
