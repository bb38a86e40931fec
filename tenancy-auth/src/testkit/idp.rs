//! A simulated external identity provider on `127.0.0.1:0`, for testing a
//! relying party (feature `testkit-idp`).
//!
//! One server speaks two dialects, each the way the real providers document
//! theirs:
//!
//! - **OpenID Connect**, as Google's provider does: a discovery document at
//!   `/.well-known/openid-configuration`, the authorization code flow with
//!   `state`, `nonce` and PKCE (`S256`, and `plain` as Google still accepts
//!   it), a token endpoint accepting `client_secret_basic` and
//!   `client_secret_post`, RS256 ID tokens (`iss sub aud azp exp iat nonce
//!   at_hash`, with `email`/`email_verified` under scope `email` and `name`
//!   under `profile`), userinfo and a JWKS. The endpoints live on paths of
//!   their own ([`OIDC_AUTHORIZE_PATH`], …) so a client that skips discovery
//!   fails.
//! - **GitHub-style OAuth 2.0**: `/login/oauth/authorize`,
//!   `/login/oauth/access_token` (JSON when the request accepts
//!   `application/json`, else form-encoded; errors answered `200` with an
//!   `error` field, as GitHub does), `/user` and `/user/emails` (with
//!   `verified` and `primary`; the emails need scope `user:email` or
//!   `user`). Like GitHub's API, `/user` and `/user/emails` refuse requests
//!   without a `User-Agent` (`403`).
//!
//! There is no UI: the authorize endpoints sign in the account the test
//! chose with [`SimulatedIdp::sign_in_as`] and redirect straight back with
//! `code` and `state` (`302`). Without a signed-in account they redirect an
//! error (`login_required` for OIDC, `access_denied` for GitHub-style).
//! Clients are registered with [`SimulatedIdp::register_client`]; redirect
//! URIs match exactly.
//!
//! Codes live ten minutes and are single-use: a replay is answered
//! `invalid_grant` (GitHub-style: `bad_verification_code`). A code is bound
//! to its client, its redirect URI and its PKCE challenge; a `code_verifier`
//! sent for a code issued without a challenge is refused (no PKCE downgrade).
//!
//! [`Misbehaviour`] turns the provider hostile for negative tests (wrong or
//! missing nonce, ID token signed by a key outside the JWKS or not signed,
//! wrong `iss` or `aud`, expired ID token, a wrong `iss` in the
//! authorization response, replayable codes, an authorize error), and every
//! request received is kept ([`SimulatedIdp::requests`]) so a test can
//! assert that the relying party sent a PKCE `code_verifier`, authenticated
//! as it should, and passed the right parameters.
//!
//! ```no_run
//! # async fn demo() {
//! use tenancy_auth::testkit::idp::{IdpAccount, IdpClient, SimulatedIdp};
//!
//! let idp = SimulatedIdp::start().await;
//! idp.register_client(IdpClient::new(
//!     "app",
//!     "app-secret",
//!     ["http://127.0.0.1:3000/sso/callback"],
//! ));
//! idp.sign_in_as(IdpAccount::new("ada@acme.test").with_name("Ada Lovelace"));
//! // Point the relying party at `idp.issuer()` (OIDC discovery) or at the
//! // `idp.github_*_url()` endpoints, send the "browser" to the authorize URL
//! // it builds, and deliver the redirect to its callback:
//! let authorize_url = "…"; // built by the relying party
//! let callback = idp.authorize(authorize_url);
//! assert!(callback.code().is_some());
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use josekit::jwk::Jwk;
use josekit::jws::{JwsSigner as _, RS256};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use time::{Duration, OffsetDateTime};
use url::Url;

/// Path of the OIDC discovery document.
pub const OIDC_DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Path of the OIDC authorization endpoint.
pub const OIDC_AUTHORIZE_PATH: &str = "/o/oauth2/v2/auth";
/// Path of the OIDC token endpoint.
pub const OIDC_TOKEN_PATH: &str = "/oauth2/v4/token";
/// Path of the OIDC userinfo endpoint.
pub const OIDC_USERINFO_PATH: &str = "/oauth2/v3/userinfo";
/// Path of the JWKS (the provider's `jwks_uri`).
pub const OIDC_JWKS_PATH: &str = "/oauth2/v3/certs";
/// Path of the GitHub-style authorization endpoint.
pub const GITHUB_AUTHORIZE_PATH: &str = "/login/oauth/authorize";
/// Path of the GitHub-style token endpoint.
pub const GITHUB_TOKEN_PATH: &str = "/login/oauth/access_token";
/// Path of the GitHub-style user endpoint.
pub const GITHUB_USER_PATH: &str = "/user";
/// Path of the GitHub-style user emails endpoint.
pub const GITHUB_EMAILS_PATH: &str = "/user/emails";

/// How long codes live (GitHub documents ten minutes).
const CODE_LIFETIME: Duration = Duration::minutes(10);
/// How long ID and access tokens live.
const TOKEN_LIFETIME: Duration = Duration::seconds(3599);

/// An OAuth client registered at the simulated provider. Both dialects
/// share the registrations.
#[derive(Clone)]
pub struct IdpClient {
    /// The `client_id`.
    pub client_id: String,
    /// The client secret.
    pub client_secret: String,
    /// Redirect URIs, matched exactly.
    pub redirect_uris: Vec<String>,
}

