//! The Postgres run store (feature `postgres`).
//!
//! - Two tables, `tenancy_provisioning_runs` and
//!   `tenancy_provisioning_steps`, created by migrations numbered from 9501
//!   ([`migrator`]), recorded with the other tenancy crates' (see
//!   [`tenancy_core::postgres::migrate_all`]).
//! - No row-level security on them: a run starts before its tenant exists
//!   and is operator data (input, progress, errors), read only by the
//!   provisioner and the operator routes; nothing tenant-scoped reads them.
//!   The tenant's own rows that the steps create live in the tenant-owned
//!   tables of the other crates, under their security.
//! - A claim is one `UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED)`
//!   that stamps a lease token and `locked_until`; every later write of the
//!   worker is conditional on the token, so a worker whose lease was taken
//!   over writes nothing. Each save (run and steps) is one transaction.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::Connection;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnection, PgPool};
use tenancy_core::{Cursor, Page, PageRequest, StoreError};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::model::{Lease, Run, RunId, RunStatus, StepRecord};
use crate::store::{
    ProvisioningStore, ProvisioningStoreError, RUNS_LIST, apply_cancel, apply_retry,
};

/// The embedded tenancy-provisioning migrations (versions 9501 and up).
/// Run [`tenancy_core::postgres::migrator`] too, or both through
/// [`tenancy_core::postgres::migrate_all`].
pub fn migrator() -> Migrator {
    tenancy_core::postgres::tenancy_migrator(sqlx::migrate!("./migrations"))
}

/// Runs in Postgres. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PgProvisioningStore {
    pool: PgPool,
}

impl std::fmt::Debug for PgProvisioningStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgProvisioningStore")
            .finish_non_exhaustive()
    }
}

impl PgProvisioningStore {
    /// A store on `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Applies this crate's migrations (tenancy-core's are not needed by
    /// the tables, but run them through
    /// [`tenancy_core::postgres::migrate_all`] when the steps use a
    /// Postgres directory).
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        tenancy_core::postgres::migrate_all(&self.pool, [migrator()]).await
    }
}

fn unavailable(error: sqlx::Error) -> ProvisioningStoreError {
    ProvisioningStoreError::Store(StoreError::unavailable(error))
}

