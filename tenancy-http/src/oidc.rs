//! The OAuth 2.0 / OpenID Connect authorization server's endpoints
//! (feature `oidc`): [`OidcModule`], a [`Module`] serving discovery,
//! authorize, token, userinfo, introspection, revocation, logout, the
//! default login and consent pages, and client management.
//!
//! | route | standard |
//! | --- | --- |
//! | `GET /.well-known/openid-configuration` | OIDC Discovery 1.0 §4 |
//! | `GET /.well-known/oauth-authorization-server` | RFC 8414 §3 |
//! | `GET, POST /oauth/authorize` | RFC 6749 §4.1, RFC 7636, RFC 9207, OIDC Core §3.1.2 |
//! | `POST /oauth/token` | RFC 6749 §4.1.3, §4.4, §6; OIDC Core §3.1.3 |
//! | `GET, POST /oauth/userinfo` | OIDC Core §5.3 |
//! | `POST /oauth/introspect` | RFC 7662 |
//! | `POST /oauth/revoke` | RFC 7009 |
//! | `GET, POST /oauth/logout` | OIDC RP-Initiated Logout 1.0 |
//! | `GET, POST /oauth/login`, `/oauth/consent` | the default pages ([`InteractionUi`]) |
//! | `/oauth/clients…` | client management (`oauth_clients:manage`) |

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest as _;
use subtle::ConstantTimeEq as _;
use tenancy_auth::oidc::{
    AuthorizeError, AuthorizeStep, ClientCredentials, ClientError, ClientId, ClientKind, GrantType,
    InteractionId, NewOAuthClient, OAuthClient, OAuthError, OAuthErrorCode, OAuthProvider,
    OAuthStore, ProviderConfig, RedirectUri, SignedIn,
};
use tenancy_auth::{Credentials, KeyAlgorithm, LoginRequest, Password};
use tenancy_authz::sdk;

use crate::module::Module;
use crate::pipeline::RequestContext;
use crate::problem::Problem;
use crate::request::{ApiRequest, set_cookie};
use crate::response::{add_cookie, json as json_response, no_content};
use crate::routes::{Access, Route};
use crate::tenancy::Tenancy;

/// Renders the login and consent pages. The provider posts them back to
/// `/oauth/login` and `/oauth/consent` with the form fields named in the
/// contract: `interaction`, `csrf`, `email`, `password`; `interaction`,
/// `csrf`, `decision` (`allow` or `deny`). A host replaces the default
/// pages by implementing this trait ([`OidcConfig::with_ui`]); whatever it
/// renders is served with a strict `Content-Security-Policy` and
/// `X-Frame-Options: DENY`, so inline scripts do not run.
pub trait InteractionUi: Send + Sync + 'static {
    /// The login page's HTML.
    fn login_page(&self, page: &LoginPage<'_>) -> String;
    /// The consent page's HTML.
    fn consent_page(&self, page: &ConsentPage<'_>) -> String;
}

/// What the login page shows and must post back.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct LoginPage<'a> {
    /// Where the form posts (`/oauth/login`).
    pub action: &'a str,
    /// The `interaction` hidden field.
    pub interaction: &'a str,
    /// The `csrf` hidden field.
    pub csrf: &'a str,
    /// The client asking.
    pub client_name: &'a str,
    /// The `login_hint` of the request, to prefill the email.
    pub login_hint: Option<&'a str>,
    /// Why the last attempt failed.
    pub error: Option<&'a str>,
}

/// What the consent page shows and must post back.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ConsentPage<'a> {
    /// Where the form posts (`/oauth/consent`).
    pub action: &'a str,
    /// The `interaction` hidden field.
    pub interaction: &'a str,
    /// The `csrf` hidden field.
    pub csrf: &'a str,
    /// The client asking.
    pub client_name: &'a str,
    /// The scopes asked for.
    pub scopes: &'a [String],
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            other => out.push(other),
        }
    }
    out
}

/// The minimal pages shipped with the SDK.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultUi;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:26rem;margin:4rem auto;padding:0 1rem}label,input,button{display:block;width:100%;margin:.4rem 0}input,button{padding:.5rem;box-sizing:border-box}.error{color:#b00020}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        escape_html(title)
    )
}

impl InteractionUi for DefaultUi {
    fn login_page(&self, p: &LoginPage<'_>) -> String {
        let error = p
            .error
            .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape_html(e)))
            .unwrap_or_default();
        page(
            "Sign in",
            &format!(
                "<h1>Sign in</h1><p>to continue to <strong>{client}</strong></p>{error}\
                 <form method=\"post\" action=\"{action}\">\
                 <input type=\"hidden\" name=\"interaction\" value=\"{interaction}\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <label for=\"email\">Email</label><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required value=\"{hint}\">\
                 <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
                 <button type=\"submit\">Sign in</button></form>",
                client = escape_html(p.client_name),
                action = escape_html(p.action),
                interaction = escape_html(p.interaction),
                csrf = escape_html(p.csrf),
                hint = escape_html(p.login_hint.unwrap_or("")),
            ),
        )
    }

    fn consent_page(&self, p: &ConsentPage<'_>) -> String {
        let scopes: String = p
            .scopes
            .iter()
            .map(|s| format!("<li>{}</li>", escape_html(s)))
            .collect();
        page(
            "Authorize access",
            &format!(
                "<h1>Authorize {client}</h1><p><strong>{client}</strong> asks to:</p><ul>{scopes}</ul>\
                 <form method=\"post\" action=\"{action}\">\
                 <input type=\"hidden\" name=\"interaction\" value=\"{interaction}\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button>\
                 <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
                client = escape_html(p.client_name),
                action = escape_html(p.action),
                interaction = escape_html(p.interaction),
                csrf = escape_html(p.csrf),
            ),
        )
    }
}

