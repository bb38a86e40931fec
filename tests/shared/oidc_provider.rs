//! The OAuth 2.0 / OpenID Connect provider over real HTTP on 127.0.0.1,
//! shared by the axum and actix-web tests (each serves the app its own
//! way), on the in-memory stores and on Postgres.
//!
//! The relying party is the `openidconnect` crate, which nobody here wrote:
//! it discovers the provider, builds the authorization request (state,
//! nonce, PKCE S256), exchanges the code, verifies the ID token (signature
//! by the JWKS, `iss`, `aud`, `exp`, `nonce`, `at_hash`), reads userinfo,
//! refreshes, introspects and revokes. A `reqwest` client with a cookie
//! store plays the browser: it follows the login and consent forms by the
//! field names of the contract. The negative scenarios speak raw HTTP, one
//! RFC 6749 / OIDC error path each.

#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient,
    CoreClientAuthMethod, CoreErrorResponseType, CoreGrantType, CoreIdTokenVerifier,
    CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType, CoreUserInfoClaims,
};
use openidconnect::url::Url;
use openidconnect::{
    AccessTokenHash, AdditionalProviderMetadata, AuthType, AuthorizationCode, ClientId,
    ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IntrospectionUrl,
    IssuerUrl, LogoutProviderMetadata, LogoutRequest, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadata, RedirectUrl,
    RequestTokenError, RevocationUrl, Scope, SubjectIdentifier, TokenIntrospectionResponse,
    TokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tenancy_http::auth::oidc::{
    ClientKind, ClientSecret as IssuedSecret, GrantType, NewOAuthClient, OAuthClient, RedirectUri,
};
use tenancy_http::auth::{Argon2Config, AuthConfig, KeyEncryption, KeyEncryptionKey};
use tenancy_http::authz::Catalog;
use tenancy_http::core::{Actor, ManualClock, TenantId, UserId};
use tenancy_http::oidc::{OidcConfig, OidcModule};
use tenancy_http::{CookieConfig, HttpConfig, Tenancy};

/// Serves `tenancy` on `listener` (already bound, so the issuer can name
/// its address), in the background, until the test ends.
pub(crate) type Serve =
    fn(Tenancy, std::net::TcpListener) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Which stores the provider uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// In memory.
    Memory,
    /// A fresh Postgres schema (`DATABASE_URL`).
    Postgres,
}

/// The password of every account the scenarios register.
pub(crate) const PASSWORD: &str = "correct horse battery";
/// The redirect URI registered for the scenario clients (never contacted:
/// the browser stops at the first redirect that leaves the provider).
pub(crate) const CALLBACK: &str = "http://127.0.0.1:8080/callback";
/// A second client's redirect URI.
pub(crate) const OTHER_CALLBACK: &str = "http://127.0.0.1:8081/cb";
/// Where the scenario clients may be sent after logout.
pub(crate) const AFTER_LOGOUT: &str = "http://127.0.0.1:8080/bye";

/// A running provider.
pub(crate) struct Provider {
    /// `http://127.0.0.1:<port>`: the public base URL and the issuer.
    pub(crate) base: String,
    /// The app's services.
    pub(crate) tenancy: Tenancy,
    /// The app's clock.
    pub(crate) clock: Arc<ManualClock>,
    /// A client that follows no redirects and keeps no cookies.
    pub(crate) http: reqwest::Client,
}

/// A signed-up user, owner of their own tenant.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub(crate) email: String,
    pub(crate) user: UserId,
    pub(crate) tenant: TenantId,
    /// A first-party access token (`/auth/register`'s).
    pub(crate) token: String,
}

/// A client registered through the typed API.
#[derive(Debug, Clone)]
pub(crate) struct Registered {
    pub(crate) id: String,
    pub(crate) secret: Option<String>,
}

impl Provider {
    /// Binds a port, builds the app with `http://127.0.0.1:<port>` as its
    /// issuer and the OIDC module, and serves it. `None` when Postgres is
    /// asked for and no database is configured (outside CI).
    pub(crate) async fn launch(backend: Backend, serve: Serve) -> Option<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let mut auth = AuthConfig::new(base.clone(), "oidc-tests");
        auth.argon2 = Argon2Config::new(1024, 1, 1);
        auth.key_encryption =
            KeyEncryption::key(KeyEncryptionKey::new("oidc-tests", [7; 32]).unwrap());
        let http = HttpConfig::default()
            .with_cookies(CookieConfig::default().with_secure(false))
            .with_tenant_status_ttl(Duration::ZERO);
        let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
        let catalog = Catalog::new(["projects:read", "projects:create"]).unwrap();
        let builder = Tenancy::builder(catalog, auth)
            .http(http)
            .clock(clock.clone());
        let builder = match backend {
            Backend::Memory => builder
                .stores(tenancy_http::Stores::memory())
                .module(OidcModule::new(OidcConfig::default())),
            Backend::Postgres => {
                let schema = tenancy_http::core::testkit::postgres::TestSchema::create().await?;
                builder
                    .postgres(schema.pool.clone())
                    .module(OidcModule::postgres(schema.pool, OidcConfig::default()))
            }
        };
        let tenancy = builder.build().await.unwrap();
        serve(tenancy.clone(), listener).await;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Some(Self {
            base,
            tenancy,
            clock,
            http,
        })
    }

    /// `base` + `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Signs up `email` as the owner of a new tenant `slug`.
    pub(crate) async fn sign_up(&self, slug: &str, email: &str) -> Account {
        let reply = self
            .http
            .post(self.url("/auth/register"))
            .json(&json!({
                "email": email, "password": PASSWORD, "display_name": "Ada Lovelace",
                "tenant": { "slug": slug, "name": format!("{slug} Inc.") }
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 201, "sign up {slug}");
        let body: Value = reply.json().await.unwrap();
        Account {
            email: email.to_owned(),
            user: body["user"]["id"].as_str().unwrap().parse().unwrap(),
            tenant: body["tenant_id"].as_str().unwrap().parse().unwrap(),
            token: body["access_token"].as_str().unwrap().to_owned(),
        }
    }

    /// Registers a client in `owner`'s tenant through the typed API.
    pub(crate) async fn register(
        &self,
        owner: &Account,
        kind: ClientKind,
        redirect_uris: &[&str],
        grant_types: Vec<GrantType>,
        scopes: &[&str],
    ) -> Registered {
        let oidc = self.tenancy.module::<OidcModule>().unwrap();
        let new = NewOAuthClient {
            name: "Scenario client".into(),
            kind,
            redirect_uris: redirect_uris
                .iter()
                .map(|uri| RedirectUri::parse(uri).unwrap())
                .collect(),
            post_logout_redirect_uris: vec![RedirectUri::parse(AFTER_LOGOUT).unwrap()],
            grant_types,
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            first_party: false,
            ..NewOAuthClient::default()
        };
        let (client, secret): (OAuthClient, Option<IssuedSecret>) = oidc
            .provider()
            .register_client(Some(owner.tenant), new, Actor::User(owner.user))
            .await
            .unwrap();
        Registered {
            id: client.id.as_str().to_owned(),
            secret: secret.map(|s| s.expose().to_owned()),
        }
    }

    /// A confidential web client of `owner`'s tenant: code + refresh, the
    /// OIDC scopes and `projects:read`, redirecting to [`CALLBACK`].
    pub(crate) async fn web_client(&self, owner: &Account) -> Registered {
        self.register(
            owner,
            ClientKind::Confidential,
            &[CALLBACK],
            vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            &[
                "openid",
                "profile",
                "email",
                "offline_access",
                "projects:read",
            ],
        )
        .await
    }

    /// A public (PKCE, no secret) client of `owner`'s tenant.
    pub(crate) async fn public_client(&self, owner: &Account) -> Registered {
        self.register(
            owner,
            ClientKind::Public,
            &[CALLBACK],
            vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            &["openid", "profile", "email", "offline_access"],
        )
        .await
    }

    /// A confidential machine client of `owner`'s tenant (client credentials).
    pub(crate) async fn machine_client(&self, owner: &Account) -> Registered {
        self.register(
            owner,
            ClientKind::Confidential,
            &[],
            vec![GrantType::ClientCredentials],
            &["projects:read"],
        )
        .await
    }

    /// A browser of its own (cookie store, redirects followed by hand).
    pub(crate) fn browser(&self) -> Browser {
        Browser {
            base: self.base.clone(),
            http: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// `POST path` with a form body, authenticated as `client` with
    /// `client_secret_basic` when it has a secret (and `client_id` in the
    /// body otherwise).
    pub(crate) async fn post_form(
        &self,
        path: &str,
        client: Option<&Registered>,
        form: &[(&str, &str)],
    ) -> Reply {
        let mut form: Vec<(&str, &str)> = form.to_vec();
        let mut request = self.http.post(self.url(path));
        match client {
            Some(Registered {
                id,
                secret: Some(secret),
            }) => request = request.basic_auth(id, Some(secret)),
            Some(Registered { id, secret: None }) => form.push(("client_id", id)),
            None => {}
        }
        Reply::read(request.form(&form).send().await.unwrap()).await
    }

    /// `GET path` with an optional bearer token.
    pub(crate) async fn get(&self, path: &str, bearer: Option<&str>) -> Reply {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        Reply::read(request.send().await.unwrap()).await
    }

    /// RFC 7009 §2.1: `client` asks to revoke `token`.
    pub(crate) async fn revoke(
        &self,
        client: &Registered,
        token: &str,
        hint: Option<&str>,
    ) -> Reply {
        let mut form = vec![("token", token)];
        if let Some(hint) = hint {
            form.push(("token_type_hint", hint));
        }
        self.post_form("/oauth/revoke", Some(client), &form).await
    }

    /// Whether `token` introspects as active, asked by `resource_server`.
    pub(crate) async fn active(&self, resource_server: &Registered, token: &str) -> bool {
        let reply = self
            .post_form(
                "/oauth/introspect",
                Some(resource_server),
                &[("token", token)],
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json["active"].as_bool().unwrap()
    }

    /// Runs the browser part of a code flow for a fresh authorization
    /// request of `client` (PKCE S256, state, nonce): signs in as
    /// `account`, allows consent, and returns the code and the verifier.
    pub(crate) async fn code_for(
        &self,
        browser: &Browser,
        client: &Registered,
        account: &Account,
        scope: &str,
    ) -> (String, String) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let url = authorize_url(
            &self.base,
            &[
                ("response_type", "code"),
                ("client_id", &client.id),
                ("redirect_uri", CALLBACK),
                ("scope", scope),
                ("state", "st-1"),
                ("nonce", "n-1"),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ],
        );
        let trip = browser.run(&url, Some(account), Some("allow")).await;
        let redirect = trip.redirect();
        assert!(redirect.as_str().starts_with(CALLBACK), "{redirect}");
        assert_eq!(param(&redirect, "state").as_deref(), Some("st-1"));
        assert_eq!(param(&redirect, "iss").as_deref(), Some(self.base.as_str()));
        (
            param(&redirect, "code").expect("a code"),
            verifier.secret().clone(),
        )
    }

    /// Exchanges `code` for tokens as `client`; the raw answer.
    pub(crate) async fn exchange(
        &self,
        client: &Registered,
        code: &str,
        verifier: Option<&str>,
        redirect_uri: &str,
    ) -> Reply {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
        ];
        if let Some(verifier) = verifier {
            form.push(("code_verifier", verifier));
        }
        self.post_form("/oauth/token", Some(client), &form).await
    }
}

/// An answer, read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) text: String,
    pub(crate) json: Value,
}

impl Reply {
    pub(crate) async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            text,
            json,
        }
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an RFC 6749 §5.2 error answer: `status`, `error`, a JSON
    /// body (never problem+json), `Cache-Control: no-store`.
    #[track_caller]
    pub(crate) fn assert_oauth_error(&self, status: u16, error: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.json["error"], error, "{}", self.text);
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "RFC 6749 §5.2: errors are application/json, got {content_type}: {}",
            self.text
        );
        assert_eq!(
            self.header("cache-control"),
            Some("no-store"),
            "{}",
            self.text
        );
    }
}

/// `{base}/oauth/authorize?` + `params`.
pub(crate) fn authorize_url(base: &str, params: &[(&str, &str)]) -> String {
    let mut url = Url::parse(&format!("{base}/oauth/authorize")).unwrap();
    url.query_pairs_mut().extend_pairs(params);
    url.to_string()
}

/// A query parameter of `url`.
pub(crate) fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// A parameter of `url`'s query, or of its fragment (where a provider may
/// answer a request for a fragment response mode it does not support).
pub(crate) fn query_or_fragment(url: &Url, name: &str) -> Option<String> {
    param(url, name).or_else(|| {
        let fragment = url.fragment().unwrap_or_default();
        param(
            &Url::parse(&format!("http://fragment/?{fragment}")).ok()?,
            name,
        )
    })
}

