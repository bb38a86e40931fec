//! Tenant provisioning end to end, in memory: one pipeline of four steps
//! (the tenant and its owner, seeded roles, a billing customer, a DNS
//! record). The first run's DNS step fails twice, is retried after a short
//! backoff and succeeds; the second run is cancelled while its DNS step
//! waits for a retry, and every step it started is undone in reverse
//! order. Each run's steps are printed as a table.
//!
//! ```text
//! cargo run --example provisioning --features provisioning
//! ```
//!
//! No server and no network: the run store, the directory, the roles, the
//! billing provider and the DNS zone all live in this process. It exits
//! with an error when a run or a step does not end as described.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::error::Error;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration as StdDuration, Instant};

use async_trait::async_trait;
use serde_json::json;
use tenancy::provisioning::steps::{
    BillingCustomers, CreateBillingCustomer, CreateTenant, ForTenant, TenantHook,
};
use tenancy::provisioning::{
    MemoryProvisioningStore, Pipeline, Provisioner, Run, RunId, RunStatus, Step, StepContext,
    StepError, StepOutput, StepPolicy, StepStatus,
};
use tenancy::{Directory, MemoryBackend, Slug, TenantId, TenantStatus, TenantStore};
use time::Duration;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The host's roles, seeded for each new tenant (in an app: through its
/// authorization admin).
#[derive(Clone, Default)]
struct Roles {
    by_tenant: Arc<Mutex<HashMap<TenantId, Vec<&'static str>>>>,
}

#[async_trait]
impl TenantHook for Roles {
    async fn apply(&self, tenant_id: TenantId, _: &StepContext) -> Result<StepOutput, StepError> {
        let roles = vec!["owner", "admin", "member"];
        let count = roles.len();
        // Seeding twice leaves the same roles: idempotent.
        lock(&self.by_tenant).insert(tenant_id, roles);
        Ok(StepOutput::empty().with("roles_seeded", count))
    }

    async fn undo(&self, tenant_id: TenantId, _: &StepContext) -> Result<(), StepError> {
        lock(&self.by_tenant).remove(&tenant_id);
        Ok(())
    }
}

/// A billing provider's customers (in an app: the billing wiring over
/// Stripe or another provider).
#[derive(Default)]
struct Customers {
    by_tenant: Mutex<BTreeMap<TenantId, String>>,
    by_key: Mutex<HashMap<String, String>>,
}

#[async_trait]
impl BillingCustomers for Customers {
    async fn ensure_customer(
        &self,
        tenant_id: TenantId,
        _email: &str,
        idempotency_key: &str,
    ) -> Result<String, StepError> {
        let mut by_key = lock(&self.by_key);
        let next = by_key.len() + 1;
        let id = by_key
            .entry(idempotency_key.to_owned())
            .or_insert_with(|| format!("cus_{next:04}"))
            .clone();
        lock(&self.by_tenant).insert(tenant_id, id.clone());
        Ok(id)
    }

    async fn remove_customer(&self, tenant_id: TenantId) -> Result<(), StepError> {
        lock(&self.by_tenant).remove(&tenant_id);
        Ok(())
    }
}

/// The host's own external step: a hostname per tenant at a DNS provider
/// whose API is sometimes busy. `outages` says how many calls for a slug
/// fail before one gets through.
struct Dns {
    records: Mutex<BTreeSet<String>>,
    outages: Mutex<HashMap<String, u32>>,
}

impl Dns {
    const NAME: &'static str = "dns";

    fn hostname(slug: &str) -> String {
        format!("{slug}.app.example")
    }
}

#[async_trait]
impl Step for Dns {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let slug = ctx.input_str("slug")?;
        if let Some(left) = lock(&self.outages).get_mut(slug)
            && *left > 0
        {
            *left -= 1;
            return Err(StepError::transient("dns provider busy (503)"));
        }
        let hostname = Self::hostname(slug);
        // Creating a record that exists already is a no-op: idempotent.
        lock(&self.records).insert(hostname.clone());
        Ok(StepOutput::empty().with("hostname", hostname))
    }

    async fn compensate(&self, ctx: &StepContext) -> Result<(), StepError> {
        let slug = ctx.input_str("slug")?;
        lock(&self.records).remove(&Self::hostname(slug));
        Ok(())
    }
}

fn print_run(title: &str, run: &Run) {
    let why = run
        .last_error
        .as_deref()
        .map_or_else(String::new, |e| format!(" ({e})"));
    println!("\n{title}: run {} {}{why}", run.id, run.status);
    println!(
        "  {:<24} {:<10} {:>8}  last error",
        "step", "status", "attempts"
    );
    for step in &run.steps {
        println!(
            "  {:<24} {:<10} {:>8}  {}",
            step.name,
            step.status.as_str(),
            step.attempts,
            step.last_error.as_deref().unwrap_or("-")
        );
    }
}

