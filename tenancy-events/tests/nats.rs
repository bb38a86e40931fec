//! The NATS JetStream sink against a real server (`NATS_URL`, default
//! `127.0.0.1:4222`, JetStream enabled). Skipped with a notice when the
//! server is unreachable, except under `CI=true`, where that fails.
//!
//! Every test uses its own subject prefix and stream, named with a random
//! suffix, and deletes the stream it created.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use futures_util::StreamExt;
use tenancy_core::outbox::{EventType, ReplayFrom};
use tenancy_core::{Backend, ConsumerName, Event, EventId, MemoryBackend, TenantId};
use tenancy_events::nats::{NatsSink, SubjectPrefix};
use tenancy_events::{EventSink, Relay, SinkError};
use time::OffsetDateTime;

mod common;
use common::Proxy;

/// A JetStream context on the test server, or `None` (with a notice) when
/// it is unreachable and the tests may be skipped.
async fn jetstream() -> Option<jetstream::Context> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "127.0.0.1:4222".to_owned());
    let why = match tokio::time::timeout(Duration::from_secs(5), async_nats::connect(&url)).await {
        Ok(Ok(client)) => return Some(jetstream::new(client)),
        Ok(Err(error)) => error.to_string(),
        Err(_) => "no answer within 5s".to_owned(),
    };
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("NATS at {url} is unreachable ({why}) and CI=true: NATS tests may not be skipped");
    }
    eprintln!("NATS at {url} is unreachable ({why}): skipping NATS test");
    None
}

/// A fresh suffix for names no other test run uses.
fn unique() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn event(tenant_id: TenantId, seq: u64, event_type: &str) -> Event {
    Event {
        id: EventId::new(),
        tenant_id,
        seq,
        event_type: EventType::new(event_type).unwrap(),
        version: 1,
        occurred_at: tenancy_core::truncate_to_micros(OffsetDateTime::now_utc()),
        data: serde_json::json!({ "seq": seq, "note": "ünïcode ✓" }),
    }
}

fn sink(js: &jetstream::Context, prefix: &str) -> NatsSink {
    NatsSink::new(js.clone(), ConsumerName::new("nats-test").unwrap())
        .with_prefix(SubjectPrefix::new(prefix).unwrap())
        .with_ack_timeout(Duration::from_secs(5))
}

/// Every message of `stream`, in stream order, read with a pull consumer.
async fn read_all(stream: &stream::Stream) -> Vec<jetstream::Message> {
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer
        .fetch()
        .max_messages(100)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    let mut read = Vec::new();
    while let Some(message) = messages.next().await {
        read.push(message.unwrap());
    }
    read
}

#[tokio::test]
async fn a_batch_lands_in_order_with_subjects_headers_and_payloads_and_redelivery_is_dropped() {
    let Some(js) = jetstream().await else { return };
    let suffix = unique();
    let prefix = format!("tenancy_test.{suffix}");
    let sink = sink(&js, &prefix);
    let stream_name = format!("TENANCY_TEST_{suffix}");
    let mut stream = sink
        .ensure_stream(&stream_name, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(
        stream.info().await.unwrap().config.subjects,
        vec![format!("{prefix}.>")]
    );

    let (acme, globex) = (TenantId::new(), TenantId::new());
    let batch = vec![
        event(acme, 1, "member.joined"),
        event(acme, 2, "member.role_changed"),
        event(globex, 1, "tenant.created"),
        event(acme, 3, "api_key.revoked"),
    ];
    sink.deliver(&batch).await.unwrap();

    let read = read_all(&stream).await;
    assert_eq!(read.len(), batch.len());
    for (message, sent) in read.iter().zip(&batch) {
        assert_eq!(
            message.subject.as_str(),
            format!("{prefix}.{}.{}", sent.tenant_id, sent.event_type)
        );
        let headers = message.headers.as_ref().expect("headers");
        let header = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(header("Nats-Msg-Id"), Some(sent.id.to_string()));
        assert_eq!(
            header("Tenancy-Tenant-Id"),
            Some(sent.tenant_id.to_string())
        );
        assert_eq!(
            header("Tenancy-Event-Type"),
            Some(sent.event_type.to_string())
        );
        assert_eq!(header("Tenancy-Event-Seq"), Some(sent.seq.to_string()));
        let received: Event = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(&received, sent);
    }

    // The relay redelivers after a crash: JetStream acknowledges the
    // duplicates without storing them again.
    sink.deliver(&batch).await.unwrap();
    sink.deliver(&batch[1..3]).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 4);

    js.delete_stream(&stream_name).await.unwrap();
}

#[tokio::test]
async fn without_a_stream_for_the_subject_nothing_is_delivered() {
    let Some(js) = jetstream().await else { return };
    let sink = sink(&js, &format!("tenancy_test.nostream.{}", unique()));
    let tenant = TenantId::new();
    let batch = vec![
        event(tenant, 1, "member.joined"),
        event(tenant, 2, "member.removed"),
    ];

    let error = sink.deliver(&batch).await.unwrap_err();
    assert_eq!(error.delivered, 0);
    assert!(matches!(error.source, SinkError::Refused(_)), "{error:?}");
}

