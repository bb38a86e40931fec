//! Usage metering end to end: events ingested durably (a retry counts
//! once) and buffered, a soft and a hard quota, a rate-limited API key,
//! and a usage report printed as a table.
//!
//! ```text
//! cargo run --example metering                                    # in memory
//! DATABASE_URL=postgres://… REDIS_URL=redis://127.0.0.1:6379 \
//!     cargo run --example metering                                # Postgres and Redis
//! ```
//!
//! With `DATABASE_URL`, usage and quota counters live in Postgres (the
//! tenant tables too); with `REDIS_URL`, quota counters and rate limits
//! live in Redis, shared by every replica.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use tenancy_metering::tenancy_core::{
    AuditContext, Backend, Directory, Email, MemoryBackend, NewTenant, NewUser, Owner, Slug,
    TenantName, TenantScope,
};
use tenancy_metering::*;

struct Printer;

impl QuotaHook for Printer {
    fn crossed(&self, event: &ThresholdCrossed) {
        println!(
            "  hook: {} crossed {}% of its {:?} limit ({} of {})",
            event.meter.as_str(),
            event.percent,
            event.limit.kind,
            event.used,
            event.limit.amount
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let Stores {
        backend,
        usage: store,
        quotas: quota_store,
        rates: rate_store,
        mode,
    } = stores().await?;
    println!("stores: {mode}");
    let run = uuid_suffix();
    let tenant = Directory::new(backend)
        .create_tenant(
            NewTenant::new(Slug::new(format!("acme-{run}"))?, TenantName::new("Acme")?),
            Owner::New(NewUser::new(Email::new(&format!(
                "ada-{run}@acme.example"
            ))?)),
            &AuditContext::system(),
        )
        .await?
        .tenant;
    let scope = TenantScope::assume_resolved(tenant.id);

    let route = DimensionName::new("route")?;
    let meters = Meters::new([
        Meter::new(MeterName::new("api_calls")?, Aggregation::Count, "calls")?
            .keep([route.clone()])?,
        Meter::new(MeterName::new("tokens")?, Aggregation::Sum, "tokens")?,
    ])?;
    let metering = Metering::new(meters, store);

    // Durable ingest: committed with its key; the retry counts once.
    let now = time::OffsetDateTime::now_utc();
    let event = NewEvent::new("tokens", 1_200, now, IdempotencyKey::new("completion-1")?);
    println!("\ndurable ingest");
    println!(
        "  first:  {:?}",
        metering.record(&scope, event.clone()).await?
    );
    println!("  retry:  {:?}", metering.record(&scope, event).await?);

    // Buffered ingest: in-process counters, flushed in one batch.
    let buffered = metering.buffered(BufferConfig::default());
    for i in 0..250 {
        let path = if i % 5 == 0 { "/reports" } else { "/projects" };
        buffered.add(&scope, "api_calls", 1, now, &[("route", path)])?;
    }
    let flushed = buffered.flush().await;
    println!(
        "\nbuffered ingest: {} events flushed as {} rollup rows",
        flushed.events, flushed.rows
    );

    // Quotas: tokens soft at 1,000 (recorded, hooks at 80% and 100%),
    // api_calls hard at 3 per billing period (refused before the work).
    let plans = Arc::new(StaticPlans::new());
    let cycle = Cycle::Anchored {
        anchor: now - time::Duration::days(9),
        months: 1,
    };
    let quota = |meter: &str, amount, kind| -> Result<PlanQuota, MeterError> {
        Ok(PlanQuota {
            meter: MeterName::new(meter)?,
            amount,
            kind,
            cycle,
        })
    };
    plans.set(
        tenant.id,
        TenantPlan {
            plan: "starter".into(),
            billing_cycle: cycle,
            quotas: vec![
                quota("tokens", 1_000, LimitKind::Soft)?,
                quota("api_calls", 3, LimitKind::Hard)?,
            ],
        },
    );
    let quotas =
        Quotas::new(Arc::new(PlanLimits::new(plans)), quota_store).with_hook(Arc::new(Printer));
    println!("\nsoft quota on tokens (1,000)");
    let tokens = MeterName::new("tokens")?;
    for amount in [500, 400, 300] {
        println!(
            "  +{amount}: {:?}",
            summary(quotas.consume(&scope, &tokens, amount).await?)
        );
    }
    println!("hard quota on api_calls (3)");
    let calls = MeterName::new("api_calls")?;
    for n in 1..=4 {
        println!(
            "  call {n}: {:?}",
            summary(quotas.consume(&scope, &calls, 1).await?)
        );
    }

    // A rate limit per API key: 5 a second, then refused with Retry-After.
    let limiter = RateLimiter::new(rate_store);
    let limit = RateLimit::new(5, Duration::from_secs(1))?.on_store_error(OnStoreError::Open);
    let key = format!("example:{run}:key_1");
    println!("\nrate limit, 5/s on one key");
    for n in 1..=6 {
        let d = limiter.check(&key, &limit, 1).await;
        println!(
            "  request {n}: {} (remaining {}, retry after {} ms)",
            if d.allowed { "allowed" } else { "refused" },
            d.remaining,
            d.retry_after.as_millis()
        );
    }

    // The usage report.
    println!("\nusage this hour, by route");
    let from = Granularity::Hour.floor(now);
    let (_, points) = metering
        .usage(
            &scope,
            "api_calls",
            from,
            from + time::Duration::HOUR,
            Granularity::Hour,
            vec![route],
        )
        .await?;
    let (_, token_points) = metering
        .usage(
            &scope,
            "tokens",
            from,
            from + time::Duration::HOUR,
            Granularity::Hour,
            vec![],
        )
        .await?;
    println!(
        "  {:<10} {:<20} {:<10} {:>8}",
        "meter", "hour (UTC)", "route", "value"
    );
    let hour = |p: &UsagePoint| format!("{:02}:00", p.bucket.hour());
    for p in &points {
        let route = p
            .group
            .values()
            .next()
            .cloned()
            .flatten()
            .unwrap_or_default();
        println!(
            "  {:<10} {:<20} {:<10} {:>8}",
            "api_calls",
            hour(p),
            route,
            p.value
        );
    }
    for p in &token_points {
        println!(
            "  {:<10} {:<20} {:<10} {:>8}",
            "tokens",
            hour(p),
            "",
            p.value
        );
    }
    Ok(())
}

fn summary(decision: QuotaDecision) -> String {
    match decision {
        QuotaDecision::Unlimited => "unlimited".into(),
        QuotaDecision::Allowed { used, limit } => format!("allowed, {used} of {}", limit.amount),
        QuotaDecision::Refused { used, limit } => {
            format!(
                "refused at {used} of {} until {}",
                limit.amount,
                limit.period_end.date()
            )
        }
    }
}

/// Where the example keeps tenants, usage, quota counters and rate limits.
struct Stores {
    backend: Arc<dyn Backend>,
    usage: Arc<dyn MeteringStore>,
    quotas: Arc<dyn QuotaStore>,
    rates: Arc<dyn RateLimitStore>,
    mode: String,
}

/// Postgres when `DATABASE_URL` is set and Redis when `REDIS_URL` is, in
/// memory otherwise.
async fn stores() -> Result<Stores, Box<dyn Error>> {
    let mut stores = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            use tenancy_metering::store::postgres::PgMeteringStore;
            use tenancy_metering::tenancy_core::postgres::PgBackend;
            let pool =
                tenancy_metering::tenancy_core::postgres::sqlx::PgPool::connect(&url).await?;
            let backend = PgBackend::new(pool.clone());
            backend.migrate().await?;
            let store = Arc::new(PgMeteringStore::new(pool));
            store.migrate().await?;
            Stores {
                backend: Arc::new(backend),
                usage: store.clone(),
                quotas: store,
                rates: Arc::new(MemoryRateLimitStore::new()),
                mode: "Postgres".into(),
            }
        }
        _ => {
            let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
            Stores {
                usage: Arc::new(MemoryMeteringStore::new(backend.clone())),
                backend,
                quotas: Arc::new(MemoryQuotaStore::new()),
                rates: Arc::new(MemoryRateLimitStore::new()),
                mode: "memory".into(),
            }
        }
    };
    if let Ok(url) = std::env::var("REDIS_URL")
        && !url.is_empty()
    {
        let conn = redis::connect(&url, Duration::from_secs(2)).await?;
        stores.quotas = Arc::new(redis::RedisQuotaStore::new(conn.clone()));
        stores.rates = Arc::new(redis::RedisRateLimitStore::new(conn));
        stores.mode.push_str(", quotas and rate limits in Redis");
    }
    Ok(stores)
}

fn uuid_suffix() -> String {
    uuid::Uuid::now_v7().simple().to_string()[20..].to_owned()
}
