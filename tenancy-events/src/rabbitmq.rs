//! [`RabbitSink`]: publishes outbox events to a RabbitMQ topic exchange.
//!
//! Each event becomes one persistent message (delivery mode 2) on a
//! durable topic exchange (default [`DEFAULT_EXCHANGE`]), with the routing
//! key `{tenant_id}.{event_type}` (for example `0190….member.joined`), the
//! event's JSON as body and these properties:
//!
//! | property | value |
//! | --- | --- |
//! | `message_id` | [`Event::id`] |
//! | `content_type` | `application/json` |
//! | `type` | [`Event::event_type`] |
//! | `timestamp` | [`Event::occurred_at`], in whole seconds |
//! | header `tenancy-tenant-id` | [`Event::tenant_id`] |
//! | header `tenancy-event-seq` | [`Event::seq`] |
//! | header `tenancy-event-version` | [`Event::version`] |
//!
//! Queues choose what they receive with binding patterns: `*.member.#`
//! takes every tenant's membership events, `{tenant_id}.#` one tenant's.
//!
//! # Publisher confirms, at least once
//!
//! The channel runs in confirm mode: a batch is published pipelined, then
//! every confirm is awaited in order. An event counts as delivered once the
//! broker confirmed it (for a persistent message on a durable queue, once
//! it is on disk). A negative confirm, a closed channel or connection, or no
//! confirm within the confirm timeout fails the batch at that event, and the
//! relay retries from there: consumers may see an event twice and
//! deduplicate on `message_id`, the event id. After a confirm timeout the
//! sink also drops the connection, which may be stuck, and the next
//! delivery connects anew.
//!
//! A message that no queue's binding matches is confirmed and dropped, as
//! a topic exchange does; it counts as delivered. Bind the queues before
//! events matter to them.
//!
//! # Connections
//!
//! The sink connects on its first delivery (or [`RabbitSink::ensure_exchange`]),
//! within a connect timeout, and keeps one connection and one channel.
//! When the broker closes the channel (after an error) or the connection
//! drops, the delivery that runs into it fails, and the next delivery opens
//! a new channel, reconnecting if needed; the sink never gives up on a
//! broker that comes back.
//!
//! ```no_run
//! use tenancy_core::ConsumerName;
//! use tenancy_events::rabbitmq::{ExchangeName, RabbitSink};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let sink = RabbitSink::new("amqp://guest:guest@127.0.0.1:5672/%2f", ConsumerName::new("rabbitmq")?)
//!     .with_exchange(ExchangeName::new("acme.events")?);
//! // At startup: declare the durable topic exchange (idempotent), and fail
//! // early if the broker is unreachable.
//! sink.ensure_exchange().await?;
//! // Then hand `sink` to the relay.
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tenancy_core::{BoxError, ConsumerName, Event};
use tokio::sync::Mutex;

use crate::sink::{DeliveryError, EventSink, SinkError};

/// The exchange used unless [`RabbitSink::with_exchange`] names another.
pub const DEFAULT_EXCHANGE: &str = "tenancy.events";

/// How long a publish waits for its confirm unless
/// [`RabbitSink::with_confirm_timeout`] says otherwise.
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// How long opening a connection and its channel may take unless
/// [`RabbitSink::with_connect_timeout`] says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// AMQP delivery mode 2: the broker writes the message to disk on durable queues.
const PERSISTENT: u8 = 2;

/// A future opening a connection.
pub type ConnectFuture = Pin<Box<dyn Future<Output = lapin::Result<Connection>> + Send>>;

type Connector = Arc<dyn Fn() -> ConnectFuture + Send + Sync>;

/// The name of the exchange the sink publishes to: 1 to 255 characters
/// of ASCII letters, digits, `-`, `_`, `.` and `:`, not starting with the
/// broker-reserved `amq.`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ExchangeName(String);

impl ExchangeName {
    /// Validates an exchange name such as `tenancy.events`.
    pub fn new(raw: impl Into<String>) -> Result<Self, InvalidExchangeName> {
        let raw = raw.into();
        let ok = (1..=255).contains(&raw.len())
            && !raw.starts_with("amq.")
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
        if ok {
            Ok(Self(raw))
        } else {
            Err(InvalidExchangeName { name: raw })
        }
    }

    /// The name's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ExchangeName {
    fn default() -> Self {
        Self(DEFAULT_EXCHANGE.to_owned())
    }
}

impl fmt::Display for ExchangeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ExchangeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// An exchange name the sink does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid exchange name {name:?}: expected 1 to 255 of a-z A-Z 0-9 - _ . : not starting with amq."
)]
pub struct InvalidExchangeName {
    /// The refused name.
    pub name: String,
}