/// The value of the form input named `name` in `html` (the first one).
pub(crate) fn input(html: &str, name: &str) -> Option<String> {
    let needle = format!("name=\"{name}\"");
    let at = html.find(&needle)?;
    let start = html[..at].rfind('<')?;
    let end = at + html[at..].find('>')?;
    let tag = &html[start..end];
    let value = tag.split_once("value=\"")?.1.split_once('"')?.0;
    Some(
        value
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&#x27;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// The `action` of the first form of `html`, resolved against `page`.
fn form_action(html: &str, page: &Url) -> Url {
    let form = &html[html.find("<form").expect("a form")..];
    let form = &form[..form.find('>').expect("a form tag")];
    assert!(
        form.to_ascii_lowercase().contains("method=\"post\""),
        "the form posts: {form}"
    );
    let action = form
        .split_once("action=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(action, _)| action.replace("&amp;", "&"))
        .expect("a form action");
    page.join(&action).unwrap()
}

/// A browser: a cookie store, redirects followed one by one.
pub(crate) struct Browser {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
}

/// Where a browser trip ended.
#[derive(Debug)]
pub(crate) enum Landing {
    /// A redirect out of the provider (to the client).
    Redirect(Url),
    /// A page the browser stopped at.
    Page {
        url: Url,
        status: u16,
        body: String,
        location: Option<String>,
    },
}

/// A browser trip: where it ended and the provider pages it went through.
#[derive(Debug)]
pub(crate) struct Trip {
    pub(crate) landing: Landing,
    /// The paths of the pages shown (`/oauth/login`, `/oauth/consent`).
    pub(crate) pages: Vec<String>,
}

impl Trip {
    /// The redirect out of the provider; panics on a page.
    #[track_caller]
    pub(crate) fn redirect(&self) -> Url {
        match &self.landing {
            Landing::Redirect(url) => url.clone(),
            Landing::Page {
                url, status, body, ..
            } => panic!("stopped at {url} ({status}): {body}"),
        }
    }
}

impl Browser {
    fn is_provider(&self, url: &Url) -> bool {
        url.as_str().starts_with(&format!("{}/", self.base))
    }

    /// Opens `url` and follows the provider's redirects: on the login page
    /// signs in as `login` (if given), on the consent page answers
    /// `decision` (if given); stops at the first redirect that leaves the
    /// provider, or at a page it was not told to fill.
    pub(crate) async fn run(
        &self,
        url: &str,
        login: Option<&Account>,
        decision: Option<&str>,
    ) -> Trip {
        let mut url = Url::parse(url).unwrap();
        let mut response = self.http.get(url.clone()).send().await.unwrap();
        let mut pages = Vec::new();
        for _ in 0..12 {
            let status = response.status().as_u16();
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if (300..400).contains(&status) {
                let next = url.join(location.as_deref().expect("a Location")).unwrap();
                if !self.is_provider(&next) {
                    return Trip {
                        landing: Landing::Redirect(next),
                        pages,
                    };
                }
                url = next;
                response = self.http.get(url.clone()).send().await.unwrap();
                continue;
            }
            let body = response.text().await.unwrap();
            let page = url.path().to_owned();
            let form = match (status, page.as_str(), login, decision) {
                (200, "/oauth/login", Some(account), _) => vec![
                    (
                        "interaction",
                        input(&body, "interaction").expect("interaction"),
                    ),
                    ("csrf", input(&body, "csrf").expect("csrf")),
                    ("email", account.email.clone()),
                    ("password", PASSWORD.to_owned()),
                ],
                (200, "/oauth/consent", _, Some(decision)) => vec![
                    (
                        "interaction",
                        input(&body, "interaction").expect("interaction"),
                    ),
                    ("csrf", input(&body, "csrf").expect("csrf")),
                    ("decision", decision.to_owned()),
                ],
                _ => {
                    return Trip {
                        landing: Landing::Page {
                            url,
                            status,
                            body,
                            location,
                        },
                        pages,
                    };
                }
            };
            pages.push(page);
            let action = form_action(&body, &url);
            response = self.post(&action, &form).await;
            url = action;
        }
        panic!("more than 12 hops from {url}");
    }

    /// A form post, as a browser sends it (with its `Origin`).
    pub(crate) async fn post(&self, url: &Url, form: &[(&str, String)]) -> reqwest::Response {
        self.http
            .post(url.clone())
            .header("origin", &self.base)
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Opens `url` and returns the page (no redirect followed).
    pub(crate) async fn open(&self, url: &str) -> (Url, reqwest::Response) {
        let url = Url::parse(url).unwrap();
        let response = self.http.get(url.clone()).send().await.unwrap();
        (url, response)
    }
}

// ---------------------------------------------------------------------------
// The relying party: the `openidconnect` crate.

/// What this provider advertises beyond OIDC Discovery's core fields.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct Endpoints {
    revocation_endpoint: String,
    introspection_endpoint: String,
}
impl AdditionalProviderMetadata for Endpoints {}

type Metadata = ProviderMetadata<
    LogoutProviderMetadata<Endpoints>,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// The relying party's client, every endpoint set.
pub(crate) type Rp = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointSet,
    EndpointSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The library's HTTP client: no redirects followed (as its docs advise).
pub(crate) fn rp_http() -> openidconnect::reqwest::Client {
    openidconnect::reqwest::Client::builder()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Discovers the provider at `base` and configures `client`.
pub(crate) async fn discover(
    base: &str,
    client: &Registered,
    http: &openidconnect::reqwest::Client,
) -> (Rp, Metadata) {
    let metadata = Metadata::discover_async(IssuerUrl::new(base.to_owned()).unwrap(), http)
        .await
        .unwrap_or_else(|e| panic!("discovery: {e:?}"));
    let extra = metadata.additional_metadata().additional_metadata.clone();
    let rp = CoreClient::from_provider_metadata(
        metadata.clone(),
        ClientId::new(client.id.clone()),
        client.secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(RedirectUrl::new(CALLBACK.to_owned()).unwrap())
    .set_revocation_url(RevocationUrl::new(extra.revocation_endpoint).unwrap())
    .set_introspection_url(IntrospectionUrl::new(extra.introspection_endpoint).unwrap());
    let rp = if client.secret.is_none() {
        // A public client names itself in the body (`none`).
        rp.set_auth_type(AuthType::RequestBody)
    } else {
        rp
    };
    (rp, metadata)
}

/// The error code of a failed token request made by the library.
fn token_error<RE: std::error::Error + 'static>(
    error: RequestTokenError<RE, openidconnect::StandardErrorResponse<CoreErrorResponseType>>,
) -> CoreErrorResponseType {
    match error {
        RequestTokenError::ServerResponse(response) => response.error().clone(),
        other => panic!("expected an OAuth error answer, got {other:?}"),
    }
}

/// The full flow through the `openidconnect` crate: discovery, authorize
/// (login, consent), code + PKCE exchange, ID token verification (JWKS
/// signature, iss, aud, nonce, at_hash), userinfo, refresh rotation and
/// reuse detection, introspection (RFC 7662), revocation (RFC 7009), a
/// second authorization that remembers consent, RP-initiated logout.
pub(crate) async fn relying_party_code_flow(provider: &Provider) {
    let ada = provider.sign_up("acme", "ada@acme.test").await;
    let web = provider.web_client(&ada).await;
    let resource_server = provider.machine_client(&ada).await;
    let http = rp_http();
    let (rp, metadata) = discover(&provider.base, &web, &http).await;
    assert_eq!(metadata.issuer().as_str(), provider.base);

    let browser = provider.browser();
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = rp
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("offline_access".into()))
        .add_scope(Scope::new("projects:read".into()))
        .set_pkce_challenge(challenge)
        .url();
    let trip = browser.run(url.as_str(), Some(&ada), Some("allow")).await;
    assert_eq!(trip.pages, ["/oauth/login", "/oauth/consent"], "{trip:?}");
    let back = trip.redirect();
    assert!(back.as_str().starts_with(&format!("{CALLBACK}?")), "{back}");
    assert_eq!(
        param(&back, "state").as_deref(),
        Some(state.secret().as_str())
    );
    // RFC 9207: the issuer names itself in the authorization response.
    assert_eq!(param(&back, "iss").as_deref(), Some(provider.base.as_str()));
    let code = param(&back, "code").expect("a code");

    let tokens = rp
        .exchange_code(AuthorizationCode::new(code.clone()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap_or_else(|e| panic!("token exchange: {e:?}"));
    assert_eq!(
        tokens.token_type(),
        &openidconnect::core::CoreTokenType::Bearer
    );
    assert!(tokens.expires_in().is_some());
    let refresh = tokens
        .refresh_token()
        .expect("offline_access: a refresh token")
        .clone();

    // The ID token, verified by the library: RS256 signature by a JWKS
    // key, iss, aud, exp, nonce; then at_hash against the access token.
    let id_token = tokens.id_token().expect("an ID token").clone();
    let verifier: CoreIdTokenVerifier = rp.id_token_verifier();
    let claims = id_token
        .claims(&verifier, &nonce)
        .unwrap_or_else(|e| panic!("ID token: {e:?}"))
        .clone();
    assert_eq!(claims.subject().as_str(), ada.user.to_string());
    assert_eq!(claims.issuer().as_str(), provider.base);
    assert_eq!(
        claims.audiences(),
        &[openidconnect::Audience::new(web.id.clone())]
    );
    assert_eq!(claims.nonce().map(|n| n.secret()), Some(nonce.secret()));
    assert!(claims.auth_time().is_some(), "auth_time");
    assert_eq!(
        claims.email().map(|e| e.as_str()),
        Some("ada@acme.test"),
        "scope email"
    );
    assert!(claims.email_verified().is_some(), "email_verified");
    assert!(claims.name().is_some(), "scope profile: name");
    let expected_hash = claims.access_token_hash().expect("at_hash");
    let actual_hash = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(&actual_hash, expected_hash, "at_hash");
    assert_eq!(
        id_token.signing_alg().unwrap(),
        &openidconnect::core::CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        "RS256 by default"
    );
    // The tenant and the roles as claims.
    let raw = jwt_claims(&id_token.to_string());
    assert_eq!(raw["tid"], ada.tenant.to_string());
    assert_eq!(raw["org_id"], ada.tenant.to_string());
    assert_eq!(raw["azp"], web.id.as_str());
    assert!(raw["sid"].is_string(), "{raw}");
    assert!(
        raw["roles"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("owner"))),
        "{raw}"
    );

    // userinfo: the same subject, the claims of the granted scopes.
    let info: CoreUserInfoClaims = rp
        .user_info(
            tokens.access_token().clone(),
            Some(SubjectIdentifier::new(ada.user.to_string())),
        )
        .unwrap()
        .request_async(&http)
        .await
        .unwrap_or_else(|e| panic!("userinfo: {e:?}"));
    assert_eq!(info.email().map(|e| e.as_str()), Some("ada@acme.test"));
    // Over POST too (OIDC Core §5.3.1).
    let posted = provider
        .http
        .post(provider.url("/oauth/userinfo"))
        .bearer_auth(tokens.access_token().secret())
        .send()
        .await
        .unwrap();
    let posted = Reply::read(posted).await;
    assert_eq!(posted.status, 200, "{}", posted.text);
    assert_eq!(posted.json["sub"], ada.user.to_string());

    // The access token works on the SDK's API (as a bearer).
    let me = provider
        .get("/auth/me", Some(tokens.access_token().secret()))
        .await;
    assert_eq!(me.status, 200, "{}", me.text);

    // Introspection (RFC 7662), by the library, as a resource server.
    let (rs, _) = discover(&provider.base, &resource_server, &http).await;
    let introspected = rs
        .introspect(tokens.access_token())
        .request_async(&http)
        .await
        .unwrap_or_else(|e| panic!("introspection: {e:?}"));
    assert!(introspected.active());
    assert_eq!(
        introspected.client_id().map(|c| c.as_str()),
        Some(web.id.as_str())
    );
    assert_eq!(introspected.sub(), Some(ada.user.to_string().as_str()));
    let scopes: Vec<String> = introspected
        .scopes()
        .map(|s| s.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default();
    assert!(scopes.contains(&"projects:read".to_owned()), "{scopes:?}");
    assert!(introspected.exp().is_some());
    assert_eq!(introspected.iss(), Some(provider.base.as_str()));

    // Refresh: rotation, then reuse of the spent token revokes the family.
    let renewed = rp
        .exchange_refresh_token(&refresh)
        .unwrap()
        .request_async(&http)
        .await
        .unwrap_or_else(|e| panic!("refresh: {e:?}"));
    let rotated = renewed
        .refresh_token()
        .expect("a rotated refresh token")
        .clone();
    assert_ne!(rotated.secret(), refresh.secret());
    assert_ne!(
        renewed.access_token().secret(),
        tokens.access_token().secret()
    );
    if let Some(id_token) = renewed.id_token() {
        // OIDC Core §12.2: same iss and sub, no nonce check required.
        let claims = id_token
            .claims(&verifier, |_: Option<&Nonce>| Ok(()))
            .unwrap_or_else(|e| panic!("refreshed ID token: {e:?}"));
        assert_eq!(claims.subject().as_str(), ada.user.to_string());
    }
    let fresh = renewed.access_token().clone();
    assert!(provider.active(&resource_server, fresh.secret()).await);
    let reused = rp
        .exchange_refresh_token(&refresh)
        .unwrap()
        .request_async(&http)
        .await
        .unwrap_err();
    assert_eq!(token_error(reused), CoreErrorResponseType::InvalidGrant);
    let after = rp
        .exchange_refresh_token(&rotated)
        .unwrap()
        .request_async(&http)
        .await
        .unwrap_err();
    assert_eq!(
        token_error(after),
        CoreErrorResponseType::InvalidGrant,
        "reuse revokes the whole family"
    );
    assert!(!provider.active(&resource_server, fresh.secret()).await);
    let me = provider.get("/auth/me", Some(fresh.secret())).await;
    assert_eq!(me.status, 401, "{}", me.text);

    // A second authorization: signed in already, consent remembered.
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, _, nonce) = rp
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("offline_access".into()))
        .set_pkce_challenge(challenge)
        .url();
    let trip = browser.run(url.as_str(), Some(&ada), None).await;
    // The family revoked above was the OAuth grant's, not the browser's
    // session: the browser may still be signed in; consent is remembered.
    assert!(
        !trip.pages.contains(&"/oauth/consent".to_owned()),
        "{trip:?}"
    );
    let code = param(&trip.redirect(), "code").expect("a code");
    let tokens = rp
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap_or_else(|e| panic!("second exchange: {e:?}"));
    let id_token = tokens.id_token().expect("an ID token").clone();
    id_token
        .claims(&verifier_of(&rp), &nonce)
        .unwrap_or_else(|e| panic!("second ID token: {e:?}"));

    // Revocation (RFC 7009 §2.1). The library refuses to send it to a
    // non-https endpoint (RFC 7009 §2: clients MUST verify the URL is
    // https) and this provider listens on plain loopback http, so the
    // request is the RFC's form post by hand: the refresh token, then the
    // access token; both introspect inactive; the API refuses the access
    // token; revoking again (or an unknown token) still answers 200.
    let refresh = tokens.refresh_token().expect("a refresh token").clone();
    let revoked = provider
        .revoke(&web, refresh.secret(), Some("refresh_token"))
        .await;
    assert_eq!(revoked.status, 200, "revoke refresh: {}", revoked.text);
    let refused = rp
        .exchange_refresh_token(&refresh)
        .unwrap()
        .request_async(&http)
        .await
        .unwrap_err();
    assert_eq!(token_error(refused), CoreErrorResponseType::InvalidGrant);
    let access = tokens.access_token().secret();
    let revoked = provider.revoke(&web, access, Some("access_token")).await;
    assert_eq!(revoked.status, 200, "revoke access: {}", revoked.text);
    assert!(!provider.active(&resource_server, access).await);
    let me = provider.get("/auth/me", Some(access)).await;
    assert_eq!(me.status, 401, "a revoked token is refused: {}", me.text);
    let info = provider.get("/oauth/userinfo", Some(access)).await;
    assert_eq!(info.status, 401, "{}", info.text);
    let again = provider.revoke(&web, access, None).await;
    assert_eq!(again.status, 200, "revoke again: {}", again.text);
    let unknown = provider.revoke(&web, "not-a-token", None).await;
    assert_eq!(unknown.status, 200, "revoke unknown: {}", unknown.text);

    // RP-initiated logout: the registered post-logout URI, state echoed.
    let end_session = metadata
        .additional_metadata()
        .end_session_endpoint
        .clone()
        .expect("end_session_endpoint");
    let logout = LogoutRequest::from(end_session)
        .set_id_token_hint(&id_token)
        .set_client_id(ClientId::new(web.id.clone()))
        .set_post_logout_redirect_uri(PostLogoutRedirectUrl::new(AFTER_LOGOUT.into()).unwrap())
        .set_state(CsrfToken::new("bye-1".into()))
        .http_get_url();
    let trip = browser.run(logout.as_str(), None, None).await;
    let back = match &trip.landing {
        Landing::Redirect(url) => url.clone(),
        // A confirmation page is allowed: submit it.
        Landing::Page { body, url, .. } if body.contains("<form") => {
            let action = form_action(body, url);
            let mut form = Vec::new();
            for name in ["csrf", "interaction", "state", "id_token_hint", "client_id"] {
                if let Some(value) = input(body, name) {
                    form.push((name, value));
                }
            }
            let response = browser.post(&action, &form).await;
            assert!(response.status().is_redirection(), "{}", response.status());
            action
                .join(response.headers()["location"].to_str().unwrap())
                .unwrap()
        }
        other => panic!("logout: {other:?}"),
    };
    assert!(back.as_str().starts_with(AFTER_LOGOUT), "{back}");
    assert_eq!(param(&back, "state").as_deref(), Some("bye-1"));
    // Signed out: a new authorization asks for the login again.
    let (challenge, _) = PkceCodeChallenge::new_random_sha256();
    let (url, _, _) = rp
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge)
        .url();
    let trip = browser.run(url.as_str(), None, None).await;
    match trip.landing {
        Landing::Page { url, status, .. } => {
            assert_eq!((url.path(), status), ("/oauth/login", 200));
        }
        Landing::Redirect(url) => panic!("signed out, yet redirected to {url}"),
    }
}

fn verifier_of(rp: &Rp) -> CoreIdTokenVerifier<'_> {
    rp.id_token_verifier()
}

/// A public client (no secret) through the library: PKCE is its proof.
pub(crate) async fn relying_party_public_client(provider: &Provider) {
    let ada = provider.sign_up("spa", "ada@spa.test").await;
    let spa = provider.public_client(&ada).await;
    let http = rp_http();
    let (rp, _) = discover(&provider.base, &spa, &http).await;
    let browser = provider.browser();
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, _, nonce) = rp
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        .url();
    let trip = browser.run(url.as_str(), Some(&ada), Some("allow")).await;
    let code = param(&trip.redirect(), "code").expect("a code");
    let tokens = rp
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap_or_else(|e| panic!("public exchange: {e:?}"));
    tokens
        .id_token()
        .expect("an ID token")
        .claims(&rp.id_token_verifier(), &nonce)
        .unwrap_or_else(|e| panic!("ID token: {e:?}"));
    assert!(
        tokens.refresh_token().is_none(),
        "no offline_access asked: no refresh token"
    );
}

