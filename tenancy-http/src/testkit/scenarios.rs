//! The scenarios. Each starts from an empty app.

use reqwest::Method;
use serde_json::{Value, json};
use tenancy_core::{AuditContext, TenantId};

use super::{Reply, TestApp};

pub(crate) const PASSWORD: &str = "correct horse battery";

/// A registered account: an owner of their own tenant.
#[derive(Debug, Clone)]
pub struct Account {
    /// The access token.
    pub token: String,
    /// The refresh token.
    pub refresh: String,
    /// The user id.
    pub user: String,
    /// The tenant id.
    pub tenant: String,
    /// The email.
    pub email: String,
}

impl TestApp {
    /// Registers `email` as owner of a new tenant `slug`.
    pub async fn register(&self, slug: &str, email: &str) -> Account {
        let reply = self
            .call(
                Method::POST,
                "/auth/register",
                None,
                Some(json!({
                    "email": email, "password": PASSWORD, "display_name": "Owner",
                    "tenant": { "slug": slug, "name": format!("{slug} Inc.") }
                })),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        account(&reply, email)
    }

    /// Logs `email` in (optionally into `tenant`).
    pub async fn login(&self, email: &str, tenant: Option<&str>) -> Account {
        let mut body = json!({ "email": email, "password": PASSWORD });
        if let Some(tenant) = tenant {
            body["tenant_id"] = json!(tenant);
        }
        let reply = self
            .call(Method::POST, "/auth/login", None, Some(body))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        account(&reply, email)
    }

    /// Invites `email` into `by`'s tenant with `roles`, accepts as a new
    /// user with the scenario password, and logs in there.
    pub async fn add_member(&self, by: &Account, email: &str, roles: &[&str]) -> Account {
        let invited = self
            .call(
                Method::POST,
                "/invitations",
                Some(&by.token),
                Some(json!({ "email": email, "roles": roles })),
            )
            .await;
        assert_eq!(invited.status, 201, "{}", invited.text);
        assert_eq!(invited.header("cache-control"), Some("no-store"));
        let token = invited.json["token"].as_str().unwrap().to_owned();
        let accepted = self
            .call(
                Method::POST,
                "/invitations/accept",
                None,
                Some(json!({ "token": token, "display_name": "Member", "password": PASSWORD })),
            )
            .await;
        assert_eq!(accepted.status, 200, "{}", accepted.text);
        self.login(email, Some(&by.tenant)).await
    }

    /// Creates a project as `by`; returns its id.
    pub async fn create_project(&self, by: &str, name: &str) -> String {
        let reply = self
            .call(
                Method::POST,
                "/projects",
                Some(by),
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        reply.json["id"].as_str().unwrap().to_owned()
    }
}

fn account(reply: &Reply, email: &str) -> Account {
    Account {
        token: reply.json["access_token"].as_str().unwrap().to_owned(),
        refresh: reply.json["refresh_token"].as_str().unwrap().to_owned(),
        user: reply.json["user"]["id"].as_str().unwrap().to_owned(),
        tenant: reply.json["tenant_id"].as_str().unwrap().to_owned(),
        email: email.to_owned(),
    }
}

/// Register, log in (wrong password and unknown email answer alike), `me`.
pub async fn register_login_and_me(app: &TestApp) {
    let ada = app.register("acme", "ada@acme.test").await;
    let login = app
        .call(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({ "email": "ada@acme.test", "password": PASSWORD })),
        )
        .await;
    assert_eq!(login.status, 200);
    assert_eq!(login.json["token_type"], "Bearer");
    assert_eq!(login.json["tenant_id"], ada.tenant.as_str());
    assert_eq!(login.json["roles"], json!(["owner"]));
    assert!(login.json["expires_in"].as_i64().unwrap() > 800);

    let me = app
        .call(Method::GET, "/auth/me", Some(&ada.token), None)
        .await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.json["principal"]["subject"]["id"], ada.user.as_str());
    assert_eq!(me.json["tenant"]["slug"], "acme");
    assert_eq!(me.json["user"]["email"], "ada@acme.test");

    let wrong = app
        .call(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({ "email": "ada@acme.test", "password": "not it at all" })),
        )
        .await;
    wrong.assert_problem(401, "invalid-credentials");
    let unknown = app
        .call(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({ "email": "nobody@acme.test", "password": PASSWORD })),
        )
        .await;
    unknown.assert_problem(401, "invalid-credentials");
    assert_eq!(wrong.json, unknown.json);
    assert_eq!(
        wrong.header("www-authenticate"),
        Some("Bearer realm=\"tenancy\"")
    );

    let taken = app
        .call(
            Method::POST,
            "/auth/register",
            None,
            Some(json!({ "email": "bob@acme.test", "password": PASSWORD, "tenant": { "slug": "acme", "name": "Again" } })),
        )
        .await;
    taken.assert_problem(409, "conflict");
    assert_eq!(taken.json["errors"][0]["field"], "tenant.slug");
    let weak = app
        .call(
            Method::POST,
            "/auth/register",
            None,
            Some(json!({ "email": "bob@acme.test", "password": "password", "tenant": { "slug": "bobs", "name": "Bob" } })),
        )
        .await;
    weak.assert_problem(422, "validation");
    assert_eq!(weak.json["errors"][0]["field"], "password");
}

/// Refresh rotates; presenting a spent refresh token revokes the session.
pub async fn refresh_and_reuse_detection(app: &TestApp) {
    let ada = app.register("refresh", "ada@refresh.test").await;
    let first = app
        .call(
            Method::POST,
            "/auth/refresh",
            None,
            Some(json!({ "refresh_token": ada.refresh })),
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    let renewed = first.json["refresh_token"].as_str().unwrap().to_owned();
    let fresh_access = first.json["access_token"].as_str().unwrap().to_owned();
    assert_ne!(renewed, ada.refresh);
    assert_eq!(
        app.call(Method::GET, "/auth/me", Some(&fresh_access), None)
            .await
            .status,
        200
    );

    let reused = app
        .call(
            Method::POST,
            "/auth/refresh",
            None,
            Some(json!({ "refresh_token": ada.refresh })),
        )
        .await;
    reused.assert_problem(401, "invalid-refresh-token");
    let after = app
        .call(
            Method::POST,
            "/auth/refresh",
            None,
            Some(json!({ "refresh_token": renewed })),
        )
        .await;
    after.assert_problem(401, "invalid-refresh-token");
    app.call(Method::GET, "/auth/me", Some(&fresh_access), None)
        .await
        .assert_problem(401, "unauthorized");

    let sessions = app.login("ada@refresh.test", None).await;
    let listed = app
        .call(Method::GET, "/auth/sessions", Some(&sessions.token), None)
        .await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json["items"].as_array().unwrap().len(), 1);
    let logout = app
        .call(Method::POST, "/auth/logout", Some(&sessions.token), None)
        .await;
    assert_eq!(logout.status, 204, "{}", logout.text);
    app.call(Method::GET, "/auth/me", Some(&sessions.token), None)
        .await
        .assert_problem(401, "unauthorized");
}

