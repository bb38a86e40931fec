//! Built-in steps: the tenant and its owner, host hooks run for the new
//! tenant (roles and policies, anything else), the billing customer, on
//! Postgres a schema per tenant, and with `http` the initial API key and
//! the owner's welcome mail.
//!
//! They keep to the domain rule that tenancy crates meet only through
//! `tenancy-core`: a step that needs another domain (authorization,
//! billing) takes a small trait the host (or its wiring) implements.

#[cfg(feature = "http")]
mod auth;
#[cfg(feature = "postgres")]
mod schema;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tenancy_core::{
    AuditContext, Conflict, Directory, DirectoryError, Email, Metadata, NewTenant, NewUser, Owner,
    Slug, StoreError, Tenant, TenantId, TenantName, TenantStatus, TenantStore, UserStore,
};

#[cfg(feature = "http")]
pub use auth::{API_KEY_ID, CreateApiKey, KeyDelivery, WelcomeMail};
#[cfg(feature = "postgres")]
pub use schema::{TenantSchema, schema_name};

use crate::step::{Compensation, Step, StepContext, StepError, StepOutput};

/// The state key [`CreateTenant`] writes the tenant id to; the other
/// built-ins read it.
pub const TENANT_ID: &str = "tenant_id";
/// The state key [`CreateTenant`] writes the owner's user id to.
pub const OWNER_ID: &str = "owner_id";
/// The tenant metadata key naming the run that created the tenant, so a
/// re-run recognises its own tenant and never adopts someone else's.
pub const RUN_MARKER: &str = "provisioning_run";
/// The state key where [`CreateTenant`] notes that this run suspended its
/// tenant (the tenant's `updated_at` after the suspension, in Unix
/// nanoseconds), so a retry reactivates only a suspension of its own.
pub const SUSPENDED_BY_RUN: &str = "tenant_suspended_by_run";

/// Whether `tenant` is still in the suspension this run's compensation
/// noted: unchanged since (compared to the microsecond the stores keep).
fn suspended_by_run(ctx: &StepContext, tenant: &Tenant) -> bool {
    let Some(noted) = ctx
        .state_str(SUSPENDED_BY_RUN)
        .and_then(|s| s.parse::<i128>().ok())
    else {
        return false;
    };
    tenant.status == TenantStatus::Suspended
        && (tenant.updated_at.unix_timestamp_nanos() - noted).abs() < 1_000
}

fn store_error(error: impl Into<tenancy_core::BoxError>) -> StepError {
    StepError::transient("the directory is unavailable").with_source(error)
}

fn directory_error(error: DirectoryError) -> StepError {
    match error {
        DirectoryError::Store(StoreError::Unavailable(_)) => store_error(error),
        other => StepError::permanent("the directory refused").with_source(other),
    }
}

/// The tenant id an earlier [`CreateTenant`] put in the run's state.
pub fn tenant_id(ctx: &StepContext) -> Result<TenantId, StepError> {
    ctx.state_str(TENANT_ID)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            StepError::permanent("no tenant id in the run state (run CreateTenant first)")
        })
}

/// Creates the tenant and its owner through [`Directory::create_tenant`].
///
/// Input: `slug`, `name` and `owner_email` (strings). Output: [`TENANT_ID`]
/// and [`OWNER_ID`]. An existing account with the owner's email becomes the
/// owner; otherwise one is created.
///
/// Idempotent: the tenant is created with the run id in its metadata
/// ([`RUN_MARKER`]) in the same transaction as the owner and membership; a
/// re-run finds it by slug and returns it. A slug held by a tenant of
/// another run fails permanently.
///
/// Compensation depends on its cause: after a later step failed
/// ([`Compensation::StepFailed`]) the tenant is suspended and the run's
/// state notes it ([`SUSPENDED_BY_RUN`]); a retry of the run reactivates
/// the tenant only while it is still in that suspension. A tenant
/// suspended by anyone else, or reactivated and suspended again since (or
/// changed at all meanwhile), stays suspended and the retry fails
/// permanently; an operator who wants it to go on reactivates the tenant
/// and retries again. When the run is cancelled
/// ([`Compensation::Cancelled`]) it is soft-deleted
/// ([`Directory::delete_tenant`]). Deleted slugs stay taken, so a cancelled
/// run's slug cannot be provisioned again. An owner account created for
/// the tenant stays: accounts are global and may have joined other tenants
/// meanwhile.
#[derive(Debug, Clone)]
pub struct CreateTenant {
    directory: Directory,
}

impl CreateTenant {
    /// The step's name.
    pub const NAME: &'static str = "create_tenant";

