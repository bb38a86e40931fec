//! A fake Stripe HTTP server on `127.0.0.1:0` speaking the subset of the
//! API [`crate::stripe::StripeProvider`] uses, strict about what it is
//! sent: the secret key, the pinned `Stripe-Version`, an `Idempotency-Key`
//! on every POST (replaying the first answer for a repeated key, refusing
//! a key reused with another body), and the form fields of each endpoint.
//! Protocol violations are answered `400` and listed in
//! [`FakeStripe::problems`]. It can inject failures ([`Fault`]) and emits
//! signed webhooks ([`SignedWebhook`]) for what happens to its objects.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::stripe::{Form, STRIPE_VERSION};
use crate::webhook::WebhookSecret;

/// A failure to inject into the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status, with `Stripe-Should-Retry` if given.
    Status(u16, Option<bool>),
    /// Wait this long before answering normally (a timeout, for a short
    /// client timeout).
    Delay(Duration),
}

/// A request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, `DELETE`.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The form body, or the query of a GET.
    pub form: Form,
    /// The `Idempotency-Key`, if sent.
    pub idempotency_key: Option<String>,
}

/// A webhook as Stripe would deliver it: the raw body and its
/// `Stripe-Signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedWebhook {
    /// The raw JSON body.
    pub body: Vec<u8>,
    /// The `Stripe-Signature` header.
    pub header: String,
}

#[derive(Default)]
struct FakeState {
    base: String,
    prices: HashMap<String, String>,
    customers: BTreeMap<String, Value>,
    sessions: HashMap<String, Value>,
    subscriptions: BTreeMap<String, Value>,
    meter_events: Vec<Value>,
    idempotency: HashMap<String, (String, u16, Value)>,
    faults: VecDeque<Fault>,
    requests: Vec<RecordedRequest>,
    problems: Vec<String>,
    next: u64,
    events: i64,
}

impl FakeState {
    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}_fake{:06}", self.next)
    }
}

struct Shared {
    api_key: String,
    state: Mutex<FakeState>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The running fake; stops when dropped.
pub struct FakeStripe {
    addr: SocketAddr,
    shared: Arc<Shared>,
    secret: WebhookSecret,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeStripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeStripe")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn error(status: u16, kind: &str, code: &str) -> (u16, Value) {
    (
        status,
        json!({ "error": { "type": kind, "code": code, "message": code } }),
    )
}

fn invalid(state: &mut FakeState, problem: String) -> (u16, Value) {
    state.problems.push(problem);
    error(400, "invalid_request_error", "parameter_invalid")
}

impl FakeStripe {
    /// Starts a fake accepting `api_key`, signing webhooks with
    /// `webhook_secret`.
    ///
    /// # Panics
    /// If it cannot listen on `127.0.0.1:0`.
    pub async fn start(api_key: &str, webhook_secret: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("fake Stripe cannot listen: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("fake Stripe has no address: {e}"));
        let shared = Arc::new(Shared {
            api_key: api_key.to_owned(),
            state: Mutex::new(FakeState {
                base: format!("http://{addr}"),
                ..FakeState::default()
            }),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            shared,
            secret: WebhookSecret::new(webhook_secret)
                .unwrap_or_else(|e| panic!("webhook secret: {e}")),
            task,
        }
    }

    /// The base URL to give [`crate::stripe::StripeConfig::base_url`].
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Declares a price sold by `lookup_key`; returns its id.
    pub fn add_price(&self, lookup_key: &str) -> String {
        let mut state = self.shared.state();
        let id = state.id("price");
        state.prices.insert(lookup_key.to_owned(), id.clone());
        id
    }

    /// Makes the next requests fail, in order.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.state().faults.extend(faults);
    }

    /// Every request received.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.state().requests.clone()
    }

    /// The protocol violations seen (empty when the client behaves).
    pub fn problems(&self) -> Vec<String> {
        self.shared.state().problems.clone()
    }

    /// The meter events received, one per identifier (as Stripe counts them).
    pub fn meter_events(&self) -> Vec<Value> {
        self.shared.state().meter_events.clone()
    }

    /// A subscription as the fake holds it.
    pub fn subscription(&self, id: &str) -> Option<Value> {
        self.shared.state().subscriptions.get(id).cloned()
    }

