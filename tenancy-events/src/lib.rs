//! Relays the tenancy outbox: every event appended in the transaction of
//! its change (see [`tenancy_core::outbox`]) is delivered, in order per
//! tenant and at least once, to each configured [`EventSink`].
//!
//! - [`Relay`]: claims each tenant's pending events per sink, delivers,
//!   acknowledges, retries failures with backoff, purges what every sink
//!   has after the retention period, replays from a point.
//! - Sinks: [`Subscription`] (a handler in process), and behind features
//!   NATS JetStream and RabbitMQ.
//! - [`EventsModule`] (feature `http`): the relay started and stopped with
//!   the app built by tenancy-http, with its lag in `GET /ready`.
//!
//! # Features
//!
//! - `memory` (default) / `postgres`: the backends whose outbox is relayed.
//! - `nats`: the NATS JetStream sink.
//! - `rabbitmq`: the RabbitMQ sink.
//! - `http`: [`EventsModule`].
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "http")]
mod http;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
mod relay;
mod sink;
mod subscription;

#[cfg(feature = "http")]
pub use http::EventsModule;
pub use relay::{Relay, RelayConfig, RelayError, RunningRelay};
pub use sink::{DeliveryError, EventSink, SinkError};
pub use subscription::{EventHandler, Subscription, TypeFilter};
