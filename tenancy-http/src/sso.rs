//! Single sign-on routes (feature `sso`): [`SsoModule`] mounts sign-in
//! through external identity providers (social and per-tenant enterprise
//! OpenID Connect, see [`tenancy_auth::sso`]) and its management.
//!
//! | method path | access | what |
//! | --- | --- | --- |
//! | `POST /sso/start` | public | `{"connection": "github"}`, `{"email": "ada@acme.example"}` or `{"tenant_id": …, "connection"?: <id>}`, optional `"return_to": "/path"`: sets the state cookie and answers `{"authorize_url", "expires_at"}` (`303` to it with `"redirect": true` or a form post) |
//! | `GET /sso/callback` | public | the provider's redirect (`code`, `state`, `iss` or `error`): signs in with the SDK cookies, then `303` to `return_to` when the sign-in asked for one, else `200` with the tokens JSON of `POST /auth/login` |
//! | `GET, POST /sso/connections` | `sso:manage` | the tenant's enterprise connections (the secret is write-only) |
//! | `GET, PUT, DELETE /sso/connections/{id}` | `sso:manage` | one connection; `PUT` changes the fields given |
//! | `GET, POST /sso/domains` | `sso:manage` | the tenant's email domains with their TXT challenge |
//! | `DELETE /sso/domains/{domain}` | `sso:manage` | releases a domain |
//! | `POST /sso/domains/{domain}/verify` | `sso:manage` | checks the TXT record |
//! | `GET, PUT /sso/policy` | `sso:manage` | `{"require_sso": bool}` |

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tenancy_auth::sso::{
    Callback, ClientSecret, ConnectionId, ConnectionUpdate, EmailDomain, EnterpriseConnection,
    NewEnterpriseConnection, SignInTarget, Sso, SsoError, SsoPasswordCheck, SsoPolicy, SsoStore,
    SsoStoreError, StartSignIn,
};
use tenancy_authz::sdk;
use tenancy_core::{RoleName, RoleSet, TenantId};
use time::OffsetDateTime;

pub use tenancy_auth::sso::SsoConfig;

use crate::module::Module;
use crate::pipeline::RequestContext;
use crate::problem::Problem;
use crate::request::{ApiRequest, set_cookie};
use crate::response::{add_cookie, json, no_content};
use crate::routes::{Access, Route, admin_error, auth_error, no_store, tokens_response};
use crate::tenancy::Tenancy;

/// The name of the short-lived cookie binding a sign-in to the browser
/// that started it.
pub const STATE_COOKIE: &str = "tenancy_sso";

/// The state cookie's `Path`: the callback route only.
pub const STATE_COOKIE_PATH: &str = "/sso/callback";

/// The SSO module: add it with `Tenancy::builder(..).module(SsoModule::new(config))`.
pub struct SsoModule {
    config: SsoConfig,
    store: Arc<dyn SsoStore>,
    #[cfg(feature = "postgres")]
    migrate: bool,
    service: OnceLock<Sso>,
}

