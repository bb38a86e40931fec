//! [`StripeProvider`]: a small typed client for the dozen Stripe endpoints
//! billing uses (feature `stripe`).
//!
//! Why not a generated Stripe crate: async-stripe's generated code takes
//! minutes to compile on a small machine, pins one API version per release
//! and lags Stripe's newer endpoints; billing needs customers, prices by
//! lookup key, checkout and portal sessions, subscriptions and meter
//! events, nothing more. This client is that subset, typed
//! ([`SubscriptionObject`] and friends), tested against the fake Stripe in
//! `testkit` that checks the form shapes, idempotency keys and version
//! header it sends.
//!
//! - **Pinned version**: every request sends `Stripe-Version:`
//!   [`STRIPE_VERSION`], the version whose object shapes the types follow
//!   (set the webhook endpoint to the same version, so events match).
//! - **Form encoding** with bracketed nested keys
//!   (`line_items[0][price]`, `metadata[tenant_id]`).
//! - **Idempotency**: every POST carries an `Idempotency-Key`. Creating
//!   calls derive it from their inputs (`tenancy-customer-<tenant>`, a
//!   hash of the checkout request), so a retried or repeated call can
//!   never create a second customer or session; changes (quantity,
//!   cancel, resume) use one fresh key per call, reused by its retries;
//!   meter events use their identifier.
//! - **Timeouts** (connect and whole request), **retries** with
//!   exponential backoff and full jitter on 429, 5xx, 409 and connection
//!   errors, honouring `Stripe-Should-Retry` when Stripe sends it.
//! - **Circuit breaker**: after several consecutive failures calls fail
//!   fast with [`ProviderError::CircuitOpen`] for a cool-down, then one
//!   trial call decides.
//! - **Secrets redacted**: [`StripeSecretKey`] prints `[redacted]`; error
//!   messages carry Stripe's error type and code, never the key or the
//!   request body.

mod breaker;
mod form;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tenancy_core::TenantId;
use time::OffsetDateTime;

pub use breaker::BreakerConfig;
use breaker::CircuitBreaker;
pub use form::Form;

use crate::event::{List, SubscriptionObject, TENANT_METADATA_KEY};
use crate::provider::{BillingProvider, CheckoutRequest, Proration, ProviderError};
use crate::subscription::{CustomerId, SubscriptionId};

/// The Stripe API version requests are pinned to.
pub const STRIPE_VERSION: &str = "2025-03-31.basil";
/// Stripe's API.
pub const STRIPE_API: &str = "https://api.stripe.com";

/// A Stripe secret key (`sk_live_…`, `sk_test_…`, `rk_…`). `Debug` prints
/// `[redacted]`.
#[derive(Clone)]
pub struct StripeSecretKey(Arc<str>);

impl std::fmt::Debug for StripeSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StripeSecretKey([redacted])")
    }
}

impl StripeSecretKey {
    /// Wraps a key.
    pub fn new(key: &str) -> Self {
        Self(key.into())
    }

    /// The key. Security: sent only in the `Authorization` header; never
    /// log it.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

/// Retry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// The first backoff; doubled each retry.
    pub base_delay: Duration,
    /// The longest backoff.
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 3,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryConfig {
    /// The delay before retry number `retry` (1-based): a random point
    /// in `[0, min(max, base * 2^(retry-1))]` (full jitter).
    fn delay(&self, retry: u32) -> Duration {
        let cap = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)))
            .min(self.max_delay);
        let mut bytes = [0u8; 8];
        rand::fill(&mut bytes);
        let fraction = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64;
        cap.mul_f64(fraction)
    }
}

/// The Stripe adapter of [`BillingProvider`].
#[derive(Clone)]
pub struct StripeProvider {
    http: reqwest::Client,
    key: StripeSecretKey,
    base: Arc<str>,
    retry: RetryConfig,
    breaker: Arc<CircuitBreaker>,
}