/// Another tenant's resources answer 404, however they are addressed.
pub async fn cross_tenant_access_is_not_found(app: &TestApp) {
    let ada = app.register("alpha", "ada@alpha.test").await;
    let bob = app.register("bravo", "bob@bravo.test").await;
    let project = app.create_project(&ada.token, "apollo").await;
    assert_eq!(
        app.call(
            Method::GET,
            &format!("/projects/{project}"),
            Some(&ada.token),
            None
        )
        .await
        .status,
        200
    );

    // What the victim sees, before and after each refused attempt.
    let victim_view = || async {
        let mut view = Vec::new();
        for path in [
            "/projects",
            "/members",
            "/api-keys",
            "/invitations",
            "/policies",
        ] {
            let reply = app.call(Method::GET, path, Some(&ada.token), None).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text);
            view.push(reply.json["items"].clone());
        }
        view
    };
    let before = victim_view().await;
    for method in [Method::GET, Method::DELETE] {
        app.call(
            method,
            &format!("/projects/{project}"),
            Some(&bob.token),
            None,
        )
        .await
        .assert_problem(404, "not-found");
    }
    let renamed = app
        .call(
            Method::PUT,
            &format!("/projects/{project}"),
            Some(&bob.token),
            Some(json!({ "name": "hijacked" })),
        )
        .await;
    renamed.assert_problem(404, "not-found");
    assert_eq!(victim_view().await, before);
    let listed = app
        .call(Method::GET, "/projects", Some(&bob.token), None)
        .await;
    assert_eq!(listed.json["items"], json!([]));

    // Naming the other tenant explicitly does not help.
    let addressed = app
        .send(
            app.request(Method::GET, "/projects")
                .bearer_auth(&bob.token)
                .header("x-tenant-id", &ada.tenant),
        )
        .await;
    addressed.assert_problem(404, "not-found");
    let bad_header = app
        .send(
            app.request(Method::GET, "/projects")
                .bearer_auth(&bob.token)
                .header("x-tenant-id", "nope"),
        )
        .await;
    bad_header.assert_problem(400, "bad-request");

    // Members of another tenant, and its API keys, are not found either.
    app.call(
        Method::DELETE,
        &format!("/members/{}", ada.user),
        Some(&bob.token),
        None,
    )
    .await
    .assert_problem(404, "not-found");
    app.call(
        Method::PUT,
        &format!("/members/{}/roles", ada.user),
        Some(&bob.token),
        Some(json!({ "roles": ["member"] })),
    )
    .await
    .assert_problem(404, "not-found");
    assert_eq!(victim_view().await, before);
    let key = app
        .call(
            Method::POST,
            "/api-keys",
            Some(&ada.token),
            Some(json!({ "name": "ci", "scopes": ["projects:read"] })),
        )
        .await;
    let key_id = key.json["api_key"]["id"].as_str().unwrap();
    let with_key = victim_view().await;
    app.call(
        Method::DELETE,
        &format!("/api-keys/{key_id}"),
        Some(&bob.token),
        None,
    )
    .await
    .assert_problem(404, "not-found");
    assert_eq!(victim_view().await, with_key);
    // A switch to a tenant one is not a member of is not found.
    app.call(
        Method::POST,
        "/auth/switch-tenant",
        Some(&bob.token),
        Some(json!({ "tenant_id": ada.tenant })),
    )
    .await
    .assert_problem(404, "not-found");
    assert_eq!(victim_view().await, with_key);
}

/// Missing permissions answer 403 with a problem naming the permission.
pub async fn permission_denied_is_a_problem(app: &TestApp) {
    let ada = app.register("perms", "ada@perms.test").await;
    let reader = app.add_member(&ada, "rita@perms.test", &["readonly"]).await;
    assert_eq!(
        app.call(Method::GET, "/projects", Some(&reader.token), None)
            .await
            .status,
        200
    );
    let denied = app
        .call(
            Method::POST,
            "/projects",
            Some(&reader.token),
            Some(json!({ "name": "nope" })),
        )
        .await;
    denied.assert_problem(403, "forbidden");
    assert_eq!(denied.json["errors"][0]["field"], "permission");
    assert_eq!(denied.json["errors"][0]["message"], "projects:create");
    app.call(
        Method::POST,
        "/invitations",
        Some(&reader.token),
        Some(json!({ "email": "x@perms.test", "roles": ["member"] })),
    )
    .await
    .assert_problem(403, "forbidden");
    app.call(Method::GET, "/audit", Some(&reader.token), None)
        .await
        .assert_problem(403, "forbidden");

    // Members edit and delete their own projects only (the ABAC policy).
    let mia = app.add_member(&ada, "mia@perms.test", &["member"]).await;
    let own = app.create_project(&mia.token, "mine").await;
    let theirs = app.create_project(&ada.token, "ada's").await;
    let update = app
        .call(
            Method::PUT,
            &format!("/projects/{own}"),
            Some(&mia.token),
            Some(json!({ "name": "renamed" })),
        )
        .await;
    assert_eq!(update.status, 200, "{}", update.text);
    app.call(
        Method::DELETE,
        &format!("/projects/{theirs}"),
        Some(&mia.token),
        None,
    )
    .await
    .assert_problem(403, "forbidden");
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/projects/{own}"),
            Some(&mia.token),
            None
        )
        .await
        .status,
        204
    );
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/projects/{theirs}"),
            Some(&ada.token),
            None
        )
        .await
        .status,
        204
    );
}

