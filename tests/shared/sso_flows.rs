//! Sign-in through external identity providers over real HTTP, shared by
//! the axum and actix-web tests (each serves the app its own way), on the
//! in-memory stores and on Postgres.
//!
//! The provider is [`SimulatedIdp`] on `127.0.0.1`, speaking OpenID Connect
//! as Google does and OAuth 2.0 as GitHub does. The test plays the browser:
//! `POST /sso/start` on the app, the authorization request at the provider
//! (which signs in the account the test chose and redirects), then
//! `GET /sso/callback` on the app with the cookies `/sso/start` set. The
//! provider's record of requests shows what the app sent it (PKCE verifier,
//! client authentication, `state`, `nonce`).
//!
//! Every function here is one scenario taking the stores and the
//! framework's `start`; the framework files run each on both stores.

use reqwest::{Method, Url};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;

use tenancy_auth::sso::{
    ClientSecret, OAuth2Endpoints, SocialConnection, SsoConfig, StaticDnsResolver, actions,
};
use tenancy_auth::testkit::idp::{
    AuthorizeRedirect, ClientAuth, GITHUB_AUTHORIZE_PATH, GITHUB_EMAILS_PATH, GITHUB_TOKEN_PATH,
    GITHUB_USER_PATH, IdpAccount, IdpClient, Misbehaviour, OIDC_AUTHORIZE_PATH, OIDC_JWKS_PATH,
    OIDC_TOKEN_PATH, SimulatedIdp,
};
use tenancy_http::core::UserStore as _;
use tenancy_http::sso::SsoModule;
use tenancy_http::testkit::{Account, Reply, Start, Stores, TestApp};

/// The callback the app registers at providers: its token issuer (the
/// scenario apps' public base URL) and `/sso/callback`.
const CALLBACK: &str = "https://scenarios.test/sso/callback";
/// The scenario apps' password for accounts made with a password.
const PASSWORD: &str = "correct horse battery";
/// The SDK's access-token cookie (`CookieConfig::default().access_name`).
const ACCESS_COOKIE: &str = "tenancy_access";

const GITHUB_CLIENT: (&str, &str) = ("github-client", "github-secret");
const GOOGLE_CLIENT: (&str, &str) = ("google-client", "google-secret");
const ACME_CLIENT: (&str, &str) = ("acme-client", "acme-secret");

// ---------------------------------------------------------------------------

/// An app with the SSO module (GitHub-style `github` and Google-style
/// `google` social connections to the simulated provider), and the provider.
pub(crate) struct World {
    pub(crate) app: TestApp,
    pub(crate) idp: SimulatedIdp,
    /// The DNS the app asks for domain verification (TXT records).
    pub(crate) dns: Arc<StaticDnsResolver>,
}

pub(crate) async fn world(stores: Stores, start: Start) -> Option<World> {
    let idp = SimulatedIdp::start().await;
    for (id, secret) in [GITHUB_CLIENT, GOOGLE_CLIENT, ACME_CLIENT] {
        idp.register_client(IdpClient::new(id, secret, [CALLBACK]));
    }
    let url = |text: String| Url::parse(&text).unwrap();
    let dns = Arc::new(StaticDnsResolver::new());
    let config = SsoConfig::new()
        .with_dns_resolver(dns.clone())
        // The provider is on 127.0.0.1: the test opts in.
        .allow_private_network(true)
        .with_social(SocialConnection::oauth2(
            "github",
            GITHUB_CLIENT.0,
            ClientSecret::new(GITHUB_CLIENT.1),
            OAuth2Endpoints {
                authorize: url(idp.github_authorize_url()),
                token: url(idp.github_token_url()),
                user: url(idp.github_user_url()),
                emails: Some(url(idp.github_emails_url())),
            },
        ))
        .with_social(
            SocialConnection::oidc(
                "google",
                idp.issuer(),
                GOOGLE_CLIENT.0,
                ClientSecret::new(GOOGLE_CLIENT.1),
            )
            .unwrap(),
        );
    let app = TestApp::launch_with(stores, start, &[], move |builder, setup| {
        builder.module(match &setup.pool {
            Some(pool) => SsoModule::postgres(pool.clone(), config),
            None => SsoModule::new(config),
        })
    })
    .await;
    assert!(
        app.is_some() || stores == Stores::Postgres,
        "the in-memory app always starts"
    );
    Some(World {
        app: app?,
        idp,
        dns,
    })
}

