//! The SCIM scenarios. Each starts from an empty app with the module.

use reqwest::Method;
use serde_json::{Value, json};
use tenancy_http::testkit::{Account, Reply, TestApp};

use crate::schema::{ENTERPRISE_SCHEMA, ERROR, LIST_RESPONSE, PATCH_OP, USER_SCHEMA};

/// `method path` with a SCIM token and an `application/scim+json` body.
pub async fn scim(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Reply {
    let mut request = app.request(method, path).bearer_auth(token);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/scim+json")
            .body(body.to_string());
    }
    app.send(request).await
}

/// Issues a SCIM token as `by` (an owner); returns the secret.
pub async fn issue_token(app: &TestApp, by: &Account) -> String {
    let reply = app
        .call(
            Method::POST,
            "/scim/tokens",
            Some(&by.token),
            Some(json!({ "name": "okta" })),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    reply.json["token"].as_str().unwrap().to_owned()
}

/// Asserts a SCIM error answer of `status` (and `scim_type`).
#[track_caller]
pub fn assert_scim_error(reply: &Reply, status: u16, scim_type: Option<&str>) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(
        reply.header("content-type"),
        Some("application/scim+json"),
        "{}",
        reply.text
    );
    assert_eq!(reply.json["schemas"], json!([ERROR]), "{}", reply.text);
    assert_eq!(reply.json["status"], status.to_string(), "{}", reply.text);
    match scim_type {
        Some(kind) => assert_eq!(reply.json["scimType"], kind, "{}", reply.text),
        None => assert!(reply.json.get("scimType").is_none(), "{}", reply.text),
    }
}

fn user_body(user_name: &str, given: &str, family: &str) -> Value {
    json!({
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "externalId": format!("okta-{given}"),
        "name": { "givenName": given, "familyName": family },
        "displayName": format!("{given} {family}"),
        "emails": [{ "value": user_name, "type": "work", "primary": true }],
        "active": true,
    })
}