    /// The step over `directory`.
    pub fn new(directory: Directory) -> Self {
        Self { directory }
    }

    async fn ours(&self, ctx: &StepContext) -> Result<Option<Tenant>, StepError> {
        let slug = Slug::new(ctx.input_str("slug")?)
            .map_err(|e| StepError::permanent("invalid slug").with_source(e))?;
        let Some(tenant) = self
            .directory
            .backend()
            .find_tenant_by_slug(&slug)
            .await
            .map_err(store_error)?
        else {
            return Ok(None);
        };
        let marker = ctx.run_id.to_string();
        if tenant
            .metadata
            .as_map()
            .get(RUN_MARKER)
            .and_then(Value::as_str)
            == Some(&marker)
        {
            Ok(Some(tenant))
        } else {
            Err(StepError::permanent(format!(
                "tenant slug {:?} is already taken",
                slug.as_str()
            )))
        }
    }
}

#[async_trait]
impl Step for CreateTenant {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let email = Email::new(ctx.input_str("owner_email")?)
            .map_err(|e| StepError::permanent("invalid owner email").with_source(e))?;
        let backend = self.directory.backend();
        if let Some(tenant) = self.ours(ctx).await? {
            let mut reactivated = false;
            match tenant.status {
                TenantStatus::Deleted => {
                    return Err(StepError::permanent(
                        "this run's tenant was deleted when the run was cancelled",
                    ));
                }
                // Suspended when this run's failure was compensated:
                // retried, so back in service. Any other suspension (billing,
                // abuse, …) is not the run's to lift.
                TenantStatus::Suspended if suspended_by_run(ctx, &tenant) => {
                    self.directory
                        .reactivate_tenant(tenant.id, &AuditContext::system())
                        .await
                        .map_err(directory_error)?;
                    reactivated = true;
                }
                TenantStatus::Suspended => {
                    return Err(StepError::permanent(
                        "this run's tenant was suspended outside the run; it stays suspended",
                    ));
                }
                _ => {}
            }
            let owner = backend
                .find_user_by_email(&email)
                .await
                .map_err(store_error)?
                .ok_or_else(|| StepError::permanent("the tenant's owner account is gone"))?;
            let mut output = StepOutput::empty()
                .with(TENANT_ID, tenant.id.to_string())
                .with(OWNER_ID, owner.id.to_string());
            if reactivated {
                output = output.with(SUSPENDED_BY_RUN, Value::Null);
            }
            return Ok(output);
        }
        let slug = Slug::new(ctx.input_str("slug")?)
            .map_err(|e| StepError::permanent("invalid slug").with_source(e))?;
        let name = TenantName::new(ctx.input_str("name")?)
            .map_err(|e| StepError::permanent("invalid tenant name").with_source(e))?;
        let mut new = NewTenant::new(slug, name);
        new.metadata = Metadata::new(serde_json::json!({ RUN_MARKER: ctx.run_id.to_string() }))
            .map_err(|e| StepError::permanent("invalid metadata").with_source(e))?;
        let owner = match backend
            .find_user_by_email(&email)
            .await
            .map_err(store_error)?
        {
            Some(user) => Owner::Existing(user.id),
            None => Owner::New(NewUser::new(email)),
        };
        match self
            .directory
            .create_tenant(new, owner, &AuditContext::system())
            .await
        {
            Ok(created) => Ok(StepOutput::empty()
                .with(TENANT_ID, created.tenant.id.to_string())
                .with(OWNER_ID, created.owner.id.to_string())),
            // Someone took the slug or the email at the same moment: the
            // next attempt sees who.
            Err(DirectoryError::Store(StoreError::Conflict(
                c @ (Conflict::TenantSlug | Conflict::UserEmail),
            ))) => {
                Err(StepError::transient("created concurrently")
                    .with_source(StoreError::Conflict(c)))
            }
            Err(e) => Err(directory_error(e)),
        }
    }

    async fn compensate(&self, ctx: &StepContext) -> Result<(), StepError> {
        self.compensate_with_output(ctx).await.map(|_| ())
    }

    async fn compensate_with_output(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let tenant = match self.ours(ctx).await {
            Ok(Some(tenant)) => tenant,
            // Nothing of ours to undo (not created, or the slug is someone
            // else's).
            Ok(None) => return Ok(StepOutput::empty()),
            Err(e) if !e.is_transient() => return Ok(StepOutput::empty()),
            Err(e) => return Err(e),
        };
        let context = AuditContext::system();
        match (ctx.compensation, tenant.status) {
            (_, TenantStatus::Deleted) => Ok(StepOutput::empty()),
            // Suspended already: by an earlier compensation of this run
            // (whose note stays in the state) or by someone else (then
            // there is no note, and a retry leaves it suspended).
            (Some(Compensation::StepFailed), TenantStatus::Suspended) => Ok(StepOutput::empty()),
            (Some(Compensation::StepFailed), _) => {
                let suspended = self
                    .directory
                    .suspend_tenant(tenant.id, &context)
                    .await
                    .map_err(directory_error)?;
                Ok(StepOutput::empty().with(
                    SUSPENDED_BY_RUN,
                    suspended.updated_at.unix_timestamp_nanos().to_string(),
                ))
            }
            _ => {
                self.directory
                    .delete_tenant(tenant.id, &context)
                    .await
                    .map_err(directory_error)?;
                Ok(StepOutput::empty())
            }
        }
    }
}