impl fmt::Debug for IdpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdpClient")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("redirect_uris", &self.redirect_uris)
            .finish()
    }
}

impl IdpClient {
    /// A client with its id, secret and redirect URIs.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        redirect_uris: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uris: redirect_uris.into_iter().map(Into::into).collect(),
        }
    }
}

/// An extra address of a GitHub-style account (`/user/emails`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpEmail {
    /// The address.
    pub email: String,
    /// Whether the provider verified it.
    pub verified: bool,
}

/// The person signed in at the simulated provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpAccount {
    /// The OIDC `sub`: stable, opaque, never reassigned.
    pub subject: String,
    /// The primary email address.
    pub email: String,
    /// Whether the provider verified [`email`](Self::email)
    /// (`email_verified` in OIDC, `verified` in `/user/emails`).
    pub email_verified: bool,
    /// The display name (`name`).
    pub name: String,
    /// The GitHub-style numeric user id (`id` of `/user`).
    pub github_id: u64,
    /// The GitHub-style handle (`login` of `/user`).
    pub github_login: String,
    /// Whether `/user` shows the primary address as its public `email`
    /// (GitHub shows `null` when the user keeps it private).
    pub public_email: bool,
    /// Further addresses listed by `/user/emails`, never primary.
    pub extra_emails: Vec<IdpEmail>,
}

impl IdpAccount {
    /// An account with a verified `email`; the subject, GitHub id and login
    /// and the name are derived from it.
    pub fn new(email: impl Into<String>) -> Self {
        let email = email.into();
        let digest = Sha256::digest(email.as_bytes());
        let mut id_bytes = [0u8; 8];
        id_bytes.copy_from_slice(&digest[..8]);
        // 1 to 2^31: GitHub ids are positive and fit an i32 in old clients.
        let github_id = u64::from_be_bytes(id_bytes) % (1 << 31) + 1;
        let subject = digest[..10].iter().map(|byte| u64::from(*byte) % 10).fold(
            String::from("1"),
            |mut s, d| {
                s.push(char::from(b'0' + d as u8));
                s
            },
        );
        let local = email.split('@').next().unwrap_or_default().to_owned();
        Self {
            subject,
            email,
            email_verified: true,
            name: local.clone(),
            github_id,
            github_login: local,
            public_email: false,
            extra_emails: Vec::new(),
        }
    }

    /// With this display name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// With this OIDC subject.
    #[must_use]
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = subject.into();
        self
    }

    /// With this GitHub-style id and login.
    #[must_use]
    pub fn with_github(mut self, id: u64, login: impl Into<String>) -> Self {
        self.github_id = id;
        self.github_login = login.into();
        self
    }

    /// With the primary address not verified by the provider.
    #[must_use]
    pub fn unverified(mut self) -> Self {
        self.email_verified = false;
        self
    }

    /// With the primary address shown as `/user`'s public `email`.
    #[must_use]
    pub fn with_public_email(mut self) -> Self {
        self.public_email = true;
        self
    }

    /// With a further address in `/user/emails`.
    #[must_use]
    pub fn with_extra_email(mut self, email: impl Into<String>, verified: bool) -> Self {
        self.extra_emails.push(IdpEmail {
            email: email.into(),
            verified,
        });
        self
    }
}

/// Ways to make the provider misbehave, for negative tests. Every field
/// off (the [`Default`]) is a well-behaved provider. Set with
/// [`SimulatedIdp::misbehave`]; it applies to what is issued afterwards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Misbehaviour {
    /// Put another `nonce` in the ID token than the one the client sent.
    pub wrong_nonce: bool,
    /// Sign ID tokens with a key that is not in the JWKS, under the `kid`
    /// of the published key (so only a signature check catches it).
    pub foreign_signing_key: bool,
    /// Put another issuer in the ID token's `iss`.
    pub wrong_issuer: bool,
    /// Put another client in the ID token's `aud` and `azp`.
    pub wrong_audience: bool,
    /// Issue ID tokens that expired an hour ago.
    pub expired_id_token: bool,
    /// Accept a code more than once (to check the relying party refuses a
    /// replayed callback by itself).
    pub allow_code_replay: bool,
    /// Answer every authorization request with this error code (such as
    /// `access_denied`), redirected to the client with its `state`.
    pub authorize_error: Option<String>,
    /// Leave the `nonce` out of ID tokens although the client sent one.
    pub omit_nonce: bool,
    /// Issue unsigned ID tokens (`"alg": "none"`, empty signature).
    pub unsigned_id_token: bool,
    /// Name another issuer in the authorization response's `iss`
    /// parameter (RFC 9207, the mix-up defence); the ID token keeps the
    /// right one.
    pub wrong_response_iss: bool,
}

impl Misbehaviour {
    /// A well-behaved provider.
    pub fn none() -> Self {
        Self::default()
    }

    /// A `nonce` other than the client's in ID tokens.
    pub fn wrong_nonce() -> Self {
        Self {
            wrong_nonce: true,
            ..Self::default()
        }
    }

    /// ID tokens signed by a key outside the JWKS.
    pub fn foreign_signing_key() -> Self {
        Self {
            foreign_signing_key: true,
            ..Self::default()
        }
    }

    /// Another issuer in ID tokens.
    pub fn wrong_issuer() -> Self {
        Self {
            wrong_issuer: true,
            ..Self::default()
        }
    }

    /// Another audience in ID tokens.
    pub fn wrong_audience() -> Self {
        Self {
            wrong_audience: true,
            ..Self::default()
        }
    }

