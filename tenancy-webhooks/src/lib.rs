#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod endpoint;
mod error;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod secret;
mod service;
pub mod signing;
mod sink;
pub mod ssrf;
mod store;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use endpoint::{
    AttemptOutcome, DEFAULT_MAX_ENDPOINTS, DeliveryAttempt, DeliveryId, Endpoint, EndpointId,
    EndpointStatus, EndpointUpdate, EventTypes, MAX_DESCRIPTION_LEN, MAX_EVENT_TYPES, MAX_URL_LEN,
    NewEndpoint, StoredSecrets, validate_url,
};
pub use error::WebhookError;
#[cfg(feature = "memory")]
pub use memory::MemoryWebhookStore;
pub use secret::{SealedSecret, SecretCipher, SecretKey, WebhookSecret};
pub use service::{
    DELIVER_KIND, ENDPOINT_PAUSED, MAX_EXCERPT_BYTES, MAX_RESUME_REPLAY, WebhookConfig, Webhooks,
};
pub use sink::{CONSUMER, WebhookSink};
pub use ssrf::{AddressClass, TargetPolicy, TargetRefused};
pub use store::{Purged, WebhookStore};