/// Creates a user through SCIM; returns the resource.
pub async fn create(
    app: &TestApp,
    token: &str,
    user_name: &str,
    given: &str,
    family: &str,
) -> Value {
    let reply = scim(
        app,
        Method::POST,
        "/scim/v2/Users",
        token,
        Some(user_body(user_name, given, family)),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.json
}

/// A PATCH request body of `ops`.
pub fn patch(ops: Value) -> Value {
    json!({ "schemas": [PATCH_OP], "Operations": ops })
}

fn location(user: &Value) -> String {
    format!("/scim/v2/Users/{}", user["id"].as_str().unwrap())
}

/// Tokens: issued once (owners only, `scim:manage`), listed without
/// their secret, revoked; audited. Discovery describes what is supported.
pub async fn scim_tokens_and_discovery(app: &TestApp) {
    let owner = app.register("disco", "owner@disco.test").await;
    let member = app
        .add_member(&owner, "member@disco.test", &["member"])
        .await;
    let admin = app.add_member(&owner, "admin@disco.test", &["admin"]).await;
    let token = issue_token(app, &owner).await;
    assert!(token.starts_with("scim_"));
    for refused in [&member, &admin] {
        let denied = app
            .call(
                Method::POST,
                "/scim/tokens",
                Some(&refused.token),
                Some(json!({ "name": "x" })),
            )
            .await;
        denied.assert_problem(403, "forbidden");
    }
    let listed = app
        .call(Method::GET, "/scim/tokens", Some(&owner.token), None)
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.json["items"].as_array().unwrap().len(), 1);
    assert!(!listed.text.contains(&token), "the secret is shown once");
    let token_id = listed.json["items"][0]["id"].as_str().unwrap().to_owned();

    // Discovery.
    let config = app
        .call(Method::GET, "/scim/v2/ServiceProviderConfig", None, None)
        .await;
    assert_eq!(config.status, 200, "{}", config.text);
    assert_eq!(config.header("content-type"), Some("application/scim+json"));
    assert_eq!(config.json["patch"]["supported"], true);
    assert_eq!(config.json["bulk"]["supported"], false);
    assert_eq!(config.json["etag"]["supported"], true);
    assert_eq!(config.json["sort"]["supported"], true);
    assert_eq!(config.json["changePassword"]["supported"], false);
    assert_eq!(config.json["filter"]["maxResults"], 200);
    let types = app
        .call(Method::GET, "/scim/v2/ResourceTypes", None, None)
        .await;
    assert_eq!(types.json["schemas"], json!([LIST_RESPONSE]));
    assert_eq!(
        types.json["Resources"][0]["schemaExtensions"][0]["schema"],
        ENTERPRISE_SCHEMA
    );
    let user_type = app
        .call(Method::GET, "/scim/v2/ResourceTypes/User", None, None)
        .await;
    assert_eq!(user_type.json["endpoint"], "/Users");
    assert_eq!(types.json["totalResults"], 2);
    let group_type = app
        .call(Method::GET, "/scim/v2/ResourceTypes/Group", None, None)
        .await;
    assert_eq!(group_type.json["endpoint"], "/Groups");
    assert_eq!(group_type.json["schema"], crate::schema::GROUP_SCHEMA);
    let schemas = app.call(Method::GET, "/scim/v2/Schemas", None, None).await;
    assert_eq!(schemas.json["totalResults"], 3);
    let group_schema = app
        .call(
            Method::GET,
            &format!("/scim/v2/Schemas/{}", crate::schema::GROUP_SCHEMA),
            None,
            None,
        )
        .await;
    let group_names: Vec<&str> = group_schema.json["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        group_names,
        vec!["id", "externalId", "displayName", "members"]
    );
    let user_schema = app
        .call(
            Method::GET,
            &format!("/scim/v2/Schemas/{USER_SCHEMA}"),
            None,
            None,
        )
        .await;
    let names: Vec<&str> = user_schema.json["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"userName") && names.contains(&"emails") && !names.contains(&"groups"));
    let missing = app
        .call(Method::GET, "/scim/v2/Schemas/urn:nope", None, None)
        .await;
    assert_scim_error(&missing, 404, None);

    // Protocol routes take SCIM tokens only.
    let anonymous = app.call(Method::GET, "/scim/v2/Users", None, None).await;
    assert_scim_error(&anonymous, 401, None);
    assert!(
        anonymous
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer")
    );
    for wrong in [
        owner.token.as_str(),
        "scim_garbage",
        &format!("{}x", &token),
    ] {
        let reply = scim(app, Method::GET, "/scim/v2/Users", wrong, None).await;
        assert_scim_error(&reply, 401, None);
    }
    let ok = scim(app, Method::GET, "/scim/v2/Users", &token, None).await;
    assert_eq!(ok.status, 200, "{}", ok.text);

    // Revoked: refused at once.
    let revoked = app
        .call(
            Method::DELETE,
            &format!("/scim/tokens/{token_id}"),
            Some(&owner.token),
            None,
        )
        .await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    let after = scim(app, Method::GET, "/scim/v2/Users", &token, None).await;
    assert_scim_error(&after, 401, None);
    let audit = app
        .call(
            Method::GET,
            "/audit?action=scim.*",
            Some(&owner.token),
            None,
        )
        .await;
    let actions: Vec<&str> = audit.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec!["scim.token_issued", "scim.token_revoked"],
        "{}",
        audit.text
    );
}

