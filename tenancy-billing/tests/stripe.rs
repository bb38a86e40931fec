//! The Stripe adapter against the fake Stripe server: what it sends (form
//! shapes, idempotency keys, the pinned version), how it retries, when it
//! stops calling, and the whole loop from checkout to downgrade through
//! signed webhooks. A test against Stripe's test mode runs when
//! `STRIPE_SECRET_KEY` holds a test key, and is skipped with a notice
//! otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use tenancy_billing::stripe::{
    BreakerConfig, RetryConfig, STRIPE_VERSION, StripeConfig, StripeProvider, StripeSecretKey,
};
use tenancy_billing::testkit::fake_stripe::{FakeStripe, Fault};
use tenancy_billing::testkit::{create_tenant, memory};
use tenancy_billing::webhook::{WebhookSecret, WebhookVerifier};
use tenancy_billing::*;
use tenancy_core::{ManualClock, TenantId};

const KEY: &str = "sk_test_fake";
const WHSEC: &str = "whsec_fake";

fn config(fake: &FakeStripe) -> StripeConfig {
    StripeConfig {
        base_url: fake.base_url(),
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_millis(500),
        retry: RetryConfig {
            attempts: 3,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        },
        breaker: BreakerConfig::default(),
    }
}

fn provider(fake: &FakeStripe) -> StripeProvider {
    StripeProvider::with_config(StripeSecretKey::new(KEY), config(fake)).unwrap()
}

fn checkout(tenant: TenantId, customer: CustomerId) -> CheckoutRequest {
    CheckoutRequest {
        tenant_id: tenant,
        customer_id: customer,
        lookup_key: "pro_monthly".into(),
        quantity: 3,
        trial_days: None,
        success_url: "https://app.test/billing?ok=1".into(),
        cancel_url: "https://app.test/billing".into(),
    }
}

#[tokio::test]
async fn creating_calls_are_idempotent_and_well_formed() {
    let fake = FakeStripe::start(KEY, WHSEC).await;
    fake.add_price("pro_monthly");
    let stripe = provider(&fake);
    let tenant = TenantId::new();
    let first = stripe
        .create_customer(tenant, "Acme & Co", Some("billing@acme.test"))
        .await
        .unwrap();
    let again = stripe
        .create_customer(tenant, "Acme & Co", Some("billing@acme.test"))
        .await
        .unwrap();
    assert_eq!(
        first, again,
        "a repeated call never creates a second customer"
    );
    let url = stripe
        .create_checkout_session(&checkout(tenant, first.clone()))
        .await
        .unwrap();
    let url_again = stripe
        .create_checkout_session(&checkout(tenant, first.clone()))
        .await
        .unwrap();
    assert_eq!(
        url, url_again,
        "a repeated checkout replays the first session"
    );
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());

    let requests = fake.requests();
    let customers: Vec<_> = requests
        .iter()
        .filter(|r| r.path == "/v1/customers")
        .collect();
    assert_eq!(customers.len(), 2);
    assert_eq!(customers[0].idempotency_key, customers[1].idempotency_key);
    assert_eq!(customers[0].form.get("name"), Some("Acme & Co"));
    assert_eq!(
        customers[0].form.get("metadata[tenant_id]"),
        Some(tenant.to_string().as_str())
    );
    let session = requests
        .iter()
        .find(|r| r.path == "/v1/checkout/sessions")
        .unwrap();
    let form = &session.form;
    assert_eq!(form.get("mode"), Some("subscription"));
    assert_eq!(form.get("line_items[0][quantity]"), Some("3"));
    assert!(
        form.get("line_items[0][price]")
            .unwrap()
            .starts_with("price_")
    );
    assert_eq!(
        form.get("subscription_data[metadata][tenant_id]"),
        Some(tenant.to_string().as_str())
    );
    assert_eq!(
        form.get("client_reference_id"),
        Some(tenant.to_string().as_str())
    );
    assert!(
        requests
            .iter()
            .filter(|r| r.method == "POST")
            .all(|r| r.idempotency_key.is_some())
    );

    // An unknown lookup key is the caller's mistake, not an outage.
    let mut bad = checkout(tenant, first);
    bad.lookup_key = "gold".into();
    assert!(matches!(
        stripe.create_checkout_session(&bad).await,
        Err(ProviderError::Rejected { .. })
    ));
}