/// API keys: shown once, usable, bounded by scopes and creator, revocable.
pub async fn api_key_lifecycle(app: &TestApp) {
    let ada = app.register("keys", "ada@keys.test").await;
    let created = app
        .call(
            Method::POST,
            "/api-keys",
            Some(&ada.token),
            Some(json!({ "name": "deploy bot", "scopes": ["projects:read", "projects:create"] })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let secret = created.json["secret"].as_str().unwrap().to_owned();
    let id = created.json["api_key"]["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("tnc_live_"));
    let listed = app
        .call(Method::GET, "/api-keys", Some(&ada.token), None)
        .await;
    assert_eq!(listed.json["items"][0]["id"], id.as_str());
    assert!(
        !listed.text.contains(&secret[secret.len() - 20..]),
        "the secret is shown once only"
    );

    assert_eq!(app.create_project(&secret, "from a key").await.len(), 36);
    assert_eq!(
        app.call(Method::GET, "/projects", Some(&secret), None)
            .await
            .status,
        200
    );
    // Outside its scopes.
    app.call(Method::GET, "/members", Some(&secret), None)
        .await
        .assert_problem(403, "forbidden");
    // The key's owner is an API key, so it cannot act as a user.
    app.call(Method::GET, "/auth/sessions", Some(&secret), None)
        .await
        .assert_problem(403, "forbidden");

    // A member cannot mint a key beyond what they hold.
    let reader = app.add_member(&ada, "rita@keys.test", &["readonly"]).await;
    let reader_key = app
        .call(
            Method::POST,
            "/api-keys",
            Some(&reader.token),
            Some(json!({ "name": "x", "scopes": ["projects:read"] })),
        )
        .await;
    reader_key.assert_problem(403, "forbidden");

    let revoked = app
        .call(
            Method::DELETE,
            &format!("/api-keys/{id}"),
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(revoked.status, 204);
    let refused = app
        .call(Method::GET, "/projects", Some(&secret), None)
        .await;
    refused.assert_problem(401, "unauthorized");
    assert!(
        refused
            .header("www-authenticate")
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    let garbage = app
        .call(Method::GET, "/projects", Some("tnc_live_garbage"), None)
        .await;
    assert_eq!(garbage.json, refused.json);

    // A key may manage keys (list, revoke) but not make more of them.
    let manager = app
        .call(
            Method::POST,
            "/api-keys",
            Some(&ada.token),
            Some(json!({ "name": "key manager", "scopes": ["api_keys:manage", "api_keys:read"] })),
        )
        .await;
    let manager = manager.json["secret"].as_str().unwrap().to_owned();
    assert_eq!(
        app.call(Method::GET, "/api-keys", Some(&manager), None)
            .await
            .status,
        200
    );
    let minted = app
        .call(
            Method::POST,
            "/api-keys",
            Some(&manager),
            Some(json!({ "name": "child", "scopes": ["api_keys:read"] })),
        )
        .await;
    minted.assert_problem(403, "forbidden");
    assert_eq!(minted.json["detail"], "API keys cannot create API keys");
}

/// Invite, accept, list, change roles (with escalation refused), remove.
pub async fn members_and_roles(app: &TestApp) {
    let ada = app.register("team", "ada@team.test").await;
    let admin = app.add_member(&ada, "alex@team.test", &["admin"]).await;
    let mia = app.add_member(&admin, "mia@team.test", &["member"]).await;

    let members = app
        .call(Method::GET, "/members?limit=2", Some(&ada.token), None)
        .await;
    assert_eq!(members.status, 200, "{}", members.text);
    assert_eq!(members.json["items"].as_array().unwrap().len(), 2);
    let cursor = members.json["next_cursor"].as_str().unwrap().to_owned();
    let rest = app
        .call(
            Method::GET,
            &format!("/members?limit=2&cursor={cursor}"),
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(rest.json["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest.json["next_cursor"], Value::Null);
    app.call(Method::GET, "/members?limit=5000", Some(&ada.token), None)
        .await
        .assert_problem(422, "validation");

    // An admin may not make anyone an owner: that would grant what they lack.
    let escalate = app
        .call(
            Method::PUT,
            &format!("/members/{}/roles", mia.user),
            Some(&admin.token),
            Some(json!({ "roles": ["owner"] })),
        )
        .await;
    escalate.assert_problem(403, "forbidden");
    assert!(
        escalate.json["detail"]
            .as_str()
            .unwrap()
            .contains("privilege escalation"),
        "{}",
        escalate.text
    );
    let promoted = app
        .call(
            Method::PUT,
            &format!("/members/{}/roles", mia.user),
            Some(&admin.token),
            Some(json!({ "roles": ["member", "readonly"] })),
        )
        .await;
    assert_eq!(promoted.status, 200, "{}", promoted.text);
    assert_eq!(promoted.json["roles"], json!(["member", "readonly"]));
    app.call(
        Method::PUT,
        &format!("/members/{}/roles", ada.user),
        Some(&ada.token),
        Some(json!({ "roles": ["admin"] })),
    )
    .await
    .assert_problem(409, "conflict");
    app.call(
        Method::PUT,
        &format!("/members/{}/roles", mia.user),
        Some(&ada.token),
        Some(json!({ "roles": ["Not A Role"] })),
    )
    .await
    .assert_problem(422, "validation");

    let pending = app
        .call(
            Method::POST,
            "/invitations",
            Some(&ada.token),
            Some(json!({ "email": "zed@team.test", "roles": ["member"] })),
        )
        .await;
    assert_eq!(pending.status, 201);
    let invitation = pending.json["invitation"]["id"].as_str().unwrap();
    app.call(
        Method::POST,
        "/invitations",
        Some(&ada.token),
        Some(json!({ "email": "ZED@team.test", "roles": ["member"] })),
    )
    .await
    .assert_problem(409, "conflict");
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/invitations/{invitation}"),
            Some(&ada.token),
            None
        )
        .await
        .status,
        204
    );
    let token = pending.json["token"].as_str().unwrap();
    app.call(
        Method::POST,
        "/invitations/accept",
        None,
        Some(json!({ "token": token })),
    )
    .await
    .assert_problem(410, "invitation-unusable");

    // Nor may an admin remove an owner it could not demote.
    app.call(
        Method::DELETE,
        &format!("/members/{}", ada.user),
        Some(&admin.token),
        None,
    )
    .await
    .assert_problem(403, "forbidden");

    // A demotion takes effect on the next request, not when the token expires.
    assert_eq!(
        app.call(Method::GET, "/audit", Some(&admin.token), None)
            .await
            .status,
        200
    );
    let demoted = app
        .call(
            Method::PUT,
            &format!("/members/{}/roles", admin.user),
            Some(&ada.token),
            Some(json!({ "roles": ["member"] })),
        )
        .await;
    assert_eq!(demoted.status, 200, "{}", demoted.text);
    app.call(Method::GET, "/audit", Some(&admin.token), None)
        .await
        .assert_problem(403, "forbidden");

    let removed = app
        .call(
            Method::DELETE,
            &format!("/members/{}", mia.user),
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(removed.status, 204, "{}", removed.text);
    app.call(Method::GET, "/projects", Some(&mia.token), None)
        .await
        .assert_problem(401, "unauthorized");
}

/// Custom roles and policies through the API, and "why can X do Y?".
pub async fn roles_policies_and_explain(app: &TestApp) {
    let ada = app.register("rbac", "ada@rbac.test").await;
    let mia = app.add_member(&ada, "mia@rbac.test", &["readonly"]).await;
    let role = app
        .call(
            Method::PUT,
            "/roles/lead",
            Some(&ada.token),
            Some(json!({ "description": "leads projects", "permissions": ["projects:delete"], "inherits": ["member"] })),
        )
        .await;
    assert_eq!(role.status, 200, "{}", role.text);
    let cycle = app
        .call(
            Method::PUT,
            "/roles/member2",
            Some(&ada.token),
            Some(json!({ "permissions": ["nope:nope"] })),
        )
        .await;
    cycle.assert_problem(422, "validation");
    let roles = app
        .call(Method::GET, "/roles", Some(&ada.token), None)
        .await;
    assert_eq!(roles.json["custom"][0]["name"], "lead");
    assert_eq!(roles.json["built_in"].as_array().unwrap().len(), 5);

    let why_not = app
        .call(
            Method::POST,
            "/authz/explain",
            Some(&ada.token),
            Some(json!({ "user_id": mia.user, "action": "projects:delete", "resource": { "type": "project" } })),
        )
        .await;
    assert_eq!(why_not.status, 200, "{}", why_not.text);
    assert_eq!(why_not.json["allowed"], false);
    assert!(
        why_not.json["explanation"]
            .as_str()
            .unwrap()
            .contains("nothing grants `projects:delete`"),
        "{}",
        why_not.text
    );

    let assigned = app
        .call(
            Method::PUT,
            &format!("/members/{}/roles", mia.user),
            Some(&ada.token),
            Some(json!({ "roles": ["lead"] })),
        )
        .await;
    assert_eq!(assigned.status, 200, "{}", assigned.text);
    let why = app
        .call(
            Method::POST,
            "/authz/explain",
            Some(&ada.token),
            Some(json!({ "user_id": mia.user, "action": "projects:delete", "resource": { "type": "project" } })),
        )
        .await;
    assert_eq!(why.json["allowed"], true, "{}", why.text);
    assert!(
        why.json["explanation"].as_str().unwrap().contains("lead"),
        "{}",
        why.text
    );

    let policy = app
        .call(
            Method::PUT,
            "/policies/no-fridays",
            Some(&ada.token),
            Some(json!({ "statements": [{ "effect": "deny", "actions": ["projects:delete"], "condition": "weekday(context.now) == \"fri\" &&" }] })),
        )
        .await;
    policy.assert_problem(422, "validation");
    let policy = app
        .call(
            Method::PUT,
            "/policies/keep-archive",
            Some(&ada.token),
            Some(json!({ "statements": [{ "effect": "deny", "actions": ["projects:delete"], "resource_types": ["project"], "condition": "resource.archived == true" }] })),
        )
        .await;
    assert_eq!(policy.status, 200, "{}", policy.text);
    // A key given twice is refused, not read as whichever came last.
    let twice = app
        .send(
            app.request(Method::PUT, "/policies/twice")
                .bearer_auth(&ada.token)
                .header("content-type", "application/json")
                .body(r#"{"statements":[{"effect":"deny","effect":"allow","actions":["projects:read"]}]}"#),
        )
        .await;
    twice.assert_problem(422, "validation");
    assert!(twice.text.contains("duplicate key"), "{}", twice.text);
    let policies = app
        .call(Method::GET, "/policies", Some(&ada.token), None)
        .await;
    assert!(policies.text.contains("keep-archive"));
    assert!(!policies.text.contains("twice"));
    assert_eq!(
        app.call(
            Method::DELETE,
            "/policies/keep-archive",
            Some(&ada.token),
            None
        )
        .await
        .status,
        204
    );
    app.call(Method::DELETE, "/roles/lead", Some(&mia.token), None)
        .await
        .assert_problem(403, "forbidden");
}

/// The audit log through the API: filters, pagination, exports; members
/// without `audit:read` are refused.
pub async fn audit_query_and_export(app: &TestApp) {
    let ada = app.register("audited", "ada@audited.test").await;
    app.add_member(&ada, "mia@audited.test", &["member"]).await;
    let all = app
        .call(Method::GET, "/audit", Some(&ada.token), None)
        .await;
    assert_eq!(all.status, 200, "{}", all.text);
    let actions: Vec<&str> = all.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions[0], "tenant.created");
    assert!(
        actions.contains(&"member.invited") && actions.contains(&"member.joined"),
        "{actions:?}"
    );

    let members = app
        .call(
            Method::GET,
            "/audit?action=member.*",
            Some(&ada.token),
            None,
        )
        .await;
    assert!(
        members.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"].as_str().unwrap().starts_with("member."))
    );
    app.call(
        Method::GET,
        "/audit?action=Not%20An%20Action",
        Some(&ada.token),
        None,
    )
    .await
    .assert_problem(422, "validation");
    app.call(
        Method::GET,
        "/audit?since=yesterday",
        Some(&ada.token),
        None,
    )
    .await
    .assert_problem(422, "validation");

    let lines = app
        .call(
            Method::GET,
            "/audit/export?format=jsonl",
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(lines.status, 200);
    assert_eq!(lines.header("content-type"), Some("application/jsonl"));
    assert_eq!(lines.text.lines().count(), actions.len());
    let csv = app
        .call(
            Method::GET,
            "/audit/export?format=csv",
            Some(&ada.token),
            None,
        )
        .await;
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert!(csv.text.starts_with("seq,id,occurred_at,actor_type"));
    app.call(
        Method::GET,
        "/audit/export?format=xml",
        Some(&ada.token),
        None,
    )
    .await
    .assert_problem(422, "validation");

    // An export past the limit is refused whole, never cut short; a
    // narrower one still answers.
    let mut refused = None;
    for n in 0..200 {
        let invited = app
            .call(
                Method::POST,
                "/invitations",
                Some(&ada.token),
                Some(json!({ "email": format!("guest{n}@audited.test"), "roles": ["member"] })),
            )
            .await;
        assert_eq!(invited.status, 201, "{}", invited.text);
        let export = app
            .call(Method::GET, "/audit/export", Some(&ada.token), None)
            .await;
        if export.status != 200 {
            refused = Some((n, export));
            break;
        }
        assert!(export.text.len() <= super::SCENARIO_EXPORT_LIMIT);
    }
    let (invited, refused) = refused.expect("an export past the limit is refused");
    assert!(invited > 5, "refused after {invited} invitations");
    refused.assert_problem(422, "export-too-large");
    let narrow = app
        .call(
            Method::GET,
            "/audit/export?action=tenant.created",
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(narrow.status, 200, "{}", narrow.text);
    assert_eq!(narrow.text.lines().count(), 1);
}

/// Malformed JSON, the wrong media type, wrong field types, unknown fields,
/// oversized bodies.
pub async fn malformed_and_oversized_bodies(app: &TestApp) {
    let broken = app
        .send(
            app.request(Method::POST, "/auth/login")
                .header("content-type", "application/json")
                .body("{\"email\": "),
        )
        .await;
    broken.assert_problem(400, "bad-request");
    assert!(
        broken.json["detail"]
            .as_str()
            .unwrap()
            .contains("line 1 column")
    );
    let text = app
        .send(
            app.request(Method::POST, "/auth/login")
                .header("content-type", "text/plain")
                .body("hi"),
        )
        .await;
    text.assert_problem(415, "unsupported-media-type");
    let wrong_type = app
        .call(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({ "email": 42, "password": PASSWORD })),
        )
        .await;
    wrong_type.assert_problem(422, "validation");
    assert_eq!(wrong_type.json["errors"][0]["field"], "email");
    let unknown = app
        .call(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({ "email": "a@b.test", "password": PASSWORD, "admin": true })),
        )
        .await;
    unknown.assert_problem(422, "validation");
    let bad_email = app
        .call(
            Method::POST,
            "/auth/register",
            None,
            Some(json!({ "email": "not-an-email", "password": PASSWORD, "tenant": { "slug": "ok-slug", "name": "Ok" } })),
        )
        .await;
    bad_email.assert_problem(422, "validation");
    assert_eq!(bad_email.json["errors"][0]["field"], "email");
    let huge = json!({ "email": "a@b.test", "password": "x".repeat(70 * 1024) });
    let oversized = app
        .call(Method::POST, "/auth/login", None, Some(huge))
        .await;
    oversized.assert_problem(413, "payload-too-large");
}

/// No credentials, garbage credentials, the wrong scheme: 401 with the
/// RFC 6750 `WWW-Authenticate` each deserves.
pub async fn missing_or_garbage_authorization(app: &TestApp) {
    let missing = app.call(Method::GET, "/auth/me", None, None).await;
    missing.assert_problem(401, "unauthorized");
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"tenancy\"")
    );
    let garbage = app
        .call(Method::GET, "/projects", Some("not-a-token"), None)
        .await;
    garbage.assert_problem(401, "unauthorized");
    assert!(
        garbage
            .header("www-authenticate")
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    let basic = app
        .send(
            app.request(Method::GET, "/auth/me")
                .header("authorization", "Basic YWRhOnB3"),
        )
        .await;
    // Another scheme is no credentials at all: a bare challenge (RFC 6750 §3.1).
    basic.assert_problem(401, "unauthorized");
    assert_eq!(
        basic.header("www-authenticate"),
        Some("Bearer realm=\"tenancy\"")
    );
    let malformed = app
        .send(
            app.request(Method::GET, "/auth/me")
                .header("authorization", "Bearer two tokens"),
        )
        .await;
    malformed.assert_problem(400, "bad-request");
    assert!(
        malformed
            .header("www-authenticate")
            .unwrap()
            .contains("error=\"invalid_request\"")
    );
    let forged = app
        .call(
            Method::GET,
            "/auth/me",
            Some("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."),
            None,
        )
        .await;
    forged.assert_problem(401, "unauthorized");
}

/// An expired access token answers 401 saying so; a refresh revives the caller.
pub async fn expired_token(app: &TestApp) {
    let ada = app.register("expiry", "ada@expiry.test").await;
    assert_eq!(
        app.call(Method::GET, "/auth/me", Some(&ada.token), None)
            .await
            .status,
        200
    );
    app.clock.advance(time::Duration::minutes(16));
    let expired = app
        .call(Method::GET, "/auth/me", Some(&ada.token), None)
        .await;
    expired.assert_problem(401, "unauthorized");
    assert!(
        expired
            .header("www-authenticate")
            .unwrap()
            .contains("the access token expired")
    );
    let renewed = app
        .call(
            Method::POST,
            "/auth/refresh",
            None,
            Some(json!({ "refresh_token": ada.refresh })),
        )
        .await;
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    let token = renewed.json["access_token"].as_str().unwrap();
    let refresh = renewed.json["refresh_token"].as_str().unwrap();
    assert_eq!(
        app.call(Method::GET, "/auth/me", Some(token), None)
            .await
            .status,
        200
    );

    // Once the access token has expired, the refresh token still logs out.
    app.clock.advance(time::Duration::minutes(16));
    app.call(Method::POST, "/auth/logout", Some(token), None)
        .await
        .assert_problem(401, "unauthorized");
    let logout = app
        .call(
            Method::POST,
            "/auth/logout",
            Some(token),
            Some(json!({ "refresh_token": refresh })),
        )
        .await;
    assert_eq!(logout.status, 204, "{}", logout.text);
    app.call(
        Method::POST,
        "/auth/refresh",
        None,
        Some(json!({ "refresh_token": refresh })),
    )
    .await
    .assert_problem(401, "invalid-refresh-token");
    app.call(
        Method::POST,
        "/auth/logout",
        None,
        Some(json!({ "refresh_token": "rt_unknown" })),
    )
    .await
    .assert_problem(401, "invalid-refresh-token");
}

/// A suspended tenant: sessions end, API keys answer 403, logins are refused.
pub async fn suspended_tenant(app: &TestApp) {
    let ada = app.register("paused", "ada@paused.test").await;
    let key = app
        .call(
            Method::POST,
            "/api-keys",
            Some(&ada.token),
            Some(json!({ "name": "bot", "scopes": ["projects:read"] })),
        )
        .await;
    let secret = key.json["secret"].as_str().unwrap().to_owned();
    let tenant: TenantId = ada.tenant.parse().unwrap();
    app.tenancy
        .auth()
        .suspend_tenant(tenant, &AuditContext::system())
        .await
        .unwrap();
    app.call(Method::GET, "/projects", Some(&ada.token), None)
        .await
        .assert_problem(401, "unauthorized");
    app.call(Method::GET, "/projects", Some(&secret), None)
        .await
        .assert_problem(403, "tenant-inactive");
    let login = app
        .call(Method::POST, "/auth/login", None, Some(json!({ "email": "ada@paused.test", "password": PASSWORD, "tenant_id": ada.tenant })))
        .await;
    login.assert_problem(403, "tenant-inactive");
    app.tenancy
        .directory()
        .reactivate_tenant(tenant, &AuditContext::system())
        .await
        .unwrap();
    assert_eq!(
        app.call(Method::GET, "/projects", Some(&secret), None)
            .await
            .status,
        200
    );
}

/// Browser logins: HttpOnly cookies, cookie-authenticated reads, and
/// state-changing requests refused without a same-origin `Origin`.
pub async fn cookies_and_csrf(app: &TestApp) {
    app.register("browser", "ada@browser.test").await;
    let login = app
        .call(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({ "email": "ada@browser.test", "password": PASSWORD, "cookies": true })),
        )
        .await;
    assert_eq!(login.status, 200);
    let cookies: Vec<&str> = login
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    let access = cookies
        .iter()
        .find(|c| c.starts_with("tenancy_access="))
        .unwrap();
    let refresh = cookies
        .iter()
        .find(|c| c.starts_with("tenancy_refresh="))
        .unwrap();
    for cookie in [access, refresh] {
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );
    }
    assert!(refresh.contains("Path=/auth"), "{refresh}");
    let access_value = access.split(';').next().unwrap().to_owned();
    let refresh_value = refresh.split(';').next().unwrap().to_owned();

    let me = app
        .send(
            app.request(Method::GET, "/auth/me")
                .header("cookie", &access_value),
        )
        .await;
    assert_eq!(me.status, 200, "{}", me.text);
    let host = app.base.trim_start_matches("http://").to_owned();
    let cross_site = app
        .send(
            app.request(Method::POST, "/projects")
                .header("cookie", &access_value)
                .header("origin", "https://evil.example")
                .json(&json!({ "name": "x" })),
        )
        .await;
    cross_site.assert_problem(403, "forbidden");
    let no_origin = app
        .send(
            app.request(Method::POST, "/projects")
                .header("cookie", &access_value)
                .json(&json!({ "name": "x" })),
        )
        .await;
    no_origin.assert_problem(403, "forbidden");
    let same_site = app
        .send(
            app.request(Method::POST, "/projects")
                .header("cookie", &access_value)
                .header("origin", format!("http://{host}"))
                .json(&json!({ "name": "x" })),
        )
        .await;
    assert_eq!(same_site.status, 201, "{}", same_site.text);
    // Same host and port, other scheme: another origin.
    let other_scheme = app
        .send(
            app.request(Method::POST, "/projects")
                .header("cookie", &access_value)
                .header("origin", format!("https://{host}"))
                .json(&json!({ "name": "x" })),
        )
        .await;
    other_scheme.assert_problem(403, "forbidden");
    // Behind the trusted TLS-terminating proxy, https is the app's scheme.
    let proxied = app
        .send(
            app.request(Method::POST, "/projects")
                .header("cookie", &access_value)
                .header("x-forwarded-proto", "https")
                .header("origin", format!("https://{host}"))
                .json(&json!({ "name": "x" })),
        )
        .await;
    assert_eq!(proxied.status, 201, "{}", proxied.text);
    let refreshed = app
        .send(
            app.request(Method::POST, "/auth/refresh")
                .header("cookie", &refresh_value)
                .header("origin", format!("http://{host}")),
        )
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    assert_eq!(refreshed.headers.get_all("set-cookie").iter().count(), 2);

    // The refresh cookie alone logs out, from the same site only, and the
    // answer clears both cookies.
    let refresh_value = refreshed
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("tenancy_refresh="))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    let cross_site = app
        .send(
            app.request(Method::POST, "/auth/logout")
                .header("cookie", &refresh_value)
                .header("origin", "https://evil.example"),
        )
        .await;
    cross_site.assert_problem(403, "forbidden");
    let logout = app
        .send(
            app.request(Method::POST, "/auth/logout")
                .header("cookie", &refresh_value)
                .header("origin", format!("http://{host}")),
        )
        .await;
    assert_eq!(logout.status, 204, "{}", logout.text);
    let cleared: Vec<&str> = logout
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cleared.len(), 2, "{cleared:?}");
    assert!(
        cleared.iter().all(|c| c.contains("Max-Age=0")),
        "{cleared:?}"
    );
    let after = app
        .send(
            app.request(Method::POST, "/auth/refresh")
                .header("cookie", &refresh_value)
                .header("origin", format!("http://{host}")),
        )
        .await;
    after.assert_problem(401, "invalid-refresh-token");

    // An `Authorization` header names the session to end, whatever cookies
    // come along; those stay, and their session lives on.
    let browser = app
        .call(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({ "email": "ada@browser.test", "password": PASSWORD, "cookies": true })),
        )
        .await;
    let jar = browser
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().unwrap().split(';').next())
        .collect::<Vec<_>>()
        .join("; ");
    let api = app.login("ada@browser.test", None).await;
    let logout = app
        .send(
            app.request(Method::POST, "/auth/logout")
                .bearer_auth(&api.token)
                .header("cookie", &jar)
                .header("origin", format!("http://{host}")),
        )
        .await;
    assert_eq!(logout.status, 204, "{}", logout.text);
    assert_eq!(logout.headers.get_all("set-cookie").iter().count(), 0);
    app.call(Method::GET, "/auth/me", Some(&api.token), None)
        .await
        .assert_problem(401, "unauthorized");
    let still = app
        .send(app.request(Method::GET, "/auth/me").header("cookie", &jar))
        .await;
    assert_eq!(still.status, 200, "{}", still.text);
}

