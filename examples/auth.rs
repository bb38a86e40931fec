//! Identity with tenancy-auth: register, log in, call with the access token,
//! refresh, create and use an API key, verify the email (the mailer prints
//! the link), log out.
//!
//! ```text
//! cargo run --example auth --features auth
//! DATABASE_URL=postgres://… KEY_ENCRYPTION_KEY=… cargo run --example auth --features auth,postgres
//! ```
//!
//! On Postgres the signing keys are stored encrypted under
//! `KEY_ENCRYPTION_KEY` (32 bytes in base64, `openssl rand -base64 32`;
//! keep the same one between runs).

use std::error::Error;
use std::sync::Arc;

use async_trait::async_trait;
use tenancy::auth::{
    Auth, AuthConfig, AuthStore, ClientInfo, Credentials, KeyEncryption, KeyEncryptionKey,
    LoginRequest, Mail, Mailer, MemoryAuthStore, NewApiKey, Password, Registration, Scope,
};
use tenancy::{
    AuditContext, Backend, BoxError, Email, MemoryBackend, NewTenant, NewUser, Slug, TenantName,
};

/// Prints the link it would mail. A real app sends it with its mail provider.
struct PrintingMailer;

#[async_trait]
impl Mailer for PrintingMailer {
    async fn send(&self, mail: Mail) -> Result<(), BoxError> {
        println!(
            "mail to {}: https://app.example/verify?token={}",
            mail.to,
            mail.token.expose_secret()
        );
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let (backend, store) = stores().await?;
    let mut config = AuthConfig::new("https://app.example", "app");
    if let Ok(key) = std::env::var("KEY_ENCRYPTION_KEY") {
        let key = KeyEncryptionKey::from_base64("example-1", &key)?;
        config = config.with_key_encryption(KeyEncryption::key(key));
    }
    let auth = Auth::builder(backend, store, config)
        .mailer(Arc::new(PrintingMailer))
        .build()
        .await?;
    let run = tenancy::TenantId::new().to_string()[28..].to_owned();
    let client = ClientInfo::from_ip("203.0.113.7".parse()?).with_user_agent("example/1.0");
    let email = format!("ada-{run}@acme.example");

    let registered = auth
        .register(
            Registration {
                user: NewUser::new(Email::new(&email)?),
                password: Password::new("correct horse battery staple"),
                tenant: NewTenant::new(Slug::new(format!("acme-{run}"))?, TenantName::new("Acme")?),
            },
            &client,
        )
        .await?;
    println!(
        "registered {} as owner of tenant {}",
        registered.user.email, registered.membership.tenant_id
    );

    let session = auth
        .login(
            LoginRequest {
                email: email.clone(),
                password: Password::new("correct horse battery staple"),
                tenant: None,
            },
            &client,
        )
        .await?;
    let header = format!("Bearer {}", session.access_token.token);
    let principal = auth
        .authenticator()
        .authenticate(Credentials::bearer(&header))
        .await?;
    println!(
        "access token verified: user {:?} with roles {:?}",
        principal.user_id(),
        principal.roles
    );

    let wrong = auth
        .login(
            LoginRequest {
                email: email.clone(),
                password: Password::new("not my password"),
                tenant: None,
            },
            &client,
        )
        .await;
    println!(
        "wrong password: {}",
        wrong.err().map(|e| e.to_string()).unwrap_or_default()
    );

    let refreshed = auth
        .refresh(session.refresh_token.expose_secret(), &client)
        .await?;
    println!(
        "refreshed; the session expires after {} idle",
        auth.config().sessions.idle_timeout
    );
    let reused = auth
        .refresh(session.refresh_token.expose_secret(), &client)
        .await;
    println!(
        "refresh token presented twice: {}",
        reused.err().map(|e| e.to_string()).unwrap_or_default()
    );
    let after_reuse = auth
        .authenticator()
        .authenticate(Credentials::bearer(&format!(
            "Bearer {}",
            refreshed.access_token.token
        )))
        .await;
    println!(
        "access token of the revoked session: {}",
        after_reuse.err().map(|e| e.to_string()).unwrap_or_default()
    );

    let scope = auth
        .directory()
        .scope(registered.membership.tenant_id)
        .await?;
    let (key, secret) = auth
        .create_api_key(
            &scope,
            NewApiKey {
                name: "deploy bot".into(),
                scopes: vec![Scope::new("projects:write")?],
                expires_at: None,
            },
            &AuditContext::user(registered.user.id),
        )
        .await?;
    let machine = auth
        .authenticator()
        .authenticate(Credentials::bearer(&format!(
            "Bearer {}",
            secret.expose_secret()
        )))
        .await?;
    println!(
        "api key {} authenticated with scopes {:?}",
        key.id, machine.scopes
    );

    auth.start_email_verification(registered.user.id, &client)
        .await?;
    // The mail goes out in the background: let it finish before exiting.
    auth.wait_for_mail().await;
    auth.logout(&principal, &client).await?;
    println!(
        "logged out; JWKS publishes {} key(s)",
        auth.jwks()["keys"].as_array().map_or(0, Vec::len)
    );
    Ok(())
}

async fn stores() -> Result<(Arc<dyn Backend>, Arc<dyn AuthStore>), Box<dyn Error>> {
    #[cfg(feature = "postgres")]
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let backend = tenancy::postgres::PgBackend::connect(&url).await?;
        let store = tenancy::auth::postgres::PgAuthStore::new(backend.pool().clone());
        store.migrate().await?;
        println!("stores: postgres");
        return Ok((Arc::new(backend), Arc::new(store)));
    }
    println!("stores: memory");
    Ok((
        Arc::new(MemoryBackend::new()),
        Arc::new(MemoryAuthStore::new()),
    ))
}
