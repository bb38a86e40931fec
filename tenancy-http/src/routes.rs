//! The SDK's routes, as data: method, path, access, and a handler over the
//! shared request type. The axum and actix integrations mount this one
//! table, so both serve the same paths, JSON, status codes and headers.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tenancy_auth::{
    InvitationAcceptor, LoginRequest, LoginSuccess, NewApiKey, Password, Registration, Scope,
};
use tenancy_authz::{
    AdminError, Attributes, PermissionPattern, PolicyDocument, PolicyId, Resource, RoleDefinition,
    sdk,
};
use tenancy_core::{
    ActionFilter, Actor, ApiKeyId, AuditQuery, DisplayName, Email, ExportFormat, InvitationId,
    InvitationToken, MembershipStore, NewTenant, NewUser, PageRequest, RoleName, RoleSet,
    SessionId, Slug, TargetType, TenantId, TenantName, UserId, UserStore,
};
use time::OffsetDateTime;

use crate::errors;
use crate::paging::page_json;
use crate::pipeline::RequestContext;
use crate::problem::Problem;
use crate::request::{ApiRequest, set_cookie};
use crate::response::{add_cookie, json, no_content};
use crate::tenancy::Tenancy;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// Anyone.
    Public,
    /// Anyone; credentials, if present, are used (accepting an invitation).
    Optional,
    /// Any authenticated caller.
    Authenticated,
    /// An authenticated caller holding this permission in the tenant.
    Permission(&'static str),
}

/// A route's handler: the services, the request, and its context when the
/// route's [`Access`] authenticated the caller. A plain `fn` (write an
/// `async fn` and wrap it with [`route!`](crate::route)).
pub type Handler =
    for<'a> fn(
        &'a Tenancy,
        &'a ApiRequest,
        Option<&'a RequestContext>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, Problem>> + Send + 'a>>;

/// One route: the SDK's own, or a [`crate::Module`]'s.
#[derive(Clone)]
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path, with `{name}` parameters (one segment each) and, as the
    /// last segment only, `{*name}` for the rest of the path (one segment
    /// or more). Literal segments win over both.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    handler: Handler,
}

impl Route {
    /// A route serving `method path` with `handler`, after the pipeline
    /// `access` asks for. Usually written with [`route!`](crate::route).
    pub fn new(method: Method, path: &'static str, access: Access, handler: Handler) -> Self {
        Self {
            method,
            path,
            access,
            handler,
        }
    }
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({:?})", self.method, self.path, self.access)
    }
}

/// A [`Route`] from a method, a path, an [`Access`] and an `async fn
/// (&Tenancy, &ApiRequest, Option<&RequestContext>) -> Result<Response<Bytes>, Problem>`.
///
/// ```
/// use tenancy_http::{Access, ApiRequest, Problem, RequestContext, Tenancy, route};
/// use tenancy_http::http::{Response, StatusCode};
///
/// async fn hello(
///     _: &Tenancy,
///     _: &ApiRequest,
///     context: Option<&RequestContext>,
/// ) -> Result<Response<bytes::Bytes>, Problem> {
///     let tenant = context.map(|c| c.tenant_id().to_string()).unwrap_or_default();
///     Ok(tenancy_http::json(StatusCode::OK, &serde_json::json!({ "tenant": tenant }))?)
/// }
///
/// let route = route!(GET "/hello", Access::Authenticated, hello);
/// assert_eq!(route.path, "/hello");
/// ```
#[macro_export]
macro_rules! route {
    ($method:ident $path:literal, $access:expr, $handler:path) => {
        $crate::Route::new($crate::http::Method::$method, $path, $access, |t, r, c| {
            ::std::boxed::Box::pin($handler(t, r, c))
        })
    };
}