/// The JWKS is public; password reset answers the same for unknown emails.
pub async fn jwks_and_password_reset(app: &TestApp) {
    app.register("keyring", "ada@keyring.test").await;
    let jwks = app
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.json["keys"][0]["alg"], "EdDSA");
    assert!(jwks.json["keys"][0].get("d").is_none());
    assert!(jwks.header("cache-control").unwrap().contains("max-age"));
    for email in ["ada@keyring.test", "nobody@keyring.test"] {
        let started = app
            .call(
                Method::POST,
                "/auth/password-reset/start",
                None,
                Some(json!({ "email": email })),
            )
            .await;
        assert_eq!(started.status, 202);
        assert_eq!(started.json, json!({}));
    }
    app.call(
        Method::POST,
        "/auth/password-reset/finish",
        None,
        Some(json!({ "token": "pr_nope", "password": "a fine new passphrase" })),
    )
    .await
    .assert_problem(400, "invalid-token");
}

/// The client address comes from the trusted proxy's hop of
/// `X-Forwarded-For` (the scenario client plays that proxy), never from
/// what the client wrote before it: the audit log records the proxy's
/// hop, and forging other hops does not escape the per-client throttle.
pub async fn forwarded_client_address(app: &TestApp) {
    let ada = app.register("forwarded", "ada@forwarded.test").await;
    let login = app
        .send(
            app.request(Method::POST, "/auth/login")
                .header("x-forwarded-for", "6.6.6.6, 198.51.100.23")
                .json(&json!({ "email": "ada@forwarded.test", "password": PASSWORD })),
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.text);
    let logins = app
        .call(
            Method::GET,
            "/audit?action=auth.login",
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(logins.status, 200, "{}", logins.text);
    let ips: Vec<&str> = logins.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|event| event["ip"].as_str())
        .collect();
    assert!(ips.contains(&"198.51.100.23"), "{ips:?}");
    assert!(!ips.contains(&"6.6.6.6"), "{ips:?}");

    // Failed logins from one client, each with a different forged hop,
    // end in the per-client throttle all the same.
    let mut throttled = None;
    for attempt in 0..200 {
        let reply = app
            .send(
                app.request(Method::POST, "/auth/login")
                    .header("x-forwarded-for", format!("10.9.{}.{}, 203.0.113.77", attempt / 250, attempt % 250))
                    .json(&json!({ "email": format!("nobody{attempt}@forwarded.test"), "password": "wrong password here" })),
            )
            .await;
        if reply.status == 429 {
            throttled = Some(reply);
            break;
        }
        reply.assert_problem(401, "invalid-credentials");
    }
    let throttled = throttled.expect("the per-client throttle applies to the proxy-named client");
    assert!(throttled.header("retry-after").is_some());
    // Another client behind the same proxy is not affected.
    let other = app
        .send(
            app.request(Method::POST, "/auth/login")
                .header("x-forwarded-for", "203.0.113.78")
                .json(&json!({ "email": "ada@forwarded.test", "password": PASSWORD })),
        )
        .await;
    assert_eq!(other.status, 200, "{}", other.text);
}

