//! Suites for the auth stores.

use std::sync::Arc;

use tenancy_core::{
    Actor, ApiKeyId, Conflict, Email, Entity, PageRequest, PageSize, SessionId, StoreError,
    TenantId, TokenHash, UserId,
};
use time::Duration;

use super::{Fixture, now, seed};
use crate::api_key::{ApiKey, Scope};
use crate::key_encryption::{EncryptedJwk, StoredPrivateKey};
use crate::keys::{KeyAlgorithm, StoredKey};
use crate::lockout::{ThrottleKey, ThrottleRule};
use crate::one_time::{OneTimeToken, TokenPurpose};
use crate::password::PasswordHashString;
use crate::secret::random_256;
use crate::session::{RefreshRecord, RevokeReason, RotateOutcome, Session};
use crate::store::{LockoutStore, OneTimeTokenStore, SessionStore};

fn hash() -> TokenHash {
    TokenHash::of(&random_256())
}

/// Password hashes: set, read, replace.
pub async fn credential_store(f: Fixture) {
    let (_, user) = seed(&*f.backend, "cred", "cred@example.com", &["owner"]).await;
    assert_eq!(f.store.password_hash(user.id).await.unwrap(), None);
    f.store
        .set_password_hash(user.id, &PasswordHashString::new("$argon2id$first"), now())
        .await
        .unwrap();
    f.store
        .set_password_hash(user.id, &PasswordHashString::new("$argon2id$second"), now())
        .await
        .unwrap();
    assert_eq!(
        f.store.password_hash(user.id).await.unwrap(),
        Some(PasswordHashString::new("$argon2id$second"))
    );
    assert_eq!(f.store.password_hash(UserId::new()).await.unwrap(), None);
}

/// Failure counting, locking, clearing, and concurrent failures counted once each.
pub async fn lockout_store(f: Fixture) {
    let key = ThrottleKey::account(&Email::new("lock@example.com").unwrap());
    let rule = ThrottleRule {
        max_failures: 3,
        window: Duration::minutes(15),
        lock_for: Duration::minutes(10),
    };
    let t0 = now();
    assert_eq!(f.store.throttle_state(&key).await.unwrap(), None);
    let first = f.store.record_login_failure(&key, &rule, t0).await.unwrap();
    assert_eq!((first.failures, first.locked_until), (1, None));
    f.store.record_login_failure(&key, &rule, t0).await.unwrap();
    let locked = f.store.record_login_failure(&key, &rule, t0).await.unwrap();
    assert_eq!(locked.locked_until, Some(t0 + Duration::minutes(10)));
    assert_eq!(f.store.throttle_state(&key).await.unwrap(), Some(locked));
    f.store.clear_throttle(&key).await.unwrap();
    assert_eq!(f.store.throttle_state(&key).await.unwrap(), None);

    // Twenty concurrent failures are twenty failures.
    let wide = ThrottleRule {
        max_failures: 100,
        ..rule
    };
    let client = ThrottleKey::client("198.51.100.1");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = Arc::clone(&f.store);
            let client = client.clone();
            tokio::spawn(async move { store.record_login_failure(&client, &wide, t0).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(
        f.store
            .throttle_state(&client)
            .await
            .unwrap()
            .unwrap()
            .failures,
        20
    );
}

/// Activation retires the previous key; retired keys are pruned by age.
pub async fn key_store(f: Fixture) {
    let t0 = now();
    assert!(f.store.list_signing_keys().await.unwrap().is_empty());
    let first = StoredKey::generate(KeyAlgorithm::EdDsa, t0).unwrap();
    f.store.activate_signing_key(&first, t0).await.unwrap();
    let second = StoredKey::generate(KeyAlgorithm::Es256, t0 + Duration::seconds(1)).unwrap();
    f.store
        .activate_signing_key(&second, t0 + Duration::minutes(1))
        .await
        .unwrap();
    let keys = f.store.list_signing_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].kid, first.kid);
    assert_eq!(keys[0].retired_at, Some(t0 + Duration::minutes(1)));
    assert_eq!(keys[0].private_key, first.private_key);
    assert_eq!(keys[1].kid, second.kid);
    assert_eq!(keys[1].retired_at, None);
    assert_eq!(keys[1].public_jwk, second.public_jwk);
    assert!(matches!(
        f.store.activate_signing_key(&second, t0).await,
        Err(StoreError::Conflict(Conflict::Id(Entity::SigningKey)))
    ));
    assert_eq!(
        f.store
            .delete_signing_keys_retired_before(t0 + Duration::seconds(30))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        f.store
            .delete_signing_keys_retired_before(t0 + Duration::minutes(2))
            .await
            .unwrap(),
        1
    );
    let keys = f.store.list_signing_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kid, second.kid);

    // The private key is replaced in place: encrypted, and back.
    let sealed = StoredPrivateKey::Encrypted(EncryptedJwk::from_compact(
        "eyJlbmMiOiJBMjU2R0NNIiwia2lkIjoiazEiLCJhbGciOiJkaXIifQ..aXY.Y2lwaGVy.dGFn",
    ));
    for private_key in [sealed, second.private_key.clone()] {
        f.store
            .replace_private_key(&second.kid, &private_key)
            .await
            .unwrap();
        let stored = f.store.list_signing_keys().await.unwrap();
        assert_eq!(stored[0].private_key, private_key);
        assert_eq!(stored[0].public_jwk, second.public_jwk);
    }
    assert!(matches!(
        f.store
            .replace_private_key("no-such-key", &second.private_key)
            .await,
        Err(StoreError::NotFound(Entity::SigningKey))
    ));
}