/// Settings of [`OidcModule`]. Start from [`OidcConfig::default`].
#[derive(Clone)]
#[non_exhaustive]
pub struct OidcConfig {
    /// The authorization server's settings (code and interaction lifetimes,
    /// ID-token algorithm).
    pub provider: ProviderConfig,
    /// The login and consent pages.
    pub ui: Arc<dyn InteractionUi>,
    /// The base URL the endpoints are published under in discovery
    /// (default: the issuer). Set it when the routes are mounted under a
    /// prefix.
    pub endpoint_base: Option<String>,
    /// The browser-binding cookie of the login and consent forms' CSRF
    /// token (default `tenancy_oauth_csrf`): named `__Host-<name>` with
    /// `Path=/` when cookies are `Secure`, else `<name>` with `Path=/oauth`.
    pub csrf_cookie: String,
    /// How often expired authorization requests and codes are deleted
    /// (default every 10 minutes; `None` leaves it to
    /// [`OAuthProvider::purge_expired`]).
    pub purge_every: Option<std::time::Duration>,
}

impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("provider", &self.provider)
            .field("endpoint_base", &self.endpoint_base)
            .finish_non_exhaustive()
    }
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            provider: ProviderConfig::default(),
            ui: Arc::new(DefaultUi),
            endpoint_base: None,
            csrf_cookie: "tenancy_oauth_csrf".into(),
            purge_every: Some(std::time::Duration::from_secs(600)),
        }
    }
}

impl OidcConfig {
    /// Replaces the authorization server's settings.
    pub fn with_provider(mut self, provider: ProviderConfig) -> Self {
        self.provider = provider;
        self
    }

    /// Replaces the login and consent pages.
    pub fn with_ui(mut self, ui: Arc<dyn InteractionUi>) -> Self {
        self.ui = ui;
        self
    }

    /// Publishes the endpoints under `base` (such as `https://app.example/api`).
    pub fn with_endpoint_base(mut self, base: impl Into<String>) -> Self {
        self.endpoint_base = Some(base.into());
        self
    }
}

/// The authorization server as a [`Module`]: add it with
/// `Tenancy::builder(..).module(OidcModule::new(OidcConfig::default()))`
/// and reach its typed API with
/// `tenancy.module::<OidcModule>().unwrap().provider()`.
pub struct OidcModule {
    config: OidcConfig,
    store: Arc<dyn OAuthStore>,
    provider: OnceLock<OAuthProvider>,
    #[cfg(feature = "postgres")]
    migrate: bool,
}

impl std::fmt::Debug for OidcModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcModule")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OidcModule {
    /// The module on in-memory stores.
    #[cfg(feature = "memory")]
    pub fn new(config: OidcConfig) -> Self {
        Self::with_store(
            config,
            Arc::new(tenancy_auth::oidc::MemoryOAuthStore::new()),
        )
    }

    /// The module over `store`.
    pub fn with_store(config: OidcConfig, store: Arc<dyn OAuthStore>) -> Self {
        Self {
            config,
            store,
            provider: OnceLock::new(),
            #[cfg(feature = "postgres")]
            migrate: false,
        }
    }

    /// The module on Postgres: its tables (migrations 2600-2699) are
    /// migrated with the others' when the builder migrates.
    #[cfg(feature = "postgres")]
    pub fn postgres(pool: tenancy_core::postgres::sqlx::PgPool, config: OidcConfig) -> Self {
        let mut module = Self::with_store(
            config,
            Arc::new(tenancy_auth::oidc::PgOAuthStore::new(pool)),
        );
        module.migrate = true;
        module
    }

    /// The settings.
    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// The authorization server, once the module is part of a built
    /// [`Tenancy`] (`None` before).
    pub fn try_provider(&self) -> Option<&OAuthProvider> {
        self.provider.get()
    }

    /// The authorization server: register clients, and everything the
    /// endpoints do, as a typed API.
    ///
    /// # Panics
    ///
    /// Before the module was added to a [`Tenancy`] that was built: a
    /// programming error (use [`OidcModule::try_provider`] to check).
    #[allow(clippy::expect_used)]
    pub fn provider(&self) -> &OAuthProvider {
        self.provider
            .get()
            .expect("OidcModule::provider is available once the Tenancy is built")
    }

    /// A path of the provider's own pages, under
    /// [`OidcConfig::endpoint_base`] when set (relative otherwise, so the
    /// browser stays on the host it came to).
    fn local(&self, path: &str) -> String {
        match &self.config.endpoint_base {
            Some(base) => format!("{}{path}", base.trim_end_matches('/')),
            None => path.to_owned(),
        }
    }

    fn endpoint(&self, tenancy: &Tenancy, path: &str) -> String {
        let base = self
            .config
            .endpoint_base
            .clone()
            .unwrap_or_else(|| tenancy.auth().config().tokens.issuer.clone());
        format!("{}{path}", base.trim_end_matches('/'))
    }
}

