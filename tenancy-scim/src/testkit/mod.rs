//! The store conformance suite and the SCIM HTTP scenarios (feature
//! `testkit`).
//!
//! - [`store_suite`] runs the same assertions against any [`ScimStore`].
//! - [`scim_scenarios!`](crate::scim_scenarios) generates, for a framework
//!   integration's `start` function (the one it passes to
//!   `tenancy_http::http_scenarios!`), one test per SCIM scenario on the
//!   in-memory stores and on Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod scenarios;

use std::sync::Arc;

use serde_json::{Map, json};
use tenancy_core::{
    Actor, Backend, Directory, Email, NewTenant, NewUser, Owner, ScimTokenId, Slug, TenantId,
    TenantName, TokenHash, UserId,
};
use tenancy_http::TenancyBuilder;
use tenancy_http::testkit::Setup;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::error::ScimStoreError;
use crate::module::Scim;
use crate::store::{ScimStore, ScimToken, UserRecord};

pub use scenarios::*;

/// Adds the SCIM module to a scenario app, on the app's own backing.
pub fn with_scim(builder: TenancyBuilder, setup: &Setup) -> TenancyBuilder {
    #[cfg(feature = "postgres")]
    if let Some(pool) = &setup.pool {
        return builder.module(Scim::postgres(pool.clone()));
    }
    let _ = setup;
    builder.module(Scim::memory())
}

async fn tenant(directory: &Directory, slug: &str) -> (TenantId, UserId) {
    let created = directory
        .create_tenant(
            NewTenant::new(Slug::new(slug).unwrap(), TenantName::new(slug).unwrap()),
            Owner::New(NewUser::new(
                Email::new(&format!("owner@{slug}.test")).unwrap(),
            )),
            &tenancy_core::AuditContext::system(),
        )
        .await
        .unwrap();
    (created.tenant.id, created.membership.user_id)
}

fn at(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_767_225_600 + seconds).unwrap()
}

fn token(tenant: TenantId, secret: &str, seconds: i64) -> ScimToken {
    ScimToken {
        id: ScimTokenId::new(),
        tenant_id: tenant,
        name: "okta".into(),
        secret_hash: TokenHash::of(secret.as_bytes()),
        created_by: Actor::System,
        created_at: at(seconds),
        last_used_at: None,
        revoked_at: None,
    }
}

fn record(tenant: TenantId, user: UserId, name: &str, seconds: i64) -> UserRecord {
    let mut attributes = Map::new();
    attributes.insert("displayName".into(), json!(name));
    UserRecord {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        user_id: user,
        user_name: name.into(),
        external_id: Some(format!("ext-{name}")),
        active: true,
        attributes,
        version: 1,
        created_at: at(seconds),
        updated_at: at(seconds),
    }
}

