//! actix-web integration for the tenancy SDK.
//!
//! This crate will hold `Transform` middleware that authenticates requests,
//! resolves the tenant and authorizes the route, `FromRequest` extractors,
//! and mountable `Scope`s with the same paths and answers as the axum
//! integration. It is not implemented yet.
#![forbid(unsafe_code)]

pub use tenancy_core;
