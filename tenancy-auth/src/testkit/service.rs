//! Suites for the [`Auth`] service and the [`Authenticator`](crate::Authenticator).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tenancy_core::{
    ActionFilter, AuditContext, AuditLog, AuditQuery, BoxError, Email, ManualClock, NewTenant,
    NewUser, PageRequest, PageSize, RoleName, RoleSet, Slug, TenantId, TenantName, TenantStatus,
    TenantStore, UserStatus, UserStore,
};
use time::Duration;

use super::{Fixture, now};
use crate::api_key::{NewApiKey, Scope};
use crate::authenticator::Credentials;
use crate::error::{ApiKeyRejection, AuthError, Error, TokenRejection};
use crate::key_encryption::{KeyEncryption, KeyEncryptionKey, StoredPrivateKey};
use crate::keys::{KeyAlgorithm, KeyError, StoredKey};
use crate::limits::AbuseLimits;
use crate::lockout::ThrottleRule;
use crate::one_time::{Mail, Mailer, TokenPurpose};
use crate::password::{Argon2Config, Password, PasswordHasher, PasswordRejected};
use crate::principal::{AuthMethod, Subject};
use crate::service::{
    Auth, AuthConfig, ConfigError, LoginRequest, LoginSuccess, Registration, actions,
};
use crate::session::ClientInfo;
use crate::token::TokenConfig;

/// A mailer that keeps what it is asked to send.
#[derive(Default)]
struct Outbox(Mutex<Vec<Mail>>);

#[async_trait]
impl Mailer for Outbox {
    async fn send(&self, mail: Mail) -> Result<(), BoxError> {
        self.0.lock().unwrap().push(mail);
        Ok(())
    }
}

