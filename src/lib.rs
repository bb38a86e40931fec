#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(inline)]
pub use tenancy_core::*;

/// Identity: passwords, lockout, sessions, JWT access tokens, API keys;
/// with feature `sso`, sign-in through external identity providers
/// (`tenancy::auth::sso`, and `tenancy::http::sso::SsoModule` with `http`);
/// with feature `testkit-idp`, a simulated external identity provider to
/// test it against (`tenancy::auth::testkit::idp`).
#[cfg(feature = "auth")]
#[doc(inline)]
pub use tenancy_auth as auth;

/// Authorization: the RBAC + ABAC policy engine (feature `authz`).
#[cfg(feature = "authz")]
#[doc(inline)]
pub use tenancy_authz as authz;

/// Billing (in progress): plans, entitlements, subscriptions, webhook
/// verification and sync (feature `billing`).
#[cfg(feature = "billing")]
#[doc(inline)]
pub use tenancy_billing as billing;

/// Usage metering: meters, events counted once, rollups, usage queries
/// (feature `metering`; in progress).
#[cfg(feature = "metering")]
#[doc(inline)]
pub use tenancy_metering as metering;

#[cfg(all(feature = "billing", feature = "metering"))]
pub mod metering_billing;

/// The framework-agnostic HTTP pipeline and routes.
#[cfg(feature = "http")]
#[doc(inline)]
pub use tenancy_http as http;

/// axum integration: layers, extractors, the SDK's routes (feature `axum`).
#[cfg(feature = "axum")]
#[doc(inline)]
pub use tenancy_axum as axum;

/// actix-web integration: middleware, extractors, the SDK's routes (feature `actix`).
#[cfg(feature = "actix")]
#[doc(inline)]
pub use tenancy_actix as actix;

/// The outbox relay: delivers every tenant's events in order, at least
/// once, to subscriptions and brokers (feature `events`).
#[cfg(feature = "events")]
#[doc(inline)]
pub use tenancy_events as events;

/// Background jobs: enqueue in the caller's transaction, leases, retries
/// with backoff, dead letters, periodic jobs (feature `jobs`).
#[cfg(feature = "jobs")]
#[doc(inline)]
pub use tenancy_jobs as jobs;

/// Outgoing webhooks to tenants: endpoints, Standard Webhooks signatures,
/// SSRF protection, retries, delivery log, circuit breaker (feature `webhooks`).
#[cfg(feature = "webhooks")]
#[doc(inline)]
pub use tenancy_webhooks as webhooks;

/// The tenant provisioning pipeline: host-declared steps with durable
/// state, retries, compensation, cancel and deadlines (feature `provisioning`).
#[cfg(feature = "provisioning")]
#[doc(inline)]
pub use tenancy_provisioning as provisioning;

/// The OAuth 2.0 / OpenID Connect authorization server (feature `oidc`):
/// the typed provider and its store ([`tenancy_auth::oidc`]) and the
/// module serving its endpoints ([`tenancy_http::oidc`]).
#[cfg(feature = "oidc")]
#[cfg_attr(docsrs, doc(cfg(feature = "oidc")))]
pub mod oidc {
    #[doc(inline)]
    pub use tenancy_auth::oidc::*;
    #[doc(inline)]
    pub use tenancy_http::oidc::{
        ConsentPage, DefaultUi, InteractionUi, LoginPage, OidcConfig, OidcModule, escape_html,
    };
}

/// Inbound SCIM 2.0 provisioning: a module mounting `/scim/v2` (feature `scim`).
#[cfg(feature = "scim")]
#[doc(inline)]
pub use tenancy_scim as scim;
