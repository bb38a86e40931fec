//! End to end on the in-memory stores: events appended through
//! tenancy-core, relayed to the webhook sink, delivered by a tenancy-jobs
//! worker to a local receiver that checks signatures with the independent
//! `standardwebhooks` crate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tenancy_core::outbox::ReplayFrom;
use tenancy_core::{
    AuditContext, AuditLog, AuditQuery, Backend, Directory, Email, Event, EventType, NewEvent,
    NewTenant, NewUser, Outbox, Owner, PageRequest, Slug, TenantId, TenantName,
};
use tenancy_events::{EventSink, Relay, RelayConfig};
use tenancy_jobs::{MemoryJobStore, Worker, WorkerConfig, WorkerHandle};
use tenancy_webhooks::{
    AddressClass, AttemptOutcome, DeliveryAttempt, EndpointId, EndpointStatus, MemoryWebhookStore,
    NewEndpoint, SecretCipher, SecretKey, TargetPolicy, TargetRefused, WebhookConfig, WebhookError,
    WebhookSecret, Webhooks,
};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct Receiver {
    got: Mutex<Vec<Received>>,
    /// Per path, how many requests have been answered.
    counts: Mutex<HashMap<String, usize>>,
}

impl Receiver {
    fn requests(&self, path: &str) -> Vec<Received> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

/// Serves `/ok`, `/fail` (500), `/flaky/{n}` (500 for the first n
/// requests, then 200), `/slow` (answers after 5 s), `/redirect` (302 to
/// `/ok`) and `/huge` (a 1 MiB body) on 127.0.0.1; returns its base URL.
async fn start_receiver() -> (String, Arc<Receiver>) {
    async fn hook(
        State(state): State<Arc<Receiver>>,
        Path(path): Path<String>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let n = {
            let mut counts = state.counts.lock().unwrap();
            let n = counts.entry(path.clone()).or_default();
            *n += 1;
            *n
        };
        state.got.lock().unwrap().push(Received {
            path: path.clone(),
            headers,
            body,
        });
        match path.as_str() {
            "ok" => (StatusCode::OK, "thanks").into_response(),
            "fail" => (StatusCode::INTERNAL_SERVER_ERROR, "broken").into_response(),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                StatusCode::OK.into_response()
            }
            "redirect" => (StatusCode::FOUND, [(header::LOCATION, "/ok")]).into_response(),
            "huge" => (StatusCode::OK, "x".repeat(1024 * 1024)).into_response(),
            flaky if flaky.starts_with("flaky-") => {
                let fails: usize = flaky["flaky-".len()..].parse().unwrap();
                if n <= fails {
                    StatusCode::SERVICE_UNAVAILABLE.into_response()
                } else {
                    StatusCode::NO_CONTENT.into_response()
                }
            }
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }
    let state = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/{path}", axum::routing::post(hook))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), state)
}

struct Harness {
    backend: Arc<dyn Backend>,
    webhooks: Webhooks,
    /// Over the same stores, allowing any target: registers endpoints the
    /// policy of `webhooks` refuses, as if their DNS changed after.
    lax: Webhooks,
    worker: Option<WorkerHandle>,
    store: Arc<MemoryWebhookStore>,
    jobs: Arc<MemoryJobStore>,
    cipher: SecretCipher,
}

impl Harness {
    fn new(config: WebhookConfig) -> Self {
        let backend: Arc<dyn Backend> = Arc::new(tenancy_core::MemoryBackend::new());
        let jobs = Arc::new(MemoryJobStore::new());
        let store = Arc::new(MemoryWebhookStore::new());
        let cipher = SecretCipher::new(SecretKey::generate("test-key").unwrap());
        let lax = Webhooks::new(
            store.clone(),
            jobs.clone(),
            backend.clone(),
            cipher.clone(),
            config.clone().with_policy(TargetPolicy::AllowPrivate),
        )
        .unwrap();
        let webhooks = Webhooks::new(
            store.clone(),
            jobs.clone(),
            backend.clone(),
            cipher.clone(),
            config,
        )
        .unwrap();
        let worker = Worker::new(
            jobs.clone(),
            WorkerConfig::default()
                .with_poll_interval(Duration::from_millis(10))
                .with_retention(None),
        )
        .handler(webhooks.handler())
        .start();
        Self {
            backend,
            webhooks,
            lax,
            worker: Some(worker),
            store,
            jobs,
            cipher,
        }
    }

