//! axum integration for the tenancy SDK.
//!
//! This crate will hold a tower `Layer` that authenticates requests, resolves
//! the tenant and authorizes the route, extractors for the resulting
//! `Principal` and `TenantScope`, and mountable `Router`s for auth, members,
//! roles and audit. It is not implemented yet.
#![forbid(unsafe_code)]

pub use tenancy_core;