impl std::fmt::Debug for SsoModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoModule")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SsoModule {
    /// The module on an in-memory store.
    #[cfg(feature = "memory")]
    pub fn new(config: SsoConfig) -> Self {
        Self::with_store(Arc::new(tenancy_auth::sso::MemorySsoStore::new()), config)
    }

    /// The module on Postgres: its tables (migrations 2700–2799) are
    /// migrated with the others' when the builder migrates.
    #[cfg(feature = "postgres")]
    pub fn postgres(pool: tenancy_core::postgres::sqlx::PgPool, config: SsoConfig) -> Self {
        let mut module = Self::with_store(
            Arc::new(tenancy_auth::sso::postgres::PgSsoStore::new(pool)),
            config,
        );
        module.migrate = true;
        module
    }

    /// The module over a store of your own (proven by
    /// `tenancy_auth::sso_conformance_tests!`).
    pub fn with_store(store: Arc<dyn SsoStore>, config: SsoConfig) -> Self {
        Self {
            config,
            store,
            #[cfg(feature = "postgres")]
            migrate: false,
            service: OnceLock::new(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SsoStore> {
        &self.store
    }

    /// The settings.
    pub fn config(&self) -> &SsoConfig {
        &self.config
    }

    /// The SSO service over `tenancy`'s identity services (built on first use).
    pub fn service(&self, tenancy: &Tenancy) -> Result<&Sso, SsoError> {
        if let Some(service) = self.service.get() {
            return Ok(service);
        }
        let service = Sso::new(
            tenancy.auth().clone(),
            self.store.clone(),
            self.config.clone(),
        )?;
        Ok(self.service.get_or_init(|| service))
    }
}

#[async_trait::async_trait]
impl Module for SsoModule {
    fn name(&self) -> &'static str {
        "sso"
    }

    fn routes(&self) -> Vec<Route> {
        use Access::*;
        vec![
            crate::route!(POST "/sso/start", Public, start),
            crate::route!(GET "/sso/callback", Public, callback),
            crate::route!(GET "/sso/connections", Permission(sdk::SSO_MANAGE), list_connections),
            crate::route!(POST "/sso/connections", Permission(sdk::SSO_MANAGE), create_connection),
            crate::route!(GET "/sso/connections/{id}", Permission(sdk::SSO_MANAGE), get_connection),
            crate::route!(PUT "/sso/connections/{id}", Permission(sdk::SSO_MANAGE), update_connection),
            crate::route!(DELETE "/sso/connections/{id}", Permission(sdk::SSO_MANAGE), delete_connection),
            crate::route!(GET "/sso/domains", Permission(sdk::SSO_MANAGE), list_domains),
            crate::route!(POST "/sso/domains", Permission(sdk::SSO_MANAGE), add_domain),
            crate::route!(DELETE "/sso/domains/{domain}", Permission(sdk::SSO_MANAGE), remove_domain),
            crate::route!(POST "/sso/domains/{domain}/verify", Permission(sdk::SSO_MANAGE), verify_domain),
            crate::route!(GET "/sso/policy", Permission(sdk::SSO_MANAGE), get_policy),
            crate::route!(PUT "/sso/policy", Permission(sdk::SSO_MANAGE), put_policy),
        ]
    }

    fn password_login_check(&self) -> Option<Arc<dyn tenancy_auth::PasswordLoginCheck>> {
        Some(Arc::new(SsoPasswordCheck::new(self.store.clone())))
    }

    #[cfg(feature = "postgres")]
    fn migrations(&self) -> Vec<tenancy_core::postgres::sqlx::migrate::Migrator> {
        if self.migrate {
            vec![tenancy_auth::sso::postgres::migrator()]
        } else {
            Vec::new()
        }
    }

    fn start(&self, tenancy: &Tenancy) -> Vec<tokio::task::JoinHandle<()>> {
        // Built now so that a bad configuration is logged at start.
        let service = match self.service(tenancy) {
            Ok(service) => service.clone(),
            Err(error) => {
                tracing::error!(%error, "the sso service could not be built");
                return Vec::new();
            }
        };
        vec![tokio::spawn(async move {
            let mut ticker = tokio::time::interval(std::time::Duration::from_secs(600));
            loop {
                ticker.tick().await;
                if let Err(error) = service.purge_expired().await {
                    tracing::warn!(%error, "purging expired sso sign-ins failed");
                }
            }
        })]
    }
}

fn module(t: &Tenancy) -> Result<(&SsoModule, &Sso), Problem> {
    let module = t
        .module::<SsoModule>()
        .ok_or_else(|| Problem::internal(&Problem::bad_request("the sso module is not added")))?;
    let service = module.service(t).map_err(|e| Problem::internal(&e))?;
    Ok((module, service))
}

fn ctx(context: Option<&RequestContext>) -> Result<&RequestContext, Problem> {
    context.ok_or_else(|| Problem::internal(&Problem::bad_request("route ran without its context")))
}

/// An SSO error as a problem. Details that could describe the internal
/// network or the provider's answer stay in the server log.
fn problem(t: &Tenancy, error: &SsoError) -> Problem {
    match error {
        SsoError::InvalidInput { field, reason } => Problem::invalid(*field, reason.clone()),
        SsoError::UnknownConnection => {
            Problem::not_found().with_detail("no enabled connection by that name")
        }
        SsoError::NoConnectionForEmail => Problem::new(
            StatusCode::NOT_FOUND,
            "sso-not-configured",
            "No single sign-on for this email",
        )
        .with_detail(error.to_string()),
        SsoError::InvalidState | SsoError::MissingCode => Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-sso-state",
            "Invalid sign-in state",
        )
        .with_detail("the sign-in is unknown, expired, already used or from another browser"),
        SsoError::ProviderRefused { error: code } => {
            Problem::new(StatusCode::UNAUTHORIZED, "sso-refused", "Sign-in refused")
                .with_detail(format!("the identity provider answered {code}"))
        }
        SsoError::CodeExchange(_) | SsoError::MissingIdToken | SsoError::InvalidIdToken(_) => {
            tracing::warn!(error = %error, source = std::error::Error::source(error).map(tracing::field::display), "sso sign-in failed");
            Problem::new(StatusCode::UNAUTHORIZED, "sso-failed", "Sign-in failed")
                .with_detail("the identity provider's answer could not be verified")
        }
        SsoError::AddressRefused(reason) => {
            tracing::warn!(%reason, "identity provider address refused");
            Problem::invalid("issuer", "the identity provider's address is not allowed")
        }
        SsoError::ProviderUnavailable(_) | SsoError::Dns(_) => {
            tracing::warn!(error = %error, source = std::error::Error::source(error).map(tracing::field::display), "identity provider unavailable");
            Problem::new(
                StatusCode::BAD_GATEWAY,
                "idp-unavailable",
                "Identity provider unavailable",
            )
        }
        SsoError::EmailNotVerified => Problem::new(
            StatusCode::FORBIDDEN,
            "email-not-verified",
            "Email not verified",
        )
        .with_detail(error.to_string()),
        SsoError::DomainMismatch => Problem::new(
            StatusCode::FORBIDDEN,
            "sso-domain-mismatch",
            "Email domain not allowed",
        )
        .with_detail(error.to_string()),
        SsoError::UseOrganizationSso => Problem::new(
            StatusCode::FORBIDDEN,
            "use-organization-sso",
            "Use your organization's sign-in",
        )
        .with_detail(error.to_string()),
        SsoError::LinkConfirmationRequired => {
            Problem::new(StatusCode::CONFLICT, "sso-link-required", "Account exists")
                .with_detail(error.to_string())
        }
        SsoError::SignupNotAllowed => Problem::new(
            StatusCode::FORBIDDEN,
            "signup-not-allowed",
            "Sign-up not allowed",
        )
        .with_detail(error.to_string()),
        SsoError::DomainNotVerified => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "domain-not-verified",
            "Domain not verified",
        )
        .with_detail(error.to_string()),
        SsoError::Auth(error) => auth_error(t, error),
        SsoError::Store(SsoStoreError::ConnectionNotFound | SsoStoreError::DomainNotFound) => {
            Problem::not_found()
        }
        SsoError::Store(SsoStoreError::TenantNotFound) => Problem::not_found(),
        SsoError::Store(SsoStoreError::DomainTaken) => {
            Problem::conflict("the domain is already claimed")
        }
        SsoError::Store(SsoStoreError::Store(error)) => crate::errors::store(error),
        other => Problem::internal(other),
    }
}