/// Why [`RabbitSink::ensure_exchange`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnsureExchangeError {
    /// The broker could not be reached in time or the channel not opened.
    #[error("the broker is unavailable")]
    Unavailable(#[source] BoxError),
    /// The broker refused the declaration, such as when an exchange of that
    /// name exists with another type or durability.
    #[error("the exchange could not be declared")]
    Declare(#[source] lapin::Error),
}

/// The open connection and its confirm-mode channel.
struct Live {
    connection: Connection,
    channel: Channel,
}

/// An [`EventSink`] publishing to a RabbitMQ topic exchange with publisher
/// confirms; see the [module docs](self).
pub struct RabbitSink {
    consumer: ConsumerName,
    exchange: ExchangeName,
    declare_exchange: bool,
    confirm_timeout: Duration,
    connect_timeout: Duration,
    connect: Connector,
    live: Mutex<Option<Live>>,
}

impl RabbitSink {
    /// A sink connecting to `uri` (such as `amqp://user:pass@host:5672/%2f`)
    /// with default connection properties, publishing to
    /// [`DEFAULT_EXCHANGE`], its position tracked as `consumer`. It does
    /// not connect until needed.
    pub fn new(uri: impl Into<String>, consumer: ConsumerName) -> Self {
        let uri: Arc<str> = Arc::from(uri.into());
        Self::with_connector(consumer, move || {
            let uri = Arc::clone(&uri);
            Box::pin(
                async move { Connection::connect(&uri, ConnectionProperties::default()).await },
            )
        })
    }

    /// A sink that opens each connection with `connect` (for TLS settings,
    /// connection properties or credentials read at connect time). It is
    /// called again whenever the previous connection is gone.
    pub fn with_connector<F>(consumer: ConsumerName, connect: F) -> Self
    where
        F: Fn() -> ConnectFuture + Send + Sync + 'static,
    {
        Self {
            consumer,
            exchange: ExchangeName::default(),
            declare_exchange: false,
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            connect: Arc::new(connect),
            live: Mutex::new(None),
        }
    }

    /// Publishes to `exchange` instead of [`DEFAULT_EXCHANGE`].
    pub fn with_exchange(mut self, exchange: ExchangeName) -> Self {
        self.exchange = exchange;
        self
    }

    /// When `declare` is true, every channel the sink opens first declares
    /// the exchange (durable, topic), so deliveries work on a broker where
    /// nobody declared it. Off by default: the exchange is then declared
    /// by [`RabbitSink::ensure_exchange`] or by whoever manages the broker,
    /// and publishing to a missing exchange fails (the relay retries).
    pub fn with_declare_exchange(mut self, declare: bool) -> Self {
        self.declare_exchange = declare;
        self
    }

    /// How long a publish waits for the broker's confirm before the batch
    /// fails at that event (default [`DEFAULT_CONFIRM_TIMEOUT`]).
    pub fn with_confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// How long connecting and opening the channel may take before the
    /// delivery fails (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The exchange the sink publishes to.
    pub fn exchange(&self) -> &ExchangeName {
        &self.exchange
    }

    /// Declares the exchange (durable, topic) now, connecting if needed.
    /// Idempotent; fails if an exchange of that name exists with other
    /// settings.
    pub async fn ensure_exchange(&self) -> Result<(), EnsureExchangeError> {
        let channel = self
            .channel()
            .await
            .map_err(EnsureExchangeError::Unavailable)?;
        declare(&channel, &self.exchange)
            .await
            .map_err(EnsureExchangeError::Declare)
    }

    /// Closes the connection, if open. A later delivery opens a new one.
    pub async fn close(&self) -> Result<(), lapin::Error> {
        let live = self.live.lock().await.take();
        match live {
            Some(live) if live.connection.status().connected() => {
                live.connection
                    .close(200, ShortString::from("closed by the sink"))
                    .await
            }
            _ => Ok(()),
        }
    }

    /// The open confirm-mode channel, opening a channel (and a connection)
    /// when the previous one is gone.
    async fn channel(&self) -> Result<Channel, BoxError> {
        let mut live = self.live.lock().await;
        if let Some(current) = live.as_mut()
            && current.connection.status().connected()
        {
            if current.channel.status().connected() {
                return Ok(current.channel.clone());
            }
            if let Ok(channel) = self.open_channel(&current.connection).await {
                current.channel = channel.clone();
                return Ok(channel);
            }
            // The connection looked open but would not give a channel:
            // start over with a new connection.
            let _ = current
                .connection
                .close(200, ShortString::from("reconnecting"))
                .await;
        }
        *live = None;
        let connecting = async {
            let connection = (self.connect)().await?;
            let channel = self.open_channel(&connection).await?;
            Ok::<_, lapin::Error>((connection, channel))
        };
        let (connection, channel) = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| ConnectTimedOut(self.connect_timeout))??;
        *live = Some(Live {
            connection,
            channel: channel.clone(),
        });
        Ok(channel)
    }

    /// Forgets the connection of `channel` if it is still the current
    /// one, so the next delivery connects anew, and closes it without
    /// waiting long for the broker.
    async fn discard(&self, channel: &Channel) {
        let stale = {
            let mut live = self.live.lock().await;
            if live
                .as_ref()
                .is_some_and(|current| current.channel.id() == channel.id())
            {
                live.take()
            } else {
                None
            }
        };
        if let Some(stale) = stale {
            let closing = stale
                .connection
                .close(200, ShortString::from("no confirm in time"));
            let _ = tokio::time::timeout(Duration::from_secs(1), closing).await;
        }
    }

    async fn open_channel(&self, connection: &Connection) -> Result<Channel, lapin::Error> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        if self.declare_exchange {
            declare(&channel, &self.exchange).await?;
        }
        Ok(channel)
    }

    /// Publishes `events` on `channel` without waiting for confirms.
    /// Returns the pending confirms of the events published and, if one
    /// could not be published, why (the events after it are not published).
    async fn publish_all(
        &self,
        channel: &Channel,
        events: &[Event],
    ) -> (Vec<lapin::PublisherConfirm>, Option<SinkError>) {
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            let message = match Message::encode(event) {
                Ok(message) => message,
                Err(error) => return (pending, Some(error)),
            };
            let published = channel
                .basic_publish(
                    ShortString::from(self.exchange.as_str()),
                    message.routing_key,
                    BasicPublishOptions::default(),
                    &message.body,
                    message.properties,
                )
                .await;
            match published {
                Ok(confirm) => pending.push(confirm),
                Err(error) => return (pending, Some(SinkError::Unavailable(Box::new(error)))),
            }
        }
        (pending, None)
    }
}

