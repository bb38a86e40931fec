//! Relays the tenancy outbox: every event appended in the transaction of
//! its change (see [`tenancy_core::outbox`]) is delivered, in order per
//! tenant and at least once, to each configured [`EventSink`].
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod sink;

pub use sink::{DeliveryError, EventSink, SinkError};
