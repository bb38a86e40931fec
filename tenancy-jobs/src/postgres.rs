//! The Postgres job store (feature `postgres`).
//!
//! - One table, `tenancy_jobs`, not under row-level security: workers
//!   claim across tenants (see the migration). `tenant_id` is a column for
//!   filtering.
//! - Claiming is one `UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED
//!   LIMIT n)`: concurrent workers never claim the same job and never wait
//!   on each other's rows.
//! - [`enqueue_in`] (and [`PgJobStore::enqueue_in`]) writes the job with
//!   the caller's connection, so a job is enqueued if and only if the
//!   caller's transaction commits. It takes `&mut PgConnection`, which a
//!   `sqlx::Transaction` derefs to and
//!   `tenancy_core::postgres::PgTransaction::connection()` hands out.
//! - Times come from the store's [`Clock`] (bound as parameters), not from
//!   `now()`, so tests drive backoff, schedules and leases with a manual
//!   clock; keep the replicas' clocks in sync.
//! - An enqueue due now sends `NOTIFY tenancy_jobs` (at commit); with
//!   [`wake_on_enqueue`] on tenancy-core's shared listener, workers of every
//!   replica start such jobs at once instead of at their next poll.
//! - Migrations are embedded ([`migrator`]), numbered 8001+, recorded with
//!   the other tenancy crates' (see [`tenancy_core::postgres::migrate_all`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::{Connection, Row};
use tenancy_core::postgres::Subscriber;
use tenancy_core::{Clock, Cursor, Page, PageRequest, SystemClock, TenantId, truncate_to_micros};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::JobError;
use crate::job::{ClaimedJob, Enqueued, Job, JobId, JobKind, JobState, Lease, NewJob, Queue};
use crate::store::{
    ClaimRequest, JobFilter, JobStore, LEASE_EXPIRED, LEASE_EXPIRED_ON_LAST_ATTEMPT, LIST_NAME,
    check_claim, check_schedule, next_tick, span, truncate_error,
};
use crate::worker::WorkerWaker;

/// The embedded tenancy-jobs migrations (versions 8001+), kept in
/// tenancy's migrations table beside the other crates' (whose versions it
/// ignores). Needs no other crate's migrations.
pub fn migrator() -> Migrator {
    tenancy_core::postgres::tenancy_migrator(sqlx::migrate!("./migrations"))
}

/// The channel a `NOTIFY` goes to when a job is enqueued due now, with
/// the queue name as payload; [`wake_on_enqueue`] turns it into worker
/// wake-ups through tenancy-core's shared [`Listener`](tenancy_core::postgres::Listener).
pub const NOTIFY_CHANNEL: &str = "tenancy_jobs";

/// A [`Subscriber`] for [`NOTIFY_CHANNEL`] that wakes the workers
/// claiming from the notified queue (and all of them after the listener
/// reconnected), so jobs enqueued by any replica start without waiting for
/// the poll interval. Polling stays the fallback.
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool, worker: tenancy_jobs::WorkerHandle) -> Result<(), sqlx::Error> {
/// use tenancy_core::postgres::Listener;
/// use tenancy_jobs::postgres::{NOTIFY_CHANNEL, wake_on_enqueue};
/// let mut listener = Listener::new(pool);
/// listener.subscribe([NOTIFY_CHANNEL], wake_on_enqueue([worker.waker()]));
/// let _running = listener.start().await?;
/// # Ok(()) }
/// ```
pub fn wake_on_enqueue(wakers: impl IntoIterator<Item = WorkerWaker>) -> Arc<dyn Subscriber> {
    Arc::new(EnqueueSubscriber {
        wakers: wakers.into_iter().collect(),
    })
}

struct EnqueueSubscriber {
    wakers: Vec<WorkerWaker>,
}

impl Subscriber for EnqueueSubscriber {
    fn notify(&self, _channel: &str, payload: &str) {
        for waker in &self.wakers {
            if waker.claims_from(payload) {
                waker.wake();
            }
        }
    }

    fn resync(&self) {
        for waker in &self.wakers {
            waker.wake();
        }
    }
}

const COLUMNS: &str = "id, queue, kind, payload, tenant_id, state, attempts, max_attempts, \
    run_at, dedupe_key, last_error, locked_by, lease_expires_at, created_at, finished_at, \
    lease_token";

/// How many rows one purge statement deletes, so retention never holds
/// long locks on a big table.
const PURGE_BATCH: i64 = 5_000;

/// Jobs in Postgres. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PgJobStore {
    pool: PgPool,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PgJobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgJobStore").finish_non_exhaustive()
    }
}

