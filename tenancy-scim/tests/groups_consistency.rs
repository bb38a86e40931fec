//! Groups keep the roles they grant consistent: racing group writes end
//! with the roles the store's final state grants, a versioned delete does
//! not drop a concurrent change, a role change that fails puts the group
//! back, a repeated request repairs roles an earlier failure left behind,
//! and deleting a user bumps its groups' versions. The routes are served
//! through `Tenancy::dispatch`, over a store that races on purpose.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::Ordering;

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use tenancy_core::{AuditContext, MembershipStore, RoleName, RoleSet, UserId};
use tenancy_scim::{
    Deprovision, GROUP_SCHEMA, GroupRole, PATCH_OP, Scim, ScimConfig, ScimSettings, ScimStoreError,
    TenantSettings,
};
use time::OffsetDateTime;
use uuid::Uuid;

use common::{App, user};

impl App {
    async fn roles(&self, u: UserId) -> RoleSet {
        self.tenancy
            .directory()
            .backend()
            .find_membership(self.tenant, u)
            .await
            .unwrap()
            .unwrap()
            .roles
    }

    async fn map(&self, roles: Vec<(&str, RoleName)>) {
        let scim = self.tenancy.module::<Scim>().unwrap();
        let scope = self.tenancy.directory().scope(self.tenant).await.unwrap();
        scim.update_settings(
            &self.tenancy,
            &scope,
            ScimSettings {
                deprovision: Deprovision::Suspend,
                group_roles: roles
                    .into_iter()
                    .map(|(g, r)| GroupRole {
                        group: g.into(),
                        role: r,
                    })
                    .collect(),
            },
            &AuditContext::system(),
        )
        .await
        .unwrap();
    }