#[tokio::test]
async fn retries_reuse_the_key_and_honour_should_retry() {
    let fake = FakeStripe::start(KEY, WHSEC).await;
    let stripe = provider(&fake);
    fake.inject([Fault::Status(500, None), Fault::Status(429, None)]);
    let customer = stripe
        .create_customer(TenantId::new(), "A", None)
        .await
        .unwrap();
    let attempts: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/customers")
        .collect();
    assert_eq!(attempts.len(), 3, "two failures, then success");
    assert!(
        attempts
            .windows(2)
            .all(|w| w[0].idempotency_key == w[1].idempotency_key)
    );
    assert!(customer.as_str().starts_with("cus_"));

    // Stripe says not to retry: one attempt.
    fake.inject([Fault::Status(500, Some(false))]);
    let before = fake.requests().len();
    assert!(matches!(
        stripe.create_customer(TenantId::new(), "B", None).await,
        Err(ProviderError::Unavailable(_))
    ));
    assert_eq!(fake.requests().len(), before + 1);

    // Stripe says to retry a 400-class answer: retried.
    fake.inject([Fault::Status(400, Some(true))]);
    stripe
        .create_customer(TenantId::new(), "C", None)
        .await
        .unwrap();

    // A timeout is retried.
    fake.inject([Fault::Delay(Duration::from_millis(800))]);
    stripe
        .create_customer(TenantId::new(), "D", None)
        .await
        .unwrap();

    // Rate-limited every time: RateLimited after the attempts.
    fake.inject([Fault::Status(429, None); 3]);
    assert!(matches!(
        stripe.create_customer(TenantId::new(), "E", None).await,
        Err(ProviderError::RateLimited)
    ));
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}

#[tokio::test]
async fn the_breaker_fails_fast_during_an_outage() {
    let fake = FakeStripe::start(KEY, WHSEC).await;
    let stripe = StripeProvider::with_config(
        StripeSecretKey::new(KEY),
        StripeConfig {
            retry: RetryConfig {
                attempts: 1,
                ..RetryConfig::default()
            },
            breaker: BreakerConfig {
                failures: 2,
                cool_down: Duration::from_millis(100),
            },
            ..config(&fake)
        },
    )
    .unwrap();
    fake.inject([Fault::Status(503, None), Fault::Status(503, None)]);
    for _ in 0..2 {
        assert!(matches!(
            stripe.create_customer(TenantId::new(), "A", None).await,
            Err(ProviderError::Unavailable(_))
        ));
    }
    let seen = fake.requests().len();
    assert!(matches!(
        stripe.create_customer(TenantId::new(), "A", None).await,
        Err(ProviderError::CircuitOpen)
    ));
    assert_eq!(fake.requests().len(), seen, "no request while open");
    tokio::time::sleep(Duration::from_millis(120)).await;
    stripe
        .create_customer(TenantId::new(), "A", None)
        .await
        .unwrap();
}

#[tokio::test]
async fn wrong_key_is_rejected_and_never_shown() {
    let fake = FakeStripe::start(KEY, WHSEC).await;
    let stripe =
        StripeProvider::with_config(StripeSecretKey::new("sk_test_wrong"), config(&fake)).unwrap();
    let error = stripe
        .create_customer(TenantId::new(), "A", None)
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::Rejected { status: 401, .. }));
    assert!(!format!("{error} {error:?}").contains("sk_test"));
}