    async fn tenant(&self, slug: &str) -> TenantId {
        let slug = format!("{slug}-{}", &TenantId::new().to_string()[24..]);
        Directory::new(Arc::clone(&self.backend))
            .create_tenant(
                NewTenant::new(Slug::new(&slug).unwrap(), TenantName::new(&slug).unwrap()),
                Owner::New(NewUser::new(
                    Email::new(&format!("owner@{slug}.test")).unwrap(),
                )),
                &AuditContext::system(),
            )
            .await
            .unwrap()
            .tenant
            .id
    }

    /// Appends an event and hands it to the sink, as the relay would.
    async fn publish(&self, tenant_id: TenantId, event_type: &str) -> Event {
        let event = self
            .backend
            .append_event(
                tenant_id,
                NewEvent::new(
                    EventType::new(event_type).unwrap(),
                    serde_json::json!({"n": 1}),
                ),
            )
            .await
            .unwrap();
        self.webhooks
            .sink()
            .unwrap()
            .deliver(std::slice::from_ref(&event))
            .await
            .unwrap();
        if let Some(worker) = &self.worker {
            worker.wake();
        }
        event
    }

    /// Waits until the endpoint's log satisfies `done` (newest first).
    async fn log_until(
        &self,
        tenant_id: TenantId,
        endpoint: EndpointId,
        done: impl Fn(&[DeliveryAttempt]) -> bool,
    ) -> Vec<DeliveryAttempt> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let log = self
                .webhooks
                .deliveries(tenant_id, endpoint, &PageRequest::default())
                .await
                .unwrap()
                .items;
            if done(&log) {
                return log;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out; log: {log:#?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the worker once its running jobs are done.
    async fn drain(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.shutdown(Duration::from_secs(5)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(worker) = self.worker.take() {
            worker.shutdown(Duration::from_secs(1)).await;
        }
    }
}

fn local() -> WebhookConfig {
    WebhookConfig::default()
        .with_policy(TargetPolicy::AllowPrivate)
        .with_timeout(Duration::from_millis(500))
        .with_retry_schedule(vec![Duration::from_millis(10); 3])
}

fn verify(secret: &WebhookSecret, request: &Received) -> Result<(), String> {
    standardwebhooks::Webhook::new(&secret.expose_secret())
        .unwrap()
        .verify(&request.body, &request.headers)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn relayed_tenant_created_event_arrives_signed() {
    let (base, receiver) = start_receiver().await;
    let h = Harness::new(local());
    let tenant = h.tenant("acme").await;
    let (endpoint, secret) = h
        .webhooks
        .create_endpoint(
            tenant,
            NewEndpoint::new(format!("{base}/ok"))
                .with_event_types(tenancy_webhooks::EventTypes::new(["tenant.*"]).unwrap()),
        )
        .await
        .unwrap();
    let relay = Relay::new(h.backend.clone())
        .sink(h.webhooks.sink().unwrap())
        .config({
            let mut c = RelayConfig::default();
            c.poll_interval = Duration::from_millis(10);
            c
        })
        .start()
        .unwrap();

    let log = h
        .log_until(tenant, endpoint.id, |log| !log.is_empty())
        .await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].outcome, AttemptOutcome::Succeeded);
    assert_eq!(log[0].status_code, Some(200));
    assert_eq!(log[0].event_type, "tenant.created");
    assert_eq!(log[0].response_excerpt.as_deref(), Some("thanks"));
    assert!(log[0].latency_ms.is_some());

    let got = receiver.requests("ok");
    assert_eq!(got.len(), 1);
    verify(&secret, &got[0]).unwrap();
    let event: Event = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(event.event_type.as_str(), "tenant.created");
    assert_eq!(event.tenant_id, tenant);
    assert_eq!(
        got[0].headers["webhook-id"].to_str().unwrap(),
        event.id.to_string()
    );
    assert_eq!(got[0].headers["content-type"], "application/json");
    // A wrong secret does not verify.
    assert!(verify(&WebhookSecret::generate(), &got[0]).is_err());

    relay.shutdown(Duration::from_secs(1)).await;
    h.stop().await;
}

#[tokio::test]
async fn failed_attempts_are_retried_until_success_with_the_same_id() {
    let (base, receiver) = start_receiver().await;
    let h = Harness::new(local());
    let tenant = h.tenant("retry").await;
    let (endpoint, secret) = h
        .webhooks
        .create_endpoint(tenant, NewEndpoint::new(format!("{base}/flaky-2")))
        .await
        .unwrap();
    let event = h.publish(tenant, "invoice.paid").await;

    let log = h
        .log_until(tenant, endpoint.id, |log| {
            log.iter().any(|a| a.outcome == AttemptOutcome::Succeeded)
        })
        .await;
    let outcomes: Vec<_> = log.iter().rev().map(|a| (a.attempt, a.outcome)).collect();
    assert_eq!(
        outcomes,
        [
            (1, AttemptOutcome::Failed),
            (2, AttemptOutcome::Failed),
            (3, AttemptOutcome::Succeeded)
        ]
    );
    assert_eq!(log[2].status_code, Some(503));
    assert_eq!(log[0].status_code, Some(204));
    let got = receiver.requests("flaky-2");
    assert_eq!(got.len(), 3);
    for request in &got {
        assert_eq!(
            request.headers["webhook-id"].to_str().unwrap(),
            event.id.to_string()
        );
        verify(&secret, request).unwrap();
    }
    let endpoint = h.webhooks.endpoint(tenant, endpoint.id).await.unwrap();
    assert_eq!(endpoint.consecutive_failures, 0);
    h.stop().await;
}

#[tokio::test]
async fn delivery_is_dead_after_the_last_scheduled_attempt_and_can_be_redelivered() {
    let (base, receiver) = start_receiver().await;
    let h = Harness::new(local());
    let tenant = h.tenant("dead").await;
    let (endpoint, _) = h
        .webhooks
        .create_endpoint(tenant, NewEndpoint::new(format!("{base}/fail")))
        .await
        .unwrap();
    h.publish(tenant, "invoice.paid").await;

    let log = h
        .log_until(tenant, endpoint.id, |log| {
            log.iter().any(|a| a.outcome == AttemptOutcome::Dead)
        })
        .await;
    // Three delays in the schedule: four attempts, the last one dead.
    assert_eq!(log.len(), 4);
    assert_eq!(log[0].attempt, 4);
    assert_eq!(log[0].outcome, AttemptOutcome::Dead);
    assert_eq!(log[0].status_code, Some(500));
    assert_eq!(log[0].response_excerpt.as_deref(), Some("broken"));
    assert!(log[1..].iter().all(|a| a.outcome == AttemptOutcome::Failed));
    assert_eq!(receiver.requests("fail").len(), 4);

    // Manual redelivery: a new delivery of the same event.
    h.webhooks.redeliver(tenant, log[0].id).await.unwrap();
    let log = h.log_until(tenant, endpoint.id, |log| log.len() >= 5).await;
    // Newest first: the redelivery's attempts (its second may already be
    // logged when the machine is slow) before the four of the first delivery.
    let redelivered = &log[..log.len() - 4];
    assert!(redelivered.iter().any(|a| a.attempt == 1), "{log:?}");
    assert!(log.iter().all(|a| a.event_id == log[0].event_id));

    // Another tenant sees neither the endpoint nor its deliveries.
    let other = h.tenant("other").await;
    assert!(matches!(
        h.webhooks.endpoint(other, endpoint.id).await,
        Err(WebhookError::NotFound(_))
    ));
    assert!(matches!(
        h.webhooks.redeliver(other, log[0].id).await,
        Err(WebhookError::NotFound(_))
    ));
    h.stop().await;
}

#[tokio::test]
async fn circuit_breaker_pauses_the_endpoint_and_tells_the_tenant() {
    let (base, receiver) = start_receiver().await;
    let mut h = Harness::new(
        local()
            .with_retry_schedule(vec![Duration::from_millis(10); 6])
            .with_breaker(3, Duration::from_millis(1)),
    );
    let tenant = h.tenant("breaker").await;
    let (endpoint, _) = h
        .webhooks
        .create_endpoint(tenant, NewEndpoint::new(format!("{base}/fail")))
        .await
        .unwrap();
    h.publish(tenant, "invoice.paid").await;

    // Third failure pauses; the fourth attempt is skipped without a request.
    let log = h
        .log_until(tenant, endpoint.id, |log| {
            log.iter().any(|a| a.outcome == AttemptOutcome::Skipped)
        })
        .await;
    // The skipped attempt has told the tenant again, which appends
    // nothing: wait for it to end before counting.
    h.drain().await;
    assert_eq!(log.len(), 4, "{log:#?}");
    assert_eq!(log[0].outcome, AttemptOutcome::Skipped);
    assert_eq!(receiver.requests("fail").len(), 3);
    let paused = h.webhooks.endpoint(tenant, endpoint.id).await.unwrap();
    assert!(matches!(paused.status, EndpointStatus::Paused { .. }));
    assert_eq!(paused.consecutive_failures, 3);

    let events = h
        .backend
        .read_events(tenant, ReplayFrom::Start, 100)
        .await
        .unwrap();
    let notice: Vec<_> = events
        .iter()
        .filter(|e| e.event_type.as_str() == tenancy_webhooks::ENDPOINT_PAUSED)
        .collect();
    assert_eq!(notice.len(), 1, "one notice, however many failures");
    assert_eq!(notice[0].data["endpoint_id"], endpoint.id.to_string());
    let audit = h
        .backend
        .query_audit(tenant, &AuditQuery::default(), &PageRequest::default())
        .await
        .unwrap();
    assert!(
        audit
            .items
            .iter()
            .any(|a| a.action.as_str() == tenancy_webhooks::ENDPOINT_PAUSED)
    );

    // New events are not enqueued for a paused endpoint; resuming resets
    // the counter and delivery goes on (the skipped delivery is sent
    // again: resume_sends_again_the_deliveries_skipped_while_paused).
    let resumed = h.webhooks.resume(tenant, endpoint.id).await.unwrap();
    assert_eq!(resumed.status, EndpointStatus::Active);
    assert_eq!(resumed.consecutive_failures, 0);
    h.stop().await;
}

#[tokio::test]
async fn after_rotation_both_secrets_verify_during_the_grace_period() {
    let (base, receiver) = start_receiver().await;
    let h = Harness::new(local());
    let tenant = h.tenant("rotate").await;
    let (endpoint, old) = h
        .webhooks
        .create_endpoint(tenant, NewEndpoint::new(format!("{base}/ok")))
        .await
        .unwrap();
    let new = h.webhooks.rotate_secret(tenant, endpoint.id).await.unwrap();
    assert_ne!(old, new);
    h.publish(tenant, "member.joined").await;
    h.log_until(tenant, endpoint.id, |log| !log.is_empty())
        .await;
    let got = receiver.requests("ok");
    let signature = got[0].headers["webhook-signature"].to_str().unwrap();
    assert_eq!(signature.split(' ').count(), 2, "{signature}");
    assert!(signature.split(' ').all(|s| s.starts_with("v1,")));
    verify(&old, &got[0]).unwrap();
    verify(&new, &got[0]).unwrap();
    h.stop().await;

    // Without a grace period only the new secret signs.
    let (base, receiver2) = start_receiver().await;
    let h = Harness::new(local().with_rotation_grace(Duration::ZERO));
    let tenant = h.tenant("rotate0").await;
    let (endpoint, old) = h
        .webhooks
        .create_endpoint(tenant, NewEndpoint::new(format!("{base}/ok")))
        .await
        .unwrap();
    let new = h.webhooks.rotate_secret(tenant, endpoint.id).await.unwrap();
    h.publish(tenant, "member.joined").await;
    h.log_until(tenant, endpoint.id, |log| !log.is_empty())
        .await;
    let got = receiver2.requests("ok");
    verify(&new, &got[0]).unwrap();
    assert!(verify(&old, &got[0]).is_err());
    h.stop().await;
}

#[tokio::test]
async fn timeouts_redirects_and_huge_answers() {
    let (base, receiver) = start_receiver().await;
    let h = Harness::new(
        local()
            .with_timeout(Duration::from_millis(300))
            .with_retry_schedule(vec![]),
    );
    let tenant = h.tenant("edges").await;
    let mut ids = HashMap::new();
    for path in ["slow", "redirect", "huge"] {
        let (endpoint, _) = h
            .webhooks
            .create_endpoint(tenant, NewEndpoint::new(format!("{base}/{path}")))
            .await
            .unwrap();
        ids.insert(path, endpoint.id);
    }
    h.publish(tenant, "member.joined").await;

    let slow = h.log_until(tenant, ids["slow"], |l| !l.is_empty()).await;
    assert_eq!(slow[0].outcome, AttemptOutcome::Dead);
    assert!(
        slow[0].error.as_deref().unwrap().contains("timed out"),
        "{slow:?}"
    );
    assert!(slow[0].latency_ms.unwrap() < 3000);

    let redirect = h
        .log_until(tenant, ids["redirect"], |l| !l.is_empty())
        .await;
    assert_eq!(redirect[0].outcome, AttemptOutcome::Dead);
    assert_eq!(redirect[0].status_code, Some(302));
    assert!(redirect[0].error.as_deref().unwrap().contains("redirect"));
    assert!(
        receiver.requests("ok").is_empty(),
        "a redirect was followed"
    );

    let huge = h.log_until(tenant, ids["huge"], |l| !l.is_empty()).await;
    assert_eq!(huge[0].outcome, AttemptOutcome::Succeeded);
    let excerpt = huge[0].response_excerpt.as_deref().unwrap();
    assert_eq!(excerpt.len(), tenancy_webhooks::MAX_EXCERPT_BYTES);
    h.stop().await;
}

#[tokio::test]
async fn internal_targets_are_refused_under_the_default_policy() {
    let (base, receiver) = start_receiver().await;
    let port = base.rsplit(':').next().unwrap().to_owned();
    let h = Harness::new(WebhookConfig::default().with_retry_schedule(vec![]));
    let tenant = h.tenant("ssrf").await;
    // Plain http is refused when the endpoint is created.
    assert!(matches!(
        h.webhooks
            .create_endpoint(tenant, NewEndpoint::new(format!("{base}/ok")))
            .await,
        Err(WebhookError::InvalidInput(_))
    ));
    let mut ids = Vec::new();
    for url in [
        format!("https://127.0.0.1:{port}/ok"),
        "https://10.0.0.1/hook".to_owned(),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        format!("https://[::1]:{port}/ok"),
        format!("https://localhost:{port}/ok"),
        "https://[::ffff:10.0.0.1]/hook".to_owned(),
    ] {
        // Refused when registered, with the typed reason.
        match h
            .webhooks
            .create_endpoint(tenant, NewEndpoint::new(url.clone()))
            .await
        {
            Err(WebhookError::Refused(TargetRefused::Address { class, .. })) => {
                assert_ne!(class, AddressClass::Public, "{url}");
            }
            other => panic!("{url}: {other:?}"),
        }
        // And at delivery, for an endpoint that got there anyway (its
        // name resolved elsewhere when it was registered).
        let (endpoint, _) = h
            .lax
            .create_endpoint(tenant, NewEndpoint::new(url.clone()))
            .await
            .unwrap();
        ids.push((url, endpoint.id));
    }
    // A public address is accepted.
    h.webhooks
        .create_endpoint(
            tenant,
            NewEndpoint::new("https://93.184.215.14/hook")
                .with_event_types(tenancy_webhooks::EventTypes::new(["never.sent"]).unwrap()),
        )
        .await
        .unwrap();
    h.publish(tenant, "member.joined").await;
    for (url, id) in ids {
        let log = h.log_until(tenant, id, |l| !l.is_empty()).await;
        assert_eq!(log[0].outcome, AttemptOutcome::Dead, "{url}");
        assert_eq!(log[0].status_code, None, "{url}");
        let error = log[0].error.as_deref().unwrap();
        assert!(error.starts_with("refused:"), "{url}: {error}");
        // The tenant reads this log: no resolved address, no class.
        assert!(
            error.contains(tenancy_webhooks::ssrf::NON_PUBLIC_ADDRESS),
            "{url}: {error}"
        );
        for leak in [
            "127.0.0.1",
            "10.0.0.1",
            "169.254",
            "::1",
            "Loopback",
            "Private",
        ] {
            assert!(!error.contains(leak), "{url}: {error}");
        }
    }
    assert!(receiver.got.lock().unwrap().is_empty());

    // The typed error of the check itself.
    let url = url::Url::parse("https://localhost/").unwrap();
    let refused = tenancy_webhooks::ssrf::check_target(TargetPolicy::PublicOnly, &url)
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        tenancy_webhooks::TargetRefused::Address {
            class: tenancy_webhooks::AddressClass::Loopback,
            ..
        }
    ));
    h.stop().await;
}

#[tokio::test]
async fn endpoints_are_validated_bounded_and_filtered() {
    let (base, receiver) = start_receiver().await;
    let h = Harness::new(local().with_max_endpoints(2));
    let tenant = h.tenant("limits").await;
    let (members, _) = h
        .webhooks
        .create_endpoint(
            tenant,
            NewEndpoint::new(format!("{base}/ok"))
                .with_event_types(tenancy_webhooks::EventTypes::new(["member.*"]).unwrap()),
        )
        .await
        .unwrap();
    let (disabled, _) = h
        .webhooks
        .create_endpoint(tenant, NewEndpoint::new(format!("{base}/fail")))
        .await
        .unwrap();
    assert!(matches!(
        h.webhooks
            .create_endpoint(tenant, NewEndpoint::new(format!("{base}/ok")))
            .await,
        Err(WebhookError::TooManyEndpoints { max: 2 })
    ));
    let mut update = tenancy_webhooks::EndpointUpdate::default();
    update.disabled = Some(true);
    let updated = h
        .webhooks
        .update_endpoint(tenant, disabled.id, update)
        .await
        .unwrap();
    assert_eq!(updated.status, EndpointStatus::Disabled);

    h.publish(tenant, "invoice.paid").await;
    h.publish(tenant, "member.joined").await;
    let log = h.log_until(tenant, members.id, |l| !l.is_empty()).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].event_type, "member.joined");
    assert!(receiver.requests("fail").is_empty());
    assert_eq!(receiver.counts.lock().unwrap().get("ok"), Some(&1));
    h.stop().await;
}