impl Outbox {
    fn take(&self) -> Vec<Mail> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

struct Harness {
    auth: Auth,
    clock: Arc<ManualClock>,
    outbox: Arc<Outbox>,
    fixture: Fixture,
}

const PASSWORD: &str = "correct horse battery";

/// The key-encryption key every harness of a suite shares, so replicas
/// read each other's signing keys.
fn suite_kek() -> KeyEncryptionKey {
    KeyEncryptionKey::new("suite-1", [7; 32]).unwrap()
}

fn config() -> AuthConfig {
    AuthConfig::new("https://auth.test", "tenancy-tests")
        .with_argon2(Argon2Config::new(1024, 1, 1))
        .with_key_encryption(KeyEncryption::key(suite_kek()))
}

async fn harness_with(fixture: Fixture, tweak: impl FnOnce(&mut AuthConfig)) -> Harness {
    let mut config = config();
    tweak(&mut config);
    let clock = Arc::new(ManualClock::new(now()));
    let outbox = Arc::new(Outbox::default());
    let auth = Auth::builder(fixture.backend.clone(), fixture.store.clone(), config)
        .clock(clock.clone())
        .mailer(outbox.clone())
        .build()
        .await
        .unwrap();
    Harness {
        auth,
        clock,
        outbox,
        fixture,
    }
}

async fn harness(fixture: Fixture) -> Harness {
    harness_with(fixture, |_| {}).await
}

fn client() -> ClientInfo {
    ClientInfo::from_ip("192.0.2.44".parse().unwrap()).with_user_agent("suite/1.0")
}

async fn register(h: &Harness, slug: &str, email: &str) -> LoginSuccess {
    h.auth
        .register(
            Registration {
                user: NewUser::new(Email::new(email).unwrap()),
                password: Password::new(PASSWORD),
                tenant: NewTenant::new(Slug::new(slug).unwrap(), TenantName::new(slug).unwrap()),
            },
            &client(),
        )
        .await
        .unwrap()
}

fn login_request(email: &str, password: &str, tenant: Option<TenantId>) -> LoginRequest {
    LoginRequest {
        email: email.to_owned(),
        password: Password::new(password),
        tenant,
    }
}

async fn login(h: &Harness, email: &str, tenant: Option<TenantId>) -> LoginSuccess {
    h.auth
        .login(login_request(email, PASSWORD, tenant), &client())
        .await
        .unwrap()
}

async fn verify(h: &Harness, token: &str) -> Result<Arc<crate::principal::Principal>, AuthError> {
    h.auth
        .authenticator()
        .authenticate(Credentials::bearer(&format!("Bearer {token}")))
        .await
}

fn token_rejection(result: Result<Arc<crate::principal::Principal>, AuthError>) -> TokenRejection {
    match result {
        Err(AuthError::InvalidToken(rejection)) => rejection,
        other => panic!("expected a token rejection, got {other:?}"),
    }
}

fn key_rejection(result: Result<Arc<crate::principal::Principal>, AuthError>) -> ApiKeyRejection {
    match result {
        Err(AuthError::InvalidApiKey(rejection)) => rejection,
        other => panic!("expected an api key rejection, got {other:?}"),
    }
}

macro_rules! assert_err {
    ($result:expr, $pattern:pat $(if $guard:expr)?) => {
        match $result {
            Err($pattern) $(if $guard)? => {}
            other => panic!("expected {}, got {other:?}", stringify!($pattern)),
        }
    };
}

async fn actions_in(h: &Harness, tenant: TenantId, action: &str) -> usize {
    h.fixture
        .backend
        .query_audit(
            tenant,
            &AuditQuery::all().action(ActionFilter::parse(action).unwrap()),
            &PageRequest::first(PageSize::MAX),
        )
        .await
        .unwrap()
        .items
        .len()
}

/// Registration, login, the policy, equal work for unknown accounts,
/// lockout per account and per client, rehashing, disabled accounts.
pub async fn service_login_and_lockout(f: Fixture) {
    let h = harness_with(f, |c| c.lockout.client.max_failures = 8).await;
    let ada = register(&h, "acme", "ada@acme.test").await;
    let tenant = ada.membership.tenant_id;
    let principal = verify(&h, &ada.access_token.token).await.unwrap();
    assert_eq!(principal.subject, Subject::User(ada.user.id));
    assert_eq!(principal.tenant_id, tenant);
    assert_eq!(principal.roles, vec![RoleName::OWNER]);
    assert_eq!(principal.session_id, Some(ada.session.id));
    assert_eq!(principal.method, AuthMethod::AccessToken);

    let ok = login(&h, "ADA@acme.test", None).await;
    assert_eq!(ok.membership.tenant_id, tenant);
    assert_eq!(actions_in(&h, tenant, actions::LOGIN).await, 2);

    // Refused passwords at registration.
    for (password, rejected) in [
        ("short", PasswordRejected::TooShort { min: 10 }),
        ("1234567890", PasswordRejected::Common),
        ("bea@beta.test", PasswordRejected::EqualsEmail),
    ] {
        assert_err!(
            h.auth
                .register(
                    Registration {
                        user: NewUser::new(Email::new("bea@beta.test").unwrap()),
                        password: Password::new(password),
                        tenant: NewTenant::new(Slug::new("beta").unwrap(), TenantName::new("Beta").unwrap()),
                    },
                    &client(),
                )
                .await,
            Error::WeakPassword(r) if r == rejected
        );
    }

    // Wrong password, unknown email and malformed email: one answer, one verification each.
    for (email, password) in [
        ("ada@acme.test", "wrong password!"),
        ("nobody@acme.test", PASSWORD),
        ("not an email", PASSWORD),
    ] {
        let before = h.auth.hasher().verifications();
        assert_err!(
            h.auth
                .login(login_request(email, password, None), &client())
                .await,
            Error::InvalidCredentials
        );
        assert_eq!(h.auth.hasher().verifications(), before + 1, "{email}");
    }
    // Over-long input is refused before any hashing.
    let before = h.auth.hasher().verifications();
    assert_err!(
        h.auth
            .login(
                login_request("ada@acme.test", &"x".repeat(300), None),
                &client()
            )
            .await,
        Error::InvalidCredentials
    );
    assert_eq!(h.auth.hasher().verifications(), before);

    // Five failures in the window lock the account (one failure is counted above).
    for _ in 0..3 {
        assert_err!(
            h.auth
                .login(
                    login_request("ada@acme.test", "wrong password!", None),
                    &client()
                )
                .await,
            Error::InvalidCredentials
        );
    }
    let until = match h
        .auth
        .login(
            login_request("ada@acme.test", "wrong password!", None),
            &client(),
        )
        .await
    {
        Err(Error::AccountLocked { until }) => until,
        other => panic!("expected a lock, got {other:?}"),
    };
    assert_eq!(until, h.clock_now() + Duration::minutes(15));
    assert_err!(
        h.auth
            .login(login_request("ada@acme.test", PASSWORD, None), &client())
            .await,
        Error::AccountLocked { .. }
    );
    assert_eq!(actions_in(&h, tenant, actions::ACCOUNT_LOCKED).await, 1);
    h.clock.advance(Duration::minutes(16));
    login(&h, "ada@acme.test", None).await;
    assert_eq!(actions_in(&h, tenant, actions::ACCOUNT_UNLOCKED).await, 1);

    // An address without an account locks the same way.
    for _ in 0..4 {
        assert_err!(
            h.auth
                .login(login_request("ghost@acme.test", PASSWORD, None), &client())
                .await,
            Error::InvalidCredentials
        );
    }
    assert_err!(
        h.auth
            .login(login_request("ghost@acme.test", PASSWORD, None), &client())
            .await,
        Error::AccountLocked { .. }
    );

    // Eight failures from one client block it, for any account.
    let noisy = ClientInfo::from_ip("192.0.2.99".parse().unwrap());
    for i in 0..7 {
        assert_err!(
            h.auth
                .login(
                    login_request(&format!("probe{i}@acme.test"), PASSWORD, None),
                    &noisy
                )
                .await,
            Error::InvalidCredentials
        );
    }
    assert_err!(
        h.auth
            .login(login_request("carl@acme.test", PASSWORD, None), &noisy)
            .await,
        Error::InvalidCredentials
    );
    assert_err!(
        h.auth
            .login(login_request("ada@acme.test", PASSWORD, None), &noisy)
            .await,
        Error::ClientThrottled { .. }
    );
    let elsewhere = ClientInfo::from_ip("192.0.2.45".parse().unwrap());
    h.auth
        .login(login_request("ada@acme.test", PASSWORD, None), &elsewhere)
        .await
        .unwrap();

    // A hash made with weaker parameters is upgraded at login.
    let weak = PasswordHasher::new(Argon2Config {
        memory_kib: 512,
        iterations: 1,
        parallelism: 1,
    })
    .unwrap();
    let old = weak.hash(&Password::new(PASSWORD)).await.unwrap();
    h.fixture
        .store
        .set_password_hash(ada.user.id, &old, now())
        .await
        .unwrap();
    h.auth
        .login(login_request("ada@acme.test", PASSWORD, None), &elsewhere)
        .await
        .unwrap();
    let upgraded = h
        .fixture
        .store
        .password_hash(ada.user.id)
        .await
        .unwrap()
        .unwrap();
    assert!(upgraded.as_str().contains("m=1024"), "not rehashed");

    let mut disabled = h.fixture.backend.get_user(ada.user.id).await.unwrap();
    disabled.status = UserStatus::Disabled;
    h.fixture.backend.update_user(&disabled).await.unwrap();
    assert_err!(
        h.auth
            .login(login_request("ada@acme.test", PASSWORD, None), &elsewhere)
            .await,
        Error::AccountDisabled
    );
}

impl Harness {
    fn clock_now(&self) -> time::OffsetDateTime {
        use tenancy_core::Clock as _;
        tenancy_core::truncate_to_micros(self.clock.now())
    }
}

/// Refresh rotation, reuse detection, logout, session listing and limits,
/// idle expiry, roles read afresh.
pub async fn service_refresh_and_sessions(f: Fixture) {
    let h = harness_with(f, |c| c.sessions.max_per_user = 3).await;
    let ada = register(&h, "sessions", "ada@sessions.test").await;
    let tenant = ada.membership.tenant_id;

    let refreshed = h
        .auth
        .refresh(ada.refresh_token.expose_secret(), &client())
        .await
        .unwrap();
    assert_eq!(refreshed.session.id, ada.session.id);
    assert_ne!(
        refreshed.refresh_token.expose_secret(),
        ada.refresh_token.expose_secret()
    );
    verify(&h, &refreshed.access_token.token).await.unwrap();
    assert_err!(
        h.auth.refresh("rt_garbage", &client()).await,
        Error::InvalidRefreshToken
    );

    // Presenting the spent token again revokes the whole session.
    assert_err!(
        h.auth
            .refresh(ada.refresh_token.expose_secret(), &client())
            .await,
        Error::RefreshTokenReused
    );
    assert_err!(
        h.auth
            .refresh(refreshed.refresh_token.expose_secret(), &client())
            .await,
        Error::SessionInactive
    );
    assert_eq!(
        token_rejection(verify(&h, &refreshed.access_token.token).await),
        TokenRejection::Revoked
    );
    assert_eq!(
        actions_in(&h, tenant, actions::REFRESH_TOKEN_REUSED).await,
        1
    );

    // Logout ends the session for access and refresh tokens alike.
    let second = login(&h, "ada@sessions.test", None).await;
    let principal = verify(&h, &second.access_token.token).await.unwrap();
    h.auth.logout(&principal, &client()).await.unwrap();
    assert_eq!(
        token_rejection(verify(&h, &second.access_token.token).await),
        TokenRejection::Revoked
    );
    assert_err!(
        h.auth
            .refresh(second.refresh_token.expose_secret(), &client())
            .await,
        Error::SessionInactive
    );
    assert_eq!(actions_in(&h, tenant, actions::LOGOUT).await, 1);

    // A refresh token alone ends its session too; an ended one stays ended.
    let third = login(&h, "ada@sessions.test", None).await;
    let renewed = h
        .auth
        .refresh(third.refresh_token.expose_secret(), &client())
        .await
        .unwrap();
    h.auth
        .logout_with_refresh_token(renewed.refresh_token.expose_secret(), &client())
        .await
        .unwrap();
    assert_eq!(
        token_rejection(verify(&h, &renewed.access_token.token).await),
        TokenRejection::Revoked
    );
    assert_err!(
        h.auth
            .refresh(renewed.refresh_token.expose_secret(), &client())
            .await,
        Error::SessionInactive
    );
    h.auth
        .logout_with_refresh_token(renewed.refresh_token.expose_secret(), &client())
        .await
        .unwrap();
    assert_eq!(actions_in(&h, tenant, actions::LOGOUT).await, 2);

    // A spent token ends its session too, but as the theft it betrays.
    let fourth = login(&h, "ada@sessions.test", None).await;
    let successor = h
        .auth
        .refresh(fourth.refresh_token.expose_secret(), &client())
        .await
        .unwrap();
    assert_err!(
        h.auth
            .logout_with_refresh_token(fourth.refresh_token.expose_secret(), &client())
            .await,
        Error::RefreshTokenReused
    );
    assert_eq!(
        token_rejection(verify(&h, &successor.access_token.token).await),
        TokenRejection::Revoked
    );
    assert_eq!(
        actions_in(&h, tenant, actions::REFRESH_TOKEN_REUSED).await,
        2
    );
    assert_eq!(actions_in(&h, tenant, actions::LOGOUT).await, 2);
    for garbage in ["rt_garbage", "not a token"] {
        assert_err!(
            h.auth.logout_with_refresh_token(garbage, &client()).await,
            Error::InvalidRefreshToken
        );
    }
    let unknown = crate::SecretToken::generate(crate::session::REFRESH_PREFIX);
    assert_err!(
        h.auth
            .logout_with_refresh_token(unknown.expose_secret(), &client())
            .await,
        Error::InvalidRefreshToken
    );

    // Listing, revoking one, the per-user limit, revoking all.
    let s1 = login(&h, "ada@sessions.test", None).await;
    h.clock.advance(Duration::seconds(1));
    let s2 = login(&h, "ada@sessions.test", None).await;
    let listed: Vec<_> = h
        .auth
        .list_sessions(ada.user.id)
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, vec![s2.session.id, s1.session.id]);
    let bob = register(&h, "bobs", "bob@sessions.test").await;
    assert_err!(
        h.auth.revoke_session(bob.user.id, s1.session.id).await,
        Error::SessionNotFound
    );
    h.auth
        .revoke_session(ada.user.id, s1.session.id)
        .await
        .unwrap();
    assert_eq!(
        token_rejection(verify(&h, &s1.access_token.token).await),
        TokenRejection::Revoked
    );
    h.clock.advance(Duration::seconds(1));
    let s3 = login(&h, "ada@sessions.test", None).await;
    h.clock.advance(Duration::seconds(1));
    let s4 = login(&h, "ada@sessions.test", None).await;
    h.clock.advance(Duration::seconds(1));
    let s5 = login(&h, "ada@sessions.test", None).await;
    assert_eq!(
        token_rejection(verify(&h, &s2.access_token.token).await),
        TokenRejection::Revoked
    );
    let listed: Vec<_> = h
        .auth
        .list_sessions(ada.user.id)
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, vec![s5.session.id, s4.session.id, s3.session.id]);
    assert_eq!(h.auth.revoke_all_sessions(ada.user.id).await.unwrap(), 3);
    assert_eq!(
        token_rejection(verify(&h, &s4.access_token.token).await),
        TokenRejection::Revoked
    );

    // Roles are read afresh at each refresh.
    let scope = h
        .auth
        .directory()
        .scope(bob.membership.tenant_id)
        .await
        .unwrap();
    let carol = h
        .auth
        .directory()
        .invite(
            &scope,
            Email::new("carol@sessions.test").unwrap(),
            RoleSet::single(RoleName::MEMBER),
            &AuditContext::system(),
        )
        .await
        .unwrap();
    let joined = h
        .auth
        .directory()
        .accept_invitation(
            &carol.token,
            tenancy_core::Acceptor::NewUser { display_name: None },
            &AuditContext::system(),
        )
        .await
        .unwrap();
    h.auth
        .set_password(&joined.user, &Password::new(PASSWORD))
        .await
        .unwrap();
    let carol_login = login(&h, "carol@sessions.test", None).await;
    h.auth
        .directory()
        .change_roles(
            &scope,
            joined.user.id,
            RoleSet::single(RoleName::ADMIN),
            &AuditContext::system(),
        )
        .await
        .unwrap();
    let renewed = h
        .auth
        .refresh(carol_login.refresh_token.expose_secret(), &client())
        .await
        .unwrap();
    assert_eq!(
        verify(&h, &renewed.access_token.token).await.unwrap().roles,
        vec![RoleName::ADMIN]
    );

    // Idle sessions end.
    h.clock
        .advance(h.auth.config().sessions.idle_timeout + Duration::seconds(1));
    assert_err!(
        h.auth
            .refresh(renewed.refresh_token.expose_secret(), &client())
            .await,
        Error::SessionInactive
    );
}