fn unavailable(error: sqlx::Error) -> JobError {
    JobError::unavailable(error)
}

fn to_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl PgJobStore {
    /// A store on `pool`, on the system clock.
    pub fn new(pool: PgPool) -> Self {
        Self::with_clock(pool, Arc::new(SystemClock))
    }

    /// A store on `pool` reading time from `clock`.
    pub fn with_clock(pool: PgPool, clock: Arc<dyn Clock>) -> Self {
        Self { pool, clock }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies this crate's migrations (alone; to run several crates' in
    /// one go use [`tenancy_core::postgres::migrate_all`] with
    /// [`migrator`]).
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        tenancy_core::postgres::migrate_all(&self.pool, [migrator()]).await
    }

    /// Enqueues `job` on the caller's connection (usually inside its
    /// transaction), with this store's clock; see [`enqueue_in`].
    pub async fn enqueue_in(
        &self,
        conn: &mut PgConnection,
        job: &NewJob,
    ) -> Result<Enqueued, JobError> {
        insert(conn, job, truncate_to_micros(self.clock.now())).await
    }

    /// Marks the job held by `lease` succeeded on the caller's connection,
    /// so a handler can commit its own writes and the completion in one
    /// transaction: then the job's effect happens exactly once even if the
    /// worker dies right after the commit (the job is no longer running, so
    /// it is not claimed again). The worker's own completion afterwards is
    /// a no-op. [`JobError::LeaseLost`] if the lease is no longer valid:
    /// roll back, the job runs (or ran) elsewhere.
    ///
    /// ```no_run
    /// # async fn demo(store: tenancy_jobs::postgres::PgJobStore, ctx: tenancy_jobs::JobContext) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = store.pool().begin().await?;
    /// sqlx::query("INSERT INTO emails_sent (job_id) VALUES ($1)")
    ///     .bind(ctx.id().as_uuid())
    ///     .execute(&mut *tx)
    ///     .await?;
    /// store.complete_in(&mut tx, ctx.lease()).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn complete_in(
        &self,
        conn: &mut PgConnection,
        lease: &Lease,
    ) -> Result<(), JobError> {
        complete_on(conn, lease, self.clock_now()).await
    }

    fn clock_now(&self) -> OffsetDateTime {
        truncate_to_micros(self.clock.now())
    }

    /// NotFound or LeaseLost, after a guarded update touched no row.
    async fn lease_failure(&self, lease: &Lease) -> JobError {
        match self.exists(lease.job_id).await {
            Ok(true) => JobError::LeaseLost(lease.job_id),
            Ok(false) => JobError::NotFound(lease.job_id),
            Err(error) => error,
        }
    }

    async fn exists(&self, id: JobId) -> Result<bool, JobError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenancy_jobs WHERE id = $1)")
            .bind(id.as_uuid())
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)
    }

    /// NotFound or InvalidState, after a guarded update touched no row.
    async fn state_failure(&self, id: JobId) -> JobError {
        match self.get(id).await {
            Ok(job) => JobError::InvalidState {
                id,
                state: job.state,
            },
            Err(error) => error,
        }
    }
}

