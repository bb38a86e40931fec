//! The metering HTTP scenarios (features `testkit` and `http`), run by
//! both framework integrations with [`metering_http_scenarios!`](crate::metering_http_scenarios):
//! the scenario app of tenancy-http's suite with a [`MeteringModule`]
//! added and the projects API wrapped in [`scenario_guard`].
//!
//! An integration's `start` function mounts the SDK's routes (the module's
//! `/usage` among them) and `/projects` behind its middleware and
//! `guard(scenario_guard(&tenancy))`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tenancy_http::Tenancy;
use tenancy_http::http::Method;
use tenancy_http::testkit::{Account, Start, Stores, TestApp};
use time::OffsetDateTime;

use crate::http::{KeyPart, MeteringGuard, MeteringModule, RateRule};
use crate::{
    Aggregation, Cycle, LimitKind, Meter, MeterName, Metering, MeteringStore, Meters, OnStoreError,
    PlanQuota, QuotaStore, RateLimit, StaticPlans, TenantPlan,
};

/// The guarded route's name.
pub const ROUTE: &str = "GET /projects";

/// What the app keeps its usage, quotas and rate limits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Everything in memory.
    Memory,
    /// Usage and quota counters in Postgres.
    Postgres,
    /// Usage in memory, quota counters in Redis.
    Redis,
    /// Everything in memory but the quota counters, whose store is down.
    QuotaStoreDown,
}

/// A quota store that cannot be reached (a Redis outage).
struct DownQuotaStore;

#[async_trait::async_trait]
impl QuotaStore for DownQuotaStore {
    async fn consume(
        &self,
        _: &crate::QuotaKey,
        _: u64,
        _: u64,
    ) -> Result<crate::Consumption, crate::QuotaStoreError> {
        Err(down())
    }

    async fn release(&self, _: &crate::QuotaKey, _: u64) -> Result<(), crate::QuotaStoreError> {
        Err(down())
    }

    async fn used(&self, _: &crate::QuotaKey) -> Result<u64, crate::QuotaStoreError> {
        Err(down())
    }
}

fn down() -> crate::QuotaStoreError {
    crate::QuotaStoreError::Store(tenancy_core::StoreError::unavailable("quota store down"))
}

/// A scenario app with its plans, to change a tenant's plan.
pub struct MeteredApp {
    /// The app.
    pub app: TestApp,
    /// Tenants' plans.
    pub plans: Arc<StaticPlans>,
}

impl std::fmt::Debug for MeteredApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredApp").finish_non_exhaustive()
    }
}

/// The scenario meters: `api_calls` (count, keeps `route`).
pub fn scenario_meters() -> Meters {
    Meters::new([Meter::new(
        MeterName::new("api_calls").unwrap(),
        Aggregation::Count,
        "calls",
    )
    .unwrap()
    .keep([crate::DimensionName::new("route").unwrap()])
    .unwrap()])
    .unwrap()
}

/// The guard of `/projects`: 3 requests a minute per API key (600 on the
/// `pro` plan), then the plan's hard `api_calls` quota, then one
/// `api_calls` recorded.
pub fn scenario_guard(tenancy: &Tenancy) -> MeteringGuard {
    let module = tenancy
        .module::<MeteringModule>()
        .expect("the metering module is registered");
    let per_key = |n| {
        RateRule::new(
            "per-key",
            RateLimit::new(n, Duration::from_secs(60)).unwrap(),
        )
        .unwrap()
        .by(KeyPart::ApiKey)
    };
    module
        .guard(ROUTE)
        .limit(per_key(3))
        .limit_for_plan("pro", per_key(600))
        .quota("api_calls", 1, OnStoreError::Closed)
        .unwrap()
        .record("api_calls", 1)
        .unwrap()
}

/// A plan `name` with a hard `api_calls` quota of `calls` a month from
/// `anchor`, the billing cycle too.
pub fn plan(name: &str, calls: u64, anchor: OffsetDateTime) -> TenantPlan {
    let cycle = Cycle::Anchored { anchor, months: 1 };
    TenantPlan {
        plan: name.into(),
        billing_cycle: cycle,
        quotas: vec![PlanQuota {
            meter: MeterName::new("api_calls").unwrap(),
            amount: calls,
            kind: LimitKind::Hard,
            cycle,
        }],
    }
}

