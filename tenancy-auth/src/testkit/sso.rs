//! Conformance suites of [`SsoStore`] and scenarios of the [`Sso`]
//! service that need no identity provider (feature `sso`).
//!
//! Run them with [`sso_conformance_tests!`](crate::sso_conformance_tests)
//! over a fixture of your stores.

use std::sync::Arc;

use tenancy_core::{
    Actor, AuditContext, AuditLog, AuditQuery, Backend, PageRequest, PageSize, RoleName, TenantId,
    TokenHash, UserId, UserStore,
};
use time::Duration;

use super::{Fixture, now, seed};
use crate::service::{Auth, AuthConfig, LoginRequest};
use crate::sso::{
    ClientSecret, ConnectionId, ConnectionRef, ConnectionUpdate, DomainName, EmailDomain,
    EnterpriseConnection, ExternalIdentity, NewEnterpriseConnection, OAuth2Endpoints, SealedSecret,
    SignInState, SignInTarget, SocialConnection, Sso, SsoConfig, SsoError, SsoPolicy, SsoStore,
    SsoStoreError, StartSignIn, StaticDnsResolver, actions,
};
use crate::{Argon2Config, ClientInfo, Error, Password};

/// The auth fixture plus an SSO store over the same database.
#[derive(Clone)]
pub struct SsoFixture {
    /// The auth stores.
    pub auth: Fixture,
    /// The SSO store.
    pub sso: Arc<dyn SsoStore>,
}

impl std::fmt::Debug for SsoFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SsoFixture")
    }
}

/// Generates one `#[tokio::test]` per SSO suite. `$fixture` is an
/// expression evaluating to a future of `Option<SsoFixture>`; `None` skips.
#[macro_export]
macro_rules! sso_conformance_tests {
    ($fixture:expr) => {
        $crate::sso_conformance_tests!(@suites $fixture;
            sso_store_connections, sso_store_domains, sso_store_policy, sso_store_states,
            sso_store_identities, sso_store_state_race, sso_service_connections,
            sso_service_domains, sso_service_policy_refuses_passwords, sso_service_start,
            sso_service_start_is_rate_limited
        );
    };
    (@suites $fixture:expr; $($suite:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $suite() {
                if let Some(fixture) = $fixture.await {
                    $crate::testkit::sso::$suite(fixture).await;
                }
            }
        )+
    };
}

async fn tenant(f: &SsoFixture, slug: &str, email: &str) -> (TenantId, UserId) {
    let (tenant, user) = seed(&*f.auth.backend, slug, email, &["owner"]).await;
    (tenant.id, user.id)
}

fn connection(tenant: TenantId, name: &str) -> EnterpriseConnection {
    let at = now();
    EnterpriseConnection {
        id: ConnectionId::new(),
        tenant_id: tenant,
        name: name.to_owned(),
        issuer: "https://idp.acme.example".to_owned(),
        client_id: "client".to_owned(),
        client_secret: SealedSecret::from_stored("sealed"),
        default_role: RoleName::new("member").unwrap(),
        create_users: true,
        enabled: true,
        created_at: at,
        updated_at: at,
    }
}

fn domain(tenant: TenantId, name: &str) -> EmailDomain {
    EmailDomain {
        tenant_id: tenant,
        domain: DomainName::new(name).unwrap(),
        verification_token: "token".to_owned(),
        verified_at: None,
        created_at: now(),
    }
}

