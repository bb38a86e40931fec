//! The conformance suites against Postgres, plus what only Postgres has:
//! row-level security on the metering tables (as a non-superuser role) and
//! writers cut off mid-transaction.
//!
//! Needs `DATABASE_URL`; skipped without it unless `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers report failure by panicking

tenancy_metering::conformance_tests!(tenancy_metering::testkit::postgres::fixture());

mod outbox {
    tenancy_metering::outbox_conformance_tests!(
        tenancy_metering::testkit::postgres::outbox_fixture()
    );
}

mod quotas {
    tenancy_metering::quota_conformance_tests!(tenancy_metering::testkit::postgres::quota_fixture());
}

use std::sync::Arc;
use std::time::Duration;

use tenancy_core::postgres::begin_tenant_transaction;
use tenancy_metering::store::postgres::PgMeteringStore;
use tenancy_metering::testkit::postgres::fixture_with_schema;
use tenancy_metering::testkit::{NOW, create_tenant, metering, meters};
use tenancy_metering::*;

#[tokio::test]
async fn row_level_security_hides_other_tenants_rows() {
    let Some((schema, f)) = fixture_with_schema().await else {
        return;
    };
    let (superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&schema.pool)
            .await
            .unwrap();
    assert!(
        !superuser && !bypass,
        "connect as an ordinary role to test row-level security"
    );
    let m = metering(&f);
    let a = create_tenant(&f).await;
    let b = create_tenant(&f).await;
    let recorded = m
        .record(
            &a,
            NewEvent::new("users", 7, NOW, IdempotencyKey::new("k").unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(recorded, Recorded::Counted);
    let outbox = PgMeteringStore::new(schema.pool.clone());
    let report = UsageReport {
        tenant_id: a.tenant_id(),
        meter: MeterName::new("users").unwrap(),
        period_start: NOW,
        sequence: 1,
        value: 7,
        identifier: identifier(a.tenant_id(), &MeterName::new("users").unwrap(), NOW, 1),
        timestamp: NOW,
        attempts: 0,
    };
    assert!(outbox.insert(&report, 0).await.unwrap());
    assert!(
        !outbox.insert(&report, 0).await.unwrap(),
        "a sequence is taken once"
    );
    for (table, rows) in [
        ("tenancy_metering_outbox", 1),
        ("tenancy_metering_events", 1),
        ("tenancy_metering_rollups", 3),
        ("tenancy_metering_uniques", 3),
    ] {
        let count = |tenant| {
            let sql = format!("SELECT count(*) FROM {table}");
            let pool = schema.pool.clone();
            async move {
                let mut tx = match tenant {
                    Some(t) => begin_tenant_transaction(&pool, t).await.unwrap(),
                    None => pool.begin().await.unwrap(),
                };
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(count(None).await, 0, "{table} unscoped");
        assert_eq!(count(Some(b.tenant_id())).await, 0, "{table} seen from B");
        assert_eq!(
            count(Some(a.tenant_id())).await,
            rows,
            "{table} seen from A"
        );
    }
    // B cannot write usage for A.
    let mut tx = begin_tenant_transaction(&schema.pool, b.tenant_id())
        .await
        .unwrap();
    let forged = sqlx::query(
        "INSERT INTO tenancy_metering_events (tenant_id, idempotency_key, meter, value, occurred_at, dimensions) \
         VALUES ($1, 'x', 'calls', 1, now(), '{}')",
    )
    .bind(a.tenant_id().as_uuid())
    .execute(&mut *tx)
    .await;
    assert!(
        forged
            .unwrap_err()
            .to_string()
            .contains("row-level security")
    );
}

/// Writers cancelled at arbitrary points of a durable write (the task is
/// dropped mid-await, as a process killed there would drop its
/// connection's transaction), then retried: every event counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_cut_off_anywhere_count_once() {
    let Some((schema, f)) = fixture_with_schema().await else {
        return;
    };
    let scope = create_tenant(&f).await;
    let store = Arc::new(PgMeteringStore::new(schema.pool.clone()));
    let m =
        Metering::new(meters(), store).with_clock(Arc::new(tenancy_core::ManualClock::new(NOW)));
    let events = 40;
    for i in 0..events {
        let event = NewEvent::new(
            "tokens",
            1,
            NOW,
            IdempotencyKey::new(&format!("e{i}")).unwrap(),
        );
        let writer = {
            let m = m.clone();
            let event = event.clone();
            tokio::spawn(async move { m.record(&scope, event).await })
        };
        // Cut off after 0 to 3.9 ms: before, during and after the commit.
        tokio::time::sleep(Duration::from_micros(100 * (i % 40))).await;
        writer.abort();
        let _ = writer.await;
        // The retry after the crash.
        let recorded = m.record(&scope, event).await.unwrap();
        assert!(matches!(recorded, Recorded::Counted | Recorded::Duplicate));
    }
    let day = Granularity::Day.floor(NOW);
    let (_, points) = m
        .usage(
            &scope,
            "tokens",
            day,
            day + time::Duration::DAY,
            Granularity::Day,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(points[0].value, events as i64);
    let rows: i64 = {
        let mut tx = begin_tenant_transaction(&schema.pool, scope.tenant_id())
            .await
            .unwrap();
        sqlx::query_scalar("SELECT count(*) FROM tenancy_metering_events")
            .fetch_one(&mut *tx)
            .await
            .unwrap()
    };
    assert_eq!(rows, events as i64);
}

/// A large buffered batch goes to Postgres in one statement per table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_flush() {
    let Some((_schema, f)) = fixture_with_schema().await else {
        return;
    };
    let m = metering(&f);
    let scope = create_tenant(&f).await;
    let ingest = m.buffered(BufferConfig::default());
    for i in 0..20_000i64 {
        let at = NOW - time::Duration::seconds(i % 7_200);
        let route = format!("/r{}", i % 5);
        ingest
            .add(&scope, "calls", 1, at, &[("route", &route)])
            .unwrap();
    }
    let report = ingest.flush().await;
    assert_eq!(report.events, 20_000);
    assert_eq!(report.retained, 0);
    let day = Granularity::Day.floor(NOW);
    let (_, points) = m
        .usage(
            &scope,
            "calls",
            day,
            day + time::Duration::DAY,
            Granularity::Hour,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(points.iter().map(|p| p.value).sum::<i64>(), 20_000);
}
