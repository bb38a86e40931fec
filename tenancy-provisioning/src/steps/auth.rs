//! Steps over the app's identity service (feature `http`, where
//! `tenancy-http` gives access to it): the tenant's first API key and the
//! owner's welcome mail.

use std::sync::Arc;

use async_trait::async_trait;
use tenancy_core::{ApiKeyId, AuditContext, Directory, PageRequest, TenantId};
use tenancy_http::auth::{ApiKeySecret, Auth, ClientInfo, Error as AuthError, NewApiKey, Scope};

use super::{OWNER_ID, tenant_id};
use crate::step::{Step, StepContext, StepError, StepOutput};

fn auth_error(error: AuthError) -> StepError {
    match error {
        AuthError::RateLimited { .. } | AuthError::Overloaded { .. } => {
            StepError::transient("the identity service is busy").with_source(error)
        }
        AuthError::Store(tenancy_core::StoreError::Unavailable(_)) => {
            StepError::transient("the identity service is unavailable").with_source(error)
        }
        other => StepError::permanent("the identity service refused").with_source(other),
    }
}

/// Where the secret of a new API key goes: the only place it ever
/// exists in plain text. The host hands it to whoever asked for the tenant
/// (a one-time view in its signup flow, a sealed message), once.
#[async_trait]
pub trait KeyDelivery: Send + Sync + 'static {
    /// Delivers `secret`, the key `key_id` of `tenant_id`. An error leaves
    /// the step to run again, which revokes this key and makes a new one.
    async fn deliver(
        &self,
        tenant_id: TenantId,
        key_id: ApiKeyId,
        secret: &ApiKeySecret,
    ) -> Result<(), StepError>;
}

/// Creates the tenant's initial API key through the app's [`Auth`] and
/// hands its secret to a [`KeyDelivery`]. Only the key's id goes into the
/// run's state (`api_key_id`), never the secret.
///
/// Idempotent: the key is named after the run. A re-run (after a crash
/// between creating and recording, or a failed delivery) revokes any
/// earlier key of that name, whose secret is lost, and makes a new one, so
/// exactly one key of the run is active and its secret was delivered.
/// Compensation revokes the run's keys.
#[derive(Clone)]
pub struct CreateApiKey {
    auth: Auth,
    directory: Directory,
    scopes: Vec<Scope>,
    delivery: Arc<dyn KeyDelivery>,
}

impl std::fmt::Debug for CreateApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateApiKey")
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl CreateApiKey {
    /// The step's name.
    pub const NAME: &'static str = "create_api_key";

    /// A step making a key with `scopes` (none: the powers of the tenant's
    /// owner) and delivering its secret through `delivery`.
    pub fn new(
        auth: Auth,
        directory: Directory,
        scopes: Vec<Scope>,
        delivery: Arc<dyn KeyDelivery>,
    ) -> Self {
        Self {
            auth,
            directory,
            scopes,
            delivery,
        }
    }

    fn key_name(ctx: &StepContext) -> String {
        format!("provisioning {}", ctx.run_id)
    }

    /// Revokes the run's active keys.
    async fn revoke_ours(&self, tenant: TenantId, ctx: &StepContext) -> Result<(), StepError> {
        let scope = tenancy_core::TenantScope::assume_resolved(tenant);
        let name = Self::key_name(ctx);
        let mut page = PageRequest::default();
        loop {
            let keys = self
                .auth
                .list_api_keys(&scope, &page)
                .await
                .map_err(auth_error)?;
            for key in keys
                .items
                .iter()
                .filter(|k| k.name == name && k.revoked_at.is_none())
            {
                self.auth
                    .revoke_api_key(&scope, key.id, &AuditContext::system())
                    .await
                    .map_err(auth_error)?;
            }
            match keys.next {
                Some(cursor) => page = page.after(cursor),
                None => return Ok(()),
            }
        }
    }
}

#[async_trait]
impl Step for CreateApiKey {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let tenant = tenant_id(ctx)?;
        let scope = self
            .directory
            .scope(tenant)
            .await
            .map_err(|e| StepError::permanent("the tenant is not active").with_source(e))?;
        self.revoke_ours(tenant, ctx).await?;
        let (key, secret) = self
            .auth
            .create_api_key(
                &scope,
                NewApiKey {
                    name: Self::key_name(ctx),
                    scopes: self.scopes.clone(),
                    expires_at: None,
                },
                &AuditContext::system(),
            )
            .await
            .map_err(auth_error)?;
        self.delivery.deliver(tenant, key.id, &secret).await?;
        Ok(StepOutput::empty().with("api_key_id", key.id.to_string()))
    }

    async fn compensate(&self, ctx: &StepContext) -> Result<(), StepError> {
        match tenant_id(ctx) {
            Ok(tenant) => self.revoke_ours(tenant, ctx).await,
            Err(_) => Ok(()),
        }
    }
}

/// Mails the tenant's owner through the app's [`Auth`] and so its
/// `Mailer`: a link to set their password (a password-reset mail, the
/// way an owner created without a password gets in). At least once: a
/// re-run after a crash between sending and recording may send again,
/// though `Auth`'s cooldown on such mails holds back a second link sent
/// soon after the first. Nothing to compensate: a sent mail stays sent.
#[derive(Clone)]
pub struct WelcomeMail {
    auth: Auth,
}

impl std::fmt::Debug for WelcomeMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WelcomeMail").finish_non_exhaustive()
    }
}

impl WelcomeMail {
    /// The step's name.
    pub const NAME: &'static str = "welcome_mail";

    /// The step mailing through `auth`.
    pub fn new(auth: Auth) -> Self {
        Self { auth }
    }
}

#[async_trait]
impl Step for WelcomeMail {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        if ctx.state_str(OWNER_ID).is_none() {
            return Err(StepError::permanent(
                "no owner in the run state (run CreateTenant first)",
            ));
        }
        let email = ctx.input_str("owner_email")?;
        self.auth
            .start_password_reset(email, &ClientInfo::default())
            .await
            .map_err(auth_error)?;
        Ok(StepOutput::empty().with("welcome_mail_queued", true))
    }

    async fn compensate(&self, _ctx: &StepContext) -> Result<(), StepError> {
        Ok(())
    }
}