/// Create, read, replace with ETags, delete; the member appears in the
/// directory and every change is audited with the token as actor.
pub async fn scim_user_lifecycle(app: &TestApp) {
    let owner = app.register("life", "owner@life.test").await;
    let token = issue_token(app, &owner).await;
    let reply = scim(
        app,
        Method::POST,
        "/scim/v2/Users",
        &token,
        Some(user_body("ada@life.test", "Ada", "Lovelace")),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/scim+json"));
    let user = reply.json.clone();
    let id = user["id"].as_str().unwrap();
    assert_eq!(user["userName"], "ada@life.test");
    assert_eq!(user["active"], true);
    assert_eq!(user["name"]["familyName"], "Lovelace");
    assert_eq!(user["meta"]["resourceType"], "User");
    assert_eq!(user["meta"]["version"], "W/\"1\"");
    assert!(
        reply
            .header("location")
            .unwrap()
            .ends_with(&format!("/scim/v2/Users/{id}"))
    );
    assert_eq!(reply.header("etag"), Some("W/\"1\""));
    assert_eq!(user["meta"]["location"].as_str(), reply.header("location"));

    let members = app
        .call(Method::GET, "/members", Some(&owner.token), None)
        .await;
    let ada = members.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"]["email"] == "ada@life.test")
        .unwrap_or_else(|| panic!("ada is a member: {}", members.text));
    assert_eq!(ada["membership"]["roles"], json!(["member"]));

    let got = scim(app, Method::GET, &location(&user), &token, None).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json, user);
    let mut conditional = app
        .request(Method::GET, &location(&user))
        .bearer_auth(&token);
    conditional = conditional.header("if-none-match", "W/\"1\"");
    assert_eq!(app.send(conditional).await.status, 304);

    let duplicate = scim(
        app,
        Method::POST,
        "/scim/v2/Users",
        &token,
        Some(user_body("ADA@life.test", "A", "L")),
    )
    .await;
    assert_scim_error(&duplicate, 409, Some("uniqueness"));

    // Replace: If-Match must name the current version.
    let mut replacement = user_body("ada@life.test", "Augusta", "King");
    replacement["title"] = json!("Countess");
    let stale = app
        .request(Method::PUT, &location(&user))
        .bearer_auth(&token)
        .header("if-match", "W/\"7\"")
        .header("content-type", "application/scim+json")
        .body(replacement.to_string());
    assert_scim_error(&app.send(stale).await, 412, None);
    let fresh = app
        .request(Method::PUT, &location(&user))
        .bearer_auth(&token)
        .header("if-match", "W/\"1\"")
        .header("content-type", "application/json")
        .body(replacement.to_string());
    let replaced = app.send(fresh).await;
    assert_eq!(replaced.status, 200, "{}", replaced.text);
    assert_eq!(replaced.json["name"]["givenName"], "Augusta");
    assert_eq!(replaced.json["title"], "Countess");
    assert_eq!(replaced.json["meta"]["version"], "W/\"2\"");
    assert_eq!(replaced.json["id"], user["id"]);
    assert_eq!(replaced.json["meta"]["created"], user["meta"]["created"]);

    let deleted = scim(app, Method::DELETE, &location(&user), &token, None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    assert_scim_error(
        &scim(app, Method::GET, &location(&user), &token, None).await,
        404,
        None,
    );
    let members = app
        .call(Method::GET, "/members", Some(&owner.token), None)
        .await;
    assert!(!members.text.contains("ada@life.test"), "{}", members.text);

    let audit = app
        .call(Method::GET, "/audit", Some(&owner.token), None)
        .await;
    let by_token: Vec<&str> = audit.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"]["type"] == "scim_token")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "member.provisioned",
        "scim.user_updated",
        "member.removed",
        "scim.user_deleted",
    ] {
        assert!(by_token.contains(&action), "{action} in {by_token:?}");
    }
}