    /// Signs an event of `event_type` about `object`, dated a second after
    /// the previous one.
    pub fn signed_event(&self, event_type: &str, object: Value) -> SignedWebhook {
        let (id, created) = {
            let mut state = self.shared.state();
            state.events += 1;
            let created = time::OffsetDateTime::now_utc().unix_timestamp() + state.events;
            (state.id("evt"), created)
        };
        let body = json!({
            "id": id, "object": "event", "type": event_type, "created": created,
            "api_version": STRIPE_VERSION, "livemode": false,
            "data": { "object": object },
        });
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        SignedWebhook {
            header: self.secret.sign(now, &body),
            body,
        }
    }

    /// The customer pays for the checkout session at `url`: its
    /// subscription is created (active, or trialing with a trial) and the
    /// webhooks Stripe would send are returned, in Stripe's order
    /// (`checkout.session.completed`, `customer.subscription.created`,
    /// `invoice.paid`).
    pub fn complete_checkout(&self, url: &str) -> Vec<SignedWebhook> {
        let session_id = url.rsplit('/').next().unwrap_or_default().to_owned();
        let (session, subscription) = {
            let mut state = self.shared.state();
            let Some(mut session) = state.sessions.get(&session_id).cloned() else {
                return Vec::new();
            };
            let sub_id = state.id("sub");
            let item_id = state.id("si");
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let trial = session["_trial_days"].as_u64();
            let subscription = json!({
                "id": sub_id, "object": "subscription", "customer": session["customer"],
                "status": if trial.is_some() { "trialing" } else { "active" },
                "cancel_at_period_end": false,
                "trial_end": trial.map(|d| now + i64::try_from(d).unwrap_or(0) * 86_400),
                "metadata": session["_subscription_metadata"],
                "items": { "object": "list", "data": [{
                    "id": item_id, "object": "subscription_item",
                    "price": { "id": session["_price"], "lookup_key": session["_lookup_key"] },
                    "quantity": session["_quantity"],
                    "current_period_start": now, "current_period_end": now + 30 * 86_400,
                }]},
            });
            state
                .subscriptions
                .insert(sub_id.clone(), subscription.clone());
            session["subscription"] = json!(sub_id);
            session["status"] = json!("complete");
            state.sessions.insert(session_id, session.clone());
            (session, subscription)
        };
        let invoice = json!({
            "id": format!("in_{}", session["id"].as_str().unwrap_or_default()),
            "object": "invoice", "customer": session["customer"], "status": "paid",
            "parent": { "type": "subscription_details", "subscription_details": {
                "subscription": subscription["id"], "metadata": subscription["metadata"],
            }},
        });
        let public = public_session(&session);
        vec![
            self.signed_event("checkout.session.completed", public),
            self.signed_event("customer.subscription.created", subscription),
            self.signed_event("invoice.paid", invoice),
        ]
    }