/// Works the runs until `id` is no longer active (a worker would do this
/// in the background: `provisioner.spawn_worker()`).
async fn settle(provisioner: &Provisioner, id: RunId) -> Result<Run, Box<dyn Error>> {
    let started = Instant::now();
    loop {
        provisioner.drain().await?;
        let run = provisioner.status(id).await?;
        if !run.status.is_active() {
            return Ok(run);
        }
        if started.elapsed() > StdDuration::from_secs(10) {
            return Err(format!("run {id} is still {} after 10 s", run.status).into());
        }
        // Waiting out the step's backoff: the run is not claimable before.
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
}

fn expect_steps(run: &Run, expected: &[(&str, StepStatus)]) -> Result<(), Box<dyn Error>> {
    let actual: Vec<_> = run
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.status))
        .collect();
    if actual != expected {
        return Err(format!("run {}: steps {actual:?}, expected {expected:?}", run.id).into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let directory = Directory::new(Arc::new(MemoryBackend::new()));
    let roles = Roles::default();
    let customers = Arc::new(Customers::default());
    let dns = Arc::new(Dns {
        records: Mutex::new(BTreeSet::new()),
        // acme: two busy answers, then it works; globex: busy until the run
        // is cancelled.
        outages: Mutex::new(HashMap::from([
            ("acme".to_owned(), 2),
            ("globex".to_owned(), u32::MAX),
        ])),
    });

    // Short backoff so the example's retries take milliseconds: 50 ms
    // doubling (each wait between half and all of it), three attempts.
    let dns_policy = StepPolicy::default()
        .with_timeout(StdDuration::from_secs(5))
        .with_max_attempts(3)
        .with_backoff(Duration::milliseconds(50), Duration::milliseconds(200));
    let provisioner = Provisioner::new(Arc::new(MemoryProvisioningStore::new())).with_pipeline(
        Pipeline::new("signup")
            .step(CreateTenant::new(directory.clone()))
            .step(ForTenant::new("seed_roles", roles.clone()))
            .step(CreateBillingCustomer::new(customers.clone()))
            .step_arc(dns.clone(), Some(dns_policy))
            .with_deadline(Duration::minutes(5)),
    )?;

    // 1. acme: provisioned through every step, DNS on its third attempt.
    let acme = provisioner
        .start(
            "signup",
            json!({ "slug": "acme", "name": "Acme", "owner_email": "ann@acme.test" }),
        )
        .await?;
    let acme = settle(&provisioner, acme.id).await?;
    print_run("acme", &acme);

    // 2. globex: cancelled while its DNS step waits for a retry.
    let globex = provisioner
        .start(
            "signup",
            json!({ "slug": "globex", "name": "Globex", "owner_email": "gus@globex.test" }),
        )
        .await?;
    provisioner.drain().await?;
    let waiting = provisioner.status(globex.id).await?;
    print_run("globex, DNS waiting for a retry", &waiting);
    provisioner.cancel(globex.id).await?;
    let globex = settle(&provisioner, globex.id).await?;
    print_run("globex, after cancel", &globex);

    // What the example promises, checked so that it fails loudly otherwise.
    if acme.status != RunStatus::Succeeded {
        return Err(format!("acme: {} ({:?})", acme.status, acme.last_error).into());
    }
    expect_steps(
        &acme,
        &[
            (CreateTenant::NAME, StepStatus::Succeeded),
            ("seed_roles", StepStatus::Succeeded),
            (CreateBillingCustomer::NAME, StepStatus::Succeeded),
            (Dns::NAME, StepStatus::Succeeded),
        ],
    )?;
    let acme_dns = acme.step(Dns::NAME).ok_or("acme has no dns step")?;
    if acme_dns.attempts != 3 || acme_dns.last_error.is_none() {
        return Err(format!("acme's dns step: {acme_dns:?}, expected 3 attempts").into());
    }
    if acme.state["hostname"] != "acme.app.example" {
        return Err(format!("acme's state: {:?}", acme.state).into());
    }

    if waiting.status != RunStatus::Pending
        || waiting.step(Dns::NAME).map(|s| s.status) != Some(StepStatus::Pending)
    {
        return Err(format!("globex before cancel: {waiting:?}").into());
    }
    if globex.status != RunStatus::Cancelled {
        return Err(format!("globex: {} ({:?})", globex.status, globex.last_error).into());
    }
    expect_steps(
        &globex,
        &[
            (CreateTenant::NAME, StepStatus::Cancelled),
            ("seed_roles", StepStatus::Cancelled),
            (CreateBillingCustomer::NAME, StepStatus::Cancelled),
            (Dns::NAME, StepStatus::Cancelled),
        ],
    )?;

    // The compensations undid what the cancelled run had made, and only that.
    let backend = directory.backend();
    let acme_tenant = backend
        .find_tenant_by_slug(&Slug::new("acme")?)
        .await?
        .ok_or("acme's tenant is missing")?;
    let globex_tenant = backend
        .find_tenant_by_slug(&Slug::new("globex")?)
        .await?
        .ok_or("globex's tenant is missing")?;
    if acme_tenant.status != TenantStatus::Active || globex_tenant.status != TenantStatus::Deleted {
        return Err(format!(
            "tenants: acme {:?}, globex {:?}",
            acme_tenant.status, globex_tenant.status
        )
        .into());
    }
    let seeded: Vec<_> = lock(&roles.by_tenant).keys().copied().collect();
    let billed: Vec<_> = lock(&customers.by_tenant).keys().copied().collect();
    let records: Vec<_> = lock(&dns.records).iter().cloned().collect();
    if seeded != [acme_tenant.id] || billed != [acme_tenant.id] || records != ["acme.app.example"] {
        return Err(format!(
            "left behind: roles {seeded:?}, customers {billed:?}, dns {records:?}"
        )
        .into());
    }
    println!(
        "\nacme is active at acme.app.example; globex's tenant is deleted, its roles, \
         billing customer and DNS record removed"
    );
    Ok(())
}
