//! Billing end to end: a tenant on `free` is refused a `pro` feature,
//! checks out, the signed webhook arrives and the feature is granted; a
//! payment fails, the plan holds through the grace period, then falls back
//! to `free` (nothing is deleted).
//!
//! ```text
//! cargo run --example billing --features billing                  # fake Stripe, in memory
//! DATABASE_URL=postgres://… cargo run --example billing --features billing,postgres
//! STRIPE_SECRET_KEY=sk_test_… STRIPE_WEBHOOK_SECRET=whsec_… \
//!     cargo run --example billing --features billing              # Stripe test mode
//! ```
//!
//! Without `STRIPE_SECRET_KEY` it needs no account and no network: a fake
//! Stripe server runs in-process on `127.0.0.1`, the adapter talks to it
//! over HTTP, and its webhooks are signed as Stripe signs them. With the
//! two variables it talks to Stripe test mode: the price `pro_monthly`
//! (lookup key) must exist, and webhooks reach this process through
//! `stripe listen --forward-to localhost:4242/billing/webhook` (the `whsec_`
//! secret it prints is `STRIPE_WEBHOOK_SECRET`).

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use tenancy::billing::stripe::{StripeConfig, StripeProvider, StripeSecretKey};
use tenancy::billing::testkit::fake_stripe::{FakeStripe, SignedWebhook};
use tenancy::billing::webhook::{WebhookSecret, WebhookVerifier};
use tenancy::billing::{
    AccessPolicy, BillingProvider, BillingService, BillingStore, Catalog, CatalogDocument,
    CheckoutRequest, Enforcement, EntitlementCache, Entitlements, PlanDocument,
};
use tenancy::{
    AuditContext, Backend, Clock, Directory, Email, ManualClock, MemoryBackend, NewTenant, NewUser,
    Owner, Slug, SystemClock, TenantName,
};

const LOOKUP_KEY: &str = "pro_monthly";

fn catalog() -> Result<Catalog, tenancy::billing::CatalogError> {
    Catalog::from_document(
        &CatalogDocument::new("free")
            .gate("sso")
            .limit("projects", None, Enforcement::Hard)
            .plan("free", PlanDocument::default().grant("projects", 3))
            .plan(
                "pro",
                PlanDocument::default()
                    .lookup_key(LOOKUP_KEY)
                    .grant("sso", true)
                    .grant("projects", 100),
            ),
    )
}