fn field<T, E: std::fmt::Display>(name: &str, result: Result<T, E>) -> Result<T, Problem> {
    result.map_err(|e| Problem::invalid(name, e.to_string()))
}

// ---------------------------------------------------------------- sign-in

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StartBody {
    connection: Option<String>,
    email: Option<String>,
    tenant_id: Option<TenantId>,
    return_to: Option<String>,
    #[serde(default)]
    redirect: bool,
}

fn start_body(t: &Tenancy, r: &ApiRequest) -> Result<(StartBody, bool), Problem> {
    let form = r
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return Ok((r.json(t.config().body_limit)?, false));
    }
    let mut body = StartBody::default();
    for (key, value) in form_urlencoded::parse(&r.body) {
        let value = value.into_owned();
        match key.as_ref() {
            "connection" => body.connection = Some(value),
            "email" => body.email = Some(value),
            "return_to" => body.return_to = Some(value),
            "tenant_id" => {
                body.tenant_id = Some(field("tenant_id", value.parse::<TenantId>())?);
            }
            other => return Err(Problem::invalid(other, "unknown field")),
        }
    }
    Ok((body, true))
}

async fn start(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (_, sso) = module(t)?;
    let (body, form) = start_body(t, r)?;
    // Login CSRF: another site's page must not start a sign-in in this
    // browser (its state cookie would finish into the attacker's
    // account). A form is what any page can send, so it must come from
    // this app; so must any request a browser marks as from elsewhere.
    let cross_site = r
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"));
    if form || cross_site || r.headers.contains_key(header::ORIGIN) {
        crate::request::check_origin(r.head(), t.config())?;
    }
    let target = match (body.email, body.tenant_id, body.connection) {
        (Some(email), None, None) => SignInTarget::Email(email),
        (None, Some(tenant_id), connection) => SignInTarget::Enterprise {
            tenant_id,
            connection: connection
                .map(|c| field("connection", c.parse::<ConnectionId>()))
                .transpose()?,
        },
        (None, None, Some(connection)) => SignInTarget::Connection(connection),
        _ => {
            return Err(Problem::bad_request(
                "give one of: connection, email, or tenant_id (with an optional connection)",
            ));
        }
    };
    let started = sso
        .start_for(
            StartSignIn {
                target,
                return_to: body.return_to,
            },
            &r.client(t.config()),
        )
        .await
        .map_err(|e| problem(t, &e))?;
    let max_age = (started.expires_at - OffsetDateTime::now_utc())
        .whole_seconds()
        .max(0);
    // Scoped to the callback: no other path of the app (nor script on
    // another path) gets the binding with its requests.
    let cookie = set_cookie(
        STATE_COOKIE,
        started.binding.expose_secret(),
        STATE_COOKIE_PATH,
        Some(max_age),
        t.config().cookies.secure,
    );
    let mut response = if form || body.redirect {
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = StatusCode::SEE_OTHER;
        response
    } else {
        json(
            StatusCode::OK,
            &json!({
                "authorize_url": started.authorize_url.as_str(),
                "expires_at": started.expires_at.unix_timestamp(),
            }),
        )?
    };
    let location =
        HeaderValue::from_str(started.authorize_url.as_str()).map_err(|e| Problem::internal(&e))?;
    response.headers_mut().insert(header::LOCATION, location);
    add_cookie(&mut response, &cookie);
    Ok(no_store(response))
}

