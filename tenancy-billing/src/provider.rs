//! The billing provider: what billing asks of Stripe (or another provider).

use async_trait::async_trait;
use tenancy_core::TenantId;
use time::OffsetDateTime;

use crate::event::SubscriptionObject;
use crate::subscription::{CustomerId, SubscriptionId};

/// How a quantity change is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Proration {
    /// Prorate and invoice at the next renewal (the provider's default).
    #[default]
    CreateProrations,
    /// Prorate and invoice at once.
    AlwaysInvoice,
    /// No proration.
    None,
}

impl Proration {
    /// Stripe's name for it (`proration_behavior`).
    pub fn as_str(self) -> &'static str {
        match self {
            Proration::CreateProrations => "create_prorations",
            Proration::AlwaysInvoice => "always_invoice",
            Proration::None => "none",
        }
    }
}

/// A checkout session to create: a subscription to the price with
/// `lookup_key`, for `tenant`'s customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutRequest {
    /// The tenant (carried in the session and subscription metadata).
    pub tenant_id: TenantId,
    /// Its customer.
    pub customer_id: CustomerId,
    /// The price lookup key of the plan.
    pub lookup_key: String,
    /// Quantity (seats).
    pub quantity: u32,
    /// Trial days, if any.
    pub trial_days: Option<u32>,
    /// Where the provider sends the customer after paying.
    pub success_url: String,
    /// Where it sends them after giving up.
    pub cancel_url: String,
}

/// What a provider call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// No such object at the provider.
    #[error("not found at the provider")]
    NotFound,
    /// The provider refused the request as invalid (a 4xx other than 404
    /// and 429): a bug or a misconfiguration (an unknown lookup key).
    #[error("the provider refused the request: {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The provider's error type/code, never secrets.
        message: String,
    },
    /// Still rate-limited after the retries.
    #[error("rate-limited by the provider")]
    RateLimited,
    /// The provider failed or could not be reached, after the retries.
    #[error("the provider is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The circuit breaker is open: recent calls failed, so this one was
    /// not made.
    #[error("the provider is failing; calls are suspended briefly")]
    CircuitOpen,
    /// The provider answered something this client cannot read.
    #[error("unexpected answer from the provider")]
    Protocol(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The calls billing makes to a provider. Object-safe: hold it as
/// `Arc<dyn BillingProvider>`. Every creating call is idempotent: retried,
/// it never creates a second object.
#[async_trait]
pub trait BillingProvider: Send + Sync {
    /// Creates the tenant's customer (idempotent per tenant).
    async fn create_customer(
        &self,
        tenant_id: TenantId,
        name: &str,
        email: Option<&str>,
    ) -> Result<CustomerId, ProviderError>;

    /// A checkout session's URL to redirect the customer to.
    async fn create_checkout_session(
        &self,
        request: &CheckoutRequest,
    ) -> Result<String, ProviderError>;

    /// A customer portal session's URL.
    async fn create_portal_session(
        &self,
        customer: &CustomerId,
        return_url: &str,
    ) -> Result<String, ProviderError>;

    /// A subscription as the provider has it now.
    async fn get_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<SubscriptionObject, ProviderError>;

    /// The customer's subscriptions (every status), newest first.
    async fn list_subscriptions(
        &self,
        customer: &CustomerId,
    ) -> Result<Vec<SubscriptionObject>, ProviderError>;

    /// Sets the quantity (seats).
    async fn update_quantity(
        &self,
        id: &SubscriptionId,
        quantity: u32,
        proration: Proration,
    ) -> Result<SubscriptionObject, ProviderError>;

    /// Cancels at once, or at the end of the period.
    async fn cancel(
        &self,
        id: &SubscriptionId,
        at_period_end: bool,
    ) -> Result<SubscriptionObject, ProviderError>;

    /// Undoes a cancellation at period end.
    async fn resume(&self, id: &SubscriptionId) -> Result<SubscriptionObject, ProviderError>;

    /// Reports usage of a meter (tenancy-metering's export), deduplicated
    /// by `identifier` at the provider.
    async fn report_usage(
        &self,
        customer: &CustomerId,
        meter: &str,
        value: u64,
        identifier: &str,
        timestamp: OffsetDateTime,
    ) -> Result<(), ProviderError>;
}
