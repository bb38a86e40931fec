//! The webhook routes as a tenancy-http [`Module`]. Every route needs the
//! permission [`WEBHOOKS_MANAGE`] (`webhooks:manage`), which the host
//! declares in its permission catalog; an endpoint or delivery of another
//! tenant answers 404.
//!
//! - `GET /webhooks/endpoints` (keyset-paginated: `limit`, `after`),
//!   `POST /webhooks/endpoints` (answers the endpoint and its `secret`, shown once);
//! - `GET`, `PATCH`, `DELETE /webhooks/endpoints/{id}`;
//! - `POST /webhooks/endpoints/{id}/rotate-secret` (answers the new `secret`);
//! - `POST /webhooks/endpoints/{id}/resume`;
//! - `GET /webhooks/endpoints/{id}/deliveries` (newest first, paginated);
//! - `POST /webhooks/deliveries/{id}/redeliver` (202, with the new job's id).
//!
//! The module serves the routes (and, on Postgres, runs the migrations);
//! the host gives [`Webhooks::sink`] to the events relay and runs a
//! `tenancy-jobs` worker with [`Webhooks::handler`].

use bytes::Bytes;
use serde_json::json;
use tenancy_http::http::{Response, StatusCode};
use tenancy_http::{
    Access, ApiRequest, Module, Problem, RequestContext, Route, Tenancy, async_trait, page_json,
    page_request, route,
};

use crate::endpoint::{DeliveryId, EndpointId, EndpointUpdate, NewEndpoint};
use crate::error::WebhookError;
use crate::service::Webhooks;

/// The permission every webhook route requires.
pub const WEBHOOKS_MANAGE: &str = "webhooks:manage";

/// Most bytes of a request body.
const BODY_LIMIT: usize = 16 * 1024;

/// The webhook routes, over a [`Webhooks`].
#[derive(Debug, Clone)]
pub struct WebhooksModule {
    webhooks: Webhooks,
}

impl WebhooksModule {
    /// A module serving `webhooks`.
    pub fn new(webhooks: Webhooks) -> Self {
        Self { webhooks }
    }

    /// The service behind the routes.
    pub fn webhooks(&self) -> &Webhooks {
        &self.webhooks
    }
}

#[async_trait]
impl Module for WebhooksModule {
    fn name(&self) -> &'static str {
        "webhooks"
    }

    fn routes(&self) -> Vec<Route> {
        let manage = Access::Permission(WEBHOOKS_MANAGE);
        vec![
            route!(GET "/webhooks/endpoints", manage, list_endpoints),
            route!(POST "/webhooks/endpoints", manage, create_endpoint),
            route!(GET "/webhooks/endpoints/{id}", manage, get_endpoint),
            route!(PATCH "/webhooks/endpoints/{id}", manage, update_endpoint),
            route!(DELETE "/webhooks/endpoints/{id}", manage, delete_endpoint),
            route!(POST "/webhooks/endpoints/{id}/rotate-secret", manage, rotate_secret),
            route!(POST "/webhooks/endpoints/{id}/resume", manage, resume),
            route!(GET "/webhooks/endpoints/{id}/deliveries", manage, deliveries),
            route!(POST "/webhooks/deliveries/{id}/redeliver", manage, redeliver),
        ]
    }

    #[cfg(feature = "postgres")]
    fn migrations(&self) -> Vec<tenancy_core::postgres::sqlx::migrate::Migrator> {
        vec![crate::postgres::migrator()]
    }
}

/// The problem a webhook error answers.
pub fn problem(error: &WebhookError) -> Problem {
    match error {
        WebhookError::NotFound(_) => Problem::not_found(),
        WebhookError::InvalidInput(detail) => Problem::bad_request(detail.clone()),
        WebhookError::TooManyEndpoints { .. } => Problem::conflict(error.to_string()),
        // The tenant reads the generic reason only: the resolved address
        // may describe the internal network.
        WebhookError::Refused(refused) => Problem::bad_request(refused.public_message()),
        WebhookError::Unavailable(_) | WebhookError::Store(_) | WebhookError::Jobs(_) => {
            Problem::unavailable(error)
        }
        _ => Problem::internal(error),
    }
}

