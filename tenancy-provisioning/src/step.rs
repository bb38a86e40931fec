//! The [`Step`] trait a pipeline is made of, and what a step sees and
//! returns.

use std::fmt;

use async_trait::async_trait;
use serde_json::{Map, Value};
use tenancy_core::BoxError;

use crate::model::RunId;

/// One unit of provisioning work with its undo.
///
/// # Idempotence
///
/// A worker can die in the middle of [`Step::run`]; the run is then taken
/// up by another worker after the lease lapses and the same step runs
/// again. So `run` must be idempotent: finding its own earlier effect (by a
/// key derived from the run, such as the run id or a slug from the input)
/// and returning the same output instead of doing it twice.
///
/// [`Step::compensate`] is called, in reverse order, for every step that
/// started when the run is cancelled or fails for good, including a step
/// whose attempt was interrupted and so has no output in the state. It must
/// undo what `run` may have done, find its effect the same way `run` does,
/// succeed when there is nothing to undo, and be idempotent too.
#[async_trait]
pub trait Step: Send + Sync + 'static {
    /// The step's name, unique in its pipeline; stored with the run.
    fn name(&self) -> &str;

    /// Does the step's work. Values in the returned output are merged into
    /// the run's state, for later steps and for compensation.
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError>;

    /// Undoes what [`Step::run`] did (see the trait docs).
    async fn compensate(&self, ctx: &StepContext) -> Result<(), StepError>;

    /// What the runner calls to compensate: [`Step::compensate`], handing
    /// nothing on. A step whose undo must leave a note for a retry of the
    /// run (what exactly it did, so that the retry reverts only that)
    /// overrides it; the output is merged into the run's state, as a run's
    /// is.
    async fn compensate_with_output(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        self.compensate(ctx).await.map(|()| StepOutput::empty())
    }
}

/// What a step sees: the run's id, its input and the state earlier steps
/// produced.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StepContext {
    /// The run.
    pub run_id: RunId,
    /// The name of the pipeline.
    pub definition: String,
    /// What the run was started with.
    pub input: Value,
    /// The run's state when this step started.
    pub state: Map<String, Value>,
    /// Which attempt this is, from 1 (0 for a compensation).
    pub attempt: u32,
    /// Why the step is being compensated; `None` while it runs.
    pub compensation: Option<Compensation>,
}

/// Why a step is compensated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compensation {
    /// A later step failed for good: the run becomes a dead letter a
    /// person may retry, so an undo that can be restored (suspending
    /// rather than deleting) lets the retry succeed.
    StepFailed,
    /// The run was cancelled (by a person or its deadline): undo for good.
    Cancelled,
}

impl StepContext {
    /// A context for the run `run_id` of `definition` (runners build it;
    /// public so steps can be tested on their own).
    pub fn new(run_id: RunId, definition: impl Into<String>, input: Value) -> Self {
        Self {
            run_id,
            definition: definition.into(),
            input,
            state: Map::new(),
            attempt: 1,
            compensation: None,
        }
    }

    /// The same context, compensating because of `cause`.
    pub fn compensating(mut self, cause: Compensation) -> Self {
        self.compensation = Some(cause);
        self.attempt = 0;
        self
    }

    /// The same context with `state`.
    pub fn with_state(mut self, state: Map<String, Value>) -> Self {
        self.state = state;
        self
    }

    /// The string at `key` in the input, or a permanent error naming it.
    pub fn input_str(&self, key: &str) -> Result<&str, StepError> {
        self.input
            .get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| StepError::permanent(format!("input has no string {key:?}")))
    }

    /// The string at `key` in the state, if an earlier step put one there.
    pub fn state_str(&self, key: &str) -> Option<&str> {
        self.state.get(key).and_then(Value::as_str)
    }
}

/// What a step hands on: values merged into the run's state. Never put a
/// secret here: the state is stored in plain text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOutput {
    /// The values to merge (a key set again replaces the earlier value).
    pub state: Map<String, Value>,
}

impl StepOutput {
    /// An output that adds nothing.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Adds `key` = `value`.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.state.insert(key.into(), value.into());
        self
    }
}

/// Whether trying again may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retry {
    /// A passing condition (network, a busy service): the step is attempted
    /// again under its retry policy.
    Transient,
    /// Trying again cannot help (bad input, a conflict): the run fails now.
    Permanent,
}

/// Why a step (or its compensation) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub struct StepError {
    /// Whether it is worth another attempt.
    pub retry: Retry,
    message: String,
    #[source]
    source: Option<BoxError>,
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StepError {
    /// A failure another attempt may get past.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            retry: Retry::Transient,
            message: message.into(),
            source: None,
        }
    }

    /// A failure no attempt gets past.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            retry: Retry::Permanent,
            message: message.into(),
            source: None,
        }
    }

    /// Keeps `source` as the cause; its message is appended to this one
    /// in the stored last error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Whether another attempt may help.
    pub fn is_transient(&self) -> bool {
        self.retry == Retry::Transient
    }

    /// The message with its chain of causes, as stored in the step record.
    pub fn report(&self) -> String {
        let mut out = self.message.clone();
        let mut next: Option<&(dyn std::error::Error + 'static)> =
            self.source.as_deref().map(|e| e as _);
        while let Some(cause) = next {
            out.push_str(": ");
            out.push_str(&cause.to_string());
            next = cause.source();
        }
        out
    }
}
