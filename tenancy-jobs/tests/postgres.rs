//! The conformance suites against Postgres, plus what only Postgres has:
//! enqueue inside the caller's transaction, migrations shared with the
//! other tenancy crates, and a worker whose connections are killed
//! mid-job.
//!
//! Needs `DATABASE_URL`; skipped without it unless `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers report failure by panicking

tenancy_jobs::conformance_tests!(tenancy_jobs::testkit::postgres::fixture());

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tenancy_core::postgres::PgTransaction;
use tenancy_jobs::postgres::{PgJobStore, enqueue_in, migrator};
use tenancy_jobs::testkit::postgres::fixture_with_schema;
use tenancy_jobs::testkit::wait_for;
use tenancy_jobs::*;
use tokio::sync::{Notify, mpsc};

fn job(kind: &str) -> NewJob {
    NewJob::new(JobKind::new(kind).unwrap(), serde_json::json!({})).unwrap()
}

/// A job enqueued in a transaction exists only if the transaction commits,
/// whether the caller holds a sqlx transaction or tenancy-core's.
#[tokio::test]
async fn enqueue_commits_and_rolls_back_with_the_callers_transaction() {
    let Some((schema, f)) = fixture_with_schema().await else {
        return;
    };
    let pool = &schema.pool;
    let store = PgJobStore::with_clock(pool.clone(), f.clock.clone());

    let mut tx = pool.begin().await.unwrap();
    let dropped = enqueue_in(&mut tx, &job("a")).await.unwrap().id();
    tx.rollback().await.unwrap();
    assert!(matches!(
        store.get(dropped).await,
        Err(JobError::NotFound(_))
    ));

    let mut tx = pool.begin().await.unwrap();
    let kept = store.enqueue_in(&mut tx, &job("a")).await.unwrap().id();
    // Invisible to others until the commit.
    assert!(matches!(store.get(kept).await, Err(JobError::NotFound(_))));
    tx.commit().await.unwrap();
    assert_eq!(store.get(kept).await.unwrap().state, JobState::Queued);

    let tx = PgTransaction::from_sqlx(pool.begin().await.unwrap());
    let via_core = {
        let mut conn = tx.connection().await.unwrap();
        enqueue_in(&mut conn, &job("b").with_dedupe_key("once").unwrap())
            .await
            .unwrap()
    };
    // A duplicate key inside the same transaction returns the same job and
    // leaves the transaction usable.
    let again = {
        let mut conn = tx.connection().await.unwrap();
        enqueue_in(&mut conn, &job("b").with_dedupe_key("once").unwrap())
            .await
            .unwrap()
    };
    assert_eq!(again, Enqueued::Existing(via_core.id()));
    tx.into_sqlx().commit().await.unwrap();
    assert_eq!(
        store.get(via_core.id()).await.unwrap().state,
        JobState::Queued
    );
}

/// The jobs migrator runs beside tenancy-core's in one database and
/// records its versions (8001+) in tenancy's migrations table.
#[tokio::test]
async fn migrations_coexist_with_the_other_crates() {
    let Some((schema, _f)) = fixture_with_schema().await else {
        return;
    };
    tenancy_core::postgres::migrate_all(
        &schema.pool,
        [tenancy_core::postgres::migrator(), migrator()],
    )
    .await
    .unwrap();
    // Running again, alone or together, is a no-op.
    PgJobStore::new(schema.pool.clone())
        .migrate()
        .await
        .unwrap();
    let versions: Vec<i64> = sqlx::query_scalar(
        "SELECT version FROM _tenancy_migrations WHERE version >= 8000 ORDER BY version",
    )
    .fetch_all(&schema.pool)
    .await
    .unwrap();
    assert_eq!(versions, vec![8001]);
    let core: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM _tenancy_migrations WHERE version BETWEEN 1000 AND 1999",
    )
    .fetch_one(&schema.pool)
    .await
    .unwrap();
    assert!(core > 0);
}