/// Every SDK route. Mount them with your framework's integration.
pub fn routes() -> Vec<Route> {
    use Access::*;
    vec![
        route!(POST "/auth/register", Public, register),
        route!(POST "/auth/login", Public, login),
        route!(POST "/auth/refresh", Public, refresh),
        route!(POST "/auth/logout", Public, logout),
        route!(GET "/auth/me", Authenticated, me),
        route!(GET "/auth/sessions", Authenticated, list_sessions),
        route!(DELETE "/auth/sessions/{session_id}", Authenticated, revoke_session),
        route!(POST "/auth/switch-tenant", Authenticated, switch_tenant),
        route!(POST "/auth/email/verify/start", Authenticated, start_verification),
        route!(POST "/auth/email/verify/finish", Public, finish_verification),
        route!(POST "/auth/password-reset/start", Public, start_reset),
        route!(POST "/auth/password-reset/finish", Public, finish_reset),
        route!(GET "/.well-known/jwks.json", Public, jwks),
        route!(POST "/api-keys", Permission(sdk::API_KEYS_MANAGE), create_api_key),
        route!(GET "/api-keys", Permission(sdk::API_KEYS_READ), list_api_keys),
        route!(DELETE "/api-keys/{id}", Permission(sdk::API_KEYS_MANAGE), revoke_api_key),
        route!(GET "/members", Permission(sdk::MEMBERS_READ), list_members),
        route!(PUT "/members/{user_id}/roles", Permission(sdk::MEMBERS_MANAGE), change_roles),
        route!(DELETE "/members/{user_id}", Permission(sdk::MEMBERS_MANAGE), remove_member),
        route!(POST "/invitations", Permission(sdk::MEMBERS_MANAGE), invite),
        route!(GET "/invitations", Permission(sdk::MEMBERS_READ), list_invitations),
        route!(DELETE "/invitations/{id}", Permission(sdk::MEMBERS_MANAGE), revoke_invitation),
        route!(POST "/invitations/accept", Optional, accept_invitation),
        route!(GET "/roles", Permission(sdk::ROLES_READ), list_roles),
        route!(PUT "/roles/{name}", Permission(sdk::ROLES_MANAGE), put_role),
        route!(DELETE "/roles/{name}", Permission(sdk::ROLES_MANAGE), delete_role),
        route!(GET "/policies", Permission(sdk::POLICIES_READ), list_policies),
        route!(PUT "/policies/{id}", Permission(sdk::POLICIES_MANAGE), put_policy),
        route!(DELETE "/policies/{id}", Permission(sdk::POLICIES_MANAGE), delete_policy),
        route!(POST "/authz/explain", Permission(sdk::POLICIES_READ), explain),
        route!(GET "/audit", Permission(sdk::AUDIT_READ), audit_events),
        route!(GET "/audit/export", Permission(sdk::AUDIT_READ), audit_export),
        route!(GET "/audit/verify", Permission(sdk::AUDIT_READ), audit_verify),
        route!(GET "/health", Public, crate::health::health),
        route!(GET "/ready", Public, crate::health::ready),
    ]
}