/// Two clients refresh with the same token at once: exactly one wins; the
/// other is answered as the documented reuse, which revokes the session
/// (the winner's new tokens with it) and is audited.
pub async fn service_refresh_race(f: Fixture) {
    let h = harness(f).await;
    let ada = register(&h, "racers", "ada@race.test").await;
    let tenant = ada.membership.tenant_id;
    for round in 1..=5 {
        let session = login(&h, "ada@race.test", None).await;
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let auth = h.auth.clone();
                let barrier = Arc::clone(&barrier);
                let token = session.refresh_token.expose_secret().to_owned();
                tokio::spawn(async move {
                    barrier.wait().await;
                    auth.refresh(&token, &client()).await
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut losers = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(success) => winners.push(success),
                Err(Error::RefreshTokenReused) => losers += 1,
                Err(other) => panic!("unexpected error {other:?}"),
            }
        }
        assert_eq!((winners.len(), losers), (1, 1), "round {round}");
        let winner = winners.pop().unwrap();
        assert_eq!(
            token_rejection(verify(&h, &winner.access_token.token).await),
            TokenRejection::Revoked
        );
        assert_err!(
            h.auth
                .refresh(winner.refresh_token.expose_secret(), &client())
                .await,
            Error::SessionInactive
        );
        assert_eq!(
            actions_in(&h, tenant, actions::REFRESH_TOKEN_REUSED).await,
            round
        );
    }
}

/// Switching tenants needs an active membership in an active tenant;
/// removing a member or suspending a tenant ends the sessions there.
pub async fn service_tenant_access(f: Fixture) {
    let h = harness(f).await;
    let ada = register(&h, "alpha", "ada@tenants.test").await;
    let alpha = ada.membership.tenant_id;
    let bea = register(&h, "beta", "bea@tenants.test").await;
    let beta = bea.membership.tenant_id;
    let gamma = register(&h, "gamma", "gus@tenants.test")
        .await
        .membership
        .tenant_id;
    let directory = h.auth.directory();
    let beta_scope = directory.scope(beta).await.unwrap();
    let invited = directory
        .invite(
            &beta_scope,
            ada.user.email.clone(),
            RoleSet::single(RoleName::MEMBER),
            &AuditContext::system(),
        )
        .await
        .unwrap();
    directory
        .accept_invitation(
            &invited.token,
            tenancy_core::Acceptor::User(ada.user.id),
            &AuditContext::system(),
        )
        .await
        .unwrap();

    let principal = verify(&h, &ada.access_token.token).await.unwrap();
    // Switching is no re-authentication: the new session keeps when the
    // user signed in (OIDC auth_time, max_age) and the absolute end.
    h.clock.advance(Duration::minutes(5));
    let switched = h
        .auth
        .switch_tenant(&principal, beta, &client())
        .await
        .unwrap();
    let sessions = h.auth.list_sessions(ada.user.id).await.unwrap();
    let origin = sessions
        .iter()
        .find(|s| Some(s.id) == principal.session_id)
        .unwrap();
    let continued = sessions
        .iter()
        .find(|s| s.id == switched.session.id)
        .unwrap();
    assert_eq!(continued.created_at, origin.created_at);
    assert_eq!(continued.absolute_expires_at, origin.absolute_expires_at);
    let in_beta = verify(&h, &switched.access_token.token).await.unwrap();
    assert_eq!(in_beta.tenant_id, beta);
    assert_eq!(in_beta.roles, vec![RoleName::MEMBER]);
    assert_err!(
        h.auth.switch_tenant(&principal, gamma, &client()).await,
        Error::NotAMember
    );
    assert_err!(
        h.auth
            .switch_tenant(&principal, TenantId::new(), &client())
            .await,
        Error::NotAMember
    );

    // Suspending beta ends every session in it.
    h.auth
        .suspend_tenant(beta, &AuditContext::system())
        .await
        .unwrap();
    assert_eq!(
        token_rejection(verify(&h, &switched.access_token.token).await),
        TokenRejection::Revoked
    );
    assert_eq!(
        token_rejection(verify(&h, &bea.access_token.token).await),
        TokenRejection::Revoked
    );
    verify(&h, &ada.access_token.token).await.unwrap();
    assert_err!(
        h.auth.switch_tenant(&principal, beta, &client()).await,
        Error::TenantNotActive {
            status: TenantStatus::Suspended
        }
    );
    assert_err!(
        h.auth
            .login(
                login_request("ada@tenants.test", PASSWORD, Some(beta)),
                &client()
            )
            .await,
        Error::TenantNotActive { .. }
    );
    // Bea's only tenant is suspended: she has nowhere to log in.
    assert_err!(
        h.auth
            .login(login_request("bea@tenants.test", PASSWORD, None), &client())
            .await,
        Error::NotAMember
    );

    // Removing a member ends their sessions in that tenant only.
    let alpha_scope = directory.scope(alpha).await.unwrap();
    let invited = directory
        .invite(
            &alpha_scope,
            Email::new("cid@tenants.test").unwrap(),
            RoleSet::single(RoleName::MEMBER),
            &AuditContext::system(),
        )
        .await
        .unwrap();
    let cid = directory
        .accept_invitation(
            &invited.token,
            tenancy_core::Acceptor::NewUser { display_name: None },
            &AuditContext::system(),
        )
        .await
        .unwrap();
    h.auth
        .set_password(&cid.user, &Password::new(PASSWORD))
        .await
        .unwrap();
    let cid_login = login(&h, "cid@tenants.test", Some(alpha)).await;
    h.auth
        .remove_member(&alpha_scope, cid.user.id, &AuditContext::system())
        .await
        .unwrap();
    assert_eq!(
        token_rejection(verify(&h, &cid_login.access_token.token).await),
        TokenRejection::Revoked
    );
    assert_err!(
        h.auth
            .login(
                login_request("cid@tenants.test", PASSWORD, Some(alpha)),
                &client()
            )
            .await,
        Error::NotAMember
    );
    verify(&h, &ada.access_token.token).await.unwrap();
}