/// A sign-in between `/sso/start` and the callback: the provider URL the
/// app sent the browser to, and the cookies it set.
pub(crate) struct Started {
    pub(crate) authorize_url: String,
    pub(crate) cookies: Vec<(String, String)>,
}

fn set_cookies(reply: &Reply) -> Vec<(String, String)> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            let pair = v.split(';').next()?;
            let (name, value) = pair.split_once('=')?;
            Some((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// The first string in `value` that starts with `prefix`.
fn find_url(value: &Value, prefix: &str) -> Option<String> {
    match value {
        Value::String(s) if s.starts_with(prefix) => Some(s.clone()),
        Value::Object(map) => map.values().find_map(|v| find_url(v, prefix)),
        Value::Array(items) => items.iter().find_map(|v| find_url(v, prefix)),
        _ => None,
    }
}

impl World {
    /// `POST /sso/start` with `body`; the raw answer.
    pub(crate) async fn start_raw(&self, body: Value) -> Reply {
        self.app
            .send(
                self.app
                    .request(Method::POST, "/sso/start")
                    .header("accept", "application/json")
                    .json(&body),
            )
            .await
    }

    /// `POST /sso/start` with `body`, which must succeed.
    pub(crate) async fn start(&self, body: Value) -> Started {
        let reply = self.start_raw(body).await;
        assert!(
            matches!(reply.status, 200 | 201 | 303),
            "{}: {}",
            reply.status,
            reply.text
        );
        let authorize_url = reply
            .header("location")
            .map(str::to_owned)
            .or_else(|| find_url(&reply.json, self.idp.issuer()))
            .unwrap_or_else(|| panic!("no authorization URL in {}", reply.text));
        assert!(
            authorize_url.starts_with(self.idp.issuer()),
            "{authorize_url}"
        );
        let cookies = set_cookies(&reply);
        assert!(!cookies.is_empty(), "/sso/start sets its state cookie");
        Started {
            authorize_url,
            cookies,
        }
    }

    /// Delivers the provider's redirect to the app's callback, with
    /// `cookies`: the redirect names the public callback URL, and the test
    /// sends its path and query to the served app.
    pub(crate) async fn callback(&self, location: &str, cookies: &[(String, String)]) -> Reply {
        assert!(location.starts_with(CALLBACK), "{location}");
        let url = Url::parse(location).unwrap();
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let mut request = self
            .app
            .request(Method::GET, &path)
            .header("accept", "application/json");
        if !cookies.is_empty() {
            let header = cookies
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join("; ");
            request = request.header("cookie", header);
        }
        self.app.send(request).await
    }

    /// The whole sign-in: start, provider, callback. The callback's answer.
    pub(crate) async fn sign_in(&self, body: Value) -> Reply {
        let started = self.start(body).await;
        let redirect = self.idp.authorize(&started.authorize_url);
        let location = redirect_location(&redirect);
        self.callback(&location, &started.cookies).await
    }

    /// `GET /auth/me` with `token`.
    pub(crate) async fn me(&self, token: &str) -> Value {
        let reply = self
            .app
            .call(Method::GET, "/auth/me", Some(token), None)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json
    }
}

fn redirect_location(redirect: &AuthorizeRedirect) -> String {
    assert_eq!(redirect.status, 302, "{redirect:?}");
    redirect.location.clone().unwrap()
}

/// The access token a callback answer signed in with: the JSON
/// `access_token`, or the SDK's access cookie.
pub(crate) fn access_token(reply: &Reply) -> Option<String> {
    if let Some(token) = reply.json["access_token"].as_str() {
        return Some(token.to_owned());
    }
    set_cookies(reply)
        .into_iter()
        .find(|(name, value)| name == ACCESS_COOKIE && !value.is_empty())
        .map(|(_, value)| value)
}

/// Asserts the callback signed someone in; their access token.
#[track_caller]
fn signed_in(reply: &Reply) -> String {
    assert!(
        matches!(reply.status, 200 | 201 | 302 | 303),
        "{}: {}",
        reply.status,
        reply.text
    );
    access_token(reply).unwrap_or_else(|| panic!("no session in {}", reply.text))
}

/// Asserts the callback signed nobody in.
#[track_caller]
fn refused(reply: &Reply) {
    assert!(
        access_token(reply).is_none(),
        "signed in: {} {}",
        reply.status,
        reply.text
    );
    assert_ne!(reply.status, 200, "{}", reply.text);
    assert!(
        reply.status >= 400 || reply.header("location").is_some(),
        "{}: {}",
        reply.status,
        reply.text
    );
}

fn s256(verifier: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Asserts the last authorization request at `authorize_path` carried a
/// PKCE S256 challenge the last request at `token_path` answered with its
/// verifier, an unguessable `state`, and the registered callback; and that
/// the client authenticated as `client_id` with its secret.
fn assert_pkce_and_client_auth(
    idp: &SimulatedIdp,
    authorize_path: &str,
    token_path: &str,
    client_id: &str,
) {
    let authorize = idp.requests_to(authorize_path).pop().unwrap();
    assert_eq!(authorize.param("client_id"), Some(client_id));
    assert_eq!(authorize.param("redirect_uri"), Some(CALLBACK));
    assert_eq!(authorize.param("code_challenge_method"), Some("S256"));
    assert!(authorize.param("state").is_some_and(|s| s.len() >= 22));
    let token = idp.requests_to(token_path).pop().unwrap();
    let verifier = token.param("code_verifier").expect("a PKCE code_verifier");
    assert_eq!(
        Some(s256(verifier).as_str()),
        authorize.param("code_challenge")
    );
    assert_eq!(token.param("redirect_uri"), Some(CALLBACK));
    match token.client_auth.clone().unwrap() {
        ClientAuth::Basic { client_id: id } | ClientAuth::Post { client_id: id } => {
            assert_eq!(id, client_id)
        }
        other => panic!("the client did not authenticate: {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Scenarios.

/// "Sign in with GitHub": the user is created on first sign-in and found
/// again on the next; PKCE, client authentication, `state`, and the user
/// and emails endpoints (with a `User-Agent`) are used as GitHub expects.
pub(crate) async fn github_social_login(stores: Stores, start: Start) {
    let Some(w) = world(stores, start).await else {
        return;
    };
    w.idp.sign_in_as(
        IdpAccount::new("grace@hopper.test")
            .with_name("Grace Hopper")
            .with_github(583231, "grace"),
    );
    let first = signed_in(&w.sign_in(json!({ "connection": "github" })).await);
    let me = w.me(&first).await;
    assert_eq!(me["user"]["email"], "grace@hopper.test");
    assert_pkce_and_client_auth(
        &w.idp,
        GITHUB_AUTHORIZE_PATH,
        GITHUB_TOKEN_PATH,
        GITHUB_CLIENT.0,
    );
    let token_request = w.idp.requests_to(GITHUB_TOKEN_PATH).pop().unwrap();
    assert!(
        token_request
            .header("accept")
            .is_some_and(|a| a.contains("application/json"))
    );
    for path in [GITHUB_USER_PATH, GITHUB_EMAILS_PATH] {
        let request = w.idp.requests_to(path).pop().unwrap();
        assert!(request.header("user-agent").is_some(), "{path}");
    }

    let second = signed_in(&w.sign_in(json!({ "connection": "github" })).await);
    assert_eq!(w.me(&second).await["user"]["id"], me["user"]["id"]);
}

/// "Sign in with Google": discovery, `nonce`, PKCE, the ID token checked
/// against the provider's JWKS; the same subject signs in the same user.
pub(crate) async fn google_social_login(stores: Stores, start: Start) {
    let Some(w) = world(stores, start).await else {
        return;
    };
    w.idp.sign_in_as(
        IdpAccount::new("ada@analytical.test")
            .with_name("Ada Lovelace")
            .with_subject("110169484474386276334"),
    );
    let first = signed_in(&w.sign_in(json!({ "connection": "google" })).await);
    let me = w.me(&first).await;
    assert_eq!(me["user"]["email"], "ada@analytical.test");
    assert_pkce_and_client_auth(
        &w.idp,
        OIDC_AUTHORIZE_PATH,
        OIDC_TOKEN_PATH,
        GOOGLE_CLIENT.0,
    );
    let authorize = w.idp.requests_to(OIDC_AUTHORIZE_PATH).pop().unwrap();
    assert_eq!(authorize.param("response_type"), Some("code"));
    assert!(authorize.param("nonce").is_some_and(|n| n.len() >= 22));
    assert!(
        authorize
            .param("scope")
            .is_some_and(|s| s.split(' ').any(|s| s == "openid"))
    );
    assert!(
        !w.idp.requests_to(OIDC_JWKS_PATH).is_empty(),
        "the ID token's signature is checked against the JWKS"
    );

    let second = signed_in(&w.sign_in(json!({ "connection": "google" })).await);
    assert_eq!(w.me(&second).await["user"]["id"], me["user"]["id"]);
}

/// A tenant's own identity provider, found by the email's verified domain:
/// a first sign-in creates the user and a membership with the
/// connection's default role; another domain is not routed there.
pub(crate) async fn tenant_sso_by_email_domain(stores: Stores, start: Start) {
    let Some(w) = world(stores, start).await else {
        return;
    };
    let owner = w.app.register("acme", "owner@acme.test").await;
    enterprise_connection(&w, &owner).await;

    w.idp
        .sign_in_as(IdpAccount::new("ada@acme.test").with_name("Ada of Acme"));
    let token = signed_in(&w.sign_in(json!({ "email": "ada@acme.test" })).await);
    let me = w.me(&token).await;
    assert_eq!(me["user"]["email"], "ada@acme.test");
    assert_eq!(me["tenant"]["id"], owner.tenant.as_str());
    assert_eq!(me["principal"]["roles"], json!(["member"]));
    assert_pkce_and_client_auth(&w.idp, OIDC_AUTHORIZE_PATH, OIDC_TOKEN_PATH, ACME_CLIENT.0);

    // The owner sees the new member with the default role.
    let members = w
        .app
        .call(Method::GET, "/members", Some(&owner.token), None)
        .await;
    assert_eq!(members.status, 200, "{}", members.text);
    let ada = members.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m.to_string().contains(me["user"]["id"].as_str().unwrap()))
        .unwrap_or_else(|| panic!("ada is a member: {}", members.text))
        .clone();
    assert!(ada.to_string().contains("\"member\""), "{ada}");

    // The tenant's audit trail tells the story.
    let audit = w
        .app
        .call(Method::GET, "/audit?limit=200", Some(&owner.token), None)
        .await;
    assert_eq!(audit.status, 200, "{}", audit.text);
    let recorded: Vec<&str> = audit.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|event| event["action"].as_str())
        .collect();
    for action in [
        actions::CONNECTION_CREATED,
        actions::DOMAIN_ADDED,
        actions::DOMAIN_VERIFIED,
        actions::MEMBER_PROVISIONED,
        actions::SIGNED_IN,
    ] {
        assert!(recorded.contains(&action), "{action} in {recorded:?}");
    }

    // A domain no tenant verified has no connection.
    let other = w.start_raw(json!({ "email": "bob@elsewhere.test" })).await;
    assert!((400..500).contains(&other.status), "{}", other.text);
}

/// Marks `account`'s address verified, as following the SDK's
/// verification mail does: an account whose owner never proved the
/// address is never linked to a provider's identity.
async fn verify_email(w: &World, account: &Account) {
    let backend = w.app.tenancy.directory().backend();
    let mut user = backend
        .get_user(account.user.parse().unwrap())
        .await
        .unwrap();
    user.email_verified = true;
    backend.update_user(&user).await.unwrap();
}

/// The owner of `acme` registers the tenant's provider and claims
/// `acme.test`, proven by the TXT record the app asks them to publish,
/// all through the management routes.
async fn enterprise_connection(w: &World, owner: &Account) {
    let created = w
        .app
        .call(
            Method::POST,
            "/sso/connections",
            Some(&owner.token),
            Some(json!({
                "name": "Acme identity provider",
                "issuer": w.idp.issuer(),
                "client_id": ACME_CLIENT.0,
                "client_secret": ACME_CLIENT.1,
                "default_role": "member",
            })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert!(
        !created.text.contains(ACME_CLIENT.1),
        "the client secret is write-only"
    );
    let claimed = w
        .app
        .call(
            Method::POST,
            "/sso/domains",
            Some(&owner.token),
            Some(json!({ "domain": "acme.test" })),
        )
        .await;
    assert_eq!(claimed.status, 201, "{}", claimed.text);
    assert_eq!(claimed.json["verified"], false);
    // Unverified, the domain routes nowhere.
    let early = w.start_raw(json!({ "email": "ada@acme.test" })).await;
    assert!((400..500).contains(&early.status), "{}", early.text);

    let challenge = &claimed.json["challenge"];
    w.dns.publish(
        challenge["name"].as_str().unwrap(),
        challenge["value"].as_str().unwrap(),
    );
    let verified = w
        .app
        .call(
            Method::POST,
            "/sso/domains/acme.test/verify",
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(verified.status, 200, "{}", verified.text);
    assert_eq!(verified.json["verified"], true, "{}", verified.text);
}

/// A tenant requiring SSO: its members' password logins, and their
/// sign-ins through a social provider, are refused with a typed problem;
/// the tenant's own provider still signs them in.
pub(crate) async fn require_sso_refuses_password_login(stores: Stores, start: Start) {
    let Some(w) = world(stores, start).await else {
        return;
    };
    let owner = w.app.register("acme", "owner@acme.test").await;
    enterprise_connection(&w, &owner).await;
    let login =
        json!({ "email": "owner@acme.test", "password": PASSWORD, "tenant_id": owner.tenant });
    let before = w
        .app
        .call(Method::POST, "/auth/login", None, Some(login.clone()))
        .await;
    assert_eq!(before.status, 200, "{}", before.text);

    let policy = w
        .app
        .call(
            Method::PUT,
            "/sso/policy",
            Some(&owner.token),
            Some(json!({ "require_sso": true })),
        )
        .await;
    assert_eq!(policy.status, 200, "{}", policy.text);
    let after = w
        .app
        .call(Method::POST, "/auth/login", None, Some(login))
        .await;
    after.assert_problem(403, "sso-required");
    // The refusal names no tenant: it would tell a guesser where the account is.
    assert!(after.json.get("tenant_id").is_none());
    assert!(after.json.get("access_token").is_none());

    verify_email(&w, &owner).await;
    w.idp.sign_in_as(IdpAccount::new("owner@acme.test"));
    // A social provider vouching for an address in the tenant's verified
    // domain is no way in either.
    let social = w.sign_in(json!({ "connection": "google" })).await;
    refused(&social);
    social.assert_problem(403, "use-organization-sso");

    // The owner holds more than the connection's default role: the tenant's
    // identity provider alone does not link the account (whoever runs that
    // provider could otherwise take the owner's account over).
    let owner_sso = w.sign_in(json!({ "email": "owner@acme.test" })).await;
    refused(&owner_sso);
    owner_sso.assert_problem(409, "sso-link-required");

    // A colleague without an account signs in through the tenant's provider.
    w.idp.sign_in_as(IdpAccount::new("grace@acme.test"));
    let token = signed_in(&w.sign_in(json!({ "email": "grace@acme.test" })).await);
    let me = w.me(&token).await;
    assert_eq!(me["user"]["email"], "grace@acme.test");
    assert_eq!(me["tenant"]["id"], owner.tenant.as_str());
}

/// An account made with a password is linked to a provider's identity
/// only when the provider verified the email; an unverified one signs
/// nobody in as that account.
pub(crate) async fn linking_only_on_verified_email(stores: Stores, start: Start) {
    let Some(w) = world(stores, start).await else {
        return;
    };
    let ada = w.app.register("ada", "ada@analytical.test").await;
    let bob = w.app.register("bob", "bob@analytical.test").await;

    // Unverified, through both dialects: not Bob.
    w.idp
        .sign_in_as(IdpAccount::new("bob@analytical.test").unverified());
    for connection in ["google", "github"] {
        let reply = w.sign_in(json!({ "connection": connection })).await;
        if let Some(token) = access_token(&reply) {
            let me = w.me(&token).await;
            assert_ne!(me["user"]["id"], bob.user.as_str(), "{connection}");
        } else {
            refused(&reply);
        }
    }
    // An unverified address nobody has: no account is made for it.
    w.idp
        .sign_in_as(IdpAccount::new("nobody@analytical.test").unverified());
    for connection in ["google", "github"] {
        let reply = w.sign_in(json!({ "connection": connection })).await;
        refused(&reply);
        assert_eq!(reply.status, 403, "{connection}: {}", reply.text);
    }

    // Verified by the provider but not by its owner here: not linked (a
    // squatter may have registered the address first).
    w.idp
        .sign_in_as(IdpAccount::new("ada@analytical.test").with_subject("ada-sub-1"));
    let reply = w.sign_in(json!({ "connection": "google" })).await;
    refused(&reply);

    // Verified on both sides: Ada's account is linked, and found again by
    // the identity.
    verify_email(&w, &ada).await;
    verify_email(&w, &bob).await;
    w.idp
        .sign_in_as(IdpAccount::new("bob@analytical.test").unverified());
    for connection in ["google", "github"] {
        let reply = w.sign_in(json!({ "connection": connection })).await;
        refused(&reply);
    }
    w.idp
        .sign_in_as(IdpAccount::new("ada@analytical.test").with_subject("ada-sub-1"));
    let token = signed_in(&w.sign_in(json!({ "connection": "google" })).await);
    assert_eq!(w.me(&token).await["user"]["id"], ada.user.as_str());
    let token = signed_in(&w.sign_in(json!({ "connection": "google" })).await);
    assert_eq!(w.me(&token).await["user"]["id"], ada.user.as_str());
}

/// The callback's `state` altered: refused.
pub(crate) async fn wrong_state_is_refused(stores: Stores, start: Start) {
    let Some(w) = world(stores, start).await else {
        return;
    };
    w.idp.sign_in_as(IdpAccount::new("mallory@evil.test"));
    for connection in ["google", "github"] {
        let started = w.start(json!({ "connection": connection })).await;
        let location = redirect_location(&w.idp.authorize(&started.authorize_url));
        let state = Url::parse(&location)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        let forged = location.replace(
            &format!("state={state}"),
            "state=forged-state-value-0000000000",
        );
        assert_ne!(forged, location);
        refused(&w.callback(&forged, &started.cookies).await);
        // Without the cookie /sso/start set, the genuine callback fails too.
        refused(&w.callback(&location, &[]).await);
    }
}

/// A replayed callback (the same code and state again) signs nobody in,
/// even when the provider would accept the code twice.
pub(crate) async fn replayed_code_is_refused(stores: Stores, start: Start) {
    let Some(w) = world(stores, start).await else {
        return;
    };
    w.idp.sign_in_as(IdpAccount::new("ada@analytical.test"));
    for replayable in [false, true] {
        if replayable {
            w.idp.misbehave(Misbehaviour::allow_code_replay());
        }
        for connection in ["google", "github"] {
            let started = w.start(json!({ "connection": connection })).await;
            let location = redirect_location(&w.idp.authorize(&started.authorize_url));
            signed_in(&w.callback(&location, &started.cookies).await);
            refused(&w.callback(&location, &started.cookies).await);
        }
    }
}

/// ID tokens the provider should not have issued: each refused.
pub(crate) async fn bad_id_tokens_are_refused(stores: Stores, start: Start) {
    let Some(w) = world(stores, start).await else {
        return;
    };
    w.idp.sign_in_as(IdpAccount::new("ada@analytical.test"));
    for misbehaviour in [
        Misbehaviour::wrong_nonce(),
        Misbehaviour::foreign_signing_key(),
        Misbehaviour::wrong_issuer(),
        Misbehaviour::wrong_audience(),
        Misbehaviour::expired_id_token(),
        Misbehaviour::omit_nonce(),
        Misbehaviour::unsigned_id_token(),
        // RFC 9207: the authorization response names another issuer.
        Misbehaviour::wrong_response_iss(),
    ] {
        w.idp.misbehave(misbehaviour.clone());
        let reply = w.sign_in(json!({ "connection": "google" })).await;
        assert!(
            access_token(&reply).is_none(),
            "{misbehaviour:?}: {}",
            reply.text
        );
        refused(&reply);
    }
    // The provider behaving again, the same account signs in.
    w.idp.misbehave(Misbehaviour::none());
    signed_in(&w.sign_in(json!({ "connection": "google" })).await);
}

/// The provider refusing (`access_denied`) and an unknown connection.
pub(crate) async fn provider_errors_are_reported(stores: Stores, start: Start) {
    let Some(w) = world(stores, start).await else {
        return;
    };
    w.idp.sign_in_as(IdpAccount::new("ada@analytical.test"));
    w.idp
        .misbehave(Misbehaviour::authorize_error("access_denied"));
    for connection in ["google", "github"] {
        let started = w.start(json!({ "connection": connection })).await;
        let redirect = w.idp.authorize(&started.authorize_url);
        assert_eq!(redirect.error().as_deref(), Some("access_denied"));
        refused(
            &w.callback(&redirect_location(&redirect), &started.cookies)
                .await,
        );
    }
    let unknown = w.start_raw(json!({ "connection": "myspace" })).await;
    assert!((400..500).contains(&unknown.status), "{}", unknown.text);
}

/// One test per scenario for the framework's `$start`, on memory and on
/// Postgres (skipped without `DATABASE_URL` outside CI, as the other
/// scenario suites are).
macro_rules! sso_scenarios {
    ($start:ident) => {
        sso_scenarios!(@stores $start;
            github_social_login, google_social_login, tenant_sso_by_email_domain,
            require_sso_refuses_password_login, linking_only_on_verified_email,
            wrong_state_is_refused, replayed_code_is_refused, bad_id_tokens_are_refused,
            provider_errors_are_reported
        );
    };
    (@stores $start:ident; $($scenario:ident),+ $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    crate::sso_flows::$scenario(tenancy_http::testkit::Stores::Memory, super::$start).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    crate::sso_flows::$scenario(tenancy_http::testkit::Stores::Postgres, super::$start).await;
                }
            )+
        }
    };
}