async fn callback(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (_, sso) = module(t)?;
    let state = r
        .query("state")
        .ok_or_else(|| Problem::bad_request("the callback has no state"))?;
    let callback = Callback {
        state,
        code: r.query("code"),
        error: r.query("error"),
        iss: r.query("iss"),
        binding: r.cookie(STATE_COOKIE).map(str::to_owned),
    };
    let clear = set_cookie(
        STATE_COOKIE,
        "",
        STATE_COOKIE_PATH,
        Some(0),
        t.config().cookies.secure,
    );
    let signed_in = match sso.finish(callback, &r.client(t.config())).await {
        Ok(signed_in) => signed_in,
        Err(error) => {
            let mut response = problem(t, &error).to_response();
            add_cookie(&mut response, &clear);
            return Ok(response);
        }
    };
    let mut response = tokens_response(t, StatusCode::OK, &signed_in.login, true)?;
    if let Some(path) = &signed_in.return_to {
        *response.status_mut() = StatusCode::SEE_OTHER;
        *response.body_mut() = Bytes::new();
        response.headers_mut().remove(header::CONTENT_TYPE);
        let location = HeaderValue::from_str(path).map_err(|e| Problem::internal(&e))?;
        response.headers_mut().insert(header::LOCATION, location);
    }
    add_cookie(&mut response, &clear);
    Ok(response)
}

