//! [`Guard`]: a check a route makes after the pipeline and before its
//! handler, beyond permissions (an entitlement, a rate limit, a quota).
//! Optional parts of the SDK provide guards; the framework integrations
//! wrap routes in them (`tenancy_axum::guard`, `tenancy_actix::guard`).

use std::sync::Arc;

use async_trait::async_trait;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::pipeline::RequestContext;
use crate::problem::Problem;

/// A check run on a route's requests once the caller and the tenant are
/// resolved: it lets the request through, possibly with headers for the
/// answer ([`Admission`]), or answers a [`Problem`] instead of the handler.
///
/// ```
/// use tenancy_http::{Admission, Guard, Problem, RequestContext, async_trait};
///
/// /// Lets only API keys through.
/// struct KeysOnly;
///
/// #[async_trait]
/// impl Guard for KeysOnly {
///     fn name(&self) -> &str {
///         "keys-only"
///     }
///
///     async fn check(&self, context: &RequestContext) -> Result<Admission, Problem> {
///         if context.user_id().is_some() {
///             return Err(Problem::forbidden("this route serves API keys only"));
///         }
///         Ok(Admission::new())
///     }
/// }
/// ```
#[async_trait]
pub trait Guard: Send + Sync + 'static {
    /// A short name, for logs (`entitlement:sso`, `rate-limit`).
    fn name(&self) -> &str;

    /// Admits or refuses the request. It runs on the hot path: keep it to
    /// cached reads and atomic updates.
    async fn check(&self, context: &RequestContext) -> Result<Admission, Problem>;
}

#[async_trait]
impl<G: Guard + ?Sized> Guard for Arc<G> {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn check(&self, context: &RequestContext) -> Result<Admission, Problem> {
        (**self).check(context).await
    }
}

/// A request a [`Guard`] let through, with the headers its answer should
/// carry (`RateLimit`, quota state). Empty by default, allocating nothing.
#[derive(Debug, Clone, Default, PartialEq)]
#[must_use]
pub struct Admission {
    headers: Option<HeaderMap>,
}

impl Admission {
    /// Let through, adding nothing to the answer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name: value` to the answer (appended: a header the handler
    /// set is kept, and repeated names are allowed).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers
            .get_or_insert_with(HeaderMap::new)
            .append(name, value);
        self
    }

    /// The headers to add, if any.
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.headers.as_ref()
    }

    /// Appends the headers to an answer's.
    pub fn apply(self, headers: &mut HeaderMap) {
        if let Some(extra) = self.headers {
            for (name, value) in &extra {
                headers.append(name.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admission_appends_without_replacing() {
        let admission = Admission::new()
            .with_header(
                HeaderName::from_static("ratelimit"),
                HeaderValue::from_static("a"),
            )
            .with_header(
                HeaderName::from_static("ratelimit"),
                HeaderValue::from_static("b"),
            );
        let mut headers = HeaderMap::new();
        headers.insert("ratelimit", HeaderValue::from_static("handler"));
        admission.apply(&mut headers);
        let values: Vec<_> = headers.get_all("ratelimit").iter().collect();
        assert_eq!(values, ["handler", "a", "b"]);
    }

    #[test]
    fn an_empty_admission_allocates_nothing_and_adds_nothing() {
        let admission = Admission::new();
        assert!(admission.headers().is_none());
        let mut headers = HeaderMap::new();
        admission.apply(&mut headers);
        assert!(headers.is_empty());
    }
}
