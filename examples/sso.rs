//! Sign-in through external identity providers, end to end and without
//! network: a simulated provider runs in-process on `127.0.0.1` (OpenID
//! Connect the way Google serves it, OAuth 2.0 the way GitHub does), the
//! axum app signs people in through it, and this program plays the
//! browser, printing each step.
//!
//! ```text
//! cargo run --example sso --features axum,sso                  # in memory
//! DATABASE_URL=postgres://… KEY_ENCRYPTION_KEY=… \
//!     cargo run --example sso --features axum,sso,postgres     # on Postgres
//! ```
//!
//! 1. "Sign in with GitHub": a new user is created on first sign-in.
//! 2. "Sign in with Google": the ID token is checked (signature against the
//!    provider's JWKS, issuer, audience, expiry, nonce).
//! 3. Tenant SSO: Acme registers its own identity provider and verifies
//!    `acme-….example`; `ada@acme-….example` is routed there by her email and
//!    joins Acme just in time with the connection's default role.
//! 4. A replayed callback is refused.

use std::error::Error;
use std::net::SocketAddr;

use reqwest::{Method, Url};
use serde_json::{Value, json};
use tenancy::auth::sso::{
    ClientSecret, NewEnterpriseConnection, OAuth2Endpoints, SocialConnection, SsoConfig,
};
use tenancy::auth::testkit::idp::{IdpAccount, IdpClient, SimulatedIdp};
use tenancy::http::auth::AuthConfig;
use tenancy::http::authz::Catalog;
use tenancy::http::sso::SsoModule;
use tenancy::http::{HttpConfig, Tenancy};
use tenancy::{AuditContext, RoleName, TenantId};