/// Connections: insert, read, list in order, update, delete, and never
/// across tenants.
pub async fn sso_store_connections(f: SsoFixture) {
    let (acme, _) = tenant(&f, "acme-conn", "ada@conn.example").await;
    let (globex, _) = tenant(&f, "globex-conn", "bob@conn.example").await;
    let first = connection(acme, "first");
    let mut second = connection(acme, "second");
    second.created_at = first.created_at + Duration::seconds(1);
    f.sso.insert_connection(&first).await.unwrap();
    f.sso.insert_connection(&second).await.unwrap();
    assert_eq!(
        f.sso.get_connection(acme, first.id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(f.sso.get_connection(globex, first.id).await.unwrap(), None);
    let listed = f.sso.list_connections(acme).await.unwrap();
    assert_eq!(listed, vec![first.clone(), second.clone()]);
    assert!(f.sso.list_connections(globex).await.unwrap().is_empty());

    let mut changed = first.clone();
    changed.enabled = false;
    changed.client_secret = SealedSecret::from_stored("resealed");
    changed.updated_at = first.updated_at + Duration::seconds(5);
    f.sso.update_connection(&changed).await.unwrap();
    assert_eq!(
        f.sso.get_connection(acme, first.id).await.unwrap(),
        Some(changed.clone())
    );
    let mut foreign = changed.clone();
    foreign.tenant_id = globex;
    assert!(matches!(
        f.sso.update_connection(&foreign).await,
        Err(SsoStoreError::ConnectionNotFound)
    ));
    assert!(matches!(
        f.sso.delete_connection(globex, first.id).await,
        Err(SsoStoreError::ConnectionNotFound)
    ));
    f.sso.delete_connection(acme, first.id).await.unwrap();
    assert_eq!(f.sso.get_connection(acme, first.id).await.unwrap(), None);
    assert!(matches!(
        f.sso.delete_connection(acme, first.id).await,
        Err(SsoStoreError::ConnectionNotFound)
    ));
}

/// Domains: one tenant per domain, found by name, verified once (the first
/// time is kept), released only by their tenant.
pub async fn sso_store_domains(f: SsoFixture) {
    let (acme, _) = tenant(&f, "acme-dom", "ada@dom.example").await;
    let (globex, _) = tenant(&f, "globex-dom", "bob@dom.example").await;
    let acme_com = domain(acme, "acme-dom.example");
    f.sso.insert_domain(&acme_com).await.unwrap();
    f.sso
        .insert_domain(&domain(acme, "b.acme-dom.example"))
        .await
        .unwrap();
    assert!(matches!(
        f.sso
            .insert_domain(&domain(globex, "acme-dom.example"))
            .await,
        Err(SsoStoreError::DomainTaken)
    ));
    assert!(matches!(
        f.sso.insert_domain(&domain(acme, "acme-dom.example")).await,
        Err(SsoStoreError::DomainTaken)
    ));
    assert_eq!(
        f.sso.find_domain(&acme_com.domain).await.unwrap(),
        Some(acme_com.clone())
    );
    assert_eq!(
        f.sso
            .find_domain(&DomainName::new("nobody.example").unwrap())
            .await
            .unwrap(),
        None
    );
    let names: Vec<String> = f
        .sso
        .list_domains(acme)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.domain.to_string())
        .collect();
    assert_eq!(names, ["acme-dom.example", "b.acme-dom.example"]);
    assert!(f.sso.list_domains(globex).await.unwrap().is_empty());

    assert!(matches!(
        f.sso.verify_domain(globex, &acme_com.domain, now()).await,
        Err(SsoStoreError::DomainNotFound)
    ));
    let at = now();
    let verified = f
        .sso
        .verify_domain(acme, &acme_com.domain, at)
        .await
        .unwrap();
    assert_eq!(verified.verified_at, Some(at));
    let again = f
        .sso
        .verify_domain(acme, &acme_com.domain, at + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(
        again.verified_at,
        Some(at),
        "the first verification is kept"
    );

    assert!(matches!(
        f.sso.delete_domain(globex, &acme_com.domain).await,
        Err(SsoStoreError::DomainNotFound)
    ));
    f.sso.delete_domain(acme, &acme_com.domain).await.unwrap();
    assert_eq!(f.sso.find_domain(&acme_com.domain).await.unwrap(), None);
    f.sso
        .insert_domain(&domain(globex, "acme-dom.example"))
        .await
        .unwrap();
}

/// Policy: the default until set, per tenant.
pub async fn sso_store_policy(f: SsoFixture) {
    let (acme, _) = tenant(&f, "acme-pol", "ada@pol.example").await;
    let (globex, _) = tenant(&f, "globex-pol", "bob@pol.example").await;
    assert_eq!(f.sso.policy(acme).await.unwrap(), SsoPolicy::default());
    f.sso
        .set_policy(acme, SsoPolicy { require_sso: true })
        .await
        .unwrap();
    assert!(f.sso.policy(acme).await.unwrap().require_sso);
    assert!(!f.sso.policy(globex).await.unwrap().require_sso);
    f.sso
        .set_policy(acme, SsoPolicy { require_sso: false })
        .await
        .unwrap();
    assert!(!f.sso.policy(acme).await.unwrap().require_sso);
}

fn state(connection: ConnectionRef, secret: &str, ttl: Duration) -> SignInState {
    let at = now();
    SignInState {
        state_hash: TokenHash::of(secret.as_bytes()),
        binding_hash: TokenHash::of(format!("binding-{secret}").as_bytes()),
        connection,
        return_to: Some("/dashboard".to_owned()),
        created_at: at,
        expires_at: at + ttl,
    }
}

/// Pending sign-ins: taken once, never after expiry, purged when expired.
pub async fn sso_store_states(f: SsoFixture) {
    let (acme, _) = tenant(&f, "acme-state", "ada@state.example").await;
    let social = state(
        ConnectionRef::Social("github".to_owned()),
        "s1",
        Duration::minutes(10),
    );
    let enterprise = state(
        ConnectionRef::Enterprise {
            tenant_id: acme,
            id: ConnectionId::new(),
        },
        "s2",
        Duration::minutes(10),
    );
    let expired = state(
        ConnectionRef::Social("github".to_owned()),
        "s3",
        Duration::seconds(-1),
    );
    for s in [&social, &enterprise, &expired] {
        f.sso.insert_state(s).await.unwrap();
    }
    assert!(matches!(
        f.sso.insert_state(&social).await,
        Err(SsoStoreError::StateTaken)
    ));
    let at = now();
    assert_eq!(
        f.sso.take_state(&social.state_hash, at).await.unwrap(),
        Some(social.clone())
    );
    assert_eq!(
        f.sso.take_state(&social.state_hash, at).await.unwrap(),
        None,
        "single use"
    );
    assert_eq!(
        f.sso.take_state(&enterprise.state_hash, at).await.unwrap(),
        Some(enterprise.clone())
    );
    let late = state(
        ConnectionRef::Social("github".to_owned()),
        "s4",
        Duration::minutes(1),
    );
    f.sso.insert_state(&late).await.unwrap();
    assert_eq!(
        f.sso
            .take_state(&late.state_hash, at + Duration::minutes(2))
            .await
            .unwrap(),
        None,
        "expired states are not handed out"
    );
    assert_eq!(f.sso.purge_states(now()).await.unwrap(), 1);
    assert_eq!(
        f.sso.take_state(&expired.state_hash, at).await.unwrap(),
        None
    );
}

/// Of many concurrent takes of one state, exactly one wins.
pub async fn sso_store_state_race(f: SsoFixture) {
    let pending = state(
        ConnectionRef::Social("github".to_owned()),
        "race",
        Duration::minutes(10),
    );
    f.sso.insert_state(&pending).await.unwrap();
    let at = now();
    let takes = (0..8).map(|_| {
        let store = f.sso.clone();
        let hash = pending.state_hash;
        tokio::spawn(async move { store.take_state(&hash, at).await.unwrap() })
    });
    let mut won = 0;
    for take in takes {
        if take.await.unwrap().is_some() {
            won += 1;
        }
    }
    assert_eq!(won, 1);
}

/// Identities: unique per provider and subject, listed per user.
pub async fn sso_store_identities(f: SsoFixture) {
    let (_, ada) = tenant(&f, "acme-ident", "ada@ident.example").await;
    let (_, bob) = tenant(&f, "globex-ident", "bob@ident.example").await;
    let link = ExternalIdentity {
        provider: "social:github".to_owned(),
        subject: "42".to_owned(),
        user_id: ada,
        created_at: now(),
    };
    f.sso.insert_identity(&link).await.unwrap();
    let mut stolen = link.clone();
    stolen.user_id = bob;
    assert!(matches!(
        f.sso.insert_identity(&stolen).await,
        Err(SsoStoreError::IdentityTaken)
    ));
    let other = ExternalIdentity {
        provider: "social:google".to_owned(),
        ..link.clone()
    };
    f.sso.insert_identity(&other).await.unwrap();
    assert_eq!(
        f.sso.find_identity("social:github", "42").await.unwrap(),
        Some(link.clone())
    );
    assert_eq!(
        f.sso.find_identity("social:github", "43").await.unwrap(),
        None
    );
    assert_eq!(f.sso.user_identities(ada).await.unwrap().len(), 2);
    assert!(f.sso.user_identities(bob).await.unwrap().is_empty());
}

async fn service(f: &SsoFixture, config: SsoConfig) -> (Auth, Sso) {
    let auth = Auth::builder(
        f.auth.backend.clone(),
        f.auth.store.clone(),
        AuthConfig::new("https://app.example", "app")
            .with_argon2(Argon2Config::new(1024, 1, 1))
            .with_key_encryption(crate::KeyEncryption::key(
                crate::KeyEncryptionKey::new("sso-suite", [5; 32]).unwrap(),
            )),
    )
    .password_login_check(Arc::new(crate::sso::SsoPasswordCheck::new(f.sso.clone())))
    .build()
    .await
    .unwrap();
    let sso = Sso::new(auth.clone(), f.sso.clone(), config).unwrap();
    (auth, sso)
}

fn admin(user: UserId) -> AuditContext {
    AuditContext::new(Actor::User(user))
}

async fn audit_actions(backend: &dyn Backend, tenant: TenantId) -> Vec<String> {
    backend
        .query_audit(
            tenant,
            &AuditQuery::all(),
            &PageRequest::first(PageSize::MAX),
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.action.as_str().to_owned())
        .collect()
}

fn new_connection(secret: &str) -> NewEnterpriseConnection {
    NewEnterpriseConnection {
        name: "Acme IdP".to_owned(),
        issuer: "https://idp.acme.example".to_owned(),
        client_id: "acme-client".to_owned(),
        client_secret: ClientSecret::new(secret),
        default_role: RoleName::new("member").unwrap(),
        create_users: true,
        enabled: true,
    }
}

/// Connections through the service: the secret is stored sealed (never in
/// the clear), changes are audited, private issuers are refused.
pub async fn sso_service_connections(f: SsoFixture) {
    let (acme, ada) = tenant(&f, "acme-svc", "ada@svc.example").await;
    let (_, sso) = service(&f, SsoConfig::new()).await;
    let created = sso
        .create_connection(acme, new_connection("top-secret-value"), &admin(ada))
        .await
        .unwrap();
    let stored = f
        .sso
        .get_connection(acme, created.id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !stored
            .client_secret
            .as_stored()
            .contains("top-secret-value")
    );
    assert!(!format!("{stored:?}").contains("top-secret-value"));
    for issuer in [
        "https://127.0.0.1/",
        "https://169.254.169.254/",
        "http://idp.acme.example",
        "not a url",
        "https://idp.acme.example/?x=1",
    ] {
        let mut bad = new_connection("s");
        bad.issuer = issuer.to_owned();
        assert!(
            sso.create_connection(acme, bad, &admin(ada)).await.is_err(),
            "{issuer}"
        );
    }
    let updated = sso
        .update_connection(
            acme,
            created.id,
            ConnectionUpdate {
                enabled: Some(false),
                client_secret: Some(ClientSecret::new("rotated")),
                ..ConnectionUpdate::default()
            },
            &admin(ada),
        )
        .await
        .unwrap();
    assert!(!updated.enabled);
    assert_ne!(updated.client_secret, created.client_secret);
    sso.delete_connection(acme, created.id, &admin(ada))
        .await
        .unwrap();
    assert!(matches!(
        sso.delete_connection(acme, created.id, &admin(ada)).await,
        Err(SsoError::Store(SsoStoreError::ConnectionNotFound))
    ));
    let actions = audit_actions(&*f.auth.backend, acme).await;
    for action in [
        actions::CONNECTION_CREATED,
        actions::CONNECTION_UPDATED,
        actions::CONNECTION_DELETED,
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
}

/// Domains through the service: verified by the TXT challenge only when it
/// is published, or by an operator; one tenant per domain.
pub async fn sso_service_domains(f: SsoFixture) {
    let (acme, ada) = tenant(&f, "acme-dns", "ada@dns.example").await;
    let (globex, bob) = tenant(&f, "globex-dns", "bob@dns.example").await;
    let dns = StaticDnsResolver::new();
    let (_, sso) = service(
        &f,
        SsoConfig::new().with_dns_resolver(Arc::new(dns.clone())),
    )
    .await;
    let claimed = sso
        .add_domain(acme, "Acme-DNS.example", &admin(ada))
        .await
        .unwrap();
    assert_eq!(claimed.domain.as_str(), "acme-dns.example");
    assert!(!claimed.is_verified());
    assert!(matches!(
        sso.add_domain(globex, "acme-dns.example", &admin(bob))
            .await,
        Err(SsoError::Store(SsoStoreError::DomainTaken))
    ));
    assert!(matches!(
        sso.verify_domain(acme, "acme-dns.example", &admin(ada))
            .await,
        Err(SsoError::DomainNotVerified)
    ));
    dns.publish(
        &claimed.challenge_name(),
        "tenancy-domain-verification=wrong",
    );
    assert!(matches!(
        sso.verify_domain(acme, "acme-dns.example", &admin(ada))
            .await,
        Err(SsoError::DomainNotVerified)
    ));
    dns.publish(&claimed.challenge_name(), &claimed.challenge_value());
    assert!(matches!(
        sso.verify_domain(globex, "acme-dns.example", &admin(bob))
            .await,
        Err(SsoError::Store(SsoStoreError::DomainNotFound))
    ));
    let verified = sso
        .verify_domain(acme, "acme-dns.example", &admin(ada))
        .await
        .unwrap();
    assert!(verified.is_verified());
    sso.add_domain(acme, "ops.example", &admin(ada))
        .await
        .unwrap();
    let by_operator = sso
        .verify_domain_as_operator(acme, "ops.example", &AuditContext::new(Actor::System))
        .await
        .unwrap();
    assert!(by_operator.is_verified());
    sso.remove_domain(acme, "ops.example", &admin(ada))
        .await
        .unwrap();
    assert_eq!(sso.domains(acme).await.unwrap().len(), 1);
    let actions = audit_actions(&*f.auth.backend, acme).await;
    for action in [
        actions::DOMAIN_ADDED,
        actions::DOMAIN_VERIFIED,
        actions::DOMAIN_REMOVED,
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
    // Squatting: a public mail domain or suffix is nobody's to claim, and
    // an unverified claim lapses for the next tenant.
    for shared in ["gmail.com", "co.uk", "github.io"] {
        assert!(
            matches!(
                sso.add_domain(acme, shared, &admin(ada)).await,
                Err(SsoError::InvalidInput {
                    field: "domain",
                    ..
                })
            ),
            "{shared}"
        );
    }
    let squatted = DomainName::new("squat.example").unwrap();
    f.sso
        .insert_domain(&EmailDomain {
            tenant_id: globex,
            domain: squatted.clone(),
            verification_token: "t".to_owned(),
            verified_at: None,
            created_at: now() - Duration::days(8),
        })
        .await
        .unwrap();
    sso.add_domain(acme, "squat.example", &admin(ada))
        .await
        .unwrap();
    sso.verify_domain_as_operator(acme, "squat.example", &AuditContext::new(Actor::System))
        .await
        .unwrap();
    let owner = f.sso.find_domain(&squatted).await.unwrap().unwrap();
    assert_eq!(owner.tenant_id, acme);
    assert!(owner.is_verified());
    // A fresh claim still blocks.
    assert!(matches!(
        sso.add_domain(globex, "squat.example", &admin(bob)).await,
        Err(SsoError::Store(SsoStoreError::DomainTaken))
    ));
}

/// A tenant requiring SSO refuses its members' password logins (and
/// switching into it) with a typed error; other tenants are unaffected.
pub async fn sso_service_policy_refuses_passwords(f: SsoFixture) {
    let (acme, ada) = tenant(&f, "acme-req", "ada@req.example").await;
    let (auth, sso) = service(&f, SsoConfig::new()).await;
    let user = f.auth.backend.get_user(ada).await.unwrap();
    auth.set_password(&user, &Password::new("correct horse battery staple"))
        .await
        .unwrap();
    let login = || LoginRequest {
        email: "ada@req.example".to_owned(),
        password: Password::new("correct horse battery staple"),
        tenant: Some(acme),
    };
    let before = auth.login(login(), &ClientInfo::default()).await.unwrap();
    let still = auth
        .refresh(before.refresh_token.expose_secret(), &ClientInfo::default())
        .await
        .unwrap();
    assert!(
        matches!(
            sso.set_policy(acme, SsoPolicy { require_sso: true }, &admin(ada))
                .await,
            Err(SsoError::InvalidInput { .. })
        ),
        "requiring SSO without a connection would lock everyone out"
    );
    sso.create_connection(acme, new_connection("s"), &admin(ada))
        .await
        .unwrap();
    sso.set_policy(acme, SsoPolicy { require_sso: true }, &admin(ada))
        .await
        .unwrap();
    match auth.login(login(), &ClientInfo::default()).await {
        Err(Error::SsoRequired { tenant_id }) => assert_eq!(tenant_id, acme),
        other => panic!("expected SsoRequired, got {other:?}"),
    }
    // The password session opened before the policy ends at its refresh.
    let ended = auth
        .refresh(still.refresh_token.expose_secret(), &ClientInfo::default())
        .await;
    assert!(
        matches!(ended, Err(Error::SessionInactive)),
        "{:?}",
        ended.map(|_| ())
    );
    let wrong = LoginRequest {
        password: Password::new("wrong password entirely"),
        ..login()
    };
    assert!(
        matches!(
            auth.login(wrong, &ClientInfo::default()).await,
            Err(Error::InvalidCredentials)
        ),
        "a wrong password still answers like any wrong password"
    );
    let actions = audit_actions(&*f.auth.backend, acme).await;
    assert!(actions.iter().any(|a| a == actions::POLICY_CHANGED));
    sso.set_policy(acme, SsoPolicy { require_sso: false }, &admin(ada))
        .await
        .unwrap();
    auth.login(login(), &ClientInfo::default()).await.unwrap();
}

/// Starting a sign-in: a GitHub-style connection's URL carries the client,
/// callback, state and an S256 PKCE challenge; the state is recorded;
/// unknown connections, unverified domains and foreign return paths are
/// refused.
pub async fn sso_service_start(f: SsoFixture) {
    let (acme, ada) = tenant(&f, "acme-start", "ada@start.example").await;
    let endpoints = OAuth2Endpoints {
        authorize: url::Url::parse("https://gh.example/login/oauth/authorize").unwrap(),
        token: url::Url::parse("https://gh.example/login/oauth/access_token").unwrap(),
        user: url::Url::parse("https://api.gh.example/user").unwrap(),
        emails: None,
    };
    let config = SsoConfig::new().with_social(SocialConnection::oauth2(
        "gh",
        "gh-client",
        ClientSecret::new("gh-secret"),
        endpoints,
    ));
    let (_, sso) = service(&f, config).await;
    let started = sso
        .start(StartSignIn {
            target: SignInTarget::Connection("gh".to_owned()),
            return_to: Some("/after".to_owned()),
        })
        .await
        .unwrap();
    let url = &started.authorize_url;
    assert_eq!(url.host_str(), Some("gh.example"));
    let query: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(
        query.get("client_id").map(String::as_str),
        Some("gh-client")
    );
    assert_eq!(query.get("state"), Some(&started.state));
    assert_eq!(
        query.get("code_challenge_method").map(String::as_str),
        Some("S256")
    );
    assert!(query.get("code_challenge").is_some_and(|c| c.len() == 43));
    assert_eq!(
        query.get("redirect_uri").map(String::as_str),
        Some("https://app.example/sso/callback")
    );
    assert!(!url.as_str().contains("gh-secret"));
    assert!(!url.as_str().contains(started.binding.expose_secret()));
    let pending = f
        .sso
        .take_state(&TokenHash::of(started.state.as_bytes()), now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pending.connection, ConnectionRef::Social("gh".to_owned()));
    assert_eq!(pending.return_to.as_deref(), Some("/after"));
    assert!(pending.expires_at <= now() + Duration::minutes(10));

    assert!(matches!(
        sso.start(StartSignIn {
            target: SignInTarget::Connection("nope".to_owned()),
            return_to: None
        })
        .await,
        Err(SsoError::UnknownConnection)
    ));
    assert!(matches!(
        sso.start(StartSignIn {
            target: SignInTarget::Connection("gh".to_owned()),
            return_to: Some("https://evil.example/".to_owned())
        })
        .await,
        Err(SsoError::InvalidInput { .. })
    ));
    sso.add_domain(acme, "start.example", &admin(ada))
        .await
        .unwrap();
    sso.create_connection(acme, new_connection("s"), &admin(ada))
        .await
        .unwrap();
    assert!(
        matches!(
            sso.start(StartSignIn {
                target: SignInTarget::Email("carol@start.example".to_owned()),
                return_to: None
            })
            .await,
            Err(SsoError::NoConnectionForEmail)
        ),
        "an unverified domain routes nothing"
    );
    assert!(matches!(
        sso.start(StartSignIn {
            target: SignInTarget::Email("carol@elsewhere.example".to_owned()),
            return_to: None
        })
        .await,
        Err(SsoError::NoConnectionForEmail)
    ));
}

/// Anonymous starts count against the per-client login rate: past the
/// burst a client is told to retry later, while others are not.
pub async fn sso_service_start_is_rate_limited(f: SsoFixture) {
    let limits = crate::AbuseLimits {
        login_burst: 2,
        logins_per_minute: 1,
        ..crate::AbuseLimits::default()
    };
    let auth = Auth::builder(
        f.auth.backend.clone(),
        f.auth.store.clone(),
        AuthConfig::new("https://app.example", "app")
            .with_argon2(Argon2Config::new(1024, 1, 1))
            .with_limits(limits)
            .with_key_encryption(crate::KeyEncryption::key(
                crate::KeyEncryptionKey::new("sso-suite", [5; 32]).unwrap(),
            )),
    )
    .build()
    .await
    .unwrap();
    let endpoints = OAuth2Endpoints {
        authorize: url::Url::parse("https://gh.example/authorize").unwrap(),
        token: url::Url::parse("https://gh.example/token").unwrap(),
        user: url::Url::parse("https://gh.example/user").unwrap(),
        emails: None,
    };
    let config = SsoConfig::new().with_social(SocialConnection::oauth2(
        "gh",
        "client",
        ClientSecret::new("secret"),
        endpoints,
    ));
    let sso = Sso::new(auth, f.sso.clone(), config).unwrap();
    let request = || StartSignIn {
        target: SignInTarget::Connection("gh".to_owned()),
        return_to: None,
    };
    let noisy = ClientInfo::from_ip("203.0.113.7".parse().unwrap());
    sso.start_for(request(), &noisy).await.unwrap();
    sso.start_for(request(), &noisy).await.unwrap();
    assert!(matches!(
        sso.start_for(request(), &noisy).await,
        Err(SsoError::Auth(Error::RateLimited { .. }))
    ));
    let quiet = ClientInfo::from_ip("203.0.113.8".parse().unwrap());
    sso.start_for(request(), &quiet).await.unwrap();
}