    /// Expired ID tokens.
    pub fn expired_id_token() -> Self {
        Self {
            expired_id_token: true,
            ..Self::default()
        }
    }

    /// Codes usable more than once.
    pub fn allow_code_replay() -> Self {
        Self {
            allow_code_replay: true,
            ..Self::default()
        }
    }

    /// No `nonce` in ID tokens.
    pub fn omit_nonce() -> Self {
        Self {
            omit_nonce: true,
            ..Self::default()
        }
    }

    /// Unsigned ID tokens (`alg: none`).
    pub fn unsigned_id_token() -> Self {
        Self {
            unsigned_id_token: true,
            ..Self::default()
        }
    }

    /// Another issuer in the authorization response's `iss`.
    pub fn wrong_response_iss() -> Self {
        Self {
            wrong_response_iss: true,
            ..Self::default()
        }
    }

    /// Every authorization answered with `error` (e.g. `access_denied`).
    pub fn authorize_error(error: impl Into<String>) -> Self {
        Self {
            authorize_error: Some(error.into()),
            ..Self::default()
        }
    }
}

/// How a client authenticated at a token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic (`client_secret_basic`), with this client id.
    Basic {
        /// The client id sent.
        client_id: String,
    },
    /// `client_id` and `client_secret` in the form (`client_secret_post`).
    Post {
        /// The client id sent.
        client_id: String,
    },
    /// Only a `client_id` in the form, no secret.
    ClientIdOnly {
        /// The client id sent.
        client_id: String,
    },
    /// Nothing identifying a client.
    None,
}

/// A request the provider received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query parameters, in order.
    pub query: Vec<(String, String)>,
    /// The form body's parameters, in order (empty unless form-encoded).
    pub form: Vec<(String, String)>,
    /// The headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// How the client authenticated (token endpoints only, else `None`).
    pub client_auth: Option<ClientAuth>,
}

impl RecordedRequest {
    /// A parameter of the form body, else of the query.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .chain(self.query.iter())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Where the provider sent the browser after an authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeRedirect {
    /// The HTTP status (`302` for a redirect, `400` when the client or
    /// redirect URI is invalid and nothing was redirected).
    pub status: u16,
    /// The `Location` (the client's redirect URI with `code` and `state`,
    /// or `error`), when redirected.
    pub location: Option<String>,
    /// The error shown instead of redirecting, when not redirected.
    pub page: Option<String>,
}

impl AuthorizeRedirect {
    /// A parameter of the redirect's query.
    pub fn param(&self, name: &str) -> Option<String> {
        let location = Url::parse(self.location.as_deref()?).ok()?;
        location
            .query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }

    /// The authorization code, on success.
    pub fn code(&self) -> Option<String> {
        self.param("code")
    }

    /// The `state` echoed.
    pub fn state(&self) -> Option<String> {
        self.param("state")
    }

    /// The `error`, on failure.
    pub fn error(&self) -> Option<String> {
        self.param("error")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Oidc,
    Github,
}

struct SigningKey {
    kid: String,
    private: Jwk,
    public: Jwk,
}

impl SigningKey {
    /// A key under `kid`. The RSA material is generated once per process
    /// and shared by every provider started in it (generating 2048-bit
    /// keys dominates a test's time); each provider names it with a `kid`
    /// of its own. `foreign` picks the second key, never published.
    fn generate(kid: &str, foreign: bool) -> Self {
        static MATERIAL: OnceLock<[Jwk; 2]> = OnceLock::new();
        let material = MATERIAL.get_or_init(|| {
            let generate = || {
                Jwk::generate_rsa_key(2048).unwrap_or_else(|e| panic!("RSA key generation: {e}"))
            };
            [generate(), generate()]
        });
        let mut private = material[usize::from(foreign)].clone();
        private.set_key_id(kid);
        private.set_algorithm("RS256");
        private.set_key_use("sig");
        let mut public = private
            .to_public_key()
            .unwrap_or_else(|e| panic!("RSA public key: {e}"));
        public.set_key_id(kid);
        public.set_algorithm("RS256");
        public.set_key_use("sig");
        Self {
            kid: kid.to_owned(),
            private,
            public,
        }
    }