// ---------------------------------------------------------------- connections

#[derive(Serialize)]
struct ConnectionView<'a> {
    id: ConnectionId,
    tenant_id: TenantId,
    name: &'a str,
    issuer: &'a str,
    client_id: &'a str,
    default_role: &'a str,
    create_users: bool,
    enabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

fn view(c: &EnterpriseConnection) -> ConnectionView<'_> {
    ConnectionView {
        id: c.id,
        tenant_id: c.tenant_id,
        name: &c.name,
        issuer: &c.issuer,
        client_id: &c.client_id,
        default_role: c.default_role.as_str(),
        create_users: c.create_users,
        enabled: c.enabled,
        created_at: c.created_at,
        updated_at: c.updated_at,
    }
}

fn connection_id(r: &ApiRequest) -> Result<ConnectionId, Problem> {
    // An id that does not parse names no connection of this tenant.
    r.param("id")?.parse().map_err(|_| Problem::not_found())
}

/// The role given to members created just in time. Registering it is
/// granting it to whoever the provider vouches for: the caller must be
/// allowed to assign it (`members:manage`, a role of the tenant, nothing
/// beyond the caller's own permissions), and it is never `owner`.
async fn default_role(
    t: &Tenancy,
    context: &RequestContext,
    name: &str,
) -> Result<RoleName, Problem> {
    let role = field("default_role", RoleName::new(name))?;
    if role == RoleName::OWNER {
        return Err(Problem::invalid(
            "default_role",
            "members created by single sign-on cannot be owners",
        ));
    }
    t.authz_admin()
        .authorize_assignment(
            context.scope(),
            context.authz_principal(),
            None,
            &RoleSet::single(role.clone()),
        )
        .await
        .map_err(|e| admin_error(&e))?;
    Ok(role)
}

