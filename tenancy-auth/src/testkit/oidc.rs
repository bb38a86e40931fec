//! The conformance suite of [`OAuthStore`] implementations (features
//! `testkit` + `oidc`).

use std::sync::Arc;

use tenancy_core::{
    Actor, Conflict, Entity, PageRequest, PageSize, SessionId, StoreError, TenantId, TokenHash,
    UserId,
};
use time::Duration;

use crate::oidc::{
    AuthorizationCode, AuthorizationRequest, ClientId, ClientKind, CodeRedemption, Consent,
    GrantType, Interaction, InteractionId, OAuthClient, OAuthStore, Prompt, RedirectUri,
    SessionGrant,
};
use crate::{KeyAlgorithm, StoredKey};

use super::{now, seed};

/// A core backend (for the tenants the records belong to) and an OAuth
/// store over the same data.
#[derive(Clone)]
pub struct OAuthFixture {
    /// Tenants and users.
    pub backend: Arc<dyn tenancy_core::Backend>,
    /// The store under test.
    pub store: Arc<dyn OAuthStore>,
}

impl std::fmt::Debug for OAuthFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OAuthFixture")
    }
}

async fn tenant(fixture: &OAuthFixture) -> TenantId {
    let slug = format!("t{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let email = format!("{slug}@oauth.example");
    seed(&*fixture.backend, &slug, &email, &["owner"])
        .await
        .0
        .id
}

fn client(tenant: Option<TenantId>, name: &str) -> OAuthClient {
    let at = now();
    OAuthClient {
        id: ClientId::new(),
        tenant_id: tenant,
        name: name.to_owned(),
        kind: ClientKind::Confidential,
        redirect_uris: vec![RedirectUri::parse("https://rp.example/cb").unwrap()],
        post_logout_redirect_uris: vec![],
        grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        scopes: vec!["openid".into(), "projects:read".into()],
        first_party: false,
        id_token_signed_response_alg: KeyAlgorithm::Rs256,
        secret_hash: Some(TokenHash::of(b"secret")),
        jwks: None,
        created_by: Actor::System,
        created_at: at,
        updated_at: at,
    }
}

fn request(client: &ClientId) -> AuthorizationRequest {
    AuthorizationRequest {
        client_id: client.clone(),
        redirect_uri: "https://rp.example/cb".into(),
        redirect_uri_presented: true,
        scopes: vec!["openid".into()],
        state: Some("st".into()),
        nonce: Some("n".into()),
        code_challenge: None,
        prompt: Prompt::default(),
        max_age: None,
        login_hint: None,
    }
}

fn code(client: &ClientId, hash: &[u8], ttl: Duration) -> AuthorizationCode {
    let at = now();
    AuthorizationCode {
        code_hash: TokenHash::of(hash),
        client_id: client.clone(),
        redirect_uri: "https://rp.example/cb".into(),
        code_challenge: Some("c".repeat(43)),
        nonce: Some("n".into()),
        user_id: UserId::new(),
        tenant_id: TenantId::new(),
        browser_session: SessionId::new(),
        auth_time: at,
        scopes: vec!["openid".into()],
        created_at: at,
        expires_at: at + ttl,
        redeemed_at: None,
        issued_session: None,
    }
}

/// Clients: insert, read, list per tenant (global apart), update within
/// their tenant only, delete with their consents and grants.
pub async fn oauth_client_store(fixture: OAuthFixture) {
    let store = fixture.store.clone();
    let tenant = tenant(&fixture).await;
    let other = self::tenant(&fixture).await;
    let a = client(Some(tenant), "a");
    let b = client(Some(tenant), "b");
    let global = client(None, "global");
    let foreign = client(Some(other), "foreign");
    for c in [&a, &b, &global, &foreign] {
        store.insert_client(c).await.unwrap();
    }
    assert!(matches!(
        store.insert_client(&a).await,
        Err(StoreError::Conflict(Conflict::Id(Entity::OAuthClient)))
    ));
    assert_eq!(store.get_client(&a.id).await.unwrap(), a);
    assert!(matches!(
        store.get_client(&ClientId::new()).await,
        Err(StoreError::NotFound(Entity::OAuthClient))
    ));
    let first = store
        .list_clients(Some(tenant), &PageRequest::first(PageSize::new(1).unwrap()))
        .await
        .unwrap();
    assert_eq!(first.items, vec![a.clone()]);
    let rest = store
        .list_clients(
            Some(tenant),
            &PageRequest::first(PageSize::new(1).unwrap()).after(first.next.clone().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(rest.items, vec![b.clone()]);
    assert!(rest.next.is_none());
    let globals = store
        .list_clients(None, &PageRequest::first(PageSize::MAX))
        .await
        .unwrap();
    assert_eq!(globals.items, vec![global.clone()]);

    // An update changes the registration and its registrant, never the
    // secret (a concurrent update must not restore a rotated secret).
    let mut changed = a.clone();
    changed.name = "renamed".into();
    changed.scopes = vec!["openid".into()];
    changed.created_by = Actor::User(UserId::new());
    changed.secret_hash = Some(TokenHash::of(b"stale"));
    changed.updated_at = now();
    store.update_client(&changed).await.unwrap();
    let stored = store.get_client(&a.id).await.unwrap();
    assert_eq!(stored.secret_hash, a.secret_hash);
    changed.secret_hash = a.secret_hash;
    assert_eq!(stored, changed);
    // A rotation changes the secret, the registrant and `updated_at` only.
    let mut rotated = a.clone();
    rotated.name = "ignored".into();
    rotated.secret_hash = Some(TokenHash::of(b"rotated"));
    rotated.created_by = Actor::System;
    rotated.updated_at = now() + Duration::seconds(1);
    store.set_client_secret(&rotated).await.unwrap();
    let stored = store.get_client(&a.id).await.unwrap();
    assert_eq!(stored.secret_hash, rotated.secret_hash);
    assert_eq!(stored.created_by, Actor::System);
    assert_eq!(stored.name, "renamed");
    changed.secret_hash = rotated.secret_hash;
    changed.created_by = Actor::System;
    changed.updated_at = stored.updated_at;
    assert_eq!(stored, changed);
    let mut foreign_secret = rotated.clone();
    foreign_secret.tenant_id = Some(other);
    assert!(matches!(
        store.set_client_secret(&foreign_secret).await,
        Err(StoreError::NotFound(Entity::OAuthClient))
    ));
    let mut moved = changed.clone();
    moved.tenant_id = Some(other);
    assert!(matches!(
        store.update_client(&moved).await,
        Err(StoreError::NotFound(Entity::OAuthClient))
    ));

    let session = SessionId::new();
    let user = UserId::new();
    store
        .put_consent(&Consent::new(
            user,
            a.id.clone(),
            tenant,
            vec!["openid".into()],
            now(),
        ))
        .await
        .unwrap();
    store
        .insert_grant(&SessionGrant::new(
            session,
            a.id.clone(),
            user,
            tenant,
            vec!["openid".into()],
            now(),
            now(),
        ))
        .await
        .unwrap();
    assert!(matches!(
        store.delete_client(Some(other), &a.id).await,
        Err(StoreError::NotFound(Entity::OAuthClient))
    ));
    assert_eq!(
        store.delete_client(Some(tenant), &a.id).await.unwrap(),
        vec![session]
    );
    assert!(store.get_client(&a.id).await.is_err());
    assert!(
        store
            .find_consent(user, &a.id, tenant)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.get_grant(session).await.unwrap().is_none());
    assert!(
        store
            .delete_client(None, &global.id)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Interactions: read until expiry, progress recorded, taken once.
pub async fn oauth_interaction_store(fixture: OAuthFixture) {
    let store = fixture.store;
    let c = client(None, "c");
    store.insert_client(&c).await.unwrap();
    let at = now();
    let interaction = Interaction {
        id: InteractionId::parse(&"a".repeat(43)).unwrap(),
        request: request(&c.id),
        logged_in: None,
        consent_user: None,
        created_at: at,
        expires_at: at + Duration::minutes(10),
    };
    store.insert_interaction(&interaction).await.unwrap();
    let read = store
        .get_interaction(&interaction.id, at)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, interaction);
    assert!(
        store
            .get_interaction(&interaction.id, at + Duration::minutes(11))
            .await
            .unwrap()
            .is_none()
    );
    let mut progressed = interaction.clone();
    let session = SessionId::new();
    progressed.logged_in = Some((session, at));
    progressed.consent_user = Some(UserId::new());
    assert!(store.update_interaction(&progressed).await.unwrap());
    assert_eq!(
        store
            .get_interaction(&interaction.id, at)
            .await
            .unwrap()
            .unwrap(),
        progressed
    );
    // Single use, even under concurrency.
    let (x, y) = tokio::join!(
        store.take_interaction(&interaction.id, at),
        store.take_interaction(&interaction.id, at)
    );
    assert_eq!(
        [x.unwrap().is_some(), y.unwrap().is_some()]
            .iter()
            .filter(|t| **t)
            .count(),
        1
    );
    assert!(!store.update_interaction(&progressed).await.unwrap());
    let expired = Interaction {
        id: InteractionId::parse(&"b".repeat(43)).unwrap(),
        expires_at: at - Duration::seconds(1),
        ..interaction.clone()
    };
    store.insert_interaction(&expired).await.unwrap();
    assert!(
        store
            .take_interaction(&expired.id, at)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.purge_expired(at, at).await.unwrap() <= 1);
}

/// Codes: redeemed once (concurrently too), replays reported with the
/// session the first redemption opened, expired codes unknown.
pub async fn oauth_code_store(fixture: OAuthFixture) {
    let fixture_tenant = tenant(&fixture).await;
    let store = fixture.store;
    let c = client(None, "c");
    store.insert_client(&c).await.unwrap();
    let live = code(&c.id, b"live", Duration::seconds(60));
    store.insert_code(&live).await.unwrap();
    let at = now();
    // Another client presenting the code does not spend it.
    let thief = client(None, "thief");
    store.insert_client(&thief).await.unwrap();
    assert_eq!(
        store
            .redeem_code(&live.code_hash, &thief.id, at)
            .await
            .unwrap(),
        CodeRedemption::Unknown
    );
    let (x, y) = tokio::join!(
        store.redeem_code(&live.code_hash, &c.id, at),
        store.redeem_code(&live.code_hash, &c.id, at)
    );
    let outcomes = [x.unwrap(), y.unwrap()];
    let redeemed: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            CodeRedemption::Redeemed(code) => Some(code),
            _ => None,
        })
        .collect();
    assert_eq!(redeemed.len(), 1);
    assert_eq!(redeemed[0].nonce, live.nonce);
    assert_eq!(redeemed[0].code_challenge, live.code_challenge);
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, CodeRedemption::Replayed(_)))
    );
    // The concurrent loser was a replay while the winner had not yet
    // recorded its session: recording it says so.
    let session = SessionId::new();
    assert!(
        store
            .set_code_session(&live.code_hash, session)
            .await
            .unwrap()
    );
    match store.redeem_code(&live.code_hash, &c.id, at).await.unwrap() {
        CodeRedemption::Replayed(code) => assert_eq!(code.issued_session, Some(session)),
        other => panic!("expected a replay, got {other:?}"),
    }
    let fresh = code(&c.id, b"fresh", Duration::seconds(60));
    store.insert_code(&fresh).await.unwrap();
    assert!(matches!(
        store
            .redeem_code(&fresh.code_hash, &c.id, at)
            .await
            .unwrap(),
        CodeRedemption::Redeemed(_)
    ));
    assert!(
        !store
            .set_code_session(&fresh.code_hash, SessionId::new())
            .await
            .unwrap()
    );
    let expired = code(&c.id, b"expired", Duration::seconds(-1));
    store.insert_code(&expired).await.unwrap();
    assert_eq!(
        store
            .redeem_code(&expired.code_hash, &c.id, at)
            .await
            .unwrap(),
        CodeRedemption::Unknown
    );
    assert_eq!(
        store
            .redeem_code(&TokenHash::of(b"none"), &c.id, at)
            .await
            .unwrap(),
        CodeRedemption::Unknown
    );
    // A client assertion's jti is accepted once per client.
    let later = at + Duration::minutes(5);
    assert!(store.use_assertion(&c.id, "jti-1", later).await.unwrap());
    assert!(!store.use_assertion(&c.id, "jti-1", later).await.unwrap());
    let other = client(None, "other");
    store.insert_client(&other).await.unwrap();
    assert!(
        store
            .use_assertion(&other.id, "jti-1", later)
            .await
            .unwrap()
    );
    assert!(store.purge_expired(at, at).await.unwrap() >= 1);
    // A spent code outlives its expiry until `spent_before` passes it, so a
    // late replay is still recognised; grants go with their sessions' time.
    let later = at + Duration::minutes(2);
    let grant = SessionGrant::new(
        SessionId::new(),
        c.id.clone(),
        UserId::new(),
        fixture_tenant,
        vec!["openid".into()],
        at,
        at,
    );
    store.insert_grant(&grant).await.unwrap();
    store.purge_expired(later, at).await.unwrap();
    assert!(matches!(
        store
            .redeem_code(&live.code_hash, &c.id, later)
            .await
            .unwrap(),
        CodeRedemption::Replayed(_)
    ));
    assert!(store.get_grant(grant.session_id).await.unwrap().is_some());
    store.purge_expired(later, later).await.unwrap();
    assert_eq!(
        store
            .redeem_code(&live.code_hash, &c.id, later)
            .await
            .unwrap(),
        CodeRedemption::Unknown
    );
    assert!(store.get_grant(grant.session_id).await.unwrap().is_none());
    assert_eq!(
        store
            .redeem_code(&expired.code_hash, &c.id, at)
            .await
            .unwrap(),
        CodeRedemption::Unknown
    );
}

