//! Scenarios of the [`Sso`] service against the simulated identity
//! provider (features `sso` + `testkit-idp`): the flows end to end at the
//! service level, and every attack the provider can stage.

use std::sync::Arc;

use tenancy_core::{
    Actor, AuditContext, AuditLog, AuditQuery, Email, MembershipStore, PageRequest, PageSize,
    RoleName, TenantId, UserId, UserStore,
};

use super::idp::{
    IdpAccount, IdpClient, Misbehaviour, OIDC_AUTHORIZE_PATH, OIDC_DISCOVERY_PATH, OIDC_JWKS_PATH,
    SimulatedIdp,
};
use super::seed;
use super::sso::SsoFixture;
use crate::service::{Auth, AuthConfig};
use crate::sso::{
    Callback, ClientSecret, ConnectionRef, NewEnterpriseConnection, OAuth2Endpoints, SignInTarget,
    SignedIn, SocialConnection, Sso, SsoConfig, SsoError, StartSignIn, actions,
};
use crate::{Argon2Config, ClientInfo, Error};

/// Generates one `#[tokio::test]` per SSO flow scenario. `$fixture` is an
/// expression evaluating to a future of `Option<SsoFixture>`; `None` skips.
#[macro_export]
macro_rules! sso_flow_tests {
    ($fixture:expr) => {
        $crate::sso_flow_tests!(@suites $fixture;
            sso_flow_social_oidc, sso_flow_github, sso_flow_enterprise_jit,
            sso_flow_rejections, sso_flow_linking_rules, sso_flow_seat_limit,
            sso_flow_repointed_connection_forgets_links
        );
    };
    (@suites $fixture:expr; $($suite:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $suite() {
                if let Some(fixture) = $fixture.await {
                    $crate::testkit::sso_flows::$suite(fixture).await;
                }
            }
        )+
    };
}

const APP: &str = "https://app.example";
const CALLBACK: &str = "https://app.example/sso/callback";

struct Setup {
    idp: SimulatedIdp,
    auth: Auth,
    sso: Sso,
}

async fn setup(f: &SsoFixture) -> Setup {
    setup_with(f, None).await
}

async fn setup_with(f: &SsoFixture, seats: Option<Arc<dyn tenancy_core::Seats>>) -> Setup {
    let idp = SimulatedIdp::start().await;
    idp.register_client(IdpClient::new("app", "app-secret", [CALLBACK]));
    let config = SsoConfig::new()
        .allow_private_network(true)
        .with_social(
            SocialConnection::oidc("oidc", idp.issuer(), "app", ClientSecret::new("app-secret"))
                .unwrap(),
        )
        .with_social(SocialConnection::oauth2(
            "gh",
            "app",
            ClientSecret::new("app-secret"),
            OAuth2Endpoints {
                authorize: idp.github_authorize_url().parse().unwrap(),
                token: idp.github_token_url().parse().unwrap(),
                user: idp.github_user_url().parse().unwrap(),
                emails: Some(idp.github_emails_url().parse().unwrap()),
            },
        ));
    let auth = Auth::builder(
        f.auth.backend.clone(),
        f.auth.store.clone(),
        AuthConfig::new(APP, "app")
            .with_argon2(Argon2Config::new(1024, 1, 1))
            .with_key_encryption(crate::KeyEncryption::key(
                crate::KeyEncryptionKey::new("sso-flows", [6; 32]).unwrap(),
            )),
    )
    .password_login_check(Arc::new(crate::sso::SsoPasswordCheck::new(f.sso.clone())));
    let auth = match seats {
        Some(seats) => auth.seats(seats),
        None => auth,
    };
    let auth = auth.build().await.unwrap();
    let sso = Sso::new(auth.clone(), f.sso.clone(), config).unwrap();
    Setup { idp, auth, sso }
}

/// Starts a sign-in, plays the browser at the provider, and finishes with
/// the callback the provider redirected to (or a tampered one).
async fn sign_in(
    s: &Setup,
    target: SignInTarget,
    tamper: impl FnOnce(&mut Callback),
) -> Result<SignedIn, SsoError> {
    sign_in_at(s, &s.idp, target, tamper).await
}