/// Declares `exchange` as a durable topic exchange.
async fn declare(channel: &Channel, exchange: &ExchangeName) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            ShortString::from(exchange.as_str()),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

/// One event as an AMQP message.
struct Message {
    routing_key: ShortString,
    body: Vec<u8>,
    properties: BasicProperties,
}

impl Message {
    fn encode(event: &Event) -> Result<Self, SinkError> {
        let body = serde_json::to_vec(event).map_err(SinkError::Encode)?;
        let short = |text: String| {
            ShortString::try_new(text).map_err(|error| SinkError::Refused(Box::new(error)))
        };
        let routing_key = short(format!("{}.{}", event.tenant_id, event.event_type))?;
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from("tenancy-tenant-id"),
            AMQPValue::LongString(LongString::from(event.tenant_id.to_string())),
        );
        headers.insert(
            ShortString::from("tenancy-event-seq"),
            match i64::try_from(event.seq) {
                Ok(seq) => AMQPValue::LongLongInt(seq),
                Err(_) => AMQPValue::LongString(LongString::from(event.seq.to_string())),
            },
        );
        headers.insert(
            ShortString::from("tenancy-event-version"),
            AMQPValue::LongLongInt(i64::from(event.version)),
        );
        let mut properties = BasicProperties::default()
            .with_message_id(short(event.id.to_string())?)
            .with_content_type(ShortString::from("application/json"))
            .with_type(short(event.event_type.to_string())?)
            .with_delivery_mode(PERSISTENT)
            .with_headers(headers);
        if let Ok(seconds) = u64::try_from(event.occurred_at.unix_timestamp()) {
            properties = properties.with_timestamp(seconds);
        }
        Ok(Self {
            routing_key,
            body,
            properties,
        })
    }
}

/// The broker answered a publish with a negative confirm.
#[derive(Debug, thiserror::Error)]
#[error("the broker did not accept the message")]
struct Nacked;

/// A confirm did not come in time.
#[derive(Debug, thiserror::Error)]
#[error("no publisher confirm within {0:?}")]
struct ConfirmTimedOut(Duration);

/// Connecting took too long.
#[derive(Debug, thiserror::Error)]
#[error("no connection within {0:?}")]
struct ConnectTimedOut(Duration);

/// The channel was not in confirm mode.
#[derive(Debug, thiserror::Error)]
#[error("publisher confirms are not enabled on the channel")]
struct ConfirmsNotEnabled;