/// `client_credentials` through the library: a machine token in the
/// client's tenant, with its scopes, no refresh token, no ID token;
/// introspected by another client of the tenant; revoked.
pub(crate) async fn relying_party_client_credentials(provider: &Provider) {
    let ada = provider.sign_up("machines", "ada@machines.test").await;
    let machine = provider.machine_client(&ada).await;
    let resource_server = provider.machine_client(&ada).await;
    let http = rp_http();
    let (rp, metadata) = discover(&provider.base, &machine, &http).await;
    assert!(
        metadata
            .grant_types_supported()
            .is_some_and(|g| g.contains(&CoreGrantType::ClientCredentials)),
        "client_credentials advertised"
    );
    let tokens = rp
        .exchange_client_credentials()
        .unwrap()
        .add_scope(Scope::new("projects:read".into()))
        .request_async(&http)
        .await
        .unwrap_or_else(|e| panic!("client credentials: {e:?}"));
    assert!(tokens.refresh_token().is_none(), "RFC 6749 §4.4.3");
    assert!(tokens.id_token().is_none(), "no user, no ID token");
    let access = tokens.access_token().secret().clone();
    let claims = jwt_claims(&access);
    assert_eq!(claims["sub"], machine.id.as_str());
    assert_eq!(claims["client_id"], machine.id.as_str());
    assert_eq!(claims["tid"], ada.tenant.to_string());
    assert_eq!(claims["scope"], "projects:read");

    let (rs, _) = discover(&provider.base, &resource_server, &http).await;
    let introspected = rs
        .introspect(tokens.access_token())
        .request_async(&http)
        .await
        .unwrap_or_else(|e| panic!("introspection: {e:?}"));
    assert!(introspected.active());
    assert_eq!(
        introspected.client_id().map(|c| c.as_str()),
        Some(machine.id.as_str())
    );

    // A scope the client was not registered for.
    let refused = rp
        .exchange_client_credentials()
        .unwrap()
        .add_scope(Scope::new("projects:create".into()))
        .request_async(&http)
        .await
        .unwrap_err();
    assert_eq!(token_error(refused), CoreErrorResponseType::InvalidScope);

    // A client_credentials token holds no session: revoking it is either
    // done (then it is inactive) or refused as RFC 7009 §2.2.1 allows
    // (unsupported_token_type, and it stays active until it expires).
    let revoked = provider
        .revoke(&machine, &access, Some("access_token"))
        .await;
    if revoked.status == 200 {
        assert!(!provider.active(&resource_server, &access).await);
    } else {
        revoked.assert_oauth_error(400, "unsupported_token_type");
        assert!(provider.active(&resource_server, &access).await);
    }
}

/// The claims of a JWT, unverified (the library verified the signature).
pub(crate) fn jwt_claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

// ---------------------------------------------------------------------------
// Error paths, over raw HTTP.

/// A browser signed in as `account` (through the provider's login page,
/// for an authorization of `client` that it completes).
async fn signed_in(provider: &Provider, client: &Registered, account: &Account) -> Browser {
    let browser = provider.browser();
    provider
        .code_for(&browser, client, account, "openid email")
        .await;
    browser
}

/// The usual parameters of an authorization request of `client`, with
/// `changes` applied (a `None` value removes the parameter).
fn request_params(client: &Registered, changes: &[(&str, Option<&str>)]) -> Vec<(String, String)> {
    let (challenge, _) = PkceCodeChallenge::new_random_sha256();
    let mut params: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", client.id.as_str()),
        ("redirect_uri", CALLBACK),
        ("scope", "openid email"),
        ("state", "st-err"),
        ("nonce", "n-err"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (name, value) in changes {
        params.retain(|(k, _)| k != name);
        if let Some(value) = value {
            params.push(((*name).to_owned(), (*value).to_owned()));
        }
    }
    params
}

fn url_of(base: &str, params: &[(String, String)]) -> String {
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    authorize_url(base, &pairs)
}

/// RFC 6749 §4.1.2.1 + RFC 9207: the error goes back to the registered
/// redirect URI with `error`, the request's `state` and the issuer.
#[track_caller]
fn assert_error_redirect(provider: &Provider, trip: &Trip, error: &str) {
    let back = trip.redirect();
    assert!(
        back.as_str().starts_with(&format!("{CALLBACK}?"))
            || back.as_str().starts_with(&format!("{CALLBACK}#")),
        "{back}"
    );
    assert_eq!(
        query_or_fragment(&back, "error").as_deref(),
        Some(error),
        "{back}"
    );
    assert_eq!(
        query_or_fragment(&back, "state").as_deref(),
        Some("st-err"),
        "{back}"
    );
    assert_eq!(
        query_or_fragment(&back, "iss").as_deref(),
        Some(provider.base.as_str()),
        "RFC 9207: {back}"
    );
    assert!(query_or_fragment(&back, "code").is_none(), "{back}");
}

/// The request is refused on a page of the provider: no redirect at all
/// (RFC 6749 §4.1.2.1, §10.15: an invalid client or redirect URI is never
/// redirected to).
#[track_caller]
fn assert_error_page(trip: &Trip, what: &str) {
    if let Some(problem) = not_an_error_page(trip) {
        panic!("{what}: {problem}");
    }
}

/// Why `trip` did not end on an error page of the provider, if it did not.
fn not_an_error_page(trip: &Trip) -> Option<String> {
    match &trip.landing {
        Landing::Page {
            status,
            location,
            url,
            ..
        } => {
            if !(400..500).contains(status) {
                Some(format!("{url} answered {status}, not an error page"))
            } else {
                location
                    .as_ref()
                    .map(|location| format!("an error page with a Location: {location}"))
            }
        }
        Landing::Redirect(url) => Some(format!("redirected to {url}")),
    }
}

/// invalid_client (RFC 6749 §5.2): a wrong secret or an unknown client,
/// by `client_secret_basic` (401 + `WWW-Authenticate: Basic`) and by
/// `client_secret_post`; a confidential client with no credentials; the
/// code stays redeemable by its own client, by `client_secret_post`.
pub(crate) async fn token_endpoint_client_authentication(provider: &Provider) {
    let ada = provider.sign_up("clientauth", "ada@clientauth.test").await;
    let web = provider.web_client(&ada).await;
    let browser = provider.browser();
    let (code, verifier) = provider.code_for(&browser, &web, &ada, "openid").await;
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", CALLBACK),
        ("code_verifier", verifier.as_str()),
    ];
    for (what, id, secret) in [
        ("wrong secret", web.id.as_str(), "not-the-secret"),
        ("unknown client", "no-such-client", "whatever"),
        ("empty secret", web.id.as_str(), ""),
    ] {
        let reply = Reply::read(
            provider
                .http
                .post(provider.url("/oauth/token"))
                .basic_auth(id, Some(secret))
                .form(&exchange)
                .send()
                .await
                .unwrap(),
        )
        .await;
        reply.assert_oauth_error(401, "invalid_client");
        let challenge = reply.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.to_ascii_lowercase().starts_with("basic"),
            "{what}: RFC 6749 §5.2 asks for WWW-Authenticate: Basic, got {challenge:?}"
        );
        assert!(challenge.contains("realm="), "{what}: {challenge}");

        let mut posted = exchange.to_vec();
        posted.push(("client_id", id));
        posted.push(("client_secret", secret));
        let reply = provider.post_form("/oauth/token", None, &posted).await;
        assert!(
            reply.status == 400 || reply.status == 401,
            "{what} (post): {}",
            reply.text
        );
        assert_eq!(
            reply.json["error"], "invalid_client",
            "{what}: {}",
            reply.text
        );
        assert_eq!(reply.header("cache-control"), Some("no-store"));
    }
    // A confidential client naming itself without a secret.
    let mut bare = exchange.to_vec();
    bare.push(("client_id", web.id.as_str()));
    let reply = provider.post_form("/oauth/token", None, &bare).await;
    assert!(reply.status == 400 || reply.status == 401, "{}", reply.text);
    assert_eq!(reply.json["error"], "invalid_client", "{}", reply.text);
    // No client at all.
    let reply = provider.post_form("/oauth/token", None, &exchange).await;
    assert!(reply.status == 400 || reply.status == 401, "{}", reply.text);
    assert_eq!(reply.json["error"], "invalid_client", "{}", reply.text);

    // The failed attempts did not spend the code: client_secret_post works.
    let mut posted = exchange.to_vec();
    posted.push(("client_id", web.id.as_str()));
    let secret = web.secret.clone().unwrap();
    posted.push(("client_secret", secret.as_str()));
    let reply = provider.post_form("/oauth/token", None, &posted).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.header("cache-control"),
        Some("no-store"),
        "RFC 6749 §5.1"
    );
    assert!(reply.json["access_token"].is_string());
    assert_eq!(
        reply.json["token_type"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("bearer")
    );
}