fn show(step: &str, e: &Entitlements) {
    let projects = e
        .limit_key("projects")
        .map_or_else(|| "-".to_owned(), |l| l.to_string());
    println!(
        "{step}: plan {}, sso {}, projects {projects}, {:?}",
        e.plan(),
        if e.check_key("sso") {
            "granted"
        } else {
            "refused"
        },
        e.access()
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let stripe_key = std::env::var("STRIPE_SECRET_KEY").ok();
    let (backend, store) = stores().await?;
    let run = uuid::Uuid::now_v7().simple().to_string();
    let run = &run[run.len() - 10..];
    let created = Directory::new(backend)
        .create_tenant(
            NewTenant::new(
                Slug::new(format!("acme-{run}"))?,
                TenantName::new("Acme Corp")?,
            ),
            Owner::New(NewUser::new(Email::new(&format!(
                "ada-{run}@acme.example"
            ))?)),
            &AuditContext::system(),
        )
        .await?;
    let tenant = created.tenant.id;

    // The fake Stripe moves no time; its clock lets grace run out at once.
    let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
    let app_clock: Arc<dyn Clock> = match stripe_key {
        Some(_) => Arc::new(SystemClock),
        None => clock.clone(),
    };
    let (provider, secret, fake): (Arc<dyn BillingProvider>, String, Option<FakeStripe>) =
        match &stripe_key {
            Some(key) => {
                let secret = std::env::var("STRIPE_WEBHOOK_SECRET")
                    .map_err(|_| "STRIPE_WEBHOOK_SECRET is needed with STRIPE_SECRET_KEY")?;
                println!("provider: Stripe test mode");
                let provider = StripeProvider::new(StripeSecretKey::new(key))?;
                (Arc::new(provider), secret, None)
            }
            None => {
                let secret = "whsec_example".to_owned();
                let fake = FakeStripe::start("sk_test_example", &secret).await;
                fake.add_price(LOOKUP_KEY);
                println!("provider: fake Stripe at {}", fake.base_url());
                let provider = StripeProvider::with_config(
                    StripeSecretKey::new("sk_test_example"),
                    StripeConfig {
                        base_url: fake.base_url(),
                        ..StripeConfig::default()
                    },
                )?;
                (Arc::new(provider), secret, Some(fake))
            }
        };

    let catalog = catalog()?;
    let policy = AccessPolicy::new().with_past_due_grace(time::Duration::days(3));
    let cache = Arc::new(
        EntitlementCache::new(store.clone(), catalog.clone(), policy).with_clock(app_clock.clone()),
    );
    let service = Arc::new(
        BillingService::new(store.clone(), catalog)
            .with_cache(cache.clone())
            .with_provider(provider.clone())
            .with_policy(policy)
            .with_clock(app_clock),
    );
    let verifier = WebhookVerifier::new([WebhookSecret::new(&secret)?]);

    show("on free", &*cache.get(tenant).await?);

    // Checkout: the tenant's customer, then a session for the pro price.
    let customer = provider
        .create_customer(
            tenant,
            "Acme Corp",
            Some(&format!("ada-{run}@acme.example")),
        )
        .await?;
    store
        .link_customer(tenant, &customer, None, &AuditContext::system())
        .await?;
    let url = provider
        .create_checkout_session(&CheckoutRequest {
            tenant_id: tenant,
            customer_id: customer,
            lookup_key: LOOKUP_KEY.to_owned(),
            quantity: 1,
            trial_days: None,
            success_url: "https://app.example/billing?paid".to_owned(),
            cancel_url: "https://app.example/billing".to_owned(),
        })
        .await?;
    println!("checkout at {url}");

    let Some(fake) = fake else {
        return with_stripe(service, verifier, cache, tenant).await;
    };

    // The customer pays: Stripe sends its webhooks, signed; one twice.
    let webhooks = fake.complete_checkout(&url);
    for webhook in webhooks.iter().chain(webhooks.last()) {
        deliver(&service, &verifier, webhook).await?;
    }
    show("after checkout", &*cache.get(tenant).await?);

    // The renewal fails: past_due keeps the plan for the grace period.
    let subscription = store
        .state(tenant)
        .await?
        .subscription
        .ok_or("no subscription after checkout")?;
    let failed = fake
        .set_status(subscription.id.as_str(), "past_due")
        .ok_or("the fake lost the subscription")?;
    deliver(&service, &verifier, &failed).await?;
    show("payment failed", &*cache.get(tenant).await?);

    clock.advance(time::Duration::days(4));
    let after = cache.get(tenant).await?;
    show("grace over", &after);
    if after.check_key("sso") || after.plan() != "free" {
        return Err("the grace period did not end".into());
    }
    println!(
        "downgraded to free; the tenant's data is kept, new use beyond free's limits is refused"
    );
    Ok(())
}

/// Verifies and applies one webhook, as `POST /billing/webhook` would.
async fn deliver(
    service: &BillingService,
    verifier: &WebhookVerifier,
    webhook: &SignedWebhook,
) -> Result<(), Box<dyn Error>> {
    let outcome = service
        .handle_webhook(verifier, Some(&webhook.header), &webhook.body)
        .await?;
    println!("  webhook: {outcome:?}");
    Ok(())
}

/// Stripe test mode: serves the webhook route on `127.0.0.1:4242` (or
/// `PORT`) and waits for the checkout to be paid.
async fn with_stripe(
    service: Arc<BillingService>,
    verifier: WebhookVerifier,
    cache: Arc<EntitlementCache>,
    tenant: tenancy::TenantId,
) -> Result<(), Box<dyn Error>> {
    use axum::http::{HeaderMap, StatusCode};
    let port = std::env::var("PORT").unwrap_or_else(|_| "4242".to_owned());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    let verifier = Arc::new(verifier);
    let route = {
        let service = service.clone();
        move |headers: HeaderMap, body: axum::body::Bytes| async move {
            let header = headers
                .get("stripe-signature")
                .and_then(|v| v.to_str().ok());
            match service.handle_webhook(&verifier, header, &body).await {
                Ok(outcome) => {
                    println!("  webhook: {outcome:?}");
                    StatusCode::OK
                }
                Err(error) if error.is_bad_request() => {
                    println!("  webhook refused: {error}");
                    StatusCode::BAD_REQUEST
                }
                Err(error) => {
                    println!("  webhook failed: {error}");
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }
    };
    let app = axum::Router::new().route("/billing/webhook", axum::routing::post(route));
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!(
        "run `stripe listen --forward-to localhost:{port}/billing/webhook`, pay with card 4242 4242 4242 4242; waiting up to 10 minutes"
    );
    for _ in 0..600 {
        let e = cache.get(tenant).await?;
        if e.check_key("sso") {
            show("after checkout", &e);
            println!(
                "a failed renewal can be played with a Stripe test clock; the grace policy then applies"
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err("the checkout was not paid within 10 minutes".into())
}

/// The core backend and the billing store: Postgres with `DATABASE_URL`
/// (feature `postgres`), else memory.
async fn stores() -> Result<(Arc<dyn Backend>, Arc<dyn BillingStore>), Box<dyn Error>> {
    #[cfg(feature = "postgres")]
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let postgres = tenancy::postgres::PgBackend::connect(&url).await?;
        postgres.migrate().await?;
        let billing =
            tenancy::billing::store::postgres::PgBillingStore::new(postgres.pool().clone());
        billing.migrate().await?;
        println!("stores: postgres");
        return Ok((Arc::new(postgres), Arc::new(billing)));
    }
    println!("stores: memory");
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let billing = tenancy::billing::MemoryBillingStore::new(backend.clone());
    Ok((backend, Arc::new(billing)))
}
