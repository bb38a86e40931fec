//! The billing routes' handlers.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use tenancy_core::UserStore;
use tenancy_http::http::{Response, StatusCode};
use tenancy_http::{Access, ApiRequest, Problem, RequestContext, Route, Tenancy, route};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{BillingModule, MANAGE, READ, module};
use crate::access::Access as PlanAccess;
use crate::catalog::{FeatureKind, FeatureValue, Limit};
use crate::entitlements::{BillingState, Entitlements};
use crate::provider::{CheckoutRequest, ProviderError};
use crate::service::WebhookError;
use crate::store::BillingStoreError;
use crate::subscription::Subscription;

/// Largest quantity a checkout may ask for.
const MAX_QUANTITY: u32 = 100_000;

pub(crate) fn routes(webhooks: bool) -> Vec<Route> {
    let mut routes = vec![
        route!(POST "/billing/checkout", Access::Permission(MANAGE), checkout),
        route!(POST "/billing/portal", Access::Permission(MANAGE), portal),
        route!(GET "/billing/subscription", Access::Permission(READ), subscription),
        route!(GET "/billing/entitlements", Access::Permission(READ), entitlements),
    ];
    if webhooks {
        routes.push(route!(POST "/billing/webhook", Access::Public, webhook));
    }
    routes
}

fn context(c: Option<&RequestContext>) -> Result<&RequestContext, Problem> {
    c.ok_or_else(|| Problem::internal(&MissingContext))
}

#[derive(Debug, thiserror::Error)]
#[error("a billing route ran without its request context")]
struct MissingContext;

#[derive(Debug, thiserror::Error)]
#[error("no billing provider is configured")]
struct NoProvider;

fn store_problem(error: &BillingStoreError) -> Problem {
    match error {
        BillingStoreError::Store(_) => Problem::unavailable(error),
        other => Problem::internal(other),
    }
}

/// The caller's tenant's billing state.
async fn state(m: &BillingModule, c: &RequestContext) -> Result<BillingState, Problem> {
    m.service()
        .store()
        .state(c.tenant_id())
        .await
        .map_err(|e| store_problem(&e))
}

fn provider_problem(error: &ProviderError) -> Problem {
    match error {
        ProviderError::RateLimited | ProviderError::Unavailable(_) | ProviderError::CircuitOpen => {
            Problem::unavailable(error)
        }
        other => Problem::internal(other),
    }
}

