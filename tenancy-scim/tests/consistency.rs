//! The User and Group workflows stay consistent when a concurrent request
//! wins a race: a lost versioned write changes no membership (nor any
//! role a group grants), and a create that
//! loses the account to another record leaves that record's membership in
//! place. The routes are served through `Tenancy::dispatch`, over a store
//! that loses the race on purpose.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::Ordering;

use http::{Method, StatusCode};
use serde_json::json;
use tenancy_core::{AuditContext, MembershipStatus, MembershipStore};
use tenancy_scim::{
    Deprovision, GROUP_SCHEMA, GroupRole, PATCH_OP, Scim, ScimConfig, ScimSettings,
};

use common::{App, user};

#[tokio::test]
async fn a_lost_versioned_write_leaves_the_membership_alone() {
    let app = App::start().await;
    let (status, created) = app
        .call(Method::POST, "/scim/v2/Users", Some(user("ann@race.test")))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let ann = app.account("ann@race.test").await;
    let path = format!("/scim/v2/Users/{}", created["id"].as_str().unwrap());
    let deactivate = json!({
        "schemas": [PATCH_OP],
        "Operations": [{ "op": "replace", "path": "active", "value": false }],
    });

    // A concurrent change wins the versioned write: nothing else happens.
    app.store.lose_next_update.store(true, Ordering::SeqCst);
    let (status, body) = app
        .call(Method::PATCH, &path, Some(deactivate.clone()))
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    assert_eq!(app.member_status(ann).await, Some(MembershipStatus::Active));
    let (_, current) = app.call(Method::GET, &path, None).await;
    assert_eq!(current["active"], true);

    // The retry goes through, record and membership together.
    let (status, body) = app.call(Method::PATCH, &path, Some(deactivate)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["active"], false);
    assert_eq!(
        app.member_status(ann).await,
        Some(MembershipStatus::Suspended)
    );
}

#[tokio::test]
async fn a_create_that_loses_the_account_keeps_the_winners_membership() {
    let app = App::start().await;
    app.store.lose_next_insert.store(true, Ordering::SeqCst);
    let (status, body) = app
        .call(Method::POST, "/scim/v2/Users", Some(user("bo@race.test")))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["scimType"], "uniqueness");
    // The winner's record provisions bo, and bo is still a member.
    let bo = app.account("bo@race.test").await;
    assert_eq!(app.member_status(bo).await, Some(MembershipStatus::Active));
    let (status, list) = app
        .call(
            Method::GET,
            "/scim/v2/Users?filter=userName%20eq%20%22winner-bo@race.test%22",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["totalResults"], 1);
}

