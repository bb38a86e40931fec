//! The axum app as an OAuth 2.0 / OpenID Connect provider, with one
//! registered client and one account, in memory (on Postgres when built
//! with `postgres` and `DATABASE_URL` is set).
//!
//! ```text
//! cargo run --example oidc_provider --features axum,oidc
//! cargo run --example oidc_provider --features axum,oidc -- --self-test
//! ```
//!
//! It prints the client's id and secret (shown once), the account to sign
//! in with and an authorization URL to open in a browser; the README's
//! "OpenID Connect provider" section shows the token exchange with curl.
//! With `--self-test` (or under `CI=true`) it runs one authorization code
//! flow with PKCE against itself, as a browser and a client would, and
//! exits: 0 when the flow worked.

use std::error::Error;
use std::net::SocketAddr;

use tenancy::http::auth::oidc::{ClientKind, GrantType, NewOAuthClient, RedirectUri};
use tenancy::http::auth::{AuthConfig, ClientInfo, Password, Registration};
use tenancy::http::core::{Actor, Email, NewTenant, NewUser, Slug, TenantName};
use tenancy::http::oidc::{OidcConfig, OidcModule};
use tenancy::http::{HttpConfig, Tenancy};

/// Where the client's authorization answers go. Nothing needs to listen
/// there: the browser shows the code in its address bar.
const REDIRECT_URI: &str = "http://127.0.0.1:8080/callback";
const EMAIL: &str = "ada@example.test";
const PASSWORD: &str = "correct horse battery staple";
/// A fixed PKCE pair (the challenge is the verifier's S256), so the README's
/// commands can be copied as they are. A real client makes a fresh,
/// random verifier for each request.
const CODE_VERIFIER: &str = "readme-example-code-verifier-make-a-fresh-one-per-request";
const CODE_CHALLENGE: &str = "5WGLfy9tFywcmYKOZRuohYzHIxJHqDfXJgIVEx7WQOs";

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let self_test = std::env::args().any(|arg| arg == "--self-test")
        || std::env::var("CI").is_ok_and(|ci| ci == "true");
    let port = if self_test {
        0
    } else {
        std::env::var("PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(3000)
    };
    // The issuer is the public base URL: bind first, then name it.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let issuer = format!("http://{}", listener.local_addr()?);

    let mut auth = AuthConfig::new(issuer.clone(), "oidc-example");
    let database_url = database_url();
    if database_url.is_some() {
        auth = auth.with_key_encryption(key_encryption_from_env()?);
    }
    // Plain http on localhost: cookies without `Secure`.
    let mut http = HttpConfig::default();
    http.cookies.secure = false;
    let builder = Tenancy::builder(tenancy::http::authz::Catalog::new(["projects:read"])?, auth)
        .http(http)
        .module(OidcModule::new(OidcConfig::default()));
    let tenancy = build(builder, database_url.as_deref()).await?;

    // One account, owner of its tenant, and one client of that tenant (on
    // a database that outlives the run, a fresh account each run).
    let (email, slug) = match database_url {
        Some(_) => {
            let run = tenancy::TenantId::new().to_string()[28..].to_owned();
            (format!("ada-{run}@example.test"), format!("acme-{run}"))
        }
        None => (EMAIL.to_owned(), "acme".to_owned()),
    };
    let registered = tenancy
        .auth()
        .register(
            Registration {
                user: NewUser::new(Email::new(&email)?),
                password: Password::new(PASSWORD),
                tenant: NewTenant::new(Slug::new(slug)?, TenantName::new("Acme")?),
            },
            &ClientInfo::from_ip("127.0.0.1".parse()?),
        )
        .await?;
    let oidc = tenancy
        .module::<OidcModule>()
        .ok_or("the OIDC module is added above")?;
    let new = NewOAuthClient {
        name: "Example app".into(),
        kind: ClientKind::Confidential,
        redirect_uris: vec![RedirectUri::parse(REDIRECT_URI)?],
        grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        scopes: [
            "openid",
            "profile",
            "email",
            "offline_access",
            "projects:read",
        ]
        .map(String::from)
        .to_vec(),
        ..NewOAuthClient::default()
    };
    let (client, secret) = oidc
        .provider()
        .register_client(
            Some(registered.membership.tenant_id),
            new,
            Actor::User(registered.user.id),
        )
        .await?;
    let client_id = client.id.as_str().to_owned();
    let secret = secret.ok_or("a confidential client gets a secret")?;
    let authorize = format!(
        "{issuer}/oauth/authorize?response_type=code&client_id={client_id}\
         &redirect_uri={}&scope=openid%20profile%20email%20offline_access\
         &state=xyz&nonce=n-0S6_WzA2Mj&code_challenge={CODE_CHALLENGE}&code_challenge_method=S256",
        encode(REDIRECT_URI)
    );

    let app = tenancy::axum::router(tenancy.clone()).fallback(tenancy::axum::not_found);
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    println!("listening on {issuer}");
    println!("discovery: {issuer}/.well-known/openid-configuration");
    println!("client_id: {client_id}");
    println!("client_secret: {} (shown once)", secret.expose());
    println!("sign in as {email} / {PASSWORD}");
    println!("open in a browser:\n{authorize}");
    println!("then exchange the code (code_verifier {CODE_VERIFIER}), see the README");

    if self_test {
        self_test_flow(&issuer, &authorize, &email, &client_id, secret.expose()).await?;
        println!("self-test: ok");
        server.abort();
        return Ok(());
    }
    server.await??;
    Ok(())
}

