//! The OAuth 2.0 / OpenID Connect provider served by axum over real HTTP
//! on 127.0.0.1, in memory and on Postgres: the `openidconnect` crate as
//! the relying party through the whole code + PKCE flow, and every error
//! path of RFC 6749 / OIDC Core the shared suite knows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/shared/oidc_provider.rs"]
mod oidc;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use tenancy_http::Tenancy;

/// Serves the SDK's routes (the OIDC module's among them) on `listener`.
fn serve(
    tenancy: Tenancy,
    listener: std::net::TcpListener,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        let app = tenancy_axum::router(tenancy)
            .fallback(tenancy_axum::not_found)
            .into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
    })
}

oidc_scenarios!(serve;
    relying_party_code_flow,
    relying_party_public_client,
    relying_party_client_credentials,
    token_endpoint_client_authentication,
    reused_code_revokes_its_tokens,
    expired_code,
    pkce_is_enforced,
    code_bound_to_client_and_redirect_uri,
    unsupported_and_unauthorized_grants,
    invalid_scope,
    unsupported_response_type,
    open_redirects_are_refused,
    prompt_and_max_age,
    consent_denied,
    forms_check_csrf,
    introspection_and_revocation_rules,
    scopes_limit_api_permissions,
    discovery_matches_behaviour,
    client_management_routes,
    logout_rules,
    claims_follow_scopes,
    every_advertised_id_token_algorithm,
    endpoint_auth_methods_as_advertised,
    private_key_jwt_client_authentication,
);