fn rfc3339(at: OffsetDateTime) -> Value {
    at.format(&Rfc3339).map_or(Value::Null, Value::String)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutBody {
    plan: String,
    #[serde(default)]
    quantity: Option<u32>,
}

/// `POST /billing/checkout`: a checkout session for `plan`, answered with
/// the provider's URL. Refused (`409`) while the tenant has a live
/// subscription: plan changes go through the portal, so no tenant pays
/// twice.
async fn checkout(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = context(c)?;
    let m = module(t)?;
    let body: CheckoutBody = tenancy_http::parse_json(&r.headers, &r.body)?;
    let plan = m
        .catalog()
        .plan(&body.plan)
        .ok_or_else(|| Problem::invalid("plan", "no such plan"))?;
    let lookup_key = plan
        .lookup_key()
        .ok_or_else(|| Problem::invalid("plan", "this plan is not sold through checkout"))?
        .to_owned();
    let provider = m
        .provider()
        .ok_or_else(|| Problem::unavailable(&NoProvider))?;
    let tenant_id = c.tenant_id();
    let store = m.service().store();
    let state = state(m, c).await?;
    if state
        .subscription
        .as_ref()
        .is_some_and(|s| !s.status.is_final())
    {
        return Err(Problem::conflict(
            "the tenant already has a subscription; change plans in the billing portal",
        ));
    }
    let quantity = match (body.quantity, m.inner.seat_sync) {
        (_, Some(_)) => {
            let members =
                tenancy_core::active_members(&**t.directory().backend(), tenant_id, u64::MAX)
                    .await
                    .map_err(|e| Problem::unavailable(&e))?;
            u32::try_from(members.max(1)).unwrap_or(u32::MAX)
        }
        (Some(n), None) if (1..=MAX_QUANTITY).contains(&n) => n,
        (Some(_), None) => {
            return Err(Problem::invalid(
                "quantity",
                format!("must be between 1 and {MAX_QUANTITY}"),
            ));
        }
        (None, None) => 1,
    };
    let customer_id = match state.account {
        Some(account) => account.customer_id,
        None => {
            let tenant = t
                .directory()
                .tenant(tenant_id)
                .await
                .map_err(|e| Problem::unavailable(&e))?;
            let email = match c.user_id() {
                Some(user) => t
                    .directory()
                    .backend()
                    .get_user(user)
                    .await
                    .ok()
                    .map(|u| u.email.as_str().to_owned()),
                None => None,
            };
            let customer = provider
                .create_customer(tenant_id, tenant.name.as_str(), email.as_deref())
                .await
                .map_err(|e| provider_problem(&e))?;
            store
                .link_customer(tenant_id, &customer, None, &c.audit())
                .await
                .map_err(|e| store_problem(&e))?;
            customer
        }
    };
    let url = provider
        .create_checkout_session(&CheckoutRequest {
            tenant_id,
            customer_id,
            lookup_key,
            quantity,
            trial_days: m.inner.trial_days,
            success_url: m.inner.urls.success.clone(),
            cancel_url: m.inner.urls.cancel.clone(),
        })
        .await
        .map_err(|e| provider_problem(&e))?;
    tenancy_http::json(StatusCode::OK, &json!({ "url": url }))
}

/// `POST /billing/portal`: the provider's customer portal for the tenant's
/// customer; `409` before the first checkout.
async fn portal(
    t: &Tenancy,
    _: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = context(c)?;
    let m = module(t)?;
    let provider = m
        .provider()
        .ok_or_else(|| Problem::unavailable(&NoProvider))?;
    let state = state(m, c).await?;
    let Some(account) = state.account else {
        return Err(Problem::conflict(
            "the tenant has no billing account yet; check out first",
        ));
    };
    let url = provider
        .create_portal_session(&account.customer_id, &m.inner.urls.portal)
        .await
        .map_err(|e| provider_problem(&e))?;
    tenancy_http::json(StatusCode::OK, &json!({ "url": url }))
}

fn access_json(entitlements: &Entitlements) -> Value {
    match entitlements.access() {
        PlanAccess::Default => json!({ "kind": "default" }),
        PlanAccess::Subscribed => json!({ "kind": "subscribed" }),
        PlanAccess::Grace { until } => json!({ "kind": "grace", "until": rfc3339(until) }),
        PlanAccess::FallenBack { status } => json!({ "kind": "fallen_back", "status": status }),
    }
}

fn subscription_json(s: &Subscription) -> Value {
    json!({
        "id": s.id.as_str(),
        "plan": s.plan,
        "status": s.status,
        "quantity": s.quantity,
        "cancel_at_period_end": s.cancel_at_period_end,
        "current_period_start": rfc3339(s.current_period_start),
        "current_period_end": rfc3339(s.current_period_end),
        "trial_end": s.trial_end.map(rfc3339),
        "past_due_since": s.past_due_since.map(rfc3339),
    })
}

/// `GET /billing/subscription`: the subscription as last heard from the
/// provider, and the plan it grants now.
async fn subscription(
    t: &Tenancy,
    _: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = context(c)?;
    let m = module(t)?;
    let state = state(m, c).await?;
    let entitlements = m
        .entitlements(c.tenant_id())
        .await
        .map_err(|e| store_problem(&e))?;
    tenancy_http::json(
        StatusCode::OK,
        &json!({
            "plan": entitlements.plan(),
            "access": access_json(&entitlements),
            "customer": state.account.map(|a| a.customer_id.as_str().to_owned()),
            "subscription": state.subscription.as_ref().map(subscription_json),
            "revision": state.revision.0,
        }),
    )
}

/// `GET /billing/entitlements`: the plan and every feature's value.
async fn entitlements(
    t: &Tenancy,
    _: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = context(c)?;
    let m = module(t)?;
    let e = m
        .entitlements(c.tenant_id())
        .await
        .map_err(|e| store_problem(&e))?;
    let catalog = e.catalog();
    let mut features = serde_json::Map::new();
    for feature in catalog.features() {
        let Some(id) = catalog.feature(feature.key()) else {
            continue;
        };
        let value = e.value(id);
        let mut entry = json!({ "granted": value.grants() });
        match (feature.kind(), value) {
            (FeatureKind::Gate, _) => entry["kind"] = json!("gate"),
            (kind, FeatureValue::Limit(limit)) => {
                let (name, period, enforcement) = match kind {
                    FeatureKind::Limit {
                        period,
                        enforcement,
                        ..
                    } => ("limit", period, enforcement),
                    FeatureKind::Metered {
                        period,
                        enforcement,
                        ..
                    } => ("metered", Some(period), enforcement),
                    FeatureKind::Gate => ("gate", None, Default::default()),
                };
                entry["kind"] = json!(name);
                entry["limit"] = match limit {
                    Limit::Max(n) => json!(n),
                    Limit::Unlimited => json!("unlimited"),
                };
                entry["period"] = json!(period);
                entry["enforcement"] = json!(enforcement);
            }
            (_, FeatureValue::Gate(_)) => entry["kind"] = json!("gate"),
        }
        features.insert(feature.key().to_owned(), entry);
    }
    tenancy_http::json(
        StatusCode::OK,
        &json!({
            "plan": e.plan(),
            "access": access_json(&e),
            "revision": e.revision().0,
            "valid_until": e.valid_until().map(rfc3339),
            "features": features,
        }),
    )
}

/// `POST /billing/webhook`: verified over the raw body, applied once.
async fn webhook(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let m = module(t)?;
    let Some(verifier) = &m.inner.verifier else {
        return Err(Problem::not_found());
    };
    let header = r
        .headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let applied = tokio::time::timeout(
        m.inner.webhook_deadline,
        m.service().handle_webhook(verifier, header, &r.body),
    )
    .await;
    let outcome = match applied {
        Ok(outcome) => outcome,
        Err(_) => {
            tracing::warn!(
                deadline_ms = m.inner.webhook_deadline.as_millis() as u64,
                "webhook not applied within its deadline; the provider will retry"
            );
            return Err(Problem::unavailable(&DeadlinePassed));
        }
    };
    match outcome {
        Ok(outcome) => {
            tracing::debug!(?outcome, "webhook applied");
            tenancy_http::json(StatusCode::OK, &json!({ "received": true }))
        }
        Err(WebhookError::Signature(reason)) => {
            // One answer for every refusal: the reason is for the log.
            tracing::warn!(%reason, "webhook signature refused");
            Err(Problem::bad_request("invalid webhook signature"))
        }
        Err(error @ (WebhookError::Payload(_) | WebhookError::Object(_))) => {
            tracing::warn!(%error, "verified webhook is unreadable");
            Err(Problem::bad_request("unreadable event"))
        }
        Err(WebhookError::Store(error)) => Err(store_problem(&error)),
        Err(error) => Err(Problem::unavailable(&error)),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("webhook deadline passed")]
struct DeadlinePassed;
