//! [`Scim`]: the module, its settings, its tokens and the workflows behind
//! the User routes.

use std::sync::Arc;

use serde_json::json;
use tenancy_auth::SecretToken;
use tenancy_core::{
    Actor, AuditAction, AuditContext, AuditLog, DirectoryError, Email, MembershipStatus,
    MembershipStore, Metadata, NewAuditEvent, PageRequest, RoleName, RoleSet, ScimTokenId,
    StoreError, Target, TenantId, TenantScope, UserId, UserStore,
};
use tenancy_http::{Module, Route, Tenancy, async_trait};
use time::OffsetDateTime;

use crate::error::{ScimError, ScimStoreError, ScimType};
use crate::store::{ScimStore, ScimToken};

/// The prefix of every SCIM token's text.
pub const TOKEN_PREFIX: &str = "scim_";

/// The audit actions the module records (besides the directory's own,
/// whose actor is the SCIM token).
pub mod actions {
    /// A SCIM token was issued.
    pub const TOKEN_ISSUED: &str = "scim.token_issued";
    /// A SCIM token was revoked.
    pub const TOKEN_REVOKED: &str = "scim.token_revoked";
    /// A provisioned user's SCIM attributes changed.
    pub const USER_UPDATED: &str = "scim.user_updated";
    /// A provisioned user's SCIM record was deleted.
    pub const USER_DELETED: &str = "scim.user_deleted";
    /// An API key minted by a deprovisioned user was revoked.
    pub const KEYS_REVOKED: &str = "scim.api_keys_revoked";
}

/// What `active: false` does to the membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Deprovision {
    /// Suspend it: roles are kept, and `active: true` restores it.
    #[default]
    Suspend,
    /// Remove it: `active: true` adds the user back with the default roles.
    Remove,
}

/// The module's settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ScimConfig {
    /// What deactivation does in tenants that did not choose
    /// (`PUT /scim/settings`).
    pub deprovision: Deprovision,
    /// The roles of a member the identity provider creates.
    pub default_roles: RoleSet,
    /// The most resources one list answer holds (`count` is capped to it).
    pub max_results: usize,
    /// The absolute URL the routes are served at (`https://app.example/scim/v2`),
    /// for `meta.location` and `Location`. Unset, it is the app's
    /// [`HttpConfig::public_origin`](tenancy_http::HttpConfig::public_origin)
    /// followed by `/scim/v2`, or without that the origin the request was
    /// sent to (a trusted proxy's forwarded host, else `Host`, validated as
    /// `host[:port]`). Set one of the two in production: `Host` is whatever
    /// the client wrote.
    pub base_url: Option<String>,
    /// Whether a tenant may map a group to the `owner` role. Off by
    /// default: whoever administers the identity provider would become an
    /// owner of the tenant by adding themselves to the group.
    pub allow_owner_mapping: bool,
    /// The most members one group may hold (`400 invalidValue` beyond).
    pub max_group_members: usize,
}

impl Default for ScimConfig {
    fn default() -> Self {
        Self {
            deprovision: Deprovision::Suspend,
            default_roles: RoleSet::single(RoleName::MEMBER),
            max_results: 200,
            base_url: None,
            allow_owner_mapping: false,
            max_group_members: 10_000,
        }
    }
}

impl ScimConfig {
    /// Sets what deactivation does.
    pub fn with_deprovision(mut self, deprovision: Deprovision) -> Self {
        self.deprovision = deprovision;
        self
    }

    /// Sets the roles of provisioned members.
    pub fn with_default_roles(mut self, roles: RoleSet) -> Self {
        self.default_roles = roles;
        self
    }

    /// Sets the largest page, at least 1.
    pub fn with_max_results(mut self, max: usize) -> Self {
        self.max_results = max.max(1);
        self
    }

    /// Lets tenants map a group to the `owner` role (a privilege
    /// escalation path: see [`ScimConfig::allow_owner_mapping`]).
    pub fn with_owner_mapping(mut self, allow: bool) -> Self {
        self.allow_owner_mapping = allow;
        self
    }

    /// Sets the most members one group may hold, at least 1.
    pub fn with_max_group_members(mut self, max: usize) -> Self {
        self.max_group_members = max.max(1);
        self
    }

    /// Sets the public URL of the SCIM routes.
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into().trim_end_matches('/').to_owned());
        self
    }
}

/// Inbound SCIM 2.0 provisioning (RFC 7643/7644) as a
/// [`tenancy_http::Module`]: add it to the builder and the framework
/// integrations mount `/scim/v2/...` and `/scim/tokens`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use tenancy_http::{Tenancy, auth::AuthConfig, authz::Catalog};
/// use tenancy_scim::Scim;
///
/// let tenancy = Tenancy::builder(Catalog::new(["projects:read"])?, AuthConfig::new("https://app.example", "app"))
///     .module(Scim::memory())
///     .build()
///     .await?;
/// assert!(tenancy.routes().iter().any(|r| r.path == "/scim/v2/Users"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct Scim {
    pub(crate) store: Arc<dyn ScimStore>,
    pub(crate) config: ScimConfig,
    pub(crate) role_locks: Arc<crate::groups::RoleLocks>,
    #[cfg(feature = "postgres")]
    migrate: bool,
}