/// Consents replace per user × client × tenant; grants are read back.
pub async fn oauth_consent_store(fixture: OAuthFixture) {
    let store = fixture.store.clone();
    let c = client(None, "c");
    store.insert_client(&c).await.unwrap();
    let other = tenant(&fixture).await;
    let (user, tenant) = (UserId::new(), tenant(&fixture).await);
    assert!(
        store
            .find_consent(user, &c.id, tenant)
            .await
            .unwrap()
            .is_none()
    );
    let first = Consent::new(user, c.id.clone(), tenant, vec!["openid".into()], now());
    store.put_consent(&first).await.unwrap();
    let wider = Consent::new(
        user,
        c.id.clone(),
        tenant,
        vec!["openid".into(), "projects:read".into()],
        now(),
    );
    store.put_consent(&wider).await.unwrap();
    let found = store
        .find_consent(user, &c.id, tenant)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, wider);
    assert!(found.covers(&["projects:read".to_owned()]));
    assert!(
        store
            .find_consent(user, &c.id, other)
            .await
            .unwrap()
            .is_none()
    );
    let grant = SessionGrant::new(
        SessionId::new(),
        c.id.clone(),
        user,
        tenant,
        vec!["openid".into()],
        now(),
        now(),
    );
    store.insert_grant(&grant).await.unwrap();
    assert_eq!(
        store.get_grant(grant.session_id).await.unwrap(),
        Some(grant)
    );
    assert!(store.get_grant(SessionId::new()).await.unwrap().is_none());
}