/// `active: false` ends the member's access at once: sessions and refresh
/// tokens in the tenant, and the API keys they minted; `active: true`
/// restores the membership. The last owner cannot be deprovisioned.
pub async fn scim_deprovisioning_ends_access(app: &TestApp) {
    let owner = app.register("leavers", "owner@leavers.test").await;
    let grace = app
        .add_member(&owner, "grace@leavers.test", &["admin"])
        .await;
    let key = app
        .call(
            Method::POST,
            "/api-keys",
            Some(&grace.token),
            Some(json!({ "name": "ci", "scopes": ["members:read"] })),
        )
        .await;
    assert_eq!(key.status, 201, "{}", key.text);
    let secret = key.json["secret"].as_str().unwrap().to_owned();
    assert_eq!(
        app.call(Method::GET, "/members", Some(&secret), None)
            .await
            .status,
        200
    );
    let token = issue_token(app, &owner).await;

    // An existing member is linked, not duplicated.
    let linked = create(app, &token, "grace@leavers.test", "Grace", "Hopper").await;
    let members = app
        .call(Method::GET, "/members", Some(&owner.token), None)
        .await;
    assert_eq!(
        members.json["items"].as_array().unwrap().len(),
        2,
        "{}",
        members.text
    );
    assert_eq!(
        app.call(Method::GET, "/auth/me", Some(&grace.token), None)
            .await
            .status,
        200
    );

    // Okta deactivates with a path-less replace.
    let off = scim(
        app,
        Method::PATCH,
        &location(&linked),
        &token,
        Some(patch(json!([
            { "op": "replace", "value": { "active": false } }
        ]))),
    )
    .await;
    assert_eq!(off.status, 200, "{}", off.text);
    assert_eq!(off.json["active"], false);
    let me = app
        .call(Method::GET, "/auth/me", Some(&grace.token), None)
        .await;
    assert_eq!(me.status, 401, "sessions end at once: {}", me.text);
    let refreshed = app
        .call(
            Method::POST,
            "/auth/refresh",
            None,
            Some(json!({ "refresh_token": grace.refresh })),
        )
        .await;
    assert_eq!(refreshed.status, 401, "{}", refreshed.text);
    assert_eq!(
        app.call(Method::GET, "/members", Some(&secret), None)
            .await
            .status,
        401
    );
    let keys = app
        .call(Method::GET, "/api-keys", Some(&owner.token), None)
        .await;
    assert!(
        !keys.json["items"][0]["revoked_at"].is_null(),
        "{}",
        keys.text
    );
    let relogin = app
        .call(Method::POST, "/auth/login", None, Some(json!({ "email": "grace@leavers.test", "password": "correct horse battery", "tenant_id": owner.tenant })))
        .await;
    relogin.assert_problem(404, "not-found");

    // Leaving `active` out (a PUT without it, a PATCH removing it) keeps
    // the member deprovisioned.
    let put = scim(
        app,
        Method::PUT,
        &location(&linked),
        &token,
        Some(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "grace@leavers.test",
            "emails": [{ "value": "grace@leavers.test", "primary": true }],
        })),
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert_eq!(put.json["active"], false, "{}", put.text);
    let removed = scim(
        app,
        Method::PATCH,
        &location(&linked),
        &token,
        Some(patch(json!([{ "op": "remove", "path": "active" }]))),
    )
    .await;
    assert_eq!(removed.json["active"], false, "{}", removed.text);
    let relogin = app
        .call(Method::POST, "/auth/login", None, Some(json!({ "email": "grace@leavers.test", "password": "correct horse battery", "tenant_id": owner.tenant })))
        .await;
    relogin.assert_problem(404, "not-found");

    // Entra ID reactivates with a string boolean.
    let on = scim(
        app,
        Method::PATCH,
        &location(&linked),
        &token,
        Some(patch(json!([
            { "op": "Replace", "path": "active", "value": "True" }
        ]))),
    )
    .await;
    assert_eq!(on.status, 200, "{}", on.text);
    assert_eq!(on.json["active"], true);
    let back = app.login("grace@leavers.test", Some(&owner.tenant)).await;
    let me = app
        .call(Method::GET, "/auth/me", Some(&back.token), None)
        .await;
    assert_eq!(
        me.json["principal"]["roles"],
        json!(["admin"]),
        "suspension kept the roles: {}",
        me.text
    );

    // The directory never adopts an owner's membership, so it can neither
    // suspend nor remove an owner (not only the last one): owners change
    // owners through the member routes, which check the caller's rank.
    let second = app
        .add_member(&owner, "second@leavers.test", &["owner"])
        .await;
    for email in ["owner@leavers.test", "second@leavers.test"] {
        let refused = scim(
            app,
            Method::POST,
            "/scim/v2/Users",
            &token,
            Some(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": email,
                "emails": [{ "value": email, "primary": true }],
                "active": false,
            })),
        )
        .await;
        assert_scim_error(&refused, 400, Some("mutability"));
    }
    for account in [&owner, &second] {
        assert_eq!(
            app.call(Method::GET, "/auth/me", Some(&account.token), None)
                .await
                .status,
            200
        );
    }
}