#[tokio::test]
async fn subscription_changes_and_usage_are_well_formed() {
    let fake = FakeStripe::start(KEY, WHSEC).await;
    fake.add_price("pro_monthly");
    let stripe = provider(&fake);
    let tenant = TenantId::new();
    let customer = stripe.create_customer(tenant, "A", None).await.unwrap();
    let url = stripe
        .create_checkout_session(&checkout(tenant, customer.clone()))
        .await
        .unwrap();
    let webhooks = fake.complete_checkout(&url);
    assert_eq!(webhooks.len(), 3);
    let subs = stripe.list_subscriptions(&customer).await.unwrap();
    assert_eq!(subs.len(), 1);
    let id = subs[0].id.clone();
    let updated = stripe
        .update_quantity(&id, 7, Proration::AlwaysInvoice)
        .await
        .unwrap();
    assert_eq!(updated.items.data[0].quantity, Some(7));
    let update = fake
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(
        update.form.get("proration_behavior"),
        Some("always_invoice")
    );
    assert!(update.form.get("items[0][id]").unwrap().starts_with("si_"));
    assert!(stripe.cancel(&id, true).await.unwrap().cancel_at_period_end);
    assert!(!stripe.resume(&id).await.unwrap().cancel_at_period_end);
    assert_eq!(stripe.cancel(&id, false).await.unwrap().status, "canceled");
    assert!(matches!(
        stripe
            .get_subscription(&SubscriptionId::new("sub_missing").unwrap())
            .await,
        Err(ProviderError::NotFound)
    ));
    let at = time::OffsetDateTime::now_utc();
    stripe
        .report_usage(&customer, "api_calls", 42, "usage-1", at)
        .await
        .unwrap();
    stripe
        .report_usage(&customer, "api_calls", 42, "usage-1", at)
        .await
        .unwrap();
    assert_eq!(
        fake.meter_events().len(),
        1,
        "same identifier, same key: once"
    );
    assert_eq!(fake.meter_events()[0]["payload"]["value"], "42");
    let portal = stripe
        .create_portal_session(&customer, "https://app.test/billing")
        .await
        .unwrap();
    assert!(portal.contains("/portal/"));
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}

/// The loop the example will show: free is refused pro's feature, checks
/// out, the signed webhooks arrive, the feature is granted; a payment
/// fails, grace; the grace ends, free again; the subscription is canceled.
#[tokio::test]
async fn checkout_webhooks_grace_and_downgrade() {
    let fake = FakeStripe::start(KEY, WHSEC).await;
    fake.add_price("pro_monthly");
    let stripe: Arc<dyn BillingProvider> = Arc::new(provider(&fake));
    let f = memory().await.unwrap();
    let catalog = tenancy_billing::testkit::webhooks::catalog();
    let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
    let cache = Arc::new(
        EntitlementCache::new(Arc::clone(&f.store), catalog.clone(), AccessPolicy::new())
            .with_clock(clock.clone()),
    );
    let service = BillingService::new(Arc::clone(&f.store), catalog.clone())
        .with_cache(Arc::clone(&cache))
        .with_provider(Arc::clone(&stripe));
    let verifier = WebhookVerifier::new([WebhookSecret::new(WHSEC).unwrap()]);
    let sso = catalog.feature("sso").unwrap();

    let tenant = create_tenant(&f.backend).await;
    assert!(!cache.get(tenant).await.unwrap().check(sso));
    let customer = stripe.create_customer(tenant, "Acme", None).await.unwrap();
    let url = stripe
        .create_checkout_session(&checkout(tenant, customer))
        .await
        .unwrap();
    for webhook in fake.complete_checkout(&url) {
        service
            .handle_webhook(&verifier, Some(&webhook.header), &webhook.body)
            .await
            .unwrap();
    }
    let granted = cache.get(tenant).await.unwrap();
    assert!(granted.check(sso));
    assert_eq!(granted.plan(), "pro");
    let state = f.store.state(tenant).await.unwrap();
    let sub = state.subscription.unwrap();
    assert_eq!(sub.quantity, 3);

    let past_due = fake.set_status(sub.id.as_str(), "past_due").unwrap();
    service
        .handle_webhook(&verifier, Some(&past_due.header), &past_due.body)
        .await
        .unwrap();
    let grace = cache.get(tenant).await.unwrap();
    assert!(grace.check(sso), "grace keeps the plan");
    assert!(matches!(grace.access(), Access::Grace { .. }));
    clock.advance(time::Duration::days(8));
    let fallen = cache.get(tenant).await.unwrap();
    assert!(!fallen.check(sso), "after grace: the default plan");
    assert_eq!(fallen.plan(), "free");

    let canceled = fake.set_status(sub.id.as_str(), "canceled").unwrap();
    service
        .handle_webhook(&verifier, Some(&canceled.header), &canceled.body)
        .await
        .unwrap();
    assert_eq!(
        service
            .handle_webhook(&verifier, Some(&canceled.header), &canceled.body)
            .await
            .unwrap(),
        WebhookOutcome::Duplicate
    );
    let state = f.store.state(tenant).await.unwrap();
    assert_eq!(
        state.subscription.unwrap().status,
        SubscriptionStatus::Canceled
    );
    assert!(!cache.get(tenant).await.unwrap().check(sso));
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}