/// Work the host does for a new tenant, with its undo: seed roles and
/// policies through its authorization admin, register the tenant with
/// another system, and so on. Both must be idempotent (see
/// [`Step`]).
#[async_trait]
pub trait TenantHook: Send + Sync + 'static {
    /// Does the work for `tenant_id`; the output is merged into the state.
    async fn apply(&self, tenant_id: TenantId, ctx: &StepContext) -> Result<StepOutput, StepError>;

    /// Undoes it (nothing to undo is success).
    async fn undo(&self, tenant_id: TenantId, ctx: &StepContext) -> Result<(), StepError>;
}

/// A step that runs a [`TenantHook`] for the tenant [`CreateTenant`]
/// made. Seeding roles and policies is one: the host's hook calls its
/// authorization admin (`tenancy-authz`), which this crate does not depend
/// on.
#[derive(Clone)]
pub struct ForTenant {
    name: String,
    hook: Arc<dyn TenantHook>,
}

impl std::fmt::Debug for ForTenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForTenant")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ForTenant {
    /// A step named `name` running `hook`.
    pub fn new(name: impl Into<String>, hook: impl TenantHook) -> Self {
        Self {
            name: name.into(),
            hook: Arc::new(hook),
        }
    }
}

#[async_trait]
impl Step for ForTenant {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        self.hook.apply(tenant_id(ctx)?, ctx).await
    }

    async fn compensate(&self, ctx: &StepContext) -> Result<(), StepError> {
        match tenant_id(ctx) {
            Ok(id) => self.hook.undo(id, ctx).await,
            // No tenant was made, so nothing was done for it.
            Err(_) => Ok(()),
        }
    }
}

/// Creates and removes billing customers. Billing wiring implements it
/// (for example over `tenancy-billing`'s provider), so this crate does not
/// depend on billing.
#[async_trait]
pub trait BillingCustomers: Send + Sync + 'static {
    /// Creates the customer for `tenant_id` billed to `email`, or returns
    /// the one already made for it: `idempotency_key` is the same on every
    /// attempt of a run. Returns the customer's id at the provider.
    async fn ensure_customer(
        &self,
        tenant_id: TenantId,
        email: &str,
        idempotency_key: &str,
    ) -> Result<String, StepError>;

    /// Removes (or archives) the customer made for `tenant_id`, if any.
    async fn remove_customer(&self, tenant_id: TenantId) -> Result<(), StepError>;
}

/// The step creating the billing customer; leave it out of the pipeline
/// when billing is not enabled. Output: `billing_customer_id`.
#[derive(Clone)]
pub struct CreateBillingCustomer {
    customers: Arc<dyn BillingCustomers>,
}

impl std::fmt::Debug for CreateBillingCustomer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateBillingCustomer")
            .finish_non_exhaustive()
    }
}

impl CreateBillingCustomer {
    /// The step's name.
    pub const NAME: &'static str = "create_billing_customer";

    /// The step over `customers`.
    pub fn new(customers: Arc<dyn BillingCustomers>) -> Self {
        Self { customers }
    }
}

#[async_trait]
impl Step for CreateBillingCustomer {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let tenant = tenant_id(ctx)?;
        let email = ctx.input_str("owner_email")?;
        let key = format!("provisioning-{}-billing-customer", ctx.run_id);
        let customer = self.customers.ensure_customer(tenant, email, &key).await?;
        Ok(StepOutput::empty().with("billing_customer_id", customer))
    }

    async fn compensate(&self, ctx: &StepContext) -> Result<(), StepError> {
        match tenant_id(ctx) {
            Ok(id) => self.customers.remove_customer(id).await,
            Err(_) => Ok(()),
        }
    }
}
