//! The harness of the SCIM consistency tests: the module's routes served
//! through `Tenancy::dispatch` over a memory store that loses or holds
//! writes on purpose.
// Each test binary uses part of it.
#![allow(dead_code)]

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
    GroupRecord, Scim, ScimConfig, ScimStore, ScimStoreError, ScimToken, TenantSettings,
    USER_SCHEMA, UserRecord,
};
use time::OffsetDateTime;
use uuid::Uuid;

/// A memory store that, when told to, loses the next write to a
/// concurrent request.
pub(crate) struct Racing {
    pub inner: MemoryScimStore,
    /// Set: the next user update loses to a concurrent writer.
    pub lose_next_update: AtomicBool,
    /// Set: the next user insert loses the account to another record.
    pub lose_next_insert: AtomicBool,
    /// Set: the next group update loses to a concurrent writer.
    pub lose_next_group_update: AtomicBool,
    pub barrier_updates: AtomicBool,
    pub barrier: tokio::sync::Barrier,
    pub hold_delete: AtomicBool,
    pub updated: tokio::sync::Notify,
    /// Set: the first `get_user` after the next group update fails.
    pub break_after_group_write: AtomicBool,
    pub fail_get_user: AtomicBool,
}

/// How long a racing write waits for the other one before it goes on
/// alone (it never comes when the module serialises the two).
pub(crate) const RENDEZVOUS: std::time::Duration = std::time::Duration::from_millis(300);

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
        if self.fail_get_user.swap(false, Ordering::SeqCst) {
            return Err(ScimStoreError::Store(
                tenancy_core::StoreError::unavailable("injected"),
            ));
        }
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
        if self.barrier_updates.load(Ordering::SeqCst) {
            let _ = tokio::time::timeout(RENDEZVOUS, self.barrier.wait()).await;
        }
        let r = self.inner.update_group(group, expected).await;
        self.updated.notify_one();
        if r.is_ok() && self.break_after_group_write.swap(false, Ordering::SeqCst) {
            self.fail_get_user.store(true, Ordering::SeqCst);
        }
        r
    }
    async fn delete_group(
        &self,
        tenant: TenantId,
        id: Uuid,
        expected: i64,
    ) -> Result<(), ScimStoreError> {
        if self.hold_delete.load(Ordering::SeqCst) {
            let _ = tokio::time::timeout(RENDEZVOUS, self.updated.notified()).await;
        }
        self.inner.delete_group(tenant, id, expected).await
    }
    async fn get_settings(
        &self,
        tenant: TenantId,
    ) -> Result<Option<TenantSettings>, ScimStoreError> {
        self.inner.get_settings(tenant).await
    }
    async fn put_settings(&self, settings: &TenantSettings) -> Result<(), ScimStoreError> {
        if self.barrier_updates.load(Ordering::SeqCst) {
            let _ = tokio::time::timeout(RENDEZVOUS, self.barrier.wait()).await;
        }
        self.inner.put_settings(settings).await
    }
}

pub(crate) struct App {
    pub tenancy: Tenancy,
    pub store: Arc<Racing>,
    pub tenant: TenantId,
    pub token: String,
}

impl App {
    pub(crate) async fn start() -> Self {
        Self::start_with(ScimConfig::default()).await
    }

    pub(crate) async fn start_with(config: ScimConfig) -> Self {
        let store = Arc::new(Racing {
            inner: MemoryScimStore::default(),
            lose_next_update: AtomicBool::new(false),
            lose_next_insert: AtomicBool::new(false),
            lose_next_group_update: AtomicBool::new(false),
            barrier_updates: AtomicBool::new(false),
            barrier: tokio::sync::Barrier::new(2),
            hold_delete: AtomicBool::new(false),
            updated: tokio::sync::Notify::new(),
            break_after_group_write: AtomicBool::new(false),
            fail_get_user: AtomicBool::new(false),
        });
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

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_with(method, path, body, HeaderMap::new()).await
    }

    pub(crate) async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        mut headers: HeaderMap,
    ) -> (StatusCode, Value) {
        let (route, params) = self.route(&method, path);
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
    pub(crate) fn route(
        &self,
        method: &Method,
        path: &str,
    ) -> (tenancy_http::Route, HashMap<String, String>) {
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

    pub(crate) async fn member_status(&self, user: UserId) -> Option<MembershipStatus> {
        self.tenancy
            .directory()
            .backend()
            .find_membership(self.tenant, user)
            .await
            .unwrap()
            .map(|m| m.status)
    }

    pub(crate) async fn account(&self, email: &str) -> UserId {
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

/// A User resource whose userName is its email.
pub(crate) fn user(user_name: &str) -> Value {
    json!({
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "emails": [{ "value": user_name, "primary": true }],
        "active": true,
    })
}