    fn sign_jwt(&self, kid: &str, claims: &Value) -> String {
        let header = json!({ "alg": "RS256", "kid": kid, "typ": "JWT" });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signer = RS256
            .signer_from_jwk(&self.private)
            .unwrap_or_else(|e| panic!("RS256 signer: {e}"));
        let signature = signer
            .sign(signing_input.as_bytes())
            .unwrap_or_else(|e| panic!("RS256 signature: {e}"));
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

#[derive(Clone)]
struct IssuedCode {
    dialect: Dialect,
    client_id: String,
    redirect_uri: Option<String>,
    scopes: Vec<String>,
    nonce: Option<String>,
    challenge: Option<(String, String)>,
    account: IdpAccount,
    issued_at: OffsetDateTime,
    used: bool,
}

#[derive(Clone)]
struct IssuedToken {
    dialect: Dialect,
    scopes: Vec<String>,
    account: IdpAccount,
    expires_at: OffsetDateTime,
}

#[derive(Default)]
struct IdpState {
    clients: HashMap<String, IdpClient>,
    account: Option<IdpAccount>,
    misbehaviour: Misbehaviour,
    codes: HashMap<String, IssuedCode>,
    tokens: HashMap<String, IssuedToken>,
    requests: Vec<RecordedRequest>,
}

struct Shared {
    issuer: String,
    key: SigningKey,
    foreign_key: SigningKey,
    state: Mutex<IdpState>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, IdpState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running simulated provider; it stops when dropped.
pub struct SimulatedIdp {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for SimulatedIdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatedIdp")
            .field("issuer", &self.shared.issuer)
            .finish_non_exhaustive()
    }
}

impl Drop for SimulatedIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SimulatedIdp {
    /// Generates the RSA keys and starts serving on `127.0.0.1:0`.
    ///
    /// # Panics
    /// If it cannot listen or generate keys (a broken test machine).
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("simulated IdP cannot listen: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("simulated IdP has no address: {e}"));
        let (key, foreign_key) = tokio::task::spawn_blocking(|| {
            let kid = random_token(8);
            (
                SigningKey::generate(&kid, false),
                SigningKey::generate(&kid, true),
            )
        })
        .await
        .unwrap_or_else(|e| panic!("simulated IdP key generation: {e}"));
        let shared = Arc::new(Shared {
            issuer: format!("http://{addr}"),
            key,
            foreign_key,
            state: Mutex::new(IdpState::default()),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// The socket address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OIDC issuer (`http://127.0.0.1:<port>`), also the base URL of
    /// every endpoint.
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// An absolute URL of `path` on this provider.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.shared.issuer)
    }

    /// The OIDC discovery document's URL.
    pub fn discovery_url(&self) -> String {
        self.url(OIDC_DISCOVERY_PATH)
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> String {
        self.url(OIDC_JWKS_PATH)
    }

    /// The GitHub-style authorization endpoint.
    pub fn github_authorize_url(&self) -> String {
        self.url(GITHUB_AUTHORIZE_PATH)
    }

    /// The GitHub-style token endpoint.
    pub fn github_token_url(&self) -> String {
        self.url(GITHUB_TOKEN_PATH)
    }

    /// The GitHub-style user endpoint.
    pub fn github_user_url(&self) -> String {
        self.url(GITHUB_USER_PATH)
    }

    /// The GitHub-style emails endpoint.
    pub fn github_emails_url(&self) -> String {
        self.url(GITHUB_EMAILS_PATH)
    }

    /// The `kid` of the published signing key.
    pub fn key_id(&self) -> &str {
        &self.shared.key.kid
    }

    /// Registers (or replaces) a client, for both dialects.
    pub fn register_client(&self, client: IdpClient) {
        self.shared
            .state()
            .clients
            .insert(client.client_id.clone(), client);
    }

    /// Makes `account` the person signed in: the next authorization
    /// requests succeed for them.
    pub fn sign_in_as(&self, account: IdpAccount) {
        self.shared.state().account = Some(account);
    }

    /// Signs the person out: authorization requests are answered
    /// `login_required` (OIDC) or `access_denied` (GitHub-style).
    pub fn sign_out(&self) {
        self.shared.state().account = None;
    }

    /// Makes the provider misbehave from now on (replacing earlier
    /// settings; [`Misbehaviour::none`] restores good behaviour).
    pub fn misbehave(&self, misbehaviour: Misbehaviour) {
        self.shared.state().misbehaviour = misbehaviour;
    }

    /// Every request received, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.state().requests.clone()
    }

    /// The requests received on `path`, oldest first.
    pub fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.shared
            .state()
            .requests
            .iter()
            .filter(|request| request.path == path)
            .cloned()
            .collect()
    }

    /// The requests to either token endpoint, oldest first.
    pub fn token_requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .state()
            .requests
            .iter()
            .filter(|request| request.path == OIDC_TOKEN_PATH || request.path == GITHUB_TOKEN_PATH)
            .cloned()
            .collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.state().requests.clear();
    }

    /// Plays the browser at the authorization endpoint: handles
    /// `authorize_url` (an absolute URL on this provider, either dialect)
    /// as a `GET` would, without HTTP, and says where the browser is sent.
    /// The request is recorded like one received over HTTP.
    pub fn authorize(&self, authorize_url: &str) -> AuthorizeRedirect {
        let Ok(url) = Url::parse(authorize_url) else {
            return AuthorizeRedirect {
                status: 400,
                location: None,
                page: Some("not an absolute URL".to_owned()),
            };
        };
        let query = url
            .query_pairs()
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect::<Vec<_>>();
        let dialect = match url.path() {
            OIDC_AUTHORIZE_PATH => Dialect::Oidc,
            GITHUB_AUTHORIZE_PATH => Dialect::Github,
            other => {
                return AuthorizeRedirect {
                    status: 404,
                    location: None,
                    page: Some(format!("no authorization endpoint at {other}")),
                };
            }
        };
        let mut state = self.shared.state();
        state.requests.push(RecordedRequest {
            method: "GET".to_owned(),
            path: url.path().to_owned(),
            query: query.clone(),
            form: Vec::new(),
            headers: Vec::new(),
            client_auth: None,
        });
        authorize(&self.shared, &mut state, dialect, &query)
    }
}

/// Random URL-safe text from `bytes` random bytes.
fn random_token(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::fill(&mut buffer[..]);
    URL_SAFE_NO_PAD.encode(buffer)
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

fn parse_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes)
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect()
}

fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Whether `name` appears more than once (RFC 6749 §3.1: parameters MUST
/// NOT be repeated).
fn repeated(pairs: &[(String, String)]) -> Option<&str> {
    pairs.iter().enumerate().find_map(|(i, (key, _))| {
        pairs[..i]
            .iter()
            .any(|(earlier, _)| earlier == key)
            .then_some(key.as_str())
    })
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = uri
        .query()
        .map(|q| parse_pairs(q.as_bytes()))
        .unwrap_or_default();
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim() == "application/x-www-form-urlencoded")
        });
    let form = if is_form {
        parse_pairs(&body)
    } else {
        Vec::new()
    };
    let recorded_headers = headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect::<Vec<_>>();
    let is_token = path == OIDC_TOKEN_PATH || path == GITHUB_TOKEN_PATH;
    let client_auth = is_token.then(|| client_auth_of(&headers, &form));
    let mut state = shared.state();
    state.requests.push(RecordedRequest {
        method: method.as_str().to_owned(),
        path: path.clone(),
        query: query.clone(),
        form: form.clone(),
        headers: recorded_headers,
        client_auth,
    });
    match (method.as_str(), path.as_str()) {
        ("GET", OIDC_DISCOVERY_PATH) => json_response(StatusCode::OK, &discovery(&shared.issuer)),
        ("GET", OIDC_JWKS_PATH) => {
            let jwks = json!({ "keys": [Value::Object(shared.key.public.as_ref().clone())] });
            json_response(StatusCode::OK, &jwks)
        }
        ("GET", OIDC_AUTHORIZE_PATH) => {
            authorize(&shared, &mut state, Dialect::Oidc, &query).into_response()
        }
        ("POST", OIDC_AUTHORIZE_PATH) if is_form => {
            authorize(&shared, &mut state, Dialect::Oidc, &form).into_response()
        }
        ("GET", GITHUB_AUTHORIZE_PATH) => {
            authorize(&shared, &mut state, Dialect::Github, &query).into_response()
        }
        ("POST", OIDC_TOKEN_PATH) => token(&shared, &mut state, Dialect::Oidc, &headers, &form),
        ("POST", GITHUB_TOKEN_PATH) => {
            // GitHub reads the parameters from the query as well as the body.
            let mut params = form.clone();
            params.extend(query.iter().cloned());
            token(&shared, &mut state, Dialect::Github, &headers, &params)
        }
        ("GET" | "POST", OIDC_USERINFO_PATH) => userinfo(&mut state, &headers),
        ("GET", GITHUB_USER_PATH) => github_api(&mut state, &headers, false),
        ("GET", GITHUB_EMAILS_PATH) => github_api(&mut state, &headers, true),
        (_, OIDC_DISCOVERY_PATH | OIDC_JWKS_PATH | OIDC_AUTHORIZE_PATH | OIDC_TOKEN_PATH)
        | (_, OIDC_USERINFO_PATH | GITHUB_AUTHORIZE_PATH | GITHUB_TOKEN_PATH)
        | (_, GITHUB_USER_PATH | GITHUB_EMAILS_PATH) => text_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed".to_owned(),
        ),
        _ => text_response(StatusCode::NOT_FOUND, "not found".to_owned()),
    }
}