/// Against Stripe's test mode, when a test key is given.
#[tokio::test]
async fn real_stripe_test_mode() {
    let key = match std::env::var("STRIPE_SECRET_KEY") {
        Ok(key) if key.starts_with("sk_test_") || key.starts_with("rk_test_") => key,
        _ => {
            eprintln!("STRIPE_SECRET_KEY is not a test key: skipping the Stripe test-mode test");
            return;
        }
    };
    let stripe = StripeProvider::new(StripeSecretKey::new(&key)).unwrap();
    let tenant = TenantId::new();
    let first = stripe
        .create_customer(tenant, "tenancy test", None)
        .await
        .unwrap();
    let again = stripe
        .create_customer(tenant, "tenancy test", None)
        .await
        .unwrap();
    assert_eq!(first, again);
    assert!(stripe.list_subscriptions(&first).await.unwrap().is_empty());
    let _ = STRIPE_VERSION;
}

/// The fake is strict: a client that forgets the version or the key is
/// caught.
#[tokio::test]
async fn the_fake_catches_a_sloppy_client() {
    let fake = FakeStripe::start(KEY, WHSEC).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/customers", fake.base_url());
    let unversioned = http
        .post(&url)
        .bearer_auth(KEY)
        .header("Idempotency-Key", "k1")
        .body("name=A")
        .send()
        .await
        .unwrap();
    assert_eq!(unversioned.status(), 400);
    let unkeyed = http
        .post(&url)
        .bearer_auth(KEY)
        .header("Stripe-Version", STRIPE_VERSION)
        .body("name=A")
        .send()
        .await
        .unwrap();
    assert_eq!(unkeyed.status(), 400);
    let send = |body: &'static str| {
        http.post(&url)
            .bearer_auth(KEY)
            .header("Stripe-Version", STRIPE_VERSION)
            .header("Idempotency-Key", "k2")
            .body(body)
            .send()
    };
    assert_eq!(send("name=A").await.unwrap().status(), 200);
    let replay = send("name=A").await.unwrap();
    assert_eq!(replay.headers()["Idempotent-Replayed"], "true");
    assert_eq!(send("name=B").await.unwrap().status(), 400, "key reused");
    let missing = http
        .post(&url)
        .bearer_auth(KEY)
        .header("Stripe-Version", STRIPE_VERSION)
        .header("Idempotency-Key", "k3")
        .body("email=a%40b.test")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    let problems = fake.problems();
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(problems[0].contains("Stripe-Version"));
    assert!(problems[1].contains("Idempotency-Key"));
    assert!(problems[2].contains("reused"));
    assert!(problems[3].contains("missing name"));
}