#[async_trait]
impl Module for OidcModule {
    fn name(&self) -> &'static str {
        "oidc"
    }

    fn has_request_step(&self) -> bool {
        true
    }

    /// A `client_credentials` caller must still be a registered machine
    /// client of the tenant it acts in, unchanged since the token was
    /// issued: deleting, updating or rotating a client stops its tokens.
    async fn on_request(&self, context: &RequestContext) -> Result<(), Problem> {
        let tenancy_auth::Subject::OAuthClient(_) = context.principal().subject else {
            return Ok(());
        };
        let refused = || {
            crate::errors::unauthorized(
                &tenancy_auth::AuthError::InvalidToken(tenancy_auth::TokenRejection::Revoked),
                &context.tenancy().config().realm,
            )
        };
        let Some(provider) = self.provider.get() else {
            return Err(refused());
        };
        match provider.client_token_valid(context.principal()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(refused()),
            Err(error) => Err(Problem::unavailable(&error)),
        }
    }

    fn routes(&self) -> Vec<Route> {
        use Access::*;
        vec![
            crate::route!(GET "/.well-known/openid-configuration", Public, discovery),
            crate::route!(GET "/.well-known/oauth-authorization-server", Public, discovery),
            crate::route!(GET "/oauth/authorize", Public, authorize),
            crate::route!(POST "/oauth/authorize", Public, authorize),
            crate::route!(POST "/oauth/token", Public, token),
            crate::route!(GET "/oauth/userinfo", Public, userinfo),
            crate::route!(POST "/oauth/userinfo", Public, userinfo),
            crate::route!(POST "/oauth/introspect", Public, introspect),
            crate::route!(POST "/oauth/revoke", Public, revoke),
            crate::route!(GET "/oauth/logout", Public, logout),
            crate::route!(POST "/oauth/logout", Public, logout),
            crate::route!(GET "/oauth/login", Public, login_page),
            crate::route!(POST "/oauth/login", Public, login_submit),
            crate::route!(GET "/oauth/consent", Public, consent_page),
            crate::route!(POST "/oauth/consent", Public, consent_submit),
            crate::route!(POST "/oauth/clients", Permission(sdk::OAUTH_CLIENTS_MANAGE), create_client),
            crate::route!(GET "/oauth/clients", Permission(sdk::OAUTH_CLIENTS_MANAGE), list_clients),
            crate::route!(GET "/oauth/clients/{client_id}", Permission(sdk::OAUTH_CLIENTS_MANAGE), get_client),
            crate::route!(PUT "/oauth/clients/{client_id}", Permission(sdk::OAUTH_CLIENTS_MANAGE), update_client),
            crate::route!(DELETE "/oauth/clients/{client_id}", Permission(sdk::OAUTH_CLIENTS_MANAGE), delete_client),
            crate::route!(POST "/oauth/clients/{client_id}/secret", Permission(sdk::OAUTH_CLIENTS_MANAGE), rotate_secret),
        ]
    }

    async fn public_keys(&self) -> Result<Vec<Value>, Problem> {
        let Some(provider) = self.provider.get() else {
            return Ok(Vec::new());
        };
        let keys = provider
            .id_token_keys()
            .await
            .map_err(|e| Problem::unavailable(&e))?;
        Ok(keys
            .jwks()
            .get("keys")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    #[cfg(feature = "postgres")]
    fn migrations(&self) -> Vec<tenancy_core::postgres::sqlx::migrate::Migrator> {
        if self.migrate {
            vec![tenancy_auth::oidc::PgOAuthStore::migrator()]
        } else {
            Vec::new()
        }
    }

    fn start(&self, tenancy: &Tenancy) -> Vec<tokio::task::JoinHandle<()>> {
        let mut config = self.config.provider.clone();
        if config.endpoint_base.is_none() {
            config.endpoint_base.clone_from(&self.config.endpoint_base);
        }
        let provider = OAuthProvider::new(tenancy.auth().clone(), self.store.clone(), config);
        let _already = self.provider.set(provider.clone());
        let Some(every) = self.config.purge_every else {
            return Vec::new();
        };
        vec![tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Err(error) = provider.purge_expired().await {
                    tracing::warn!(%error, "purging expired oauth requests and codes failed");
                }
            }
        })]
    }
}

// ---------------------------------------------------------------- helpers

fn module(t: &Tenancy) -> Result<&OidcModule, Problem> {
    t.module::<OidcModule>()
        .ok_or_else(|| Problem::internal(&Problem::bad_request("the oidc module is not added")))
}

fn provider(t: &Tenancy) -> Result<(&OidcModule, &OAuthProvider), Problem> {
    let module = module(t)?;
    let provider = module.try_provider().ok_or_else(|| {
        Problem::internal(&Problem::bad_request("the oidc module is not started"))
    })?;
    Ok((module, provider))
}