impl std::fmt::Debug for StripeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeProvider")
            .field("base", &self.base)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Settings of a [`StripeProvider`].
#[derive(Debug, Clone)]
pub struct StripeConfig {
    /// The API base URL ([`STRIPE_API`]; the fake server's in tests).
    pub base_url: String,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Retries.
    pub retry: RetryConfig,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self {
            base_url: STRIPE_API.into(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
        }
    }
}

/// Stripe's error body.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

#[derive(Debug, Deserialize)]
struct IdObject {
    id: String,
}

#[derive(Debug, Deserialize)]
struct UrlObject {
    url: String,
}

/// How a request is made idempotent.
enum Idempotency {
    /// GET and DELETE.
    None,
    /// A key derived from the operation's inputs, or fresh per call.
    Key(String),
}

fn derived_key(operation: &str, parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("tenancy-{operation}-{hex}")
}

fn fresh_key(operation: &str) -> String {
    format!("tenancy-{operation}-{}", uuid::Uuid::now_v7().simple())
}

impl StripeProvider {
    /// A provider with the default settings.
    ///
    /// Errors: the HTTP client could not be built (TLS setup).
    pub fn new(key: StripeSecretKey) -> Result<Self, ProviderError> {
        Self::with_config(key, StripeConfig::default())
    }

    /// A provider with `config`.
    ///
    /// Errors: the HTTP client could not be built (TLS setup).
    pub fn with_config(key: StripeSecretKey, config: StripeConfig) -> Result<Self, ProviderError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ProviderError::Unavailable(Box::new(e)))?;
        Ok(Self {
            http,
            key,
            base: config.base_url.trim_end_matches('/').into(),
            retry: RetryConfig {
                attempts: config.retry.attempts.max(1),
                ..config.retry
            },
            breaker: Arc::new(CircuitBreaker::new(config.breaker)),
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        form: Option<&Form>,
        idempotency: Idempotency,
    ) -> Result<T, ProviderError> {
        self.breaker.admit()?;
        let result = self.attempts(method, path, form, &idempotency).await;
        match &result {
            Ok(_) | Err(ProviderError::NotFound | ProviderError::Rejected { .. }) => {
                self.breaker.succeeded();
            }
            Err(_) => self.breaker.failed(),
        }
        result
    }

    async fn attempts<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        form: Option<&Form>,
        idempotency: &Idempotency,
    ) -> Result<T, ProviderError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(self.key.secret())
                .header("Stripe-Version", STRIPE_VERSION);
            if let Idempotency::Key(key) = idempotency {
                request = request.header("Idempotency-Key", key);
            }
            if let Some(form) = form {
                request = request
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(form.encode());
            }
            let (retryable, error) = match request.send().await {
                Err(e) => (true, ProviderError::Unavailable(Box::new(e))),
                Ok(response) => {
                    let status = response.status();
                    let should_retry = response
                        .headers()
                        .get("Stripe-Should-Retry")
                        .and_then(|v| v.to_str().ok())
                        .map(|v| v == "true");
                    if status.is_success() {
                        let body = response
                            .bytes()
                            .await
                            .map_err(|e| ProviderError::Unavailable(Box::new(e)))?;
                        return serde_json::from_slice(&body)
                            .map_err(|e| ProviderError::Protocol(Box::new(e)));
                    }
                    let code = status.as_u16();
                    let body = response.bytes().await.unwrap_or_default();
                    let message = serde_json::from_slice::<ErrorBody>(&body)
                        .map(|b| {
                            format!(
                                "{} {}",
                                b.error.kind.unwrap_or_default(),
                                b.error.code.unwrap_or_default()
                            )
                            .trim()
                            .to_owned()
                        })
                        .unwrap_or_else(|_| format!("HTTP {code}"));
                    let default_retry = code == 429 || code == 409 || status.is_server_error();
                    let error = match code {
                        404 => ProviderError::NotFound,
                        429 => ProviderError::RateLimited,
                        c if status.is_server_error() => {
                            ProviderError::Unavailable(format!("HTTP {c}: {message}").into())
                        }
                        c => ProviderError::Rejected { status: c, message },
                    };
                    (should_retry.unwrap_or(default_retry), error)
                }
            };
            if !retryable || attempt >= self.retry.attempts {
                return Err(error);
            }
            tokio::time::sleep(self.retry.delay(attempt)).await;
        }
    }

    async fn price_for(&self, lookup_key: &str) -> Result<String, ProviderError> {
        let mut query = Form::new();
        query.push("lookup_keys[0]", lookup_key);
        query.push("active", "true");
        query.push("limit", "1");
        let prices: List<IdObject> = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/prices?{}", query.encode()),
                None,
                Idempotency::None,
            )
            .await?;
        prices
            .data
            .into_iter()
            .next()
            .map(|p| p.id)
            .ok_or_else(|| ProviderError::Rejected {
                status: 404,
                message: "no active price with this lookup key".into(),
            })
    }
}