fn discovery(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}{OIDC_AUTHORIZE_PATH}"),
        "token_endpoint": format!("{issuer}{OIDC_TOKEN_PATH}"),
        "userinfo_endpoint": format!("{issuer}{OIDC_USERINFO_PATH}"),
        "jwks_uri": format!("{issuer}{OIDC_JWKS_PATH}"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "claims_supported": [
            "aud", "email", "email_verified", "exp", "iat", "iss", "name", "sub", "nonce", "azp", "at_hash"
        ],
        "code_challenge_methods_supported": ["plain", "S256"],
        "authorization_response_iss_parameter_supported": true,
    })
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

fn text_response(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

impl AuthorizeRedirect {
    fn into_response(self) -> Response {
        match self.location {
            Some(location) => {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = StatusCode::FOUND;
                if let Ok(value) = HeaderValue::from_str(&location) {
                    response.headers_mut().insert(header::LOCATION, value);
                }
                response
            }
            None => text_response(
                StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST),
                self.page.unwrap_or_default(),
            ),
        }
    }
}

/// Answers an authorization request: a redirect to the client, or an error
/// page when the client or redirect URI cannot be trusted (RFC 6749
/// §4.1.2.1: never redirect to an unverified URI).
fn authorize(
    shared: &Shared,
    state: &mut IdpState,
    dialect: Dialect,
    params: &[(String, String)],
) -> AuthorizeRedirect {
    let page = |status: u16, message: String| AuthorizeRedirect {
        status,
        location: None,
        page: Some(message),
    };
    let Some(client_id) = get(params, "client_id") else {
        return page(400, "invalid_request: missing client_id".to_owned());
    };
    let Some(client) = state.clients.get(client_id).cloned() else {
        return page(401, format!("invalid_client: unknown client {client_id}"));
    };
    let redirect_uri = match (get(params, "redirect_uri"), dialect) {
        (Some(uri), _) if client.redirect_uris.iter().any(|r| r == uri) => uri.to_owned(),
        (Some(uri), _) => {
            return page(
                400,
                format!("redirect_uri_mismatch: {uri} is not registered for {client_id}"),
            );
        }
        // GitHub falls back to the registered callback; OIDC requires it.
        (None, Dialect::Github) => match client.redirect_uris.first() {
            Some(uri) => uri.clone(),
            None => return page(400, "redirect_uri_mismatch: none registered".to_owned()),
        },
        (None, Dialect::Oidc) => {
            return page(400, "invalid_request: missing redirect_uri".to_owned());
        }
    };
    let given_redirect = get(params, "redirect_uri").map(str::to_owned);
    let client_state = get(params, "state").map(str::to_owned);
    let response_iss = if state.misbehaviour.wrong_response_iss {
        format!("{}/elsewhere", shared.issuer)
    } else {
        shared.issuer.clone()
    };
    let redirect = |pairs: &[(&str, &str)]| {
        let mut location = match Url::parse(&redirect_uri) {
            Ok(url) => url,
            Err(_) => return page(400, "redirect_uri is not an absolute URL".to_owned()),
        };
        {
            let mut query = location.query_pairs_mut();
            for (key, value) in pairs {
                query.append_pair(key, value);
            }
            if let Some(client_state) = &client_state {
                query.append_pair("state", client_state);
            }
            if dialect == Dialect::Oidc {
                query.append_pair("iss", &response_iss);
            }
        }
        AuthorizeRedirect {
            status: 302,
            location: Some(location.into()),
            page: None,
        }
    };
    let error = |code: &str, description: &str| {
        redirect(&[("error", code), ("error_description", description)])
    };
    if let Some(name) = repeated(params) {
        return error("invalid_request", &format!("{name} is repeated"));
    }
    if dialect == Dialect::Oidc {
        match get(params, "response_type") {
            Some("code") => {}
            Some(_) => return error("unsupported_response_type", "only code is supported"),
            None => return error("invalid_request", "missing response_type"),
        }
    }
    let scopes = get(params, "scope")
        .unwrap_or_default()
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect::<Vec<_>>();
    if dialect == Dialect::Oidc && scopes.is_empty() {
        return error("invalid_request", "missing scope");
    }
    if dialect == Dialect::Oidc
        && let Some(unknown) = scopes
            .iter()
            .find(|s| !matches!(s.as_str(), "openid" | "email" | "profile"))
    {
        return error("invalid_scope", &format!("unknown scope {unknown}"));
    }
    let challenge = match (
        get(params, "code_challenge"),
        get(params, "code_challenge_method"),
    ) {
        (None, None) => None,
        (None, Some(_)) => {
            return error(
                "invalid_request",
                "code_challenge_method without code_challenge",
            );
        }
        (Some(challenge), method) => {
            let method = method.unwrap_or("plain");
            if method != "S256" && method != "plain" {
                return error(
                    "invalid_request",
                    "code_challenge_method must be S256 or plain",
                );
            }
            if !is_pkce_text(challenge) {
                return error("invalid_request", "malformed code_challenge");
            }
            Some((challenge.to_owned(), method.to_owned()))
        }
    };
    if let Some(code) = state.misbehaviour.authorize_error.clone() {
        return error(&code, "the provider refused the request");
    }
    let Some(account) = state.account.clone() else {
        return match dialect {
            Dialect::Oidc => error("login_required", "no account is signed in"),
            Dialect::Github => error("access_denied", "no account is signed in"),
        };
    };
    let code = match dialect {
        Dialect::Oidc => format!("4/{}", random_token(32)),
        Dialect::Github => random_token(15),
    };
    state.codes.insert(
        code.clone(),
        IssuedCode {
            dialect,
            client_id: client.client_id,
            redirect_uri: given_redirect,
            scopes,
            nonce: get(params, "nonce").map(str::to_owned),
            challenge,
            account,
            issued_at: OffsetDateTime::now_utc(),
            used: false,
        },
    );
    redirect(&[("code", &code)])
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
fn is_pkce_text(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn basic_credentials(headers: &HeaderMap) -> Option<Option<(String, String)>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    // Some(None): Basic was used but is malformed.
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    Some(decoded.and_then(|text| {
        let (id, secret) = text.split_once(':')?;
        // RFC 6749 §2.3.1: both are form-urlencoded before encoding.
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("v={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        };
        Some((decode(id)?, decode(secret)?))
    }))
}

fn client_auth_of(headers: &HeaderMap, form: &[(String, String)]) -> ClientAuth {
    if let Some(Some((client_id, _))) = basic_credentials(headers) {
        return ClientAuth::Basic { client_id };
    }
    match (get(form, "client_id"), get(form, "client_secret")) {
        (Some(id), Some(_)) => ClientAuth::Post {
            client_id: id.to_owned(),
        },
        (Some(id), None) => ClientAuth::ClientIdOnly {
            client_id: id.to_owned(),
        },
        _ => ClientAuth::None,
    }
}

/// An OAuth error from a token endpoint, in the dialect's manner: RFC 6749
/// §5.2 for OIDC, `200` with an `error` field for GitHub.
fn token_error(
    dialect: Dialect,
    headers: &HeaderMap,
    status: StatusCode,
    code: &str,
    description: &str,
    basic: bool,
) -> Response {
    match dialect {
        Dialect::Oidc => {
            let mut response = json_response(
                status,
                &json!({ "error": code, "error_description": description }),
            );
            if status == StatusCode::UNAUTHORIZED && basic {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"simulated-idp\""),
                );
            }
            no_store(response)
        }
        Dialect::Github => {
            let github_code = match code {
                "invalid_grant" => "bad_verification_code",
                "invalid_client" => "incorrect_client_credentials",
                other => other,
            };
            github_answer(
                headers,
                &[("error", github_code), ("error_description", description)],
            )
        }
    }
}

