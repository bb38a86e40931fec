//! HTTP scenarios of the billing module (features `http`, `stripe`,
//! `testkit`), run by both framework integrations on memory and Postgres
//! through [`billing_scenarios!`](crate::billing_scenarios).
//!
//! Each scenario runs an app with a [`BillingModule`] whose provider is
//! the [`FakeStripe`] server, and a route at [`GATED_PATH`] that the
//! integration wraps in its `require_entitlement(GATED_FEATURE)` and
//! answers `{"plan": …}` from the context's entitlements.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tenancy_http::testkit::{Account, Reply, Setup, Start, Stores, TestApp};
use tenancy_http::{TenancyBuilder, testkit::capture_logs};

use super::fake_stripe::{FakeStripe, SignedWebhook};
use crate::catalog::{Catalog, CatalogDocument, Enforcement, PlanDocument};
use crate::http::{BillingModule, ReturnUrls, SeatSync};
use crate::store::BillingStore;
use crate::stripe::{StripeConfig, StripeProvider, StripeSecretKey};
use crate::webhook::{WebhookSecret, WebhookVerifier};

/// The route the integrations gate on [`GATED_FEATURE`].
pub const GATED_PATH: &str = "/reports";
/// The feature gating [`GATED_PATH`]: granted by `pro` only.
pub const GATED_FEATURE: &str = "sso";
/// The fake's API key.
pub const API_KEY: &str = "sk_test_scenarios";
/// The webhook endpoint secret.
pub const WEBHOOK_SECRET: &str = "whsec_scenarios";

/// `free` (2 seats) and `pro` (`sso`, 5 seats, sold as `pro_monthly`).
pub fn catalog() -> Catalog {
    Catalog::from_document(
        &CatalogDocument::new("free")
            .gate("sso")
            .limit("seats", None, Enforcement::Hard)
            .plan("free", PlanDocument::default().grant("seats", 2))
            .plan(
                "pro",
                PlanDocument::default()
                    .lookup_key("pro_monthly")
                    .grant("sso", true)
                    .grant("seats", 5),
            ),
    )
    .unwrap()
}

/// An app with billing, and the fake Stripe behind it.
pub struct BillingApp {
    /// The app.
    pub app: TestApp,
    /// The fake Stripe.
    pub stripe: FakeStripe,
    /// The module the app was built with.
    pub module: BillingModule,
}

impl std::fmt::Debug for BillingApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingApp")
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

fn store(parts: &Setup) -> Option<Arc<dyn BillingStore>> {
    if let Some(backend) = &parts.backend {
        #[cfg(feature = "memory")]
        return Some(Arc::new(
            crate::MemoryBillingStore::new(backend.clone()).with_clock(parts.clock.clone()),
        ));
        #[cfg(not(feature = "memory"))]
        let _ = backend;
    }
    #[cfg(feature = "postgres")]
    if let Some(pool) = &parts.pool {
        return Some(Arc::new(
            crate::store::postgres::PgBillingStore::new(pool.clone())
                .with_clock(parts.clock.clone()),
        ));
    }
    None
}

impl BillingApp {
    /// Starts the fake Stripe and the app (`None` when Postgres is asked
    /// for and not configured, outside CI).
    pub async fn launch(stores: Stores, start: Start) -> Option<Self> {
        let stripe = FakeStripe::start(API_KEY, WEBHOOK_SECRET).await;
        stripe.add_price("pro_monthly");
        let provider = StripeProvider::with_config(
            StripeSecretKey::new(API_KEY),
            StripeConfig {
                base_url: stripe.base_url(),
                ..StripeConfig::default()
            },
        )
        .unwrap();
        let mut module = None;
        let add = |builder: TenancyBuilder, parts: &Setup| {
            let store = store(parts).expect("a billing store for these stores");
            let built = BillingModule::builder(store, catalog())
                .clock(parts.clock.clone())
                .provider(Arc::new(provider))
                .webhooks(WebhookVerifier::new([
                    WebhookSecret::new(WEBHOOK_SECRET).unwrap()
                ]))
                .return_urls(ReturnUrls::all("https://app.test/billing"))
                .seat_sync(SeatSync::new().with_debounce(Duration::from_millis(50)))
                .build();
            module = Some(built.clone());
            builder.module(built)
        };
        let app = TestApp::launch_with(stores, start, &[], add).await?;
        Some(Self {
            app,
            stripe,
            module: module.unwrap(),
        })
    }