/// A worker whose database connections are all terminated in the middle
/// of a job reconnects and completes it; the effect (a row keyed by job
/// id) is written once and the job ran once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_survives_its_connections_being_killed_mid_job() {
    let Some((schema, f)) = fixture_with_schema().await else {
        return;
    };
    sqlx::query("CREATE TABLE effects (job_id uuid PRIMARY KEY, runs integer NOT NULL)")
        .execute(&schema.pool)
        .await
        .unwrap();
    let app_name = format!("jobs_kill_{}", uuid::Uuid::now_v7().simple());
    let options = PgConnectOptions::from_str(&schema.url)
        .unwrap()
        .options([("search_path", schema.name.as_str())])
        .application_name(&app_name);
    let worker_pool = PgPoolOptions::new()
        .max_connections(3)
        .connect_with(options)
        .await
        .unwrap();
    let store: Arc<dyn JobStore> = Arc::new(PgJobStore::with_clock(worker_pool, f.clock.clone()));
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let gate = Arc::new(Notify::new());
    let opened = gate.clone();
    let effects = schema.pool.clone();
    let worker = Worker::new(
        store,
        WorkerConfig::default()
            .with_poll_interval(Duration::from_millis(10))
            .with_lease(Duration::from_secs(30), Duration::from_millis(20))
            .with_retention(None),
    )
    .handler(handler_fn(JobKind::new("charge").unwrap(), move |ctx| {
        let started_tx = started_tx.clone();
        let opened = opened.clone();
        let effects = effects.clone();
        async move {
            let _ = started_tx.send(());
            opened.notified().await;
            sqlx::query(
                "INSERT INTO effects (job_id, runs) VALUES ($1, 1) \
                 ON CONFLICT (job_id) DO UPDATE SET runs = effects.runs + 1",
            )
            .bind(ctx.id().as_uuid())
            .execute(&effects)
            .await
            .map_err(HandlerError::retry)?;
            Ok(())
        }
    }))
    .start();
    let id = f.store.enqueue(job("charge")).await.unwrap().id();
    worker.wake();
    started.recv().await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&app_name)
    .fetch_all(&schema.pool)
    .await
    .unwrap();
    assert!(!killed.is_empty() && killed.iter().all(|k| *k));
    // Heartbeats meet the dead connections before the handler goes on.
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.notify_one();
    let done = wait_for(f.store.as_ref(), id, "completion", |j| {
        j.state == JobState::Succeeded
    })
    .await;
    assert_eq!(done.attempts, 1);
    let runs: i32 = sqlx::query_scalar("SELECT runs FROM effects WHERE job_id = $1")
        .bind(id.as_uuid())
        .fetch_one(&schema.pool)
        .await
        .unwrap();
    assert_eq!(runs, 1);
    worker.shutdown(Duration::from_secs(5)).await;
}