/// An RFC 6749 §5.2 JSON error answer (`no-store`); `invalid_client` adds
/// the `Basic` challenge (RFC 6749 §5.2), userinfo errors a `Bearer` one.
fn oauth_error(t: &Tenancy, error: &OAuthError, bearer: bool) -> Response<Bytes> {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let body = json!({ "error": error.code.as_str(), "error_description": error.description });
    let mut response = Response::new(Bytes::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    let realm = t.config().realm.replace(['"', '\\'], "");
    let challenge = if bearer {
        matches!(
            error.code,
            OAuthErrorCode::InvalidToken | OAuthErrorCode::InsufficientScope
        )
        .then(|| {
            format!(
                "Bearer realm=\"{realm}\", error=\"{}\", error_description=\"{}\"",
                error.code,
                error.description.replace(['"', '\\'], "")
            )
        })
    } else {
        (error.code == OAuthErrorCode::InvalidClient).then(|| format!("Basic realm=\"{realm}\""))
    };
    if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

fn oauth_json(value: &impl serde::Serialize) -> Result<Response<Bytes>, Problem> {
    let mut response = json_response(StatusCode::OK, value)?;
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

fn redirect(location: &str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An HTML answer with the headers every provider page carries.
fn html(status: StatusCode, body: String) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn error_page(status: StatusCode, error: &OAuthError) -> Response<Bytes> {
    html(
        status,
        page(
            "Authorization error",
            &format!(
                "<h1>This request cannot be completed</h1><p><code>{}</code></p><p>{}</p>",
                escape_html(error.code.as_str()),
                escape_html(&error.description)
            ),
        ),
    )
}

/// Every value of every parameter, from the query (GET) or a
/// form-urlencoded body (POST).
fn params(r: &ApiRequest, limit: usize) -> Result<HashMap<String, Vec<String>>, OAuthError> {
    let raw: &[u8] = if r.method == Method::POST {
        if r.body.len() > limit {
            return Err(OAuthError::new(
                OAuthErrorCode::InvalidRequest,
                "the request body is too large",
            ));
        }
        let form = r
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !form && !r.body.is_empty() {
            return Err(OAuthError::new(
                OAuthErrorCode::InvalidRequest,
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        &r.body
    } else {
        r.uri.query().unwrap_or("").as_bytes()
    };
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for (name, value) in form_urlencoded::parse(raw) {
        map.entry(name.into_owned())
            .or_default()
            .push(value.into_owned());
    }
    Ok(map)
}

/// One parameter: `None` if absent or empty, `invalid_request` if repeated
/// (RFC 6749 §3.1, §3.2).
fn one<'a>(
    params: &'a HashMap<String, Vec<String>>,
    name: &str,
) -> Result<Option<&'a str>, OAuthError> {
    match params.get(name).map(Vec::as_slice) {
        None | Some([]) => Ok(None),
        Some([value]) if value.is_empty() => Ok(None),
        Some([value]) => Ok(Some(value.as_str())),
        Some(_) => Err(OAuthError::new(
            OAuthErrorCode::InvalidRequest,
            format!("{name} is repeated"),
        )),
    }
}

fn authorization(r: &ApiRequest) -> Option<&str> {
    r.headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

async fn authenticate_client(
    provider: &OAuthProvider,
    r: &ApiRequest,
    params: &HashMap<String, Vec<String>>,
) -> Result<OAuthClient, OAuthError> {
    let basic = authorization(r).filter(|h| {
        h.trim_start()
            .get(..6)
            .is_some_and(|s| s.eq_ignore_ascii_case("basic "))
    });
    if authorization(r).is_some() && basic.is_none() {
        return Err(OAuthError::new(
            OAuthErrorCode::InvalidClient,
            "client authentication failed",
        ));
    }
    let mut credentials = ClientCredentials::default();
    credentials.authorization = basic;
    credentials.client_id = one(params, "client_id")?;
    credentials.client_secret = one(params, "client_secret")?;
    credentials.client_assertion = one(params, "client_assertion")?;
    credentials.client_assertion_type = one(params, "client_assertion_type")?;
    provider.authenticate_client(credentials).await
}

/// The user of the browser's first-party SDK session, if any.
async fn signed_in(
    t: &Tenancy,
    provider: &OAuthProvider,
    r: &ApiRequest,
) -> Result<Option<SignedIn>, OAuthError> {
    let Some(cookie) = r.cookie(&t.config().cookies.access_name) else {
        return Ok(None);
    };
    let credentials = Credentials {
        authorization: None,
        cookie: Some(cookie),
        tenant: None,
    };
    match t.auth().authenticator().authenticate(credentials).await {
        Ok(principal) => provider.signed_in(&principal).await,
        Err(error) if error.is_unauthorized() => Ok(None),
        Err(error) => Err(OAuthError::server(&error)),
    }
}

/// The browser-binding value of the CSRF cookie, and whether it must be set.
fn browser_binding(t: &Tenancy, module: &OidcModule, r: &ApiRequest) -> (String, bool) {
    match r.cookie(&csrf_cookie_name(t, module)) {
        Some(value) if value.len() == 43 => (value.to_owned(), false),
        // 256 random bits from the SDK's own generator.
        _ => (
            tenancy_auth::SecretToken::generate("")
                .expose_secret()
                .to_owned(),
            true,
        ),
    }
}

/// The CSRF token of `interaction` for the browser holding `binding`.
fn csrf_token(binding: &str, interaction: &str) -> String {
    let mut hasher = sha2::Sha256::new();
    hasher.update(b"tenancy-oauth-csrf\0");
    hasher.update(binding.as_bytes());
    hasher.update(b"\0");
    hasher.update(interaction.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hasher.finalize())
}

/// The CSRF binding cookie's name: with `__Host-` in front when cookies
/// are `Secure`, so a sibling subdomain cannot plant its own binding
/// (login CSRF); the cookie then has `Path=/` and no `Domain`, as the
/// prefix requires.
fn csrf_cookie_name(t: &Tenancy, module: &OidcModule) -> String {
    let name = &module.config.csrf_cookie;
    if t.config().cookies.secure && !name.starts_with("__Host-") {
        format!("__Host-{name}")
    } else {
        name.clone()
    }
}

fn csrf_ok(
    t: &Tenancy,
    module: &OidcModule,
    r: &ApiRequest,
    interaction: &str,
    presented: &str,
) -> bool {
    let Some(binding) = r.cookie(&csrf_cookie_name(t, module)) else {
        return false;
    };
    let expected = csrf_token(binding, interaction);
    expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

fn with_binding(
    t: &Tenancy,
    module: &OidcModule,
    mut response: Response<Bytes>,
    binding: &str,
    fresh: bool,
) -> Response<Bytes> {
    if fresh {
        add_cookie(
            &mut response,
            &set_cookie(
                &csrf_cookie_name(t, module),
                binding,
                if t.config().cookies.secure {
                    "/"
                } else {
                    "/oauth"
                },
                None,
                t.config().cookies.secure,
            ),
        );
    }
    response
}

// ---------------------------------------------------------------- discovery

async fn discovery(
    t: &Tenancy,
    _: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (module, provider) = provider(t)?;
    let at = |path: &str| module.endpoint(t, path);
    let algorithms: Vec<&str> = provider
        .id_token_algorithms()
        .into_iter()
        .map(KeyAlgorithm::as_str)
        .collect();
    let document = json!({
        "issuer": provider.issuer(),
        "authorization_endpoint": at("/oauth/authorize"),
        "token_endpoint": at("/oauth/token"),
        "userinfo_endpoint": at("/oauth/userinfo"),
        "jwks_uri": at("/.well-known/jwks.json"),
        "introspection_endpoint": at("/oauth/introspect"),
        "revocation_endpoint": at("/oauth/revoke"),
        "end_session_endpoint": at("/oauth/logout"),
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algorithms,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "PS256", "ES256", "EdDSA"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "code_challenge_methods_supported": ["S256"],
        "prompt_values_supported": ["none", "login", "consent"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "azp", "at_hash", "sid", "tid", "org_id", "roles", "email", "email_verified", "name"],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
    });
    let mut response = json_response(StatusCode::OK, &document)?;
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    Ok(response)
}

// ---------------------------------------------------------------- authorize

async fn authorize(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (module, provider) = provider(t)?;
    let params = match params(r, t.config().body_limit) {
        Ok(params) => params,
        Err(error) => return Ok(error_page(StatusCode::BAD_REQUEST, &error)),
    };
    let user = match signed_in(t, provider, r).await {
        Ok(user) => user,
        Err(error) => return Ok(error_page(StatusCode::SERVICE_UNAVAILABLE, &error)),
    };
    let step = if let Some(id) = params.get("interaction").and_then(|v| v.first()) {
        // Resumed after the login page.
        let expired = || {
            OAuthError::new(
                OAuthErrorCode::InvalidRequest,
                "this authorization request expired; start again from the application",
            )
        };
        let Some(id) = InteractionId::parse(id) else {
            return Ok(error_page(StatusCode::BAD_REQUEST, &expired()));
        };
        let interaction = match provider.interaction(&id).await {
            Ok(Some(interaction)) => interaction,
            Ok(None) => return Ok(error_page(StatusCode::BAD_REQUEST, &expired())),
            Err(error) => return Ok(error_page(StatusCode::SERVICE_UNAVAILABLE, &error)),
        };
        let client = match provider
            .find_client(interaction.request.client_id.as_str())
            .await
        {
            Ok(Some(client)) => client,
            Ok(None) => return Ok(error_page(StatusCode::BAD_REQUEST, &expired())),
            Err(error) => return Ok(error_page(StatusCode::SERVICE_UNAVAILABLE, &error)),
        };
        let request = interaction.request.clone();
        provider
            .authorize(&client, request, Some(interaction), user)
            .await
    } else {
        let (client, request) = match provider.validate_authorization_request(&params).await {
            Ok(valid) => valid,
            Err(AuthorizeError::Fatal(error)) => {
                let status = if error.code == OAuthErrorCode::ServerError {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::BAD_REQUEST
                };
                return Ok(error_page(status, &error));
            }
            Err(AuthorizeError::Redirect(location)) => return Ok(redirect(&location)),
            Err(_) => {
                return Ok(error_page(
                    StatusCode::BAD_REQUEST,
                    &OAuthError::new(OAuthErrorCode::InvalidRequest, "invalid request"),
                ));
            }
        };
        provider.authorize(&client, request, None, user).await
    };
    Ok(match step {
        Ok(AuthorizeStep::Redirect(location)) => redirect(&location),
        Ok(AuthorizeStep::Login(id)) => {
            redirect(&module.local(&format!("/oauth/login?interaction={}", id.as_str())))
        }
        Ok(AuthorizeStep::Consent(id)) => {
            redirect(&module.local(&format!("/oauth/consent?interaction={}", id.as_str())))
        }
        Ok(_) => error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            &OAuthError::new(OAuthErrorCode::ServerError, "unexpected step"),
        ),
        Err(error) => error_page(StatusCode::BAD_REQUEST, &error),
    })
}

// ---------------------------------------------------------------- login and consent pages

/// A login or consent form posted back: its fields and the pending
/// interaction it names, once its CSRF token is this browser's; or the
/// error page to answer.
async fn submitted_form(
    t: &Tenancy,
    module: &OidcModule,
    provider: &OAuthProvider,
    r: &ApiRequest,
) -> Result<
    (
        HashMap<String, Vec<String>>,
        tenancy_auth::oidc::Interaction,
        OAuthClient,
    ),
    Response<Bytes>,
> {
    let form = params(r, t.config().body_limit)
        .map_err(|error| error_page(StatusCode::BAD_REQUEST, &error))?;
    let field = |name: &str| one(&form, name).ok().flatten();
    let (interaction, client) = pending(provider, field("interaction")).await?;
    if !csrf_ok(
        t,
        module,
        r,
        interaction.id.as_str(),
        field("csrf").unwrap_or(""),
    ) {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            &OAuthError::new(
                OAuthErrorCode::InvalidRequest,
                "the form expired or was not sent from this site; reload the page",
            ),
        ));
    }
    Ok((form, interaction, client))
}

async fn pending(
    provider: &OAuthProvider,
    raw: Option<&str>,
) -> Result<(tenancy_auth::oidc::Interaction, OAuthClient), Response<Bytes>> {
    let expired = || {
        error_page(
            StatusCode::BAD_REQUEST,
            &OAuthError::new(
                OAuthErrorCode::InvalidRequest,
                "this authorization request expired; start again from the application",
            ),
        )
    };
    let id = raw.and_then(InteractionId::parse).ok_or_else(expired)?;
    let interaction = match provider.interaction(&id).await {
        Ok(Some(found)) => found,
        Ok(None) => return Err(expired()),
        Err(error) => return Err(error_page(StatusCode::SERVICE_UNAVAILABLE, &error)),
    };
    match provider
        .find_client(interaction.request.client_id.as_str())
        .await
    {
        Ok(Some(client)) => Ok((interaction, client)),
        Ok(None) => Err(expired()),
        Err(error) => Err(error_page(StatusCode::SERVICE_UNAVAILABLE, &error)),
    }
}

fn render_login(
    t: &Tenancy,
    module: &OidcModule,
    r: &ApiRequest,
    status: StatusCode,
    interaction: &tenancy_auth::oidc::Interaction,
    client: &OAuthClient,
    error: Option<&str>,
) -> Response<Bytes> {
    let (binding, fresh) = browser_binding(t, module, r);
    let csrf = csrf_token(&binding, interaction.id.as_str());
    let body = module.config.ui.login_page(&LoginPage {
        action: &module.local("/oauth/login"),
        interaction: interaction.id.as_str(),
        csrf: &csrf,
        client_name: &client.name,
        login_hint: interaction.request.login_hint.as_deref(),
        error,
    });
    with_binding(t, module, html(status, body), &binding, fresh)
}

async fn login_page(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (module, provider) = provider(t)?;
    let (interaction, client) = match pending(provider, r.query("interaction").as_deref()).await {
        Ok(found) => found,
        Err(page) => return Ok(page),
    };
    Ok(render_login(
        t,
        module,
        r,
        StatusCode::OK,
        &interaction,
        &client,
        None,
    ))
}

async fn login_submit(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (module, provider) = provider(t)?;
    let (form, interaction, client) = match submitted_form(t, module, provider, r).await {
        Ok(found) => found,
        Err(page) => return Ok(page),
    };
    let field = |name: &str| one(&form, name).ok().flatten();
    let (Some(email), Some(password)) = (field("email"), field("password")) else {
        return Ok(render_login(
            t,
            module,
            r,
            StatusCode::BAD_REQUEST,
            &interaction,
            &client,
            Some("Enter your email and password."),
        ));
    };
    let login = t
        .auth()
        .login(
            LoginRequest {
                email: email.to_owned(),
                password: Password::new(password),
                tenant: client.tenant_id,
            },
            &r.client(t.config()),
        )
        .await;
    let success = match login {
        Ok(success) => success,
        Err(error) => {
            let (status, message) = match &error {
                tenancy_auth::Error::InvalidCredentials => {
                    (StatusCode::UNAUTHORIZED, "Wrong email or password.")
                }
                tenancy_auth::Error::AccountLocked { .. }
                | tenancy_auth::Error::ClientThrottled { .. }
                | tenancy_auth::Error::RateLimited { .. } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many attempts. Try again later.",
                ),
                tenancy_auth::Error::NotAMember
                | tenancy_auth::Error::AccountDisabled
                | tenancy_auth::Error::TenantNotActive { .. } => (
                    StatusCode::FORBIDDEN,
                    "This account cannot sign in to this application.",
                ),
                tenancy_auth::Error::Overloaded { .. } => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The service is busy. Try again shortly.",
                ),
                other => {
                    tracing::error!(error = %other, "oauth login failed");
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Signing in failed. Try again shortly.",
                    )
                }
            };
            return Ok(render_login(
                t,
                module,
                r,
                status,
                &interaction,
                &client,
                Some(message),
            ));
        }
    };
    if let Err(error) = provider
        .logged_in(&interaction.id, success.session.id)
        .await
    {
        return Ok(error_page(StatusCode::SERVICE_UNAVAILABLE, &error));
    }
    let mut response = redirect(&module.local(&format!(
        "/oauth/authorize?interaction={}",
        interaction.id.as_str()
    )));
    let cookies = &t.config().cookies;
    let now = time::OffsetDateTime::now_utc();
    let access_age = (success.access_token.expires_at - now)
        .whole_seconds()
        .max(0);
    let refresh_age = (success.session.absolute_expires_at - now)
        .whole_seconds()
        .max(0);
    add_cookie(
        &mut response,
        &set_cookie(
            &cookies.access_name,
            &success.access_token.token,
            "/",
            Some(access_age),
            cookies.secure,
        ),
    );
    add_cookie(
        &mut response,
        &set_cookie(
            &cookies.refresh_name,
            success.refresh_token.expose_secret(),
            &cookies.refresh_path,
            Some(refresh_age),
            cookies.secure,
        ),
    );
    Ok(response)
}

async fn consent_page(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (module, provider) = provider(t)?;
    let (interaction, client) = match pending(provider, r.query("interaction").as_deref()).await {
        Ok(found) => found,
        Err(page) => return Ok(page),
    };
    let user = signed_in(t, provider, r).await.ok().flatten();
    if user.is_none() || user.map(|u| u.user_id) != interaction.consent_user {
        return Ok(redirect(&module.local(&format!(
            "/oauth/authorize?interaction={}",
            interaction.id.as_str()
        ))));
    }
    let (binding, fresh) = browser_binding(t, module, r);
    let csrf = csrf_token(&binding, interaction.id.as_str());
    let body = module.config.ui.consent_page(&ConsentPage {
        action: &module.local("/oauth/consent"),
        interaction: interaction.id.as_str(),
        csrf: &csrf,
        client_name: &client.name,
        scopes: &interaction.request.scopes,
    });
    Ok(with_binding(
        t,
        module,
        html(StatusCode::OK, body),
        &binding,
        fresh,
    ))
}

async fn consent_submit(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (module, provider) = provider(t)?;
    let (form, interaction, _) = match submitted_form(t, module, provider, r).await {
        Ok(found) => found,
        Err(page) => return Ok(page),
    };
    let field = |name: &str| one(&form, name).ok().flatten();
    let allow = match field("decision") {
        Some("allow") => true,
        Some("deny") => false,
        _ => {
            return Ok(error_page(
                StatusCode::BAD_REQUEST,
                &OAuthError::new(
                    OAuthErrorCode::InvalidRequest,
                    "decision must be allow or deny",
                ),
            ));
        }
    };
    let user = match signed_in(t, provider, r).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            return Ok(redirect(&module.local(&format!(
                "/oauth/authorize?interaction={}",
                interaction.id.as_str()
            ))));
        }
        Err(error) => return Ok(error_page(StatusCode::SERVICE_UNAVAILABLE, &error)),
    };
    Ok(match provider.consent(&interaction.id, user, allow).await {
        Ok(AuthorizeStep::Redirect(location)) => redirect(&location),
        Ok(_) => error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            &OAuthError::new(OAuthErrorCode::ServerError, "unexpected step"),
        ),
        Err(error) => error_page(StatusCode::BAD_REQUEST, &error),
    })
}