/// Replicas rotating at once: at most one key is ever active.
pub async fn key_store_concurrent_activation(f: Fixture) {
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let store = Arc::clone(&f.store);
            tokio::spawn(async move {
                let key = StoredKey::generate(KeyAlgorithm::EdDsa, now()).unwrap();
                store.activate_signing_key(&key, now()).await
            })
        })
        .collect();
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) | Err(StoreError::Conflict(Conflict::ActiveSigningKey)) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    let active = f
        .store
        .list_signing_keys()
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.retired_at.is_none())
        .count();
    assert_eq!(active, 1);
}

fn session(tenant: TenantId, user: UserId, created: time::OffsetDateTime) -> Session {
    Session {
        id: SessionId::new(),
        user_id: user,
        tenant_id: tenant,
        user_agent: Some("suite/1".into()),
        ip: Some("203.0.113.5".parse().unwrap()),
        created_at: created,
        last_seen_at: created,
        idle_expires_at: created + Duration::days(1),
        absolute_expires_at: created + Duration::days(30),
        revoked_at: None,
        revoke_reason: None,
    }
}

fn record(session: &Session, hash: TokenHash) -> RefreshRecord {
    RefreshRecord {
        token_hash: hash,
        session_id: session.id,
        issued_at: session.created_at,
    }
}

