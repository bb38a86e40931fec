//! The RabbitMQ sink against a real broker (`AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`). Skipped with a notice when the
//! broker is unreachable, except under `CI=true`, where that fails.
//!
//! Every test uses its own exchange and queues, named with a random
//! suffix; queues are exclusive to the test's connection and the test
//! deletes the exchange it created.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tenancy_core::outbox::EventType;
use tenancy_core::{Backend, ConsumerName, Event, EventId, MemoryBackend, TenantId};
use tenancy_events::rabbitmq::{ExchangeName, RabbitSink};
use tenancy_events::{EventSink, Relay, SinkError};
use time::OffsetDateTime;

mod common;
use common::Proxy;

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A connection of the test's own (to declare queues and read them), or
/// `None` (with a notice) when the broker is unreachable and the tests may
/// be skipped.
async fn broker() -> Option<Connection> {
    let url = amqp_url();
    let connect = Connection::connect(&url, ConnectionProperties::default());
    let why = match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(connection)) => return Some(connection),
        Ok(Err(error)) => error.to_string(),
        Err(_) => "no answer within 5s".to_owned(),
    };
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("RabbitMQ is unreachable ({why}) and CI=true: RabbitMQ tests may not be skipped");
    }
    eprintln!("RabbitMQ is unreachable ({why}): skipping RabbitMQ test");
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

/// The broker's URI with the host and port of `proxy` instead.
fn through(proxy: &Proxy) -> lapin::uri::AMQPUri {
    let mut uri: lapin::uri::AMQPUri = amqp_url().parse().unwrap();
    uri.authority.host = proxy.address.ip().to_string();
    uri.authority.port = proxy.address.port();
    uri
}

/// A proxy in front of the broker.
async fn proxy() -> Proxy {
    let uri: lapin::uri::AMQPUri = amqp_url().parse().unwrap();
    Proxy::start(format!("{}:{}", uri.authority.host, uri.authority.port)).await
}

fn consumer() -> ConsumerName {
    ConsumerName::new("rabbitmq-test").unwrap()
}

/// Declares an exclusive queue bound to `exchange` with each pattern.
async fn bound_queue(
    channel: &Channel,
    name: &str,
    exchange: &str,
    patterns: &[String],
    arguments: FieldTable,
) {
    channel
        .queue_declare(
            ShortString::from(name),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .unwrap();
    for pattern in patterns {
        channel
            .queue_bind(
                ShortString::from(name),
                ShortString::from(exchange),
                ShortString::from(pattern.as_str()),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }
}

async fn declare_exchange(channel: &Channel, exchange: &str) {
    channel
        .exchange_declare(
            ShortString::from(exchange),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
}

async fn delete_exchange(channel: &Channel, exchange: &str) {
    channel
        .exchange_delete(
            ShortString::from(exchange),
            ExchangeDeleteOptions::default(),
        )
        .await
        .unwrap();
}

/// A sink connected through a local proxy that can cut or freeze its
/// connection, publishing to a fresh exchange with one queue bound to `#`.
struct Proxied {
    connection: Connection,
    channel: Channel,
    exchange: String,
    queue: String,
    proxy: Proxy,
    connects: Arc<AtomicUsize>,
    sink: RabbitSink,
}

impl Proxied {
    async fn start(confirm_timeout: Duration) -> Option<Self> {
        let connection = broker().await?;
        let channel = connection.create_channel().await.unwrap();
        let suffix = unique();
        let exchange = format!("tenancy.test.{suffix}");
        declare_exchange(&channel, &exchange).await;
        let queue = format!("tenancy.test.{suffix}.all");
        bound_queue(
            &channel,
            &queue,
            &exchange,
            &["#".to_owned()],
            FieldTable::default(),
        )
        .await;
        let proxy = proxy().await;
        let connects = Arc::new(AtomicUsize::new(0));
        let (counted, uri) = (Arc::clone(&connects), through(&proxy));
        let sink = RabbitSink::with_connector(consumer(), move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let uri = uri.clone();
            Box::pin(
                async move { Connection::connect_uri(uri, ConnectionProperties::default()).await },
            )
        })
        .with_exchange(ExchangeName::new(exchange.as_str()).unwrap())
        .with_confirm_timeout(confirm_timeout);
        Some(Self {
            connection,
            channel,
            exchange,
            queue,
            proxy,
            connects,
            sink,
        })
    }
}

/// Everything in `queue`, in queue order.
async fn drain(channel: &Channel, queue: &str) -> Vec<lapin::message::Delivery> {
    let mut messages = Vec::new();
    while let Some(message) = channel
        .basic_get(ShortString::from(queue), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        messages.push(message.delivery);
    }
    messages
}

fn header<'a>(delivery: &'a lapin::message::Delivery, name: &str) -> &'a AMQPValue {
    let headers = delivery.properties.headers().as_ref().expect("headers");
    headers.inner().get(name).expect(name)
}