    /// Creates a group with `members` (User resources); its path.
    async fn group(&self, name: &str, members: &[&Value]) -> String {
        let members: Vec<Value> = members.iter().map(|m| json!({"value": m["id"]})).collect();
        let (s, g) = self
            .call(
                Method::POST,
                "/scim/v2/Groups",
                Some(json!({"schemas": [GROUP_SCHEMA], "displayName": name, "members": members})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{g}");
        format!("/scim/v2/Groups/{}", g["id"].as_str().unwrap())
    }

    /// Creates a User resource; it and its account.
    async fn user(&self, email: &str) -> (Value, UserId) {
        let (s, u) = self
            .call(Method::POST, "/scim/v2/Users", Some(user(email)))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{u}");
        (u, self.account(email).await)
    }

    async fn members(&self, group: &str) -> Vec<String> {
        let (s, g) = self.call(Method::GET, group, None).await;
        assert_eq!(s, StatusCode::OK, "{g}");
        g["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|m| m["value"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn patch(op: &str, value: Value) -> Value {
    json!({"schemas": [PATCH_OP], "Operations": [{"op": op, "path": "members", "value": value}]})
}

fn remove_all() -> Value {
    json!({"schemas": [PATCH_OP], "Operations": [{"op": "remove", "path": "members"}]})
}

/// Finding 1: two PATCHes of two groups that both grant `admin` each
/// used to plan against the other group's old state, so the user kept
/// `admin` with no group granting it.
#[tokio::test]
async fn racing_writes_to_two_groups_leave_the_roles_the_final_state_grants() {
    let app = App::start().await;
    app.map(vec![("A", RoleName::ADMIN), ("B", RoleName::ADMIN)])
        .await;
    let (u, uid) = app.user("u@race.test").await;
    let a = app.group("A", &[&u]).await;
    let b = app.group("B", &[&u]).await;
    assert!(app.roles(uid).await.contains(&RoleName::ADMIN));
    app.store.barrier_updates.store(true, Ordering::SeqCst);
    let (ra, rb) = tokio::join!(
        app.call(Method::PATCH, &a, Some(remove_all())),
        app.call(Method::PATCH, &b, Some(remove_all()))
    );
    app.store.barrier_updates.store(false, Ordering::SeqCst);
    assert_eq!(ra.0, StatusCode::OK, "{}", ra.1);
    assert_eq!(rb.0, StatusCode::OK, "{}", rb.1);
    assert!(app.members(&a).await.is_empty() && app.members(&b).await.is_empty());
    assert_eq!(app.roles(uid).await, RoleSet::single(RoleName::MEMBER));
}

/// Finding 1: a settings change mapping a group raced a PATCH adding a
/// member to it; each planned against the other's old state, so the new
/// member never got the role.
#[tokio::test]
async fn a_settings_change_racing_a_group_patch_leaves_the_roles_the_final_state_grants() {
    let app = App::start().await;
    let (u, uid) = app.user("u@race.test").await;
    let g = app.group("A", &[]).await;
    app.store.barrier_updates.store(true, Ordering::SeqCst);
    let add = patch("add", json!([{"value": u["id"]}]));
    let ((s, b), ()) = tokio::join!(
        app.call(Method::PATCH, &g, Some(add)),
        app.map(vec![("A", RoleName::ADMIN)])
    );
    app.store.barrier_updates.store(false, Ordering::SeqCst);
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(app.roles(uid).await.contains(&RoleName::ADMIN));
}

/// Finding 2: a DELETE racing a PATCH that adds a member used to delete
/// the group regardless of the PATCH, leaving the new member `admin`.
#[tokio::test]
async fn a_delete_racing_a_patch_never_leaves_a_role_no_group_grants() {
    let app = App::start().await;
    app.map(vec![("Admins", RoleName::ADMIN)]).await;
    let (u, uid) = app.user("u@race.test").await;
    let (v, _) = app.user("v@race.test").await;
    let g = app.group("Admins", &[&v]).await;
    app.store.hold_delete.store(true, Ordering::SeqCst);
    let add = patch("add", json!([{"value": u["id"]}]));
    let (del, patched) = tokio::join!(app.call(Method::DELETE, &g, None), async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        app.call(Method::PATCH, &g, Some(add)).await
    });
    app.store.hold_delete.store(false, Ordering::SeqCst);
    // Exactly one of the two wins.
    assert!(
        (del.0 == StatusCode::NO_CONTENT) != (patched.0 == StatusCode::OK),
        "delete {} / patch {}",
        del.0,
        patched.0
    );
    let (s, _) = app.call(Method::GET, &g, None).await;
    let in_group = s == StatusCode::OK
        && app
            .members(&g)
            .await
            .contains(&u["id"].as_str().unwrap().to_owned());
    assert_eq!(
        app.roles(uid).await.contains(&RoleName::ADMIN),
        in_group,
        "admin iff in the group"
    );
}

/// Finding 2: a stale version deletes nothing (412).
#[tokio::test]
async fn a_delete_with_a_stale_version_is_refused() {
    let app = App::start().await;
    let g = app.group("Plain", &[]).await;
    let (_, before) = app.call(Method::GET, &g, None).await;
    let stale = before["meta"]["version"].as_str().unwrap().to_owned();
    let (s, b) = app
        .call(
            Method::PATCH,
            &g,
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "replace", "path": "externalId", "value": "x"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // The store refuses what the stale version names.
    let scim = app.tenancy.module::<Scim>().unwrap();
    let id: Uuid = g.rsplit('/').next().unwrap().parse().unwrap();
    let current = scim
        .store()
        .get_group(app.tenant, id)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        scim.store()
            .delete_group(app.tenant, id, current.version - 1)
            .await,
        Err(ScimStoreError::VersionMismatch)
    ));
    let mut headers = HeaderMap::new();
    headers.insert(header::IF_MATCH, HeaderValue::from_str(&stale).unwrap());
    let (s, _) = app.call_with(Method::DELETE, &g, None, headers).await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    assert_eq!(app.call(Method::GET, &g, None).await.0, StatusCode::OK);
}

/// Finding 3: a suspended member was counted as a new owner, so the only
/// active owner's removal went through halfway: the group was written and
/// the suspended member made owner before the directory refused.
#[tokio::test]
async fn a_suspended_member_is_no_new_owner_and_a_refusal_changes_nothing() {
    let app = App::start_with(ScimConfig::default().with_owner_mapping(true)).await;
    app.map(vec![("Owners", RoleName::OWNER)]).await;
    let (eve, eve_id) = app.user("eve@race.test").await;
    let (sam, sam_id) = app.user("sam@race.test").await;
    let g = app.group("Owners", &[&eve]).await;
    let scope = app.tenancy.directory().scope(app.tenant).await.unwrap();
    let first = app.account("owner@race.test").await;
    app.tenancy
        .directory()
        .change_roles(
            &scope,
            first,
            RoleSet::single(RoleName::ADMIN),
            &AuditContext::system(),
        )
        .await
        .unwrap();
    let sam_path = format!("/scim/v2/Users/{}", sam["id"].as_str().unwrap());
    let (s, b) = app
        .call(
            Method::PATCH,
            &sam_path,
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "replace", "path": "active", "value": false}]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let replace = patch("replace", json!([{"value": sam["id"]}]));
    for _ in 0..2 {
        let (s, b) = app.call(Method::PATCH, &g, Some(replace.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert_eq!(b["scimType"], "mutability");
        assert_eq!(
            app.members(&g).await,
            vec![eve["id"].as_str().unwrap().to_owned()]
        );
        assert!(app.roles(eve_id).await.contains(&RoleName::OWNER));
        assert!(!app.roles(sam_id).await.contains(&RoleName::OWNER));
    }
}

/// Finding 3: when the role change fails after the group was written, the
/// group is put back, so "nothing was changed" holds.
#[tokio::test]
async fn a_role_change_that_fails_after_the_write_puts_the_group_back() {
    let app = App::start().await;
    app.map(vec![("Admins", RoleName::ADMIN)]).await;
    let (u, uid) = app.user("u@race.test").await;
    let (v, vid) = app.user("v@race.test").await;
    let g = app.group("Admins", &[&u]).await;
    app.store
        .break_after_group_write
        .store(true, Ordering::SeqCst);
    let (s, b) = app
        .call(
            Method::PATCH,
            &g,
            Some(patch("replace", json!([{"value": v["id"]}]))),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert_eq!(
        app.members(&g).await,
        vec![u["id"].as_str().unwrap().to_owned()]
    );
    assert!(app.roles(uid).await.contains(&RoleName::ADMIN));
    assert!(!app.roles(vid).await.contains(&RoleName::ADMIN));
}

/// Finding 3: a repeated request recomputes its members' roles against
/// what they hold now, so it repairs roles an earlier failure left wrong.
#[tokio::test]
async fn a_repeated_request_repairs_roles_left_behind() {
    let app = App::start().await;
    app.map(vec![("Admins", RoleName::ADMIN)]).await;
    let (u, uid) = app.user("u@race.test").await;
    let g = app.group("Admins", &[&u]).await;
    // An earlier partial failure left the member without the role.
    let scope = app.tenancy.directory().scope(app.tenant).await.unwrap();
    app.tenancy
        .directory()
        .change_roles(
            &scope,
            uid,
            RoleSet::single(RoleName::MEMBER),
            &AuditContext::system(),
        )
        .await
        .unwrap();
    let (s, b) = app
        .call(
            Method::PATCH,
            &g,
            Some(patch("replace", json!([{"value": u["id"]}]))),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(app.roles(uid).await.contains(&RoleName::ADMIN));
}

/// Finding 6: an `owner` mapping stored while owner mapping was on kept
/// minting owners after the app turned it off.
#[tokio::test]
async fn an_owner_mapping_grants_nothing_while_owner_mapping_is_off() {
    let app = App::start().await;
    let scim = app.tenancy.module::<Scim>().unwrap();
    // Stored while the flag was on.
    scim.store()
        .put_settings(&TenantSettings {
            tenant_id: app.tenant,
            deprovision: Deprovision::Suspend,
            group_roles: vec![GroupRole {
                group: "Owners".into(),
                role: RoleName::OWNER,
            }],
            updated_at: tenancy_core::truncate_to_micros(OffsetDateTime::now_utc()),
        })
        .await
        .unwrap();
    let (u, uid) = app.user("u@race.test").await;
    app.group("Owners", &[&u]).await;
    assert_eq!(app.roles(uid).await, RoleSet::single(RoleName::MEMBER));
}

/// Finding 7: deleting a User removed it from its groups without changing
/// their version, so an ETag still matched a group that had changed.
#[tokio::test]
async fn deleting_a_user_bumps_its_groups_versions() {
    let app = App::start().await;
    let (u, _) = app.user("u@race.test").await;
    let g = app.group("Plain", &[&u]).await;
    let (_, before) = app.call(Method::GET, &g, None).await;
    let (s, _) = app
        .call(
            Method::DELETE,
            &format!("/scim/v2/Users/{}", u["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, after) = app.call(Method::GET, &g, None).await;
    assert!(after.get("members").is_none());
    assert_ne!(before["meta"]["version"], after["meta"]["version"]);
    assert_ne!(
        before["meta"]["lastModified"],
        after["meta"]["lastModified"]
    );
}

/// Finding 5: a request naming more than 1,000 members, or a group growing
/// past `ScimConfig::max_group_members`, is `400 invalidValue`.
#[tokio::test]
async fn member_counts_are_capped() {
    let app = App::start_with(ScimConfig::default().with_max_group_members(2)).await;
    let (a, _) = app.user("a@race.test").await;
    let (b, _) = app.user("b@race.test").await;
    let (c, _) = app.user("c@race.test").await;
    let g = app.group("Capped", &[&a, &b]).await;
    let (s, body) = app
        .call(
            Method::PATCH,
            &g,
            Some(patch("add", json!([{"value": c["id"]}]))),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["scimType"], "invalidValue");
    assert_eq!(app.members(&g).await.len(), 2);
    let many: Vec<Value> = (0..=tenancy_scim::MAX_MEMBERS_PER_REQUEST)
        .map(|_| json!({"value": Uuid::now_v7().to_string()}))
        .collect();
    let (s, body) = app
        .call(
            Method::POST,
            "/scim/v2/Groups",
            Some(json!({"schemas": [GROUP_SCHEMA], "displayName": "Many", "members": many})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["scimType"], "invalidValue");
    // Split across operations of one PATCH, too.
    let half: Vec<Value> = many[..600].to_vec();
    let (s, body) = app
        .call(
            Method::PATCH,
            &g,
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "remove", "path": "members", "value": half},
                {"op": "remove", "path": "members", "value": half},
            ]})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
}