/// Sessions: create, read, list, evict past the limit, rotate, detect
/// reuse, refuse ended sessions, revoke in every way, report revocations.
pub async fn session_store(f: Fixture) {
    let (tenant, user) = seed(&*f.backend, "sess-a", "sess@example.com", &["owner"]).await;
    let (other_tenant, _) = seed(&*f.backend, "sess-b", "sess@example.com", &["member"]).await;
    let t0 = now();
    let s1 = session(tenant.id, user.id, t0);
    let h1 = hash();
    assert!(
        f.store
            .create_session(&s1, &record(&s1, h1), 3)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(f.store.get_session(s1.id).await.unwrap(), s1);
    assert!(matches!(
        f.store.get_session(SessionId::new()).await,
        Err(StoreError::NotFound(Entity::Session))
    ));

    // Rotation spends the token and moves the idle expiry.
    let h2 = hash();
    let later = t0 + Duration::hours(1);
    let rotated = match f
        .store
        .rotate_refresh_token(&h1, &h2, later, Duration::days(2))
        .await
        .unwrap()
    {
        RotateOutcome::Rotated(session) => session,
        other => panic!("expected rotation, got {other:?}"),
    };
    assert_eq!(rotated.last_seen_at, later);
    assert_eq!(rotated.idle_expires_at, later + Duration::days(2));
    assert!(matches!(
        f.store
            .rotate_refresh_token(&hash(), &hash(), later, Duration::days(1))
            .await
            .unwrap(),
        RotateOutcome::Unknown
    ));
    // Both the spent and the live token of a family lead to its session.
    for (token, spent) in [(&h1, true), (&h2, false)] {
        let found = f
            .store
            .find_session_by_refresh_token(token)
            .await
            .unwrap()
            .expect("the family's session");
        assert_eq!(found.session.id, s1.id);
        assert_eq!(found.session.idle_expires_at, rotated.idle_expires_at);
        assert_eq!(found.spent, spent);
    }
    assert_eq!(
        f.store
            .find_session_by_refresh_token(&hash())
            .await
            .unwrap(),
        None
    );
    // Idle expiry never passes the absolute one.
    let h3 = hash();
    let capped = match f
        .store
        .rotate_refresh_token(&h2, &h3, later, Duration::days(365))
        .await
        .unwrap()
    {
        RotateOutcome::Rotated(session) => session,
        other => panic!("expected rotation, got {other:?}"),
    };
    assert_eq!(capped.idle_expires_at, s1.absolute_expires_at);
    // Presenting a spent token revokes the family's session.
    match f
        .store
        .rotate_refresh_token(&h1, &hash(), later, Duration::days(1))
        .await
        .unwrap()
    {
        RotateOutcome::Reused(session) => {
            assert_eq!(session.id, s1.id);
            assert_eq!(session.revoke_reason, Some(RevokeReason::RefreshTokenReuse));
        }
        other => panic!("expected reuse, got {other:?}"),
    }
    // Even the newest token of that family is now refused.
    assert!(matches!(
        f.store
            .rotate_refresh_token(&h3, &hash(), later, Duration::days(1))
            .await
            .unwrap(),
        RotateOutcome::Inactive(_)
    ));

    // Expired sessions refuse rotation without changing anything.
    let s2 = session(tenant.id, user.id, t0 + Duration::seconds(1));
    let h = hash();
    f.store
        .create_session(&s2, &record(&s2, h), 3)
        .await
        .unwrap();
    assert!(matches!(
        f.store
            .rotate_refresh_token(&h, &hash(), t0 + Duration::days(2), Duration::days(1))
            .await
            .unwrap(),
        RotateOutcome::Inactive(_)
    ));

    // The per-user limit evicts the oldest live sessions.
    let s3 = session(tenant.id, user.id, t0 + Duration::seconds(2));
    let s4 = session(other_tenant.id, user.id, t0 + Duration::seconds(3));
    f.store
        .create_session(&s3, &record(&s3, hash()), 3)
        .await
        .unwrap();
    let evicted = f
        .store
        .create_session(&s4, &record(&s4, hash()), 2)
        .await
        .unwrap();
    assert_eq!(evicted, vec![s2.id]);
    assert_eq!(
        f.store.get_session(s2.id).await.unwrap().revoke_reason,
        Some(RevokeReason::Evicted)
    );
    let live: Vec<SessionId> = f
        .store
        .list_user_sessions(user.id, t0 + Duration::seconds(10))
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(live, vec![s4.id, s3.id]);

    // Revocation by session, by user in one tenant, by tenant.
    let at = t0 + Duration::hours(2);
    assert!(
        f.store
            .revoke_session(s3.id, RevokeReason::Logout, at)
            .await
            .unwrap()
    );
    assert!(
        !f.store
            .revoke_session(s3.id, RevokeReason::Logout, at)
            .await
            .unwrap()
    );
    assert!(matches!(
        f.store
            .revoke_session(SessionId::new(), RevokeReason::Logout, at)
            .await,
        Err(StoreError::NotFound(Entity::Session))
    ));
    let s5 = session(tenant.id, user.id, t0 + Duration::seconds(4));
    f.store
        .create_session(&s5, &record(&s5, hash()), 10)
        .await
        .unwrap();
    assert_eq!(
        f.store
            .revoke_user_sessions(user.id, Some(tenant.id), RevokeReason::MembershipEnded, at)
            .await
            .unwrap(),
        vec![s5.id]
    );
    assert_eq!(
        f.store
            .revoke_tenant_sessions(other_tenant.id, RevokeReason::TenantInactive, at)
            .await
            .unwrap(),
        vec![s4.id]
    );
    assert!(
        f.store
            .list_user_sessions(user.id, at)
            .await
            .unwrap()
            .is_empty()
    );

    let revocations = f.store.revocations_since(at, at).await.unwrap();
    let mut ids: Vec<SessionId> = revocations.iter().map(|r| r.session_id).collect();
    ids.sort();
    let mut expected = vec![s3.id, s4.id, s5.id];
    expected.sort();
    assert_eq!(ids, expected);
    assert!(revocations.iter().all(|r| r.revoked_at == at));
    assert_eq!(
        f.store
            .revocations_since(at + Duration::seconds(1), at)
            .await
            .unwrap(),
        vec![]
    );
}

/// Clients present one refresh token at once: exactly one rotates, the
/// next finds it spent (reuse: the session is revoked), any later one
/// finds the session ended.
pub async fn session_store_refresh_race(f: Fixture) {
    let (tenant, user) = seed(&*f.backend, "sess-race", "race@example.com", &["owner"]).await;
    for _ in 0..5 {
        let s = session(tenant.id, user.id, now());
        let presented = hash();
        f.store
            .create_session(&s, &record(&s, presented), 100)
            .await
            .unwrap();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let store = Arc::clone(&f.store);
                tokio::spawn(async move {
                    store
                        .rotate_refresh_token(&presented, &hash(), now(), Duration::days(1))
                        .await
                })
            })
            .collect();
        let (mut rotated, mut reused, mut inactive) = (0, 0, 0);
        for task in tasks {
            match task.await.unwrap().unwrap() {
                RotateOutcome::Rotated(_) => rotated += 1,
                RotateOutcome::Reused(_) => reused += 1,
                RotateOutcome::Inactive(_) => inactive += 1,
                RotateOutcome::Unknown => panic!("token unknown"),
            }
        }
        assert_eq!((rotated, reused, inactive), (1, 1, 2));
        assert!(
            f.store
                .get_session(s.id)
                .await
                .unwrap()
                .revoked_at
                .is_some()
        );
    }
}

