//! The OAuth 2.0 / OpenID Connect provider served by actix-web over real
//! HTTP on 127.0.0.1, in memory and on Postgres: the `openidconnect` crate
//! as the relying party through the whole code + PKCE flow, and every
//! error path of RFC 6749 / OIDC Core the shared suite knows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/shared/oidc_provider.rs"]
mod oidc;

use std::future::Future;
use std::pin::Pin;

use actix_web::{App, HttpServer, web};
use tenancy_http::Tenancy;

/// Serves the SDK's routes (the OIDC module's among them) on `listener`,
/// on a thread of its own (actix runs its own runtime), stopped when the
/// test's runtime shuts down.
fn serve(
    tenancy: Tenancy,
    listener: std::net::TcpListener,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let (listening, started) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                App::new()
                    .configure(tenancy_actix::configure(tenancy.clone()))
                    .default_service(web::to(tenancy_actix::not_found))
            })
            .workers(1)
            .disable_signals()
            .listen(listener)
            .expect("listen");
            let running = server.run();
            let handle = running.handle();
            actix_web::rt::spawn(async move {
                let _ = stopped.await;
                handle.stop(false).await;
            });
            listening.send(()).expect("started");
            running.await.expect("serve");
        });
    });
    Box::pin(async move {
        started.await.expect("the server thread started");
        tokio::spawn(async move {
            let _stop = stop;
            std::future::pending::<()>().await;
        });
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
