//! The request span: one per request, opened by the framework integration,
//! filled in by the pipeline as it learns who is calling and what they may
//! do. Never carries a credential, a body or a query string.

use tracing::field::Empty;

/// The span both integrations open around a request (target
/// `tenancy_http::trace`, name `tenancy.request`), with `method` and
/// `path`; the pipeline records `tenant`, `principal` (its kind and id),
/// `permission` and `decision` (`allow`/`deny`) as it goes, and `problem`
/// (the problem type) when the answer is an error.
///
/// The probes `GET /health` and `GET /ready` get no span: orchestrators
/// call them every few seconds, and they carry no caller.
///
/// Open it yourself around work of your own that should be reported like
/// a request (`tracing::Instrument::instrument(future, span)`).
pub fn request_span(method: &str, path: &str) -> tracing::Span {
    if method == "GET" && matches!(path, "/health" | "/ready") {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: "tenancy_http::trace",
        "tenancy.request",
        method = %method,
        path = %path,
        tenant = Empty,
        principal = Empty,
        permission = Empty,
        decision = Empty,
        problem = Empty,
    )
}

/// Records `value` as `field` of the current request span, if one is open.
pub(crate) fn record(field: &'static str, value: &dyn tracing::Value) {
    tracing::Span::current().record(field, value);
}