/// Filters, pagination, sorting and projection.
pub async fn scim_lists_filters_and_pages(app: &TestApp) {
    let owner = app.register("lists", "owner@lists.test").await;
    let token = issue_token(app, &owner).await;
    for (user, given, family) in [
        ("ada@lists.test", "Ada", "Lovelace"),
        ("grace@lists.test", "Grace", "Hopper"),
        ("alan@lists.test", "Alan", "Turing"),
        ("edsger@lists.test", "Edsger", "Dijkstra"),
        ("barbara@lists.test", "Barbara", "Liskov"),
    ] {
        create(app, &token, user, given, family).await;
    }
    let list = |query: &'static str| {
        let token = token.clone();
        async move {
            scim(
                app,
                Method::GET,
                &format!("/scim/v2/Users{query}"),
                &token,
                None,
            )
            .await
        }
    };
    let names = |reply: &Reply| -> Vec<String> {
        reply.json["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["userName"].as_str().unwrap_or("").to_owned())
            .collect()
    };

    let all = list("").await;
    assert_eq!(all.json["schemas"], json!([LIST_RESPONSE]));
    assert_eq!(all.json["totalResults"], 5);
    let page = list("?startIndex=2&count=2").await;
    assert_eq!(
        (
            page.json["startIndex"].clone(),
            page.json["itemsPerPage"].clone(),
            page.json["totalResults"].clone()
        ),
        (json!(2), json!(2), json!(5))
    );
    assert_eq!(names(&page), vec!["grace@lists.test", "alan@lists.test"]);
    let past = list("?startIndex=9").await;
    assert_eq!(past.json["itemsPerPage"], 0);
    let zero = list("?count=0").await;
    assert_eq!(
        (
            zero.json["totalResults"].clone(),
            zero.json["itemsPerPage"].clone()
        ),
        (json!(5), json!(0))
    );

    let exact = list("?filter=userName%20eq%20%22GRACE@lists.test%22").await;
    assert_eq!(names(&exact), vec!["grace@lists.test"]);
    let either = list("?filter=name.familyName%20sw%20%22L%22%20or%20name.givenName%20eq%20%22alan%22&sortBy=userName").await;
    assert_eq!(
        names(&either),
        vec!["ada@lists.test", "alan@lists.test", "barbara@lists.test"]
    );
    let work =
        list("?filter=emails%5Btype%20eq%20%22work%22%20and%20value%20co%20%22ed%22%5D").await;
    assert_eq!(names(&work), vec!["edsger@lists.test"]);
    let negated = list("?filter=not%20(userName%20ew%20%22lists.test%22)").await;
    assert_eq!(negated.json["totalResults"], 0);
    let recent =
        list("?filter=meta.created%20gt%20%222000-01-01T00:00:00Z%22%20and%20active%20eq%20true")
            .await;
    assert_eq!(recent.json["totalResults"], 5);
    let sorted = list("?sortBy=name.familyName&sortOrder=descending&count=2").await;
    assert_eq!(names(&sorted), vec!["alan@lists.test", "ada@lists.test"]);

    let projected = list("?attributes=userName&count=1").await;
    let first = &projected.json["Resources"][0];
    let mut keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, vec!["id", "schemas", "userName"]);
    let excluded = list("?excludedAttributes=emails,name&count=1").await;
    assert!(excluded.json["Resources"][0].get("emails").is_none());
    assert!(excluded.json["Resources"][0].get("userName").is_some());

    let search = scim(
        app,
        Method::POST,
        "/scim/v2/Users/.search",
        &token,
        Some(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": "userName sw \"a\"",
            "sortBy": "userName",
            "attributes": ["userName"],
        })),
    )
    .await;
    assert_eq!(search.status, 200, "{}", search.text);
    assert_eq!(names(&search), vec!["ada@lists.test", "alan@lists.test"]);

    for bad in [
        "?filter=userName%20zz%20%22x%22",
        "?filter=(userName%20pr",
        "?filter=%22x%22",
    ] {
        assert_scim_error(&list(bad).await, 400, Some("invalidFilter"));
    }
    assert_scim_error(&list("?startIndex=one").await, 400, Some("invalidValue"));
    assert_scim_error(
        &list("?sortOrder=sideways").await,
        400,
        Some("invalidValue"),
    );
}