async fn list_connections(
    t: &Tenancy,
    _: &ApiRequest,
    context: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (_, sso) = module(t)?;
    let list = sso
        .connections(ctx(context)?.tenant_id())
        .await
        .map_err(|e| problem(t, &e))?;
    json(
        StatusCode::OK,
        &json!({ "items": list.iter().map(view).collect::<Vec<_>>() }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewConnectionBody {
    name: String,
    issuer: String,
    client_id: String,
    client_secret: String,
    default_role: String,
    #[serde(default = "yes")]
    create_users: bool,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

async fn create_connection(
    t: &Tenancy,
    r: &ApiRequest,
    context: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (_, sso) = module(t)?;
    let context = ctx(context)?;
    let body: NewConnectionBody = r.json(t.config().body_limit)?;
    let tenant = context.tenant_id();
    let default_role = default_role(t, context, &body.default_role).await?;
    let created = sso
        .create_connection(
            tenant,
            NewEnterpriseConnection {
                name: body.name,
                issuer: body.issuer,
                client_id: body.client_id,
                client_secret: ClientSecret::new(body.client_secret),
                default_role,
                create_users: body.create_users,
                enabled: body.enabled,
            },
            &context.audit(),
        )
        .await
        .map_err(|e| problem(t, &e))?;
    json(StatusCode::CREATED, &view(&created))
}

async fn get_connection(
    t: &Tenancy,
    r: &ApiRequest,
    context: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (_, sso) = module(t)?;
    let found = sso
        .connection(ctx(context)?.tenant_id(), connection_id(r)?)
        .await
        .map_err(|e| problem(t, &e))?;
    json(StatusCode::OK, &view(&found))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateConnectionBody {
    name: Option<String>,
    issuer: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    default_role: Option<String>,
    create_users: Option<bool>,
    enabled: Option<bool>,
}

async fn update_connection(
    t: &Tenancy,
    r: &ApiRequest,
    context: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (_, sso) = module(t)?;
    let context = ctx(context)?;
    let id = connection_id(r)?;
    let body: UpdateConnectionBody = r.json(t.config().body_limit)?;
    let tenant = context.tenant_id();
    let default_role = match body.default_role {
        Some(name) => Some(default_role(t, context, &name).await?),
        None => None,
    };
    let updated = sso
        .update_connection(
            tenant,
            id,
            ConnectionUpdate {
                name: body.name,
                issuer: body.issuer,
                client_id: body.client_id,
                client_secret: body.client_secret.map(ClientSecret::new),
                default_role,
                create_users: body.create_users,
                enabled: body.enabled,
            },
            &context.audit(),
        )
        .await
        .map_err(|e| problem(t, &e))?;
    json(StatusCode::OK, &view(&updated))
}

async fn delete_connection(
    t: &Tenancy,
    r: &ApiRequest,
    context: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (_, sso) = module(t)?;
    let context = ctx(context)?;
    sso.delete_connection(context.tenant_id(), connection_id(r)?, &context.audit())
        .await
        .map_err(|e| problem(t, &e))?;
    Ok(no_content())
}

// ---------------------------------------------------------------- domains

fn domain_view(d: &EmailDomain) -> serde_json::Value {
    json!({
        "domain": d.domain.as_str(),
        "verified": d.is_verified(),
        "verified_at": d.verified_at.map(|at| at.unix_timestamp()),
        "created_at": d.created_at.unix_timestamp(),
        "challenge": {
            "type": "TXT",
            "name": d.challenge_name(),
            "value": d.challenge_value(),
        },
    })
}

async fn list_domains(
    t: &Tenancy,
    _: &ApiRequest,
    context: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (_, sso) = module(t)?;
    let list = sso
        .domains(ctx(context)?.tenant_id())
        .await
        .map_err(|e| problem(t, &e))?;
    json(
        StatusCode::OK,
        &json!({ "items": list.iter().map(domain_view).collect::<Vec<_>>() }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainBody {
    domain: String,
}

async fn add_domain(
    t: &Tenancy,
    r: &ApiRequest,
    context: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (_, sso) = module(t)?;
    let context = ctx(context)?;
    let body: DomainBody = r.json(t.config().body_limit)?;
    let added = sso
        .add_domain(context.tenant_id(), &body.domain, &context.audit())
        .await
        .map_err(|e| problem(t, &e))?;
    json(StatusCode::CREATED, &domain_view(&added))
}

async fn remove_domain(
    t: &Tenancy,
    r: &ApiRequest,
    context: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (_, sso) = module(t)?;
    let context = ctx(context)?;
    sso.remove_domain(context.tenant_id(), r.param("domain")?, &context.audit())
        .await
        .map_err(|e| problem(t, &e))?;
    Ok(no_content())
}

async fn verify_domain(
    t: &Tenancy,
    r: &ApiRequest,
    context: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (_, sso) = module(t)?;
    let context = ctx(context)?;
    let verified = sso
        .verify_domain(context.tenant_id(), r.param("domain")?, &context.audit())
        .await
        .map_err(|e| problem(t, &e))?;
    json(StatusCode::OK, &domain_view(&verified))
}

// ---------------------------------------------------------------- policy

async fn get_policy(
    t: &Tenancy,
    _: &ApiRequest,
    context: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (_, sso) = module(t)?;
    let policy = sso
        .policy(ctx(context)?.tenant_id())
        .await
        .map_err(|e| problem(t, &e))?;
    json(StatusCode::OK, &policy)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    require_sso: bool,
}

async fn put_policy(
    t: &Tenancy,
    r: &ApiRequest,
    context: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (_, sso) = module(t)?;
    let context = ctx(context)?;
    let body: PolicyBody = r.json(t.config().body_limit)?;
    let policy = sso
        .set_policy(
            context.tenant_id(),
            SsoPolicy {
                require_sso: body.require_sso,
            },
            &context.audit(),
        )
        .await
        .map_err(|e| problem(t, &e))?;
    json(StatusCode::OK, &policy)
}