#[tokio::test]
async fn purge_keeps_the_retention_period_then_deletes_log_and_events() {
    let (base, receiver) = start_receiver().await;
    let mut h = Harness::new(local().with_retry_schedule(vec![]));
    let tenant = h.tenant("purge").await;
    let (endpoint, _) = h
        .webhooks
        .create_endpoint(tenant, NewEndpoint::new(format!("{base}/ok")))
        .await
        .unwrap();
    h.publish(tenant, "member.joined").await;
    let log = h.log_until(tenant, endpoint.id, |l| !l.is_empty()).await;
    assert_eq!(log[0].outcome, AttemptOutcome::Succeeded);
    h.drain().await;

    // Within the default 30 days: nothing goes.
    assert_eq!(
        h.webhooks.purge().await.unwrap(),
        tenancy_webhooks::Purged::default()
    );
    assert_eq!(
        h.webhooks
            .deliveries(tenant, endpoint.id, &PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // With no retention (and no retries to wait for), the row and the
    // event it sent go.
    let purged = Webhooks::new(
        h.store.clone(),
        h.jobs.clone(),
        h.backend.clone(),
        h.cipher.clone(),
        local()
            .with_retry_schedule(vec![])
            .with_retention(Duration::ZERO),
    )
    .unwrap()
    .purge()
    .await
    .unwrap();
    assert_eq!((purged.deliveries, purged.messages), (1, 1), "{purged:?}");
    assert!(
        h.webhooks
            .deliveries(tenant, endpoint.id, &PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(matches!(
        h.webhooks.redeliver(tenant, log[0].id).await,
        Err(WebhookError::NotFound(_))
    ));
    assert_eq!(receiver.requests("ok").len(), 1);
}

#[tokio::test]
async fn resume_sends_again_the_deliveries_skipped_while_paused() {
    let (base, receiver) = start_receiver().await;
    let h = Harness::new(
        local()
            .with_retry_schedule(vec![Duration::from_millis(10); 6])
            .with_breaker(3, Duration::from_millis(1)),
    );
    let tenant = h.tenant("replay").await;
    // Fails three times (which pauses the endpoint), then succeeds.
    let (endpoint, _) = h
        .webhooks
        .create_endpoint(tenant, NewEndpoint::new(format!("{base}/flaky-3")))
        .await
        .unwrap();
    let event = h.publish(tenant, "invoice.paid").await;
    let log = h
        .log_until(tenant, endpoint.id, |log| {
            log.iter().any(|a| a.outcome == AttemptOutcome::Skipped)
        })
        .await;
    assert_eq!(log[0].outcome, AttemptOutcome::Skipped);
    assert_eq!(log[0].event_id, event.id);
    assert_eq!(receiver.requests("flaky-3").len(), 3);

    let resumed = h.webhooks.resume(tenant, endpoint.id).await.unwrap();
    assert_eq!(resumed.status, EndpointStatus::Active);
    let log = h
        .log_until(tenant, endpoint.id, |log| {
            log.iter().any(|a| a.outcome == AttemptOutcome::Succeeded)
        })
        .await;
    // The skipped event went out again as a new delivery, once.
    assert_eq!(log[0].outcome, AttemptOutcome::Succeeded);
    assert_eq!(log[0].event_id, event.id);
    assert_eq!(log[0].attempt, 1);
    assert_eq!(receiver.requests("flaky-3").len(), 4);
    let sent: Event = serde_json::from_slice(&receiver.requests("flaky-3")[3].body).unwrap();
    assert_eq!(sent.id, event.id);
    h.stop().await;
}