fn module(t: &Tenancy) -> Result<&Webhooks, Problem> {
    t.module::<WebhooksModule>()
        .map(WebhooksModule::webhooks)
        .ok_or_else(|| {
            Problem::internal(&Problem::bad_request(
                "the webhooks module is not registered",
            ))
        })
}

fn context(c: Option<&RequestContext>) -> Result<&RequestContext, Problem> {
    c.ok_or_else(|| Problem::internal(&Problem::bad_request("route ran without its context")))
}

fn endpoint_id(r: &ApiRequest) -> Result<EndpointId, Problem> {
    r.param("id")?.parse().map_err(|_| Problem::not_found())
}

fn reply<T: serde::Serialize>(status: StatusCode, body: &T) -> Result<Response<Bytes>, Problem> {
    tenancy_http::json(status, body)
}

async fn list_endpoints(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = context(c)?;
    let page = module(t)?
        .endpoints(c.tenant_id(), &page_request(r.uri.query())?)
        .await
        .map_err(|e| problem(&e))?;
    reply(StatusCode::OK, &page_json(&page))
}

async fn create_endpoint(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = context(c)?;
    let new: NewEndpoint = r.json(BODY_LIMIT)?;
    let (endpoint, secret) = module(t)?
        .create_endpoint(c.tenant_id(), new)
        .await
        .map_err(|e| problem(&e))?;
    let mut body = serde_json::to_value(&endpoint).map_err(|e| Problem::internal(&e))?;
    body["secret"] = json!(secret.expose_secret());
    reply(StatusCode::CREATED, &body)
}

async fn get_endpoint(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = context(c)?;
    let endpoint = module(t)?
        .endpoint(c.tenant_id(), endpoint_id(r)?)
        .await
        .map_err(|e| problem(&e))?;
    reply(StatusCode::OK, &endpoint)
}

async fn update_endpoint(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = context(c)?;
    let id = endpoint_id(r)?;
    let update: EndpointUpdate = r.json(BODY_LIMIT)?;
    let endpoint = module(t)?
        .update_endpoint(c.tenant_id(), id, update)
        .await
        .map_err(|e| problem(&e))?;
    reply(StatusCode::OK, &endpoint)
}

async fn delete_endpoint(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = context(c)?;
    module(t)?
        .delete_endpoint(c.tenant_id(), endpoint_id(r)?)
        .await
        .map_err(|e| problem(&e))?;
    Ok(tenancy_http::no_content())
}

async fn rotate_secret(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = context(c)?;
    let secret = module(t)?
        .rotate_secret(c.tenant_id(), endpoint_id(r)?)
        .await
        .map_err(|e| problem(&e))?;
    reply(StatusCode::OK, &json!({ "secret": secret.expose_secret() }))
}

/// `POST /webhooks/endpoints/{id}/resume`: makes a paused endpoint active
/// again and sends again the deliveries skipped during the pause (see
/// [`Webhooks::resume`]).
async fn resume(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = context(c)?;
    let endpoint = module(t)?
        .resume(c.tenant_id(), endpoint_id(r)?)
        .await
        .map_err(|e| problem(&e))?;
    reply(StatusCode::OK, &endpoint)
}

async fn deliveries(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = context(c)?;
    let page = module(t)?
        .deliveries(
            c.tenant_id(),
            endpoint_id(r)?,
            &page_request(r.uri.query())?,
        )
        .await
        .map_err(|e| problem(&e))?;
    reply(StatusCode::OK, &page_json(&page))
}

async fn redeliver(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = context(c)?;
    let id: DeliveryId = r.param("id")?.parse().map_err(|_| Problem::not_found())?;
    let job = module(t)?
        .redeliver(c.tenant_id(), id)
        .await
        .map_err(|e| problem(&e))?;
    reply(StatusCode::ACCEPTED, &json!({ "job_id": job.to_string() }))
}