/// Every answer of the SDK's routes says `nosniff`; those with personal
/// or tenant data, and problems, say `no-store`; the public JWKS may be
/// cached.
pub async fn security_headers(app: &TestApp) {
    let ada = app.register("headers", "ada@headers.test").await;
    for path in ["/auth/me", "/members", "/audit", "/auth/sessions", "/roles"] {
        let reply = app.call(Method::GET, path, Some(&ada.token), None).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        assert_eq!(reply.header("cache-control"), Some("no-store"), "{path}");
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
    let anonymous = app.call(Method::GET, "/auth/me", None, None).await;
    anonymous.assert_problem(401, "unauthorized");
    assert_eq!(anonymous.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(anonymous.header("cache-control"), Some("no-store"));
    let jwks = app
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.header("x-content-type-options"), Some("nosniff"));
    assert_ne!(jwks.header("cache-control"), Some("no-store"));
}

/// Unknown paths and wrong methods answer problems, not empty bodies; a
/// lookalike (punycode) or double-hyphen slug is refused at registration.
pub async fn unknown_routes_and_lookalike_slugs(app: &TestApp) {
    let nowhere = app.call(Method::GET, "/no/such/route", None, None).await;
    nowhere.assert_problem(404, "not-found");
    let wrong_method = app.call(Method::DELETE, "/auth/login", None, None).await;
    wrong_method.assert_problem(405, "method-not-allowed");
    assert_eq!(wrong_method.header("allow"), Some("POST"));
    for slug in ["xn--80ak6aa92e", "xn--acme", "ac--me"] {
        let reply = app
            .call(
                Method::POST,
                "/auth/register",
                None,
                Some(json!({
                    "email": format!("{slug}@slugs.test"), "password": PASSWORD,
                    "display_name": "Owner",
                    "tenant": { "slug": slug, "name": "Lookalike" }
                })),
            )
            .await;
        reply.assert_problem(422, "validation");
    }
}

impl TestApp {
    /// Sends an invitation as `by`; returns its token.
    pub async fn invite(&self, by: &Account, email: &str, roles: &[&str]) -> String {
        let invited = self
            .call(
                Method::POST,
                "/invitations",
                Some(&by.token),
                Some(json!({ "email": email, "roles": roles })),
            )
            .await;
        assert_eq!(invited.status, 201, "{}", invited.text);
        invited.json["token"].as_str().unwrap().to_owned()
    }

    /// Accepts invitation `token` as a new user with the scenario password.
    pub async fn accept(&self, token: &str) -> Reply {
        self.call(
            Method::POST,
            "/invitations/accept",
            None,
            Some(json!({ "token": token, "password": PASSWORD })),
        )
        .await
    }
}

/// An invitation is only as good as its sender's powers: demoting or
/// removing the admin who sent it revokes it, and one whose sender lost
/// the power otherwise (their role redefined) is refused at acceptance
/// with its own problem, revoked and audited; nobody joins either way.
pub async fn invitations_follow_their_sender(app: &TestApp) {
    let ada = app.register("senders", "ada@senders.test").await;
    let alex = app.add_member(&ada, "alex@senders.test", &["admin"]).await;
    let as_admin = app.invite(&alex, "x@senders.test", &["admin"]).await;
    let as_member = app.invite(&alex, "y@senders.test", &["member"]).await;
    // A key alex minted sends one too: its powers are alex's, now.
    let minted = app
        .call(
            Method::POST,
            "/api-keys",
            Some(&alex.token),
            Some(json!({ "name": "inviter", "scopes": ["members:*", "roles:read", "projects:read", "projects:create"] })),
        )
        .await;
    assert_eq!(minted.status, 201, "{}", minted.text);
    let key = Account {
        token: minted.json["secret"].as_str().unwrap().to_owned(),
        ..alex.clone()
    };
    let by_key = app.invite(&key, "k@senders.test", &["member"]).await;
    let demoted = app
        .call(
            Method::PUT,
            &format!("/members/{}/roles", alex.user),
            Some(&ada.token),
            Some(json!({ "roles": ["member"] })),
        )
        .await;
    assert_eq!(demoted.status, 200, "{}", demoted.text);
    for token in [&as_admin, &as_member] {
        app.accept(token)
            .await
            .assert_problem(410, "invitation-unusable");
    }
    app.accept(&by_key)
        .await
        .assert_problem(410, "inviter-lacks-power");

    let bea = app.add_member(&ada, "bea@senders.test", &["admin"]).await;
    let from_bea = app.invite(&bea, "z@senders.test", &["admin"]).await;
    let removed = app
        .call(
            Method::DELETE,
            &format!("/members/{}", bea.user),
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(removed.status, 204, "{}", removed.text);
    app.accept(&from_bea)
        .await
        .assert_problem(410, "invitation-unusable");

    // A manager loses `members:manage` through a change to their role, not
    // to their membership: the acceptance itself finds out.
    let manager = |permissions: &[&str]| json!({ "permissions": permissions });
    let defined = app
        .call(
            Method::PUT,
            "/roles/manager",
            Some(&ada.token),
            Some(manager(&[
                "members:manage",
                "members:read",
                "roles:read",
                "projects:read",
                "projects:create",
            ])),
        )
        .await;
    assert_eq!(defined.status, 200, "{}", defined.text);
    let max = app.add_member(&ada, "max@senders.test", &["manager"]).await;
    let from_max = app.invite(&max, "v@senders.test", &["member"]).await;
    let redefined = app
        .call(
            Method::PUT,
            "/roles/manager",
            Some(&ada.token),
            Some(manager(&["members:read", "roles:read", "projects:read"])),
        )
        .await;
    assert_eq!(redefined.status, 200, "{}", redefined.text);
    let refused = app.accept(&from_max).await;
    refused.assert_problem(410, "inviter-lacks-power");
    app.accept(&from_max)
        .await
        .assert_problem(410, "invitation-unusable");

    let members = app
        .call(Method::GET, "/members", Some(&ada.token), None)
        .await;
    assert_eq!(members.status, 200, "{}", members.text);
    assert_eq!(members.json["items"].as_array().unwrap().len(), 3);
    let revoked = app
        .call(
            Method::GET,
            "/audit?action=invitation.revoked",
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    let reasons: Vec<&str> = revoked.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["metadata"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "sender_demoted",
            "sender_demoted",
            "inviter_lacks_power",
            "sender_removed",
            "inviter_lacks_power"
        ]
    );
}

/// Wildcard scopes (`projects:*`, `*:read`, `*`) mint when the creator
/// holds every permission they match, and are refused with `403` naming
/// what is missing otherwise; a scope that names nothing in the catalog is
/// a `422`.
pub async fn wildcard_api_key_scopes(app: &TestApp) {
    let ada = app.register("wild", "ada@wild.test").await;
    let mint = |by: &Account, scopes: Value| {
        let token = by.token.clone();
        async move {
            app.call(
                Method::POST,
                "/api-keys",
                Some(&token),
                Some(json!({ "name": "wild", "scopes": scopes })),
            )
            .await
        }
    };
    let all_projects = mint(&ada, json!(["projects:*"])).await;
    assert_eq!(all_projects.status, 201, "{}", all_projects.text);
    assert_eq!(
        all_projects.json["api_key"]["scopes"],
        json!(["projects:*"])
    );
    let key = all_projects.json["secret"].as_str().unwrap().to_owned();
    let project = app.create_project(&key, "by a wildcard key").await;
    let deleted = app
        .call(
            Method::DELETE,
            &format!("/projects/{project}"),
            Some(&key),
            None,
        )
        .await;
    assert!(deleted.status < 300, "{}", deleted.text);
    app.call(Method::GET, "/members", Some(&key), None)
        .await
        .assert_problem(403, "forbidden");
    let everything = mint(&ada, json!(["*"])).await;
    assert_eq!(everything.status, 201, "{}", everything.text);
    let everything = everything.json["secret"].as_str().unwrap().to_owned();
    assert_eq!(
        app.call(Method::GET, "/members", Some(&everything), None)
            .await
            .status,
        200
    );

    // A deployer holds some projects permissions, not all of them.
    let defined = app
        .call(
            Method::PUT,
            "/roles/deployer",
            Some(&ada.token),
            Some(json!({ "permissions": ["api_keys:manage", "projects:read", "projects:create"] })),
        )
        .await;
    assert_eq!(defined.status, 200, "{}", defined.text);
    let dan = app.add_member(&ada, "dan@wild.test", &["deployer"]).await;
    let refused = mint(&dan, json!(["projects:read", "projects:*"])).await;
    refused.assert_problem(403, "forbidden");
    let detail = refused.json["detail"].as_str().unwrap();
    assert!(
        detail.contains("`projects:update`") && detail.contains("`projects:delete`"),
        "{detail}"
    );
    assert!(!detail.contains("`projects:read`"), "{detail}");
    assert_eq!(refused.json["errors"][0]["field"], "scopes[1]");
    mint(&dan, json!(["*:read"]))
        .await
        .assert_problem(403, "forbidden");
    let held = mint(&dan, json!(["projects:read", "projects:create"])).await;
    assert_eq!(held.status, 201, "{}", held.text);

    for nothing in ["widgets:*", "projects:archive", "projects"] {
        let invalid = mint(&ada, json!([nothing])).await;
        invalid.assert_problem(422, "validation");
        assert_eq!(invalid.json["errors"][0]["field"], "scopes[0]", "{nothing}");
    }
}

/// `GET /audit/verify` re-checks the tenant's whole hash chain, for owners
/// and admins only: an intact log answers `ok` with every event counted.
pub async fn audit_chain_verifies(app: &TestApp) {
    let ada = app.register("verified", "ada@verified.test").await;
    let alex = app.add_member(&ada, "alex@verified.test", &["admin"]).await;
    let mia = app
        .add_member(&alex, "mia@verified.test", &["member"])
        .await;
    let events = app
        .call(Method::GET, "/audit?limit=100", Some(&ada.token), None)
        .await;
    assert_eq!(events.status, 200, "{}", events.text);
    let count = events.json["items"].as_array().unwrap().len();
    assert!(count >= 5, "{}", events.text);
    for by in [&ada, &alex] {
        let verified = app
            .call(Method::GET, "/audit/verify", Some(&by.token), None)
            .await;
        assert_eq!(verified.status, 200, "{}", verified.text);
        assert_eq!(verified.json["ok"], true, "{}", verified.text);
        assert_eq!(verified.json["checked"], count, "{}", verified.text);
        assert_eq!(verified.json["first_broken"], Value::Null);
        assert_eq!(verified.json["last_intact"]["seq"], count);
    }
    app.call(Method::GET, "/audit/verify", Some(&mia.token), None)
        .await
        .assert_problem(403, "forbidden");
}

/// Policy writes are rate-limited per tenant (the builder's default: a
/// burst of 30, then one a second): past it `PUT` and `DELETE
/// /policies/{id}` answer `429` with `Retry-After`, while reads and other
/// tenants' writes go on.
pub async fn policy_writes_are_rate_limited(app: &TestApp) {
    let ada = app.register("busy", "ada@busy.test").await;
    let bob = app.register("quiet", "bob@quiet.test").await;
    let policy = json!({ "statements": [{ "effect": "deny", "actions": ["projects:delete"], "condition": "resource.archived == true" }] });
    let put = |by: &Account, n: usize| {
        let token = by.token.clone();
        let policy = policy.clone();
        async move {
            app.call(
                Method::PUT,
                &format!("/policies/p{n}"),
                Some(&token),
                Some(policy),
            )
            .await
        }
    };
    let mut written = 0;
    let refused = loop {
        let reply = put(&ada, written).await;
        if reply.status != 200 {
            break reply;
        }
        written += 1;
        assert!(written <= 60, "no write was ever refused");
    };
    assert!(
        written >= 30,
        "refused after {written} writes: {}",
        refused.text
    );
    refused.assert_problem(429, "rate-limited");
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    app.call(Method::DELETE, "/policies/p0", Some(&ada.token), None)
        .await
        .assert_problem(429, "rate-limited");

    let read = app
        .call(Method::GET, "/policies", Some(&ada.token), None)
        .await;
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.json["items"].as_array().unwrap().len(), written);
    let other = put(&bob, 0).await;
    assert_eq!(other.status, 200, "{}", other.text);

    // One write comes back each second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let deleted = app
        .call(Method::DELETE, "/policies/p0", Some(&ada.token), None)
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
}

/// Floods answer `429` with `Retry-After`: reset mail for one address,
/// whichever clients ask; a burst of successful logins from one client,
/// while another client still logs in.
pub async fn floods_are_throttled(app: &TestApp) {
    app.register("floods", "ada@floods.test").await;
    let mut refused = None;
    for attempt in 0..10 {
        let reply = app
            .send(
                app.request(Method::POST, "/auth/password-reset/start")
                    .header("x-forwarded-for", format!("198.51.100.{}", attempt + 1))
                    .json(&json!({ "email": "ada@floods.test" })),
            )
            .await;
        if reply.status == 429 {
            refused = Some((attempt, reply));
            break;
        }
        assert_eq!(reply.status, 202, "{}", reply.text);
    }
    let (attempt, reply) = refused.expect("reset mail for one address is throttled");
    assert!(attempt >= 3, "refused too early, at attempt {attempt}");
    assert!(reply.header("retry-after").is_some());

    let mut limited = None;
    for _ in 0..40 {
        let reply = app
            .send(
                app.request(Method::POST, "/auth/login")
                    .header("x-forwarded-for", "203.0.113.50")
                    .json(&json!({ "email": "ada@floods.test", "password": PASSWORD })),
            )
            .await;
        if reply.status == 429 {
            limited = Some(reply);
            break;
        }
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let limited = limited.expect("a burst of logins from one client is limited");
    limited.assert_problem(429, "rate-limited");
    assert!(limited.header("retry-after").is_some());
    let other = app
        .send(
            app.request(Method::POST, "/auth/login")
                .header("x-forwarded-for", "203.0.113.51")
                .json(&json!({ "email": "ada@floods.test", "password": PASSWORD })),
        )
        .await;
    assert_eq!(other.status, 200, "{}", other.text);
}

/// Role names that are neither built in nor defined are refused wherever
/// they would be handed out (`422`), so nobody holds a role before it is
/// defined; a role still held cannot be deleted (`409`).
pub async fn undefined_roles_are_refused(app: &TestApp) {
    let ada = app.register("undefined", "ada@undefined.test").await;
    let mia = app
        .add_member(&ada, "mia@undefined.test", &["member"])
        .await;
    let member_roles = format!("/members/{}/roles", mia.user);
    let assign = |roles: Value| {
        app.call(
            Method::PUT,
            &member_roles,
            Some(&ada.token),
            Some(json!({ "roles": roles })),
        )
    };
    assign(json!(["superadmin"]))
        .await
        .assert_problem(422, "validation");
    app.call(
        Method::POST,
        "/invitations",
        Some(&ada.token),
        Some(json!({ "email": "x@undefined.test", "roles": ["superadmin"] })),
    )
    .await
    .assert_problem(422, "validation");
    // Defined later, the name was never held by anyone.
    let defined = app
        .call(
            Method::PUT,
            "/roles/superadmin",
            Some(&ada.token),
            Some(json!({ "permissions": ["projects:delete"] })),
        )
        .await;
    assert_eq!(defined.status, 200, "{}", defined.text);
    let members = app
        .call(Method::GET, "/members", Some(&ada.token), None)
        .await;
    assert!(!members.text.contains("superadmin"), "{}", members.text);
    let assigned = assign(json!(["member", "superadmin"])).await;
    assert_eq!(assigned.status, 200, "{}", assigned.text);
    app.call(Method::DELETE, "/roles/superadmin", Some(&ada.token), None)
        .await
        .assert_problem(409, "conflict");
    let dropped = assign(json!(["member"])).await;
    assert_eq!(dropped.status, 200, "{}", dropped.text);
    let deleted = app
        .call(Method::DELETE, "/roles/superadmin", Some(&ada.token), None)
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
}