/// PATCH in the forms Okta and Entra ID send (see the crate README).
pub async fn scim_patch_as_identity_providers_send(app: &TestApp) {
    let owner = app.register("patches", "owner@patches.test").await;
    let token = issue_token(app, &owner).await;
    let user = create(app, &token, "ada@patches.test", "Ada", "Lovelace").await;
    let reply = scim(app, Method::PATCH, &location(&user), &token, Some(patch(json!([
        // Entra ID: filtered paths, capitalized ops, the enterprise extension.
        { "op": "Replace", "path": "emails[type eq \"work\"].value", "value": "ada@new.patches.test" },
        { "op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+44 20 7946 0000" },
        { "op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Analytics" },
        { "op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": "babbage-id" },
        { "op": "Replace", "path": "name.givenName", "value": "Augusta" },
        // Okta: path-less replace of several attributes.
        { "op": "replace", "value": { "displayName": "Augusta Ada King", "title": "Countess" } },
        { "op": "remove", "path": "externalId" },
    ])))).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let patched = &reply.json;
    assert_eq!(
        patched["emails"],
        json!([{ "value": "ada@new.patches.test", "type": "work", "primary": true }])
    );
    assert_eq!(
        patched["phoneNumbers"],
        json!([{ "type": "mobile", "value": "+44 20 7946 0000" }])
    );
    assert_eq!(
        patched[ENTERPRISE_SCHEMA],
        json!({ "department": "Analytics", "manager": { "value": "babbage-id" } })
    );
    assert_eq!(patched["schemas"], json!([USER_SCHEMA, ENTERPRISE_SCHEMA]));
    assert_eq!(
        patched["name"],
        json!({ "givenName": "Augusta", "familyName": "Lovelace" })
    );
    assert_eq!(patched["displayName"], "Augusta Ada King");
    assert!(patched.get("externalId").is_none());
    assert_eq!(patched["meta"]["version"], "W/\"2\"");
    let filtered = scim(app, Method::GET, "/scim/v2/Users?filter=urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department%20eq%20%22analytics%22", &token, None).await;
    assert_eq!(filtered.json["totalResults"], 1, "{}", filtered.text);

    let remove = scim(app, Method::PATCH, &location(&user), &token, Some(patch(json!([
        { "op": "remove", "path": "phoneNumbers[type eq \"mobile\"]" },
        { "op": "remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager" },
    ])))).await;
    assert_eq!(remove.status, 200, "{}", remove.text);
    assert!(remove.json.get("phoneNumbers").is_none());
    assert_eq!(
        remove.json[ENTERPRISE_SCHEMA],
        json!({ "department": "Analytics" })
    );

    let stale = app
        .request(Method::PATCH, &location(&user))
        .bearer_auth(&token)
        .header("if-match", "W/\"2\"")
        .header("content-type", "application/scim+json")
        .body(patch(json!([{ "op": "replace", "path": "title", "value": "x" }])).to_string());
    assert_scim_error(&app.send(stale).await, 412, None);
    for (ops, kind) in [
        (
            json!([{ "op": "replace", "path": "id", "value": "forged" }]),
            "mutability",
        ),
        (
            json!([{ "op": "replace", "path": "meta.created", "value": "2000-01-01T00:00:00Z" }]),
            "mutability",
        ),
        (
            json!([{ "op": "replace", "path": "shoeSize", "value": 42 }]),
            "invalidPath",
        ),
        (
            json!([{ "op": "replace", "path": "emails[type eq \"work\"", "value": "x" }]),
            "invalidPath",
        ),
        (json!([{ "op": "remove" }]), "noTarget"),
        (
            json!([{ "op": "replace", "path": "emails[value co \"nowhere\"].type", "value": "home" }]),
            "noTarget",
        ),
        (
            json!([{ "op": "replace", "path": "active", "value": "perhaps" }]),
            "invalidValue",
        ),
        (
            json!([{ "op": "move", "path": "title", "value": "x" }]),
            "invalidSyntax",
        ),
        (
            json!([{ "op": "remove", "path": "userName" }]),
            "invalidValue",
        ),
    ] {
        let reply = scim(
            app,
            Method::PATCH,
            &location(&user),
            &token,
            Some(patch(ops.clone())),
        )
        .await;
        assert_scim_error(&reply, 400, Some(kind));
    }
    let unchanged = scim(app, Method::GET, &location(&user), &token, None).await;
    assert_eq!(
        unchanged.json["meta"]["version"], "W/\"3\"",
        "refused patches change nothing"
    );
}

