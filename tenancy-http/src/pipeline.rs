//! The request pipeline: authenticate → resolve the tenant → authorize.
//! Each step is a plain function over `http` types; the framework crates
//! only adapt types around them.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, Method, StatusCode, Uri, header};
use tenancy_auth::{Credentials, Principal, Subject};
use tenancy_authz::{Attributes, AuthzRequest, Explanation, PermissionPattern, Resource};
use tenancy_core::{
    Actor, AuditContext, CacheConfig, Membership, MembershipStatus, RoleName, RoleSet, Slug,
    StoreError, TenantId, TenantScope, TenantStatus, TenantStore, UserId,
};

use crate::config::TenantSource;
use crate::errors;
use crate::problem::Problem;
use crate::tenancy::Tenancy;

/// What the pipeline reads of a request, borrowed: no body, no copies.
/// `Debug` redacts credentials.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The peer's address.
    pub peer: Option<IpAddr>,
    /// Whether the connection to the app is TLS, when the integration can
    /// tell (actix can; axum only for HTTP/2 `https` URIs).
    pub tls: bool,
}

impl std::fmt::Debug for RequestHead<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestHead")
            .field("method", self.method)
            .field("uri", self.uri)
            .field("headers", &crate::request::RedactedHeaders(self.headers))
            .field("peer", &self.peer)
            .field("tls", &self.tls)
            .finish()
    }
}

impl<'a> RequestHead<'a> {
    /// A request head received from `peer` over a connection that is not
    /// known to be TLS; see [`Self::with_tls`].
    pub fn new(
        method: &'a Method,
        uri: &'a Uri,
        headers: &'a HeaderMap,
        peer: Option<IpAddr>,
    ) -> Self {
        Self {
            method,
            uri,
            headers,
            peer,
            tls: uri.scheme() == Some(&http::uri::Scheme::HTTPS),
        }
    }

    /// Marks the connection as TLS (or not).
    pub fn with_tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// A cookie's value.
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        crate::request::cookie(self.headers, name)
    }
}

/// An authenticated request acting in a resolved, active tenant: what
/// handlers receive. Cheap to clone.
#[derive(Clone)]
pub struct RequestContext {
    tenancy: Tenancy,
    principal: Arc<Principal>,
    scope: TenantScope,
    authz: Arc<tenancy_authz::Principal>,
    ip: Option<IpAddr>,
    user_agent: Option<http::HeaderValue>,
}