fn path_id(id: &str) -> String {
    // Ids are validated to [A-Za-z0-9_.:-]; nothing to escape.
    id.to_owned()
}

#[async_trait]
impl BillingProvider for StripeProvider {
    async fn create_customer(
        &self,
        tenant_id: TenantId,
        name: &str,
        email: Option<&str>,
    ) -> Result<CustomerId, ProviderError> {
        let mut form = Form::new();
        form.push("name", name);
        if let Some(email) = email {
            form.push("email", email);
        }
        form.push(
            &format!("metadata[{TENANT_METADATA_KEY}]"),
            &tenant_id.to_string(),
        );
        let created: IdObject = self
            .call(
                reqwest::Method::POST,
                "/v1/customers",
                Some(&form),
                Idempotency::Key(format!("tenancy-customer-{tenant_id}")),
            )
            .await?;
        CustomerId::new(created.id).map_err(|e| ProviderError::Protocol(Box::new(e)))
    }

    async fn create_checkout_session(
        &self,
        request: &CheckoutRequest,
    ) -> Result<String, ProviderError> {
        let price = self.price_for(&request.lookup_key).await?;
        let tenant = request.tenant_id.to_string();
        let mut form = Form::new();
        form.push("mode", "subscription");
        form.push("customer", request.customer_id.as_str());
        form.push("client_reference_id", &tenant);
        form.push("line_items[0][price]", &price);
        form.push("line_items[0][quantity]", &request.quantity.to_string());
        form.push(&format!("metadata[{TENANT_METADATA_KEY}]"), &tenant);
        form.push(
            &format!("subscription_data[metadata][{TENANT_METADATA_KEY}]"),
            &tenant,
        );
        if let Some(days) = request.trial_days {
            form.push("subscription_data[trial_period_days]", &days.to_string());
        }
        form.push("success_url", &request.success_url);
        form.push("cancel_url", &request.cancel_url);
        let key = derived_key("checkout", &[&form.encode()]);
        let session: UrlObject = self
            .call(
                reqwest::Method::POST,
                "/v1/checkout/sessions",
                Some(&form),
                Idempotency::Key(key),
            )
            .await?;
        Ok(session.url)
    }

    async fn create_portal_session(
        &self,
        customer: &CustomerId,
        return_url: &str,
    ) -> Result<String, ProviderError> {
        let mut form = Form::new();
        form.push("customer", customer.as_str());
        form.push("return_url", return_url);
        let session: UrlObject = self
            .call(
                reqwest::Method::POST,
                "/v1/billing_portal/sessions",
                Some(&form),
                Idempotency::Key(fresh_key("portal")),
            )
            .await?;
        Ok(session.url)
    }