/// A token of tenant A never reads or changes anything of tenant B; one
/// person provisioned by both is one account with two separate views.
pub async fn scim_tenants_are_isolated(app: &TestApp) {
    let a_owner = app.register("tenant-a", "owner@a.test").await;
    let b_owner = app.register("tenant-b", "owner@b.test").await;
    let a = issue_token(app, &a_owner).await;
    let b = issue_token(app, &b_owner).await;
    let in_a = create(app, &a, "shared@people.test", "Shared", "InA").await;

    let path = location(&in_a);
    assert_scim_error(&scim(app, Method::GET, &path, &b, None).await, 404, None);
    assert_scim_error(
        &scim(
            app,
            Method::PUT,
            &path,
            &b,
            Some(user_body("x@people.test", "X", "Y")),
        )
        .await,
        404,
        None,
    );
    let patch_b = patch(json!([{ "op": "replace", "path": "active", "value": false }]));
    assert_scim_error(
        &scim(app, Method::PATCH, &path, &b, Some(patch_b)).await,
        404,
        None,
    );
    assert_scim_error(&scim(app, Method::DELETE, &path, &b, None).await, 404, None);
    let listed = scim(app, Method::GET, "/scim/v2/Users", &b, None).await;
    assert_eq!(listed.json["totalResults"], 0);
    let searched = scim(
        app,
        Method::GET,
        "/scim/v2/Users?filter=userName%20eq%20%22shared@people.test%22",
        &b,
        None,
    )
    .await;
    assert_eq!(searched.json["totalResults"], 0);

    // B provisions the same person: linked to the one account, B's own view.
    let in_b = create(app, &b, "shared@people.test", "Shared", "InB").await;
    assert_ne!(in_b["id"], in_a["id"]);
    assert_eq!(in_b["name"]["familyName"], "InB");
    let still_a = scim(app, Method::GET, &path, &a, None).await;
    assert_eq!(still_a.json["name"]["familyName"], "InA");

    // B deactivating its member leaves A's membership alone.
    let off = scim(
        app,
        Method::PATCH,
        &location(&in_b),
        &b,
        Some(patch(json!([
            { "op": "replace", "path": "active", "value": false }
        ]))),
    )
    .await;
    assert_eq!(off.status, 200, "{}", off.text);
    let members_a = app
        .call(Method::GET, "/members", Some(&a_owner.token), None)
        .await;
    let shared = members_a.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"]["email"] == "shared@people.test")
        .unwrap();
    assert_eq!(
        shared["membership"]["status"], "active",
        "{}",
        members_a.text
    );

    // B's token cannot manage A's tokens either.
    let a_tokens = app
        .call(Method::GET, "/scim/tokens", Some(&a_owner.token), None)
        .await;
    let a_token_id = a_tokens.json["items"][0]["id"].as_str().unwrap();
    let cross = app
        .call(
            Method::DELETE,
            &format!("/scim/tokens/{a_token_id}"),
            Some(&b_owner.token),
            None,
        )
        .await;
    assert_eq!(cross.status, 404, "{}", cross.text);
    assert_eq!(
        scim(app, Method::GET, "/scim/v2/Users", &a, None)
            .await
            .status,
        200
    );
}

