//! The conformance suite on Postgres (`DATABASE_URL`; skipped without it
//! unless `CI=true`), plus row-level security as a non-superuser role.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

tenancy_webhooks::conformance_tests!(tenancy_webhooks::testkit::postgres::fixture());

#[tokio::test]
async fn row_level_security_hides_other_tenants_rows() {
    let Some((schema, f)) = tenancy_webhooks::testkit::postgres::fixture_with_schema().await else {
        return;
    };
    let (superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&schema.pool)
            .await
            .unwrap();
    assert!(
        !superuser && !bypass,
        "RLS is only proven as an ordinary role"
    );
    let a = tenancy_webhooks::testkit::create_tenant(&f, "rls-a").await;
    let b = tenancy_webhooks::testkit::create_tenant(&f, "rls-b").await;
    let webhooks_store = f.store.clone();
    let endpoint = tenancy_webhooks::testkit::sample_endpoint(a);
    webhooks_store
        .create_endpoint(&endpoint, &tenancy_webhooks::testkit::sample_secrets(), 10)
        .await
        .unwrap();
    // Scoped to tenant b, even a query without a tenant filter sees nothing.
    let mut tx = tenancy_core::postgres::begin_tenant_transaction(&schema.pool, b)
        .await
        .unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy_webhook_endpoints")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, 0);
    // Nor can it write a row for tenant a.
    let write = sqlx::query(
        "UPDATE tenancy_webhook_endpoints SET url = 'https://evil.example/' WHERE id = $1",
    )
    .bind(endpoint.id.as_uuid())
    .execute(&mut *tx)
    .await
    .unwrap();
    assert_eq!(write.rows_affected(), 0);
    drop(tx);
    let mut tx = tenancy_core::postgres::begin_tenant_transaction(&schema.pool, a)
        .await
        .unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy_webhook_endpoints")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, 1);
    drop(tx);

    // The purge policies open other tenants' log and events only to a
    // transaction that sets tenancy.webhook_purge: tenant b's cannot
    // delete tenant a's.
    let event = tenancy_core::Event {
        id: tenancy_core::EventId::new(),
        tenant_id: a,
        seq: 1,
        event_type: tenancy_core::EventType::new("member.joined").unwrap(),
        version: 1,
        occurred_at: time::OffsetDateTime::now_utc(),
        data: serde_json::json!({}),
    };
    webhooks_store.put_message(&event).await.unwrap();
    let mut tx = tenancy_core::postgres::begin_tenant_transaction(&schema.pool, b)
        .await
        .unwrap();
    for delete in [
        "DELETE FROM tenancy_webhook_messages",
        "DELETE FROM tenancy_webhook_deliveries",
    ] {
        let deleted = sqlx::query(delete)
            .execute(&mut *tx)
            .await
            .unwrap()
            .rows_affected();
        assert_eq!(deleted, 0, "{delete}");
    }
    drop(tx);
    webhooks_store.get_message(a, event.id).await.unwrap();
}

mod end_to_end {
    //! Postgres throughout: the core backend's outbox, the relay, the
    //! Postgres job store and worker, the Postgres webhook store.

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::body::Bytes;
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use tenancy_core::outbox::ReplayFrom;
    use tenancy_core::postgres::PgBackend;
    use tenancy_core::testkit::postgres::TestSchema;
    use tenancy_core::{Backend, EventFeed, PageRequest};
    use tenancy_events::{Relay, RelayConfig};
    use tenancy_jobs::postgres::PgJobStore;
    use tenancy_jobs::{Worker, WorkerConfig};
    use tenancy_webhooks::postgres::PgWebhookStore;
    use tenancy_webhooks::*;

    type Seen = Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>;