/// Launches the app on `backing`; `None` when its server is not
/// configured (outside CI).
pub async fn launch(backing: Backing, start: Start) -> Option<MeteredApp> {
    let stores = match backing {
        Backing::Postgres => Stores::Postgres,
        Backing::Memory | Backing::Redis | Backing::QuotaStoreDown => Stores::Memory,
    };
    let quota_store: Option<Arc<dyn QuotaStore>> = match backing {
        #[cfg(all(feature = "redis", feature = "memory"))]
        Backing::Redis => {
            let conn = super::redis::connection().await?;
            Some(Arc::new(
                crate::redis::RedisQuotaStore::new(conn)
                    .with_prefix(&super::redis::unique_prefix())
                    .with_ttl(Duration::from_secs(600)),
            ))
        }
        #[cfg(not(all(feature = "redis", feature = "memory")))]
        Backing::Redis => {
            eprintln!("built without the redis feature: skipping Redis scenario");
            return None;
        }
        Backing::QuotaStoreDown => Some(Arc::new(DownQuotaStore)),
        Backing::Memory | Backing::Postgres => None,
    };
    let plans = Arc::new(StaticPlans::new());
    let source = plans.clone();
    let app = TestApp::launch_with(stores, start, &[], move |builder, setup| {
        let clock: Arc<dyn tenancy_core::Clock> = setup.clock.clone();
        let (builder, store, pg_quotas): (_, Arc<dyn MeteringStore>, Option<Arc<dyn QuotaStore>>) =
            on_stores(builder, setup);
        let metering = Metering::new(scenario_meters(), store).with_clock(clock);
        let mut module = MeteringModule::builder(metering).plans(source);
        if let Some(store) = quota_store.or(pg_quotas) {
            module = module.quota_store(store);
        }
        builder.module(module.build())
    })
    .await?;
    Some(MeteredApp { app, plans })
}

#[allow(clippy::type_complexity)]
fn on_stores(
    builder: tenancy_http::TenancyBuilder,
    setup: &tenancy_http::testkit::Setup,
) -> (
    tenancy_http::TenancyBuilder,
    Arc<dyn MeteringStore>,
    Option<Arc<dyn QuotaStore>>,
) {
    #[cfg(feature = "postgres")]
    if let Some(pool) = &setup.pool {
        let store = Arc::new(crate::store::postgres::PgMeteringStore::new(pool.clone()));
        return (builder, store.clone(), Some(store));
    }
    let _ = setup;
    // The app's tenants live in a backend the metering store shares.
    let backend: Arc<dyn tenancy_core::Backend> = Arc::new(tenancy_core::MemoryBackend::new());
    let authz = Arc::new(tenancy_http::authz::MemoryAuthzStore::new(backend.clone()));
    let builder = builder.stores(tenancy_http::Stores::new(
        backend.clone(),
        Arc::new(tenancy_http::auth::MemoryAuthStore::new()),
        authz.clone(),
        authz,
    ));
    (
        builder,
        Arc::new(crate::MemoryMeteringStore::new(backend)),
        None,
    )
}

impl MeteredApp {
    fn tenant(account: &Account) -> tenancy_core::TenantId {
        account.tenant.parse().unwrap()
    }

    /// Puts `account`'s tenant on `plan`.
    pub fn set_plan(&self, account: &Account, plan: TenantPlan) {
        self.plans.set(Self::tenant(account), plan);
    }

    /// An API key of `account` reading projects.
    pub async fn api_key(&self, account: &Account, name: &str) -> String {
        let created = self
            .app
            .call(
                Method::POST,
                "/api-keys",
                Some(&account.token),
                Some(json!({ "name": name, "scopes": ["projects:read"] })),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.text);
        created.json["secret"].as_str().unwrap().to_owned()
    }

    async fn projects(&self, bearer: &str) -> tenancy_http::testkit::Reply {
        self.app
            .call(Method::GET, "/projects", Some(bearer), None)
            .await
    }

    fn now(&self) -> OffsetDateTime {
        tenancy_core::Clock::now(&*self.app.clock)
    }
}