fn corrupt(error: impl Into<tenancy_core::BoxError>) -> ProvisioningStoreError {
    ProvisioningStoreError::Store(StoreError::Corrupt(error.into()))
}

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn uint(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

type RunRow = (
    Uuid,
    String,
    Value,
    Value,
    String,
    OffsetDateTime,
    OffsetDateTime,
    i32,
    Option<String>,
    OffsetDateTime,
    OffsetDateTime,
);

type StepRow = (
    i32,
    String,
    String,
    i32,
    Option<OffsetDateTime>,
    Option<OffsetDateTime>,
    Option<String>,
);

async fn load(
    conn: &mut PgConnection,
    id: Uuid,
    lock: bool,
) -> Result<Run, ProvisioningStoreError> {
    let sql = if lock {
        "SELECT id, definition, input, state, status, deadline, not_before, manual_retries,
                last_error, created_at, updated_at
         FROM tenancy_provisioning_runs WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT id, definition, input, state, status, deadline, not_before, manual_retries,
                last_error, created_at, updated_at
         FROM tenancy_provisioning_runs WHERE id = $1"
    };
    let row: Option<RunRow> = sqlx::query_as(sql)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(unavailable)?;
    let Some((
        id,
        definition,
        input,
        state,
        status,
        deadline,
        not_before,
        manual_retries,
        last_error,
        created_at,
        updated_at,
    )) = row
    else {
        return Err(ProvisioningStoreError::NotFound);
    };
    let steps: Vec<StepRow> = sqlx::query_as(
        "SELECT index, name, status, attempts, started_at, finished_at, last_error
         FROM tenancy_provisioning_steps WHERE run_id = $1 ORDER BY index",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await
    .map_err(unavailable)?;
    let state = match state {
        Value::Object(map) => map,
        _ => return Err(corrupt("run state is not an object")),
    };
    let steps = steps
        .into_iter()
        .map(
            |(index, name, status, attempts, started_at, finished_at, last_error)| {
                let mut step = StepRecord::pending(uint(index), name);
                step.status = status.parse().map_err(corrupt)?;
                step.attempts = uint(attempts);
                step.started_at = started_at;
                step.finished_at = finished_at;
                step.last_error = last_error;
                Ok(step)
            },
        )
        .collect::<Result<Vec<_>, ProvisioningStoreError>>()?;
    let mut run = Run::new(definition, input, [], created_at, deadline);
    run.id = RunId::from_uuid(id);
    run.state = state;
    run.status = status.parse().map_err(corrupt)?;
    run.not_before = not_before;
    run.manual_retries = uint(manual_retries);
    run.last_error = last_error;
    run.updated_at = updated_at;
    run.steps = steps;
    Ok(run)
}

async fn write_steps(conn: &mut PgConnection, run: &Run) -> Result<(), ProvisioningStoreError> {
    for step in &run.steps {
        sqlx::query(
            "UPDATE tenancy_provisioning_steps
             SET status = $3, attempts = $4, started_at = $5, finished_at = $6, last_error = $7
             WHERE run_id = $1 AND index = $2",
        )
        .bind(run.id.as_uuid())
        .bind(int(step.index))
        .bind(step.status.as_str())
        .bind(int(step.attempts))
        .bind(step.started_at)
        .bind(step.finished_at)
        .bind(&step.last_error)
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
    }
    Ok(())
}

/// Writes the fields cancel and retry change.
async fn write_request(conn: &mut PgConnection, run: &Run) -> Result<(), ProvisioningStoreError> {
    sqlx::query(
        "UPDATE tenancy_provisioning_runs
         SET status = $2, not_before = $3, deadline = $4, manual_retries = $5,
             last_error = $6, updated_at = $7
         WHERE id = $1",
    )
    .bind(run.id.as_uuid())
    .bind(run.status.as_str())
    .bind(run.not_before)
    .bind(run.deadline)
    .bind(int(run.manual_retries))
    .bind(&run.last_error)
    .bind(run.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(unavailable)?;
    write_steps(conn, run).await
}

#[async_trait]
impl ProvisioningStore for PgProvisioningStore {
    async fn insert_run(&self, run: &Run) -> Result<(), ProvisioningStoreError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        let mut tx = conn.begin().await.map_err(unavailable)?;
        let inserted = sqlx::query(
            "INSERT INTO tenancy_provisioning_runs
                 (id, definition, input, state, status, deadline, not_before, manual_retries,
                  last_error, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(run.id.as_uuid())
        .bind(&run.definition)
        .bind(&run.input)
        .bind(Value::Object(run.state.clone()))
        .bind(run.status.as_str())
        .bind(run.deadline)
        .bind(run.not_before)
        .bind(int(run.manual_retries))
        .bind(&run.last_error)
        .bind(run.created_at)
        .bind(run.updated_at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(ProvisioningStoreError::Duplicate);
            }
            other => {
                other.map_err(unavailable)?;
            }
        }
        for step in &run.steps {
            sqlx::query(
                "INSERT INTO tenancy_provisioning_steps
                     (run_id, index, name, status, attempts, started_at, finished_at, last_error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(run.id.as_uuid())
            .bind(int(step.index))
            .bind(&step.name)
            .bind(step.status.as_str())
            .bind(int(step.attempts))
            .bind(step.started_at)
            .bind(step.finished_at)
            .bind(&step.last_error)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn get_run(&self, id: RunId) -> Result<Run, ProvisioningStoreError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        let mut tx = conn.begin().await.map_err(unavailable)?;
        let run = load(&mut tx, id.as_uuid(), false).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(run)
    }

    async fn list_runs(
        &self,
        status: Option<RunStatus>,
        page: &PageRequest,
    ) -> Result<Page<Run>, ProvisioningStoreError> {
        let after: Option<RunId> = page.after_key(RUNS_LIST).map_err(StoreError::from)?;
        let limit = i64::try_from(page.size.get() + 1).unwrap_or(i64::MAX);
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        let mut tx = conn.begin().await.map_err(unavailable)?;
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM tenancy_provisioning_runs
             WHERE ($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR id > $2)
             ORDER BY id LIMIT $3",
        )
        .bind(status.map(RunStatus::as_str))
        .bind(after.map(|id| id.as_uuid()))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        let mut items = Vec::with_capacity(ids.len());
        for id in ids {
            items.push(load(&mut tx, id, false).await?);
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(Page::from_overfetch(items, page.size, |r| {
            Cursor::encode(RUNS_LIST, r.id)
        }))
    }

    async fn claim(
        &self,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Option<(Run, Lease)>, ProvisioningStoreError> {
        let token = Uuid::now_v7();
        let until = tenancy_core::truncate_to_micros(until);
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        let mut tx = conn.begin().await.map_err(unavailable)?;
        let id: Option<Uuid> = sqlx::query_scalar(
            "UPDATE tenancy_provisioning_runs
             SET lease_token = $3, locked_until = $2
             WHERE id = (
                 SELECT id FROM tenancy_provisioning_runs
                 WHERE status IN ('pending', 'running', 'cancelling')
                   AND (locked_until IS NULL OR locked_until <= $1)
                   AND (status = 'cancelling' OR not_before <= $1 OR deadline <= $1)
                 ORDER BY not_before, id
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED
             )
             RETURNING id",
        )
        .bind(now)
        .bind(until)
        .bind(token)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some(id) = id else {
            tx.commit().await.map_err(unavailable)?;
            return Ok(None);
        };
        let run = load(&mut tx, id, false).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some((
            run,
            Lease {
                run_id: RunId::from_uuid(id),
                token,
                until,
            },
        )))
    }

    async fn renew(
        &self,
        lease: &Lease,
        until: OffsetDateTime,
    ) -> Result<RunStatus, ProvisioningStoreError> {
        let status: Option<String> = sqlx::query_scalar(
            "UPDATE tenancy_provisioning_runs SET locked_until = $3
             WHERE id = $1 AND lease_token = $2
             RETURNING status",
        )
        .bind(lease.run_id.as_uuid())
        .bind(lease.token)
        .bind(until)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        status
            .ok_or(ProvisioningStoreError::LeaseLost)?
            .parse()
            .map_err(corrupt)
    }

    async fn save(
        &self,
        lease: &Lease,
        run: &Run,
        release: bool,
    ) -> Result<(), ProvisioningStoreError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        let mut tx = conn.begin().await.map_err(unavailable)?;
        let updated = sqlx::query(
            "UPDATE tenancy_provisioning_runs
             SET status = CASE WHEN status = 'cancelling' AND $3 IN ('pending', 'running')
                               THEN status ELSE $3 END,
                 last_error = CASE WHEN status = 'cancelling' AND $3 IN ('pending', 'running')
                                   THEN last_error ELSE $6 END,
                 state = $4, not_before = $5, updated_at = $7,
                 lease_token = CASE WHEN $8 THEN NULL ELSE lease_token END,
                 locked_until = CASE WHEN $8 THEN NULL ELSE locked_until END
             WHERE id = $1 AND lease_token = $2",
        )
        .bind(lease.run_id.as_uuid())
        .bind(lease.token)
        .bind(run.status.as_str())
        .bind(Value::Object(run.state.clone()))
        .bind(run.not_before)
        .bind(&run.last_error)
        .bind(run.updated_at)
        .bind(release)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        if updated.rows_affected() == 0 {
            return Err(ProvisioningStoreError::LeaseLost);
        }
        write_steps(&mut tx, run).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn request_cancel(
        &self,
        id: RunId,
        now: OffsetDateTime,
        reason: &str,
    ) -> Result<Run, ProvisioningStoreError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        let mut tx = conn.begin().await.map_err(unavailable)?;
        let mut run = load(&mut tx, id.as_uuid(), true).await?;
        if apply_cancel(&mut run, now, reason)? {
            write_request(&mut tx, &run).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(run)
    }

    async fn retry(
        &self,
        id: RunId,
        now: OffsetDateTime,
        deadline: OffsetDateTime,
    ) -> Result<Run, ProvisioningStoreError> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        let mut tx = conn.begin().await.map_err(unavailable)?;
        let mut run = load(&mut tx, id.as_uuid(), true).await?;
        apply_retry(&mut run, now, deadline)?;
        write_request(&mut tx, &run).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(run)
    }
}