/// A code is single-use: the second exchange answers invalid_grant and
/// revokes what the first issued (RFC 6749 §4.1.2, §10.5).
pub(crate) async fn reused_code_revokes_its_tokens(provider: &Provider) {
    let ada = provider.sign_up("replay", "ada@replay.test").await;
    let web = provider.web_client(&ada).await;
    let rs = provider.machine_client(&ada).await;
    let browser = provider.browser();
    let (code, verifier) = provider
        .code_for(&browser, &web, &ada, "openid offline_access")
        .await;
    let first = provider
        .exchange(&web, &code, Some(&verifier), CALLBACK)
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    let access = first.json["access_token"].as_str().unwrap().to_owned();
    let refresh = first.json["refresh_token"].as_str().unwrap().to_owned();
    assert!(provider.active(&rs, &access).await);
    // A refresh token is introspected by the client that holds it.
    assert!(provider.active(&web, &refresh).await);

    let second = provider
        .exchange(&web, &code, Some(&verifier), CALLBACK)
        .await;
    second.assert_oauth_error(400, "invalid_grant");

    // Redeemed by several requests at once: at most one gets tokens, and
    // as the code was used more than once, those are revoked too (RFC 6749
    // §4.1.2): denying every request is as right.
    let browser_two = provider.browser();
    let (raced, raced_verifier) = provider
        .code_for(&browser_two, &web, &ada, "openid offline_access")
        .await;
    let race = || provider.exchange(&web, &raced, Some(&raced_verifier), CALLBACK);
    let (a, b, c, d) = tokio::join!(race(), race(), race(), race());
    let answers = [a, b, c, d];
    let winners: Vec<&Reply> = answers.iter().filter(|a| a.status == 200).collect();
    assert!(
        winners.len() <= 1,
        "{:?}",
        answers.iter().map(|a| &a.text).collect::<Vec<_>>()
    );
    for winner in winners {
        let access = winner.json["access_token"].as_str().unwrap();
        assert!(
            !provider.active(&rs, access).await,
            "a replayed code's tokens"
        );
    }
    for loser in answers.iter().filter(|a| a.status != 200) {
        loser.assert_oauth_error(400, "invalid_grant");
    }
    assert!(
        !provider.active(&rs, &access).await,
        "the replay revokes the access token"
    );
    assert!(
        !provider.active(&web, &refresh).await,
        "and the refresh token"
    );
    let me = provider.get("/auth/me", Some(&access)).await;
    assert_eq!(me.status, 401, "{}", me.text);
    let refreshed = provider
        .post_form(
            "/oauth/token",
            Some(&web),
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
    refreshed.assert_oauth_error(400, "invalid_grant");
}

/// A code older than its lifetime (60 s) answers invalid_grant.
pub(crate) async fn expired_code(provider: &Provider) {
    let ada = provider.sign_up("expiry", "ada@expiry.test").await;
    let web = provider.web_client(&ada).await;
    let browser = provider.browser();
    let (code, verifier) = provider.code_for(&browser, &web, &ada, "openid").await;
    provider.clock.advance(time::Duration::seconds(61));
    provider
        .exchange(&web, &code, Some(&verifier), CALLBACK)
        .await
        .assert_oauth_error(400, "invalid_grant");
    // Within its lifetime, a code works.
    let (code, verifier) = provider.code_for(&browser, &web, &ada, "openid").await;
    provider.clock.advance(time::Duration::seconds(30));
    let reply = provider
        .exchange(&web, &code, Some(&verifier), CALLBACK)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

/// PKCE (RFC 7636 §4.4.1, §4.6): a wrong verifier answers invalid_grant;
/// a public client must send a challenge and a verifier; `plain` and
/// unknown methods are refused.
pub(crate) async fn pkce_is_enforced(provider: &Provider) {
    let ada = provider.sign_up("pkce", "ada@pkce.test").await;
    let web = provider.web_client(&ada).await;
    let spa = provider.public_client(&ada).await;
    let browser = provider.browser();

    let (code, _) = provider.code_for(&browser, &web, &ada, "openid").await;
    let wrong = PkceCodeVerifier::new("a".repeat(43));
    provider
        .exchange(&web, &code, Some(wrong.secret()), CALLBACK)
        .await
        .assert_oauth_error(400, "invalid_grant");
    // A challenge was sent: the verifier is not optional, even for a
    // confidential client.
    let (code, _) = provider.code_for(&browser, &web, &ada, "openid").await;
    let reply = provider.exchange(&web, &code, None, CALLBACK).await;
    assert!(
        ["invalid_grant", "invalid_request"].contains(&reply.json["error"].as_str().unwrap_or("")),
        "{}",
        reply.text
    );
    assert_eq!(reply.status, 400, "{}", reply.text);

    // Public client: a missing verifier, a wrong one.
    let (code, _) = provider.code_for(&browser, &spa, &ada, "openid").await;
    let reply = provider.exchange(&spa, &code, None, CALLBACK).await;
    assert!(
        ["invalid_grant", "invalid_request"].contains(&reply.json["error"].as_str().unwrap_or("")),
        "{}",
        reply.text
    );
    let (code, verifier) = provider.code_for(&browser, &spa, &ada, "openid").await;
    provider
        .exchange(&spa, &code, Some(&format!("{verifier}x")), CALLBACK)
        .await
        .assert_oauth_error(400, "invalid_grant");

    // Public client without a challenge: refused at the authorization
    // endpoint, back to the client (RFC 7636 §4.4.1: invalid_request).
    let params = request_params(
        &spa,
        &[("code_challenge", None), ("code_challenge_method", None)],
    );
    let trip = browser
        .run(&url_of(&provider.base, &params), None, None)
        .await;
    assert_error_redirect(provider, &trip, "invalid_request");
    // `plain`, and a method nobody defined.
    for method in ["plain", "S512"] {
        for client in [&web, &spa] {
            let params = request_params(client, &[("code_challenge_method", Some(method))]);
            let trip = browser
                .run(&url_of(&provider.base, &params), None, None)
                .await;
            assert_error_redirect(provider, &trip, "invalid_request");
        }
    }
}

/// The token request's redirect URI must be the authorization request's
/// (RFC 6749 §4.1.3), and a code works only for the client it was issued
/// to: another client redeeming it is refused (code injection).
pub(crate) async fn code_bound_to_client_and_redirect_uri(provider: &Provider) {
    let ada = provider.sign_up("binding", "ada@binding.test").await;
    let web = provider
        .register(
            &ada,
            ClientKind::Confidential,
            &[CALLBACK, OTHER_CALLBACK],
            vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            &["openid", "email", "offline_access"],
        )
        .await;
    let other = provider.web_client(&ada).await;
    let browser = provider.browser();
    let (code, verifier) = provider.code_for(&browser, &web, &ada, "openid").await;
    provider
        .exchange(&web, &code, Some(&verifier), OTHER_CALLBACK)
        .await
        .assert_oauth_error(400, "invalid_grant");
    let (code, verifier) = provider.code_for(&browser, &web, &ada, "openid").await;
    let reply = provider
        .post_form(
            "/oauth/token",
            Some(&web),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", &verifier),
            ],
        )
        .await;
    assert_eq!(reply.status, 400, "redirect_uri omitted: {}", reply.text);
    assert!(
        ["invalid_grant", "invalid_request"].contains(&reply.json["error"].as_str().unwrap_or("")),
        "{}",
        reply.text
    );

    // Code injection: another client of the same tenant, and a client of
    // another tenant, present web's code with its verifier.
    let bob = provider.sign_up("elsewhere", "bob@elsewhere.test").await;
    let stranger = provider.web_client(&bob).await;
    let (code, verifier) = provider.code_for(&browser, &web, &ada, "openid").await;
    for thief in [&other, &stranger] {
        provider
            .exchange(thief, &code, Some(&verifier), CALLBACK)
            .await
            .assert_oauth_error(400, "invalid_grant");
    }
    // A public client naming web's id without its secret is no better.
    let reply = provider
        .post_form(
            "/oauth/token",
            None,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", CALLBACK),
                ("code_verifier", &verifier),
                ("client_id", &web.id),
            ],
        )
        .await;
    assert_eq!(reply.json["error"], "invalid_client", "{}", reply.text);
}

/// Unknown grants answer unsupported_grant_type (RFC 6749 §5.2), the
/// password grant included; a grant the client is not registered for
/// answers unauthorized_client; a missing grant_type invalid_request.
pub(crate) async fn unsupported_and_unauthorized_grants(provider: &Provider) {
    let ada = provider.sign_up("grants", "ada@grants.test").await;
    let web = provider.web_client(&ada).await;
    let machine = provider.machine_client(&ada).await;
    for grant in [
        "password",
        "implicit",
        "urn:ietf:params:oauth:grant-type:device_code",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "nonsense",
    ] {
        let reply = provider
            .post_form(
                "/oauth/token",
                Some(&web),
                &[
                    ("grant_type", grant),
                    ("username", "ada@grants.test"),
                    ("password", PASSWORD),
                ],
            )
            .await;
        reply.assert_oauth_error(400, "unsupported_grant_type");
    }
    provider
        .post_form("/oauth/token", Some(&web), &[("scope", "openid")])
        .await
        .assert_oauth_error(400, "invalid_request");
    provider
        .post_form(
            "/oauth/token",
            Some(&web),
            &[("grant_type", "client_credentials")],
        )
        .await
        .assert_oauth_error(400, "unauthorized_client");
    provider
        .post_form(
            "/oauth/token",
            Some(&machine),
            &[("grant_type", "refresh_token"), ("refresh_token", "x")],
        )
        .await
        .assert_oauth_error(400, "unauthorized_client");
    // A refresh token that is not one.
    provider
        .post_form(
            "/oauth/token",
            Some(&web),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "garbage"),
            ],
        )
        .await
        .assert_oauth_error(400, "invalid_grant");
    // A code that is not one.
    provider
        .exchange(&web, "garbage", Some(&"v".repeat(43)), CALLBACK)
        .await
        .assert_oauth_error(400, "invalid_grant");
}

/// Scopes beyond the client's registration answer invalid_scope, at the
/// authorization endpoint (redirected) and at the token endpoint.
pub(crate) async fn invalid_scope(provider: &Provider) {
    let ada = provider.sign_up("scopes", "ada@scopes.test").await;
    let web = provider.web_client(&ada).await;
    let machine = provider.machine_client(&ada).await;
    let browser = provider.browser();
    for scope in [
        "openid projects:delete",
        "openid everything",
        "openid members:read",
    ] {
        let params = request_params(&web, &[("scope", Some(scope))]);
        let trip = browser
            .run(&url_of(&provider.base, &params), None, None)
            .await;
        assert_error_redirect(provider, &trip, "invalid_scope");
    }
    provider
        .post_form(
            "/oauth/token",
            Some(&machine),
            &[
                ("grant_type", "client_credentials"),
                ("scope", "projects:create"),
            ],
        )
        .await
        .assert_oauth_error(400, "invalid_scope");
    // A refresh may narrow the grant, never widen it (RFC 6749 §6).
    let (code, verifier) = provider
        .code_for(&browser, &web, &ada, "openid offline_access")
        .await;
    let tokens = provider
        .exchange(&web, &code, Some(&verifier), CALLBACK)
        .await;
    assert_eq!(tokens.status, 200, "{}", tokens.text);
    let refresh = tokens.json["refresh_token"].as_str().unwrap();
    provider
        .post_form(
            "/oauth/token",
            Some(&web),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("scope", "openid offline_access projects:read"),
            ],
        )
        .await
        .assert_oauth_error(400, "invalid_scope");
}