/// Media types, malformed bodies and unsupported endpoints.
pub async fn scim_errors(app: &TestApp) {
    let owner = app.register("errors", "owner@errors.test").await;
    let token = issue_token(app, &owner).await;
    let text = app
        .request(Method::POST, "/scim/v2/Users")
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body(user_body("a@errors.test", "A", "B").to_string());
    assert_scim_error(&app.send(text).await, 415, None);
    let broken = app
        .request(Method::POST, "/scim/v2/Users")
        .bearer_auth(&token)
        .header("content-type", "application/scim+json")
        .body("{\"userName\": ");
    assert_scim_error(&app.send(broken).await, 400, Some("invalidSyntax"));
    let mut no_schemas = user_body("a@errors.test", "A", "B");
    no_schemas.as_object_mut().unwrap().remove("schemas");
    assert_scim_error(
        &scim(
            app,
            Method::POST,
            "/scim/v2/Users",
            &token,
            Some(no_schemas),
        )
        .await,
        400,
        Some("invalidSyntax"),
    );
    let no_name = json!({ "schemas": [USER_SCHEMA], "emails": [{ "value": "a@errors.test" }] });
    assert_scim_error(
        &scim(app, Method::POST, "/scim/v2/Users", &token, Some(no_name)).await,
        400,
        Some("invalidValue"),
    );
    let no_email = json!({ "schemas": [USER_SCHEMA], "userName": "not-an-address" });
    assert_scim_error(
        &scim(app, Method::POST, "/scim/v2/Users", &token, Some(no_email)).await,
        400,
        Some("invalidValue"),
    );
    let wrong_type = json!({ "schemas": [USER_SCHEMA], "userName": "a@errors.test", "active": 3 });
    assert_scim_error(
        &scim(
            app,
            Method::POST,
            "/scim/v2/Users",
            &token,
            Some(wrong_type),
        )
        .await,
        400,
        Some("invalidValue"),
    );
    let members = app
        .call(Method::GET, "/members", Some(&owner.token), None)
        .await;
    assert_eq!(
        members.json["items"].as_array().unwrap().len(),
        1,
        "refused creates add no one"
    );

    for path in [
        "/scim/v2/Users/not-a-uuid",
        "/scim/v2/Users/01890a5d-ac96-774b-bcce-b302099a8057",
    ] {
        assert_scim_error(&scim(app, Method::GET, path, &token, None).await, 404, None);
    }
    for (method, path) in [
        (Method::POST, "/scim/v2/Bulk"),
        (Method::GET, "/scim/v2/Me"),
    ] {
        let reply = scim(app, method, path, &token, None).await;
        assert_scim_error(&reply, 501, None);
    }
    // Answers carry no cache permission and no sniffing.
    let reply = scim(app, Method::GET, "/scim/v2/Users", &token, None).await;
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
}