fn api_key(tenant: TenantId, name: &str) -> ApiKey {
    ApiKey {
        id: ApiKeyId::new(),
        tenant_id: tenant,
        name: name.into(),
        scopes: vec![Scope::new("projects:read").unwrap()],
        secret_hash: hash(),
        created_by: Actor::System,
        created_at: now(),
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
    }
}

/// API keys: insert, read, list per tenant, revoke within the tenant only,
/// touch only forward.
pub async fn api_key_store(f: Fixture) {
    let (a, _) = seed(&*f.backend, "keys-a", "keys-a@example.com", &["owner"]).await;
    let (b, _) = seed(&*f.backend, "keys-b", "keys-b@example.com", &["owner"]).await;
    let first = api_key(a.id, "ci");
    f.store.insert_api_key(&first).await.unwrap();
    assert_eq!(f.store.get_api_key(first.id).await.unwrap(), first);
    assert!(matches!(
        f.store.insert_api_key(&first).await,
        Err(StoreError::Conflict(Conflict::Id(Entity::ApiKey)))
    ));
    assert!(matches!(
        f.store.get_api_key(ApiKeyId::new()).await,
        Err(StoreError::NotFound(Entity::ApiKey))
    ));
    let mut created = vec![first.id];
    for i in 0..4 {
        let key = api_key(a.id, &format!("k{i}"));
        f.store.insert_api_key(&key).await.unwrap();
        created.push(key.id);
    }
    f.store
        .insert_api_key(&api_key(b.id, "other"))
        .await
        .unwrap();
    let mut request = PageRequest::first(PageSize::new(2).unwrap());
    let mut listed = Vec::new();
    loop {
        let page = f.store.list_api_keys(a.id, &request).await.unwrap();
        listed.extend(page.items.iter().map(|k| k.id));
        match page.next {
            Some(cursor) => request = request.after(cursor),
            None => break,
        }
    }
    assert_eq!(listed, created);

    assert!(matches!(
        f.store.revoke_api_key(b.id, first.id, now()).await,
        Err(StoreError::NotFound(Entity::ApiKey))
    ));
    let at = now();
    let revoked = f.store.revoke_api_key(a.id, first.id, at).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(at));
    let again = f
        .store
        .revoke_api_key(a.id, first.id, at + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(again.revoked_at, Some(at));

    f.store
        .touch_api_key(first.id, at + Duration::minutes(5))
        .await
        .unwrap();
    f.store.touch_api_key(first.id, at).await.unwrap();
    assert_eq!(
        f.store.get_api_key(first.id).await.unwrap().last_used_at,
        Some(at + Duration::minutes(5))
    );
    assert!(matches!(
        f.store.touch_api_key(ApiKeyId::new(), at).await,
        Err(StoreError::NotFound(Entity::ApiKey))
    ));
}