/// An enqueue sends its queue on the jobs channel when the caller's
/// transaction commits, and nothing when it rolls back.
#[tokio::test]
async fn enqueue_notifies_on_commit_only() {
    use tenancy_core::postgres::{FnSubscriber, Listener};
    use tenancy_jobs::postgres::NOTIFY_CHANNEL;
    let Some((schema, _f)) = fixture_with_schema().await else {
        return;
    };
    let (tx_notices, mut notices) = mpsc::unbounded_channel::<String>();
    let mut listener = Listener::new(schema.pool.clone());
    listener.subscribe(
        [NOTIFY_CHANNEL],
        FnSubscriber::new(
            move |_channel, payload| {
                let _ = tx_notices.send(payload.to_owned());
            },
            || {},
        ),
    );
    let _running = listener.start().await.unwrap();
    let mut tx = schema.pool.begin().await.unwrap();
    let rolled = job("a").with_queue(Queue::new("rolled").unwrap());
    enqueue_in(&mut tx, &rolled).await.unwrap();
    tx.rollback().await.unwrap();
    let mut tx = schema.pool.begin().await.unwrap();
    let later = job("a")
        .with_queue(Queue::new("later").unwrap())
        .with_run_at(time::OffsetDateTime::now_utc() + time::Duration::hours(1));
    enqueue_in(&mut tx, &later).await.unwrap();
    let kept = job("a").with_queue(Queue::new("kept").unwrap());
    enqueue_in(&mut tx, &kept).await.unwrap();
    tx.commit().await.unwrap();
    // Notices arrive in commit order: a notice of the rolled-back or the
    // not-yet-due job would come first. The channel is database-wide, so
    // other tests' enqueues (other queues) are passed over.
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match notices.recv().await {
                Some(queue) if ["rolled", "later", "kept"].contains(&queue.as_str()) => {
                    break Some(queue);
                }
                Some(_) => continue,
                None => break None,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(first.as_deref(), Some("kept"));
}

/// A worker polling once a minute starts a job enqueued by another
/// replica at once when woken through the shared listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_wakes_idle_workers() {
    use tenancy_core::postgres::Listener;
    use tenancy_jobs::postgres::{NOTIFY_CHANNEL, wake_on_enqueue};
    let Some((schema, f)) = fixture_with_schema().await else {
        return;
    };
    let worker = Worker::new(
        f.others[0].clone(),
        WorkerConfig::default()
            .with_poll_interval(Duration::from_secs(60))
            .with_retention(None),
    )
    .handler(handler_fn(JobKind::new("ping").unwrap(), |_ctx| async {
        Ok(())
    }))
    .start();
    let mut listener = Listener::new(schema.pool.clone());
    listener.subscribe([NOTIFY_CHANNEL], wake_on_enqueue([worker.waker()]));
    let _running = listener.start().await.unwrap();
    for _ in 0..3 {
        // Each job is enqueued once the worker went back to sleep after
        // the previous one.
        let id = f.others[1].enqueue(job("ping")).await.unwrap().id();
        wait_for(f.store.as_ref(), id, "completion", |j| {
            j.state == JobState::Succeeded
        })
        .await;
    }
    worker.shutdown(Duration::from_secs(5)).await;
}

/// A handler that writes its effect and completes the job in one
/// transaction gets exactly-once effects even when its worker dies right
/// after the commit: the job is not claimed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completing_in_the_handlers_transaction_survives_a_crash_after_commit() {
    let Some((schema, f)) = fixture_with_schema().await else {
        return;
    };
    sqlx::query("CREATE TABLE effects (job_id uuid PRIMARY KEY)")
        .execute(&schema.pool)
        .await
        .unwrap();
    let store = Arc::new(PgJobStore::with_clock(schema.pool.clone(), f.clock.clone()));
    let (committed_tx, mut committed) = mpsc::unbounded_channel::<JobId>();
    let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let make = |store: Arc<PgJobStore>| {
        let committed_tx = committed_tx.clone();
        let runs = runs.clone();
        let handler_store = store.clone();
        Worker::new(
            store,
            WorkerConfig::default()
                .with_poll_interval(Duration::from_millis(10))
                .with_retention(None),
        )
        .handler(handler_fn(JobKind::new("charge").unwrap(), move |ctx| {
            let store = handler_store.clone();
            let committed_tx = committed_tx.clone();
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut tx = store.pool().begin().await.map_err(HandlerError::retry)?;
                sqlx::query("INSERT INTO effects (job_id) VALUES ($1)")
                    .bind(ctx.id().as_uuid())
                    .execute(&mut *tx)
                    .await
                    .map_err(HandlerError::retry)?;
                store
                    .complete_in(&mut tx, ctx.lease())
                    .await
                    .map_err(HandlerError::retry)?;
                tx.commit().await.map_err(HandlerError::retry)?;
                let _ = committed_tx.send(ctx.id());
                // The worker dies after the commit, before it hears back.
                std::future::pending::<()>().await;
                Ok(())
            }
        }))
    };
    let first = make(store.clone()).start();
    let id = f.store.enqueue(job("charge")).await.unwrap().id();
    first.wake();
    assert_eq!(committed.recv().await, Some(id));
    first.abort();
    assert_eq!(f.store.get(id).await.unwrap().state, JobState::Succeeded);
    f.clock.advance(time::Duration::minutes(5));
    // Nothing to reclaim: the job finished with the effect.
    assert!(
        f.store
            .claim(&ClaimRequest::new(
                vec![Queue::default_queue()],
                "rescuer",
                10,
                Duration::from_secs(30),
            ))
            .await
            .unwrap()
            .is_empty()
    );
    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
        .fetch_one(&schema.pool)
        .await
        .unwrap();
    assert_eq!(effects, 1);
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
}