/// API keys: created once, verified, and refused when malformed, unknown,
/// wrong, revoked, expired or used for another tenant, all with one outward answer.
pub async fn service_api_keys(f: Fixture) {
    let h = harness(f).await;
    let ada = register(&h, "keys", "ada@keys.test").await;
    let tenant = ada.membership.tenant_id;
    let other = register(&h, "others", "oz@keys.test")
        .await
        .membership
        .tenant_id;
    let scope = h.auth.directory().scope(tenant).await.unwrap();
    let as_ada = AuditContext::user(ada.user.id);
    let (key, secret) = h
        .auth
        .create_api_key(
            &scope,
            NewApiKey {
                name: "  deploy bot ".into(),
                scopes: vec![
                    Scope::new("projects:write").unwrap(),
                    Scope::new("projects:read").unwrap(),
                ],
                expires_at: None,
            },
            &as_ada,
        )
        .await
        .unwrap();
    assert_eq!(key.name, "deploy bot");
    assert!(secret.expose_secret().starts_with("tnc_live_"));
    let authenticator = h.auth.authenticator();
    let bearer = format!("Bearer {}", secret.expose_secret());
    let principal = authenticator
        .authenticate(Credentials {
            authorization: Some(&bearer),
            tenant: Some(tenant),
            ..Credentials::default()
        })
        .await
        .unwrap();
    assert_eq!(principal.subject, Subject::ApiKey(key.id));
    assert_eq!(principal.tenant_id, tenant);
    assert_eq!(principal.method, AuthMethod::ApiKey);
    assert_eq!(
        principal.scopes,
        vec![
            Scope::new("projects:read").unwrap(),
            Scope::new("projects:write").unwrap()
        ]
    );

    // Use is recorded, at most once a minute.
    let first_use = h
        .fixture
        .store
        .get_api_key(key.id)
        .await
        .unwrap()
        .last_used_at
        .unwrap();
    h.clock.advance(Duration::seconds(30));
    authenticator
        .verify_api_key(secret.expose_secret(), None)
        .await
        .unwrap();
    assert_eq!(
        h.fixture
            .store
            .get_api_key(key.id)
            .await
            .unwrap()
            .last_used_at,
        Some(first_use)
    );
    h.clock.advance(Duration::seconds(31));
    authenticator
        .verify_api_key(secret.expose_secret(), None)
        .await
        .unwrap();
    assert!(
        h.fixture
            .store
            .get_api_key(key.id)
            .await
            .unwrap()
            .last_used_at
            > Some(first_use)
    );

    let text = secret.expose_secret();
    let wrong_secret = format!(
        "{}{}",
        &text[..text.len() - 1],
        if text.ends_with('0') { '1' } else { '0' }
    );
    let unknown = format!(
        "tnc_live_{}_{}",
        uuid::Uuid::now_v7().simple(),
        &text[text.len() - 64..]
    );
    let outward = |result: Result<Arc<crate::principal::Principal>, AuthError>| {
        result.unwrap_err().www_authenticate("api")
    };
    let expected = AuthError::InvalidApiKey(ApiKeyRejection::Unknown).www_authenticate("api");
    for (presented, tenant_hint, rejection) in [
        ("tnc_live_nope", None, ApiKeyRejection::Malformed),
        (unknown.as_str(), None, ApiKeyRejection::Unknown),
        (wrong_secret.as_str(), None, ApiKeyRejection::WrongSecret),
        (text, Some(other), ApiKeyRejection::WrongTenant),
    ] {
        assert_eq!(
            key_rejection(authenticator.verify_api_key(presented, tenant_hint).await),
            rejection
        );
        assert_eq!(
            outward(authenticator.verify_api_key(presented, tenant_hint).await),
            expected
        );
    }

    let (expiring, expiring_secret) = h
        .auth
        .create_api_key(
            &scope,
            NewApiKey {
                name: "temp".into(),
                scopes: vec![],
                expires_at: Some(h.clock_now() + Duration::hours(1)),
            },
            &as_ada,
        )
        .await
        .unwrap();
    h.clock.advance(Duration::hours(2));
    assert_eq!(
        key_rejection(
            authenticator
                .verify_api_key(expiring_secret.expose_secret(), None)
                .await
        ),
        ApiKeyRejection::Expired
    );
    let other_scope = h.auth.directory().scope(other).await.unwrap();
    assert_err!(
        h.auth.revoke_api_key(&other_scope, key.id, &as_ada).await,
        Error::Store(tenancy_core::StoreError::NotFound(
            tenancy_core::Entity::ApiKey
        ))
    );
    h.auth
        .revoke_api_key(&scope, key.id, &as_ada)
        .await
        .unwrap();
    assert_eq!(
        key_rejection(authenticator.verify_api_key(text, None).await),
        ApiKeyRejection::Revoked
    );
    let listed = h
        .auth
        .list_api_keys(&scope, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(
        listed.items.iter().map(|k| k.id).collect::<Vec<_>>(),
        vec![key.id, expiring.id]
    );
    assert_eq!(actions_in(&h, tenant, actions::API_KEY_CREATED).await, 2);
    assert_eq!(actions_in(&h, tenant, actions::API_KEY_REVOKED).await, 1);

    // Bad input.
    assert_err!(
        h.auth
            .create_api_key(
                &scope,
                NewApiKey {
                    name: " ".into(),
                    scopes: vec![],
                    expires_at: None
                },
                &as_ada
            )
            .await,
        Error::InvalidInput(tenancy_core::ValidationError::TextLength { .. })
    );
    assert_err!(
        h.auth
            .create_api_key(
                &scope,
                NewApiKey {
                    name: "late".into(),
                    scopes: vec![],
                    expires_at: Some(h.clock_now() - Duration::seconds(1))
                },
                &as_ada
            )
            .await,
        Error::InvalidInput(tenancy_core::ValidationError::TimeRange)
    );
}

/// Email verification and password reset: single use, short-lived, sent
/// through the mailer, revealing nothing about unknown addresses.
pub async fn service_email_flows(f: Fixture) {
    let h = harness(f).await;
    let ada = register(&h, "mailing", "ada@mail.test").await;
    assert!(!ada.user.email_verified);
    h.auth
        .start_email_verification(ada.user.id, &client())
        .await
        .unwrap();
    h.auth.wait_for_mail().await;
    let mail = h.outbox.take().pop().unwrap();
    assert_eq!(mail.purpose, TokenPurpose::EmailVerification);
    assert_eq!(mail.to, ada.user.email);
    assert!(!format!("{mail:?}").contains(mail.token.expose_secret()));
    let verified = h
        .auth
        .finish_email_verification(mail.token.expose_secret())
        .await
        .unwrap();
    assert!(verified.email_verified);
    assert_err!(
        h.auth
            .finish_email_verification(mail.token.expose_secret())
            .await,
        Error::InvalidOneTimeToken
    );

    h.auth
        .start_password_reset("nobody@mail.test", &client())
        .await
        .unwrap();
    h.auth
        .start_password_reset("not an address", &client())
        .await
        .unwrap();
    h.auth.wait_for_mail().await;
    assert!(h.outbox.take().is_empty());
    h.auth
        .start_password_reset("ADA@mail.test", &client())
        .await
        .unwrap();
    h.auth.wait_for_mail().await;
    let reset = h.outbox.take().pop().unwrap();
    assert_eq!(reset.purpose, TokenPurpose::PasswordReset);
    let token = reset.token.expose_secret();
    assert_err!(
        h.auth.finish_email_verification(token).await,
        Error::InvalidOneTimeToken
    );
    assert_err!(
        h.auth
            .finish_password_reset(token, &Password::new("password"), &client())
            .await,
        Error::WeakPassword(_)
    );
    let new_password = "a much better passphrase";
    h.auth
        .finish_password_reset(token, &Password::new(new_password), &client())
        .await
        .unwrap();
    assert_err!(
        h.auth
            .finish_password_reset(token, &Password::new(new_password), &client())
            .await,
        Error::InvalidOneTimeToken
    );
    assert_err!(
        h.auth
            .finish_password_reset("pr_nonsense", &Password::new(new_password), &client())
            .await,
        Error::InvalidOneTimeToken
    );
    // Every earlier session ended; the old password no longer works.
    assert_eq!(
        token_rejection(verify(&h, &ada.access_token.token).await),
        TokenRejection::Revoked
    );
    assert_err!(
        h.auth
            .login(login_request("ada@mail.test", PASSWORD, None), &client())
            .await,
        Error::InvalidCredentials
    );
    h.auth
        .login(
            login_request("ada@mail.test", new_password, None),
            &client(),
        )
        .await
        .unwrap();

    h.auth
        .start_password_reset("ada@mail.test", &client())
        .await
        .unwrap();
    h.auth.wait_for_mail().await;
    let late = h.outbox.take().pop().unwrap();
    h.clock.advance(Duration::hours(1) + Duration::seconds(1));
    assert_err!(
        h.auth
            .finish_password_reset(
                late.token.expose_secret(),
                &Password::new("yet another passphrase"),
                &client(),
            )
            .await,
        Error::InvalidOneTimeToken
    );
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// Signs `claims` with the active key under `header` (tests forge tokens this way).
fn sign(h: &Harness, header: jsonwebtoken::Header, claims: &Value) -> String {
    let signer = h.auth.keys().signer().unwrap();
    jsonwebtoken::encode(&header, claims, &signer.key).unwrap()
}

fn header(h: &Harness) -> jsonwebtoken::Header {
    let signer = h.auth.keys().signer().unwrap();
    let mut header = jsonwebtoken::Header::new(signer.algorithm.jwt());
    header.kid = Some(signer.kid);
    header
}

/// Every way an access token is refused, one check each.
pub async fn service_token_rejections(f: Fixture) {
    let h = harness(f).await;
    let ada = register(&h, "tokens", "ada@tokens.test").await;
    let good = ada.access_token.token.clone();
    verify(&h, &good).await.unwrap();
    let authenticator = h.auth.authenticator();

    assert!(matches!(
        authenticator.authenticate(Credentials::default()).await,
        Err(AuthError::MissingCredentials)
    ));
    assert!(matches!(
        authenticator
            .authenticate(Credentials::bearer("Basic abc"))
            .await,
        Err(AuthError::UnsupportedScheme)
    ));
    assert!(matches!(
        authenticator
            .authenticate(Credentials::bearer("Bearer two tokens"))
            .await,
        Err(AuthError::MalformedHeader)
    ));
    let cookie = authenticator
        .authenticate(Credentials {
            cookie: Some(&good),
            ..Credentials::default()
        })
        .await
        .unwrap();
    assert_eq!(cookie.method, AuthMethod::Cookie);

    let claims = |h: &Harness| {
        let now = h.clock_now().unix_timestamp();
        json!({
            "iss": "https://auth.test", "aud": "tenancy-tests", "sub": ada.user.id, "tid": ada.membership.tenant_id,
            "sid": ada.session.id, "jti": "j", "iat": now, "nbf": now, "exp": now + 600, "roles": ["owner"]
        })
    };
    // A forged token signed by the real key verifies (sanity check of the helper).
    verify(&h, &sign(&h, header(&h), &claims(&h)))
        .await
        .unwrap();

    assert_eq!(
        token_rejection(verify(&h, &"a".repeat(9000)).await),
        TokenRejection::TooLarge
    );
    assert_eq!(
        token_rejection(verify(&h, "not.a.jwt").await),
        TokenRejection::Malformed
    );
    let none = format!(
        "{}.{}.",
        b64(&json!({ "alg": "none", "typ": "JWT", "kid": header(&h).kid })),
        b64(&claims(&h))
    );
    assert_eq!(
        token_rejection(verify(&h, &none).await),
        TokenRejection::Malformed
    );
    let mut no_kid = header(&h);
    no_kid.kid = None;
    assert_eq!(
        token_rejection(verify(&h, &sign(&h, no_kid, &claims(&h))).await),
        TokenRejection::MissingKid
    );
    let mut unknown_kid = header(&h);
    unknown_kid.kid = Some("no-such-key".into());
    assert_eq!(
        token_rejection(verify(&h, &sign(&h, unknown_kid, &claims(&h))).await),
        TokenRejection::UnknownKid
    );

    // Algorithm confusion: HS256 keyed with the public key's bytes, under the EdDSA kid.
    let jwks = h.auth.jwks();
    let public_x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let mut confused = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    confused.kid = header(&h).kid;
    let forged = jsonwebtoken::encode(
        &confused,
        &claims(&h),
        &jsonwebtoken::EncodingKey::from_secret(public_x.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        token_rejection(verify(&h, &forged).await),
        TokenRejection::AlgorithmMismatch
    );

    // Tampering with the payload or the signature.
    let parts: Vec<&str> = good.split('.').collect();
    let mut elevated = claims(&h);
    elevated["roles"] = json!(["owner", "admin"]);
    let tampered_payload = format!("{}.{}.{}", parts[0], b64(&elevated), parts[2]);
    assert_eq!(
        token_rejection(verify(&h, &tampered_payload).await),
        TokenRejection::BadSignature
    );
    let mut signature = parts[2].to_owned();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    signature.replace_range(0..1, flipped);
    let tampered_signature = format!("{}.{}.{}", parts[0], parts[1], signature);
    assert_eq!(
        token_rejection(verify(&h, &tampered_signature).await),
        TokenRejection::BadSignature
    );

    let mut wrong = claims(&h);
    wrong["iss"] = json!("https://evil.test");
    assert_eq!(
        token_rejection(verify(&h, &sign(&h, header(&h), &wrong)).await),
        TokenRejection::WrongIssuer
    );
    let mut wrong = claims(&h);
    wrong["aud"] = json!("another-app");
    assert_eq!(
        token_rejection(verify(&h, &sign(&h, header(&h), &wrong)).await),
        TokenRejection::WrongAudience
    );
    let mut early = claims(&h);
    early["nbf"] = json!(h.clock_now().unix_timestamp() + 600);
    assert_eq!(
        token_rejection(verify(&h, &sign(&h, header(&h), &early)).await),
        TokenRejection::NotYetValid
    );
    let mut missing = claims(&h);
    missing.as_object_mut().unwrap().remove("tid");
    assert_eq!(
        token_rejection(verify(&h, &sign(&h, header(&h), &missing)).await),
        TokenRejection::InvalidClaims
    );

    // Expiry applies to cached tokens too (the good token was verified above).
    let leeway = h.auth.config().tokens.leeway;
    h.clock
        .advance(h.auth.config().tokens.ttl + leeway + Duration::seconds(1));
    assert_eq!(
        token_rejection(verify(&h, &good).await),
        TokenRejection::Expired
    );
    assert_eq!(
        AuthError::InvalidToken(TokenRejection::Expired)
            .www_authenticate("app")
            .unwrap(),
        "Bearer realm=\"app\", error=\"invalid_token\", error_description=\"the access token expired\""
    );

    // Revocation applies to cached tokens too.
    let fresh = login(&h, "ada@tokens.test", None).await;
    let principal = verify(&h, &fresh.access_token.token).await.unwrap();
    h.auth.logout(&principal, &client()).await.unwrap();
    assert_eq!(
        token_rejection(verify(&h, &fresh.access_token.token).await),
        TokenRejection::Revoked
    );
}

/// Rotation keeps old tokens valid until they expire, publishes public keys
/// only, reaches other replicas, and works for each algorithm.
pub async fn service_key_rotation(f: Fixture) {
    let h = harness(f.clone()).await;
    let ada = register(&h, "rotation", "ada@rotation.test").await;
    let first_kid = h.auth.keys().active_kid().unwrap();
    let replica = harness(f.clone()).await;
    // A replica reloads keys on an unknown kid at most once a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let second_kid = h.auth.rotate_signing_key().await.unwrap();
    assert_ne!(first_kid, second_kid);
    let after = login(&h, "ada@rotation.test", None).await;
    verify(&h, &ada.access_token.token).await.unwrap();
    verify(&h, &after.access_token.token).await.unwrap();
    // The replica learns of the new key on first sight of its tokens.
    verify(&replica, &after.access_token.token).await.unwrap();
    let jwks = h.auth.jwks();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec![first_kid.as_str(), second_kid.as_str()]);
    for key in jwks["keys"].as_array().unwrap() {
        assert!(key.get("d").is_none(), "private key material published");
    }

    // Once every token of the old key has expired, it is pruned.
    let tokens = h.auth.config().tokens.clone();
    h.clock
        .advance(tokens.ttl + tokens.leeway + Duration::minutes(1));
    let third_kid = h.auth.rotate_signing_key().await.unwrap();
    let jwks = h.auth.jwks();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec![second_kid.as_str(), third_kid.as_str()]);
    assert!(verify(&h, &ada.access_token.token).await.is_err());

    // Each algorithm signs and verifies.
    for algorithm in [KeyAlgorithm::Es256, KeyAlgorithm::Rs256] {
        let h = harness_with(f.clone(), |c| c.algorithm = algorithm).await;
        h.auth.rotate_signing_key().await.unwrap();
        let session = login(&h, "ada@rotation.test", None).await;
        let header = jsonwebtoken::decode_header(&session.access_token.token).unwrap();
        assert_eq!(header.alg, algorithm.jwt());
        verify(&h, &session.access_token.token).await.unwrap();
    }

    // HS256 only by explicit choice, and never published.
    let refused = Auth::builder(f.backend.clone(), f.store.clone(), {
        let mut c = config();
        c.algorithm = KeyAlgorithm::Hs256;
        c
    })
    .build()
    .await;
    assert!(matches!(refused, Err(ConfigError::Hs256NotAllowed)));
    let h = harness_with(f.clone(), |c| {
        c.algorithm = KeyAlgorithm::Hs256;
        c.allow_hs256 = true;
    })
    .await;
    let hs_kid = h.auth.rotate_signing_key().await.unwrap();
    let session = login(&h, "ada@rotation.test", None).await;
    verify(&h, &session.access_token.token).await.unwrap();
    assert!(
        h.auth.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["kid"] != hs_kid.as_str())
    );
    let _ = TokenConfig::new("x", "y");
}

