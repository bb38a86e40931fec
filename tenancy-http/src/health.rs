//! `GET /health` and `GET /ready`: liveness and readiness for load
//! balancers and orchestrators.
//!
//! - `/health` answers `200 {"status":"up"}` as long as the process serves
//!   requests; it touches nothing.
//! - `/ready` runs every [`ReadinessCheck`] at once, each within the
//!   builder's [`readiness_timeout`](crate::TenancyBuilder::readiness_timeout)
//!   (default 2 s): `200` when all answer, else `503`; the body names each
//!   check with `up`, `down` or `timeout` and its latency in milliseconds.
//!   Errors are logged, never sent: no connection string, host or message
//!   reaches the client.
//!
//! Checks: the Postgres pool when the builder has one (`postgres`,
//! `SELECT 1`), those given to [`crate::TenancyBuilder::readiness_check`],
//! and each module's ([`crate::Module::readiness_checks`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;
use tenancy_core::BoxError;

use crate::pipeline::RequestContext;
use crate::problem::Problem;
use crate::request::ApiRequest;
use crate::tenancy::Tenancy;

/// One dependency `/ready` asks about.
///
/// ```
/// use tenancy_http::{ReadinessCheck, async_trait, core::BoxError};
///
/// struct Mailer;
///
/// #[async_trait]
/// impl ReadinessCheck for Mailer {
///     fn name(&self) -> &str {
///         "mailer"
///     }
///     async fn check(&self) -> Result<(), BoxError> {
///         Ok(()) // connect, ping…
///     }
/// }
/// ```
#[async_trait]
pub trait ReadinessCheck: Send + Sync + 'static {
    /// A short, stable name shown in the `/ready` body (`postgres`,
    /// `redis`); never a connection string.
    fn name(&self) -> &str;

    /// Whether the dependency answers. The error is logged, not sent.
    async fn check(&self) -> Result<(), BoxError>;
}

/// A Postgres pool answering `SELECT 1`.
#[cfg(feature = "postgres")]
#[derive(Clone)]
pub struct PostgresCheck {
    name: String,
    pool: tenancy_core::postgres::sqlx::PgPool,
}

#[cfg(feature = "postgres")]
impl std::fmt::Debug for PostgresCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCheck")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "postgres")]
impl PostgresCheck {
    /// A check named `name` of `pool` (the builder adds its own pool as
    /// `postgres`; add others, a read replica, with
    /// [`crate::TenancyBuilder::readiness_check`]).
    pub fn new(name: impl Into<String>, pool: tenancy_core::postgres::sqlx::PgPool) -> Self {
        Self {
            name: name.into(),
            pool,
        }
    }
}

#[cfg(feature = "postgres")]
#[async_trait]
impl ReadinessCheck for PostgresCheck {
    fn name(&self) -> &str {
        &self.name
    }

    async fn check(&self) -> Result<(), BoxError> {
        tenancy_core::postgres::sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// The checks `/ready` runs, and how long each may take.
#[derive(Clone)]
pub(crate) struct Readiness {
    pub(crate) checks: Vec<Arc<dyn ReadinessCheck>>,
    pub(crate) timeout: Duration,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            checks: Vec::new(),
            timeout: Duration::from_secs(2),
        }
    }
}

/// What one check said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Up,
    Down,
    Timeout,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Timeout => "timeout",
        }
    }
}

impl Readiness {
    /// Runs every check at once; `(ready, body)`.
    async fn run(&self) -> (bool, serde_json::Value) {
        let tasks: Vec<_> = self
            .checks
            .iter()
            .map(|check| {
                let check = check.clone();
                let timeout = self.timeout;
                tokio::spawn(async move {
                    let started = Instant::now();
                    let outcome = match tokio::time::timeout(timeout, check.check()).await {
                        Ok(Ok(())) => Outcome::Up,
                        Ok(Err(error)) => {
                            tracing::warn!(check = check.name(), %error, "readiness check failed");
                            Outcome::Down
                        }
                        Err(_) => {
                            tracing::warn!(check = check.name(), "readiness check timed out");
                            Outcome::Timeout
                        }
                    };
                    (outcome, started.elapsed())
                })
            })
            .collect();
        let mut ready = true;
        let mut results = Vec::with_capacity(tasks.len());
        for (check, task) in self.checks.iter().zip(tasks) {
            let (outcome, latency) = task.await.unwrap_or_else(|error| {
                tracing::warn!(check = check.name(), %error, "readiness check panicked");
                (Outcome::Down, Duration::ZERO)
            });
            ready &= outcome == Outcome::Up;
            results.push(json!({
                "name": check.name(),
                "status": outcome.as_str(),
                "latency_ms": u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            }));
        }
        let status = if ready { "ready" } else { "unavailable" };
        (ready, json!({ "status": status, "checks": results }))
    }
}

fn uncached(status: StatusCode, body: &serde_json::Value) -> Result<Response<Bytes>, Problem> {
    let mut response = crate::response::json(status, body)?;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /health`.
pub(crate) async fn health(
    _: &Tenancy,
    _: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    uncached(StatusCode::OK, &json!({ "status": "up" }))
}

/// `GET /ready`.
pub(crate) async fn ready(
    t: &Tenancy,
    _: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (ready, body) = t.readiness().run().await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    uncached(status, &body)
}