    async fn get_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<SubscriptionObject, ProviderError> {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/subscriptions/{}", path_id(id.as_str())),
            None,
            Idempotency::None,
        )
        .await
    }

    async fn list_subscriptions(
        &self,
        customer: &CustomerId,
    ) -> Result<Vec<SubscriptionObject>, ProviderError> {
        let mut query = Form::new();
        query.push("customer", customer.as_str());
        query.push("status", "all");
        query.push("limit", "100");
        let list: List<SubscriptionObject> = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/subscriptions?{}", query.encode()),
                None,
                Idempotency::None,
            )
            .await?;
        Ok(list.data)
    }

    async fn update_quantity(
        &self,
        id: &SubscriptionId,
        quantity: u32,
        proration: Proration,
    ) -> Result<SubscriptionObject, ProviderError> {
        let current = self.get_subscription(id).await?;
        let item = current
            .items
            .data
            .first()
            .and_then(|i| i.id.clone())
            .ok_or_else(|| ProviderError::Protocol("subscription without item id".into()))?;
        let mut form = Form::new();
        form.push("items[0][id]", &item);
        form.push("items[0][quantity]", &quantity.to_string());
        form.push("proration_behavior", proration.as_str());
        self.call(
            reqwest::Method::POST,
            &format!("/v1/subscriptions/{}", path_id(id.as_str())),
            Some(&form),
            Idempotency::Key(fresh_key("quantity")),
        )
        .await
    }

    async fn cancel(
        &self,
        id: &SubscriptionId,
        at_period_end: bool,
    ) -> Result<SubscriptionObject, ProviderError> {
        let path = format!("/v1/subscriptions/{}", path_id(id.as_str()));
        if at_period_end {
            let mut form = Form::new();
            form.push("cancel_at_period_end", "true");
            self.call(
                reqwest::Method::POST,
                &path,
                Some(&form),
                Idempotency::Key(fresh_key("cancel")),
            )
            .await
        } else {
            self.call(reqwest::Method::DELETE, &path, None, Idempotency::None)
                .await
        }
    }

    async fn resume(&self, id: &SubscriptionId) -> Result<SubscriptionObject, ProviderError> {
        let mut form = Form::new();
        form.push("cancel_at_period_end", "false");
        self.call(
            reqwest::Method::POST,
            &format!("/v1/subscriptions/{}", path_id(id.as_str())),
            Some(&form),
            Idempotency::Key(fresh_key("resume")),
        )
        .await
    }

    async fn report_usage(
        &self,
        customer: &CustomerId,
        meter: &str,
        value: u64,
        identifier: &str,
        timestamp: OffsetDateTime,
    ) -> Result<(), ProviderError> {
        let mut form = Form::new();
        form.push("event_name", meter);
        form.push("payload[stripe_customer_id]", customer.as_str());
        form.push("payload[value]", &value.to_string());
        form.push("identifier", identifier);
        form.push("timestamp", &timestamp.unix_timestamp().to_string());
        let _: serde_json::Value = self
            .call(
                reqwest::Method::POST,
                "/v1/billing/meter_events",
                Some(&form),
                Idempotency::Key(derived_key("meter", &[meter, identifier])),
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_jittered() {
        let retry = RetryConfig {
            attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
        };
        for n in 1..10 {
            let cap = Duration::from_millis(100 * 2u64.pow(n - 1)).min(retry.max_delay);
            assert!(retry.delay(n) <= cap);
        }
        let distinct: std::collections::HashSet<Duration> =
            (0..20).map(|_| retry.delay(3)).collect();
        assert!(distinct.len() > 1, "jittered");
    }

    #[test]
    fn keys_are_redacted_and_derived_keys_are_stable() {
        let key = StripeSecretKey::new("sk_test_123");
        assert_eq!(format!("{key:?}"), "StripeSecretKey([redacted])");
        let provider = StripeProvider::new(key).unwrap();
        assert!(!format!("{provider:?}").contains("sk_test"));
        assert_eq!(derived_key("a", &["x", "y"]), derived_key("a", &["x", "y"]));
        assert_ne!(derived_key("a", &["x", "y"]), derived_key("a", &["xy", ""]));
        assert_ne!(fresh_key("a"), fresh_key("a"));
    }
}