    /// The subscription moves to `status` (as after a failed payment or a
    /// cancellation); returns the webhook Stripe would send.
    pub fn set_status(&self, subscription_id: &str, status: &str) -> Option<SignedWebhook> {
        let subscription = {
            let mut state = self.shared.state();
            let subscription = state.subscriptions.get_mut(subscription_id)?;
            subscription["status"] = json!(status);
            subscription.clone()
        };
        let event_type = if status == "canceled" {
            "customer.subscription.deleted"
        } else {
            "customer.subscription.updated"
        };
        Some(self.signed_event(event_type, subscription))
    }
}

fn public_session(session: &Value) -> Value {
    let mut public = session.clone();
    if let Some(map) = public.as_object_mut() {
        map.retain(|k, _| !k.starts_with('_'));
    }
    public
}

fn respond((status, body): (u16, Value)) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body)).into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let path = uri.path().to_owned();
    let raw = if method == Method::GET {
        uri.query().unwrap_or_default().to_owned()
    } else {
        String::from_utf8_lossy(&body).into_owned()
    };
    let form = Form::parse(&raw);
    let key = header("idempotency-key");
    let fault = {
        let mut state = shared.state();
        state.requests.push(RecordedRequest {
            method: method.to_string(),
            path: path.clone(),
            form: form.clone().unwrap_or_default(),
            idempotency_key: key.clone(),
        });
        state.faults.pop_front()
    };
    match fault {
        Some(Fault::Status(status, should_retry)) => {
            let (status, body) = error(status, "api_error", "injected");
            let mut response = respond((status, body));
            if let Some(retry) = should_retry
                && let Ok(value) = axum::http::HeaderValue::from_str(&retry.to_string())
            {
                response.headers_mut().insert("Stripe-Should-Retry", value);
            }
            return response;
        }
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    let mut state = shared.state();
    if header("authorization").as_deref() != Some(&format!("Bearer {}", shared.api_key)) {
        return respond(error(401, "invalid_request_error", "api_key_invalid"));
    }
    if header("stripe-version").as_deref() != Some(STRIPE_VERSION) {
        return respond(invalid(
            &mut state,
            format!("{path}: Stripe-Version not pinned"),
        ));
    }
    let Some(form) = form else {
        return respond(invalid(
            &mut state,
            format!("{path}: body is not form encoded"),
        ));
    };
    if method == Method::POST {
        let Some(key) = key else {
            return respond(invalid(
                &mut state,
                format!("{path}: POST without Idempotency-Key"),
            ));
        };
        let fingerprint = format!("{method} {path} {raw}");
        if let Some((seen, status, body)) = state.idempotency.get(&key) {
            if *seen != fingerprint {
                state.problems.push(format!(
                    "{path}: Idempotency-Key reused with another request"
                ));
                return respond(error(400, "idempotency_error", "idempotency_key_in_use"));
            }
            let mut response = respond((*status, body.clone()));
            response.headers_mut().insert(
                "Idempotent-Replayed",
                axum::http::HeaderValue::from_static("true"),
            );
            return response;
        }
        let answer = route(&mut state, &method, &path, &form);
        if answer.0 < 500 {
            state
                .idempotency
                .insert(key, (fingerprint, answer.0, answer.1.clone()));
        }
        return respond(answer);
    }
    respond(route(&mut state, &method, &path, &form))
}

fn require<'a>(
    state: &mut FakeState,
    form: &'a Form,
    path: &str,
    key: &str,
) -> Result<&'a str, (u16, Value)> {
    form.get(key)
        .ok_or_else(|| invalid(state, format!("{path}: missing {key}")))
}

fn route(state: &mut FakeState, method: &Method, path: &str, form: &Form) -> (u16, Value) {
    match route_inner(state, method, path, form) {
        Ok(answer) | Err(answer) => answer,
    }
}

fn metadata(form: &Form, prefix: &str) -> Value {
    let mut map = serde_json::Map::new();
    for (k, v) in form.fields() {
        if let Some(rest) = k.strip_prefix(prefix)
            && let Some(name) = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']'))
        {
            map.insert(name.to_owned(), json!(v));
        }
    }
    Value::Object(map)
}