/// A GitHub token-endpoint answer: JSON when `Accept` asks for it, else a
/// form-encoded body; always `200`.
fn github_answer(headers: &HeaderMap, pairs: &[(&str, &str)]) -> Response {
    let wants_json = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json"));
    if wants_json {
        let object = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect::<Map<_, _>>();
        return no_store(json_response(StatusCode::OK, &Value::Object(object)));
    }
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter())
        .finish();
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
    );
    no_store(response)
}

fn token(
    shared: &Shared,
    state: &mut IdpState,
    dialect: Dialect,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Response {
    let fail = |status: StatusCode, code: &str, description: &str, basic: bool| {
        token_error(dialect, headers, status, code, description, basic)
    };
    if let Some(name) = repeated(params) {
        return fail(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("{name} is repeated"),
            false,
        );
    }
    // Client authentication (RFC 6749 §2.3.1): one method only.
    let basic = basic_credentials(headers);
    let used_basic = basic.is_some();
    let (client_id, secret) = match (basic, get(params, "client_secret")) {
        (Some(_), Some(_)) => {
            return fail(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "more than one client authentication method",
                true,
            );
        }
        (Some(None), None) => {
            return fail(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "malformed Basic credentials",
                true,
            );
        }
        (Some(Some((id, secret))), None) => {
            if get(params, "client_id").is_some_and(|form_id| form_id != id) {
                return fail(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "client_id differs from the authenticated client",
                    true,
                );
            }
            (id, secret)
        }
        (None, Some(secret)) => match get(params, "client_id") {
            Some(id) => (id.to_owned(), secret.to_owned()),
            None => {
                return fail(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "missing client_id",
                    false,
                );
            }
        },
        (None, None) => {
            return fail(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication required",
                false,
            );
        }
    };
    let authenticated = state
        .clients
        .get(&client_id)
        .is_some_and(|client| constant_time_eq(&client.client_secret, &secret));
    if !authenticated {
        return fail(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client or wrong secret",
            used_basic,
        );
    }
    match (dialect, get(params, "grant_type")) {
        (_, Some("authorization_code")) | (Dialect::Github, None) => {}
        (_, Some(other)) => {
            return fail(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("grant type {other} is not supported"),
                used_basic,
            );
        }
        (Dialect::Oidc, None) => {
            return fail(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "missing grant_type",
                used_basic,
            );
        }
    }
    let invalid_grant = |description: &str| {
        fail(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            description,
            used_basic,
        )
    };
    let Some(code_text) = get(params, "code") else {
        return fail(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "missing code",
            used_basic,
        );
    };
    let allow_replay = state.misbehaviour.allow_code_replay;
    let Some(code) = state.codes.get_mut(code_text) else {
        return invalid_grant("unknown code");
    };
    if code.used && !allow_replay {
        return invalid_grant("the code was already used");
    }
    // Single use: spent by this attempt whatever its outcome.
    code.used = true;
    let code = code.clone();
    if code.dialect != dialect {
        return invalid_grant("the code was issued by the other endpoint");
    }
    if OffsetDateTime::now_utc() - code.issued_at > CODE_LIFETIME {
        return invalid_grant("the code expired");
    }
    if code.client_id != client_id {
        return invalid_grant("the code was issued to another client");
    }
    if let Some(expected) = &code.redirect_uri
        && get(params, "redirect_uri") != Some(expected.as_str())
    {
        return match dialect {
            Dialect::Oidc => invalid_grant("redirect_uri differs from the authorization request"),
            Dialect::Github => token_error(
                dialect,
                headers,
                StatusCode::OK,
                "redirect_uri_mismatch",
                "redirect_uri differs from the authorization request",
                used_basic,
            ),
        };
    }
    match (&code.challenge, get(params, "code_verifier")) {
        (None, None) => {}
        (None, Some(_)) => {
            return invalid_grant("code_verifier sent for a code issued without PKCE");
        }
        (Some(_), None) => return invalid_grant("missing code_verifier"),
        (Some((challenge, method)), Some(verifier)) => {
            if !is_pkce_text(verifier) {
                return invalid_grant("malformed code_verifier");
            }
            let computed = if method == "S256" {
                URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
            } else {
                verifier.to_owned()
            };
            if !constant_time_eq(&computed, challenge) {
                return invalid_grant("code_verifier does not match the code_challenge");
            }
        }
    }
    let now = OffsetDateTime::now_utc();
    let access_token = match dialect {
        Dialect::Oidc => format!("ya29.{}", random_token(32)),
        Dialect::Github => format!("gho_{}", random_token(27)),
    };
    state.tokens.insert(
        access_token.clone(),
        IssuedToken {
            dialect,
            scopes: code.scopes.clone(),
            account: code.account.clone(),
            expires_at: now + TOKEN_LIFETIME,
        },
    );
    match dialect {
        Dialect::Github => {
            let scope = code.scopes.join(",");
            github_answer(
                headers,
                &[
                    ("access_token", &access_token),
                    ("scope", &scope),
                    ("token_type", "bearer"),
                ],
            )
        }
        Dialect::Oidc => {
            let mut body = json!({
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME.whole_seconds(),
                "scope": code.scopes.join(" "),
            });
            if code.scopes.iter().any(|s| s == "openid") {
                let id_token = id_token(shared, &state.misbehaviour, &code, &access_token, now);
                body["id_token"] = Value::String(id_token);
            }
            no_store(json_response(StatusCode::OK, &body))
        }
    }
}

fn id_token(
    shared: &Shared,
    misbehaviour: &Misbehaviour,
    code: &IssuedCode,
    access_token: &str,
    now: OffsetDateTime,
) -> String {
    let (iat, exp) = if misbehaviour.expired_id_token {
        (now - Duration::hours(2), now - Duration::hours(1))
    } else {
        (now, now + TOKEN_LIFETIME)
    };
    let issuer = if misbehaviour.wrong_issuer {
        format!("{}/elsewhere", shared.issuer)
    } else {
        shared.issuer.clone()
    };
    let audience = if misbehaviour.wrong_audience {
        format!("not-{}", code.client_id)
    } else {
        code.client_id.clone()
    };
    let digest = Sha256::digest(access_token.as_bytes());
    let at_hash = URL_SAFE_NO_PAD.encode(&digest[..16]);
    let mut claims = json!({
        "iss": issuer,
        "azp": audience,
        "aud": audience,
        "sub": code.account.subject,
        "at_hash": at_hash,
        "iat": iat.unix_timestamp(),
        "exp": exp.unix_timestamp(),
    });
    if misbehaviour.omit_nonce {
        // Left out.
    } else if let Some(nonce) = &code.nonce {
        claims["nonce"] = Value::String(if misbehaviour.wrong_nonce {
            format!("{nonce}-not")
        } else {
            nonce.clone()
        });
    } else if misbehaviour.wrong_nonce {
        claims["nonce"] = Value::String(random_token(16));
    }
    if code.scopes.iter().any(|s| s == "email") {
        claims["email"] = Value::String(code.account.email.clone());
        claims["email_verified"] = Value::Bool(code.account.email_verified);
    }
    if code.scopes.iter().any(|s| s == "profile") {
        claims["name"] = Value::String(code.account.name.clone());
    }
    if misbehaviour.unsigned_id_token {
        let header = json!({ "alg": "none", "typ": "JWT" });
        return format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
    }
    let key = if misbehaviour.foreign_signing_key {
        &shared.foreign_key
    } else {
        &shared.key
    };
    key.sign_jwt(&shared.key.kid, &claims)
}

/// The bearer token of a request: `Bearer x` or GitHub's `token x`.
fn bearer(headers: &HeaderMap, dialect: Dialect) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let accepted = scheme.eq_ignore_ascii_case("bearer")
        || (dialect == Dialect::Github && scheme.eq_ignore_ascii_case("token"));
    accepted.then(|| token.trim().to_owned())
}