/// One-time tokens: consumed once, only for their purpose, only before
/// expiry; none issued within the cooldown; earlier ones kept until one is
/// used; races have one winner.
pub async fn one_time_token_store(f: Fixture) {
    let (_, user) = seed(&*f.backend, "once", "once@example.com", &["owner"]).await;
    let t0 = now();
    let token = |purpose: TokenPurpose| OneTimeToken {
        token_hash: hash(),
        purpose,
        user_id: user.id,
        email: user.email.clone(),
        created_at: t0,
        expires_at: t0 + purpose.lifetime(),
        used_at: None,
    };
    let reset = token(TokenPurpose::PasswordReset);
    assert!(
        f.store
            .insert_one_time_token(&reset, t0 - Duration::minutes(5))
            .await
            .unwrap()
    );
    assert_eq!(
        f.store
            .find_one_time_token(&reset.token_hash)
            .await
            .unwrap(),
        Some(reset.clone())
    );
    assert_eq!(
        f.store
            .consume_one_time_token(&reset.token_hash, TokenPurpose::EmailVerification, t0)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        f.store
            .consume_one_time_token(
                &reset.token_hash,
                TokenPurpose::PasswordReset,
                t0 + Duration::hours(2)
            )
            .await
            .unwrap(),
        None
    );
    let used = f
        .store
        .consume_one_time_token(&reset.token_hash, TokenPurpose::PasswordReset, t0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.used_at, Some(t0));
    assert_eq!(
        f.store
            .consume_one_time_token(&reset.token_hash, TokenPurpose::PasswordReset, t0)
            .await
            .unwrap(),
        None
    );

    // Within the cooldown no second token is issued; after it one is, and
    // the older one stays valid until one of them is used.
    let older = token(TokenPurpose::EmailVerification);
    let mut within = token(TokenPurpose::EmailVerification);
    within.created_at = t0 + Duration::minutes(1);
    let mut newer = token(TokenPurpose::EmailVerification);
    newer.created_at = t0 + Duration::minutes(10);
    let cooldown = Duration::minutes(5);
    assert!(
        f.store
            .insert_one_time_token(&older, older.created_at - cooldown)
            .await
            .unwrap()
    );
    assert!(
        !f.store
            .insert_one_time_token(&within, within.created_at - cooldown)
            .await
            .unwrap()
    );
    assert_eq!(
        f.store
            .find_one_time_token(&within.token_hash)
            .await
            .unwrap(),
        None
    );
    assert!(
        f.store
            .insert_one_time_token(&newer, newer.created_at - cooldown)
            .await
            .unwrap()
    );
    for kept in [&older, &newer, &reset] {
        assert!(
            f.store
                .find_one_time_token(&kept.token_hash)
                .await
                .unwrap()
                .is_some()
        );
    }
    // Using the older one spends the newer one, not the reset token.
    assert!(
        f.store
            .consume_one_time_token(&older.token_hash, TokenPurpose::EmailVerification, t0)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        f.store
            .find_one_time_token(&newer.token_hash)
            .await
            .unwrap()
            .unwrap()
            .used_at
            .is_some()
    );

    let racing = token(TokenPurpose::EmailVerification);
    assert!(
        f.store
            .insert_one_time_token(&racing, racing.created_at - cooldown)
            .await
            .unwrap()
    );
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let store = Arc::clone(&f.store);
            let hash = racing.token_hash;
            tokio::spawn(async move {
                store
                    .consume_one_time_token(&hash, TokenPurpose::EmailVerification, t0)
                    .await
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        if task.await.unwrap().unwrap().is_some() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

/// Retention: what ended before the cutoff goes (sessions with their
/// refresh tokens, spent refresh tokens, throttle counters, used or
/// expired one-time tokens); what is live or recent stays.
pub async fn store_retention(f: Fixture) {
    let (tenant, user) = seed(&*f.backend, "purge", "purge@example.com", &["owner"]).await;
    let t0 = now();
    let (keep, keep_spent) = (Duration::minutes(30), Duration::hours(1));
    let created = |at| {
        let s = session(tenant.id, user.id, at);
        let h = hash();
        (s, h)
    };
    let (live, first) = created(t0 - Duration::hours(3));
    let (revoked_old, revoked_old_token) = created(t0 - Duration::hours(2));
    let (revoked_recent, _) = created(t0 - Duration::hours(2));
    let (idle_ended, idle_token) = created(t0 - Duration::days(2));
    for (s, h) in [
        (&live, first),
        (&revoked_old, revoked_old_token),
        (&revoked_recent, hash()),
        (&idle_ended, idle_token),
    ] {
        f.store.create_session(s, &record(s, h), 100).await.unwrap();
    }
    f.store
        .revoke_session(
            revoked_old.id,
            RevokeReason::Logout,
            t0 - Duration::hours(1),
        )
        .await
        .unwrap();
    f.store
        .revoke_session(
            revoked_recent.id,
            RevokeReason::Logout,
            t0 - Duration::minutes(10),
        )
        .await
        .unwrap();
    // The live session's family: one token spent long ago, one lately.
    let (second, current) = (hash(), hash());
    for (presented, next, at) in [
        (first, second, t0 - Duration::hours(2)),
        (second, current, t0 - Duration::minutes(5)),
    ] {
        assert!(matches!(
            f.store
                .rotate_refresh_token(&presented, &next, at, Duration::days(1))
                .await
                .unwrap(),
            RotateOutcome::Rotated(_)
        ));
    }
    let purged = SessionStore::purge_expired(&*f.store, t0, keep, keep_spent)
        .await
        .unwrap();
    assert_eq!((purged.sessions, purged.refresh_tokens), (2, 3));
    for gone in [revoked_old.id, idle_ended.id] {
        assert!(matches!(
            f.store.get_session(gone).await,
            Err(StoreError::NotFound(Entity::Session))
        ));
    }
    for kept in [live.id, revoked_recent.id] {
        f.store.get_session(kept).await.unwrap();
    }
    for (token, kept) in [
        (first, false),
        (revoked_old_token, false),
        (second, true),
        (current, true),
    ] {
        assert_eq!(
            f.store
                .find_session_by_refresh_token(&token)
                .await
                .unwrap()
                .is_some(),
            kept
        );
    }
    // Reuse of the recently spent token is still caught.
    assert!(matches!(
        f.store
            .rotate_refresh_token(&second, &hash(), t0, Duration::days(1))
            .await
            .unwrap(),
        RotateOutcome::Reused(_)
    ));
    assert_eq!(
        SessionStore::purge_expired(&*f.store, t0, keep, keep_spent)
            .await
            .unwrap(),
        crate::session::SessionPurge::default()
    );

    // Throttle counters: a window long over goes; a recent one and a lock
    // still running stay.
    let rule = ThrottleRule {
        max_failures: 1,
        window: Duration::minutes(15),
        lock_for: Duration::minutes(70),
    };
    let wide = ThrottleRule {
        max_failures: 100,
        ..rule
    };
    let (old, recent, locked) = (
        ThrottleKey::client("old"),
        ThrottleKey::client("recent"),
        ThrottleKey::client("locked"),
    );
    f.store
        .record_login_failure(&old, &wide, t0 - Duration::hours(2))
        .await
        .unwrap();
    f.store
        .record_login_failure(&recent, &wide, t0 - Duration::minutes(5))
        .await
        .unwrap();
    f.store
        .record_login_failure(&locked, &rule, t0 - Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(
        LockoutStore::purge_expired(&*f.store, t0, keep)
            .await
            .unwrap(),
        1
    );
    assert_eq!(f.store.throttle_state(&old).await.unwrap(), None);
    for kept in [&recent, &locked] {
        assert!(f.store.throttle_state(kept).await.unwrap().is_some());
    }

    // One-time tokens: used or expired before the cutoff go.
    let one_time = |created: time::OffsetDateTime, lifetime: Duration| OneTimeToken {
        token_hash: hash(),
        purpose: TokenPurpose::PasswordReset,
        user_id: user.id,
        email: user.email.clone(),
        created_at: created,
        expires_at: created + lifetime,
        used_at: None,
    };
    let used_long_ago = one_time(t0 - Duration::hours(3), Duration::hours(5));
    let expired = one_time(t0 - Duration::hours(3), Duration::hours(1));
    let used_lately = one_time(t0 - Duration::minutes(20), Duration::hours(1));
    let live_token = one_time(t0, Duration::hours(1));
    // Issued and used in turn (using one spends the unused others).
    for (token, used_at) in [
        (&used_long_ago, Some(t0 - Duration::hours(2))),
        (&expired, None),
        (&used_lately, Some(t0 - Duration::minutes(10))),
        (&live_token, None),
    ] {
        assert!(
            f.store
                .insert_one_time_token(token, token.created_at)
                .await
                .unwrap()
        );
        if let Some(at) = used_at {
            f.store
                .consume_one_time_token(&token.token_hash, TokenPurpose::PasswordReset, at)
                .await
                .unwrap()
                .unwrap();
        }
    }
    assert_eq!(
        OneTimeTokenStore::purge_expired(&*f.store, t0, keep)
            .await
            .unwrap(),
        2
    );
    for (token, kept) in [
        (&used_long_ago, false),
        (&expired, false),
        (&used_lately, true),
        (&live_token, true),
    ] {
        assert_eq!(
            f.store
                .find_one_time_token(&token.token_hash)
                .await
                .unwrap()
                .is_some(),
            kept
        );
    }
}
