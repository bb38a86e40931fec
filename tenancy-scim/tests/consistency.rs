//! The User and Group workflows stay consistent when a concurrent request
//! wins a race: a lost versioned write changes no membership (nor any
//! role a group grants), and a create that
//! loses the account to another record leaves that record's membership in
//! place. The routes are served through `Tenancy::dispatch`, over a store
//! that loses the race on purpose.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use tenancy_core::{
    AuditContext, Email, MembershipStatus, MembershipStore, NewTenant, NewUser, Owner, ScimTokenId,
    Slug, TenantId, TenantName, TokenHash, UserId, UserStore,
};
use tenancy_http::auth::AuthConfig;
use tenancy_http::authz::Catalog;
use tenancy_http::{ApiRequest, Tenancy, async_trait};
use tenancy_scim::store::MemoryScimStore;
use tenancy_scim::{
    Deprovision, GROUP_SCHEMA, GroupRecord, GroupRole, PATCH_OP, Scim, ScimConfig, ScimSettings,
    ScimStore, ScimStoreError, ScimToken, TenantSettings, USER_SCHEMA, UserRecord,
};
use time::OffsetDateTime;
use uuid::Uuid;

/// A memory store that, when told to, loses the next write to a
/// concurrent request.
#[derive(Default)]
struct Racing {
    inner: MemoryScimStore,
    lose_next_update: AtomicBool,
    lose_next_insert: AtomicBool,
    lose_next_group_update: AtomicBool,
}