/// The browser: follows nothing by itself, keeps the cookies it is given.
struct Browser {
    http: reqwest::Client,
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn new() -> Result<Self, Box<dyn Error>> {
        Ok(Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            cookies: Vec::new(),
        })
    }

    async fn send(
        &mut self,
        method: Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<(u16, Option<String>, Value), Box<dyn Error>> {
        let mut request = self
            .http
            .request(method, url)
            .header("accept", "application/json");
        if !self.cookies.is_empty() {
            let header = self
                .cookies
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join("; ");
            request = request.header("cookie", header);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        for set in response.headers().get_all("set-cookie") {
            let pair = set.to_str()?.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                self.cookies.retain(|(n, _)| n != name);
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok((status, location, json))
    }
}

/// The first string in `value` starting with `prefix`.
fn find_url(value: &Value, prefix: &str) -> Option<String> {
    match value {
        Value::String(s) if s.starts_with(prefix) => Some(s.clone()),
        Value::Object(map) => map.values().find_map(|v| find_url(v, prefix)),
        Value::Array(items) => items.iter().find_map(|v| find_url(v, prefix)),
        _ => None,
    }
}

/// One sign-in as the browser lives it: `POST /sso/start`, the provider,
/// the callback. Returns the callback URL (to replay it) and the access
/// token, if the app signed someone in.
async fn sign_in(
    base: &str,
    idp: &SimulatedIdp,
    body: Value,
) -> Result<(String, Option<String>, Browser), Box<dyn Error>> {
    let mut browser = Browser::new()?;
    println!("  POST /sso/start {body}");
    let (status, location, json) = browser
        .send(Method::POST, &format!("{base}/sso/start"), Some(body))
        .await?;
    let authorize = location
        .or_else(|| find_url(&json, idp.issuer()))
        .ok_or_else(|| format!("/sso/start answered {status}: {json}"))?;
    let url = Url::parse(&authorize)?;
    println!(
        "  -> the provider: {}{}",
        url.origin().ascii_serialization(),
        url.path()
    );
    // The provider signs in the account chosen below and redirects back.
    let (status, location, _) = browser.send(Method::GET, &authorize, None).await?;
    let callback = location.ok_or_else(|| format!("the provider answered {status}"))?;
    let path = Url::parse(&callback)?.path().to_owned();
    println!("  <- {status} to {path}?code=…&state=…");
    let (status, _, json) = browser.send(Method::GET, &callback, None).await?;
    let token = json["access_token"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            browser
                .cookies
                .iter()
                .find(|(name, value)| name == "tenancy_access" && !value.is_empty())
                .map(|(_, value)| value.clone())
        });
    println!("  GET /sso/callback: {status}");
    Ok((callback, token, browser))
}

async fn me(base: &str, token: &str) -> Result<Value, Box<dyn Error>> {
    Ok(reqwest::Client::new()
        .get(format!("{base}/auth/me"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // The provider first: the app is configured with its URLs.
    let idp = SimulatedIdp::start().await;
    println!("simulated identity provider at {}", idp.issuer());

    // The app's address is its public base URL, hence its callback.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let address = listener.local_addr()?;
    let base = format!("http://{address}");
    let callback = format!("{base}/sso/callback");
    for (id, secret) in [
        ("github-client", "github-secret"),
        ("google-client", "google-secret"),
        ("acme-client", "acme-secret"),
    ] {
        idp.register_client(IdpClient::new(id, secret, [callback.as_str()]));
    }

    let sso = SsoConfig::new()
        // The provider is on 127.0.0.1, which a server normally refuses to
        // fetch (SSRF): this example opts in.
        .allow_private_network(true)
        .with_social(SocialConnection::oauth2(
            "github",
            "github-client",
            ClientSecret::new("github-secret"),
            OAuth2Endpoints {
                authorize: Url::parse(&idp.github_authorize_url())?,
                token: Url::parse(&idp.github_token_url())?,
                user: Url::parse(&idp.github_user_url())?,
                emails: Some(Url::parse(&idp.github_emails_url())?),
            },
        ))
        .with_social(SocialConnection::oidc(
            "google",
            idp.issuer(),
            "google-client",
            ClientSecret::new("google-secret"),
        )?);
    // Names of this run: a database kept between runs already has last
    // run's people and tenant.
    let run = uuid::Uuid::now_v7().simple().to_string()[24..].to_owned();
    let domain = format!("acme-{run}.example");
    let auth = AuthConfig::new(&base, "sso-example");
    let mut http = HttpConfig::default();
    http.cookies.secure = false;
    let tenancy = match std::env::var("DATABASE_URL").ok() {
        #[cfg(feature = "postgres")]
        Some(url) => {
            use tenancy::http::auth::{KeyEncryption, KeyEncryptionKey};
            let key = std::env::var("KEY_ENCRYPTION_KEY")
                .map_err(|_| "set KEY_ENCRYPTION_KEY (openssl rand -base64 32) for Postgres")?;
            let auth = auth.with_key_encryption(KeyEncryption::key(KeyEncryptionKey::from_base64(
                "example-1",
                &key,
            )?));
            println!("stores: Postgres");
            let pool = tenancy::postgres::sqlx::PgPool::connect(&url).await?;
            Tenancy::builder(Catalog::new(Vec::<&str>::new())?, auth)
                .http(http)
                .module(SsoModule::postgres(pool.clone(), sso))
                .postgres(pool)
                .build()
                .await?
        }
        _ => {
            println!("stores: in memory");
            Tenancy::builder(Catalog::new(Vec::<&str>::new())?, auth)
                .http(http)
                .module(SsoModule::new(sso))
                .build()
                .await?
        }
    };
    let router = tenancy::axum::router(tenancy.clone()).fallback(tenancy::axum::not_found);
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    println!("app at {base}");

    println!("\n1. Sign in with GitHub (OAuth 2.0, PKCE)");
    idp.sign_in_as(
        IdpAccount::new(format!("grace-{run}@hopper.example"))
            .with_name("Grace Hopper")
            .with_github(583231, "grace"),
    );
    let (_, token, _) = sign_in(&base, &idp, json!({ "connection": "github" })).await?;
    let token = token.ok_or("GitHub sign-in failed")?;
    let grace = me(&base, &token).await?;
    println!("  signed in as {}", grace["user"]["email"]);

    println!("\n2. Sign in with Google (OpenID Connect: ID token, nonce, PKCE)");
    idp.sign_in_as(
        IdpAccount::new(format!("ada-{run}@analytical.example")).with_name("Ada Lovelace"),
    );
    let (google_callback, token, mut browser) =
        sign_in(&base, &idp, json!({ "connection": "google" })).await?;
    let token = token.ok_or("Google sign-in failed")?;
    println!(
        "  signed in as {}",
        me(&base, &token).await?["user"]["email"]
    );

    println!("\n3. A replayed callback");
    let (status, _, json) = browser.send(Method::GET, &google_callback, None).await?;
    if json.get("access_token").is_some() {
        return Err("a replayed callback signed someone in".into());
    }
    println!(
        "  refused: {status} {}",
        json["title"].as_str().unwrap_or_default()
    );

    println!("\n4. Tenant SSO: Acme's own identity provider, found by email domain");
    let (status, _, owner) = Browser::new()?
        .send(
            Method::POST,
            &format!("{base}/auth/register"),
            Some(json!({
                "email": format!("owner@{domain}"), "password": "correct horse battery",
                "tenant": { "slug": format!("acme-{run}"), "name": "Acme" }
            })),
        )
        .await?;
    if status != 201 {
        return Err(format!("registration answered {status}: {owner}").into());
    }
    let acme: TenantId = owner["tenant_id"].as_str().ok_or("no tenant")?.parse()?;
    let service = tenancy
        .module::<SsoModule>()
        .ok_or("the SSO module is missing")?
        .service(&tenancy)?;
    let context = AuditContext::system();
    service
        .create_connection(
            acme,
            NewEnterpriseConnection {
                name: "Acme identity provider".to_owned(),
                issuer: idp.issuer().to_owned(),
                client_id: "acme-client".to_owned(),
                client_secret: ClientSecret::new("acme-secret"),
                default_role: RoleName::new("member")?,
                create_users: true,
                enabled: true,
            },
            &context,
        )
        .await?;
    service.add_domain(acme, &domain, &context).await?;
    service
        .verify_domain_as_operator(acme, &domain, &context)
        .await?;
    println!("  acme registered its provider and verified {domain}");
    let ada = format!("ada@{domain}");
    idp.sign_in_as(IdpAccount::new(&ada).with_name("Ada of Acme"));
    let (_, token, _) = sign_in(&base, &idp, json!({ "email": ada })).await?;
    let token = token.ok_or("tenant SSO sign-in failed")?;
    let ada = me(&base, &token).await?;
    println!(
        "  signed in as {} into {} with roles {}",
        ada["user"]["email"], ada["tenant"]["slug"], ada["principal"]["roles"]
    );
    println!("\ndone");
    Ok(())
}