/// The conformance suite: tokens (lookup by hash, per-tenant listing and
/// revocation), user records (case-insensitive `userName` uniqueness, one
/// record per account, versioned updates, deletion) and tenant isolation.
/// `backend` provides the tenants and accounts the records point at.
pub async fn store_suite(backend: Arc<dyn Backend>, store: Arc<dyn ScimStore>) {
    let directory = Directory::new(backend);
    let (a, a_owner) = tenant(&directory, "scim-a").await;
    let (b, b_owner) = tenant(&directory, "scim-b").await;

    // Tokens.
    let first = token(a, "secret-one", 0);
    let second = token(a, "secret-two", 1);
    let other = token(b, "secret-three", 2);
    for t in [&first, &second, &other] {
        store.insert_token(t).await.unwrap();
    }
    let mut clash = token(b, "secret-one", 3);
    clash.name = "copy".into();
    assert!(matches!(
        store.insert_token(&clash).await,
        Err(ScimStoreError::Conflict)
    ));
    let found = store
        .find_token(&TokenHash::of(b"secret-two"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, second);
    assert!(
        store
            .find_token(&TokenHash::of(b"nope"))
            .await
            .unwrap()
            .is_none()
    );
    let listed: Vec<_> = store
        .list_tokens(a)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, vec![first.id, second.id]);
    assert!(matches!(
        store.revoke_token(b, first.id, at(10)).await,
        Err(ScimStoreError::NotFound)
    ));
    let revoked = store.revoke_token(a, first.id, at(10)).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(at(10)));
    let again = store.revoke_token(a, first.id, at(20)).await.unwrap();
    assert_eq!(
        again.revoked_at,
        Some(at(10)),
        "the first revocation time stays"
    );
    store.touch_token(second.id, at(30)).await.unwrap();
    let touched = store
        .find_token(&second.secret_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(touched.last_used_at, Some(at(30)));

    // User records.
    let ada = record(a, a_owner, "Ada@Example.test", 0);
    store.insert_user(&ada).await.unwrap();
    let same_name = record(a, UserId::new(), "ada@example.TEST", 1);
    assert!(matches!(
        store.insert_user(&same_name).await,
        Err(ScimStoreError::Conflict)
    ));
    let same_account = record(a, a_owner, "other@example.test", 1);
    assert!(matches!(
        store.insert_user(&same_account).await,
        Err(ScimStoreError::Conflict)
    ));
    // Another tenant may use the name and the account.
    let in_b = record(b, a_owner, "ada@example.test", 2);
    store.insert_user(&in_b).await.unwrap();
    let bob = record(b, b_owner, "bob@example.test", 3);
    store.insert_user(&bob).await.unwrap();

    assert_eq!(store.get_user(a, ada.id).await.unwrap(), Some(ada.clone()));
    assert_eq!(
        store.get_user(b, ada.id).await.unwrap(),
        None,
        "other tenant"
    );
    assert_eq!(
        store
            .find_user_by_name(a, "ADA@EXAMPLE.TEST")
            .await
            .unwrap()
            .map(|r| r.id),
        Some(ada.id)
    );
    assert_eq!(
        store
            .find_user_by_account(b, a_owner)
            .await
            .unwrap()
            .map(|r| r.id),
        Some(in_b.id)
    );
    let ids: Vec<_> = store
        .list_users(b)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec![in_b.id, bob.id]);

    let mut changed = ada.clone();
    changed.active = false;
    changed.version = 2;
    changed.updated_at = at(40);
    changed.attributes.insert("title".into(), json!("Countess"));
    store.update_user(&changed, 1).await.unwrap();
    assert_eq!(
        store.get_user(a, ada.id).await.unwrap(),
        Some(changed.clone())
    );
    assert!(matches!(
        store.update_user(&changed, 1).await,
        Err(ScimStoreError::VersionMismatch)
    ));
    let mut stranger = changed.clone();
    stranger.tenant_id = b;
    assert!(matches!(
        store.update_user(&stranger, 2).await,
        Err(ScimStoreError::NotFound)
    ));
    let carol = record(a, b_owner, "carol@example.test", 5);
    store.insert_user(&carol).await.unwrap();
    let mut taken = carol.clone();
    taken.user_name = "ADA@example.test".into();
    taken.version = 2;
    assert!(matches!(
        store.update_user(&taken, 1).await,
        Err(ScimStoreError::Conflict)
    ));

    assert!(matches!(
        store.delete_user(b, ada.id).await,
        Err(ScimStoreError::NotFound)
    ));
    store.delete_user(a, ada.id).await.unwrap();
    assert_eq!(store.get_user(a, ada.id).await.unwrap(), None);
    assert!(matches!(
        store.delete_user(a, ada.id).await,
        Err(ScimStoreError::NotFound)
    ));
    // The name is free again.
    let mut reuse = record(a, a_owner, "ada@example.test", 6);
    reuse.created_at += Duration::SECOND;
    store.insert_user(&reuse).await.unwrap();
}

/// Generates one test per SCIM scenario for `$start`, on memory and on
/// Postgres.
#[macro_export]
macro_rules! scim_scenarios {
    ($start:ident) => {
        $crate::scim_scenarios!(@stores $start;
            scim_tokens_and_discovery, scim_user_lifecycle, scim_deprovisioning_ends_access,
            scim_lists_filters_and_pages, scim_patch_as_identity_providers_send,
            scim_tenants_are_isolated, scim_errors
        );
    };
    (@stores $start:ident; $($scenario:ident),+ $(,)?) => {
        mod scim_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let app = ::tenancy_http::testkit::TestApp::launch_with(
                        ::tenancy_http::testkit::Stores::Memory, super::$start, &[], $crate::testkit::with_scim,
                    )
                    .await
                    .expect("memory app");
                    $crate::testkit::$scenario(&app).await;
                }
            )+
        }
        mod scim_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    if let Some(app) = ::tenancy_http::testkit::TestApp::launch_with(
                        ::tenancy_http::testkit::Stores::Postgres, super::$start, &[], $crate::testkit::with_scim,
                    )
                    .await
                    {
                        $crate::testkit::$scenario(&app).await;
                    }
                }
            )+
        }
    };
}