/// Marks the job held by `lease` succeeded; a job already completed with
/// this lease is left as is. The token stays on the row (the lease end
/// goes), so that second call can be told apart from a stale holder's.
async fn complete_on(
    conn: &mut PgConnection,
    lease: &Lease,
    now: OffsetDateTime,
) -> Result<(), JobError> {
    let done = sqlx::query(
        "UPDATE tenancy_jobs SET state = 'succeeded', finished_at = $3, updated_at = $3, \
            lease_expires_at = NULL, locked_by = NULL \
         WHERE id = $1 AND lease_token = $2 AND state = 'running'",
    )
    .bind(lease.job_id.as_uuid())
    .bind(lease.token())
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(unavailable)?;
    if done.rows_affected() == 1 {
        return Ok(());
    }
    let found: Option<(String, Option<Uuid>)> =
        sqlx::query_as("SELECT state, lease_token FROM tenancy_jobs WHERE id = $1")
            .bind(lease.job_id.as_uuid())
            .fetch_optional(&mut *conn)
            .await
            .map_err(unavailable)?;
    match found {
        None => Err(JobError::NotFound(lease.job_id)),
        Some((state, token)) if state == "succeeded" && token == Some(lease.token()) => Ok(()),
        Some(_) => Err(JobError::LeaseLost(lease.job_id)),
    }
}

/// Enqueues `job` with the caller's connection: inside the caller's
/// transaction the job exists only if that transaction commits. Times are
/// read from the system clock. A dedupe key held by an active job returns
/// that job's id ([`Enqueued::Existing`]) without failing the transaction.
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// use tenancy_jobs::{JobKind, NewJob, postgres::enqueue_in};
/// let mut tx = pool.begin().await?;
/// sqlx::query("UPDATE invoices SET state = 'issued' WHERE id = 42").execute(&mut *tx).await?;
/// let job = NewJob::new(JobKind::new("invoice.send")?, serde_json::json!({"invoice": 42}))?;
/// enqueue_in(&mut tx, &job).await?;
/// tx.commit().await?; // the invoice and its job, or neither
/// # Ok(()) }
/// ```
pub async fn enqueue_in(conn: &mut PgConnection, job: &NewJob) -> Result<Enqueued, JobError> {
    insert(conn, job, truncate_to_micros(OffsetDateTime::now_utc())).await
}

async fn insert(
    conn: &mut PgConnection,
    job: &NewJob,
    now: OffsetDateTime,
) -> Result<Enqueued, JobError> {
    // A conflicting job may finish between the insert and the lookup; then
    // the next round inserts.
    for _ in 0..5 {
        let id = JobId::new();
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO tenancy_jobs (id, queue, kind, payload, tenant_id, state, attempts, \
                max_attempts, run_at, dedupe_key, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'queued', 0, $6, $7, $8, $9, $9) \
             ON CONFLICT (dedupe_key) \
                WHERE dedupe_key IS NOT NULL AND state IN ('queued', 'running', 'retrying') \
                DO NOTHING \
             RETURNING id",
        )
        .bind(id.as_uuid())
        .bind(job.queue().as_str())
        .bind(job.kind().as_str())
        .bind(job.payload())
        .bind(job.tenant_id().map(|t| t.as_uuid()))
        .bind(to_i32(job.max_attempts()))
        .bind(job.run_at().map_or(now, truncate_to_micros))
        .bind(job.dedupe_key())
        .bind(now)
        .fetch_optional(&mut *conn)
        .await
        .map_err(unavailable)?;
        if inserted.is_some() {
            if job.run_at().is_none_or(|at| at <= now) {
                // Delivered when the caller's transaction commits, and not
                // at all if it rolls back.
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(NOTIFY_CHANNEL)
                    .bind(job.queue().as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(unavailable)?;
            }
            return Ok(Enqueued::Created(id));
        }
        let existing: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM tenancy_jobs WHERE dedupe_key = $1 \
             AND state IN ('queued', 'running', 'retrying')",
        )
        .bind(job.dedupe_key())
        .fetch_optional(&mut *conn)
        .await
        .map_err(unavailable)?;
        if let Some(existing) = existing {
            return Ok(Enqueued::Existing(JobId::from_uuid(existing)));
        }
    }
    Err(JobError::unavailable(
        "the job holding the dedupe key kept changing",
    ))
}