impl fmt::Debug for RabbitSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connector is left out: it may hold credentials.
        f.debug_struct("RabbitSink")
            .field("consumer", &self.consumer)
            .field("exchange", &self.exchange)
            .field("declare_exchange", &self.declare_exchange)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EventSink for RabbitSink {
    fn consumer(&self) -> &ConsumerName {
        &self.consumer
    }

    async fn deliver(&self, events: &[Event]) -> Result<(), DeliveryError> {
        if events.is_empty() {
            return Ok(());
        }
        let channel = self
            .channel()
            .await
            .map_err(|error| DeliveryError::new(0, SinkError::Unavailable(error)))?;
        let (pending, publish_failure) = self.publish_all(&channel, events).await;
        let published = pending.len();
        for (delivered, confirm) in pending.into_iter().enumerate() {
            let source = match tokio::time::timeout(self.confirm_timeout, confirm).await {
                Ok(Ok(Confirmation::Ack(_))) => continue,
                Ok(Ok(Confirmation::Nack(_))) => SinkError::Refused(Box::new(Nacked)),
                Ok(Ok(Confirmation::NotRequested)) => {
                    SinkError::Unavailable(Box::new(ConfirmsNotEnabled))
                }
                Ok(Err(error)) => SinkError::Unavailable(Box::new(error)),
                Err(_) => {
                    // A broker or network that stops answering leaves the
                    // connection looking open: replace it next time.
                    self.discard(&channel).await;
                    SinkError::Unavailable(Box::new(ConfirmTimedOut(self.confirm_timeout)))
                }
            };
            return Err(DeliveryError::new(delivered, source));
        }
        match publish_failure {
            Some(source) => Err(DeliveryError::new(published, source)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenancy_core::outbox::EventType;
    use tenancy_core::{EventId, TenantId};

    #[test]
    fn exchange_names_are_checked() {
        for ok in [
            "tenancy.events",
            "a",
            "acme:prod-events_2",
            &"x".repeat(255),
        ] {
            assert!(ExchangeName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "amq.topic", "with space", "a/b", "é", &"x".repeat(256)] {
            assert!(ExchangeName::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(ExchangeName::default().as_str(), DEFAULT_EXCHANGE);
    }

    #[test]
    fn an_event_becomes_a_persistent_json_message_keyed_by_tenant_and_type() {
        let event = Event {
            id: EventId::new(),
            tenant_id: TenantId::new(),
            seq: 7,
            event_type: EventType::new("member.joined").unwrap(),
            version: 2,
            occurred_at: time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            data: serde_json::json!({ "k": "v" }),
        };
        let message = Message::encode(&event).unwrap();
        assert_eq!(
            message.routing_key.as_str(),
            format!("{}.member.joined", event.tenant_id)
        );
        let decoded: Event = serde_json::from_slice(&message.body).unwrap();
        assert_eq!(decoded, event);
        let properties = &message.properties;
        let id = event.id.to_string();
        assert_eq!(
            properties.message_id().as_ref().map(ShortString::as_str),
            Some(id.as_str())
        );
        assert_eq!(*properties.delivery_mode(), Some(2));
        assert_eq!(*properties.timestamp(), Some(1_700_000_000));
        assert_eq!(
            properties.kind().as_ref().map(ShortString::as_str),
            Some("member.joined")
        );
        let headers = properties.headers().as_ref().unwrap().inner();
        assert_eq!(
            headers.get("tenancy-event-seq"),
            Some(&AMQPValue::LongLongInt(7))
        );
        assert_eq!(
            headers.get("tenancy-event-version"),
            Some(&AMQPValue::LongLongInt(2))
        );
    }

    #[tokio::test]
    async fn a_connection_that_never_opens_fails_the_delivery_after_the_connect_timeout() {
        let sink = RabbitSink::with_connector(ConsumerName::new("rabbitmq").unwrap(), || {
            Box::pin(std::future::pending())
        })
        .with_connect_timeout(Duration::from_millis(50));
        let event = Event {
            id: EventId::new(),
            tenant_id: TenantId::new(),
            seq: 1,
            event_type: EventType::new("member.joined").unwrap(),
            version: 1,
            occurred_at: time::OffsetDateTime::UNIX_EPOCH,
            data: serde_json::json!({}),
        };
        let error = sink.deliver(&[event]).await.unwrap_err();
        assert_eq!(error.delivered, 0);
        assert!(
            matches!(error.source, SinkError::Unavailable(_)),
            "{error:?}"
        );
        assert!(matches!(
            sink.ensure_exchange().await,
            Err(EnsureExchangeError::Unavailable(_))
        ));
        // Nothing to deliver needs no connection.
        sink.deliver(&[]).await.unwrap();
    }
}