fn live_token(state: &IdpState, token: Option<String>, dialect: Dialect) -> Option<IssuedToken> {
    let issued = state.tokens.get(&token?)?;
    (issued.dialect == dialect && issued.expires_at > OffsetDateTime::now_utc())
        .then(|| issued.clone())
}

fn userinfo(state: &mut IdpState, headers: &HeaderMap) -> Response {
    let Some(token) = live_token(state, bearer(headers, Dialect::Oidc), Dialect::Oidc) else {
        let mut response = json_response(
            StatusCode::UNAUTHORIZED,
            &json!({ "error": "invalid_token", "error_description": "invalid or expired access token" }),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        return response;
    };
    let mut body = json!({ "sub": token.account.subject });
    if token.scopes.iter().any(|s| s == "email") {
        body["email"] = Value::String(token.account.email.clone());
        body["email_verified"] = Value::Bool(token.account.email_verified);
    }
    if token.scopes.iter().any(|s| s == "profile") {
        body["name"] = Value::String(token.account.name.clone());
    }
    json_response(StatusCode::OK, &body)
}

fn github_api(state: &mut IdpState, headers: &HeaderMap, emails: bool) -> Response {
    if !headers.contains_key(header::USER_AGENT) {
        return json_response(
            StatusCode::FORBIDDEN,
            &json!({ "message": "Request forbidden by administrative rules. Please make sure your request has a User-Agent header" }),
        );
    }
    let Some(token) = live_token(state, bearer(headers, Dialect::Github), Dialect::Github) else {
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({ "message": "Bad credentials", "status": "401" }),
        );
    };
    let account = &token.account;
    if !emails {
        let user = json!({
            "login": account.github_login,
            "id": account.github_id,
            "node_id": format!("U_{}", account.github_id),
            "type": "User",
            "name": account.name,
            "email": if account.public_email { Value::String(account.email.clone()) } else { Value::Null },
        });
        return json_response(StatusCode::OK, &user);
    }
    if !token
        .scopes
        .iter()
        .any(|s| s == "user:email" || s == "user")
    {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({ "message": "Not Found", "status": "404" }),
        );
    }
    let visibility = if account.public_email {
        Value::String("public".to_owned())
    } else {
        Value::String("private".to_owned())
    };
    let mut list = vec![json!({
        "email": account.email,
        "primary": true,
        "verified": account.email_verified,
        "visibility": visibility,
    })];
    list.extend(account.extra_emails.iter().map(|extra| {
        json!({
            "email": extra.email,
            "primary": false,
            "verified": extra.verified,
            "visibility": Value::Null,
        })
    }));
    json_response(StatusCode::OK, &Value::Array(list))
}