fn job_from_row(row: &PgRow) -> Result<(Job, Option<Uuid>), JobError> {
    let get_err = |e: sqlx::Error| JobError::corrupt(e);
    let text = |name: &str| row.try_get::<String, _>(name).map_err(get_err);
    let count = |name: &str| {
        row.try_get::<i32, _>(name)
            .map_err(get_err)
            .and_then(|n| u32::try_from(n).map_err(JobError::corrupt))
    };
    let job = Job {
        id: JobId::from_uuid(row.try_get("id").map_err(get_err)?),
        kind: JobKind::new(text("kind")?).map_err(JobError::corrupt)?,
        queue: Queue::new(text("queue")?).map_err(JobError::corrupt)?,
        payload: row.try_get("payload").map_err(get_err)?,
        tenant_id: row
            .try_get::<Option<Uuid>, _>("tenant_id")
            .map_err(get_err)?
            .map(TenantId::from_uuid),
        state: text("state")?.parse().map_err(JobError::corrupt)?,
        attempts: count("attempts")?,
        max_attempts: count("max_attempts")?,
        run_at: row.try_get("run_at").map_err(get_err)?,
        dedupe_key: row.try_get("dedupe_key").map_err(get_err)?,
        last_error: row.try_get("last_error").map_err(get_err)?,
        locked_by: row.try_get("locked_by").map_err(get_err)?,
        lease_expires_at: row.try_get("lease_expires_at").map_err(get_err)?,
        created_at: row.try_get("created_at").map_err(get_err)?,
        finished_at: row.try_get("finished_at").map_err(get_err)?,
    };
    let token = row.try_get("lease_token").map_err(get_err)?;
    Ok((job, token))
}