impl std::fmt::Debug for Scim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scim")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A token just issued: its record, and its secret, shown once.
#[derive(Debug)]
pub struct IssuedToken {
    /// The stored token.
    pub token: ScimToken,
    /// The bearer secret to give the identity provider.
    pub secret: SecretToken,
}

/// A request authenticated by a SCIM token.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) scope: TenantScope,
    pub(crate) audit: AuditContext,
}

impl Caller {
    pub(crate) fn tenant(&self) -> TenantId {
        self.scope.tenant_id()
    }
}

pub(crate) fn now() -> OffsetDateTime {
    tenancy_core::truncate_to_micros(OffsetDateTime::now_utc())
}

pub(crate) fn store_error(error: &ScimStoreError) -> ScimError {
    match error {
        ScimStoreError::NotFound | ScimStoreError::TenantNotFound => ScimError::not_found(),
        ScimStoreError::Conflict => {
            ScimError::uniqueness("userName is already taken in this tenant")
        }
        ScimStoreError::VersionMismatch => ScimError::precondition_failed(),
        other => ScimError::unavailable(other),
    }
}

/// A directory or identity failure as a SCIM error.
pub(crate) fn auth_error(error: &tenancy_auth::Error) -> ScimError {
    match error {
        tenancy_auth::Error::Directory(directory) => directory_error(directory),
        other => ScimError::unavailable(other),
    }
}

/// Owners are outside the directory's reach: a SCIM token (which an owner
/// issued, and which outlives its issuer's membership) never adopts,
/// suspends or removes an owner's membership; owners change owners
/// through the member routes, which check the caller's rank.
pub(crate) async fn refuse_owner(
    tenancy: &Tenancy,
    caller: &Caller,
    user: UserId,
) -> Result<(), ScimError> {
    let membership = tenancy
        .directory()
        .backend()
        .find_membership(caller.tenant(), user)
        .await
        .map_err(|e| ScimError::unavailable(&e))?;
    if membership.is_some_and(|m| m.roles.contains(&tenancy_core::RoleName::OWNER)) {
        return Err(ScimError::bad_request(
            ScimType::Mutability,
            "an owner's membership is not managed by the directory",
        ));
    }
    Ok(())
}

pub(crate) fn directory_error(error: &DirectoryError) -> ScimError {
    match error {
        DirectoryError::LastOwner => ScimError::bad_request(
            ScimType::Mutability,
            "the tenant's last active owner cannot be deactivated or removed by the directory",
        ),
        DirectoryError::UserDisabled => ScimError::bad_request(
            ScimType::InvalidValue,
            "this account is disabled by the service and cannot be provisioned",
        ),
        DirectoryError::SeatLimitReached { limit } => ScimError::new(
            http::StatusCode::FORBIDDEN,
            format!("the tenant's plan allows {limit} seats, all taken"),
        ),
        DirectoryError::TenantNotActive { .. } => {
            ScimError::new(http::StatusCode::FORBIDDEN, "the tenant is not active")
        }
        DirectoryError::Store(StoreError::NotFound(_)) => ScimError::not_found(),
        DirectoryError::Store(StoreError::Conflict(_)) => {
            ScimError::new(http::StatusCode::CONFLICT, "a concurrent change won; retry")
        }
        other => ScimError::unavailable(other),
    }
}

impl Scim {
    /// The module over `store`, with default settings.
    pub fn new(store: Arc<dyn ScimStore>) -> Self {
        Self {
            store,
            config: ScimConfig::default(),
            role_locks: Arc::new(crate::groups::RoleLocks::new()),
            #[cfg(feature = "postgres")]
            migrate: false,
        }
    }

    /// The module on in-memory stores.
    #[cfg(feature = "memory")]
    pub fn memory() -> Self {
        Self::new(Arc::new(crate::store::MemoryScimStore::new()))
    }

    /// The module on Postgres: its tables are migrated with the others'
    /// when the builder migrates.
    #[cfg(feature = "postgres")]
    pub fn postgres(pool: tenancy_core::postgres::sqlx::PgPool) -> Self {
        let mut scim = Self::new(Arc::new(crate::store::postgres::PgScimStore::new(pool)));
        scim.migrate = true;
        scim
    }

    /// Replaces the settings.
    pub fn with_config(mut self, config: ScimConfig) -> Self {
        self.config = config;
        self
    }