fn route_inner(
    state: &mut FakeState,
    method: &Method,
    path: &str,
    form: &Form,
) -> Result<(u16, Value), (u16, Value)> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["v1", "customers"]) => {
            let name = require(state, form, path, "name")?.to_owned();
            let id = state.id("cus");
            let customer = json!({
                "id": id, "object": "customer", "name": name, "email": form.get("email"),
                "metadata": metadata(form, "metadata"),
            });
            state.customers.insert(id, customer.clone());
            Ok((200, customer))
        }
        ("GET", ["v1", "prices"]) => {
            let lookup = require(state, form, path, "lookup_keys[0]")?;
            let data: Vec<Value> = state
                .prices
                .get(lookup)
                .map(|id| json!({ "id": id, "object": "price", "lookup_key": lookup, "active": true }))
                .into_iter()
                .collect();
            Ok((
                200,
                json!({ "object": "list", "data": data, "has_more": false }),
            ))
        }
        ("POST", ["v1", "checkout", "sessions"]) => {
            if form.get("mode") != Some("subscription") {
                return Err(invalid(state, format!("{path}: mode must be subscription")));
            }
            let customer = require(state, form, path, "customer")?.to_owned();
            if !state.customers.contains_key(&customer) {
                return Err(error(400, "invalid_request_error", "resource_missing"));
            }
            let price = require(state, form, path, "line_items[0][price]")?.to_owned();
            let Some(lookup) = state
                .prices
                .iter()
                .find(|(_, id)| **id == price)
                .map(|(k, _)| k.clone())
            else {
                return Err(error(400, "invalid_request_error", "resource_missing"));
            };
            let quantity: u64 = require(state, form, path, "line_items[0][quantity]")?
                .parse()
                .map_err(|_| invalid(state, format!("{path}: quantity not an integer")))?;
            require(state, form, path, "success_url")?;
            require(state, form, path, "cancel_url")?;
            let trial = form
                .get("subscription_data[trial_period_days]")
                .map(|d| d.parse::<u64>())
                .transpose()
                .map_err(|_| invalid(state, format!("{path}: trial days not an integer")))?;
            let id = state.id("cs");
            let session = json!({
                "id": id, "object": "checkout.session", "mode": "subscription",
                "customer": customer, "client_reference_id": form.get("client_reference_id"),
                "metadata": metadata(form, "metadata"), "status": "open",
                "url": format!("{}/checkout/{id}", state.base), "subscription": null,
                "_price": price, "_lookup_key": lookup, "_quantity": quantity,
                "_trial_days": trial,
                "_subscription_metadata": metadata(form, "subscription_data[metadata]"),
            });
            state.sessions.insert(id, session.clone());
            Ok((200, public_session(&session)))
        }
        ("POST", ["v1", "billing_portal", "sessions"]) => {
            let customer = require(state, form, path, "customer")?.to_owned();
            require(state, form, path, "return_url")?;
            let id = state.id("bps");
            Ok((
                200,
                json!({ "id": id, "object": "billing_portal.session", "customer": customer,
                        "url": format!("{}/portal/{id}", state.base) }),
            ))
        }
        ("GET", ["v1", "subscriptions"]) => {
            let customer = require(state, form, path, "customer")?.to_owned();
            let data: Vec<Value> = state
                .subscriptions
                .values()
                .rev()
                .filter(|s| s["customer"] == json!(customer))
                .cloned()
                .collect();
            Ok((
                200,
                json!({ "object": "list", "data": data, "has_more": false }),
            ))
        }
        ("GET", ["v1", "subscriptions", id]) => state
            .subscriptions
            .get(*id)
            .cloned()
            .map(|s| (200, s))
            .ok_or_else(|| error(404, "invalid_request_error", "resource_missing")),
        ("POST", ["v1", "subscriptions", id]) => {
            let Some(mut subscription) = state.subscriptions.get(*id).cloned() else {
                return Err(error(404, "invalid_request_error", "resource_missing"));
            };
            if let Some(quantity) = form.get("items[0][quantity]") {
                let item = require(state, form, path, "items[0][id]")?;
                if subscription["items"]["data"][0]["id"] != json!(item) {
                    return Err(invalid(state, format!("{path}: unknown item")));
                }
                let quantity: u64 = quantity
                    .parse()
                    .map_err(|_| invalid(state, format!("{path}: quantity not an integer")))?;
                let proration = require(state, form, path, "proration_behavior")?;
                if !["create_prorations", "always_invoice", "none"].contains(&proration) {
                    return Err(invalid(state, format!("{path}: bad proration_behavior")));
                }
                subscription["items"]["data"][0]["quantity"] = json!(quantity);
            }
            if let Some(flag) = form.get("cancel_at_period_end") {
                subscription["cancel_at_period_end"] = json!(flag == "true");
            }
            state
                .subscriptions
                .insert((*id).to_owned(), subscription.clone());
            Ok((200, subscription))
        }
        ("DELETE", ["v1", "subscriptions", id]) => {
            let Some(subscription) = state.subscriptions.get_mut(*id) else {
                return Err(error(404, "invalid_request_error", "resource_missing"));
            };
            subscription["status"] = json!("canceled");
            Ok((200, subscription.clone()))
        }
        ("POST", ["v1", "billing", "meter_events"]) => {
            let event = json!({
                "object": "billing.meter_event",
                "event_name": require(state, form, path, "event_name")?,
                "identifier": require(state, form, path, "identifier")?,
                "timestamp": require(state, form, path, "timestamp")?,
                "payload": {
                    "stripe_customer_id": require(state, form, path, "payload[stripe_customer_id]")?,
                    "value": require(state, form, path, "payload[value]")?,
                },
            });
            // Stripe counts an identifier once (within its rolling window).
            if !state
                .meter_events
                .iter()
                .any(|seen| seen["identifier"] == event["identifier"])
            {
                state.meter_events.push(event.clone());
            }
            Ok((200, event))
        }
        _ => Err(error(
            404,
            "invalid_request_error",
            "unrecognized_request_url",
        )),
    }
}