impl std::fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestContext")
            .field("principal", &self.principal)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl RequestContext {
    /// Who is calling.
    pub fn principal(&self) -> &Arc<Principal> {
        &self.principal
    }

    /// The tenant the request acts in.
    pub fn scope(&self) -> &TenantScope {
        &self.scope
    }

    /// The tenant's id.
    pub fn tenant_id(&self) -> TenantId {
        self.scope.tenant_id()
    }

    /// The calling user, if a user is calling.
    pub fn user_id(&self) -> Option<UserId> {
        self.principal.user_id()
    }

    /// The client's address (through the trusted proxies), if known: what
    /// per-address rate limits key on.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.ip
    }

    /// The caller as the authorization engine sees it.
    pub fn authz_principal(&self) -> &tenancy_authz::Principal {
        &self.authz
    }

    /// The audit context of this request: actor, address, user agent.
    /// Built on demand: most requests never write an audit event.
    pub fn audit(&self) -> AuditContext {
        let mut context = AuditContext::new(self.principal.actor());
        context.ip = self.ip;
        if let Some(agent) = self.user_agent.as_ref().and_then(|v| v.to_str().ok()) {
            context = context.with_user_agent(agent);
        }
        context
    }

    /// The services.
    pub fn tenancy(&self) -> &Tenancy {
        &self.tenancy
    }

    /// Requires `permission` on the tenant's resources of its type (the
    /// part before `:`): `403` naming it otherwise.
    pub async fn require(&self, permission: &str) -> Result<(), Problem> {
        let resource_type = permission.split(':').next().unwrap_or(permission);
        let resource = Resource::new(resource_type).in_tenant(self.tenant_id());
        self.authorize(permission, &resource, None).await
    }

    /// Requires `action` on `resource` (with optional request attributes
    /// as `context.*`). A resource of another tenant answers `404`, as if
    /// it did not exist; a refusal answers `403`.
    pub async fn authorize(
        &self,
        action: &str,
        resource: &Resource,
        context: Option<&Attributes>,
    ) -> Result<(), Problem> {
        if resource
            .tenant_id()
            .is_some_and(|tenant| tenant != self.tenant_id())
        {
            return Err(Problem::not_found());
        }
        let authorizer = self
            .tenancy
            .authz()
            .authorizer(self.tenant_id())
            .await
            .map_err(|e| Problem::unavailable(&e))?;
        let mut request = AuthzRequest::new(&self.authz, action, resource);
        if let Some(context) = context {
            request = request.with_context(context);
        }
        let allowed = authorizer.check(&request).allowed();
        crate::trace::record("permission", &action);
        crate::trace::record("decision", &if allowed { "allow" } else { "deny" });
        if allowed {
            Ok(())
        } else {
            Err(Problem::forbidden(format!("`{action}` is not allowed"))
                .with_field("permission", action.to_owned()))
        }
    }

    /// Why `action` on `resource` is or is not allowed for this caller.
    pub async fn explain(
        &self,
        action: &str,
        resource: &Resource,
        context: Option<&Attributes>,
    ) -> Result<Explanation, Problem> {
        explain_for(&self.tenancy, &self.authz, action, resource, context).await
    }
}

/// The authorization principal of each member, kept beside the membership
/// it was built from. An entry serves only while the directory cache still
/// holds that very membership (the same `Arc`): once the membership is
/// forgotten (a change through this process, a directory notice, `forget_*`)
/// or expires, the next request reads it again and builds a new principal,
/// so a demoted or removed member loses the old roles exactly when the
/// directory cache lets them go, as before.
pub(crate) struct PrincipalCache {
    entries: Option<quick_cache::sync::Cache<(TenantId, UserId), MemberPrincipal>>,
}

/// A principal and the membership it was built from.
#[derive(Clone)]
struct MemberPrincipal {
    membership: Arc<Membership>,
    principal: Arc<tenancy_authz::Principal>,
}

impl PrincipalCache {
    /// As many entries as the directory cache keeps memberships; none if it
    /// caches nothing (each read is then a new membership).
    pub(crate) fn new(config: CacheConfig) -> Self {
        Self {
            entries: (!config.ttl.is_zero() && config.memberships > 0)
                .then(|| quick_cache::sync::Cache::new(config.memberships)),
        }
    }

    /// The principal of the active `membership`.
    fn principal(&self, membership: &Arc<Membership>) -> Arc<tenancy_authz::Principal> {
        let key = (membership.tenant_id, membership.user_id);
        if let Some(entries) = &self.entries
            && let Some(hit) = entries.get(&key)
            && Arc::ptr_eq(&hit.membership, membership)
        {
            return hit.principal;
        }
        let principal = Arc::new(tenancy_authz::Principal::user(
            membership.user_id,
            membership.tenant_id,
            membership.roles.clone(),
        ));
        if let Some(entries) = &self.entries {
            entries.insert(
                key,
                MemberPrincipal {
                    membership: membership.clone(),
                    principal: principal.clone(),
                },
            );
        }
        principal
    }

    fn forget(&self, tenant: TenantId, user: UserId) {
        if let Some(entries) = &self.entries {
            entries.remove(&(tenant, user));
        }
    }

    fn clear(&self) {
        if let Some(entries) = &self.entries {
            entries.clear();
        }
    }
}

pub(crate) async fn explain_for(
    tenancy: &Tenancy,
    principal: &tenancy_authz::Principal,
    action: &str,
    resource: &Resource,
    context: Option<&Attributes>,
) -> Result<Explanation, Problem> {
    let authorizer = tenancy
        .authz()
        .authorizer(principal.tenant_id())
        .await
        .map_err(|e| Problem::unavailable(&e))?;
    let mut request = AuthzRequest::new(principal, action, resource);
    if let Some(context) = context {
        request = request.with_context(context);
    }
    Ok(authorizer.explain(&request))
}