#[tokio::test]
async fn a_filter_on_an_attribute_users_lack_is_refused() {
    let app = App::start().await;
    app.call(Method::POST, "/scim/v2/Users", Some(user("cy@race.test")))
        .await;
    for unknown in [
        "nosuch eq \"x\"",
        "emails[nosuch eq \"x\"]",
        "name.nosuch pr",
    ] {
        let path = format!(
            "/scim/v2/Users?filter={}",
            unknown.replace(' ', "%20").replace('"', "%22")
        );
        let (status, body) = app.call(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{unknown}: {body}");
        assert_eq!(body["scimType"], "invalidFilter", "{unknown}");
    }
    for known in [
        "userName eq \"cy@race.test\"",
        "emails[value eq \"cy@race.test\"]",
        "emails.value pr",
        "meta.lastModified gt \"2000-01-01T00:00:00Z\"",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department pr or active eq true",
    ] {
        let path = format!(
            "/scim/v2/Users?filter={}",
            known.replace(' ', "%20").replace('"', "%22")
        );
        let (status, body) = app.call(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{known}: {body}");
        assert_eq!(body["totalResults"], 1, "{known}: {body}");
    }
}

#[tokio::test]
async fn a_lost_group_write_changes_no_roles() {
    let app = App::start().await;
    let scim = app.tenancy.module::<Scim>().unwrap();
    let scope = app.tenancy.directory().scope(app.tenant).await.unwrap();
    scim.update_settings(
        &app.tenancy,
        &scope,
        ScimSettings {
            deprovision: Deprovision::Suspend,
            group_roles: vec![GroupRole {
                group: "Admins".into(),
                role: tenancy_core::RoleName::ADMIN,
            }],
        },
        &AuditContext::system(),
    )
    .await
    .unwrap();
    let (_, created) = app
        .call(Method::POST, "/scim/v2/Users", Some(user("di@race.test")))
        .await;
    let di = app.account("di@race.test").await;
    let (status, group) = app
        .call(
            Method::POST,
            "/scim/v2/Groups",
            Some(json!({
                "schemas": [GROUP_SCHEMA],
                "displayName": "Admins",
                "members": [{ "value": created["id"] }],
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let roles = || async {
        app.tenancy
            .directory()
            .backend()
            .find_membership(app.tenant, di)
            .await
            .unwrap()
            .unwrap()
            .roles
    };
    assert!(roles().await.contains(&tenancy_core::RoleName::ADMIN));
    let path = format!("/scim/v2/Groups/{}", group["id"].as_str().unwrap());
    let remove = json!({
        "schemas": [PATCH_OP],
        "Operations": [{ "op": "remove", "path": "members" }],
    });
    app.store
        .lose_next_group_update
        .store(true, Ordering::SeqCst);
    let (status, body) = app.call(Method::PATCH, &path, Some(remove.clone())).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    assert!(
        roles().await.contains(&tenancy_core::RoleName::ADMIN),
        "the lost write changed no role"
    );
    let (status, body) = app.call(Method::PATCH, &path, Some(remove)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!roles().await.contains(&tenancy_core::RoleName::ADMIN));
}

#[tokio::test]
async fn a_mapping_change_that_would_demote_the_last_owner_changes_nothing() {
    let app = App::start_with(ScimConfig::default().with_owner_mapping(true)).await;
    let scim = app.tenancy.module::<Scim>().unwrap();
    let scope = app.tenancy.directory().scope(app.tenant).await.unwrap();
    let mapped = ScimSettings {
        deprovision: Deprovision::Remove,
        group_roles: vec![GroupRole {
            group: "Owners".into(),
            role: tenancy_core::RoleName::OWNER,
        }],
    };
    scim.update_settings(
        &app.tenancy,
        &scope,
        mapped.clone(),
        &AuditContext::system(),
    )
    .await
    .unwrap();
    let (_, created) = app
        .call(Method::POST, "/scim/v2/Users", Some(user("eve@race.test")))
        .await;
    let (status, group) = app
        .call(
            Method::POST,
            "/scim/v2/Groups",
            Some(json!({
                "schemas": [GROUP_SCHEMA],
                "displayName": "Owners",
                "members": [{ "value": created["id"] }],
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let eve = app.account("eve@race.test").await;
    let first = app.account("owner@race.test").await;
    app.tenancy
        .directory()
        .change_roles(
            &scope,
            first,
            tenancy_core::RoleSet::single(tenancy_core::RoleName::ADMIN),
            &AuditContext::system(),
        )
        .await
        .unwrap();
    // Eve owns the tenant through the group alone: the mapping stays.
    let refused = scim
        .update_settings(
            &app.tenancy,
            &scope,
            ScimSettings {
                deprovision: Deprovision::Suspend,
                group_roles: Vec::new(),
            },
            &AuditContext::system(),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        refused.detail.contains("last active owner"),
        "{}",
        refused.detail
    );
    assert_eq!(scim.tenant_settings(app.tenant).await.unwrap(), mapped);
    let roles = app
        .tenancy
        .directory()
        .backend()
        .find_membership(app.tenant, eve)
        .await
        .unwrap()
        .unwrap()
        .roles;
    assert!(roles.contains(&tenancy_core::RoleName::OWNER));
    // Without owner mapping, the setting itself is refused.
    let plain = App::start().await;
    let scim = plain.tenancy.module::<Scim>().unwrap();
    let scope = plain.tenancy.directory().scope(plain.tenant).await.unwrap();
    let refused = scim
        .update_settings(&plain.tenancy, &scope, mapped, &AuditContext::system())
        .await
        .unwrap_err();
    assert_eq!(
        refused.scim_type,
        Some(tenancy_scim::ScimType::InvalidValue)
    );
}