#[async_trait]
impl JobStore for PgJobStore {
    async fn enqueue(&self, job: NewJob) -> Result<Enqueued, JobError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        insert(&mut conn, &job, self.clock_now()).await
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedJob>, JobError> {
        check_claim(request)?;
        let now = self.clock_now();
        let queues: Vec<&str> = request.queues.iter().map(Queue::as_str).collect();
        // Running jobs whose lease ran out go back to the queue (or dead,
        // after their last attempt), so the claim below is one ordered
        // index scan over due jobs.
        sqlx::query(
            "UPDATE tenancy_jobs SET \
                state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'retrying' END, \
                last_error = CASE WHEN attempts >= max_attempts THEN $3 ELSE $4 END, \
                finished_at = CASE WHEN attempts >= max_attempts THEN $2 END, \
                updated_at = $2, lease_token = NULL, lease_expires_at = NULL, locked_by = NULL \
             WHERE id IN (SELECT id FROM tenancy_jobs \
                WHERE state = 'running' AND lease_expires_at <= $2 AND queue = ANY($1) \
                FOR UPDATE SKIP LOCKED)",
        )
        .bind(&queues)
        .bind(now)
        .bind(LEASE_EXPIRED_ON_LAST_ATTEMPT)
        .bind(LEASE_EXPIRED)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        let limit = i64::try_from(request.limit).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "UPDATE tenancy_jobs j SET state = 'running', attempts = j.attempts + 1, \
                lease_token = gen_random_uuid(), lease_expires_at = $3, locked_by = $4, \
                updated_at = $2 \
             FROM (SELECT id FROM tenancy_jobs \
                WHERE state IN ('queued', 'retrying') AND run_at <= $2 AND queue = ANY($1) \
                ORDER BY run_at, id LIMIT $5 \
                FOR UPDATE SKIP LOCKED) picked \
             WHERE j.id = picked.id \
             RETURNING j.*",
        )
        .bind(&queues)
        .bind(now)
        .bind(now + span(request.lease))
        .bind(&request.worker_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let (job, token) = job_from_row(row)?;
            let token = token.ok_or_else(|| JobError::corrupt("claimed job has no lease"))?;
            let lease = Lease::new(job.id, token);
            claimed.push(ClaimedJob::new(job, lease));
        }
        claimed.sort_by_key(|c| (c.job.run_at, c.job.id));
        Ok(claimed)
    }

    async fn heartbeat(
        &self,
        lease: &Lease,
        lease_for: Duration,
    ) -> Result<OffsetDateTime, JobError> {
        let now = self.clock_now();
        let end = now + span(lease_for);
        let done = sqlx::query(
            "UPDATE tenancy_jobs SET lease_expires_at = $3, updated_at = $4 \
             WHERE id = $1 AND lease_token = $2 AND state = 'running'",
        )
        .bind(lease.job_id.as_uuid())
        .bind(lease.token())
        .bind(end)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        if done.rows_affected() == 0 {
            return Err(self.lease_failure(lease).await);
        }
        Ok(end)
    }

    async fn complete(&self, lease: &Lease) -> Result<(), JobError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        complete_on(&mut conn, lease, self.clock_now()).await
    }

    async fn fail(
        &self,
        lease: &Lease,
        error: &str,
        retry_at: Option<OffsetDateTime>,
    ) -> Result<JobState, JobError> {
        let state: Option<String> = sqlx::query_scalar(
            "UPDATE tenancy_jobs SET \
                state = CASE WHEN $4::timestamptz IS NOT NULL AND attempts < max_attempts \
                    THEN 'retrying' ELSE 'dead' END, \
                run_at = CASE WHEN $4::timestamptz IS NOT NULL AND attempts < max_attempts \
                    THEN $4 ELSE run_at END, \
                finished_at = CASE WHEN $4::timestamptz IS NOT NULL AND attempts < max_attempts \
                    THEN NULL ELSE $5 END, \
                last_error = $3, updated_at = $5, \
                lease_token = NULL, lease_expires_at = NULL, locked_by = NULL \
             WHERE id = $1 AND lease_token = $2 AND state = 'running' \
             RETURNING state",
        )
        .bind(lease.job_id.as_uuid())
        .bind(lease.token())
        .bind(truncate_error(error))
        .bind(retry_at.map(truncate_to_micros))
        .bind(self.clock_now())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        match state {
            Some(state) => state.parse().map_err(JobError::corrupt),
            None => Err(self.lease_failure(lease).await),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<(), JobError> {
        let done = sqlx::query(
            "UPDATE tenancy_jobs SET state = 'queued', attempts = GREATEST(attempts - 1, 0), \
                run_at = $3, updated_at = $3, \
                lease_token = NULL, lease_expires_at = NULL, locked_by = NULL \
             WHERE id = $1 AND lease_token = $2 AND state = 'running'",
        )
        .bind(lease.job_id.as_uuid())
        .bind(lease.token())
        .bind(self.clock_now())
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        if done.rows_affected() == 0 {
            return Err(self.lease_failure(lease).await);
        }
        Ok(())
    }

    async fn get(&self, id: JobId) -> Result<Job, JobError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM tenancy_jobs WHERE id = $1"
        )))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?
        .ok_or(JobError::NotFound(id))?;
        job_from_row(&row).map(|(job, _)| job)
    }

    async fn list(&self, filter: &JobFilter, page: &PageRequest) -> Result<Page<Job>, JobError> {
        let after: Option<JobId> = page
            .after_key(LIST_NAME)
            .map_err(|e| JobError::InvalidInput(e.to_string()))?;
        let limit = i64::try_from(page.size.get() + 1).unwrap_or(i64::MAX);
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM tenancy_jobs \
             WHERE ($1::uuid IS NULL OR id > $1) \
             AND ($2::text IS NULL OR state = $2) \
             AND ($3::text IS NULL OR queue = $3) \
             AND ($4::text IS NULL OR kind = $4) \
             AND ($5::uuid IS NULL OR tenant_id = $5) \
             ORDER BY id LIMIT $6"
        )))
        .bind(after.map(|id| id.as_uuid()))
        .bind(filter.state.map(JobState::as_str))
        .bind(filter.queue.as_ref().map(Queue::as_str))
        .bind(filter.kind.as_ref().map(JobKind::as_str))
        .bind(filter.tenant_id.map(|t| t.as_uuid()))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let items = rows
            .iter()
            .map(|row| job_from_row(row).map(|(job, _)| job))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, page.size, |job| {
            Cursor::encode(LIST_NAME, job.id)
        }))
    }

    async fn retry_dead(&self, id: JobId) -> Result<(), JobError> {
        let done = sqlx::query(
            "UPDATE tenancy_jobs SET state = 'queued', attempts = 0, run_at = $2, \
                finished_at = NULL, updated_at = $2 \
             WHERE id = $1 AND state = 'dead' RETURNING dedupe_key",
        )
        .bind(id.as_uuid())
        .bind(self.clock_now())
        .fetch_optional(&self.pool)
        .await;
        match done {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(self.state_failure(id).await),
            Err(sqlx::Error::Database(e))
                if e.kind() == sqlx::error::ErrorKind::UniqueViolation =>
            {
                let job = self.get(id).await?;
                Err(JobError::DuplicateKey(job.dedupe_key.unwrap_or_default()))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn cancel(&self, id: JobId) -> Result<(), JobError> {
        let done = sqlx::query(
            "UPDATE tenancy_jobs SET state = 'cancelled', finished_at = $2, updated_at = $2 \
             WHERE id = $1 AND state IN ('queued', 'retrying')",
        )
        .bind(id.as_uuid())
        .bind(self.clock_now())
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        if done.rows_affected() == 0 {
            return Err(self.state_failure(id).await);
        }
        Ok(())
    }

    async fn purge_finished(
        &self,
        before: OffsetDateTime,
        include_dead: bool,
    ) -> Result<u64, JobError> {
        let mut purged = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM tenancy_jobs WHERE id IN (SELECT id FROM tenancy_jobs \
                    WHERE finished_at < $1 \
                    AND (state IN ('succeeded', 'cancelled') OR ($2 AND state = 'dead')) \
                    LIMIT $3)",
            )
            .bind(before)
            .bind(include_dead)
            .bind(PURGE_BATCH)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
            purged += done.rows_affected();
            if done.rows_affected() < PURGE_BATCH as u64 {
                return Ok(purged);
            }
        }
    }

    async fn enqueue_due(
        &self,
        name: &str,
        every: Duration,
        job: NewJob,
    ) -> Result<Option<JobId>, JobError> {
        check_schedule(name, every)?;
        let now = self.clock_now();
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        let mut tx = conn.begin().await.map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO tenancy_job_schedules (name, next_run_at, updated_at) \
             VALUES ($1, $2, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        // Another replica holding the row is enqueueing this tick.
        let due: Option<OffsetDateTime> = sqlx::query_scalar(
            "SELECT next_run_at FROM tenancy_job_schedules \
             WHERE name = $1 AND next_run_at <= $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(name)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some(due) = due else {
            tx.commit().await.map_err(unavailable)?;
            return Ok(None);
        };
        let enqueued = insert(&mut tx, &job.with_run_at(due), now).await?;
        sqlx::query(
            "UPDATE tenancy_job_schedules SET next_run_at = $2, updated_at = $3 WHERE name = $1",
        )
        .bind(name)
        .bind(next_tick(due, every, now))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(enqueued.id()))
    }

    fn now(&self) -> OffsetDateTime {
        self.clock_now()
    }
}