#[async_trait]
impl ScimStore for Racing {
    async fn insert_token(&self, token: &ScimToken) -> Result<(), ScimStoreError> {
        self.inner.insert_token(token).await
    }
    async fn find_token(&self, hash: &TokenHash) -> Result<Option<ScimToken>, ScimStoreError> {
        self.inner.find_token(hash).await
    }
    async fn list_tokens(&self, tenant: TenantId) -> Result<Vec<ScimToken>, ScimStoreError> {
        self.inner.list_tokens(tenant).await
    }
    async fn revoke_token(
        &self,
        tenant: TenantId,
        id: ScimTokenId,
        at: OffsetDateTime,
    ) -> Result<ScimToken, ScimStoreError> {
        self.inner.revoke_token(tenant, id, at).await
    }
    async fn touch_token(&self, id: ScimTokenId, at: OffsetDateTime) -> Result<(), ScimStoreError> {
        self.inner.touch_token(id, at).await
    }
    async fn insert_user(&self, record: &UserRecord) -> Result<(), ScimStoreError> {
        if self.lose_next_insert.swap(false, Ordering::SeqCst) {
            // Another request provisioned the same account first, under
            // another userName.
            let winner = UserRecord {
                id: Uuid::now_v7(),
                user_name: format!("winner-{}", record.user_name),
                ..record.clone()
            };
            self.inner.insert_user(&winner).await?;
            return Err(ScimStoreError::Conflict);
        }
        self.inner.insert_user(record).await
    }
    async fn get_user(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<Option<UserRecord>, ScimStoreError> {
        self.inner.get_user(tenant, id).await
    }
    async fn find_user_by_name(
        &self,
        tenant: TenantId,
        user_name: &str,
    ) -> Result<Option<UserRecord>, ScimStoreError> {
        self.inner.find_user_by_name(tenant, user_name).await
    }
    async fn find_user_by_account(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<UserRecord>, ScimStoreError> {
        self.inner.find_user_by_account(tenant, user).await
    }
    async fn list_users(&self, tenant: TenantId) -> Result<Vec<UserRecord>, ScimStoreError> {
        self.inner.list_users(tenant).await
    }
    async fn update_user(&self, record: &UserRecord, expected: i64) -> Result<(), ScimStoreError> {
        if self.lose_next_update.swap(false, Ordering::SeqCst) {
            return Err(ScimStoreError::VersionMismatch);
        }
        self.inner.update_user(record, expected).await
    }
    async fn delete_user(&self, tenant: TenantId, id: Uuid) -> Result<(), ScimStoreError> {
        self.inner.delete_user(tenant, id).await
    }
    async fn insert_group(&self, group: &GroupRecord) -> Result<(), ScimStoreError> {
        self.inner.insert_group(group).await
    }
    async fn get_group(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<Option<GroupRecord>, ScimStoreError> {
        self.inner.get_group(tenant, id).await
    }
    async fn list_groups(&self, tenant: TenantId) -> Result<Vec<GroupRecord>, ScimStoreError> {
        self.inner.list_groups(tenant).await
    }
    async fn groups_of(
        &self,
        tenant: TenantId,
        member: Uuid,
    ) -> Result<Vec<GroupRecord>, ScimStoreError> {
        self.inner.groups_of(tenant, member).await
    }
    async fn update_group(&self, group: &GroupRecord, expected: i64) -> Result<(), ScimStoreError> {
        if self.lose_next_group_update.swap(false, Ordering::SeqCst) {
            return Err(ScimStoreError::VersionMismatch);
        }
        self.inner.update_group(group, expected).await
    }
    async fn delete_group(
        &self,
        tenant: TenantId,
        id: Uuid,
        expected: i64,
    ) -> Result<(), ScimStoreError> {
        self.inner.delete_group(tenant, id, expected).await
    }
    async fn get_settings(
        &self,
        tenant: TenantId,
    ) -> Result<Option<TenantSettings>, ScimStoreError> {
        self.inner.get_settings(tenant).await
    }
    async fn put_settings(&self, settings: &TenantSettings) -> Result<(), ScimStoreError> {
        self.inner.put_settings(settings).await
    }
}

struct App {
    tenancy: Tenancy,
    store: Arc<Racing>,
    tenant: TenantId,
    token: String,
}

impl App {
    async fn start() -> Self {
        Self::start_with(ScimConfig::default()).await
    }

    async fn start_with(config: ScimConfig) -> Self {
        let store = Arc::new(Racing::default());
        let tenancy = Tenancy::builder(
            Catalog::new(["projects:read"]).unwrap(),
            AuthConfig::new("https://app.example", "app"),
        )
        .module(Scim::new(store.clone()).with_config(config))
        .build()
        .await
        .unwrap();
        let created = tenancy
            .directory()
            .create_tenant(
                NewTenant::new(Slug::new("race").unwrap(), TenantName::new("Race").unwrap()),
                Owner::New(NewUser::new(Email::new("owner@race.test").unwrap())),
                &AuditContext::system(),
            )
            .await
            .unwrap();
        let scope = tenancy.directory().scope(created.tenant.id).await.unwrap();
        let scim = tenancy.module::<Scim>().unwrap();
        let issued = scim
            .issue_token(&tenancy, &scope, "okta", &AuditContext::system())
            .await
            .unwrap();
        let token = issued.secret.expose_secret().to_owned();
        Self {
            tenancy,
            store,
            tenant: created.tenant.id,
            token,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (route, params) = self.route(&method, path);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", self.token)).unwrap(),
        );
        let body = match body {
            Some(body) => {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/scim+json"),
                );
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let request =
            ApiRequest::new(method, path.parse().unwrap(), headers, None, body).with_params(params);
        let response = self.tenancy.dispatch(&route, request).await;
        let status = response.status();
        let json = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
        (status, json)
    }

    /// The module's route for `path`, and its `{id}` parameter.
    fn route(&self, method: &Method, path: &str) -> (tenancy_http::Route, HashMap<String, String>) {
        let path = path.split('?').next().unwrap();
        for route in self.tenancy.routes() {
            if route.method != *method {
                continue;
            }
            let pattern: Vec<&str> = route.path.split('/').collect();
            let actual: Vec<&str> = path.split('/').collect();
            if pattern.len() != actual.len() {
                continue;
            }
            let mut params = HashMap::new();
            let fits = pattern.iter().zip(&actual).all(|(p, a)| {
                if p.starts_with('{') {
                    params.insert(p.trim_matches(['{', '}']).to_owned(), (*a).to_owned());
                    true
                } else {
                    p == a
                }
            });
            if fits {
                return (route, params);
            }
        }
        panic!("no route for {method} {path}");
    }

    async fn member_status(&self, user: UserId) -> Option<MembershipStatus> {
        self.tenancy
            .directory()
            .backend()
            .find_membership(self.tenant, user)
            .await
            .unwrap()
            .map(|m| m.status)
    }

    async fn account(&self, email: &str) -> UserId {
        self.tenancy
            .directory()
            .backend()
            .find_user_by_email(&Email::new(email).unwrap())
            .await
            .unwrap()
            .unwrap()
            .id
    }
}

fn user(user_name: &str) -> Value {
    json!({
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "emails": [{ "value": user_name, "primary": true }],
        "active": true,
    })
}

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