/// A write that fails mid-workflow leaves nothing half-written: each
/// workflow's records and its audit event commit together or not at all.
pub async fn service_atomic_workflows(f: Fixture) {
    let store = super::InstrumentedStore::new(f.store.clone());
    let h = harness(Fixture {
        backend: f.backend.clone(),
        store: Arc::new(store.clone()),
    })
    .await;
    let backend = &h.fixture.backend;
    let registration = || Registration {
        user: NewUser::new(Email::new("ada@atomic.test").unwrap()),
        password: Password::new(PASSWORD),
        tenant: NewTenant::new(
            Slug::new("atomic").unwrap(),
            TenantName::new("Atomic").unwrap(),
        ),
    };

    // Registration: the password or the session fails after the tenant,
    // the user and the membership were written.
    for failing in ["set_password_hash", "create_session"] {
        store.fail_next(failing);
        assert_err!(
            h.auth.register(registration(), &client()).await,
            Error::Store(tenancy_core::StoreError::Unavailable(_))
        );
        assert_eq!(
            backend
                .find_user_by_email(&Email::new("ada@atomic.test").unwrap())
                .await
                .unwrap(),
            None,
            "{failing}: the user stayed"
        );
        assert_eq!(
            backend
                .find_tenant_by_slug(&Slug::new("atomic").unwrap())
                .await
                .unwrap(),
            None,
            "{failing}: the tenant stayed"
        );
    }
    // The address and the slug are free: registering works.
    let ada = h.auth.register(registration(), &client()).await.unwrap();
    let tenant = ada.membership.tenant_id;
    assert_eq!(actions_in(&h, tenant, actions::LOGIN).await, 1);
    assert_eq!(
        actions_in(&h, tenant, tenancy_core::actions::TENANT_CREATED).await,
        1
    );

    // API key creation: the key fails after its audit event was written.
    let scope = h.auth.directory().scope(tenant).await.unwrap();
    let as_ada = AuditContext::user(ada.user.id);
    let new_key = || NewApiKey {
        name: "deploy".into(),
        scopes: vec![],
        expires_at: None,
    };
    store.fail_next("insert_api_key");
    assert!(
        h.auth
            .create_api_key(&scope, new_key(), &as_ada)
            .await
            .is_err()
    );
    assert_eq!(actions_in(&h, tenant, actions::API_KEY_CREATED).await, 0);
    assert!(
        h.auth
            .list_api_keys(&scope, &PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let (key, secret) = h
        .auth
        .create_api_key(&scope, new_key(), &as_ada)
        .await
        .unwrap();
    assert_eq!(actions_in(&h, tenant, actions::API_KEY_CREATED).await, 1);

    // API key revocation: the revocation fails after its audit event.
    store.fail_next("revoke_api_key");
    assert!(
        h.auth
            .revoke_api_key(&scope, key.id, &as_ada)
            .await
            .is_err()
    );
    assert_eq!(actions_in(&h, tenant, actions::API_KEY_REVOKED).await, 0);
    h.auth
        .authenticator()
        .verify_api_key(secret.expose_secret(), None)
        .await
        .unwrap();
    h.auth
        .revoke_api_key(&scope, key.id, &as_ada)
        .await
        .unwrap();
    assert_eq!(actions_in(&h, tenant, actions::API_KEY_REVOKED).await, 1);

    // Password reset: a write after the token was spent fails; the link,
    // the old password and the sessions all stay.
    let link = reset_link(&h, "ada@atomic.test").await;
    let new_password = Password::new("an entirely new passphrase");
    for failing in [
        "set_password_hash",
        "revoke_user_sessions",
        "clear_throttle",
    ] {
        store.fail_next(failing);
        assert!(
            h.auth
                .finish_password_reset(&link, &new_password, &client())
                .await
                .is_err(),
            "{failing}"
        );
        verify(&h, &ada.access_token.token).await.unwrap();
        assert_eq!(actions_in(&h, tenant, actions::PASSWORD_RESET).await, 0);
    }
    login(&h, "ada@atomic.test", None).await;
    h.auth
        .finish_password_reset(&link, &new_password, &client())
        .await
        .unwrap();
    assert_eq!(actions_in(&h, tenant, actions::PASSWORD_RESET).await, 1);
    assert_eq!(
        token_rejection(verify(&h, &ada.access_token.token).await),
        TokenRejection::Revoked
    );

    // Accepting an invitation as a new user: the password fails after the
    // user, the membership and the accepted invitation were written.
    let invited = h
        .auth
        .directory()
        .invite(
            &scope,
            Email::new("cy@atomic.test").unwrap(),
            RoleSet::single(RoleName::MEMBER),
            &as_ada,
        )
        .await
        .unwrap();
    let as_new_user = || crate::InvitationAcceptor::NewUser {
        display_name: None,
        password: Some(Password::new(PASSWORD)),
    };
    store.fail_next("set_password_hash");
    assert!(
        h.auth
            .accept_invitation(&invited.token, as_new_user(), &client())
            .await
            .is_err()
    );
    assert_eq!(
        backend
            .find_user_by_email(&Email::new("cy@atomic.test").unwrap())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        actions_in(&h, tenant, tenancy_core::actions::MEMBER_JOINED).await,
        0
    );
    let accepted = h
        .auth
        .accept_invitation(&invited.token, as_new_user(), &client())
        .await
        .unwrap();
    assert!(accepted.user_created);
    login(&h, "cy@atomic.test", Some(tenant)).await;
}

/// Starts a password reset for `email` and returns the mailed token.
async fn reset_link(h: &Harness, email: &str) -> String {
    h.auth.start_password_reset(email, &client()).await.unwrap();
    h.auth.wait_for_mail().await;
    h.outbox
        .take()
        .pop()
        .expect("a reset mail")
        .token
        .expose_secret()
        .to_owned()
}

/// Private signing keys are stored encrypted under the configured
/// key-encryption key; that key rotates (add the new one, re-encrypt,
/// drop the old one); plaintext rows are encrypted on start; and a store
/// that outlives the process refuses to start without a key.
pub async fn service_key_encryption(f: Fixture) {
    let k1 = suite_kek();
    let k2 = KeyEncryptionKey::new("suite-2", [9; 32]).unwrap();
    let under = |kek: &str| {
        let store = f.store.clone();
        let kek = kek.to_owned();
        async move {
            for key in store.list_signing_keys().await.unwrap() {
                match &key.private_key {
                    StoredPrivateKey::Encrypted(jwe) => assert_eq!(
                        jwe.key_encryption_key_id().as_deref(),
                        Some(kek.as_str()),
                        "{}",
                        key.kid
                    ),
                    other => panic!("{} stored as {other:?}", key.kid),
                }
            }
        }
    };
    let with = |encryption: KeyEncryption| {
        let f = f.clone();
        async move {
            Auth::builder(
                f.backend.clone(),
                f.store.clone(),
                config().with_key_encryption(encryption),
            )
            .build()
            .await
        }
    };

    let h = harness(f.clone()).await;
    let ada = register(&h, "sealed", "ada@sealed.test").await;
    under("suite-1").await;

    // Rotation: the new key encrypts, the old one still decrypts...
    let both = with(KeyEncryption::key(k2.clone()).with_previous(k1.clone()))
        .await
        .unwrap();
    assert_eq!(both.reencrypt_signing_keys().await.unwrap(), 1);
    under("suite-2").await;
    assert_eq!(both.reencrypt_signing_keys().await.unwrap(), 0);
    // ...and once re-encrypted the old key can go.
    let rotated = with(KeyEncryption::key(k2.clone())).await.unwrap();
    rotated
        .authenticator()
        .verify_access_token(&ada.access_token.token)
        .await
        .unwrap();
    rotated.rotate_signing_key().await.unwrap();
    under("suite-2").await;
    // A replica with only the old key cannot read them, and says which key it lacks.
    match with(KeyEncryption::key(k1.clone())).await {
        Err(ConfigError::Keys(KeyError::EncryptionKeyMissing {
            key_encryption_key, ..
        })) => assert_eq!(key_encryption_key.as_deref(), Some("suite-2")),
        other => panic!("expected a missing key-encryption key, got {other:?}"),
    }
    // Neither can one that stores keys in plaintext.
    assert!(matches!(
        with(KeyEncryption::InsecurePlaintext).await,
        Err(ConfigError::Keys(KeyError::EncryptionKeyMissing { .. }))
    ));

    // A key stored in plaintext (before encryption was configured) is
    // encrypted on start, and still signs.
    let legacy = StoredKey::generate(KeyAlgorithm::EdDsa, now()).unwrap();
    f.store.activate_signing_key(&legacy, now()).await.unwrap();
    let started = with(KeyEncryption::key(k2)).await.unwrap();
    under("suite-2").await;
    assert_eq!(
        started.keys().active_kid().as_deref(),
        Some(legacy.kid.as_str())
    );
    let signed = started
        .login(login_request("ada@sealed.test", PASSWORD, None), &client())
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(&signed.access_token.token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(legacy.kid.as_str()));
    started
        .authenticator()
        .verify_access_token(&signed.access_token.token)
        .await
        .unwrap();

    // No key configured: refused where keys outlive the process, a key
    // for this process otherwise.
    let unconfigured = with(KeyEncryption::Unconfigured).await;
    if f.store.process_encryption_key().is_none() {
        assert!(matches!(
            unconfigured,
            Err(ConfigError::KeyEncryptionRequired)
        ));
    } else {
        assert!(matches!(
            unconfigured,
            Err(ConfigError::Keys(KeyError::EncryptionKeyMissing { .. }))
        ));
    }
}

/// An access token must name a live session of its own user in its own
/// tenant; the check costs one store read per session per replica (on the
/// first token verified), not one per request, and revocations still
/// apply at once.
pub async fn service_session_bound_tokens(f: Fixture) {
    let store = super::InstrumentedStore::new(f.store.clone());
    let f = Fixture {
        backend: f.backend.clone(),
        store: Arc::new(store.clone()),
    };
    let h = harness(f.clone()).await;
    let ada = register(&h, "bound", "ada@bound.test").await;
    let bob = register(&h, "other", "bob@bound.test").await;
    let claims = |sub: tenancy_core::UserId, tid: TenantId, sid: tenancy_core::SessionId| {
        let now = h.clock_now().unix_timestamp();
        json!({
            "iss": "https://auth.test", "aud": "tenancy-tests", "sub": sub, "tid": tid,
            "sid": sid, "jti": "j", "iat": now, "nbf": now, "exp": now + 600, "roles": ["owner"]
        })
    };
    let (ada_tenant, bob_tenant) = (ada.membership.tenant_id, bob.membership.tenant_id);
    // A well-signed token naming no session, another user's session, or
    // its own session in another tenant is refused.
    for (claims, why) in [
        (
            claims(ada.user.id, ada_tenant, tenancy_core::SessionId::new()),
            "no such session",
        ),
        (
            claims(ada.user.id, ada_tenant, bob.session.id),
            "another user's session",
        ),
        (
            claims(ada.user.id, bob_tenant, ada.session.id),
            "another tenant",
        ),
    ] {
        let forged = sign(&h, header(&h), &claims);
        let expected = if why == "no such session" {
            TokenRejection::UnknownSession
        } else {
            TokenRejection::SessionMismatch
        };
        assert_eq!(
            token_rejection(verify(&h, &forged).await),
            expected,
            "{why}"
        );
    }
    let genuine = sign(
        &h,
        header(&h),
        &claims(ada.user.id, ada_tenant, ada.session.id),
    );
    verify(&h, &genuine).await.unwrap();

    // Sessions opened by this replica are known: no read for their tokens.
    let reads = || store.calls("get_session");
    let before = reads();
    let fresh = login(&h, "ada@bound.test", None).await;
    verify(&h, &fresh.access_token.token).await.unwrap();
    assert_eq!(reads(), before);
    // Another replica reads a session once, on its first token; the next
    // tokens of that session, and repeats, cost nothing.
    let replica = harness(f.clone()).await;
    let before = reads();
    verify(&replica, &fresh.access_token.token).await.unwrap();
    assert_eq!(reads(), before + 1);
    let renewed = h
        .auth
        .refresh(fresh.refresh_token.expose_secret(), &client())
        .await
        .unwrap();
    for _ in 0..3 {
        verify(&replica, &renewed.access_token.token).await.unwrap();
        verify(&replica, &fresh.access_token.token).await.unwrap();
    }
    assert_eq!(reads(), before + 1);
    // A revocation applies at once to cached tokens and known sessions.
    let principal = verify(&h, &renewed.access_token.token).await.unwrap();
    h.auth.logout(&principal, &client()).await.unwrap();
    assert_eq!(
        token_rejection(verify(&h, &renewed.access_token.token).await),
        TokenRejection::Revoked
    );
    replica.auth.sync_revocations().await.unwrap();
    assert_eq!(
        token_rejection(verify(&replica, &renewed.access_token.token).await),
        TokenRejection::Revoked
    );
}

/// A mailer that holds every mail until the test lets it through.
struct GatedMailer {
    sent: Outbox,
    gate: tokio::sync::Semaphore,
}

impl Default for GatedMailer {
    fn default() -> Self {
        Self {
            sent: Outbox::default(),
            gate: tokio::sync::Semaphore::new(0),
        }
    }
}

#[async_trait]
impl Mailer for GatedMailer {
    async fn send(&self, mail: Mail) -> Result<(), BoxError> {
        self.gate.acquire().await?.forget();
        self.sent.send(mail).await
    }
}

/// Starting a password reset answers at once, with the same work, whether
/// or not the address has an account: the lookup, the token and the mail
/// happen in the background (like the login path's equal work).
pub async fn service_reset_reveals_nothing_by_timing(f: Fixture) {
    let store = super::InstrumentedStore::new(f.store.clone());
    let mailer = Arc::new(GatedMailer::default());
    let auth = Auth::builder(f.backend.clone(), Arc::new(store.clone()), config())
        .mailer(mailer.clone())
        .build()
        .await
        .unwrap();
    auth.register(
        Registration {
            user: NewUser::new(Email::new("ada@timing.test").unwrap()),
            password: Password::new(PASSWORD),
            tenant: NewTenant::new(Slug::new("timing").unwrap(), TenantName::new("T").unwrap()),
        },
        &client(),
    )
    .await
    .unwrap();
    let mut slowest = [std::time::Duration::ZERO; 2];
    for round in 0..3 {
        for (i, email) in ["ada@timing.test", "nobody@timing.test"].iter().enumerate() {
            let from =
                ClientInfo::from_ip(format!("198.51.100.{}", round * 2 + i).parse().unwrap());
            let counted = store.calls("record_login_failure");
            let started = std::time::Instant::now();
            // The mailer hangs: an answer that waited on it never comes.
            tokio::time::timeout(
                std::time::Duration::from_secs(5),
                auth.start_password_reset(email, &from),
            )
            .await
            .unwrap_or_else(|_| panic!("{email}: the answer waited for the mailer"))
            .unwrap();
            slowest[i] = slowest[i].max(started.elapsed());
            // One count for the client, one for the address, either way.
            assert_eq!(store.calls("record_login_failure"), counted + 2, "{email}");
        }
    }
    for (email, took) in ["existing", "unknown"].iter().zip(slowest) {
        assert!(
            took < std::time::Duration::from_secs(1),
            "{email}: {took:?}"
        );
    }
    // The existing address got its mail (one: the cooldown holds the rest).
    mailer.gate.add_permits(100);
    auth.wait_for_mail().await;
    let sent = mailer.sent.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to.as_str(), "ada@timing.test");
}

/// Reset and verification mail are limited per address and per client,
/// answering a typed error with the retry time; within the cooldown no
/// new mail goes out, and a link already sent stays valid throughout.
pub async fn service_mail_limits(f: Fixture) {
    let ten_minutes = ThrottleRule::new(4, Duration::minutes(10), Duration::minutes(10));
    let h = harness_with(f, |c| {
        c.limits = AbuseLimits::default()
            .with_mail_per_address(ten_minutes)
            .with_mail_per_client(ThrottleRule::new(6, Duration::hours(1), Duration::hours(1)));
    })
    .await;
    let ada = register(&h, "flood", "ada@flood.test").await;
    let many = |i: u32| ClientInfo::from_ip(format!("198.51.100.{i}").parse().unwrap());

    // 300 requests for one address, from many clients: three accepted,
    // one mail sent, the rest refused until the window's lock ends.
    for email in ["ada@flood.test", "nobody@flood.test"] {
        let mut refused = 0;
        for i in 0..300 {
            match h.auth.start_password_reset(email, &many(i % 200)).await {
                Ok(()) => {}
                Err(Error::RateLimited { until }) => {
                    assert_eq!(until, h.clock_now() + Duration::minutes(10));
                    refused += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(refused, 297, "{email}");
    }
    h.auth.wait_for_mail().await;
    let mut sent = h.outbox.take();
    assert_eq!(sent.len(), 1);
    let first = sent.pop().unwrap().token.expose_secret().to_owned();

    // After the cooldown and the lock, a new link is sent; the first one
    // still works, and using it ends the other.
    h.clock.advance(Duration::minutes(11));
    h.auth
        .start_password_reset("ada@flood.test", &many(250))
        .await
        .unwrap();
    h.auth.wait_for_mail().await;
    let second = h.outbox.take().pop().expect("a second mail");
    h.auth
        .finish_password_reset(
            &first,
            &Password::new("the first link still works"),
            &client(),
        )
        .await
        .unwrap();
    assert_err!(
        h.auth
            .finish_password_reset(
                second.token.expose_secret(),
                &Password::new("the second one ended with it"),
                &client()
            )
            .await,
        Error::InvalidOneTimeToken
    );

    // One client asking for many addresses: the 6th request is refused.
    let noisy = ClientInfo::from_ip("203.0.113.66".parse().unwrap());
    for i in 0..5 {
        h.auth
            .start_password_reset(&format!("probe{i}@flood.test"), &noisy)
            .await
            .unwrap();
    }
    assert_err!(
        h.auth
            .start_password_reset("probe9@flood.test", &noisy)
            .await,
        Error::RateLimited { .. }
    );

    // Verification: one mail within the cooldown, limited per address too.
    for i in 0..3 {
        h.auth
            .start_email_verification(ada.user.id, &many(i))
            .await
            .unwrap();
    }
    assert_err!(
        h.auth.start_email_verification(ada.user.id, &many(4)).await,
        Error::RateLimited { .. }
    );
    h.auth.wait_for_mail().await;
    let sent = h.outbox.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].purpose, TokenPurpose::EmailVerification);
}

/// Registration is open (throttled per client), invite-only, or closed,
/// each answering a typed error a host can act on.
pub async fn service_registration_modes(f: Fixture) {
    let h = harness_with(f.clone(), |c| {
        c.limits = AbuseLimits::default().with_registration(ThrottleRule::new(
            3,
            Duration::hours(1),
            Duration::hours(1),
        ));
    })
    .await;
    let from = ClientInfo::from_ip("198.51.100.7".parse().unwrap());
    let sign_up = |n: u32| Registration {
        user: NewUser::new(Email::new(&format!("user{n}@modes.test")).unwrap()),
        password: Password::new(PASSWORD),
        tenant: NewTenant::new(
            Slug::new(format!("modes-{n}")).unwrap(),
            TenantName::new("Modes").unwrap(),
        ),
    };
    let owner = h.auth.register(sign_up(1), &from).await.unwrap();
    h.auth.register(sign_up(2), &from).await.unwrap();
    // The third registration from one client within the hour is refused.
    assert_err!(
        h.auth.register(sign_up(3), &from).await,
        Error::RateLimited { until } if until == h.clock_now() + Duration::hours(1)
    );
    h.auth.register(sign_up(3), &client()).await.unwrap();

    let scope = h
        .auth
        .directory()
        .scope(owner.membership.tenant_id)
        .await
        .unwrap();
    let invite = |email: &str| {
        let directory = h.auth.directory().clone();
        let email = Email::new(email).unwrap();
        async move {
            directory
                .invite(
                    &scope,
                    email,
                    RoleSet::single(RoleName::MEMBER),
                    &AuditContext::system(),
                )
                .await
                .unwrap()
                .token
        }
    };
    let as_new_user = || crate::InvitationAcceptor::NewUser {
        display_name: None,
        password: Some(Password::new(PASSWORD)),
    };

    // Invite-only: registering is refused, accepting creates the account.
    let invite_only = harness_with(f.clone(), |c| {
        c.registration = crate::RegistrationMode::InviteOnly;
    })
    .await;
    assert_err!(
        invite_only.auth.register(sign_up(4), &client()).await,
        Error::InvitationRequired
    );
    let token = invite("ivy@modes.test").await;
    invite_only
        .auth
        .accept_invitation(&token, as_new_user(), &client())
        .await
        .unwrap();
    login(&invite_only, "ivy@modes.test", None).await;

    // Closed: no new accounts either way; existing users still join.
    let closed = harness_with(f, |c| c.registration = crate::RegistrationMode::Closed).await;
    assert_err!(
        closed.auth.register(sign_up(5), &client()).await,
        Error::RegistrationClosed
    );
    let token = invite("cleo@modes.test").await;
    assert_err!(
        closed
            .auth
            .accept_invitation(&token, as_new_user(), &client())
            .await,
        Error::RegistrationClosed
    );
    let existing = closed
        .auth
        .register(sign_up(6), &client())
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(existing, Error::RegistrationClosed));
    let token = invite("user2@modes.test").await;
    let user2 = h
        .fixture
        .backend
        .find_user_by_email(&Email::new("user2@modes.test").unwrap())
        .await
        .unwrap()
        .unwrap();
    closed
        .auth
        .accept_invitation(&token, crate::InvitationAcceptor::User(user2.id), &client())
        .await
        .unwrap();
}

/// A storm of logins from one client, even with valid credentials, is
/// limited in rate and concurrency (a typed error with the retry time)
/// while other clients log in; and when password hashing is saturated the
/// answer is a typed overload with a retry time, not an endless queue.
pub async fn service_login_limits(f: Fixture) {
    let h = harness_with(f.clone(), |c| {
        c.limits = AbuseLimits::default()
            .with_login_rate(60, 5)
            .with_login_concurrency(2);
    })
    .await;
    register(&h, "storm", "mallory@storm.test").await;
    register(&h, "calm", "bob@storm.test").await;
    let storm = ClientInfo::from_ip("203.0.113.50".parse().unwrap());
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let auth = h.auth.clone();
            let storm = storm.clone();
            tokio::spawn(async move {
                auth.login(login_request("mallory@storm.test", PASSWORD, None), &storm)
                    .await
            })
        })
        .collect();
    let (mut admitted, mut limited) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => admitted += 1,
            Err(Error::RateLimited { until }) => {
                assert!(until > h.clock_now());
                limited += 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!((1..=5).contains(&admitted), "{admitted} admitted");
    assert_eq!(admitted + limited, 50);
    // Other clients are not held back, and the storm's client recovers.
    login(&h, "bob@storm.test", None).await;
    h.clock.advance(Duration::seconds(2));
    h.auth
        .login(login_request("mallory@storm.test", PASSWORD, None), &storm)
        .await
        .unwrap();

    // One hash at a time and one waiting: the rest are told to come back,
    // known and unknown accounts alike.
    let h = harness_with(f, |c| {
        c.argon2 = Argon2Config::new(8192, 2, 1);
        c.limits = AbuseLimits::default().with_hash_queue(1, 1);
    })
    .await;
    register(&h, "busy", "ada@busy.test").await;
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let auth = h.auth.clone();
            let email = if i % 2 == 0 {
                "ada@busy.test"
            } else {
                "nobody@busy.test"
            };
            let from = ClientInfo::from_ip(format!("198.51.100.{i}").parse().unwrap());
            tokio::spawn(async move {
                auth.login(login_request(email, PASSWORD, None), &from)
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    let mut overloaded = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) | Err(Error::InvalidCredentials) => {}
            Err(Error::Overloaded { until }) => {
                assert!(until > h.clock_now());
                overloaded += 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(overloaded >= 1, "the queue never filled");
    assert!(overloaded <= 10, "{overloaded}: two hashes always get in");
}

/// `Auth::purge_expired` runs every store's purge with the configured
/// retention, never deleting a session while its access tokens may live.
pub async fn service_retention(f: Fixture) {
    let h = harness_with(f, |c| {
        c.retention = crate::Retention::default()
            .with_ended_sessions(Duration::ZERO)
            .with_spent_refresh_tokens(Duration::hours(1))
            .with_one_time_tokens(Duration::ZERO);
    })
    .await;
    let ada = register(&h, "retained", "ada@retained.test").await;
    let other = login(&h, "ada@retained.test", None).await;
    let principal = verify(&h, &other.access_token.token).await.unwrap();
    h.auth.logout(&principal, &client()).await.unwrap();
    let renewed = h
        .auth
        .refresh(ada.refresh_token.expose_secret(), &client())
        .await
        .unwrap();
    reset_link(&h, "ada@retained.test").await;
    // Nothing is old enough yet: the logged-out session is kept for as
    // long as its access tokens live.
    assert_eq!(
        h.auth.purge_expired().await.unwrap(),
        crate::PurgeReport::default()
    );
    h.clock.advance(Duration::minutes(16));
    let report = h.auth.purge_expired().await.unwrap();
    assert_eq!((report.sessions, report.refresh_tokens), (1, 1));
    assert_eq!(report.one_time_tokens, 0);
    // The live session, with its current token, stays.
    let renewed = h
        .auth
        .refresh(renewed.refresh_token.expose_secret(), &client())
        .await
        .unwrap();
    // Spent tokens go after an hour; the reset link when it expires.
    h.clock.advance(Duration::hours(2));
    let report = h.auth.purge_expired().await.unwrap();
    assert_eq!(
        (
            report.sessions,
            report.refresh_tokens,
            report.one_time_tokens
        ),
        (0, 2, 1)
    );
    h.auth
        .refresh(renewed.refresh_token.expose_secret(), &client())
        .await
        .unwrap();
}