impl Tenancy {
    /// Runs the pipeline on a request: authenticates the caller (bearer
    /// token, API key, or access-token cookie with a CSRF check on
    /// state-changing methods), resolves the tenant (see
    /// [`crate::HttpConfig::tenant_source`]) and checks it is the caller's
    /// and active. A tenant other than the caller's answers `404`.
    ///
    /// With [`TenantSource::PathSegment`], the segment is counted in the
    /// full request path (axum: the `OriginalUri`, before any `nest`).
    pub async fn authenticate(&self, head: RequestHead<'_>) -> Result<RequestContext, Problem> {
        self.authenticate_with(head, true).await
    }

    /// [`Tenancy::authenticate`], with `path_tenant` false for the SDK's own
    /// routes: their paths carry no tenant segment, so under
    /// [`TenantSource::PathSegment`] the tenant comes from the credentials.
    pub(crate) async fn authenticate_with(
        &self,
        head: RequestHead<'_>,
        path_tenant: bool,
    ) -> Result<RequestContext, Problem> {
        let config = self.config();
        let authorization = head.headers.get(header::AUTHORIZATION).map(|v| v.to_str());
        let authorization = match authorization {
            Some(Ok(value)) => Some(value),
            Some(Err(_)) => {
                return Err(errors::unauthorized(
                    &tenancy_auth::AuthError::MalformedHeader,
                    &config.realm,
                ));
            }
            None => None,
        };
        let cookie = if authorization.is_none() {
            head.cookie(&config.cookies.access_name)
        } else {
            None
        };
        if cookie.is_some() {
            crate::request::check_origin(head, config)?;
        }
        let principal = self
            .auth()
            .authenticator()
            .authenticate(Credentials {
                authorization,
                cookie,
                tenant: None,
            })
            .await
            .map_err(|e| errors::unauthorized(&e, &config.realm))?;
        crate::trace::record("tenant", &tracing::field::display(principal.tenant_id));
        crate::trace::record("principal", &tracing::field::debug(&principal.subject));
        let requested = self.requested_tenant(&head, path_tenant).await?;
        let tenant_id = principal.tenant_id;
        if requested.is_some_and(|requested| requested != tenant_id) {
            return Err(Problem::not_found().with_detail("no such tenant for these credentials"));
        }
        // One clock read for the cached tenant and membership.
        let now = Instant::now();
        let status = self.tenant_status(tenant_id, now).await?;
        if status != TenantStatus::Active {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "tenant-inactive",
                "Tenant not active",
            )
            .with_detail(format!("the tenant is {status}")));
        }
        let authz = self.authz_principal(&principal, now).await?;
        let context = RequestContext {
            tenancy: self.clone(),
            scope: TenantScope::assume_resolved(tenant_id),
            principal,
            authz,
            ip: crate::request::client_ip(head.headers, head.peer, config),
            user_agent: head.headers.get(header::USER_AGENT).cloned(),
        };
        self.module_steps(&context).await?;
        Ok(context)
    }

    async fn requested_tenant(
        &self,
        head: &RequestHead<'_>,
        path_tenant: bool,
    ) -> Result<Option<TenantId>, Problem> {
        match &self.config().tenant_source {
            TenantSource::Token => Ok(None),
            TenantSource::PathSegment(_) if !path_tenant => Ok(None),
            TenantSource::Header(name) => match head.headers.get(name) {
                None => Ok(None),
                Some(value) => value
                    .to_str()
                    .ok()
                    .and_then(|text| text.trim().parse().ok())
                    .map(Some)
                    .ok_or_else(|| Problem::bad_request(format!("{name} must be a tenant id"))),
            },
            TenantSource::Subdomain { base } => {
                let host = head
                    .headers
                    .get(header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .map(|host| host.split(':').next().unwrap_or(host).to_ascii_lowercase());
                let label = host.as_deref().and_then(|host| {
                    let split = host.len().checked_sub(base.len())?;
                    let (rest, domain) = (host.get(..split)?, host.get(split..)?);
                    domain
                        .eq_ignore_ascii_case(base)
                        .then_some(rest)
                        .and_then(|rest| rest.strip_suffix('.'))
                        .filter(|label| !label.is_empty() && !label.contains('.'))
                        .map(str::to_owned)
                });
                match label {
                    Some(label) => self.tenant_by_slug(&label).await.map(Some),
                    None => Ok(None),
                }
            }
            TenantSource::PathSegment(index) => {
                let segment = head
                    .uri
                    .path()
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .nth(*index);
                match segment {
                    None => Ok(None),
                    Some(segment) => match segment.parse::<TenantId>() {
                        Ok(id) => Ok(Some(id)),
                        Err(_) => self.tenant_by_slug(segment).await.map(Some),
                    },
                }
            }
        }
    }

    async fn tenant_by_slug(&self, text: &str) -> Result<TenantId, Problem> {
        let slug = Slug::new(text).map_err(|_| Problem::not_found())?;
        TenantStore::find_tenant_by_slug(&**self.directory_cache(), &slug)
            .await
            .map_err(|e| errors::store(&e))?
            .map(|tenant| tenant.id)
            .ok_or_else(Problem::not_found)
    }

    async fn tenant_status(&self, tenant: TenantId, now: Instant) -> Result<TenantStatus, Problem> {
        match self.directory_cache().tenant_at(tenant, now).await {
            Ok(found) => Ok(found.status),
            Err(StoreError::NotFound(_)) => Err(Problem::not_found()),
            Err(other) => Err(errors::store(&other)),
        }
    }

    /// Forgets what the pipeline cached about `tenant` (its status, the
    /// slugs that led to it), after a change made through this process.
    pub fn forget_tenant(&self, tenant: TenantId) {
        self.directory_cache().forget_tenant(tenant);
    }

    /// Forgets what the pipeline cached about `user`'s membership of
    /// `tenant` (roles, status), after a change made through this process.
    /// The SDK's member routes call it; call it after changing memberships
    /// through the `Directory` yourself.
    pub fn forget_member(&self, tenant: TenantId, user: UserId) {
        self.directory_cache().forget_member(tenant, user);
        self.principals().forget(tenant, user);
    }

    /// Forgets every cached tenant status, slug and membership: for hosts
    /// that assemble a [`Tenancy`] over stores of their own and relay
    /// change notices themselves, when notices may have been missed.
    pub fn forget_all(&self) {
        self.directory_cache().forget_all();
        self.principals().clear();
    }

    /// The caller as the authorization engine sees it, with the roles of
    /// the membership as it is now (cached for
    /// [`crate::HttpConfig::tenant_status_ttl`]), not as the token minted
    /// them: a demoted member loses the old roles without waiting for the
    /// token to expire. A user whose membership is no longer active answers
    /// `403`. An API key carries the current roles of the member who
    /// created it (a key created by the host itself, as `Actor::System`,
    /// carries `owner`); if that member has left, the key no longer
    /// authenticates.
    async fn authz_principal(
        &self,
        principal: &Principal,
        now: Instant,
    ) -> Result<Arc<tenancy_authz::Principal>, Problem> {
        let tenant = principal.tenant_id;
        let invalid = || {
            errors::unauthorized(
                &tenancy_auth::AuthError::InvalidToken(tenancy_auth::TokenRejection::InvalidClaims),
                &self.config().realm,
            )
        };
        match principal.subject {
            Subject::User(user) => {
                let membership = self.active_membership(tenant, user, now).await?;
                let membership = membership.ok_or_else(|| {
                    Problem::new(
                        StatusCode::FORBIDDEN,
                        "membership-inactive",
                        "Membership not active",
                    )
                    .with_detail("you are no longer an active member of this tenant")
                })?;
                let member = self.principals().principal(&membership);
                if principal.oauth.is_none() {
                    return Ok(member);
                }
                // An OAuth client's token: the member's roles capped by the
                // granted API scopes (none for OIDC-only scopes).
                let scopes = principal
                    .scopes
                    .iter()
                    .filter_map(|scope| PermissionPattern::new(scope.as_str()).ok());
                Ok(Arc::new((*member).clone().with_scopes(scopes)))
            }
            Subject::OAuthClient(client) => {
                let roles = match principal.minted_by {
                    Some(Actor::User(user)) => self
                        .active_membership(tenant, user, now)
                        .await?
                        .map(|m| m.roles.clone())
                        .ok_or_else(invalid)?,
                    Some(Actor::System) => RoleSet::single(RoleName::OWNER),
                    _ => return Err(invalid()),
                };
                let scopes = principal
                    .scopes
                    .iter()
                    .filter_map(|scope| PermissionPattern::new(scope.as_str()).ok());
                Ok(Arc::new(
                    tenancy_authz::Principal::new(
                        tenancy_authz::PrincipalKind::Service,
                        client.to_string(),
                        tenant,
                        roles,
                    )
                    .with_scopes(scopes),
                ))
            }
            Subject::ApiKey(key) => {
                let roles = match principal.minted_by {
                    Some(Actor::User(user)) => self
                        .active_membership(tenant, user, now)
                        .await?
                        .map(|m| m.roles.clone())
                        .ok_or_else(invalid)?,
                    Some(Actor::System) => RoleSet::single(RoleName::OWNER),
                    // Made by another key, or by no one known: no powers.
                    _ => return Err(invalid()),
                };
                let scopes = principal
                    .scopes
                    .iter()
                    .filter_map(|scope| PermissionPattern::new(scope.as_str()).ok());
                Ok(Arc::new(tenancy_authz::Principal::api_key(
                    key, tenant, roles, scopes,
                )))
            }
            // A kind of caller this pipeline does not know has no powers.
            _ => Err(invalid()),
        }
    }

    async fn active_membership(
        &self,
        tenant: TenantId,
        user: UserId,
        now: Instant,
    ) -> Result<Option<Arc<Membership>>, Problem> {
        Ok(self
            .directory_cache()
            .membership_at(tenant, user, now)
            .await
            .map_err(|e| errors::store(&e))?
            .filter(|m| m.status == MembershipStatus::Active))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HttpConfig;
    use tenancy_auth::{Argon2Config, AuthConfig, ClientInfo, Password, Registration};
    use tenancy_authz::Catalog;
    use tenancy_core::{Email, NewTenant, NewUser, TenantName};

    async fn tenancy(source: TenantSource) -> Tenancy {
        let mut auth = AuthConfig::new("https://pipeline.test", "pipeline");
        auth.argon2 = Argon2Config::new(1024, 1, 1);
        let http = HttpConfig {
            tenant_source: source,
            ..HttpConfig::default()
        };
        Tenancy::in_memory(Catalog::new(["projects:read"]).unwrap(), auth, http)
            .await
            .unwrap()
    }

    /// Registers `slug` with its owner; the owner's bearer header and the tenant.
    async fn register(tenancy: &Tenancy, slug: &str) -> (String, TenantId) {
        let done = tenancy
            .auth()
            .register(
                Registration {
                    user: NewUser::new(Email::new(&format!("owner@{slug}.example")).unwrap()),
                    password: Password::new("correct horse battery staple"),
                    tenant: NewTenant::new(
                        Slug::new(slug).unwrap(),
                        TenantName::new(slug).unwrap(),
                    ),
                },
                &ClientInfo::default(),
            )
            .await
            .unwrap();
        (
            format!("Bearer {}", done.access_token.token),
            done.membership.tenant_id,
        )
    }

    async fn run(
        tenancy: &Tenancy,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> Result<TenantId, StatusCode> {
        let uri: Uri = uri.parse().unwrap();
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let head = RequestHead::new(&Method::GET, &uri, &map, None);
        tenancy
            .authenticate(head)
            .await
            .map(|context| context.tenant_id())
            .map_err(|problem| problem.status())
    }

    #[tokio::test]
    async fn tenant_from_the_token() {
        let tenancy = tenancy(TenantSource::Token).await;
        let (token, tenant) = register(&tenancy, "acme").await;
        assert_eq!(
            run(&tenancy, "/x", &[("authorization", &token)]).await,
            Ok(tenant)
        );
        // Headers naming a tenant are ignored under this source.
        let (_, other) = register(&tenancy, "bravo").await;
        let header = other.to_string();
        assert_eq!(
            run(
                &tenancy,
                "/x",
                &[("authorization", &token), ("x-tenant-id", &header)]
            )
            .await,
            Ok(tenant)
        );
        assert_eq!(
            run(&tenancy, "/x", &[]).await,
            Err(StatusCode::UNAUTHORIZED)
        );
    }

    #[tokio::test]
    async fn tenant_from_a_header() {
        let tenancy = tenancy(TenantSource::Header(http::HeaderName::from_static(
            "x-tenant-id",
        )))
        .await;
        let (token, tenant) = register(&tenancy, "acme").await;
        let (_, other) = register(&tenancy, "bravo").await;
        let auth = ("authorization", token.as_str());
        let own = tenant.to_string();
        let theirs = other.to_string();
        assert_eq!(
            run(&tenancy, "/x", &[auth, ("x-tenant-id", &own)]).await,
            Ok(tenant)
        );
        assert_eq!(run(&tenancy, "/x", &[auth]).await, Ok(tenant));
        assert_eq!(
            run(&tenancy, "/x", &[auth, ("x-tenant-id", &theirs)]).await,
            Err(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            run(&tenancy, "/x", &[auth, ("x-tenant-id", "acme")]).await,
            Err(StatusCode::BAD_REQUEST)
        );
    }

    #[tokio::test]
    async fn tenant_from_the_subdomain() {
        let tenancy = tenancy(TenantSource::Subdomain {
            base: "App.Example".into(),
        })
        .await;
        let (token, tenant) = register(&tenancy, "acme").await;
        register(&tenancy, "bravo").await;
        let auth = ("authorization", token.as_str());
        for host in ["acme.app.example", "ACME.App.Example:8443", "app.example"] {
            assert_eq!(
                run(&tenancy, "/x", &[auth, ("host", host)]).await,
                Ok(tenant),
                "{host}"
            );
        }
        for host in [
            "bravo.app.example",
            "nobody.app.example",
            "not_a_slug.app.example",
        ] {
            assert_eq!(
                run(&tenancy, "/x", &[auth, ("host", host)]).await,
                Err(StatusCode::NOT_FOUND),
                "{host}"
            );
        }
        // Deeper names and other domains are not tenant subdomains.
        for host in ["x.acme.app.example", "acme.other.example"] {
            assert_eq!(
                run(&tenancy, "/x", &[auth, ("host", host)]).await,
                Ok(tenant),
                "{host}"
            );
        }
    }

    #[tokio::test]
    async fn tenant_from_a_path_segment() {
        let tenancy = tenancy(TenantSource::PathSegment(1)).await;
        let (token, tenant) = register(&tenancy, "acme").await;
        let (_, other) = register(&tenancy, "bravo").await;
        let auth = [("authorization", token.as_str())];
        assert_eq!(run(&tenancy, "/t/acme/projects", &auth).await, Ok(tenant));
        assert_eq!(
            run(&tenancy, &format!("/t/{tenant}/projects"), &auth).await,
            Ok(tenant)
        );
        assert_eq!(run(&tenancy, "/t", &auth).await, Ok(tenant));
        // The SDK's own routes carry no tenant segment: `/auth/me` names none.
        assert_eq!(
            run(&tenancy, "/auth/me", &auth).await,
            Err(StatusCode::NOT_FOUND)
        );
        let uri: Uri = "/auth/me".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, token.parse().unwrap());
        let head = RequestHead::new(&Method::GET, &uri, &headers, None);
        let context = tenancy.authenticate_with(head, false).await.unwrap();
        assert_eq!(context.tenant_id(), tenant);
        for path in [
            "/t/bravo/projects".to_owned(),
            format!("/t/{other}/projects"),
            "/t/nobody/projects".to_owned(),
        ] {
            assert_eq!(
                run(&tenancy, &path, &auth).await,
                Err(StatusCode::NOT_FOUND),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn seeding_a_policy_adds_it_once() {
        let tenancy = tenancy(TenantSource::Token).await;
        let (_, tenant) = register(&tenancy, "acme").await;
        let policy: tenancy_authz::PolicyDocument = serde_json::from_value(serde_json::json!({
            "id": "readers",
            "statements": [{ "effect": "allow", "actions": ["projects:read"], "roles": ["readonly"] }]
        }))
        .unwrap();
        let audit = AuditContext::system();
        let (first, second) = tokio::join!(
            tenancy.seed_policy(tenant, &policy, &audit),
            tenancy.seed_policy(tenant, &policy, &audit),
        );
        let added = [first.unwrap(), second.unwrap()];
        assert_eq!(added.iter().filter(|added| **added).count(), 1);
        assert!(!tenancy.seed_policy(tenant, &policy, &audit).await.unwrap());
        let stored = tenancy
            .authz()
            .policy_store()
            .list_policies(tenant)
            .await
            .unwrap()
            .value;
        assert_eq!(stored, vec![policy]);
    }

    #[tokio::test]
    async fn a_members_principal_is_reused_until_the_membership_is_forgotten() {
        let tenancy = tenancy(TenantSource::Token).await;
        let (token, tenant) = register(&tenancy, "acme").await;
        let uri: Uri = "/x".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, token.parse().unwrap());
        let head = RequestHead::new(&Method::GET, &uri, &headers, None);
        let first = tenancy.authenticate(head).await.unwrap();
        let again = tenancy.authenticate(head).await.unwrap();
        assert!(Arc::ptr_eq(&first.authz, &again.authz));
        let user = first.user_id().unwrap();
        // A notice reaching the directory cache alone (as from another
        // replica) is enough: the principal follows the membership.
        tenancy
            .directory_cache()
            .apply(tenancy_core::DirectoryChange::Member(tenant, user));
        let after_notice = tenancy.authenticate(head).await.unwrap();
        assert!(!Arc::ptr_eq(&first.authz, &after_notice.authz));
        assert_eq!(after_notice.authz.roles(), first.authz.roles());
        tenancy.forget_member(tenant, user);
        let after_forget = tenancy.authenticate(head).await.unwrap();
        assert!(!Arc::ptr_eq(&after_notice.authz, &after_forget.authz));
        // Removed from the tenant: refused at once, once forgotten.
        let membership = tenancy
            .directory_cache()
            .membership(tenant, user)
            .await
            .unwrap()
            .unwrap();
        let mut suspended = (*membership).clone();
        suspended.status = MembershipStatus::Suspended;
        tenancy_core::MembershipStore::update_membership(&**tenancy.directory_cache(), &suspended)
            .await
            .unwrap();
        assert_eq!(
            tenancy.authenticate(head).await.unwrap_err().status(),
            StatusCode::FORBIDDEN
        );
    }

    #[tokio::test]
    async fn a_suspended_tenant_is_refused_once_forgotten() {
        let tenancy = tenancy(TenantSource::Token).await;
        let (token, tenant) = register(&tenancy, "acme").await;
        let auth = [("authorization", token.as_str())];
        assert_eq!(run(&tenancy, "/x", &auth).await, Ok(tenant));
        tenancy
            .directory()
            .suspend_tenant(tenant, &AuditContext::system())
            .await
            .unwrap();
        tenancy.forget_tenant(tenant);
        assert_eq!(run(&tenancy, "/x", &auth).await, Err(StatusCode::FORBIDDEN));
    }
}