/// Only `response_type=code`: the implicit and hybrid flows are refused
/// with unsupported_response_type, sent back to the client; a request
/// without response_type is invalid_request.
pub(crate) async fn unsupported_response_type(provider: &Provider) {
    let ada = provider.sign_up("flows", "ada@flows.test").await;
    let web = provider.web_client(&ada).await;
    let browser = provider.browser();
    for response_type in [
        "token",
        "id_token",
        "id_token token",
        "code id_token",
        "code token",
        "none",
    ] {
        let params = request_params(&web, &[("response_type", Some(response_type))]);
        let trip = browser
            .run(&url_of(&provider.base, &params), None, None)
            .await;
        assert_error_redirect(provider, &trip, "unsupported_response_type");
    }
    let params = request_params(&web, &[("response_type", None)]);
    let trip = browser
        .run(&url_of(&provider.base, &params), None, None)
        .await;
    assert_error_redirect(provider, &trip, "invalid_request");
    // response_mode=fragment is not offered.
    let params = request_params(&web, &[("response_mode", Some("fragment"))]);
    let trip = browser
        .run(&url_of(&provider.base, &params), None, None)
        .await;
    if let Landing::Redirect(url) = &trip.landing {
        assert!(
            url.fragment().is_none() || query_or_fragment(url, "code").is_none(),
            "no code in a fragment: {url}"
        );
    }
}

/// The redirect URI variants an attacker tries: each is shown an error
/// page, never redirected to (RFC 6749 §3.1.2.4, §10.6, §10.15; OAuth
/// Security BCP: exact string matching).
pub(crate) async fn open_redirects_are_refused(provider: &Provider) {
    let ada = provider.sign_up("redirects", "ada@redirects.test").await;
    let web = provider.web_client(&ada).await;
    let browser = provider.browser();
    let fixed = [
        "http://evil.example/callback",
        "https://127.0.0.1:8080/callback",
        "http://127.0.0.1:8080/callback/",
        "http://127.0.0.1:8080/callback/../admin",
        "http://127.0.0.1:8080/callbackx",
        "http://127.0.0.1:8080/callback?next=http://evil.example",
        "http://127.0.0.1:8080/callback#frag",
        "http://127.0.0.1:8080/Callback",
        "HTTP://127.0.0.1:8080/callback",
        "http://127.0.0.1:8080/%63allback",
        "http://127.0.0.1:8080/callback%2F..%2Fadmin",
        "http://127.0.0.1:8080@evil.example/callback",
        "http://evil.example@127.0.0.1:8080/callback",
        "http://127.0.0.1.evil.example:8080/callback",
        "//evil.example/callback",
        "/callback",
        "javascript:alert(1)",
        " http://127.0.0.1:8080/callback",
        "http://127.0.0.1:8080/callback ",
        "",
    ];
    let mut accepted = Vec::new();
    for uri in fixed {
        let params = request_params(&web, &[("redirect_uri", Some(uri))]);
        let trip = browser
            .run(&url_of(&provider.base, &params), None, None)
            .await;
        if let Some(problem) = not_an_error_page(&trip) {
            accepted.push(format!("{uri:?}: {problem}"));
        }
    }
    assert!(
        accepted.is_empty(),
        "redirect URIs taken for {CALLBACK}: {accepted:?}"
    );
    // No redirect_uri (OIDC Core §3.1.2.1 requires it), an unknown client,
    // no client: never redirected either.
    let params = request_params(&web, &[("redirect_uri", None)]);
    let trip = browser
        .run(&url_of(&provider.base, &params), None, None)
        .await;
    assert_error_page(&trip, "no redirect_uri");
    let stranger = Registered {
        id: "no-such-client".into(),
        secret: None,
    };
    let trip = browser
        .run(
            &url_of(&provider.base, &request_params(&stranger, &[])),
            None,
            None,
        )
        .await;
    assert_error_page(&trip, "unknown client");
    let params = request_params(&web, &[("client_id", None)]);
    let trip = browser
        .run(&url_of(&provider.base, &params), None, None)
        .await;
    assert_error_page(&trip, "no client_id");
    // Another client's registered URI is not this client's.
    let bob = provider.sign_up("otherapp", "bob@otherapp.test").await;
    let other = provider
        .register(
            &bob,
            ClientKind::Confidential,
            &[OTHER_CALLBACK],
            vec![GrantType::AuthorizationCode],
            &["openid"],
        )
        .await;
    let _ = other;
    let params = request_params(&web, &[("redirect_uri", Some(OTHER_CALLBACK))]);
    let trip = browser
        .run(&url_of(&provider.base, &params), None, None)
        .await;
    assert_error_page(&trip, "another client's redirect URI");
    // A loopback redirect URI may come with another port (RFC 8252 §7.3):
    // the request goes on to the login page; another loopback host does not.
    let params = request_params(
        &web,
        &[("redirect_uri", Some("http://127.0.0.1:9999/callback"))],
    );
    let trip = browser
        .run(&url_of(&provider.base, &params), None, None)
        .await;
    match &trip.landing {
        Landing::Page { url, status, .. } => {
            assert_eq!(
                (url.path(), *status),
                ("/oauth/login", 200),
                "another loopback port"
            );
        }
        Landing::Redirect(url) => panic!("another loopback port: redirected to {url}"),
    }
    for uri in [
        "http://localhost:8080/callback",
        "http://[::1]:8080/callback",
        "http://127.0.0.2:8080/callback",
    ] {
        let params = request_params(&web, &[("redirect_uri", Some(uri))]);
        let trip = browser
            .run(&url_of(&provider.base, &params), None, None)
            .await;
        assert_error_page(&trip, uri);
    }
    // Signed in, with consent given: still an error page, no code.
    let signed = signed_in(provider, &web, &ada).await;
    let params = request_params(
        &web,
        &[("redirect_uri", Some("http://evil.example/callback"))],
    );
    let trip = signed
        .run(&url_of(&provider.base, &params), None, None)
        .await;
    assert_error_page(&trip, "signed in");

    // Generated variants of the registered URI (one character inserted,
    // removed, case-flipped or percent-encoded, or a suffix appended),
    // away from the port: loopback port rules (RFC 8252 §7.3) are not
    // what this checks.
    use proptest::prelude::*;
    let handle = tokio::runtime::Handle::current();
    let base = provider.base.clone();
    let client = web.clone();
    let http = provider.browser();
    let port_at = CALLBACK.find(":8080").unwrap();
    let port_span = port_at..port_at + ":8080".len();
    let position = (0..=CALLBACK.len()).prop_filter("not in the port", move |i| {
        !port_span.contains(i) && CALLBACK.is_char_boundary(*i)
    });
    let mutation = prop_oneof![
        (position.clone(), proptest::char::range('!', '~')).prop_map(|(i, c)| format!(
            "{}{c}{}",
            &CALLBACK[..i],
            &CALLBACK[i..]
        )),
        position
            .clone()
            .prop_filter("a character to remove", |i| *i < CALLBACK.len())
            .prop_map(|i| format!("{}{}", &CALLBACK[..i], &CALLBACK[i + 1..])),
        position
            .clone()
            .prop_filter("a letter", |i| CALLBACK[*i..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic()))
            .prop_map(|i| {
                let c = CALLBACK[i..].chars().next().unwrap();
                let flipped = if c.is_ascii_lowercase() {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                };
                format!("{}{flipped}{}", &CALLBACK[..i], &CALLBACK[i + 1..])
            }),
        position
            .prop_filter("a character to encode", |i| *i < CALLBACK.len())
            .prop_map(|i| format!(
                "{}%{:02X}{}",
                &CALLBACK[..i],
                CALLBACK.as_bytes()[i],
                &CALLBACK[i + 1..]
            )),
        prop::sample::select(vec![
            "/",
            "/.",
            "/..",
            "%2F",
            "?",
            "?a=b",
            "#",
            "#x",
            "@evil.example",
            ".evil.example",
            "%00",
            "%20",
            "\\",
            "/%2e%2e/",
        ])
        .prop_map(|suffix| format!("{CALLBACK}{suffix}")),
    ]
    .prop_filter("a different URI", |uri| uri != CALLBACK);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    tokio::task::block_in_place(|| {
        runner
            .run(&mutation, |uri| {
                let params = request_params(&client, &[("redirect_uri", Some(&uri))]);
                let trip = handle.block_on(http.run(&url_of(&base, &params), None, None));
                let problem = not_an_error_page(&trip);
                prop_assert!(problem.is_none(), "{uri:?}: {problem:?}");
                Ok(())
            })
            .unwrap();
    });
}

/// prompt (OIDC Core §3.1.2.1, §3.1.2.6): `none` without a session answers
/// login_required, with a session but no consent consent_required (both
/// redirected with state and iss); `login` shows the login page again.
pub(crate) async fn prompt_and_max_age(provider: &Provider) {
    let ada = provider.sign_up("prompt", "ada@prompt.test").await;
    let web = provider.web_client(&ada).await;
    let spa = provider.public_client(&ada).await;
    let fresh = provider.browser();
    let params = request_params(&web, &[("prompt", Some("none"))]);
    let trip = fresh
        .run(&url_of(&provider.base, &params), None, None)
        .await;
    assert_error_redirect(provider, &trip, "login_required");
    assert!(trip.pages.is_empty());

    let browser = signed_in(provider, &web, &ada).await;
    // Signed in, consent given for web: prompt=none succeeds silently.
    let params = request_params(&web, &[("prompt", Some("none"))]);
    let trip = browser
        .run(&url_of(&provider.base, &params), None, None)
        .await;
    let back = trip.redirect();
    assert!(param(&back, "code").is_some(), "{back}");
    assert_eq!(param(&back, "state").as_deref(), Some("st-err"));
    // No consent for spa yet.
    let params = request_params(&spa, &[("prompt", Some("none"))]);
    let trip = browser
        .run(&url_of(&provider.base, &params), None, None)
        .await;
    assert_error_redirect(provider, &trip, "consent_required");
    // prompt=login: the login page again, though signed in.
    let params = request_params(&web, &[("prompt", Some("login"))]);
    let trip = browser
        .run(&url_of(&provider.base, &params), None, None)
        .await;
    match &trip.landing {
        Landing::Page { url, status, .. } => {
            assert_eq!((url.path(), *status), ("/oauth/login", 200))
        }
        Landing::Redirect(url) => panic!("prompt=login redirected to {url}"),
    }
    // prompt=consent: the consent page again, though remembered.
    let params = request_params(&web, &[("prompt", Some("consent"))]);
    let trip = browser
        .run(&url_of(&provider.base, &params), None, None)
        .await;
    match &trip.landing {
        Landing::Page { url, status, .. } => {
            assert_eq!((url.path(), *status), ("/oauth/consent", 200))
        }
        Landing::Redirect(url) => panic!("prompt=consent redirected to {url}"),
    }
    // max_age: an authentication older than asked asks for a login again.
    provider.clock.advance(time::Duration::seconds(120));
    let params = request_params(&web, &[("max_age", Some("60"))]);
    let trip = browser
        .run(&url_of(&provider.base, &params), None, None)
        .await;
    match &trip.landing {
        Landing::Page { url, .. } => assert_eq!(url.path(), "/oauth/login"),
        Landing::Redirect(url) => panic!("max_age=60 after 120 s redirected to {url}"),
    }
    // ... and with prompt=none that is login_required.
    let params = request_params(&web, &[("max_age", Some("60")), ("prompt", Some("none"))]);
    let trip = browser
        .run(&url_of(&provider.base, &params), None, None)
        .await;
    assert_error_redirect(provider, &trip, "login_required");
}

/// Consent denied: access_denied back to the client with state and iss.
pub(crate) async fn consent_denied(provider: &Provider) {
    let ada = provider.sign_up("deny", "ada@deny.test").await;
    let web = provider.web_client(&ada).await;
    let browser = provider.browser();
    let params = request_params(&web, &[]);
    let trip = browser
        .run(&url_of(&provider.base, &params), Some(&ada), Some("deny"))
        .await;
    assert_error_redirect(provider, &trip, "access_denied");
}