/// A key over its rate limit gets `429 rate-limited` with `Retry-After`
/// and the `RateLimit` fields, other keys are unaffected, and it is let
/// through again once `Retry-After` has passed.
pub async fn rate_limited_key_recovers_after_retry_after(app: &MeteredApp) {
    let ada = app.app.register("ratelimits", "ada@ratelimits.test").await;
    app.set_plan(
        &ada,
        plan("free", 1_000, app.now() - time::Duration::days(3)),
    );
    let key = app.api_key(&ada, "busy bot").await;
    let other = app.api_key(&ada, "quiet bot").await;
    for left in [2, 1, 0] {
        let ok = app.projects(&key).await;
        assert_eq!(ok.status, 200, "{}", ok.text);
        let policy = ok.header("ratelimit-policy").unwrap();
        assert!(
            policy.starts_with("\"per-key\";q=3;w=60, \"quota:api_calls\";q=1000;w="),
            "{policy}"
        );
        let state = ok.header("ratelimit").unwrap();
        assert!(
            state.starts_with(&format!("\"per-key\";r={left};t=")),
            "{state}"
        );
    }
    let refused = app.projects(&key).await;
    refused.assert_problem(429, "rate-limited");
    // One request per 20 s once the burst of 3 is spent.
    assert_eq!(refused.header("retry-after"), Some("20"));
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"per-key\";q=3;w=60")
    );
    assert_eq!(refused.header("ratelimit"), Some("\"per-key\";r=0;t=60"));
    // Another key has its own bucket.
    assert_eq!(app.projects(&other).await.status, 200);
    // Not yet…
    app.app.clock.advance(time::Duration::seconds(19));
    app.projects(&key).await.assert_problem(429, "rate-limited");
    // …then after Retry-After.
    app.app.clock.advance(time::Duration::seconds(1));
    let again = app.projects(&key).await;
    assert_eq!(again.status, 200, "{}", again.text);
    // The plan's rules: `pro` keys get 600 a minute.
    app.set_plan(
        &ada,
        plan("pro", 1_000, app.now() - time::Duration::days(3)),
    );
    let pro = app.projects(&other).await;
    assert_eq!(pro.status, 200, "{}", pro.text);
    assert!(
        pro.header("ratelimit-policy")
            .unwrap()
            .starts_with("\"per-key\";q=600;w=60"),
        "{:?}",
        pro.header("ratelimit-policy")
    );
}

/// A tenant at its hard quota is refused (`429 quota-exceeded`,
/// `Retry-After` at the period's end) until the plan is upgraded, and
/// again at the next limit until the billing period resets.
pub async fn hard_quota_until_reset_or_upgrade(app: &MeteredApp) {
    let ada = app.app.register("quotas", "ada@quotas.test").await;
    let anchor = app.now() - time::Duration::days(2);
    app.set_plan(&ada, plan("free", 3, anchor));
    let period = Cycle::Anchored { anchor, months: 1 }.period_at(app.now());
    for left in [2, 1, 0] {
        let ok = app.projects(&ada.token).await;
        assert_eq!(ok.status, 200, "{}", ok.text);
        let state = ok.header("ratelimit").unwrap();
        assert!(
            state.starts_with(&format!("\"quota:api_calls\";r={left};t=")),
            "users have no per-key rule: {state}"
        );
    }
    let refused = app.projects(&ada.token).await;
    refused.assert_problem(429, "quota-exceeded");
    let until_reset = (period.end - app.now()).whole_seconds();
    assert_eq!(
        refused.header("retry-after"),
        Some(&*until_reset.to_string())
    );
    assert_eq!(
        refused.header("ratelimit"),
        Some(&*format!("\"quota:api_calls\";r=0;t={until_reset}"))
    );
    // An upgrade applies to the current period at once.
    app.set_plan(&ada, plan("pro", 4, anchor));
    assert_eq!(app.projects(&ada.token).await.status, 200);
    app.projects(&ada.token)
        .await
        .assert_problem(429, "quota-exceeded");
    // The next period starts from zero.
    app.app.clock.advance(period.end - app.now());
    let ada = app.app.login(&ada.email, Some(&ada.tenant)).await;
    let ok = app.projects(&ada.token).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert!(
        ok.header("ratelimit")
            .unwrap()
            .starts_with("\"quota:api_calls\";r=3;t="),
        "{:?}",
        ok.header("ratelimit")
    );
}

