//! Sign-in through external identity providers (the SSO module's routes)
//! served by axum over real HTTP on 127.0.0.1, against the simulated
//! provider: social login GitHub-style and Google-style, tenant SSO by
//! email domain with just-in-time membership, require-SSO, account
//! linking on verified emails only, and the attacks (wrong `state`, wrong
//! `nonce`, replayed code, ID tokens the provider should not have issued).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
#[path = "../../tests/shared/sso_flows.rs"]
mod sso_flows;
mod serve;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tenancy_http::Tenancy;
use tenancy_http::testkit::Projects;

fn start(tenancy: Tenancy, _: Arc<Projects>) -> Pin<Box<dyn Future<Output = SocketAddr> + Send>> {
    serve::serve(tenancy_axum::router(tenancy).fallback(tenancy_axum::not_found))
}

sso_scenarios!(start);