fn payload(delivery: &lapin::message::Delivery) -> Event {
    serde_json::from_slice(&delivery.data).unwrap()
}

#[tokio::test]
async fn topic_patterns_route_by_tenant_and_type_with_the_event_properties() {
    let Some(connection) = broker().await else {
        return;
    };
    let channel = connection.create_channel().await.unwrap();
    let suffix = unique();
    let exchange = format!("tenancy.test.{suffix}");
    let sink = RabbitSink::new(amqp_url(), consumer())
        .with_exchange(ExchangeName::new(exchange.as_str()).unwrap());
    sink.ensure_exchange().await.unwrap();
    sink.ensure_exchange().await.unwrap(); // idempotent

    let (acme, globex) = (TenantId::new(), TenantId::new());
    let members = format!("tenancy.test.{suffix}.members");
    let acme_queue = format!("tenancy.test.{suffix}.acme");
    bound_queue(
        &channel,
        &members,
        &exchange,
        &["*.member.#".to_owned()],
        FieldTable::default(),
    )
    .await;
    bound_queue(
        &channel,
        &acme_queue,
        &exchange,
        &[format!("{acme}.#")],
        FieldTable::default(),
    )
    .await;

    let batch = vec![
        event(acme, 1, "member.joined"),
        event(acme, 2, "tenant.updated"),
        event(globex, 1, "member.removed"),
        event(acme, 3, "member.role_changed"),
        event(globex, 2, "billing.subscription.changed"),
    ];
    sink.deliver(&batch).await.unwrap();

    let got = drain(&channel, &members).await;
    let want = [&batch[0], &batch[2], &batch[3]];
    assert_eq!(got.len(), want.len());
    for (delivery, sent) in got.iter().zip(want) {
        assert_eq!(payload(delivery), *sent);
        assert_eq!(delivery.exchange.as_str(), exchange);
        assert_eq!(
            delivery.routing_key.as_str(),
            format!("{}.{}", sent.tenant_id, sent.event_type)
        );
        let properties = &delivery.properties;
        assert_eq!(
            properties.message_id().as_ref().map(ShortString::as_str),
            Some(sent.id.to_string().as_str())
        );
        assert_eq!(*properties.delivery_mode(), Some(2));
        assert_eq!(
            properties.content_type().as_ref().map(ShortString::as_str),
            Some("application/json")
        );
        assert_eq!(
            properties.kind().as_ref().map(ShortString::as_str),
            Some(sent.event_type.as_str())
        );
        assert_eq!(
            *properties.timestamp(),
            Some(u64::try_from(sent.occurred_at.unix_timestamp()).unwrap())
        );
        match header(delivery, "tenancy-tenant-id") {
            AMQPValue::LongString(tenant) => {
                assert_eq!(tenant.as_bytes(), sent.tenant_id.to_string().as_bytes());
            }
            other => panic!("tenant header {other:?}"),
        }
        assert_eq!(
            header(delivery, "tenancy-event-seq"),
            &AMQPValue::LongLongInt(i64::try_from(sent.seq).unwrap())
        );
    }

    let acme_events: Vec<Event> = drain(&channel, &acme_queue)
        .await
        .iter()
        .map(payload)
        .collect();
    assert_eq!(
        acme_events,
        vec![batch[0].clone(), batch[1].clone(), batch[3].clone()]
    );

    // Nothing is bound for this one: dropped by the exchange, delivered all the same.
    sink.deliver(&[event(globex, 3, "tenant.updated")])
        .await
        .unwrap();
    assert!(drain(&channel, &members).await.is_empty());

    delete_exchange(&channel, &exchange).await;
    sink.close().await.unwrap();
    connection
        .close(200, ShortString::from("done"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_negative_confirm_reports_the_leading_confirmed_events() {
    let Some(connection) = broker().await else {
        return;
    };
    let channel = connection.create_channel().await.unwrap();
    let suffix = unique();
    let exchange = format!("tenancy.test.{suffix}");
    declare_exchange(&channel, &exchange).await;
    // A queue that holds two messages and rejects (nacks) further publishes.
    let mut arguments = FieldTable::default();
    arguments.insert(ShortString::from("x-max-length"), AMQPValue::LongInt(2));
    arguments.insert(
        ShortString::from("x-overflow"),
        AMQPValue::LongString("reject-publish".into()),
    );
    let queue = format!("tenancy.test.{suffix}.small");
    bound_queue(&channel, &queue, &exchange, &["#".to_owned()], arguments).await;
    let sink = RabbitSink::new(amqp_url(), consumer())
        .with_exchange(ExchangeName::new(exchange.as_str()).unwrap());
    let tenant = TenantId::new();
    let batch: Vec<Event> = (1..=4)
        .map(|seq| event(tenant, seq, "member.joined"))
        .collect();

    let error = sink.deliver(&batch).await.unwrap_err();
    assert_eq!(error.delivered, 2);
    assert!(matches!(error.source, SinkError::Refused(_)), "{error:?}");
    let kept: Vec<u64> = drain(&channel, &queue)
        .await
        .iter()
        .map(|d| payload(d).seq)
        .collect();
    assert_eq!(kept, vec![1, 2]);

    // The channel survives a nack: the rest goes through once there is room.
    sink.deliver(&batch[2..]).await.unwrap();
    let kept: Vec<u64> = drain(&channel, &queue)
        .await
        .iter()
        .map(|d| payload(d).seq)
        .collect();
    assert_eq!(kept, vec![3, 4]);

    delete_exchange(&channel, &exchange).await;
    sink.close().await.unwrap();
    connection
        .close(200, ShortString::from("done"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_channel_the_broker_closed_is_reopened_by_the_next_delivery() {
    let Some(connection) = broker().await else {
        return;
    };
    let channel = connection.create_channel().await.unwrap();
    let suffix = unique();
    let exchange = format!("tenancy.test.{suffix}");
    let sink = RabbitSink::new(amqp_url(), consumer())
        .with_exchange(ExchangeName::new(exchange.as_str()).unwrap());
    let tenant = TenantId::new();
    let first = event(tenant, 1, "member.joined");

    // The exchange does not exist yet: the broker closes the channel.
    let error = sink
        .deliver(std::slice::from_ref(&first))
        .await
        .unwrap_err();
    assert_eq!(error.delivered, 0);
    assert!(
        matches!(error.source, SinkError::Unavailable(_)),
        "{error:?}"
    );

    declare_exchange(&channel, &exchange).await;
    let queue = format!("tenancy.test.{suffix}.all");
    bound_queue(
        &channel,
        &queue,
        &exchange,
        &["#".to_owned()],
        FieldTable::default(),
    )
    .await;
    sink.deliver(std::slice::from_ref(&first)).await.unwrap();
    let got: Vec<Event> = drain(&channel, &queue).await.iter().map(payload).collect();
    assert_eq!(got, vec![first]);

    delete_exchange(&channel, &exchange).await;
    sink.close().await.unwrap();
    connection
        .close(200, ShortString::from("done"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_closed_connection_is_replaced_by_the_next_delivery() {
    let Some(connection) = broker().await else {
        return;
    };
    let channel = connection.create_channel().await.unwrap();
    let suffix = unique();
    let exchange = format!("tenancy.test.{suffix}");
    let connects = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connects);
    let sink = RabbitSink::with_connector(consumer(), move || {
        counted.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Connection::connect(&amqp_url(), ConnectionProperties::default()).await })
    })
    .with_exchange(ExchangeName::new(exchange.as_str()).unwrap())
    // Declared by the sink's own channel, on every (re)connection.
    .with_declare_exchange(true);
    let tenant = TenantId::new();

    sink.deliver(&[event(tenant, 1, "member.joined")])
        .await
        .unwrap();
    sink.deliver(&[event(tenant, 2, "member.joined")])
        .await
        .unwrap();
    assert_eq!(
        connects.load(Ordering::SeqCst),
        1,
        "one connection while it stays open"
    );
    let queue = format!("tenancy.test.{suffix}.all");
    bound_queue(
        &channel,
        &queue,
        &exchange,
        &["#".to_owned()],
        FieldTable::default(),
    )
    .await;

    sink.close().await.unwrap();
    sink.deliver(&[event(tenant, 3, "member.joined")])
        .await
        .unwrap();
    assert_eq!(connects.load(Ordering::SeqCst), 2);
    let got: Vec<u64> = drain(&channel, &queue)
        .await
        .iter()
        .map(|d| payload(d).seq)
        .collect();
    assert_eq!(got, vec![3]);

    delete_exchange(&channel, &exchange).await;
    sink.close().await.unwrap();
    connection
        .close(200, ShortString::from("done"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_dropped_connection_is_replaced_by_a_later_delivery() {
    let Some(Proxied {
        connection,
        channel,
        exchange,
        queue,
        proxy,
        connects,
        sink,
    }) = Proxied::start(Duration::from_secs(5)).await
    else {
        return;
    };
    let tenant = TenantId::new();

    sink.deliver(&[event(tenant, 1, "member.joined")])
        .await
        .unwrap();
    proxy.cut().await;
    // The delivery right after the cut either notices the dead connection
    // and reconnects, or fails on it before anything reached the broker;
    // the one after that reconnects.
    let next = [event(tenant, 2, "member.joined")];
    if let Err(error) = sink.deliver(&next).await {
        assert_eq!(error.delivered, 0);
        assert!(
            matches!(error.source, SinkError::Unavailable(_)),
            "{error:?}"
        );
        sink.deliver(&next).await.unwrap();
    }
    assert_eq!(connects.load(Ordering::SeqCst), 2);
    let got: Vec<u64> = drain(&channel, &queue)
        .await
        .iter()
        .map(|d| payload(d).seq)
        .collect();
    assert_eq!(got, vec![1, 2]);

    delete_exchange(&channel, &exchange).await;
    sink.close().await.unwrap();
    connection
        .close(200, ShortString::from("done"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_connection_that_stops_answering_is_replaced_after_the_confirm_timeout() {
    let Some(Proxied {
        connection,
        channel,
        exchange,
        queue,
        proxy,
        connects,
        sink,
    }) = Proxied::start(Duration::from_millis(500)).await
    else {
        return;
    };
    let tenant = TenantId::new();

    sink.deliver(&[event(tenant, 1, "member.joined")])
        .await
        .unwrap();
    proxy.freeze();
    let next = [event(tenant, 2, "member.joined")];
    let error = sink.deliver(&next).await.unwrap_err();
    assert_eq!(error.delivered, 0);
    assert!(
        matches!(error.source, SinkError::Unavailable(_)),
        "{error:?}"
    );
    // The frozen connection still looks open; the sink connects anew
    // (new connections through the proxy are not frozen).
    sink.deliver(&next).await.unwrap();
    assert_eq!(connects.load(Ordering::SeqCst), 2);
    let got: Vec<u64> = drain(&channel, &queue)
        .await
        .iter()
        .map(|d| payload(d).seq)
        .collect();
    assert_eq!(got, vec![1, 2]);

    proxy.cut().await;
    delete_exchange(&channel, &exchange).await;
    sink.close().await.unwrap();
    connection
        .close(200, ShortString::from("done"))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_relay_carries_the_outbox_to_the_exchange() {
    let Some(connection) = broker().await else {
        return;
    };
    let channel = connection.create_channel().await.unwrap();
    let suffix = unique();
    let exchange = format!("tenancy.test.{suffix}");
    let sink = Arc::new(
        RabbitSink::new(amqp_url(), consumer())
            .with_exchange(ExchangeName::new(exchange.as_str()).unwrap()),
    );
    sink.ensure_exchange().await.unwrap();
    let queue = format!("tenancy.test.{suffix}.members");
    bound_queue(
        &channel,
        &queue,
        &exchange,
        &["*.member.#".to_owned()],
        FieldTable::default(),
    )
    .await;
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let tenant = common::tenant_with_events(&backend, 3).await;
    let relay = Relay::new(backend.clone()).sink(sink.clone());

    assert_eq!(relay.run_once().await.unwrap(), 4);
    // tenant.created does not match *.member.#; the three member events do.
    let got: Vec<Event> = drain(&channel, &queue).await.iter().map(payload).collect();
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3, 4]);
    assert!(got.iter().all(|e| e.tenant_id == tenant));
    assert_eq!(relay.run_once().await.unwrap(), 0);

    delete_exchange(&channel, &exchange).await;
    sink.close().await.unwrap();
    connection
        .close(200, ShortString::from("done"))
        .await
        .unwrap();
}