    /// The settings.
    pub fn config(&self) -> &ScimConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ScimStore> {
        &self.store
    }

    /// Issues a token for the scope's tenant, audited as
    /// `scim.token_issued`. The secret is shown once: only its hash is kept.
    pub async fn issue_token(
        &self,
        tenancy: &Tenancy,
        scope: &TenantScope,
        name: &str,
        context: &AuditContext,
    ) -> Result<IssuedToken, ScimError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(ScimError::bad_request(
                ScimType::InvalidValue,
                "name must be 1 to 100 characters",
            ));
        }
        let secret = SecretToken::generate(TOKEN_PREFIX);
        let token = ScimToken {
            id: ScimTokenId::new(),
            tenant_id: scope.tenant_id(),
            name: name.to_owned(),
            secret_hash: secret.hash(),
            created_by: context.actor,
            created_at: now(),
            last_used_at: None,
            revoked_at: None,
        };
        self.store
            .insert_token(&token)
            .await
            .map_err(|e| store_error(&e))?;
        audit(
            tenancy,
            scope.tenant_id(),
            context,
            actions::TOKEN_ISSUED,
            ("scim_token", &token.id),
            json!({ "name": token.name }),
        )
        .await?;
        Ok(IssuedToken { token, secret })
    }

    /// Revokes a token of the scope's tenant, audited as `scim.token_revoked`.
    pub async fn revoke_token(
        &self,
        tenancy: &Tenancy,
        scope: &TenantScope,
        id: ScimTokenId,
        context: &AuditContext,
    ) -> Result<ScimToken, ScimError> {
        let token = self
            .store
            .revoke_token(scope.tenant_id(), id, now())
            .await
            .map_err(|e| store_error(&e))?;
        audit(
            tenancy,
            scope.tenant_id(),
            context,
            actions::TOKEN_REVOKED,
            ("scim_token", &token.id),
            json!({ "name": token.name }),
        )
        .await?;
        Ok(token)
    }

    /// The caller a bearer credential names: a live SCIM token of an
    /// active tenant. The secret's hash is looked up, then compared again
    /// in constant time.
    pub(crate) async fn authenticate(
        &self,
        tenancy: &Tenancy,
        authorization: Option<&str>,
        client: &tenancy_auth::ClientInfo,
    ) -> Result<Caller, ScimError> {
        let text = authorization
            .and_then(|value| {
                let (scheme, rest) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .ok_or_else(ScimError::unauthorized)?;
        let secret = SecretToken::parse(TOKEN_PREFIX, text).ok_or_else(ScimError::unauthorized)?;
        let hash = secret.hash();
        let token = self
            .store
            .find_token(&hash)
            .await
            .map_err(|e| store_error(&e))?
            .filter(|token| token.secret_hash == hash && token.revoked_at.is_none())
            .ok_or_else(ScimError::unauthorized)?;
        let scope = tenancy
            .directory()
            .scope(token.tenant_id)
            .await
            .map_err(|e| directory_error(&e))?;
        let at = now();
        if token
            .last_used_at
            .is_none_or(|last| at - last >= time::Duration::MINUTE)
        {
            self.store
                .touch_token(token.id, at)
                .await
                .map_err(|e| store_error(&e))?;
        }
        let mut audit = AuditContext::new(Actor::ScimToken(token.id));
        if let Some(ip) = client.ip {
            audit = audit.with_ip(ip);
        }
        if let Some(agent) = &client.user_agent {
            audit = audit.with_user_agent(agent);
        }
        Ok(Caller { scope, audit })
    }

    /// Ends the user's access to the caller's tenant: the membership
    /// suspended or removed (which ends their sessions and refresh
    /// families there), and the API keys they minted revoked.
    pub(crate) async fn deprovision(
        &self,
        tenancy: &Tenancy,
        caller: &Caller,
        user: UserId,
        remove: bool,
    ) -> Result<(), ScimError> {
        refuse_owner(tenancy, caller, user).await?;
        let auth = tenancy.auth();
        let ended =
            if remove || self.deprovision_mode(caller.tenant()).await? == Deprovision::Remove {
                auth.remove_member(&caller.scope, user, &caller.audit).await
            } else {
                auth.suspend_member(&caller.scope, user, &caller.audit)
                    .await
            };
        match ended {
            Ok(_) => {}
            // Already gone: nothing left to end.
            Err(tenancy_auth::Error::Directory(DirectoryError::Store(StoreError::NotFound(_)))) => {
            }
            Err(error) => return Err(auth_error(&error)),
        }
        tenancy.forget_member(caller.tenant(), user);
        self.revoke_keys_of(tenancy, caller, user).await
    }

    async fn revoke_keys_of(
        &self,
        tenancy: &Tenancy,
        caller: &Caller,
        user: UserId,
    ) -> Result<(), ScimError> {
        let auth = tenancy.auth();
        let mut page = PageRequest::default();
        let mut revoked = Vec::new();
        loop {
            let keys = auth
                .list_api_keys(&caller.scope, &page)
                .await
                .map_err(|e| auth_error(&e))?;
            for key in &keys.items {
                if key.created_by == Actor::User(user) && key.revoked_at.is_none() {
                    auth.revoke_api_key(&caller.scope, key.id, &caller.audit)
                        .await
                        .map_err(|e| auth_error(&e))?;
                    revoked.push(key.id);
                }
            }
            match keys.next {
                Some(next) => page.after = Some(next),
                None => break,
            }
        }
        if !revoked.is_empty() {
            audit(
                tenancy,
                caller.tenant(),
                &caller.audit,
                actions::KEYS_REVOKED,
                ("user", &user),
                json!({ "api_keys": revoked }),
            )
            .await?;
        }
        Ok(())
    }

    /// Restores the user's membership: reactivated if suspended, added
    /// again (the roles of their mapped groups, else the default roles) if
    /// removed.
    pub(crate) async fn reprovision(
        &self,
        tenancy: &Tenancy,
        caller: &Caller,
        user: UserId,
    ) -> Result<(), ScimError> {
        let directory = tenancy.directory();
        let membership = directory
            .backend()
            .find_membership(caller.tenant(), user)
            .await
            .map_err(|e| ScimError::unavailable(&e))?;
        match membership {
            Some(m) if m.status == MembershipStatus::Active => {}
            Some(_) => {
                directory
                    .reactivate_member(&caller.scope, user, &caller.audit)
                    .await
                    .map_err(|e| directory_error(&e))?;
            }
            None => {
                let account = directory
                    .backend()
                    .get_user(user)
                    .await
                    .map_err(|e| ScimError::unavailable(&e))?;
                directory
                    .provision_member(
                        &caller.scope,
                        account.email,
                        None,
                        self.config.default_roles.clone(),
                        &caller.audit,
                    )
                    .await
                    .map_err(|e| directory_error(&e))?;
                // A new membership: the mapped groups' roles again.
                self.restore_group_roles(tenancy, caller, user).await?;
            }
        }
        tenancy.forget_member(caller.tenant(), user);
        Ok(())
    }

    /// Links `email`'s account to the tenant: a new membership, or the
    /// existing one when the user already belongs (joined by invitation).
    pub(crate) async fn link(
        &self,
        tenancy: &Tenancy,
        caller: &Caller,
        email: Email,
        display_name: Option<tenancy_core::DisplayName>,
    ) -> Result<(UserId, bool), ScimError> {
        let directory = tenancy.directory();
        match directory
            .provision_member(
                &caller.scope,
                email.clone(),
                display_name,
                self.config.default_roles.clone(),
                &caller.audit,
            )
            .await
        {
            Ok(provisioned) => {
                tenancy.forget_member(caller.tenant(), provisioned.user.id);
                Ok((provisioned.user.id, true))
            }
            Err(DirectoryError::AlreadyMember) => {
                let user = directory
                    .backend()
                    .find_user_by_email(&email)
                    .await
                    .map_err(|e| ScimError::unavailable(&e))?
                    .ok_or_else(|| {
                        ScimError::new(http::StatusCode::CONFLICT, "a concurrent change won; retry")
                    })?;
                refuse_owner(tenancy, caller, user.id).await?;
                Ok((user.id, false))
            }
            Err(error) => Err(directory_error(&error)),
        }
    }
}

/// Appends an audit event for a change the directory does not record.
pub(crate) async fn audit(
    tenancy: &Tenancy,
    tenant: TenantId,
    context: &AuditContext,
    action: &str,
    target: (&str, &(dyn std::fmt::Display + Sync)),
    metadata: serde_json::Value,
) -> Result<(), ScimError> {
    let event = (|| {
        Ok::<_, tenancy_core::ValidationError>(NewAuditEvent::new(
            context,
            AuditAction::new(action)?,
            Target::new(target.0, target.1)?,
            Metadata::new(metadata)?,
            now(),
        ))
    })()
    .map_err(|e| ScimError::unavailable(&e))?;
    tenancy
        .directory()
        .backend()
        .append_audit(tenant, event)
        .await
        .map_err(|e| ScimError::unavailable(&e))?;
    Ok(())
}

#[async_trait]
impl Module for Scim {
    fn name(&self) -> &'static str {
        "scim"
    }

    fn routes(&self) -> Vec<Route> {
        crate::routes::routes()
    }

    #[cfg(feature = "postgres")]
    fn migrations(&self) -> Vec<tenancy_core::postgres::sqlx::migrate::Migrator> {
        if self.migrate {
            vec![crate::store::postgres::migrator()]
        } else {
            Vec::new()
        }
    }
}
