//! The store conformance suite and the SCIM HTTP scenarios (feature
//! `testkit`).
//!
//! - [`store_suite`] runs the same assertions against any [`ScimStore`].
//! - [`scim_scenarios!`](crate::scim_scenarios) generates, for a framework
//!   integration's `start` function (the one it passes to
//!   `tenancy_http::http_scenarios!`), one test per SCIM scenario on the
//!   in-memory stores and on Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod group_scenarios;
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
use crate::module::Deprovision;
use crate::module::Scim;
use crate::store::{GroupRecord, GroupRole, ScimStore, ScimToken, TenantSettings, UserRecord};

pub use group_scenarios::*;
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

/// As [`with_scim`], with [`crate::ScimConfig::allow_owner_mapping`] on.
pub fn with_scim_owner_mapping(builder: TenancyBuilder, setup: &Setup) -> TenancyBuilder {
    let config = crate::ScimConfig::default().with_owner_mapping(true);
    #[cfg(feature = "postgres")]
    if let Some(pool) = &setup.pool {
        return builder.module(Scim::postgres(pool.clone()).with_config(config));
    }
    let _ = setup;
    builder.module(Scim::memory().with_config(config))
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
/// record per account, versioned updates, deletion), groups (unique
/// `displayName`, members only from the tenant, versioned updates, removal
/// with the user record), settings, and tenant isolation.
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

    group_cases(&directory, &*store).await;
    settings_cases(a, b, &*store).await;
}

fn group(tenant: TenantId, name: &str, members: &[Uuid], seconds: i64) -> GroupRecord {
    GroupRecord {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        display_name: name.into(),
        external_id: Some(format!("ext-{name}")),
        members: members.to_vec(),
        version: 1,
        created_at: at(seconds),
        updated_at: at(seconds),
    }
}

/// Groups: case-insensitive `displayName` uniqueness per tenant, members
/// only from the tenant's user records (kept sorted), versioned updates,
/// deleting a user record removes it from its groups, isolation.
async fn group_cases(directory: &Directory, store: &dyn ScimStore) {
    let (a, a_owner) = tenant(directory, "scim-ga").await;
    let (b, b_owner) = tenant(directory, "scim-gb").await;
    let (_, other) = tenant(directory, "scim-gc").await;
    let first = record(a, a_owner, "first@example.test", 0);
    let second = record(a, other, "second@example.test", 1);
    let stranger = record(b, b_owner, "stranger@example.test", 2);
    for r in [&first, &second, &stranger] {
        store.insert_user(r).await.unwrap();
    }
    let mut admins = group(
        a,
        "Engineering Admins",
        &[second.id, first.id, second.id],
        10,
    );
    store.insert_group(&admins).await.unwrap();
    admins.normalize();
    assert_eq!(
        store.get_group(a, admins.id).await.unwrap(),
        Some(admins.clone())
    );
    let mut expected = vec![first.id, second.id];
    expected.sort_unstable();
    assert_eq!(admins.members, expected, "members are kept sorted, once");
    assert!(matches!(
        store
            .insert_group(&group(a, "engineering ADMINS", &[], 11))
            .await,
        Err(ScimStoreError::Conflict)
    ));
    for foreign in [stranger.id, Uuid::now_v7()] {
        assert!(matches!(
            store.insert_group(&group(a, "Leaky", &[foreign], 12)).await,
            Err(ScimStoreError::UnknownMember)
        ));
    }
    assert!(
        store
            .list_groups(a)
            .await
            .unwrap()
            .iter()
            .all(|g| g.display_name != "Leaky")
    );
    let in_b = group(b, "Engineering Admins", &[stranger.id], 13);
    store.insert_group(&in_b).await.unwrap();
    let plain = group(a, "Everyone", &[first.id], 14);
    store.insert_group(&plain).await.unwrap();
    assert_eq!(
        store.get_group(b, admins.id).await.unwrap(),
        None,
        "other tenant"
    );
    let ids = |groups: Vec<GroupRecord>| groups.into_iter().map(|g| g.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_groups(a).await.unwrap()),
        vec![admins.id, plain.id]
    );
    assert_eq!(
        ids(store.groups_of(a, first.id).await.unwrap()),
        vec![admins.id, plain.id]
    );
    assert_eq!(
        ids(store.groups_of(a, second.id).await.unwrap()),
        vec![admins.id]
    );
    assert!(store.groups_of(b, first.id).await.unwrap().is_empty());

    let mut renamed = admins.clone();
    renamed.display_name = "Admins".into();
    renamed.members = vec![second.id];
    renamed.version = 2;
    renamed.updated_at = at(20);
    store.update_group(&renamed, 1).await.unwrap();
    assert_eq!(
        store.get_group(a, admins.id).await.unwrap(),
        Some(renamed.clone())
    );
    assert!(matches!(
        store.update_group(&renamed, 1).await,
        Err(ScimStoreError::VersionMismatch)
    ));
    let mut elsewhere = renamed.clone();
    elsewhere.tenant_id = b;
    assert!(matches!(
        store.update_group(&elsewhere, 2).await,
        Err(ScimStoreError::NotFound)
    ));
    let mut taken = renamed.clone();
    taken.display_name = "EVERYONE".into();
    taken.version = 3;
    assert!(matches!(
        store.update_group(&taken, 2).await,
        Err(ScimStoreError::Conflict)
    ));
    let mut leaky = renamed.clone();
    leaky.members = vec![second.id, stranger.id];
    leaky.version = 3;
    assert!(matches!(
        store.update_group(&leaky, 2).await,
        Err(ScimStoreError::UnknownMember)
    ));
    assert_eq!(
        store.get_group(a, admins.id).await.unwrap(),
        Some(renamed.clone()),
        "refused updates change nothing"
    );

    // Deleting a user record removes it from its groups, bumping their
    // version and lastModified; other groups keep theirs.
    store.delete_user(a, first.id).await.unwrap();
    let left = store.get_group(a, plain.id).await.unwrap().unwrap();
    assert!(left.members.is_empty());
    assert_eq!(left.version, plain.version + 1, "the ETag changes");
    assert!(left.updated_at > plain.updated_at);
    let kept = store.get_group(a, admins.id).await.unwrap().unwrap();
    if !kept.members.contains(&first.id) {
        assert_eq!(kept.version, renamed.version);
    }
    assert!(store.groups_of(a, first.id).await.unwrap().is_empty());

    let version = store
        .get_group(a, admins.id)
        .await
        .unwrap()
        .unwrap()
        .version;
    assert!(matches!(
        store.delete_group(b, admins.id, version).await,
        Err(ScimStoreError::NotFound)
    ));
    // A delete is versioned like an update: a stale version deletes nothing.
    assert!(matches!(
        store.delete_group(a, admins.id, version - 1).await,
        Err(ScimStoreError::VersionMismatch)
    ));
    assert!(store.get_group(a, admins.id).await.unwrap().is_some());
    store.delete_group(a, admins.id, version).await.unwrap();
    assert_eq!(store.get_group(a, admins.id).await.unwrap(), None);
    assert!(matches!(
        store.delete_group(a, admins.id, version).await,
        Err(ScimStoreError::NotFound)
    ));
    assert_eq!(ids(store.list_groups(b).await.unwrap()), vec![in_b.id]);
    // The record survives its group.
    assert!(store.get_user(a, second.id).await.unwrap().is_some());
}