    /// Delivers a webhook as Stripe would.
    pub async fn deliver(&self, webhook: &SignedWebhook) -> Reply {
        self.deliver_raw(Some(&webhook.header), webhook.body.clone())
            .await
    }

    /// Delivers `body` with `header` as its signature.
    pub async fn deliver_raw(&self, header: Option<&str>, body: Vec<u8>) -> Reply {
        let mut request = self
            .app
            .request(Method::POST, "/billing/webhook")
            .header("content-type", "application/json")
            .body(body);
        if let Some(header) = header {
            request = request.header("stripe-signature", header);
        }
        self.app.send(request).await
    }

    /// `GET` the gated route as `who`.
    pub async fn gated(&self, who: &Account) -> Reply {
        self.app
            .call(Method::GET, GATED_PATH, Some(&who.token), None)
            .await
    }

    /// Checks `who`'s tenant out on `pro`; returns the webhooks the fake
    /// sends once it is paid, in Stripe's order.
    pub async fn check_out(&self, who: &Account) -> Vec<SignedWebhook> {
        let reply = self
            .app
            .call(
                Method::POST,
                "/billing/checkout",
                Some(&who.token),
                Some(json!({ "plan": "pro" })),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let url = reply.json["url"].as_str().unwrap();
        let webhooks = self.stripe.complete_checkout(url);
        assert_eq!(webhooks.len(), 3);
        webhooks
    }

    /// `GET /billing/subscription` as `who`.
    pub async fn subscription(&self, who: &Account) -> Value {
        let reply = self
            .app
            .call(Method::GET, "/billing/subscription", Some(&who.token), None)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json
    }

    /// Invites `email` into `by`'s tenant as a member.
    pub async fn invite(&self, by: &Account, email: &str) -> Reply {
        self.app
            .call(
                Method::POST,
                "/invitations",
                Some(&by.token),
                Some(json!({ "email": email, "roles": ["member"] })),
            )
            .await
    }
}

fn assert_refused(reply: &Reply) {
    reply.assert_problem(402, "entitlement-required");
    assert_eq!(reply.json["feature"], GATED_FEATURE, "{}", reply.text);
    assert_eq!(reply.json["plans"], json!(["pro"]), "{}", reply.text);
}

/// A free tenant is refused the gated route (`402` naming the feature and
/// `pro`); checkout and the signed webhooks turn it to allowed; the plan
/// shows in the subscription and entitlements routes; a failed payment
/// keeps it through the grace period, then takes it away.
pub async fn upgrade_then_grace_then_downgrade(b: &BillingApp) {
    let ada = b.app.register("upgrade", "ada@upgrade.test").await;
    assert_refused(&b.gated(&ada).await);
    let before = b.subscription(&ada).await;
    assert_eq!(before["plan"], "free");
    assert_eq!(before["subscription"], Value::Null);

    let member = b
        .app
        .add_member(&ada, "max@upgrade.test", &["member"])
        .await;
    let denied = b
        .app
        .call(
            Method::POST,
            "/billing/checkout",
            Some(&member.token),
            Some(json!({ "plan": "pro" })),
        )
        .await;
    denied.assert_problem(403, "forbidden");
    let unknown = b
        .app
        .call(
            Method::POST,
            "/billing/checkout",
            Some(&ada.token),
            Some(json!({ "plan": "gold" })),
        )
        .await;
    assert_eq!(unknown.status, 422, "{}", unknown.text);

    for webhook in b.check_out(&ada).await {
        let reply = b.deliver(&webhook).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let granted = b.gated(&ada).await;
    assert_eq!(granted.status, 200, "{}", granted.text);
    assert_eq!(granted.json["plan"], "pro");
    let entitlements = b
        .app
        .call(Method::GET, "/billing/entitlements", Some(&ada.token), None)
        .await;
    assert_eq!(entitlements.status, 200, "{}", entitlements.text);
    assert_eq!(entitlements.json["features"]["sso"]["granted"], true);
    assert_eq!(entitlements.json["features"]["seats"]["limit"], 5);
    let subscription = b.subscription(&ada).await;
    assert_eq!(subscription["subscription"]["status"], "active");
    assert_eq!(subscription["access"]["kind"], "subscribed");
    let again = b
        .app
        .call(
            Method::POST,
            "/billing/checkout",
            Some(&ada.token),
            Some(json!({ "plan": "pro" })),
        )
        .await;
    again.assert_problem(409, "conflict");
    let portal = b
        .app
        .call(Method::POST, "/billing/portal", Some(&ada.token), None)
        .await;
    assert_eq!(portal.status, 200, "{}", portal.text);
    assert!(portal.json["url"].as_str().unwrap().contains("/portal/"));

    let sub_id = subscription["subscription"]["id"].as_str().unwrap();
    let failed = b.stripe.set_status(sub_id, "past_due").unwrap();
    assert_eq!(b.deliver(&failed).await.status, 200);
    let grace = b.gated(&ada).await;
    assert_eq!(grace.status, 200, "in grace: {}", grace.text);
    assert_eq!(b.subscription(&ada).await["access"]["kind"], "grace");
    b.app.clock.advance(time::Duration::days(8));
    let ada = b.app.login(&ada.email, Some(&ada.tenant)).await;
    assert_refused(&b.gated(&ada).await);
    let after = b.subscription(&ada).await;
    assert_eq!(after["plan"], "free");
    assert_eq!(after["access"]["kind"], "fallen_back");
}

/// Cancellation takes the plan away at once; a new checkout brings it back.
pub async fn cancellation_takes_it_away(b: &BillingApp) {
    let ada = b.app.register("cancel", "ada@cancel.test").await;
    for webhook in b.check_out(&ada).await {
        assert_eq!(b.deliver(&webhook).await.status, 200);
    }
    assert_eq!(b.gated(&ada).await.status, 200);
    let sub = b.subscription(&ada).await;
    let sub_id = sub["subscription"]["id"].as_str().unwrap();
    let deleted = b.stripe.set_status(sub_id, "canceled").unwrap();
    assert_eq!(b.deliver(&deleted).await.status, 200);
    assert_refused(&b.gated(&ada).await);
    assert_eq!(
        b.subscription(&ada).await["subscription"]["status"],
        "canceled"
    );
    for webhook in b.check_out(&ada).await {
        assert_eq!(b.deliver(&webhook).await.status, 200);
    }
    assert_eq!(b.gated(&ada).await.status, 200);
}

/// Webhooks delivered in reverse order and each twice end in the in-order
/// state; an older snapshot arriving last does not move the state back;
/// every signature failure answers one identical `400`; an event naming a
/// customer linked to another tenant is acknowledged and changes nothing.
pub async fn webhooks_duplicated_reordered_and_refused(b: &BillingApp) {
    let logs = capture_logs();
    let ada = b.app.register("reorder", "ada@reorder.test").await;
    let webhooks = b.check_out(&ada).await;
    for webhook in webhooks.iter().rev().chain(webhooks.iter()) {
        let reply = b.deliver(webhook).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    assert_eq!(b.gated(&ada).await.status, 200);
    let settled = b.subscription(&ada).await;
    let sub_id = settled["subscription"]["id"].as_str().unwrap().to_owned();
    // A newer past_due, then an older active snapshot under a new event
    // id: still past_due.
    let failed = b.stripe.set_status(&sub_id, "past_due").unwrap();
    assert_eq!(b.deliver(&failed).await.status, 200);
    let created = &webhooks[1];
    let mut older: Value = serde_json::from_slice(&created.body).unwrap();
    older["id"] = json!("evt_older_snapshot");
    let older = serde_json::to_vec(&older).unwrap();
    let header = WebhookSecret::new(WEBHOOK_SECRET)
        .unwrap()
        .sign(time::OffsetDateTime::now_utc().unix_timestamp(), &older);
    assert_eq!(b.deliver_raw(Some(&header), older).await.status, 200);
    let now = b.subscription(&ada).await;
    assert_eq!(now["subscription"]["status"], "past_due");
    let revision = now["revision"].clone();
    for webhook in [created, &failed] {
        assert_eq!(b.deliver(webhook).await.status, 200);
    }
    assert_eq!(b.subscription(&ada).await["revision"], revision);

    // Every signature failure, one answer.
    let body = failed.body.clone();
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let stale = WebhookSecret::new(WEBHOOK_SECRET).unwrap().sign(
        time::OffsetDateTime::now_utc().unix_timestamp() - 3600,
        &body,
    );
    let wrong = WebhookSecret::new("whsec_other")
        .unwrap()
        .sign(time::OffsetDateTime::now_utc().unix_timestamp(), &body);
    let refusals = [
        b.deliver_raw(Some(&failed.header), tampered).await,
        b.deliver_raw(Some(&stale), body.clone()).await,
        b.deliver_raw(Some(&wrong), body.clone()).await,
        b.deliver_raw(None, body.clone()).await,
        b.deliver_raw(Some("t=x,v1=zz"), body.clone()).await,
    ];
    for refused in &refusals {
        refused.assert_problem(400, "bad-request");
        assert_eq!(refused.text, refusals[0].text);
    }
    assert!(logs.text().contains("webhook signature refused"));

    // Another tenant's customer named for this tenant: acknowledged, no change.
    let bea = b.app.register("reorder-b", "bea@reorder.test").await;
    let mut object = b.stripe.subscription(&sub_id).unwrap();
    object["metadata"] = json!({ "tenant_id": bea.tenant });
    object["status"] = json!("active");
    let misrouted = b
        .stripe
        .signed_event("customer.subscription.updated", object);
    let reply = b.deliver(&misrouted).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(b.deliver(&misrouted).await.status, 200);
    assert_eq!(b.subscription(&bea).await["subscription"], Value::Null);
    assert_eq!(
        b.subscription(&ada).await["subscription"]["status"],
        "past_due"
    );
}

/// Invitations past the plan's hard seat limit are refused (`422
/// limit-exceeded` naming `seats`; pending invitations count); the upgrade
/// raises the limit; seat sync sets the subscription's quantity to the
/// member count.
pub async fn seat_limit_on_invitations(b: &BillingApp) {
    let ada = b.app.register("seats", "ada@seats.test").await;
    let first = b.invite(&ada, "one@seats.test").await;
    assert_eq!(first.status, 201, "{}", first.text);
    let refused = b.invite(&ada, "two@seats.test").await;
    refused.assert_problem(422, "limit-exceeded");
    assert_eq!(refused.json["limit"], "seats");
    assert_eq!(refused.json["max"], 2);

    for webhook in b.check_out(&ada).await {
        assert_eq!(b.deliver(&webhook).await.status, 200);
    }
    let sub = b.subscription(&ada).await;
    assert_eq!(sub["subscription"]["quantity"], 1);
    let sub_id = sub["subscription"]["id"].as_str().unwrap().to_owned();
    // The fake dates its events a little ahead; the provider's answers to
    // the sync are observed by the app's clock, so move it past them.
    b.app.clock.advance(time::Duration::minutes(5));
    b.app.add_member(&ada, "two@seats.test", &["member"]).await;
    let token = first.json["token"].as_str().unwrap();
    assert_eq!(b.app.accept(token).await.status, 200);
    // Three members now: the fake's subscription follows after the debounce.
    let mut quantity = Value::Null;
    for _ in 0..100 {
        quantity = b.stripe.subscription(&sub_id).unwrap()["items"]["data"][0]["quantity"].clone();
        if quantity == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(quantity, 3);
    let mut stored = Value::Null;
    for _ in 0..100 {
        stored = b.subscription(&ada).await["subscription"]["quantity"].clone();
        if stored == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stored, 3);
    for n in 3..5 {
        let reply = b.invite(&ada, &format!("m{n}@seats.test")).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
    }
    b.invite(&ada, "m5@seats.test")
        .await
        .assert_problem(422, "limit-exceeded");
}

/// Generates one test per billing scenario for `$start` (which serves the
/// SDK's routes and [`GATED_PATH`] behind `require_entitlement`), on
/// memory and on Postgres.
#[macro_export]
macro_rules! billing_scenarios {
    ($start:ident) => {
        $crate::billing_scenarios!(@stores $start;
            upgrade_then_grace_then_downgrade, cancellation_takes_it_away,
            webhooks_duplicated_reordered_and_refused, seat_limit_on_invitations
        );
    };
    (@stores $start:ident; $($scenario:ident),+ $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let app = $crate::testkit::scenarios::BillingApp::launch(
                        $crate::tenancy_http::testkit::Stores::Memory,
                        super::$start,
                    )
                    .await
                    .expect("memory app");
                    $crate::testkit::scenarios::$scenario(&app).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    if let Some(app) = $crate::testkit::scenarios::BillingApp::launch(
                        $crate::tenancy_http::testkit::Stores::Postgres,
                        super::$start,
                    )
                    .await
                    {
                        $crate::testkit::scenarios::$scenario(&app).await;
                    }
                }
            )+
        }
    };
}