// ---------------------------------------------------------------- token endpoint

async fn token(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (_, provider) = provider(t)?;
    let outcome = async {
        let params = params(r, t.config().body_limit)?;
        let client = authenticate_client(provider, r, &params).await?;
        let grant = one(&params, "grant_type")?.ok_or_else(|| {
            OAuthError::new(OAuthErrorCode::InvalidRequest, "grant_type is required")
        })?;
        let info = r.client(t.config());
        match GrantType::parse(grant) {
            Some(GrantType::AuthorizationCode) => {
                provider
                    .exchange_code(
                        &client,
                        one(&params, "code")?,
                        one(&params, "redirect_uri")?,
                        one(&params, "code_verifier")?,
                        &info,
                    )
                    .await
            }
            Some(GrantType::RefreshToken) => {
                provider
                    .refresh(
                        &client,
                        one(&params, "refresh_token")?,
                        one(&params, "scope")?,
                        &info,
                    )
                    .await
            }
            Some(GrantType::ClientCredentials) => {
                provider
                    .client_credentials(&client, one(&params, "scope")?)
                    .await
            }
            _ => Err(OAuthError::new(
                OAuthErrorCode::UnsupportedGrantType,
                "the grant type is not supported",
            )),
        }
    }
    .await;
    match outcome {
        Ok(tokens) => oauth_json(&tokens),
        Err(error) => Ok(oauth_error(t, &error, false)),
    }
}