/// Settings: none until saved, replaced on save, per tenant.
async fn settings_cases(a: TenantId, b: TenantId, store: &dyn ScimStore) {
    assert_eq!(store.get_settings(a).await.unwrap(), None);
    let mut settings = TenantSettings {
        tenant_id: a,
        deprovision: Deprovision::Remove,
        group_roles: vec![GroupRole {
            group: "Engineering Admins".into(),
            role: tenancy_core::RoleName::ADMIN,
        }],
        updated_at: at(50),
    };
    store.put_settings(&settings).await.unwrap();
    assert_eq!(store.get_settings(a).await.unwrap(), Some(settings.clone()));
    settings.deprovision = Deprovision::Suspend;
    settings.group_roles.clear();
    settings.updated_at = at(60);
    store.put_settings(&settings).await.unwrap();
    assert_eq!(store.get_settings(a).await.unwrap(), Some(settings));
    assert_eq!(store.get_settings(b).await.unwrap(), None, "other tenant");
}

/// Generates one test per SCIM scenario for `$start`, on memory and on
/// Postgres.
#[macro_export]
macro_rules! scim_scenarios {
    ($start:ident) => {
        $crate::scim_scenarios!(@stores $start, with_scim, scim_memory, scim_postgres;
            scim_tokens_and_discovery, scim_user_lifecycle, scim_deprovisioning_ends_access,
            scim_lists_filters_and_pages, scim_patch_as_identity_providers_send,
            scim_tenants_are_isolated, scim_errors,
            scim_group_lifecycle, scim_group_roles_follow_the_mapping, scim_groups_are_isolated,
            scim_deprovisioning_follows_the_tenant_setting,
            scim_settings_changes_need_rank_over_old_and_new_roles,
            scim_control_characters_are_refused
        );
        $crate::scim_scenarios!(@stores $start, with_scim_owner_mapping, scim_owner_mapping_memory,
            scim_owner_mapping_postgres;
            scim_groups_keep_the_last_owner
        );
    };
    (@stores $start:ident, $setup:ident, $memory:ident, $postgres:ident; $($scenario:ident),+ $(,)?) => {
        mod $memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let app = ::tenancy_http::testkit::TestApp::launch_with(
                        ::tenancy_http::testkit::Stores::Memory, super::$start, &[], $crate::testkit::$setup,
                    )
                    .await
                    .expect("memory app");
                    $crate::testkit::$scenario(&app).await;
                }
            )+
        }
        mod $postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    if let Some(app) = ::tenancy_http::testkit::TestApp::launch_with(
                        ::tenancy_http::testkit::Stores::Postgres, super::$start, &[], $crate::testkit::$setup,
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