    async fn receiver() -> (String, Seen) {
        async fn hook(
            State(seen): State<Seen>,
            Path(path): Path<String>,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            let mut seen = seen.lock().unwrap();
            seen.push((path.clone(), headers, body));
            let n = seen.iter().filter(|(p, _, _)| *p == path).count();
            match path.as_str() {
                "flaky" if n <= 2 => StatusCode::INTERNAL_SERVER_ERROR,
                "fail" => StatusCode::BAD_GATEWAY,
                _ => StatusCode::OK,
            }
        }
        let seen: Seen = Arc::default();
        let app = axum::Router::new()
            .route("/{path}", axum::routing::post(hook))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), seen)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relayed_events_are_retried_delivered_and_trip_the_breaker() {
        let Some(schema) = TestSchema::create().await else {
            return;
        };
        let pool = schema.pool.clone();
        tenancy_core::postgres::migrate_all(
            &pool,
            [
                tenancy_core::postgres::migrator(),
                tenancy_jobs::postgres::migrator(),
                tenancy_webhooks::postgres::migrator(),
            ],
        )
        .await
        .unwrap();
        let backend = Arc::new(PgBackend::new(pool.clone()));
        let jobs = Arc::new(PgJobStore::new(pool.clone()));
        let webhooks = Webhooks::new(
            Arc::new(PgWebhookStore::new(pool.clone())),
            jobs.clone(),
            backend.clone(),
            SecretCipher::new(SecretKey::generate("pg").unwrap()),
            WebhookConfig::default()
                .with_policy(TargetPolicy::AllowPrivate)
                .with_timeout(Duration::from_secs(2))
                .with_retry_schedule(vec![Duration::from_millis(10); 3])
                .with_breaker(4, Duration::from_millis(1)),
        )
        .unwrap();
        let fixture = tenancy_webhooks::testkit::Fixture {
            backend: backend.clone(),
            store: Arc::new(PgWebhookStore::new(pool.clone())),
        };
        let tenant = tenancy_webhooks::testkit::create_tenant(&fixture, "pg-e2e").await;
        let (base, seen) = receiver().await;
        let (flaky, secret) = webhooks
            .create_endpoint(tenant, NewEndpoint::new(format!("{base}/flaky")))
            .await
            .unwrap();
        let (failing, _) = webhooks
            .create_endpoint(
                tenant,
                NewEndpoint::new(format!("{base}/fail"))
                    .with_event_types(EventTypes::new(["tenant.*"]).unwrap()),
            )
            .await
            .unwrap();

        // At rest the secret is a JWE, never the secret's text.
        let mut tx = tenancy_core::postgres::begin_tenant_transaction(&pool, tenant)
            .await
            .unwrap();
        let stored: String =
            sqlx::query_scalar("SELECT secret FROM tenancy_webhook_endpoints WHERE id = $1")
                .bind(flaky.id.as_uuid())
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        drop(tx);
        let text = secret.expose_secret();
        assert!(!stored.contains(&text["whsec_".len()..]));
        assert_eq!(stored.split('.').count(), 5, "compact JWE");

        let mut relay_config = RelayConfig::default();
        relay_config.poll_interval = Duration::from_millis(10);
        let relay = Relay::new(backend.clone() as Arc<dyn EventFeed>)
            .sink(webhooks.sink().unwrap())
            .config(relay_config)
            .start()
            .unwrap();
        let worker = Worker::new(
            jobs,
            WorkerConfig::default()
                .with_poll_interval(Duration::from_millis(10))
                .with_retention(None),
        )
        .handler(webhooks.handler())
        .start();

        let until = |id: EndpointId, done: fn(&[DeliveryAttempt]) -> bool| {
            let webhooks = webhooks.clone();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                loop {
                    let log = webhooks
                        .deliveries(tenant, id, &PageRequest::default())
                        .await
                        .unwrap()
                        .items;
                    if done(&log) {
                        return log;
                    }
                    assert!(tokio::time::Instant::now() < deadline, "{log:#?}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        // tenant.created reaches both: the flaky one after two failures.
        let log = until(flaky.id, |l| {
            l.iter().any(|a| a.outcome == AttemptOutcome::Succeeded)
        })
        .await;
        assert_eq!(log.len(), 3, "{log:#?}");
        let ok: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| p == "flaky")
            .cloned()
            .collect();
        for (_, headers, body) in &ok {
            standardwebhooks::Webhook::new(&secret.expose_secret())
                .unwrap()
                .verify(body, headers)
                .unwrap();
        }
        // The failing one: four failures, the breaker pauses it, the tenant is told.
        let log = until(failing.id, |l| l.len() >= 4).await;
        assert!(log.iter().all(|a| a.outcome != AttemptOutcome::Succeeded));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let endpoint = webhooks.endpoint(tenant, failing.id).await.unwrap();
            if matches!(endpoint.status, EndpointStatus::Paused { .. }) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{endpoint:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The notice follows the pause in its own transaction.
        let paused = loop {
            let events = backend
                .read_events(tenant, ReplayFrom::Start, 100)
                .await
                .unwrap();
            let paused: Vec<_> = events
                .into_iter()
                .filter(|e| e.event_type.as_str() == ENDPOINT_PAUSED)
                .collect();
            if !paused.is_empty() {
                break paused;
            }
            assert!(tokio::time::Instant::now() < deadline, "no paused event");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(paused.len(), 1);
        assert_eq!(paused[0].data["endpoint_id"], failing.id.to_string());

        worker.shutdown(Duration::from_secs(1)).await;
        relay.shutdown(Duration::from_secs(1)).await;
        let _: &dyn Backend = &*backend;
    }
}