/// The login and consent forms check their CSRF token: missing, wrong or
/// another interaction's token is refused without progress; the right one
/// then works.
pub(crate) async fn forms_check_csrf(provider: &Provider) {
    let ada = provider.sign_up("csrf", "ada@csrf.test").await;
    let web = provider.web_client(&ada).await;
    let browser = provider.browser();
    let other = provider.browser();
    let params = request_params(&web, &[]);
    let url = url_of(&provider.base, &params);
    let login = |trip: Trip| match trip.landing {
        Landing::Page {
            url, status, body, ..
        } => {
            assert_eq!((url.path(), status), ("/oauth/login", 200), "{body}");
            (url, body)
        }
        Landing::Redirect(url) => panic!("redirected to {url}"),
    };
    let (page, body) = login(browser.run(&url, None, None).await);
    let (_, other_body) = login(other.run(&url, None, None).await);
    let interaction = input(&body, "interaction").unwrap();
    let csrf = input(&body, "csrf").unwrap();
    let other_csrf = input(&other_body, "csrf").unwrap();
    assert_ne!(csrf, other_csrf);
    let action = form_action(&body, &page);
    let attempt = |csrf: Option<String>| {
        let mut form = vec![
            ("interaction", interaction.clone()),
            ("email", ada.email.clone()),
            ("password", PASSWORD.to_owned()),
        ];
        if let Some(csrf) = csrf {
            form.push(("csrf", csrf));
        }
        form
    };
    for (what, csrf) in [
        ("missing", None),
        ("wrong", Some("A".repeat(csrf.len()))),
        ("another browser's", Some(other_csrf.clone())),
        ("empty", Some(String::new())),
    ] {
        let response = browser.post(&action, &attempt(csrf)).await;
        let status = response.status().as_u16();
        assert!((400..500).contains(&status), "login, {what} csrf: {status}");
        assert!(
            response.headers().get("location").is_none(),
            "login, {what} csrf"
        );
        let cookies: Vec<_> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter(|c| c.starts_with("tenancy_access=") && !c.contains("Max-Age=0"))
            .collect();
        assert!(
            cookies.is_empty(),
            "login, {what} csrf: signed in {cookies:?}"
        );
    }
    // A wrong password re-renders the page (400/401), and signs nobody in.
    let response = browser
        .post(
            &action,
            &[
                ("interaction", interaction.clone()),
                ("csrf", csrf.clone()),
                ("email", ada.email.clone()),
                ("password", "not the password".to_owned()),
            ],
        )
        .await;
    let status = response.status().as_u16();
    assert!(status == 400 || status == 401, "wrong password: {status}");

    // The consent form: sign in for real, then tamper with its token.
    let trip = browser.run(&url, Some(&ada), None).await;
    let (page, body) = match trip.landing {
        Landing::Page {
            url, status, body, ..
        } => {
            assert_eq!((url.path(), status), ("/oauth/consent", 200), "{body}");
            (url, body)
        }
        Landing::Redirect(url) => panic!("redirected to {url}"),
    };
    let interaction = input(&body, "interaction").unwrap();
    let csrf = input(&body, "csrf").unwrap();
    let action = form_action(&body, &page);
    for (what, token) in [
        ("missing", None),
        ("wrong", Some("B".repeat(csrf.len()))),
        ("another browser's", Some(other_csrf.clone())),
    ] {
        let mut form = vec![
            ("interaction", interaction.clone()),
            ("decision", "allow".to_owned()),
        ];
        if let Some(token) = token {
            form.push(("csrf", token));
        }
        let response = browser.post(&action, &form).await;
        let status = response.status().as_u16();
        assert!(
            (400..500).contains(&status),
            "consent, {what} csrf: {status}"
        );
        assert!(
            response.headers().get("location").is_none(),
            "consent, {what} csrf"
        );
    }
    // Another browser (no session, other cookies) with the right token.
    let response = other
        .post(
            &action,
            &[
                ("interaction", interaction.clone()),
                ("csrf", csrf.clone()),
                ("decision", "allow".to_owned()),
            ],
        )
        .await;
    assert!(
        response
            .headers()
            .get("location")
            .is_none_or(|l| !l.to_str().unwrap_or_default().starts_with(CALLBACK)),
        "another browser cannot consent for this one"
    );
    // The right token: the code.
    let response = browser
        .post(
            &action,
            &[
                ("interaction", interaction),
                ("csrf", csrf),
                ("decision", "allow".to_owned()),
            ],
        )
        .await;
    assert!(response.status().is_redirection(), "{}", response.status());
    let back = page
        .join(response.headers()["location"].to_str().unwrap())
        .unwrap();
    assert!(back.as_str().starts_with(CALLBACK), "{back}");
    assert!(param(&back, "code").is_some(), "{back}");
}