#[tokio::test]
async fn a_stream_refusing_part_of_a_batch_reports_the_leading_acknowledged_events() {
    let Some(js) = jetstream().await else { return };
    let suffix = unique();
    let prefix = format!("tenancy_test.{suffix}");
    let stream_name = format!("TENANCY_TEST_FULL_{suffix}");
    // Holds two messages and refuses the rest.
    js.create_stream(stream::Config {
        name: stream_name.clone(),
        subjects: vec![format!("{prefix}.>")],
        max_messages: 2,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .unwrap();
    let sink = sink(&js, &prefix);
    let tenant = TenantId::new();
    let batch: Vec<Event> = (1..=4)
        .map(|seq| event(tenant, seq, "member.joined"))
        .collect();

    let error = sink.deliver(&batch).await.unwrap_err();
    assert_eq!(error.delivered, 2);
    assert!(matches!(error.source, SinkError::Refused(_)), "{error:?}");

    js.delete_stream(&stream_name).await.unwrap();
}

#[tokio::test]
async fn batches_larger_than_the_in_flight_window_are_published_in_order() {
    let Some(js) = jetstream().await else { return };
    let suffix = unique();
    let prefix = format!("tenancy_test.{suffix}");
    let sink = sink(&js, &prefix).with_max_in_flight(3);
    let stream_name = format!("TENANCY_TEST_WINDOW_{suffix}");
    let stream = sink
        .ensure_stream(&stream_name, Duration::from_secs(60))
        .await
        .unwrap();
    let tenant = TenantId::new();
    let batch: Vec<Event> = (1..=10)
        .map(|seq| event(tenant, seq, "member.joined"))
        .collect();

    sink.deliver(&batch).await.unwrap();

    let seqs: Vec<u64> = read_all(&stream)
        .await
        .iter()
        .map(|m| serde_json::from_slice::<Event>(&m.payload).unwrap().seq)
        .collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());

    js.delete_stream(&stream_name).await.unwrap();
}

#[tokio::test]
async fn a_server_that_stops_answering_fails_the_batch_after_the_ack_timeout() {
    let Some(js) = jetstream().await else { return };
    let suffix = unique();
    let prefix = format!("tenancy_test.{suffix}");
    let stream_name = format!("TENANCY_TEST_SILENT_{suffix}");
    let mut stream = sink(&js, &prefix)
        .ensure_stream(&stream_name, Duration::from_secs(60))
        .await
        .unwrap();
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "127.0.0.1:4222".to_owned());
    let target = url.trim_start_matches("nats://").to_owned();
    let proxy = Proxy::start(target).await;
    let proxied = jetstream::new(
        async_nats::connect(proxy.address.to_string())
            .await
            .unwrap(),
    );
    let consumer = ConsumerName::new("nats-test").unwrap();
    let prefix = SubjectPrefix::new(prefix).unwrap();
    let impatient = NatsSink::new(proxied.clone(), consumer.clone())
        .with_prefix(prefix.clone())
        .with_ack_timeout(Duration::from_millis(300));
    let tenant = TenantId::new();
    let batch: Vec<Event> = (1..=3)
        .map(|seq| event(tenant, seq, "member.joined"))
        .collect();

    impatient.deliver(&batch[..1]).await.unwrap();
    proxy.freeze();
    let error = impatient.deliver(&batch[1..]).await.unwrap_err();
    assert_eq!(error.delivered, 0);
    assert!(
        matches!(error.source, SinkError::Unavailable(_)),
        "{error:?}"
    );

    // Once the connection is cut the client reconnects by itself and the
    // relay's retry goes through.
    proxy.cut().await;
    let patient = NatsSink::new(proxied, consumer)
        .with_prefix(prefix)
        .with_ack_timeout(Duration::from_secs(10));
    patient.deliver(&batch[1..]).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 3);

    js.delete_stream(&stream_name).await.unwrap();
}

#[tokio::test]
async fn the_relay_carries_the_outbox_to_jetstream_and_a_replay_adds_no_duplicates() {
    let Some(js) = jetstream().await else { return };
    let suffix = unique();
    let prefix = format!("tenancy_test.{suffix}");
    let stream_name = format!("TENANCY_TEST_RELAY_{suffix}");
    let sink = Arc::new(sink(&js, &prefix));
    let mut stream = sink
        .ensure_stream(&stream_name, Duration::from_secs(120))
        .await
        .unwrap();
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let tenant = common::tenant_with_events(&backend, 3).await;
    let relay = Relay::new(backend.clone()).sink(sink.clone());

    assert_eq!(relay.run_once().await.unwrap(), 4);
    let read = read_all(&stream).await;
    let events: Vec<Event> = read
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(events.iter().all(|e| e.tenant_id == tenant));
    assert_eq!(events[0].event_type.as_str(), "tenant.created");

    // Replaying the tenant's stream sends every event again; the stream's
    // duplicate window keeps one copy of each.
    relay
        .replay(sink.consumer(), tenant, ReplayFrom::Start)
        .await
        .unwrap();
    assert_eq!(relay.run_once().await.unwrap(), 4);
    assert_eq!(stream.info().await.unwrap().state.messages, 4);

    js.delete_stream(&stream_name).await.unwrap();
}