/// `DATABASE_URL`, when built with `postgres`.
fn database_url() -> Option<String> {
    #[cfg(feature = "postgres")]
    return std::env::var("DATABASE_URL").ok();
    #[cfg(not(feature = "postgres"))]
    None
}

/// The key the signing keys are encrypted under on Postgres.
fn key_encryption_from_env() -> Result<tenancy::http::auth::KeyEncryption, Box<dyn Error>> {
    use tenancy::http::auth::{KeyEncryption, KeyEncryptionKey};
    let text = std::env::var("KEY_ENCRYPTION_KEY")
        .map_err(|_| "set KEY_ENCRYPTION_KEY (openssl rand -base64 32) to run on Postgres")?;
    Ok(KeyEncryption::key(KeyEncryptionKey::from_base64(
        "example-1",
        &text,
    )?))
}

/// In memory, or on Postgres at `database_url` (migrated at startup).
async fn build(
    builder: tenancy::http::TenancyBuilder,
    database_url: Option<&str>,
) -> Result<Tenancy, Box<dyn Error>> {
    #[cfg(feature = "postgres")]
    if let Some(url) = database_url {
        let pool = tenancy::postgres::sqlx::PgPool::connect(url).await?;
        return Ok(builder.postgres(pool).build().await?);
    }
    let _ = database_url;
    Ok(builder
        .stores(tenancy::http::Stores::memory())
        .build()
        .await?)
}

/// Percent-encodes a query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of the form input named `name` in `html`.
fn input(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let start = html[..at].rfind('<')?;
    let end = at + html[at..].find('>')?;
    let value = html[start..end]
        .split_once("value=\"")?
        .1
        .split_once('"')?
        .0;
    Some(value.replace("&quot;", "\"").replace("&amp;", "&"))
}

/// One code flow against the running app: the browser signs in and
/// consents, the client exchanges the code with its secret and the PKCE
/// verifier, then reads userinfo with the access token.
async fn self_test_flow(
    issuer: &str,
    authorize: &str,
    email: &str,
    client_id: &str,
    client_secret: &str,
) -> Result<(), Box<dyn Error>> {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut response = browser.get(authorize).send().await?;
    let mut code = None;
    for _ in 0..8 {
        if response.status().is_redirection() {
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or("a redirect without Location")?
                .to_owned();
            let next = if location.starts_with('/') {
                format!("{issuer}{location}")
            } else {
                location
            };
            if let Some(query) = next.strip_prefix(&format!("{REDIRECT_URI}?")) {
                code = query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("code="))
                    .map(str::to_owned);
                if code.is_none() {
                    return Err(format!("the provider answered {next}").into());
                }
                break;
            }
            response = browser.get(&next).send().await?;
            continue;
        }
        let status = response.status();
        let page = response.url().path().to_owned();
        let html = response.text().await?;
        let form: Vec<(&str, String)> = match page.as_str() {
            "/oauth/login" => vec![
                (
                    "interaction",
                    input(&html, "interaction").ok_or("no interaction")?,
                ),
                ("csrf", input(&html, "csrf").ok_or("no csrf")?),
                ("email", email.to_owned()),
                ("password", PASSWORD.to_owned()),
            ],
            "/oauth/consent" => vec![
                (
                    "interaction",
                    input(&html, "interaction").ok_or("no interaction")?,
                ),
                ("csrf", input(&html, "csrf").ok_or("no csrf")?),
                ("decision", "allow".to_owned()),
            ],
            other => return Err(format!("unexpected page {other} ({status}): {html}").into()),
        };
        response = browser
            .post(format!("{issuer}{page}"))
            .header("origin", issuer)
            .form(&form)
            .send()
            .await?;
    }
    let code = code.ok_or("no code after the login and consent pages")?;
    let answer = reqwest::Client::new()
        .post(format!("{issuer}/oauth/token"))
        .basic_auth(client_id, Some(client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", CODE_VERIFIER),
        ])
        .send()
        .await?;
    let status = answer.status();
    let tokens: serde_json::Value = answer.json().await?;
    if !status.is_success() {
        return Err(format!("the token endpoint answered {status}: {tokens}").into());
    }
    let access = tokens["access_token"].as_str().ok_or("no access token")?;
    if !tokens["id_token"].is_string() || !tokens["refresh_token"].is_string() {
        return Err(format!("expected an ID token and a refresh token: {tokens}").into());
    }
    let userinfo: serde_json::Value = reqwest::Client::new()
        .get(format!("{issuer}/oauth/userinfo"))
        .bearer_auth(access)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if userinfo["email"] != email {
        return Err(format!("userinfo: {userinfo}").into());
    }
    println!("self-test: signed in, consented, exchanged the code, read userinfo");
    Ok(())
}
