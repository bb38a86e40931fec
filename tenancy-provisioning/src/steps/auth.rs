//! Steps over the app's identity service (feature `http`, where
//! `tenancy-http` gives access to it): the tenant's first API key and the
//! owner's welcome mail.

use std::sync::Arc;

use async_trait::async_trait;
use tenancy_core::{ApiKeyId, AuditContext, Directory, PageRequest, TenantId, TenantScope};
use tenancy_http::auth::{ApiKeySecret, Auth, ClientInfo, Error as AuthError, NewApiKey, Scope};

use super::{OWNER_ID, tenant_id};
use crate::step::{Step, StepContext, StepError, StepOutput};

/// The state key [`CreateApiKey`] writes the key's id to.
pub const API_KEY_ID: &str = "api_key_id";

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
/// The key is found again only by its id in the run's state
/// ([`API_KEY_ID`]), never by its name (a tenant admin may give a key of
/// their own any name). A re-run (after a retry) revokes the key recorded
/// there and makes a new one; a failed delivery revokes the key just made
/// before the step fails; compensation revokes the recorded key. So one key
/// of the run is active and its secret was delivered, except after a crash
/// between making the key and recording its id: that key stays active,
/// unknown to the run, its secret delivered or lost (the tenant's admins
/// see it, named after the run, and may revoke it).
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

    /// Revokes the key `id` of `tenant` unless it is revoked already (or
    /// gone).
    async fn revoke(&self, tenant: TenantId, id: ApiKeyId) -> Result<(), StepError> {
        let scope = TenantScope::assume_resolved(tenant);
        let mut page = PageRequest::default();
        loop {
            let keys = self
                .auth
                .list_api_keys(&scope, &page)
                .await
                .map_err(auth_error)?;
            if let Some(key) = keys.items.iter().find(|k| k.id == id) {
                if key.revoked_at.is_none() {
                    self.auth
                        .revoke_api_key(&scope, id, &AuditContext::system())
                        .await
                        .map_err(auth_error)?;
                }
                return Ok(());
            }
            match keys.next {
                Some(cursor) => page = page.after(cursor),
                None => return Ok(()),
            }
        }
    }

    /// Revokes the key recorded in the run's state, if any.
    async fn revoke_recorded(&self, tenant: TenantId, ctx: &StepContext) -> Result<(), StepError> {
        match ctx.state_str(API_KEY_ID).and_then(|s| s.parse().ok()) {
            Some(id) => self.revoke(tenant, id).await,
            None => Ok(()),
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
        self.revoke_recorded(tenant, ctx).await?;
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
        if let Err(error) = self.delivery.deliver(tenant, key.id, &secret).await {
            // Not recorded, so no later attempt could find it: revoke it now.
            if let Err(revoke) = self.revoke(tenant, key.id).await {
                tracing::warn!(%tenant, key_id = %key.id, error = %revoke.report(), "cannot revoke an undelivered provisioning key");
            }
            return Err(error);
        }
        Ok(StepOutput::empty().with(API_KEY_ID, key.id.to_string()))
    }

    async fn compensate(&self, ctx: &StepContext) -> Result<(), StepError> {
        match tenant_id(ctx) {
            Ok(tenant) => self.revoke_recorded(tenant, ctx).await,
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