impl Tenancy {
    /// Serves `route` for `request`: runs the pipeline the route's access
    /// asks for, then its handler. Every failure is a problem answer.
    pub async fn dispatch(&self, route: &Route, request: ApiRequest) -> Response<Bytes> {
        let outcome = async {
            let context = match route.access {
                Access::Public => None,
                Access::Optional
                    if !request.headers.contains_key(header::AUTHORIZATION)
                        && request.cookie(&self.config().cookies.access_name).is_none() =>
                {
                    None
                }
                Access::Optional | Access::Authenticated => {
                    Some(self.authenticate_with(request.head(), false).await?)
                }
                Access::Permission(permission) => {
                    let context = self.authenticate_with(request.head(), false).await?;
                    context.require(permission).await?;
                    Some(context)
                }
            };
            if let Some(context) = &context
                && let Some(idempotency) = self.idempotency()
                && idempotency.config().sdk_routes()
            {
                let handler = (route.handler)(self, &request, Some(context));
                return idempotency.around(context, &request, handler).await;
            }
            (route.handler)(self, &request, context.as_ref()).await
        }
        .await;
        let mut response = outcome.unwrap_or_else(|problem| problem.to_response());
        // Answers carry personal or tenant data, credentials, or problems
        // about them: no cache keeps them unless a route says otherwise
        // (the public JWKS).
        let headers = response.headers_mut();
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if !headers.contains_key(header::CACHE_CONTROL) {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        response
    }
}

fn ctx(context: Option<&RequestContext>) -> Result<&RequestContext, Problem> {
    context.ok_or_else(|| Problem::internal(&Problem::bad_request("route ran without its context")))
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn body<T: for<'de> Deserialize<'de>>(t: &Tenancy, r: &ApiRequest) -> Result<T, Problem> {
    r.json(t.config().body_limit)
}

fn field<T, E: std::fmt::Display>(name: &str, result: Result<T, E>) -> Result<T, Problem> {
    result.map_err(|e| Problem::invalid(name, e.to_string()))
}

fn page_request(r: &ApiRequest) -> Result<PageRequest, Problem> {
    crate::paging::page_request(r.uri.query())
}

/// The calling user, for the account routes: an OAuth client holding a
/// user's token acts for the user only within its scopes, never on the
/// user's sessions or account.
fn user_id(principal: &RequestContext) -> Result<UserId, Problem> {
    if principal.principal().oauth.is_some() {
        return Err(Problem::forbidden(
            "this operation needs the user's own session, not an OAuth client's token",
        ));
    }
    principal
        .user_id()
        .ok_or_else(|| Problem::forbidden("this operation needs a signed-in user"))
}

#[derive(Serialize)]
struct Tokens<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: i64,
    refresh_token: &'a str,
    session_id: SessionId,
    tenant_id: TenantId,
    roles: Vec<&'a str>,
    user: &'a tenancy_core::User,
}

pub(crate) fn tokens_response(
    t: &Tenancy,
    status: StatusCode,
    success: &LoginSuccess,
    cookies: bool,
) -> Result<Response<Bytes>, Problem> {
    let expires_in = (success.access_token.expires_at - OffsetDateTime::now_utc())
        .whole_seconds()
        .max(0);
    let mut response = json(
        status,
        &Tokens {
            access_token: &success.access_token.token,
            token_type: "Bearer",
            expires_in,
            refresh_token: success.refresh_token.expose_secret(),
            session_id: success.session.id,
            tenant_id: success.membership.tenant_id,
            roles: success
                .membership
                .roles
                .iter()
                .map(RoleName::as_str)
                .collect(),
            user: &success.user,
        },
    )?;
    let config = &t.config().cookies;
    if cookies && config.enabled {
        let refresh_age =
            (success.session.absolute_expires_at - OffsetDateTime::now_utc()).whole_seconds();
        add_cookie(
            &mut response,
            &set_cookie(
                &config.access_name,
                &success.access_token.token,
                "/",
                Some(expires_in),
                config.secure,
            ),
        );
        add_cookie(
            &mut response,
            &set_cookie(
                &config.refresh_name,
                success.refresh_token.expose_secret(),
                &config.refresh_path,
                Some(refresh_age),
                config.secure,
            ),
        );
    }
    Ok(no_store(response))
}

/// An account operation's error as a problem; a `401` (bad credentials or
/// refresh token) carries the `Bearer` challenge every `401` must.
pub(crate) fn auth_error(t: &Tenancy, error: &tenancy_auth::Error) -> Problem {
    let problem = errors::auth_service(error, now());
    match tenancy_auth::AuthError::MissingCredentials.www_authenticate(&t.config().realm) {
        Some(challenge)
            if problem.status() == StatusCode::UNAUTHORIZED
                && problem.www_authenticate().is_none() =>
        {
            problem.with_www_authenticate(challenge)
        }
        _ => problem,
    }
}

// ---------------------------------------------------------------- auth

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantBody {
    slug: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    email: String,
    password: String,
    display_name: Option<String>,
    tenant: TenantBody,
    #[serde(default)]
    cookies: bool,
}

async fn register(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let input: RegisterBody = body(t, r)?;
    let mut user = NewUser::new(field("email", Email::new(&input.email))?);
    if let Some(name) = input.display_name {
        user = user.with_display_name(field("display_name", DisplayName::new(&name))?);
    }
    let tenant = NewTenant::new(
        field("tenant.slug", Slug::new(input.tenant.slug))?,
        field("tenant.name", TenantName::new(&input.tenant.name))?,
    );
    let success = t
        .auth()
        .register(
            Registration {
                user,
                password: Password::new(input.password),
                tenant,
            },
            &r.client(t.config()),
        )
        .await
        .map_err(|e| auth_error(t, &e))?;
    tokens_response(t, StatusCode::CREATED, &success, input.cookies)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
    tenant_id: Option<TenantId>,
    #[serde(default)]
    cookies: bool,
}

async fn login(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let input: LoginBody = body(t, r)?;
    let success = t
        .auth()
        .login(
            LoginRequest {
                email: input.email,
                password: Password::new(input.password),
                tenant: input.tenant_id,
            },
            &r.client(t.config()),
        )
        .await
        .map_err(|e| auth_error(t, &e))?;
    tokens_response(t, StatusCode::OK, &success, input.cookies)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    refresh_token: Option<String>,
    #[serde(default)]
    cookies: bool,
}

async fn refresh(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let input: RefreshBody = if r.body.is_empty() {
        RefreshBody::default()
    } else {
        body(t, r)?
    };
    let (token, from_cookie) = match input.refresh_token {
        Some(token) => (token, false),
        None => {
            let cookie = r
                .cookie(&t.config().cookies.refresh_name)
                .ok_or_else(|| Problem::invalid("refresh_token", "a refresh token is required"))?;
            crate::request::check_origin(r.head(), t.config())?;
            (cookie.to_owned(), true)
        }
    };
    let success = t
        .auth()
        .refresh(&token, &r.client(t.config()))
        .await
        .map_err(|e| auth_error(t, &e))?;
    tokens_response(t, StatusCode::OK, &success, input.cookies || from_cookie)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LogoutBody {
    refresh_token: Option<String>,
}

/// Ends the caller's session, named by (first that applies) the refresh
/// token in the body, the `Authorization` header, the refresh cookie of a
/// same-site request (falling back to the access cookie if the refresh
/// cookie is unknown), or the access cookie. A refresh token works after
/// the access token has expired. The browser's cookies are cleared only
/// when they named the session ended.
async fn logout(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let input: LogoutBody = if r.body.is_empty() {
        LogoutBody::default()
    } else {
        body(t, r)?
    };
    let client = r.client(t.config());
    let fail = |e: tenancy_auth::Error| auth_error(t, &e);
    let by_credentials = || async {
        let context = t.authenticate_with(r.head(), false).await?;
        t.auth()
            .logout(context.principal(), &client)
            .await
            .map_err(fail)
    };
    if let Some(token) = input.refresh_token {
        t.auth()
            .logout_with_refresh_token(&token, &client)
            .await
            .map_err(fail)?;
        return Ok(no_content());
    }
    if r.headers.contains_key(header::AUTHORIZATION) {
        by_credentials().await?;
        return Ok(no_content());
    }
    match r.cookie(&t.config().cookies.refresh_name) {
        Some(cookie) => {
            crate::request::check_origin(r.head(), t.config())?;
            match t.auth().logout_with_refresh_token(cookie, &client).await {
                Ok(()) => {}
                Err(tenancy_auth::Error::InvalidRefreshToken)
                    if r.cookie(&t.config().cookies.access_name).is_some() =>
                {
                    by_credentials().await?;
                }
                Err(other) => return Err(fail(other)),
            }
        }
        None => by_credentials().await?,
    }
    let mut response = no_content();
    let cookies = &t.config().cookies;
    add_cookie(
        &mut response,
        &set_cookie(&cookies.access_name, "", "/", Some(0), cookies.secure),
    );
    add_cookie(
        &mut response,
        &set_cookie(
            &cookies.refresh_name,
            "",
            &cookies.refresh_path,
            Some(0),
            cookies.secure,
        ),
    );
    Ok(response)
}

/// `GET /auth/me`: the caller, their user record and their tenant.
///
/// The tenant comes from the directory cache the pipeline has just read
/// for this request's status check, so it costs no query: its status and
/// slug are current (every replica hears of their changes), its name and
/// metadata at most [`crate::HttpConfig::tenant_status_ttl`] old. The user
/// is read from the store on every call: no cache holds users, and the
/// answer must show an email change or verification made a moment ago on
/// any replica.
async fn me(
    t: &Tenancy,
    _: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let user = match c.user_id() {
        Some(id) => Some(
            t.directory()
                .backend()
                .get_user(id)
                .await
                .map_err(|e| errors::store(&e))?,
        ),
        None => None,
    };
    let tenant = t
        .directory_cache()
        .tenant(c.tenant_id())
        .await
        .map_err(|e| errors::store(&e))?;
    let mut user = serde_json::to_value(user).map_err(|e| Problem::internal(&e))?;
    // An OAuth client sees of the user what its scopes grant (OIDC Core
    // §5.4): the email with `email`, the name with `profile`.
    if let Some(oauth) = &c.principal().oauth
        && let Some(fields) = user.as_object_mut()
    {
        let email = oauth.has_scope("email");
        let profile = oauth.has_scope("profile");
        fields.retain(|name, _| match name.as_str() {
            "id" | "status" => true,
            "email" | "email_verified" => email,
            "display_name" => profile,
            _ => false,
        });
    }
    json(
        StatusCode::OK,
        &json!({ "principal": &**c.principal(), "user": user, "tenant": &*tenant }),
    )
}

async fn list_sessions(
    t: &Tenancy,
    _: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let user = user_id(ctx(c)?)?;
    let sessions = t
        .auth()
        .list_sessions(user)
        .await
        .map_err(|e| auth_error(t, &e))?;
    json(StatusCode::OK, &json!({ "items": sessions }))
}

async fn revoke_session(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let user = user_id(ctx(c)?)?;
    let session: SessionId = r
        .param("session_id")?
        .parse()
        .map_err(|_| Problem::not_found())?;
    t.auth()
        .revoke_session(user, session)
        .await
        .map_err(|e| auth_error(t, &e))?;
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchBody {
    tenant_id: TenantId,
    #[serde(default)]
    cookies: bool,
}

async fn switch_tenant(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let input: SwitchBody = body(t, r)?;
    let success = t
        .auth()
        .switch_tenant(c.principal(), input.tenant_id, &r.client(t.config()))
        .await
        .map_err(|e| auth_error(t, &e))?;
    tokens_response(t, StatusCode::OK, &success, input.cookies)
}

async fn start_verification(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let user = user_id(ctx(c)?)?;
    t.auth()
        .start_email_verification(user, &r.client(t.config()))
        .await
        .map_err(|e| auth_error(t, &e))?;
    json(StatusCode::ACCEPTED, &json!({}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    token: String,
}

async fn finish_verification(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let input: TokenBody = body(t, r)?;
    let user = t
        .auth()
        .finish_email_verification(&input.token)
        .await
        .map_err(|e| auth_error(t, &e))?;
    json(StatusCode::OK, &json!({ "user": user }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailBody {
    email: String,
}

async fn start_reset(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let input: EmailBody = body(t, r)?;
    t.auth()
        .start_password_reset(&input.email, &r.client(t.config()))
        .await
        .map_err(|e| auth_error(t, &e))?;
    json(StatusCode::ACCEPTED, &json!({}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    token: String,
    password: String,
}

async fn finish_reset(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let input: ResetBody = body(t, r)?;
    t.auth()
        .finish_password_reset(
            &input.token,
            &Password::new(input.password),
            &r.client(t.config()),
        )
        .await
        .map_err(|e| auth_error(t, &e))?;
    Ok(no_content())
}

async fn jwks(
    t: &Tenancy,
    _: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let own = t.auth().jwks();
    let mut keys: Vec<Value> = own
        .get("keys")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for registered in t.modules() {
        for key in registered.module.public_keys().await? {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    let mut response = json(StatusCode::OK, &json!({ "keys": keys }))?;
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    Ok(response)
}

// ---------------------------------------------------------------- api keys

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKeyBody {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
}

async fn create_api_key(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    // A key's powers come from the member who made it; a key making keys
    // would outlive that member's departure.
    if c.user_id().is_none() {
        return Err(Problem::forbidden("API keys cannot create API keys"));
    }
    // Nor can an OAuth client holding a user's token: the key would outlive
    // the grant.
    if c.principal().oauth.is_some() {
        return Err(Problem::forbidden(
            "an OAuth client's token cannot create API keys",
        ));
    }
    let input: ApiKeyBody = body(t, r)?;
    let catalog = t.authz().engine().catalog();
    let mut scopes = Vec::with_capacity(input.scopes.len());
    for (i, scope) in input.scopes.into_iter().enumerate() {
        let name = format!("scopes[{i}]");
        let scope = field(&name, Scope::new(scope))?;
        // A scope names permissions of the catalog: one, or (`projects:*`,
        // `*:read`, `*`) every one it matches.
        let pattern = field(&name, PermissionPattern::new(scope.as_str()))?;
        field(&name, catalog.check_pattern(&pattern))?;
        // A key may carry only what its creator holds: all of it.
        let mut missing = Vec::new();
        for permission in catalog.expand(&pattern).filter_map(|id| catalog.get(id)) {
            match c.require(permission.as_str()).await {
                Ok(()) => {}
                Err(refused) if refused.status() == StatusCode::FORBIDDEN => {
                    missing.push(format!("`{}`", permission.as_str()));
                }
                Err(other) => return Err(other),
            }
        }
        if !missing.is_empty() {
            missing.truncate(20);
            return Err(Problem::forbidden(format!(
                "cannot grant `{scope}`: the creator does not hold {}",
                missing.join(", ")
            ))
            .with_field(name, "not held by the creator"));
        }
        scopes.push(scope);
    }
    let (key, secret) = t
        .auth()
        .create_api_key(
            c.scope(),
            NewApiKey {
                name: input.name,
                scopes,
                expires_at: input.expires_at,
            },
            &c.audit(),
        )
        .await
        .map_err(|e| auth_error(t, &e))?;
    json(
        StatusCode::CREATED,
        &json!({ "api_key": key, "secret": secret.expose_secret() }),
    )
    .map(no_store)
}

async fn list_api_keys(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let page = t
        .auth()
        .list_api_keys(c.scope(), &page_request(r)?)
        .await
        .map_err(|e| auth_error(t, &e))?;
    json(StatusCode::OK, &page_json(&page))
}

async fn revoke_api_key(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let id: ApiKeyId = r.param("id")?.parse().map_err(|_| Problem::not_found())?;
    t.auth()
        .revoke_api_key(c.scope(), id, &c.audit())
        .await
        .map_err(|e| auth_error(t, &e))?;
    Ok(no_content())
}

// ---------------------------------------------------------------- members

async fn list_members(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let page = t
        .directory()
        .list_members(c.scope(), &page_request(r)?)
        .await
        .map_err(|e| errors::directory(&e))?;
    json(StatusCode::OK, &page_json(&page))
}

fn role_set(name: &str, roles: Vec<String>) -> Result<RoleSet, Problem> {
    field(name, RoleSet::parse(roles))
}

pub(crate) fn admin_error(error: &AdminError) -> Problem {
    match error {
        AdminError::Forbidden { .. } | AdminError::Escalation { .. } | AdminError::OtherTenant => {
            Problem::forbidden(error.to_string())
        }
        AdminError::Role(_) | AdminError::Policy(_) => Problem::invalid("body", error.to_string()),
        AdminError::UnknownRole { .. } => Problem::invalid("roles", error.to_string()),
        AdminError::Limit(_) => {
            Problem::of(crate::ProblemKind::LimitExceeded).with_detail(error.to_string())
        }
        AdminError::RoleInUse { .. } => Problem::conflict(error.to_string()),
        AdminError::RateLimited { retry_after } => {
            let now = now();
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
            )
            .with_detail(error.to_string())
            .retry_after(now + *retry_after, now)
        }
        other => Problem::unavailable(other),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesBody {
    roles: Vec<String>,
}

async fn change_roles(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let member: UserId = r
        .param("user_id")?
        .parse()
        .map_err(|_| Problem::not_found())?;
    let input: RolesBody = body(t, r)?;
    let roles = role_set("roles", input.roles)?;
    let current = t
        .directory()
        .backend()
        .find_membership(c.tenant_id(), member)
        .await
        .map_err(|e| errors::store(&e))?
        .ok_or_else(Problem::not_found)?;
    t.authz_admin()
        .authorize_assignment(c.scope(), c.authz_principal(), Some(&current.roles), &roles)
        .await
        .map_err(|e| admin_error(&e))?;
    let membership = t
        .directory()
        .change_roles(c.scope(), member, roles, &c.audit())
        .await
        .map_err(|e| errors::directory(&e))?;
    t.forget_member(c.tenant_id(), member);
    json(StatusCode::OK, &membership)
}

async fn remove_member(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let member: UserId = r
        .param("user_id")?
        .parse()
        .map_err(|_| Problem::not_found())?;
    let current = t
        .directory()
        .backend()
        .find_membership(c.tenant_id(), member)
        .await
        .map_err(|e| errors::store(&e))?
        .ok_or_else(Problem::not_found)?;
    t.authz_admin()
        .authorize_removal(c.scope(), c.authz_principal(), &current.roles)
        .await
        .map_err(|e| admin_error(&e))?;
    t.auth()
        .remove_member(c.scope(), member, &c.audit())
        .await
        .map_err(|e| auth_error(t, &e))?;
    t.forget_member(c.tenant_id(), member);
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteBody {
    email: String,
    roles: Vec<String>,
}

async fn invite(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let input: InviteBody = body(t, r)?;
    let email = field("email", Email::new(&input.email))?;
    let roles = role_set("roles", input.roles)?;
    t.authz_admin()
        .authorize_assignment(c.scope(), c.authz_principal(), None, &roles)
        .await
        .map_err(|e| admin_error(&e))?;
    let issued = t
        .directory()
        .invite(c.scope(), email, roles, &c.audit())
        .await
        .map_err(|e| errors::directory(&e))?;
    json(
        StatusCode::CREATED,
        &json!({ "invitation": issued.invitation, "token": issued.token.expose_secret() }),
    )
    .map(no_store)
}

/// Marks a response that carries a secret (tokens, a key, an invitation)
/// as not to be stored by any cache (RFC 9111; RFC 6749 §5.1 for tokens).
pub(crate) fn no_store(mut response: Response<Bytes>) -> Response<Bytes> {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn list_invitations(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let page = t
        .directory()
        .list_invitations(c.scope(), &page_request(r)?)
        .await
        .map_err(|e| errors::directory(&e))?;
    json(StatusCode::OK, &page_json(&page))
}

async fn revoke_invitation(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let id: InvitationId = r.param("id")?.parse().map_err(|_| Problem::not_found())?;
    t.directory()
        .revoke_invitation(c.scope(), id, &c.audit())
        .await
        .map_err(|e| errors::directory(&e))?;
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcceptBody {
    token: String,
    display_name: Option<String>,
    /// For someone without an account: the password of the account the
    /// acceptance creates.
    password: Option<String>,
}

/// Accepts an invitation: as the signed-in caller if credentials are sent,
/// otherwise creating an account for the invited address (with `password`,
/// checked against the policy before anything is written, and set in the
/// transaction that creates the account). Refused, and the invitation
/// revoked, when its sender can no longer grant its roles.
async fn accept_invitation(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    // An OAuth client holding a user's token may not make the user join
    // another tenant: that needs the user's own session.
    if c.is_some_and(|c| c.principal().oauth.is_some()) {
        return Err(Problem::forbidden(
            "accepting an invitation needs the user's own session, not an OAuth client's token",
        ));
    }
    let input: AcceptBody = body(t, r)?;
    let token = InvitationToken::parse(&input.token)
        .map_err(|_| Problem::not_found().with_detail("invitation not found"))?;
    let acceptor = match c.and_then(RequestContext::user_id) {
        Some(user) => InvitationAcceptor::User(user),
        None => InvitationAcceptor::NewUser {
            display_name: input
                .display_name
                .map(|name| field("display_name", DisplayName::new(&name)))
                .transpose()?,
            password: input.password.map(Password::new),
        },
    };
    let accepted = t
        .auth()
        .accept_invitation(&token, acceptor, &r.client(t.config()))
        .await
        .map_err(|e| auth_error(t, &e))?;
    t.forget_member(accepted.membership.tenant_id, accepted.membership.user_id);
    json(
        StatusCode::OK,
        &json!({ "user": accepted.user, "membership": accepted.membership, "user_created": accepted.user_created }),
    )
}

// ---------------------------------------------------------------- roles and policies

async fn list_roles(
    t: &Tenancy,
    _: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let custom = t
        .authz()
        .role_store()
        .list_roles(c.tenant_id())
        .await
        .map_err(|e| Problem::unavailable(&e))?;
    json(
        StatusCode::OK,
        &json!({ "built_in": t.authz().engine().built_ins(), "custom": custom.value, "epoch": custom.epoch }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    description: Option<String>,
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default)]
    inherits: Vec<String>,
}

async fn put_role(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let name = field("name", RoleName::new(r.param("name")?))?;
    let input: RoleBody = body(t, r)?;
    let mut role = RoleDefinition::new(name);
    role.description = input.description;
    for (i, permission) in input.permissions.iter().enumerate() {
        role.permissions
            .push(field(&format!("permissions[{i}]"), permission.parse())?);
    }
    for (i, parent) in input.inherits.into_iter().enumerate() {
        role.inherits
            .push(field(&format!("inherits[{i}]"), RoleName::new(parent))?);
    }
    let epoch = t
        .authz_admin()
        .put_role(c.scope(), c.authz_principal(), role.clone(), &c.audit())
        .await
        .map_err(|e| admin_error(&e))?;
    json(StatusCode::OK, &json!({ "role": role, "epoch": epoch }))
}

async fn delete_role(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let name = RoleName::new(r.param("name")?).map_err(|_| Problem::not_found())?;
    t.authz_admin()
        .delete_role(c.scope(), c.authz_principal(), &name, &c.audit())
        .await
        .map_err(|e| admin_error(&e))?;
    Ok(no_content())
}

async fn list_policies(
    t: &Tenancy,
    _: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let policies = t
        .authz()
        .policy_store()
        .list_policies(c.tenant_id())
        .await
        .map_err(|e| Problem::unavailable(&e))?;
    json(
        StatusCode::OK,
        &json!({ "items": policies.value, "epoch": policies.epoch }),
    )
}

async fn put_policy(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let id = field("id", PolicyId::new(r.param("id")?))?;
    let mut document: Value = body(t, r)?;
    if let Some(object) = document.as_object_mut() {
        object.insert("id".into(), json!(id.as_str()));
    }
    let document: PolicyDocument = field("body", serde_json::from_value(document))?;
    let epoch = t
        .authz_admin()
        .put_policy(c.scope(), c.authz_principal(), document.clone(), &c.audit())
        .await
        .map_err(|e| admin_error(&e))?;
    json(
        StatusCode::OK,
        &json!({ "policy": document, "epoch": epoch }),
    )
}

async fn delete_policy(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let id = PolicyId::new(r.param("id")?).map_err(|_| Problem::not_found())?;
    t.authz_admin()
        .delete_policy(c.scope(), c.authz_principal(), &id, &c.audit())
        .await
        .map_err(|e| admin_error(&e))?;
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceBody {
    #[serde(rename = "type")]
    resource_type: String,
    id: Option<String>,
    #[serde(default)]
    attributes: Option<Attributes>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainBody {
    user_id: Option<UserId>,
    action: String,
    resource: ResourceBody,
    #[serde(default)]
    context: Option<Attributes>,
}

/// "Why can X do Y?": the decision and its explanation for the caller, or
/// for another member of the tenant.
async fn explain(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let input: ExplainBody = body(t, r)?;
    let mut resource =
        Resource::new(input.resource.resource_type.as_str()).in_tenant(c.tenant_id());
    if let Some(id) = input.resource.id {
        resource = resource.with_id(id.as_str());
    }
    if let Some(attributes) = input.resource.attributes {
        resource = resource.with_attributes(attributes);
    }
    let explanation = match input.user_id {
        None => {
            c.explain(&input.action, &resource, input.context.as_ref())
                .await?
        }
        Some(user) => {
            let membership = t
                .directory()
                .backend()
                .find_membership(c.tenant_id(), user)
                .await
                .map_err(|e| errors::store(&e))?
                .ok_or_else(Problem::not_found)?;
            let subject = tenancy_authz::Principal::user(user, c.tenant_id(), membership.roles);
            crate::pipeline::explain_for(
                t,
                &subject,
                &input.action,
                &resource,
                input.context.as_ref(),
            )
            .await?
        }
    };
    json(
        StatusCode::OK,
        &json!({
            "allowed": explanation.allowed,
            "reason": format!("{:?}", explanation.reason),
            "explanation": explanation.to_string(),
            "notes": explanation.notes,
        }),
    )
}

// ---------------------------------------------------------------- audit

fn audit_query(r: &ApiRequest) -> Result<AuditQuery, Problem> {
    let mut query = AuditQuery::all();
    if let Some(action) = r.query("action") {
        query = query.action(field("action", ActionFilter::parse(&action))?);
    }
    if let Some(actor) = r.query("actor") {
        let parsed = match actor.split_once(':') {
            None if actor == "system" => Some(Actor::System),
            Some(("user", id)) => id.parse().ok().map(Actor::User),
            Some(("api_key", id)) => id.parse().ok().map(Actor::ApiKey),
            Some(("scim_token", id)) => id.parse().ok().map(Actor::ScimToken),
            Some(("oauth_client", id)) => id.parse().ok().map(Actor::OAuthClient),
            _ => None,
        };
        query = query.actor(parsed.ok_or_else(|| {
            Problem::invalid(
                "actor",
                "expected system, user:<id>, api_key:<id>, scim_token:<id> or oauth_client:<id>",
            )
        })?);
    }
    if let Some(target_type) = r.query("target_type") {
        query = query.target_type(field("target_type", TargetType::new(target_type))?);
    }
    let time = |name: &str| -> Result<Option<OffsetDateTime>, Problem> {
        r.query(name)
            .map(|text| {
                field(
                    name,
                    OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339),
                )
            })
            .transpose()
    };
    let (since, until) = (time("since")?, time("until")?);
    field("since", query.between(since, until))
}

async fn audit_events(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let page = t
        .directory()
        .audit_events(c.scope(), &audit_query(r)?, &page_request(r)?)
        .await
        .map_err(|e| errors::directory(&e))?;
    json(StatusCode::OK, &page_json(&page))
}

async fn audit_export(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let (format, media) = match r.query("format").as_deref() {
        None | Some("jsonl") => (ExportFormat::JsonLines, "application/jsonl"),
        Some("csv") => (ExportFormat::Csv, "text/csv; charset=utf-8"),
        Some(_) => return Err(Problem::invalid("format", "expected jsonl or csv")),
    };
    let limit = t.config().export_limit;
    let mut out = CappedBuffer {
        bytes: Vec::new(),
        limit,
        exceeded: false,
    };
    let exported = t
        .directory()
        .export_audit(c.scope(), &audit_query(r)?, format, &mut out)
        .await;
    match exported {
        Err(_) if out.exceeded => {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "export-too-large",
                "Export too large",
            )
            .with_detail(format!(
                "the export exceeds {limit} bytes; narrow it with since, until or action"
            )));
        }
        Err(error) => return Err(Problem::unavailable(&error)),
        Ok(_) => {}
    }
    let out = out.bytes;
    let mut response = Response::new(Bytes::from(out));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    Ok(response)
}

/// Re-verifies the tenant's audit hash chain from its first event to the
/// recorded head: `ok`, how many events were `checked`, the `last_intact`
/// link and the `first_broken` one (its sequence number, why, in words),
/// so an owner or admin can see whether history was rewritten in the
/// database behind the SDK's back. Reads the whole chain: it costs in
/// proportion to the tenant's log.
async fn audit_verify(
    t: &Tenancy,
    _: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let report = t
        .directory()
        .verify_audit_chain(c.tenant_id())
        .await
        .map_err(|e| errors::directory(&e))?;
    let first_broken = report.first_broken.map(|broken| {
        json!({ "seq": broken.seq, "reason": broken.reason, "detail": broken.reason.to_string() })
    });
    json(
        StatusCode::OK,
        &json!({
            "ok": report.is_intact(),
            "checked": report.events_checked,
            "last_intact": report.last_intact,
            "first_broken": first_broken,
        }),
    )
}

/// An in-memory export that refuses to grow past `limit` bytes.
struct CappedBuffer {
    bytes: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl std::io::Write for CappedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.limit {
            self.exceeded = true;
            return Err(std::io::ErrorKind::FileTooLarge.into());
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
