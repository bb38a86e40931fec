//! The framework-agnostic HTTP surface of the tenancy SDK, shared by
//! `tenancy-axum` and `tenancy-actix`.
//!
//! - [`Tenancy`] holds the services (identity, directory, authorization)
//!   and the [`HttpConfig`].
//! - The pipeline ([`Tenancy::authenticate`]) authenticates a request
//!   (bearer JWT, API key, or access-token cookie with a CSRF check),
//!   resolves its tenant ([`TenantSource`]), checks the tenant is active and
//!   the caller's, and yields a [`RequestContext`] whose
//!   [`RequestContext::require`] and [`RequestContext::authorize`] answer
//!   permission questions.
//! - [`routes`] is the table of the SDK's own routes (auth, sessions, API
//!   keys, members, invitations, roles, policies, explain, audit, JWKS);
//!   [`Tenancy::dispatch`] serves one.
//! - [`idempotency`]: `Idempotency-Key` on state-changing requests, for the
//!   SDK's routes ([`TenancyBuilder::idempotency`]) and, through the
//!   framework layers, the host's.
//! - `GET /health` and `GET /ready` (every [`ReadinessCheck`]: the Postgres
//!   pool, the host's and the modules' checks) are among the routes.
//! - Feature `oidc`: [`oidc::OidcModule`], the OAuth 2.0 / OpenID Connect
//!   authorization server's endpoints (discovery, authorize with login and
//!   consent pages, token, userinfo, introspection, revocation, logout,
//!   client management), answering RFC 6749 JSON errors.
//! - Every error is an RFC 9457 [`Problem`]; `401` carries
//!   `WWW-Authenticate` per RFC 6750, lockouts carry `Retry-After`, and a
//!   resource of another tenant answers `404`.
//!
//! Framework integrations convert their request into an [`ApiRequest`]
//! and the returned `http::Response<Bytes>` back; nothing else.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod config;
mod errors;
mod forwarded;
mod grants;
mod guard;
mod health;
pub mod idempotency;
mod module;
#[cfg(feature = "oidc")]
#[cfg_attr(docsrs, doc(cfg(feature = "oidc")))]
pub mod oidc;
mod origin;
mod paging;
mod permission;
mod pipeline;
mod problem;
mod request;
mod response;
mod routes;
#[cfg(feature = "sso")]
pub mod sso;
mod tenancy;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod trace;

pub use builder::{SetupError, Stores, TenancyBuilder};
pub use config::{CookieConfig, HttpConfig, TenantSource};
pub use forwarded::{ForwardedHeader, IpNet, TrustedProxies};
pub use guard::{Admission, Guard};
#[cfg(feature = "postgres")]
pub use health::PostgresCheck;
pub use health::ReadinessCheck;
pub use idempotency::{Idempotency, IdempotencyConfig};
pub use module::Module;
pub use origin::{InvalidOrigin, Origin};
pub use paging::{page_json, page_request};
pub use permission::{RoutePermission, UnknownPermission};
pub use pipeline::{RequestContext, RequestHead};
pub use problem::{FieldError, PROBLEM_JSON, Problem, ProblemKind};
pub use request::{ApiRequest, parse_json};
pub use response::{json, no_content};
pub use routes::{Access, Handler, Route, routes};
pub use tenancy::Tenancy;

/// The attribute [`Guard`] and [`Module`] implementations are written with.
pub use async_trait::async_trait;
pub use http;
pub use tenancy_auth as auth;
pub use tenancy_authz as authz;
pub use tenancy_core as core;