/// [`sign_in`] with the browser at `idp`.
async fn sign_in_at(
    s: &Setup,
    idp: &SimulatedIdp,
    target: SignInTarget,
    tamper: impl FnOnce(&mut Callback),
) -> Result<SignedIn, SsoError> {
    let started = s
        .sso
        .start(StartSignIn {
            target,
            return_to: Some("/home".to_owned()),
        })
        .await?;
    let redirect = idp.authorize(started.authorize_url.as_str());
    assert_eq!(redirect.status, 302, "{redirect:?}");
    assert!(
        redirect
            .location
            .as_deref()
            .is_some_and(|l| l.starts_with(CALLBACK)),
        "{redirect:?}"
    );
    let mut callback = Callback {
        state: redirect.state().unwrap_or_default(),
        code: redirect.code(),
        error: redirect.error(),
        iss: redirect.param("iss"),
        binding: Some(started.binding.expose_secret().to_owned()),
    };
    tamper(&mut callback);
    s.sso.finish(callback, &ClientInfo::default()).await
}

fn social(key: &str) -> SignInTarget {
    SignInTarget::Connection(key.to_owned())
}

async fn actions_of(f: &SsoFixture, tenant: TenantId) -> Vec<String> {
    f.auth
        .backend
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

/// Google-style: the first sign-in creates a verified user with a tenant
/// of their own; the next one finds the same user by the linked identity.
/// The code went with its PKCE verifier and the client authenticated.
pub async fn sso_flow_social_oidc(f: SsoFixture) {
    let s = setup(&f).await;
    s.idp
        .sign_in_as(IdpAccount::new("ada@social.example").with_name("Ada Lovelace"));
    let first = sign_in(&s, social("oidc"), |_| {}).await.unwrap();
    assert!(first.user_created && !first.linked && !first.joined);
    assert_eq!(first.return_to.as_deref(), Some("/home"));
    assert_eq!(first.provider, "social:oidc");
    let user = &first.login.user;
    assert_eq!(user.email.as_str(), "ada@social.example");
    assert!(user.email_verified);
    assert_eq!(
        first.login.membership.roles.as_slice(),
        [RoleName::OWNER],
        "a new user owns their own tenant"
    );
    let tokens = s.idp.token_requests();
    let exchange = tokens.last().unwrap();
    assert_eq!(exchange.param("grant_type"), Some("authorization_code"));
    assert!(
        exchange
            .param("code_verifier")
            .is_some_and(|v| v.len() >= 43)
    );
    assert!(exchange.client_auth.is_some(), "{exchange:?}");
    let authorize = s.idp.requests_to(OIDC_AUTHORIZE_PATH).pop().unwrap();
    assert_eq!(authorize.param("code_challenge_method"), Some("S256"));
    assert!(authorize.param("code_challenge").is_some());
    assert!(authorize.param("nonce").is_some());
    assert_eq!(authorize.param("redirect_uri"), Some(CALLBACK));

    let again = sign_in(&s, social("oidc"), |_| {}).await.unwrap();
    assert!(!again.user_created && !again.linked);
    // Two sign-ins (two starts, two finishes), one discovery and one JWKS
    // fetch: the provider's documents are cached.
    assert_eq!(s.idp.requests_to(OIDC_DISCOVERY_PATH).len(), 1);
    assert_eq!(s.idp.requests_to(OIDC_JWKS_PATH).len(), 1);
    assert_eq!(again.login.user.id, user.id);
    let principal = s
        .auth
        .authenticator()
        .authenticate(crate::Credentials::bearer(&format!(
            "Bearer {}",
            again.login.access_token.token
        )))
        .await
        .unwrap();
    assert_eq!(principal.user_id(), Some(user.id));
    let actions = actions_of(&f, first.login.membership.tenant_id).await;
    for action in [
        actions::USER_CREATED,
        actions::SIGNED_IN,
        crate::actions::LOGIN,
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
}

/// GitHub-style: the verified primary address from `/user/emails` makes
/// the account; an unverified primary is refused; the API got a
/// `User-Agent` and the bearer token.
pub async fn sso_flow_github(f: SsoFixture) {
    let s = setup(&f).await;
    s.idp.sign_in_as(
        IdpAccount::new("grace@gh.example")
            .with_github(4242, "grace")
            .with_extra_email("other@gh.example", true),
    );
    let signed = sign_in(&s, social("gh"), |_| {}).await.unwrap();
    assert!(signed.user_created);
    assert_eq!(signed.login.user.email.as_str(), "grace@gh.example");
    assert_eq!(signed.provider, "social:gh");
    let identity = f
        .sso
        .find_identity("social:gh", "4242")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(identity.user_id, signed.login.user.id);
    let exchange = s.idp.token_requests().pop().unwrap();
    assert!(exchange.param("code_verifier").is_some());

    s.idp.sign_in_as(
        IdpAccount::new("mallory@gh.example")
            .with_github(7, "mallory")
            .unverified(),
    );
    assert!(matches!(
        sign_in(&s, social("gh"), |_| {}).await,
        Err(SsoError::EmailNotVerified)
    ));
    assert!(
        f.auth
            .backend
            .find_user_by_email(&Email::new("mallory@gh.example").unwrap())
            .await
            .unwrap()
            .is_none()
    );
}

async fn enterprise(f: &SsoFixture, s: &Setup, slug: &str, domain: &str) -> (TenantId, UserId) {
    let (tenant, owner) = seed(
        &*f.auth.backend,
        slug,
        &format!("owner@{domain}"),
        &["owner"],
    )
    .await;
    let admin = AuditContext::new(Actor::User(owner.id));
    s.sso.add_domain(tenant.id, domain, &admin).await.unwrap();
    s.sso
        .verify_domain_as_operator(tenant.id, domain, &AuditContext::new(Actor::System))
        .await
        .unwrap();
    s.sso
        .create_connection(
            tenant.id,
            NewEnterpriseConnection {
                name: "Acme IdP".to_owned(),
                issuer: s.idp.issuer().to_owned(),
                client_id: "app".to_owned(),
                client_secret: ClientSecret::new("app-secret"),
                default_role: RoleName::new("member").unwrap(),
                create_users: true,
                enabled: true,
            },
            &admin,
        )
        .await
        .unwrap();
    (tenant.id, owner.id)
}

/// Enterprise: an email of a verified domain routes to the tenant's
/// provider; the new user joins just in time with the default role; an
/// existing verified user is linked and joins; an address outside the
/// tenant's domains is refused; SSO sign-in works while passwords are
/// refused.
pub async fn sso_flow_enterprise_jit(f: SsoFixture) {
    let s = setup(&f).await;
    let (acme, owner) = enterprise(&f, &s, "acme-jit", "jit.example").await;
    s.idp.sign_in_as(IdpAccount::new("carol@jit.example"));
    let carol = sign_in(
        &s,
        SignInTarget::Email("carol@jit.example".to_owned()),
        |_| {},
    )
    .await
    .unwrap();
    assert!(carol.user_created && carol.joined);
    assert_eq!(carol.login.membership.tenant_id, acme);
    // Published: consumers of the outbox hear of the new member.
    let events = f
        .auth
        .backend
        .read_events(acme, tenancy_core::ReplayFrom::Start, 100)
        .await
        .unwrap();
    let joined = events
        .iter()
        .find(|e| e.event_type.as_str() == "member.provisioned")
        .unwrap_or_else(|| panic!("member.provisioned in {events:?}"));
    assert_eq!(joined.data["metadata"]["source"], "sso", "{joined:?}");
    assert_eq!(
        carol.login.membership.roles.as_slice(),
        [RoleName::new("member").unwrap()]
    );
    assert!(matches!(carol.provider.as_str(), p if p.starts_with("enterprise:")));

    // Dave has an account (verified) and a tenant of his own: whoever
    // controls Acme's provider does not get it by asserting his address.
    let (_, dave) = seed(&*f.auth.backend, "dave-own", "dave@jit.example", &["owner"]).await;
    let to_acme = || SignInTarget::Enterprise {
        tenant_id: acme,
        connection: None,
    };
    s.idp.sign_in_as(IdpAccount::new("dave@jit.example"));
    let refused = sign_in(&s, to_acme(), |_| {}).await;
    assert!(
        matches!(refused, Err(SsoError::LinkConfirmationRequired)),
        "{refused:?}"
    );
    assert!(
        f.auth
            .backend
            .find_membership(acme, dave.id)
            .await
            .unwrap()
            .is_none()
    );
    // Nor Acme's owner (roles above the connection's default role).
    s.idp.sign_in_as(IdpAccount::new("owner@jit.example"));
    let refused = sign_in(&s, to_acme(), |_| {}).await;
    assert!(
        matches!(refused, Err(SsoError::LinkConfirmationRequired)),
        "{refused:?}"
    );
    let sub = IdpAccount::new("owner@jit.example").subject;
    let connection = s.sso.connections(acme).await.unwrap().remove(0);
    let key = ConnectionRef::Enterprise {
        tenant_id: acme,
        id: connection.id,
    }
    .provider_key();
    assert!(f.sso.find_identity(&key, &sub).await.unwrap().is_none());

    // Erin is a plain member of Acme and nothing else: linked.
    let at = time::OffsetDateTime::now_utc();
    let erin = tenancy_core::User {
        id: UserId::new(),
        email: Email::new("erin@jit.example").unwrap(),
        display_name: None,
        email_verified: true,
        status: tenancy_core::UserStatus::Active,
        created_at: at,
        updated_at: at,
    };
    f.auth.backend.insert_user(&erin).await.unwrap();
    f.auth
        .backend
        .insert_membership(&tenancy_core::Membership {
            id: tenancy_core::MembershipId::new(),
            tenant_id: acme,
            user_id: erin.id,
            roles: tenancy_core::RoleSet::parse(["member"]).unwrap(),
            status: tenancy_core::MembershipStatus::Active,
            created_at: at,
            updated_at: at,
        })
        .await
        .unwrap();
    s.idp.sign_in_as(IdpAccount::new("erin@jit.example"));
    let linked = sign_in(&s, to_acme(), |_| {}).await.unwrap();
    assert!(linked.linked && !linked.joined && !linked.user_created);
    assert_eq!(linked.login.user.id, erin.id);
    // Erin is later invited elsewhere: her SSO session speaks for Acme
    // only and does not switch there without a fresh sign-in.
    let (beta, _) = seed(
        &*f.auth.backend,
        "beta-jit",
        "erin@jit.example",
        &["member"],
    )
    .await;
    let principal = s
        .auth
        .authenticator()
        .authenticate(crate::Credentials::bearer(&format!(
            "Bearer {}",
            linked.login.access_token.token
        )))
        .await
        .unwrap();
    let switched = s
        .auth
        .switch_tenant(&principal, beta.id, &ClientInfo::default())
        .await;
    assert!(
        matches!(switched, Err(Error::ReauthenticationRequired)),
        "{switched:?}"
    );
    // The tenant's provider does not speak for other domains.
    s.idp.sign_in_as(IdpAccount::new("eve@elsewhere.example"));
    assert!(matches!(
        sign_in(
            &s,
            SignInTarget::Enterprise {
                tenant_id: acme,
                connection: None
            },
            |_| {}
        )
        .await,
        Err(SsoError::DomainMismatch)
    ));

    let policy = crate::sso::SsoPolicy { require_sso: true };
    s.sso
        .set_policy(acme, policy, &AuditContext::new(Actor::User(owner)))
        .await
        .unwrap();
    s.idp.sign_in_as(IdpAccount::new("carol@jit.example"));
    let again = sign_in(
        &s,
        SignInTarget::Email("carol@jit.example".to_owned()),
        |_| {},
    )
    .await
    .unwrap();
    assert!(!again.joined && !again.user_created);
    // Carol's address is of the tenant's domain: no social sign-in.
    let social_entry = sign_in(&s, social("oidc"), |_| {}).await;
    assert!(
        matches!(social_entry, Err(SsoError::UseOrganizationSso)),
        "{social_entry:?}"
    );
    // Neither does a social provider open the tenant that requires its
    // own for a member whose address is elsewhere.
    s.idp.sign_in_as(IdpAccount::new("zed@elsewhere.example"));
    let zed = sign_in(&s, social("oidc"), |_| {}).await.unwrap();
    f.auth
        .backend
        .delete_membership(zed.login.membership.tenant_id, zed.login.membership.id)
        .await
        .unwrap();
    f.auth
        .backend
        .insert_membership(&tenancy_core::Membership {
            id: tenancy_core::MembershipId::new(),
            tenant_id: acme,
            user_id: zed.login.user.id,
            roles: tenancy_core::RoleSet::parse(["member"]).unwrap(),
            status: tenancy_core::MembershipStatus::Active,
            created_at: time::OffsetDateTime::now_utc() - time::Duration::days(1),
            updated_at: time::OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
    let social_entry = sign_in(&s, social("oidc"), |_| {}).await;
    assert!(
        matches!(&social_entry, Err(SsoError::Auth(Error::SsoRequired { tenant_id })) if *tenant_id == acme),
        "{social_entry:?}"
    );
    assert!(
        f.sso
            .find_identity("social:oidc", &IdpAccount::new("carol@jit.example").subject)
            .await
            .unwrap()
            .is_none(),
        "nothing linked"
    );
    let actions = actions_of(&f, acme).await;
    for action in [
        actions::MEMBER_PROVISIONED,
        actions::IDENTITY_LINKED,
        actions::SIGNED_IN,
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
}

/// Every attack the provider or a third party can stage fails, and each
/// failure is the typed error that says why.
pub async fn sso_flow_rejections(f: SsoFixture) {
    let s = setup(&f).await;
    let account = IdpAccount::new("ada@reject.example");
    s.idp.sign_in_as(account.clone());

    // Forged or foreign state, missing binding (another browser).
    let forged = sign_in(&s, social("oidc"), |c| c.state = "forged".to_owned()).await;
    assert!(matches!(forged, Err(SsoError::InvalidState)), "{forged:?}");
    let other_browser = sign_in(&s, social("oidc"), |c| c.binding = None).await;
    assert!(
        matches!(other_browser, Err(SsoError::InvalidState)),
        "{other_browser:?}"
    );
    let mix_up = sign_in(&s, social("oidc"), |c| {
        c.iss = Some("https://evil.example".to_owned())
    })
    .await;
    assert!(matches!(mix_up, Err(SsoError::InvalidState)), "{mix_up:?}");

    // RFC 9207: the provider advertises `iss` in authorization responses,
    // so a response without it (a mix-up stripped it) is refused.
    let stripped = sign_in(&s, social("oidc"), |c| c.iss = None).await;
    assert!(
        matches!(stripped, Err(SsoError::InvalidState)),
        "{stripped:?}"
    );

    // A state is single use.
    let started = s
        .sso
        .start(StartSignIn {
            target: social("oidc"),
            return_to: None,
        })
        .await
        .unwrap();
    let redirect = s.idp.authorize(started.authorize_url.as_str());
    let callback = Callback {
        state: redirect.state().unwrap(),
        code: redirect.code(),
        error: None,
        iss: redirect.param("iss"),
        binding: Some(started.binding.expose_secret().to_owned()),
    };
    s.sso
        .finish(callback.clone(), &ClientInfo::default())
        .await
        .unwrap();
    assert!(matches!(
        s.sso.finish(callback.clone(), &ClientInfo::default()).await,
        Err(SsoError::InvalidState)
    ));

    // A spent code under a fresh state: the provider refuses it.
    let code = callback.code.clone();
    let replay = sign_in(&s, social("oidc"), |c| c.code = code).await;
    assert!(
        matches!(replay, Err(SsoError::CodeExchange(_))),
        "{replay:?}"
    );

    for (name, misbehaviour) in [
        ("wrong nonce", Misbehaviour::wrong_nonce()),
        ("missing nonce", Misbehaviour::omit_nonce()),
        ("foreign key", Misbehaviour::foreign_signing_key()),
        ("unsigned", Misbehaviour::unsigned_id_token()),
        ("wrong iss", Misbehaviour::wrong_issuer()),
        ("wrong aud", Misbehaviour::wrong_audience()),
        ("expired", Misbehaviour::expired_id_token()),
    ] {
        s.idp.misbehave(misbehaviour);
        let jwks_before = s.idp.requests_to(OIDC_JWKS_PATH).len();
        let result = sign_in(&s, social("oidc"), |_| {}).await;
        assert!(
            matches!(result, Err(SsoError::InvalidIdToken(_))),
            "{name}: {result:?}"
        );
        if name == "foreign key" {
            // An unknown key makes the cached JWKS be fetched again, once.
            assert_eq!(s.idp.requests_to(OIDC_JWKS_PATH).len(), jwks_before + 1);
        }
    }
    s.idp.misbehave(Misbehaviour::wrong_response_iss());
    let result = sign_in(&s, social("oidc"), |_| {}).await;
    assert!(matches!(result, Err(SsoError::InvalidState)), "{result:?}");
    s.idp
        .misbehave(Misbehaviour::authorize_error("access_denied"));
    let result = sign_in(&s, social("oidc"), |_| {}).await;
    assert!(
        matches!(&result, Err(SsoError::ProviderRefused { error }) if error == "access_denied"),
        "{result:?}"
    );
    s.idp.misbehave(Misbehaviour::none());

    // Without a verified email nothing is created.
    s.idp
        .sign_in_as(IdpAccount::new("unverified@reject.example").unverified());
    let result = sign_in(&s, social("oidc"), |_| {}).await;
    assert!(
        matches!(result, Err(SsoError::EmailNotVerified)),
        "{result:?}"
    );
}

/// Linking happens only on an address the provider vouches for and the
/// account proved; a social sign-up is refused where registration is
/// closed to it.
pub async fn sso_flow_linking_rules(f: SsoFixture) {
    let s = setup(&f).await;
    // A verified local account: linked by a verified provider address.
    let (_, ada) = seed(&*f.auth.backend, "ada-link", "ada@link.example", &["owner"]).await;
    s.idp.sign_in_as(IdpAccount::new("ada@link.example"));
    let linked = sign_in(&s, social("oidc"), |_| {}).await.unwrap();
    assert!(linked.linked && !linked.user_created);
    assert_eq!(linked.login.user.id, ada.id);

    // The provider does not vouch for the address: no link.
    let (_, bob) = seed(&*f.auth.backend, "bob-link", "bob@link.example", &["owner"]).await;
    s.idp.sign_in_as(
        IdpAccount::new("bob@link.example")
            .with_subject("999")
            .unverified(),
    );
    let result = sign_in(&s, social("oidc"), |_| {}).await;
    assert!(
        matches!(result, Err(SsoError::EmailNotVerified)),
        "{result:?}"
    );

    // A local account that never proved its address (a squatter could
    // have registered it first): no link either.
    let mut squatted = f.auth.backend.get_user(bob.id).await.unwrap();
    squatted.email_verified = false;
    f.auth.backend.update_user(&squatted).await.unwrap();
    s.idp
        .sign_in_as(IdpAccount::new("bob@link.example").with_subject("1000"));
    let result = sign_in(&s, social("oidc"), |_| {}).await;
    assert!(
        matches!(result, Err(SsoError::EmailNotVerified)),
        "{result:?}"
    );
    assert!(
        f.sso
            .find_identity("social:oidc", "1000")
            .await
            .unwrap()
            .is_none()
    );
    let _ = ConnectionRef::Social(String::new());
}

struct TwoSeats;

#[async_trait::async_trait]
impl tenancy_core::Seats for TwoSeats {
    async fn seat_limit(
        &self,
        _tenant_id: TenantId,
    ) -> Result<Option<u64>, tenancy_core::StoreError> {
        Ok(Some(2))
    }
}

/// Just-in-time members take seats like invited ones: past the tenant's
/// limit the sign-in is refused and no membership is written.
pub async fn sso_flow_seat_limit(f: SsoFixture) {
    let s = setup_with(&f, Some(Arc::new(TwoSeats))).await;
    let (acme, _) = enterprise(&f, &s, "acme-seats", "seats.example").await;
    s.idp.sign_in_as(IdpAccount::new("carol@seats.example"));
    let carol = sign_in(
        &s,
        SignInTarget::Email("carol@seats.example".to_owned()),
        |_| {},
    )
    .await
    .unwrap();
    assert!(carol.joined);
    s.idp.sign_in_as(IdpAccount::new("dan@seats.example"));
    let result = sign_in(
        &s,
        SignInTarget::Email("dan@seats.example".to_owned()),
        |_| {},
    )
    .await;
    assert!(
        matches!(
            result,
            Err(SsoError::Auth(Error::Directory(
                tenancy_core::DirectoryError::SeatLimitReached { limit: 2 }
            )))
        ),
        "{result:?}"
    );
    assert!(
        f.auth
            .backend
            .find_user_by_email(&Email::new("dan@seats.example").unwrap())
            .await
            .unwrap()
            .is_none(),
        "nothing written"
    );
    let members = f
        .auth
        .backend
        .list_members(acme, &PageRequest::first(PageSize::MAX))
        .await
        .unwrap();
    assert_eq!(members.items.len(), 2);
}

/// A connection repointed at another issuer forgets the identities linked
/// through it: the new provider's `sub` 42 is not the old provider's 42.
/// Deleting a connection forgets them too.
pub async fn sso_flow_repointed_connection_forgets_links(f: SsoFixture) {
    let s = setup(&f).await;
    let (acme, owner) = enterprise(&f, &s, "acme-repoint", "repoint.example").await;
    let to_acme = || SignInTarget::Enterprise {
        tenant_id: acme,
        connection: None,
    };
    s.idp
        .sign_in_as(IdpAccount::new("ada@repoint.example").with_subject("42"));
    let ada = sign_in(&s, to_acme(), |_| {}).await.unwrap();
    assert!(ada.user_created);
    let connection = s.sso.connections(acme).await.unwrap().remove(0);
    let key = ConnectionRef::Enterprise {
        tenant_id: acme,
        id: connection.id,
    }
    .provider_key();
    assert!(f.sso.find_identity(&key, "42").await.unwrap().is_some());

    let other = SimulatedIdp::start().await;
    other.register_client(IdpClient::new("app", "app-secret", [CALLBACK]));
    let admin = AuditContext::new(Actor::User(owner));
    s.sso
        .update_connection(
            acme,
            connection.id,
            crate::sso::ConnectionUpdate {
                issuer: Some(other.issuer().to_owned()),
                ..Default::default()
            },
            &admin,
        )
        .await
        .unwrap();
    assert!(f.sso.find_identity(&key, "42").await.unwrap().is_none());
    other.sign_in_as(IdpAccount::new("bob@repoint.example").with_subject("42"));
    let bob = sign_in_at(&s, &other, to_acme(), |_| {}).await.unwrap();
    assert_ne!(bob.login.user.id, ada.login.user.id);
    assert_eq!(bob.login.user.email.as_str(), "bob@repoint.example");

    s.sso
        .delete_connection(acme, connection.id, &admin)
        .await
        .unwrap();
    assert!(f.sso.find_identity(&key, "42").await.unwrap().is_none());
}