/// `GET /usage` shows as many `api_calls` as requests were let through
/// (refused ones are not counted), by route when grouped, and the export
/// carries the same figure; reading usage needs `usage:read`.
pub async fn usage_equals_requests(app: &MeteredApp) {
    let ada = app.app.register("usage", "ada@usage.test").await;
    app.set_plan(&ada, plan("free", 5, app.now() - time::Duration::hours(1)));
    let key = app.api_key(&ada, "bot").await;
    let mut admitted = 0;
    for _ in 0..4 {
        if app.projects(&key).await.status == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3, "the fourth is rate limited");
    for _ in 0..4 {
        if app.projects(&ada.token).await.status == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5, "the quota of 5 refuses the rest");
    let usage = app
        .app
        .call(
            Method::GET,
            "/usage?meter=api_calls&granularity=hour&group_by=route",
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(usage.status, 200, "{}", usage.text);
    let meter = &usage.json["meters"][0];
    assert_eq!(meter["meter"], "api_calls");
    assert_eq!(meter["total"], admitted);
    assert_eq!(meter["points"][0]["group"]["route"], ROUTE);
    let day = app
        .app
        .call(Method::GET, "/usage", Some(&ada.token), None)
        .await;
    assert_eq!(day.json["meters"][0]["total"], admitted, "{}", day.text);
    // A meter asked twice is answered once; an unknown one is refused
    // before anything is read.
    let twice = app
        .app
        .call(
            Method::GET,
            "/usage?meter=api_calls,api_calls,api_calls",
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(twice.status, 200, "{}", twice.text);
    assert_eq!(twice.json["meters"].as_array().map(Vec::len), Some(1));
    let unknown = app
        .app
        .call(
            Method::GET,
            "/usage?meter=api_calls,nope",
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(unknown.status, 422, "{}", unknown.text);
    let csv = app
        .app
        .call(
            Method::GET,
            "/usage/export?format=csv&meter=api_calls",
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(csv.status, 200, "{}", csv.text);
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let lines: Vec<&str> = csv.text.lines().collect();
    assert_eq!(lines[0], "meter,unit,granularity,bucket,value");
    let total: i64 = lines[1..]
        .iter()
        .map(|l| l.rsplit(',').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, admitted);
    app.app
        .call(
            Method::GET,
            "/usage?granularity=weekly",
            Some(&ada.token),
            None,
        )
        .await
        .assert_problem(422, "validation");
    // An API key without usage:read may not read usage, nor may a plain
    // member; the billing role may.
    app.app
        .call(Method::GET, "/usage", Some(&key), None)
        .await
        .assert_problem(403, "forbidden");
    let member = app
        .app
        .add_member(&ada, "bob@usage.test", &["member"])
        .await;
    app.app
        .call(Method::GET, "/usage", Some(&member.token), None)
        .await
        .assert_problem(403, "forbidden");
    let billing = app
        .app
        .add_member(&ada, "cy@usage.test", &["billing"])
        .await;
    let read = app
        .app
        .call(Method::GET, "/usage", Some(&billing.token), None)
        .await;
    assert_eq!(read.status, 200, "{}", read.text);
}

/// A quota that cannot be checked fails closed (the guard's choice for
/// `api_calls`): `503` with `Retry-After: 1`, nothing recorded.
pub async fn quota_store_down_fails_closed(app: &MeteredApp) {
    let ada = app.app.register("down", "ada@down.test").await;
    app.set_plan(&ada, plan("free", 10, app.now() - time::Duration::days(1)));
    let refused = app.projects(&ada.token).await;
    refused.assert_problem(503, "unavailable");
    assert_eq!(refused.header("retry-after"), Some("1"));
    let usage = app
        .app
        .call(
            Method::GET,
            "/usage?meter=api_calls",
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(usage.json["meters"][0]["total"], 0, "{}", usage.text);
}

/// Generates the metering scenarios for `$start`: on memory, Postgres and
/// (quotas) Redis.
#[macro_export]
macro_rules! metering_http_scenarios {
    ($start:ident) => {
        $crate::metering_http_scenarios!(@on $start; memory, Memory;
            rate_limited_key_recovers_after_retry_after, hard_quota_until_reset_or_upgrade,
            usage_equals_requests);
        $crate::metering_http_scenarios!(@on $start; postgres, Postgres;
            rate_limited_key_recovers_after_retry_after, hard_quota_until_reset_or_upgrade,
            usage_equals_requests);
        $crate::metering_http_scenarios!(@on $start; redis, Redis;
            hard_quota_until_reset_or_upgrade, usage_equals_requests);
        $crate::metering_http_scenarios!(@on $start; quota_store_down, QuotaStoreDown;
            quota_store_down_fails_closed);
    };
    (@on $start:ident; $module:ident, $backing:ident; $($scenario:ident),+ $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    if let Some(app) = $crate::testkit::http::launch(
                        $crate::testkit::http::Backing::$backing,
                        super::$start,
                    )
                    .await
                    {
                        $crate::testkit::http::$scenario(&app).await;
                    }
                }
            )+
        }
    };
}