/// Introspection (RFC 7662 §2.1, §4): the caller authenticates; a token of
/// another tenant, a garbage token and a revoked one are inactive with
/// nothing else said; userinfo refuses them (RFC 6750 §3.1).
pub(crate) async fn introspection_and_revocation_rules(provider: &Provider) {
    let ada = provider.sign_up("intro", "ada@intro.test").await;
    let bob = provider.sign_up("other", "bob@other.test").await;
    let web = provider.web_client(&ada).await;
    let rs = provider.machine_client(&ada).await;
    let bobs = provider.machine_client(&bob).await;
    let browser = provider.browser();
    let (code, verifier) = provider
        .code_for(&browser, &web, &ada, "openid email offline_access")
        .await;
    let tokens = provider
        .exchange(&web, &code, Some(&verifier), CALLBACK)
        .await;
    assert_eq!(tokens.status, 200, "{}", tokens.text);
    let access = tokens.json["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens.json["refresh_token"].as_str().unwrap().to_owned();

    // No client authentication.
    let reply = provider
        .post_form("/oauth/introspect", None, &[("token", &access)])
        .await;
    reply.assert_oauth_error(401, "invalid_client");
    let reply = Reply::read(
        provider
            .http
            .post(provider.url("/oauth/introspect"))
            .bearer_auth(&access)
            .form(&[("token", &access)])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        reply.status, 401,
        "a user's bearer token is no client: {}",
        reply.text
    );
    assert_eq!(reply.json.get("active"), None, "{}", reply.text);
    // A public client cannot introspect.
    let spa = provider.public_client(&ada).await;
    let reply = provider
        .post_form("/oauth/introspect", Some(&spa), &[("token", &access)])
        .await;
    assert_eq!(reply.json["error"], "invalid_client", "{}", reply.text);

    // Active for the tenant's resource server, with the RFC 7662 fields.
    let reply = provider
        .post_form("/oauth/introspect", Some(&rs), &[("token", &access)])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.json["active"], true, "{}", reply.text);
    for field in ["scope", "client_id", "sub", "exp", "iat", "iss"] {
        assert!(reply.json.get(field).is_some(), "{field}: {}", reply.text);
    }
    // Another tenant's resource server learns nothing.
    for token in [&access, &refresh] {
        let reply = provider
            .post_form("/oauth/introspect", Some(&bobs), &[("token", token)])
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(
            reply.json,
            json!({"active": false}),
            "another tenant's token"
        );
    }
    for garbage in ["garbage", "a.b.c", "cs_not-a-token"] {
        let reply = provider
            .post_form("/oauth/introspect", Some(&rs), &[("token", garbage)])
            .await;
        assert_eq!(reply.status, 200, "{garbage:?}: {}", reply.text);
        assert_eq!(reply.json, json!({"active": false}));
    }
    // Revocation needs client authentication too (RFC 7009 §2.1), and only
    // the client the token was issued to revokes it.
    let reply = provider
        .post_form("/oauth/revoke", None, &[("token", &access)])
        .await;
    assert_eq!(reply.json["error"], "invalid_client", "{}", reply.text);
    assert!(reply.status == 400 || reply.status == 401, "{}", reply.text);
    let reply = provider
        .post_form("/oauth/revoke", Some(&bobs), &[("token", &refresh)])
        .await;
    assert_eq!(reply.status, 200, "RFC 7009 §2.2: {}", reply.text);
    assert!(
        provider.active(&web, &refresh).await,
        "another client's revocation is ignored"
    );
    assert!(provider.active(&rs, &access).await);
    let reply = provider
        .post_form(
            "/oauth/revoke",
            Some(&web),
            &[("token", &refresh), ("token_type_hint", "refresh_token")],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // RFC 7009 §2.1: revoking the refresh token revokes the grant's
    // access tokens too (the provider supports that: they share a session).
    assert!(!provider.active(&web, &refresh).await);
    assert!(!provider.active(&rs, &access).await);
    let me = provider.get("/auth/me", Some(&access)).await;
    assert_eq!(me.status, 401, "{}", me.text);
    let info = provider.get("/oauth/userinfo", Some(&access)).await;
    assert_eq!(info.status, 401, "{}", info.text);
    let challenge = info.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert!(
        challenge.contains("invalid_token"),
        "RFC 6750 §3.1: {challenge}"
    );
    // An unknown token_type_hint is an error only if unsupported
    // (RFC 7009 §2.2.1); a garbage token answers 200.
    let reply = provider
        .post_form("/oauth/revoke", Some(&web), &[("token", "garbage")])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // userinfo without a token, and with a token that lacks `openid`.
    let info = provider.get("/oauth/userinfo", None).await;
    assert_eq!(info.status, 401, "{}", info.text);
    assert!(
        info.header("www-authenticate")
            .unwrap_or_default()
            .starts_with("Bearer")
    );
    let machine = provider
        .post_form(
            "/oauth/token",
            Some(&rs),
            &[
                ("grant_type", "client_credentials"),
                ("scope", "projects:read"),
            ],
        )
        .await;
    assert_eq!(machine.status, 200, "{}", machine.text);
    let info = provider
        .get(
            "/oauth/userinfo",
            Some(machine.json["access_token"].as_str().unwrap()),
        )
        .await;
    assert!(
        info.status == 401 || info.status == 403,
        "a token without openid: {}",
        info.text
    );
}

/// An OAuth access token's API powers are its user's roles ∩ its scopes:
/// `openid profile email offline_access` grant no API permission.
pub(crate) async fn scopes_limit_api_permissions(provider: &Provider) {
    let ada = provider.sign_up("limits", "ada@limits.test").await;
    let app = provider
        .register(
            &ada,
            ClientKind::Confidential,
            &[CALLBACK],
            vec![GrantType::AuthorizationCode],
            &["openid", "email", "members:read"],
        )
        .await;
    let browser = provider.browser();
    let (code, verifier) = provider
        .code_for(&browser, &app, &ada, "openid email")
        .await;
    let tokens = provider
        .exchange(&app, &code, Some(&verifier), CALLBACK)
        .await;
    assert_eq!(tokens.status, 200, "{}", tokens.text);
    let narrow = tokens.json["access_token"].as_str().unwrap().to_owned();
    assert_eq!(provider.get("/auth/me", Some(&narrow)).await.status, 200);
    let members = provider.get("/members", Some(&narrow)).await;
    assert_eq!(members.status, 403, "{}", members.text);

    let (code, verifier) = provider
        .code_for(&browser, &app, &ada, "openid members:read")
        .await;
    let tokens = provider
        .exchange(&app, &code, Some(&verifier), CALLBACK)
        .await;
    assert_eq!(tokens.status, 200, "{}", tokens.text);
    let scoped = tokens.json["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        tokens.json["scope"]
            .as_str()
            .map(|s| s.contains("members:read")),
        Some(true)
    );
    let members = provider.get("/members", Some(&scoped)).await;
    assert_eq!(members.status, 200, "{}", members.text);
    // The owner may read roles, but the token was not granted that.
    let roles = provider.get("/roles", Some(&scoped)).await;
    assert_eq!(roles.status, 403, "{}", roles.text);
    assert_eq!(provider.get("/roles", Some(&ada.token)).await.status, 200);
}

/// Discovery (OIDC Discovery 1.0 §3, RFC 8414 §2) says what the provider
/// does: both documents agree, every endpoint answers, every advertised
/// value is one the endpoints accept, nothing unsupported is advertised.
pub(crate) async fn discovery_matches_behaviour(provider: &Provider) {
    let oidc = provider
        .get("/.well-known/openid-configuration", None)
        .await;
    assert_eq!(oidc.status, 200, "{}", oidc.text);
    assert!(
        oidc.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json")
    );
    let rfc8414 = provider
        .get("/.well-known/oauth-authorization-server", None)
        .await;
    assert_eq!(rfc8414.status, 200, "{}", rfc8414.text);
    let doc = &oidc.json;
    for (key, value) in rfc8414.json.as_object().unwrap() {
        assert_eq!(&doc[key], value, "the two documents disagree on {key}");
    }
    assert_eq!(doc["issuer"], provider.base.as_str());
    let endpoint = |name: &str| -> String {
        let url = doc[name]
            .as_str()
            .unwrap_or_else(|| panic!("{name} advertised: {doc}"));
        assert!(
            url.starts_with(&format!("{}/", provider.base)),
            "{name}: {url}"
        );
        url.to_owned()
    };
    assert_eq!(
        endpoint("authorization_endpoint"),
        provider.url("/oauth/authorize")
    );
    assert_eq!(endpoint("token_endpoint"), provider.url("/oauth/token"));
    assert_eq!(
        endpoint("userinfo_endpoint"),
        provider.url("/oauth/userinfo")
    );
    assert_eq!(endpoint("jwks_uri"), provider.url("/.well-known/jwks.json"));
    assert_eq!(
        endpoint("revocation_endpoint"),
        provider.url("/oauth/revoke")
    );
    assert_eq!(
        endpoint("introspection_endpoint"),
        provider.url("/oauth/introspect")
    );
    assert_eq!(
        endpoint("end_session_endpoint"),
        provider.url("/oauth/logout")
    );

    // Every endpoint answers (an OAuth error, not a 404 or 405).
    let http = &provider.http;
    let answer = |r: reqwest::Response| r.status().as_u16();
    let authorize = answer(
        http.get(endpoint("authorization_endpoint"))
            .send()
            .await
            .unwrap(),
    );
    assert_eq!(authorize, 400, "authorize without parameters");
    let authorize = answer(
        http.post(endpoint("authorization_endpoint"))
            .form(&[("x", "y")])
            .send()
            .await
            .unwrap(),
    );
    assert_eq!(
        authorize, 400,
        "POST authorize without parameters (OIDC Core §3.1.2.1)"
    );
    let token = Reply::read(
        http.post(endpoint("token_endpoint"))
            .form(&[("grant_type", "authorization_code")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(token.status == 400 || token.status == 401, "{}", token.text);
    assert!(token.json["error"].is_string(), "{}", token.text);
    let info = answer(
        http.get(endpoint("userinfo_endpoint"))
            .send()
            .await
            .unwrap(),
    );
    assert_eq!(info, 401);
    let jwks = Reply::read(http.get(endpoint("jwks_uri")).send().await.unwrap()).await;
    assert_eq!(jwks.status, 200);
    let revoke = answer(
        http.post(endpoint("revocation_endpoint"))
            .form(&[("token", "x")])
            .send()
            .await
            .unwrap(),
    );
    assert!(
        revoke == 400 || revoke == 401,
        "revoke without a client: {revoke}"
    );
    let introspect = answer(
        http.post(endpoint("introspection_endpoint"))
            .form(&[("token", "x")])
            .send()
            .await
            .unwrap(),
    );
    assert_eq!(introspect, 401);
    let logout = answer(
        http.get(endpoint("end_session_endpoint"))
            .send()
            .await
            .unwrap(),
    );
    assert!(
        logout != 404 && logout != 405 && logout < 500,
        "logout: {logout}"
    );

    let strings = |name: &str| -> Vec<String> {
        doc[name]
            .as_array()
            .unwrap_or_else(|| panic!("{name} advertised: {doc}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        strings("response_types_supported"),
        ["code"],
        "no implicit, no hybrid"
    );
    if doc.get("response_modes_supported").is_some() {
        let modes = strings("response_modes_supported");
        assert!(modes.contains(&"query".to_owned()), "{modes:?}");
        assert!(!modes.contains(&"fragment".to_owned()), "{modes:?}");
    }
    assert_eq!(strings("code_challenge_methods_supported"), ["S256"]);
    let grants = strings("grant_types_supported");
    for grant in ["authorization_code", "refresh_token", "client_credentials"] {
        assert!(grants.contains(&grant.to_owned()), "{grant}: {grants:?}");
    }
    for grant in ["implicit", "password"] {
        assert!(!grants.contains(&grant.to_owned()), "{grant}: {grants:?}");
    }
    let methods = strings("token_endpoint_auth_methods_supported");
    for method in ["client_secret_basic", "client_secret_post", "none"] {
        assert!(
            methods.contains(&method.to_owned()),
            "{method}: {methods:?}"
        );
    }
    if methods.contains(&"private_key_jwt".to_owned()) {
        assert!(
            doc["token_endpoint_auth_signing_alg_values_supported"].is_array(),
            "RFC 8414 §2: private_key_jwt needs its algorithms"
        );
    }
    assert!(strings("scopes_supported").contains(&"openid".to_owned()));
    assert!(strings("subject_types_supported").contains(&"public".to_owned()));
    assert_eq!(
        doc["authorization_response_iss_parameter_supported"], true,
        "RFC 9207 §3"
    );
    if let Some(prompts) = doc.get("prompt_values_supported") {
        let prompts: Vec<&str> = prompts
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for prompt in ["none", "login", "consent"] {
            assert!(prompts.contains(&prompt), "{prompt}: {prompts:?}");
        }
    }
    // Every ID token algorithm has a key in the JWKS; RS256 is among them.
    let algs = strings("id_token_signing_alg_values_supported");
    assert!(
        algs.contains(&"RS256".to_owned()),
        "OIDC Discovery §3: {algs:?}"
    );
    assert!(!algs.contains(&"none".to_owned()));
    let keys = jwks.json["keys"].as_array().unwrap();
    for alg in &algs {
        let kty = match &alg[..2] {
            "RS" | "PS" => "RSA",
            "ES" => "EC",
            "Ed" => "OKP",
            "HS" => panic!("a symmetric ID token algorithm is advertised: {alg}"),
            _ => panic!("unexpected algorithm {alg}"),
        };
        assert!(
            keys.iter()
                .any(|k| k["kty"] == kty && (k.get("alg").is_none() || k["alg"] == alg.as_str())),
            "no {kty} key for {alg} in {}",
            jwks.text
        );
    }
    for key in keys {
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(
                key.get(private).is_none(),
                "the JWKS publishes a private part: {private}"
            );
        }
    }
    // The claims the ID token carries are advertised.
    if doc.get("claims_supported").is_some() {
        let claims = strings("claims_supported");
        for claim in [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "email",
            "email_verified",
            "name",
        ] {
            assert!(claims.contains(&claim.to_owned()), "{claim}: {claims:?}");
        }
    }
}

/// Client management over HTTP (`oauth_clients:manage`): register (the
/// secret shown once, never listed), read, list, rotate the secret (the old
/// one stops working), refuse bad redirect URIs, delete (the client stops
/// working); another tenant sees none of it; an OAuth token without the
/// scope cannot manage clients.
pub(crate) async fn client_management_routes(provider: &Provider) {
    let ada = provider.sign_up("registry", "ada@registry.test").await;
    let bob = provider.sign_up("rival", "bob@rival.test").await;
    let call = |method: reqwest::Method, path: &str, token: Option<&str>, body: Option<Value>| {
        let mut request = provider.http.request(method, provider.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move { Reply::read(request.send().await.unwrap()).await }
    };
    let body = json!({
        "name": "Acme CRM",
        "kind": "confidential",
        "redirect_uris": [CALLBACK],
        "grant_types": ["authorization_code", "refresh_token"],
        "scopes": ["openid", "email", "offline_access"],
    });
    let anonymous = call(
        reqwest::Method::POST,
        "/oauth/clients",
        None,
        Some(body.clone()),
    )
    .await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text);
    let created = call(
        reqwest::Method::POST,
        "/oauth/clients",
        Some(&ada.token),
        Some(body.clone()),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let id = created.json["client"]["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret = created.json["client_secret"].as_str().unwrap().to_owned();
    assert!(
        created.json["client"].get("secret_hash").is_none(),
        "{}",
        created.text
    );
    let client = Registered {
        id: id.clone(),
        secret: Some(secret.clone()),
    };

    let listed = call(
        reqwest::Method::GET,
        "/oauth/clients",
        Some(&ada.token),
        None,
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert!(listed.text.contains(&id), "{}", listed.text);
    assert!(!listed.text.contains(&secret), "the secret is shown once");
    let path = format!("/oauth/clients/{id}");
    let got = call(reqwest::Method::GET, &path, Some(&ada.token), None).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert!(!got.text.contains(&secret));
    // Another tenant: nothing to see, change, rotate or delete.
    let theirs = call(
        reqwest::Method::GET,
        "/oauth/clients",
        Some(&bob.token),
        None,
    )
    .await;
    assert_eq!(theirs.status, 200, "{}", theirs.text);
    assert!(!theirs.text.contains(&id), "{}", theirs.text);
    for (method, target) in [
        (reqwest::Method::GET, path.clone()),
        (reqwest::Method::DELETE, path.clone()),
        (reqwest::Method::POST, format!("{path}/secret")),
    ] {
        let reply = call(method.clone(), &target, Some(&bob.token), None).await;
        assert_eq!(reply.status, 404, "{method} {target}: {}", reply.text);
    }
    let reply = call(
        reqwest::Method::PUT,
        &path,
        Some(&bob.token),
        Some(body.clone()),
    )
    .await;
    assert_eq!(reply.status, 404, "{}", reply.text);

    // Redirect URIs a client may not register (RFC 6749 §3.1.2, RFC 8252 §7.3).
    for uri in [
        "http://evil.example/cb",
        "https://app.example/cb#fragment",
        "/relative",
        "javascript:alert(1)",
    ] {
        let mut bad = body.clone();
        bad["redirect_uris"] = json!([uri]);
        let reply = call(
            reqwest::Method::POST,
            "/oauth/clients",
            Some(&ada.token),
            Some(bad),
        )
        .await;
        assert_eq!(reply.status, 422, "{uri}: {}", reply.text);
    }

    // The registered client works; a rotated secret replaces the old one.
    let browser = provider.browser();
    let (code, verifier) = provider.code_for(&browser, &client, &ada, "openid").await;
    let reply = provider
        .exchange(&client, &code, Some(&verifier), CALLBACK)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let rotated = call(
        reqwest::Method::POST,
        &format!("{path}/secret"),
        Some(&ada.token),
        None,
    )
    .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    assert_eq!(rotated.header("cache-control"), Some("no-store"));
    let new_secret = rotated.json["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    let (code, verifier) = provider.code_for(&browser, &client, &ada, "openid").await;
    provider
        .exchange(&client, &code, Some(&verifier), CALLBACK)
        .await
        .assert_oauth_error(401, "invalid_client");
    let client = Registered {
        id: id.clone(),
        secret: Some(new_secret),
    };
    let reply = provider
        .exchange(&client, &code, Some(&verifier), CALLBACK)
        .await;
    assert_eq!(
        reply.status, 200,
        "the failed attempt did not spend the code: {}",
        reply.text
    );

    // An OAuth token of ada without the scope cannot manage clients.
    let (code, verifier) = provider.code_for(&browser, &client, &ada, "openid").await;
    let tokens = provider
        .exchange(&client, &code, Some(&verifier), CALLBACK)
        .await;
    let narrow = tokens.json["access_token"].as_str().unwrap().to_owned();
    let reply = call(reqwest::Method::GET, "/oauth/clients", Some(&narrow), None).await;
    assert_eq!(reply.status, 403, "{}", reply.text);

    // A machine client registered through the route: its token reads
    // members (its scope); once the client is deleted, the token is refused.
    let machine = call(
        reqwest::Method::POST,
        "/oauth/clients",
        Some(&ada.token),
        Some(json!({
            "name": "Reporter",
            "kind": "confidential",
            "grant_types": ["client_credentials"],
            "scopes": ["members:read"],
        })),
    )
    .await;
    assert_eq!(machine.status, 201, "{}", machine.text);
    let machine_id = machine.json["client"]["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let machine_client = Registered {
        id: machine_id.clone(),
        secret: Some(machine.json["client_secret"].as_str().unwrap().to_owned()),
    };
    let token = provider
        .post_form(
            "/oauth/token",
            Some(&machine_client),
            &[
                ("grant_type", "client_credentials"),
                ("scope", "members:read"),
            ],
        )
        .await;
    assert_eq!(token.status, 200, "{}", token.text);
    let machine_token = token.json["access_token"].as_str().unwrap().to_owned();
    let members = provider.get("/members", Some(&machine_token)).await;
    assert_eq!(members.status, 200, "{}", members.text);
    let roles = provider.get("/roles", Some(&machine_token)).await;
    assert_eq!(roles.status, 403, "beyond its scopes: {}", roles.text);
    let deleted = call(
        reqwest::Method::DELETE,
        &format!("/oauth/clients/{machine_id}"),
        Some(&ada.token),
        None,
    )
    .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let members = provider.get("/members", Some(&machine_token)).await;
    assert_eq!(
        members.status, 401,
        "a deleted client's token: {}",
        members.text
    );

    // Deleted: its credentials and its authorization requests are refused.
    let deleted = call(reqwest::Method::DELETE, &path, Some(&ada.token), None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let gone = call(reqwest::Method::GET, &path, Some(&ada.token), None).await;
    assert_eq!(gone.status, 404, "{}", gone.text);
    provider
        .post_form(
            "/oauth/token",
            Some(&client),
            &[("grant_type", "refresh_token"), ("refresh_token", "x")],
        )
        .await
        .assert_oauth_error(401, "invalid_client");
    let trip = browser
        .run(
            &url_of(&provider.base, &request_params(&client, &[])),
            None,
            None,
        )
        .await;
    assert_error_page(&trip, "a deleted client");
}

/// RP-Initiated Logout 1.0 §2, §3: a post-logout URI must be registered
/// for the client (exact match), the `client_id` must be the ID token
/// hint's audience, a hint must be an ID token of this provider; a logout
/// without a hint asks the user, and a cross-site post without the page's
/// CSRF token ends nothing.
pub(crate) async fn logout_rules(provider: &Provider) {
    let ada = provider.sign_up("farewell", "ada@farewell.test").await;
    let web = provider.web_client(&ada).await;
    let other = provider.web_client(&ada).await;
    let browser = provider.browser();
    let (code, verifier) = provider.code_for(&browser, &web, &ada, "openid").await;
    let tokens = provider
        .exchange(&web, &code, Some(&verifier), CALLBACK)
        .await;
    assert_eq!(tokens.status, 200, "{}", tokens.text);
    let id_token = tokens.json["id_token"].as_str().unwrap().to_owned();
    let logout = |params: &[(&str, &str)]| {
        let mut url = Url::parse(&provider.url("/oauth/logout")).unwrap();
        url.query_pairs_mut().extend_pairs(params);
        url.to_string()
    };
    // Still signed in afterwards: a silent authorization succeeds.
    let still_signed_in = |browser: &Browser| {
        let params = request_params(&web, &[("prompt", Some("none")), ("scope", Some("openid"))]);
        let url = url_of(&provider.base, &params);
        let browser = Browser {
            base: browser.base.clone(),
            http: browser.http.clone(),
        };
        async move {
            let trip = browser.run(&url, None, None).await;
            match trip.landing {
                Landing::Redirect(url) => param(&url, "code").is_some(),
                Landing::Page { .. } => false,
            }
        }
    };
    assert!(still_signed_in(&browser).await);

    for (what, params) in [
        (
            "an unregistered post_logout_redirect_uri",
            vec![
                ("id_token_hint", id_token.as_str()),
                ("post_logout_redirect_uri", "http://evil.example/bye"),
            ],
        ),
        (
            "a longer post_logout_redirect_uri",
            vec![
                ("id_token_hint", id_token.as_str()),
                (
                    "post_logout_redirect_uri",
                    "http://127.0.0.1:8080/bye/../evil",
                ),
            ],
        ),
        (
            "another client than the hint's audience",
            vec![
                ("id_token_hint", id_token.as_str()),
                ("client_id", other.id.as_str()),
                ("post_logout_redirect_uri", AFTER_LOGOUT),
            ],
        ),
        (
            "a forged hint",
            vec![
                ("id_token_hint", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."),
                ("post_logout_redirect_uri", AFTER_LOGOUT),
            ],
        ),
        (
            "a post_logout_redirect_uri without a client",
            vec![("post_logout_redirect_uri", AFTER_LOGOUT)],
        ),
    ] {
        let trip = browser.run(&logout(&params), None, None).await;
        assert_error_page(&trip, what);
    }
    assert!(
        still_signed_in(&browser).await,
        "a refused logout ends no session"
    );

    // No hint: a confirmation page; a post without its CSRF token (as a
    // cross-site form would send) ends nothing.
    let page = logout(&[
        ("client_id", web.id.as_str()),
        ("post_logout_redirect_uri", AFTER_LOGOUT),
        ("state", "s1"),
    ]);
    let trip = browser.run(&page, None, None).await;
    let (url, body) = match trip.landing {
        Landing::Page {
            url, status, body, ..
        } => {
            assert_eq!(status, 200, "{body}");
            (url, body)
        }
        Landing::Redirect(url) => panic!("logged out without asking: {url}"),
    };
    assert!(
        still_signed_in(&browser).await,
        "showing the page ends nothing"
    );
    let action = form_action(&body, &url);
    let forged = browser
        .http
        .post(action.clone())
        .header("origin", "https://evil.example")
        .form(&[
            ("client_id", web.id.as_str()),
            ("post_logout_redirect_uri", AFTER_LOGOUT),
            ("state", "s1"),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        !forged.status().is_redirection(),
        "a forged logout post: {}",
        forged.status()
    );
    assert!(
        still_signed_in(&browser).await,
        "a forged logout ends nothing"
    );
    let mut form = Vec::new();
    for name in ["csrf", "client_id", "post_logout_redirect_uri", "state"] {
        if let Some(value) = input(&body, name) {
            form.push((name, value));
        }
    }
    let confirmed = browser.post(&action, &form).await;
    assert!(
        confirmed.status().is_redirection(),
        "{}",
        confirmed.status()
    );
    let back = action
        .join(confirmed.headers()["location"].to_str().unwrap())
        .unwrap();
    assert!(back.as_str().starts_with(AFTER_LOGOUT), "{back}");
    assert_eq!(param(&back, "state").as_deref(), Some("s1"));
    assert!(!still_signed_in(&browser).await, "signed out");
}

/// userinfo and the ID token carry the claims of the granted scopes only
/// (OIDC Core §5.4): `openid` alone gives `sub`, `email` adds the email,
/// `profile` the name.
pub(crate) async fn claims_follow_scopes(provider: &Provider) {
    let ada = provider.sign_up("claims", "ada@claims.test").await;
    let web = provider.web_client(&ada).await;
    let browser = provider.browser();
    for (scope, email, name) in [
        ("openid", false, false),
        ("openid email", true, false),
        ("openid profile", false, true),
    ] {
        let (code, verifier) = provider.code_for(&browser, &web, &ada, scope).await;
        let tokens = provider
            .exchange(&web, &code, Some(&verifier), CALLBACK)
            .await;
        assert_eq!(tokens.status, 200, "{}", tokens.text);
        let access = tokens.json["access_token"].as_str().unwrap();
        let id_claims = jwt_claims(tokens.json["id_token"].as_str().unwrap());
        let info = provider.get("/oauth/userinfo", Some(access)).await;
        assert_eq!(info.status, 200, "{}", info.text);
        assert_eq!(info.json["sub"], ada.user.to_string());
        assert_eq!(id_claims["sub"], ada.user.to_string());
        for claims in [&info.json, &id_claims] {
            assert_eq!(claims.get("email").is_some(), email, "{scope}: {claims}");
            assert_eq!(
                claims.get("email_verified").is_some(),
                email,
                "{scope}: {claims}"
            );
            assert_eq!(claims.get("name").is_some(), name, "{scope}: {claims}");
        }
        assert!(
            tokens.json.get("refresh_token").is_none(),
            "{scope}: no offline_access"
        );
    }
}

/// Every advertised ID token algorithm works end to end: a client that
/// registers it (`id_token_signed_response_alg`) gets ID tokens the
/// library verifies by the JWKS, with an `at_hash` of that algorithm's hash.
pub(crate) async fn every_advertised_id_token_algorithm(provider: &Provider) {
    let ada = provider.sign_up("algs", "ada@algs.test").await;
    let doc = provider
        .get("/.well-known/openid-configuration", None)
        .await;
    let algorithms: Vec<String> = doc.json["id_token_signing_alg_values_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert!(!algorithms.is_empty());
    let oidc = provider.tenancy.module::<OidcModule>().unwrap();
    let http = rp_http();
    let browser = provider.browser();
    for alg in algorithms {
        let (client, secret) = oidc
            .provider()
            .register_client(
                Some(ada.tenant),
                NewOAuthClient {
                    name: format!("{alg} client"),
                    kind: ClientKind::Confidential,
                    redirect_uris: vec![RedirectUri::parse(CALLBACK).unwrap()],
                    grant_types: vec![GrantType::AuthorizationCode],
                    scopes: vec!["openid".into()],
                    id_token_signed_response_alg: Some(alg.parse().unwrap()),
                    ..NewOAuthClient::default()
                },
                Actor::User(ada.user),
            )
            .await
            .unwrap();
        let registered = Registered {
            id: client.id.as_str().to_owned(),
            secret: secret.map(|s| s.expose().to_owned()),
        };
        let (rp, _) = discover(&provider.base, &registered, &http).await;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, _, nonce) = rp
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge)
            .url();
        let trip = browser.run(url.as_str(), Some(&ada), Some("allow")).await;
        let code = param(&trip.redirect(), "code").expect("a code");
        let tokens = rp
            .exchange_code(AuthorizationCode::new(code))
            .unwrap()
            .set_pkce_verifier(verifier)
            .request_async(&http)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e:?}"));
        let id_token = tokens.id_token().expect("an ID token");
        let id_verifier = rp.id_token_verifier();
        let claims = id_token
            .claims(&id_verifier, &nonce)
            .unwrap_or_else(|e| panic!("{alg} ID token: {e:?}"));
        let header = jwt_header(&id_token.to_string());
        assert_eq!(header["alg"], alg.as_str());
        let expected = claims.access_token_hash().expect("at_hash");
        let actual = AccessTokenHash::from_token(
            tokens.access_token(),
            id_token.signing_alg().unwrap(),
            id_token.signing_key(&id_verifier).unwrap(),
        )
        .unwrap();
        assert_eq!(&actual, expected, "{alg}: at_hash");
    }
}

/// What discovery says about authentication at the other endpoints is
/// what they accept: introspection by `client_secret_post`, revocation by
/// a public client naming itself (`none`); request objects, which it says
/// it does not support, are refused (OIDC Core §6).
pub(crate) async fn endpoint_auth_methods_as_advertised(provider: &Provider) {
    let ada = provider.sign_up("methods", "ada@methods.test").await;
    let web = provider.web_client(&ada).await;
    let spa = provider.public_client(&ada).await;
    let browser = provider.browser();
    let (code, verifier) = provider.code_for(&browser, &web, &ada, "openid").await;
    let tokens = provider
        .exchange(&web, &code, Some(&verifier), CALLBACK)
        .await;
    let access = tokens.json["access_token"].as_str().unwrap().to_owned();
    let secret = web.secret.clone().unwrap();
    let posted = provider
        .post_form(
            "/oauth/introspect",
            None,
            &[
                ("token", &access),
                ("client_id", &web.id),
                ("client_secret", &secret),
            ],
        )
        .await;
    assert_eq!(posted.status, 200, "{}", posted.text);
    assert_eq!(posted.json["active"], true, "{}", posted.text);

    let (code, verifier) = provider
        .code_for(&browser, &spa, &ada, "openid offline_access")
        .await;
    let tokens = provider
        .exchange(&spa, &code, Some(&verifier), CALLBACK)
        .await;
    assert_eq!(tokens.status, 200, "{}", tokens.text);
    let refresh = tokens.json["refresh_token"].as_str().unwrap().to_owned();
    let revoked = provider.revoke(&spa, &refresh, Some("refresh_token")).await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    provider
        .post_form(
            "/oauth/token",
            Some(&spa),
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await
        .assert_oauth_error(400, "invalid_grant");

    for (name, error) in [
        ("request", "request_not_supported"),
        ("request_uri", "request_uri_not_supported"),
    ] {
        let params = request_params(&web, &[(name, Some("eyJhbGciOiJub25lIn0.e30."))]);
        let trip = browser
            .run(&url_of(&provider.base, &params), None, None)
            .await;
        assert_error_redirect(provider, &trip, error);
    }
}

/// `private_key_jwt` (RFC 7523 §2.2, §3), advertised by discovery: a
/// machine client signs an assertion (here with the `jsonwebtoken` crate)
/// with the key whose public half it registered; the assertion works once,
/// only for this token endpoint, only unexpired, only by that key.
pub(crate) async fn private_key_jwt_client_authentication(provider: &Provider) {
    use josekit::jwk::alg::rsa::RsaKeyPair;
    use tenancy_http::auth::{KeyAlgorithm, StoredKey, StoredPrivateKey};

    let doc = provider
        .get("/.well-known/openid-configuration", None)
        .await;
    let methods = doc.json["token_endpoint_auth_methods_supported"].to_string();
    assert!(methods.contains("private_key_jwt"), "{methods}");
    let algs = doc.json["token_endpoint_auth_signing_alg_values_supported"].to_string();
    assert!(algs.contains("RS256"), "{algs}");
    let ada = provider.sign_up("assertions", "ada@assertions.test").await;
    let rs = provider.machine_client(&ada).await;
    let key_pair = || {
        let key =
            StoredKey::generate(KeyAlgorithm::Rs256, time::OffsetDateTime::now_utc()).unwrap();
        let StoredPrivateKey::Plaintext(private) = &key.private_key else {
            panic!("a fresh key is plaintext");
        };
        let jwk = josekit::jwk::Jwk::from_map(private.expose_secret().clone()).unwrap();
        let pem = RsaKeyPair::from_jwk(&jwk).unwrap().to_pem_private_key();
        (
            key.kid.clone(),
            key.public_jwk.clone().unwrap(),
            jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
        )
    };
    let (kid, public, signing) = key_pair();
    let (_, _, stranger) = key_pair();
    let oidc = provider.tenancy.module::<OidcModule>().unwrap();
    let (client, _) = oidc
        .provider()
        .register_client(
            Some(ada.tenant),
            NewOAuthClient {
                name: "Worker".into(),
                kind: ClientKind::Confidential,
                grant_types: vec![GrantType::ClientCredentials],
                scopes: vec!["projects:read".into()],
                jwks: Some(json!({ "keys": [public] })),
                ..NewOAuthClient::default()
            },
            Actor::User(ada.user),
        )
        .await
        .unwrap();
    let id = client.id.as_str().to_owned();
    let token_endpoint = provider.url("/oauth/token");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let assertion = |key: &jsonwebtoken::EncodingKey, aud: &str, jti: &str, exp: i64| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(
            &header,
            &json!({ "iss": id, "sub": id, "aud": aud, "jti": jti, "iat": now, "exp": exp }),
            key,
        )
        .unwrap()
    };
    let request = |assertion: String| async move {
        provider
            .post_form(
                "/oauth/token",
                None,
                &[
                    ("grant_type", "client_credentials"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &assertion),
                ],
            )
            .await
    };
    let ok = request(assertion(&signing, &token_endpoint, "one", now + 120)).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let access = ok.json["access_token"].as_str().unwrap();
    assert!(provider.active(&rs, access).await);
    for (what, refused) in [
        (
            "replayed",
            assertion(&signing, &token_endpoint, "one", now + 120),
        ),
        (
            "another audience",
            assertion(&signing, "https://other.example/token", "two", now + 120),
        ),
        (
            "expired",
            assertion(&signing, &token_endpoint, "three", now - 120),
        ),
        (
            "another key",
            assertion(&stranger, &token_endpoint, "four", now + 120),
        ),
    ] {
        let reply = request(refused).await;
        assert_eq!(
            reply.json["error"], "invalid_client",
            "{what}: {}",
            reply.text
        );
        assert!(
            reply.status == 400 || reply.status == 401,
            "{what}: {}",
            reply.text
        );
    }
}

/// The header of a JWT.
pub(crate) fn jwt_header(jwt: &str) -> Value {
    use base64::Engine as _;
    let header = jwt.split('.').next().expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Generates one test per scenario for `$serve`, on memory and on Postgres.
#[macro_export]
macro_rules! oidc_scenarios {
    ($serve:ident; $($scenario:ident),+ $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let provider = super::oidc::Provider::launch(super::oidc::Backend::Memory, super::$serve)
                        .await
                        .expect("memory app");
                    super::oidc::$scenario(&provider).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    if let Some(provider) = super::oidc::Provider::launch(super::oidc::Backend::Postgres, super::$serve).await {
                        super::oidc::$scenario(&provider).await;
                    }
                }
            )+
        }
    };
}