/// The ID-token key store keeps keys apart and activates one at a time.
pub async fn oauth_id_token_keys(fixture: OAuthFixture) {
    let keys = fixture.store.id_token_keys();
    let first = StoredKey::generate(KeyAlgorithm::Rs256, now()).unwrap();
    keys.activate_signing_key(&first, now()).await.unwrap();
    let second = StoredKey::generate(KeyAlgorithm::Rs256, now()).unwrap();
    keys.activate_signing_key(&second, now()).await.unwrap();
    let listed = keys.list_signing_keys().await.unwrap();
    let active: Vec<_> = listed.iter().filter(|k| k.retired_at.is_none()).collect();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].kid, second.kid);
    assert!(
        listed
            .iter()
            .any(|k| k.kid == first.kid && k.retired_at.is_some())
    );
}

/// Generates one `#[tokio::test]` per OAuth store suite. `$store` is an
/// expression evaluating to a future of `Option<OAuthFixture>`; `None`
/// skips.
#[macro_export]
macro_rules! oauth_store_conformance_tests {
    ($store:expr) => {
        $crate::oauth_store_conformance_tests!(@suites $store;
            oauth_client_store, oauth_interaction_store, oauth_code_store,
            oauth_consent_store, oauth_id_token_keys
        );
    };
    (@suites $store:expr; $($suite:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $suite() {
                if let Some(fixture) = $store.await {
                    $crate::testkit::oidc::$suite(fixture).await;
                }
            }
        )+
    };
}