// ---------------------------------------------------------------- userinfo

async fn userinfo(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (_, provider) = provider(t)?;
    let invalid = || OAuthError::new(OAuthErrorCode::InvalidToken, "the access token is invalid");
    let outcome = async {
        let token = authorization(r)
            .and_then(|h| {
                let (scheme, token) = h.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty())
            .ok_or_else(invalid)?;
        let principal = t
            .auth()
            .authenticator()
            .verify_access_token(token)
            .await
            .map_err(|error| {
                if error.is_unauthorized() {
                    invalid()
                } else {
                    OAuthError::new(
                        OAuthErrorCode::TemporarilyUnavailable,
                        "the server is unavailable",
                    )
                }
            })?;
        provider.userinfo(&principal).await
    }
    .await;
    match outcome {
        Ok(claims) => oauth_json(&claims),
        Err(error) => Ok(oauth_error(t, &error, true)),
    }
}

// ---------------------------------------------------------------- introspection and revocation

async fn introspect(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (_, provider) = provider(t)?;
    let outcome = async {
        let params = params(r, t.config().body_limit)?;
        let client = authenticate_client(provider, r, &params).await?;
        if client.kind != ClientKind::Confidential {
            return Err(OAuthError::new(
                OAuthErrorCode::InvalidClient,
                "introspection needs a confidential client",
            ));
        }
        let token = one(&params, "token")?
            .ok_or_else(|| OAuthError::new(OAuthErrorCode::InvalidRequest, "token is required"))?;
        provider.introspect(&client, token).await
    }
    .await;
    match outcome {
        Ok(answer) => oauth_json(&answer),
        Err(error) => Ok(oauth_error(t, &error, false)),
    }
}

async fn revoke(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (_, provider) = provider(t)?;
    let outcome = async {
        let params = params(r, t.config().body_limit)?;
        let client = authenticate_client(provider, r, &params).await?;
        let token = one(&params, "token")?
            .ok_or_else(|| OAuthError::new(OAuthErrorCode::InvalidRequest, "token is required"))?;
        provider.revoke(&client, token).await
    }
    .await;
    match outcome {
        Ok(()) => {
            let mut response = Response::new(Bytes::new());
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
        Err(error) => Ok(oauth_error(t, &error, false)),
    }
}

// ---------------------------------------------------------------- logout

async fn logout(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (module, provider) = provider(t)?;
    let params = match params(r, t.config().body_limit) {
        Ok(params) => params,
        Err(error) => return Ok(error_page(StatusCode::BAD_REQUEST, &error)),
    };
    let field = |name: &str| one(&params, name);
    let bad = |d: &'static str| {
        Ok(error_page(
            StatusCode::BAD_REQUEST,
            &OAuthError::new(OAuthErrorCode::InvalidRequest, d),
        ))
    };
    let (Ok(hint_text), Ok(client_id), Ok(target), Ok(state)) = (
        field("id_token_hint"),
        field("client_id"),
        field("post_logout_redirect_uri"),
        field("state"),
    ) else {
        return bad("a parameter is repeated");
    };
    let hint = match hint_text {
        Some(text) => match provider.id_token_hint(text).await {
            Some(hint) => Some(hint),
            None => return bad("id_token_hint is not an ID token of this provider"),
        },
        None => None,
    };
    let client_id = match (client_id, &hint) {
        (Some(id), Some(hint)) if id != hint.client_id.as_str() => {
            return bad("client_id differs from the id_token_hint's audience");
        }
        (Some(id), _) => Some(id.to_owned()),
        (None, Some(hint)) => Some(hint.client_id.to_string()),
        (None, None) => None,
    };
    let location = match target {
        None => None,
        Some(uri) => {
            let client = match &client_id {
                Some(id) => match provider.find_client(id).await {
                    Ok(Some(client)) => client,
                    Ok(None) => return bad("unknown client_id"),
                    Err(error) => return Ok(error_page(StatusCode::SERVICE_UNAVAILABLE, &error)),
                },
                None => return bad("post_logout_redirect_uri needs client_id or id_token_hint"),
            };
            match provider.post_logout_redirect(&client, uri, state) {
                Ok(location) => Some(location),
                Err(error) => return Ok(error_page(StatusCode::BAD_REQUEST, &error)),
            }
        }
    };
    let browser = signed_in(t, provider, r).await.ok().flatten();
    // Without an ID token of the client, or with one of another user than
    // the one signed in here, a logout may come from any site: ask the
    // user first (RP-Initiated Logout §2), through a form whose CSRF token
    // is bound to this browser.
    let foreign_hint = match (&hint, &browser) {
        (Some(hint), Some(user)) => hint.user_id != user.user_id,
        _ => false,
    };
    if hint.is_none() || foreign_hint {
        let presented = field("csrf").ok().flatten().unwrap_or("");
        let confirmed = r.method == Method::POST && csrf_ok(t, module, r, "logout", presented);
        if !confirmed {
            let (binding, fresh) = browser_binding(t, module, r);
            let csrf = csrf_token(&binding, "logout");
            let hidden = |name: &str, value: Option<&str>| {
                value
                    .map(|v| {
                        format!(
                            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                            escape_html(v)
                        )
                    })
                    .unwrap_or_default()
            };
            let body = page(
                "Sign out",
                &format!(
                    "<h1>Sign out?</h1><form method=\"post\" action=\"{action}\">{}{}{}{}\
                     <button type=\"submit\">Sign out</button></form>",
                    hidden("csrf", Some(&csrf)),
                    hidden("client_id", client_id.as_deref()),
                    hidden("post_logout_redirect_uri", target),
                    hidden("state", state),
                    action = escape_html(&module.local("/oauth/logout")),
                ),
            );
            return Ok(with_binding(
                t,
                module,
                html(StatusCode::OK, body),
                &binding,
                fresh,
            ));
        }
    }
    let mut ended = Vec::new();
    if let Some(user) = browser {
        ended.push(user.session_id);
    }
    if let Some(hint) = &hint
        && let Some(session) = hint.session_id
        && browser.is_none_or(|user| user.user_id == hint.user_id)
    {
        ended.push(session);
    }
    for session in ended {
        if let Err(error) = provider.end_session(session).await {
            return Ok(error_page(StatusCode::SERVICE_UNAVAILABLE, &error));
        }
    }
    let mut response = match location {
        Some(location) => redirect(&location),
        None => html(
            StatusCode::OK,
            page("Signed out", "<h1>You are signed out</h1>"),
        ),
    };
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

// ---------------------------------------------------------------- client management

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientBody {
    name: String,
    #[serde(default)]
    kind: Option<ClientKind>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    post_logout_redirect_uris: Vec<String>,
    #[serde(default)]
    grant_types: Vec<GrantType>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    id_token_signed_response_alg: Option<String>,
    #[serde(default)]
    jwks: Option<Value>,
}

fn new_client(input: ClientBody) -> Result<NewOAuthClient, Problem> {
    let uris = |field: &str, list: Vec<String>| -> Result<Vec<RedirectUri>, Problem> {
        list.iter()
            .enumerate()
            .map(|(i, uri)| {
                RedirectUri::parse(uri)
                    .map_err(|e| Problem::invalid(format!("{field}[{i}]"), e.to_string()))
            })
            .collect()
    };
    let id_token_signed_response_alg = input
        .id_token_signed_response_alg
        .map(|alg| {
            alg.parse::<KeyAlgorithm>().map_err(|_| {
                Problem::invalid("id_token_signed_response_alg", "not a supported algorithm")
            })
        })
        .transpose()?;
    Ok(NewOAuthClient {
        name: input.name,
        kind: input.kind.unwrap_or_default(),
        redirect_uris: uris("redirect_uris", input.redirect_uris)?,
        post_logout_redirect_uris: uris(
            "post_logout_redirect_uris",
            input.post_logout_redirect_uris,
        )?,
        grant_types: input.grant_types,
        scopes: input.scopes,
        first_party: false,
        id_token_signed_response_alg,
        jwks: input.jwks,
    })
}

fn client_problem(error: &ClientError) -> Problem {
    match error {
        ClientError::InvalidInput { field, reason } => {
            Problem::invalid(field.clone(), reason.clone())
        }
        ClientError::NotFound => Problem::not_found(),
        ClientError::PublicClient => Problem::conflict("a public client has no secret"),
        ClientError::Auth(tenancy_auth::Error::TenantNotActive { status }) => {
            Problem::forbidden(format!("the tenant is {status}"))
        }
        other => Problem::unavailable(other),
    }
}

fn client_json(client: &OAuthClient) -> Value {
    let mut value = serde_json::to_value(client).unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.insert("client_id".into(), json!(client.id.as_str()));
    }
    value
}

fn ctx(context: Option<&RequestContext>) -> Result<&RequestContext, Problem> {
    context.ok_or_else(|| Problem::internal(&Problem::bad_request("route ran without its context")))
}

/// Registering a client, changing it or its secret gives it powers (its
/// `client_credentials` tokens carry the registering member's roles): only
/// a member's own session may, never an API key or an OAuth client's token.
fn first_party_member(c: &RequestContext) -> Result<(), Problem> {
    if c.user_id().is_none() || c.principal().oauth.is_some() {
        return Err(Problem::forbidden(
            "registering or changing OAuth clients needs a member's own session",
        ));
    }
    Ok(())
}

fn client_id_param(r: &ApiRequest) -> Result<ClientId, Problem> {
    r.param("client_id")?
        .parse()
        .map_err(|_| Problem::not_found())
}

async fn create_client(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    first_party_member(c)?;
    let (_, provider) = provider(t)?;
    let input: ClientBody = r.json(t.config().body_limit)?;
    let new = new_client(input)?;
    let (client, secret) = provider
        .register_client(Some(c.tenant_id()), new, c.principal().actor())
        .await
        .map_err(|e| client_problem(&e))?;
    let mut response = json_response(
        StatusCode::CREATED,
        &json!({
            "client": client_json(&client),
            "client_secret": secret.as_ref().map(|s| s.expose()),
        }),
    )?;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn list_clients(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let (_, provider) = provider(t)?;
    let page = crate::paging::page_request(r.uri.query())?;
    let page = provider
        .list_clients(Some(c.tenant_id()), &page)
        .await
        .map_err(|e| client_problem(&e))?;
    let items: Vec<Value> = page.items.iter().map(client_json).collect();
    json_response(
        StatusCode::OK,
        &json!({ "items": items, "next": page.next.map(|n| n.as_str().to_owned()) }),
    )
}

async fn get_client(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let (_, provider) = provider(t)?;
    let client = provider
        .get_client(Some(c.tenant_id()), &client_id_param(r)?)
        .await
        .map_err(|e| client_problem(&e))?;
    json_response(StatusCode::OK, &client_json(&client))
}

async fn update_client(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    first_party_member(c)?;
    let (_, provider) = provider(t)?;
    let id = client_id_param(r)?;
    let input: ClientBody = r.json(t.config().body_limit)?;
    let update = new_client(input)?;
    let client = provider
        .update_client(Some(c.tenant_id()), &id, update, c.principal().actor())
        .await
        .map_err(|e| client_problem(&e))?;
    json_response(StatusCode::OK, &client_json(&client))
}

async fn delete_client(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    let (_, provider) = provider(t)?;
    let id = client_id_param(r)?;
    provider
        .delete_client(Some(c.tenant_id()), &id, c.principal().actor())
        .await
        .map_err(|e| client_problem(&e))?;
    Ok(no_content())
}

async fn rotate_secret(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = ctx(c)?;
    first_party_member(c)?;
    let (_, provider) = provider(t)?;
    let id = client_id_param(r)?;
    let secret = provider
        .rotate_client_secret(Some(c.tenant_id()), &id, c.principal().actor())
        .await
        .map_err(|e| client_problem(&e))?;
    let mut response = json_response(StatusCode::OK, &json!({ "client_secret": secret.expose() }))?;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html("<script>\"a\"&'b'</script>"),
            "&lt;script&gt;&quot;a&quot;&amp;&#x27;b&#x27;&lt;/script&gt;"
        );
        let page = DefaultUi.login_page(&LoginPage {
            action: "/oauth/login",
            interaction: "i\"><script>",
            csrf: "c",
            client_name: "<b>Evil</b>",
            login_hint: Some("\" autofocus onfocus=\"x"),
            error: None,
        });
        assert!(!page.contains("<script>"));
        assert!(!page.contains("<b>Evil"));
        assert!(!page.contains("\" autofocus"));
        for name in ["interaction", "csrf", "email", "password"] {
            assert!(page.contains(&format!("name=\"{name}\"")), "{name}");
        }
        let consent = DefaultUi.consent_page(&ConsentPage {
            action: "/oauth/consent",
            interaction: "i",
            csrf: "c",
            client_name: "App",
            scopes: &["<x>".to_owned()],
        });
        assert!(consent.contains("name=\"decision\" value=\"allow\""));
        assert!(consent.contains("name=\"decision\" value=\"deny\""));
        assert!(consent.contains("&lt;x&gt;"));
    }

    #[test]
    fn csrf_tokens_bind_browser_and_interaction() {
        let a = csrf_token("browser-a", "interaction-1");
        assert_eq!(a, csrf_token("browser-a", "interaction-1"));
        assert_ne!(a, csrf_token("browser-b", "interaction-1"));
        assert_ne!(a, csrf_token("browser-a", "interaction-2"));
    }
}
