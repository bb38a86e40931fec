//! The SCIM Group and settings scenarios. Each starts from an empty app
//! with the module.

use reqwest::Method;
use serde_json::{Value, json};
use tenancy_http::testkit::{Account, Reply, TestApp};

use super::scenarios::{assert_scim_error, create, issue_token, patch, scim};
use crate::schema::{GROUP_SCHEMA, LIST_RESPONSE};

fn group_body(name: &str, members: &[&Value]) -> Value {
    json!({
        "schemas": [GROUP_SCHEMA],
        "displayName": name,
        "externalId": format!("idp-{name}"),
        "members": members.iter().map(|u| json!({ "value": u["id"] })).collect::<Vec<_>>(),
    })
}

fn path_of(group: &Value) -> String {
    format!("/scim/v2/Groups/{}", group["id"].as_str().unwrap())
}

fn member_ids(group: &Value) -> Vec<String> {
    group["members"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .map(|m| m["value"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Creates a group through SCIM; returns the resource.
pub async fn create_group(app: &TestApp, token: &str, name: &str, members: &[&Value]) -> Value {
    let reply = scim(
        app,
        Method::POST,
        "/scim/v2/Groups",
        token,
        Some(group_body(name, members)),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.json
}

/// The roles and status of `email`'s membership, as `/members` shows them.
async fn membership(app: &TestApp, owner: &Account, email: &str) -> Option<Value> {
    let members = app
        .call(Method::GET, "/members", Some(&owner.token), None)
        .await;
    assert_eq!(members.status, 200, "{}", members.text);
    members.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"]["email"] == email)
        .map(|m| m["membership"].clone())
}

async fn roles_of(app: &TestApp, owner: &Account, email: &str) -> Value {
    membership(app, owner, email)
        .await
        .unwrap_or_else(|| panic!("{email} is a member"))["roles"]
        .clone()
}

async fn put_settings(app: &TestApp, by: &Account, body: Value) -> Reply {
    app.call(Method::PUT, "/scim/settings", Some(&by.token), Some(body))
        .await
}

/// Create, read (ETag, 304), list with filters and projection, PATCH in
/// the Okta and Entra ID forms, replace with If-Match, delete; a deleted
/// User leaves its groups.
pub async fn scim_group_lifecycle(app: &TestApp) {
    let owner = app.register("groups", "owner@groups.test").await;
    let token = issue_token(app, &owner).await;
    let ada = create(app, &token, "ada@groups.test", "Ada", "Lovelace").await;
    let grace = create(app, &token, "grace@groups.test", "Grace", "Hopper").await;
    let alan = create(app, &token, "alan@groups.test", "Alan", "Turing").await;

    let reply = scim(
        app,
        Method::POST,
        "/scim/v2/Groups",
        &token,
        Some(group_body("Engineering", &[&ada, &grace])),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/scim+json"));
    let group = reply.json.clone();
    assert_eq!(group["schemas"], json!([GROUP_SCHEMA]));
    assert_eq!(group["displayName"], "Engineering");
    assert_eq!(group["externalId"], "idp-Engineering");
    assert_eq!(group["meta"]["resourceType"], "Group");
    assert_eq!(group["meta"]["version"], "W/\"1\"");
    assert_eq!(reply.header("etag"), Some("W/\"1\""));
    assert_eq!(group["meta"]["location"].as_str(), reply.header("location"));
    let mut expected = vec![
        ada["id"].as_str().unwrap().to_owned(),
        grace["id"].as_str().unwrap().to_owned(),
    ];
    expected.sort();
    assert_eq!(member_ids(&group), expected);
    let ada_entry = group["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["value"] == ada["id"])
        .unwrap();
    assert_eq!(ada_entry["display"], "Ada Lovelace");
    assert_eq!(ada_entry["type"], "User");
    assert!(
        ada_entry["$ref"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/scim/v2/Users/{}", ada["id"].as_str().unwrap()))
    );

    let got = scim(app, Method::GET, &path_of(&group), &token, None).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.json, group);
    let conditional = app
        .request(Method::GET, &path_of(&group))
        .bearer_auth(&token)
        .header("if-none-match", "W/\"1\"");
    assert_eq!(app.send(conditional).await.status, 304);
    let duplicate = scim(
        app,
        Method::POST,
        "/scim/v2/Groups",
        &token,
        Some(group_body("ENGINEERING", &[])),
    )
    .await;
    assert_scim_error(&duplicate, 409, Some("uniqueness"));
    create_group(app, &token, "Everyone", &[&alan]).await;

    // Lists: filters over displayName and members.value, projection.
    let list = |query: String| {
        let token = token.clone();
        async move {
            scim(
                app,
                Method::GET,
                &format!("/scim/v2/Groups{query}"),
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
            .map(|r| r["displayName"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let all = list(String::new()).await;
    assert_eq!(all.json["schemas"], json!([LIST_RESPONSE]));
    assert_eq!(all.json["totalResults"], 2);
    let by_name = list("?filter=displayName%20eq%20%22engineering%22".into()).await;
    assert_eq!(names(&by_name), vec!["Engineering"]);
    let by_member = list(format!(
        "?filter=members.value%20eq%20%22{}%22",
        alan["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(names(&by_member), vec!["Everyone"]);
    let sorted = list("?sortBy=displayName&sortOrder=descending&count=1".into()).await;
    assert_eq!(names(&sorted), vec!["Everyone"]);
    assert_eq!(sorted.json["totalResults"], 2);
    let slim = list("?excludedAttributes=members".into()).await;
    assert!(
        slim.json["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g.get("members").is_none() && g.get("displayName").is_some())
    );
    let one = scim(
        app,
        Method::GET,
        &format!("{}?attributes=displayName", path_of(&group)),
        &token,
        None,
    )
    .await;
    let mut keys: Vec<&str> = one
        .json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, vec!["displayName", "id", "schemas"]);
    let search = scim(
        app,
        Method::POST,
        "/scim/v2/Groups/.search",
        &token,
        Some(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": "displayName sw \"Eng\"",
            "excludedAttributes": ["members"],
        })),
    )
    .await;
    assert_eq!(search.status, 200, "{}", search.text);
    assert_eq!(names(&search), vec!["Engineering"]);
    for bad in [
        "?filter=displayName%20zz%20%22x%22",
        "?filter=userName%20eq%20%22x%22",
    ] {
        assert_scim_error(&list(bad.into()).await, 400, Some("invalidFilter"));
    }

    // Okta: add with a value array, remove with a filtered path.
    let okta = scim(app, Method::PATCH, &path_of(&group), &token, Some(patch(json!([
        { "op": "add", "path": "members", "value": [{ "value": alan["id"] }] },
        { "op": "remove", "path": format!("members[value eq \"{}\"]", ada["id"].as_str().unwrap()) },
    ])))).await;
    assert_eq!(okta.status, 200, "{}", okta.text);
    let mut expected = vec![
        grace["id"].as_str().unwrap().to_owned(),
        alan["id"].as_str().unwrap().to_owned(),
    ];
    expected.sort();
    assert_eq!(member_ids(&okta.json), expected);
    assert_eq!(okta.json["meta"]["version"], "W/\"2\"");
    // Entra ID: capitalized ops, removal with a value array, a path-less replace.
    let entra = scim(app, Method::PATCH, &path_of(&group), &token, Some(patch(json!([
        { "op": "Add", "path": "members", "value": [{ "value": ada["id"] }] },
        { "op": "Remove", "path": "members", "value": [{ "value": grace["id"] }, { "value": alan["id"] }] },
        { "op": "Replace", "value": { "displayName": "Engineering Team", "externalId": "entra-1" } },
    ])))).await;
    assert_eq!(entra.status, 200, "{}", entra.text);
    assert_eq!(
        member_ids(&entra.json),
        vec![ada["id"].as_str().unwrap().to_owned()]
    );
    assert_eq!(entra.json["displayName"], "Engineering Team");
    assert_eq!(entra.json["externalId"], "entra-1");
    let renamed = scim(
        app,
        Method::PATCH,
        &path_of(&group),
        &token,
        Some(patch(json!([
            { "op": "replace", "path": "displayName", "value": "Engineering" },
        ]))),
    )
    .await;
    assert_eq!(renamed.json["displayName"], "Engineering");
    assert_eq!(renamed.json["meta"]["version"], "W/\"4\"");
    for (ops, kind) in [
        (
            json!([{ "op": "replace", "path": "id", "value": "x" }]),
            "mutability",
        ),
        (
            json!([{ "op": "remove", "path": "displayName" }]),
            "invalidValue",
        ),
        (
            json!([{ "op": "add", "path": "owners", "value": "x" }]),
            "invalidPath",
        ),
        (
            json!([{ "op": "add", "path": "members", "value": [{ "value": "nobody" }] }]),
            "invalidValue",
        ),
        (
            json!([{ "op": "replace", "value": { "displayName": "Everyone" } }]),
            "uniqueness",
        ),
    ] {
        let reply = scim(
            app,
            Method::PATCH,
            &path_of(&group),
            &token,
            Some(patch(ops)),
        )
        .await;
        let status = if kind == "uniqueness" { 409 } else { 400 };
        assert_scim_error(&reply, status, Some(kind));
    }

    // Replace honours If-Match.
    let stale = app
        .request(Method::PUT, &path_of(&group))
        .bearer_auth(&token)
        .header("if-match", "W/\"1\"")
        .header("content-type", "application/scim+json")
        .body(group_body("Engineering", &[&grace]).to_string());
    assert_scim_error(&app.send(stale).await, 412, None);
    let fresh = app
        .request(Method::PUT, &path_of(&group))
        .bearer_auth(&token)
        .header("if-match", "W/\"4\"")
        .header("content-type", "application/scim+json")
        .body(group_body("Engineering", &[&grace, &ada]).to_string());
    let replaced = app.send(fresh).await;
    assert_eq!(replaced.status, 200, "{}", replaced.text);
    assert_eq!(replaced.json["meta"]["version"], "W/\"5\"");
    assert_eq!(replaced.json["meta"]["created"], group["meta"]["created"]);
    assert_eq!(member_ids(&replaced.json).len(), 2);

    // Deleting a User removes it from its groups.
    let deleted = scim(
        app,
        Method::DELETE,
        &format!("/scim/v2/Users/{}", grace["id"].as_str().unwrap()),
        &token,
        None,
    )
    .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let after = scim(app, Method::GET, &path_of(&group), &token, None).await;
    assert_eq!(
        member_ids(&after.json),
        vec![ada["id"].as_str().unwrap().to_owned()]
    );

    let stale_delete = app
        .request(Method::DELETE, &path_of(&group))
        .bearer_auth(&token)
        .header("if-match", "W/\"1\"");
    assert_scim_error(&app.send(stale_delete).await, 412, None);
    let gone = scim(app, Method::DELETE, &path_of(&group), &token, None).await;
    assert_eq!(gone.status, 204, "{}", gone.text);
    assert_scim_error(
        &scim(app, Method::GET, &path_of(&group), &token, None).await,
        404,
        None,
    );
    let user = format!("/scim/v2/Users/{}", ada["id"].as_str().unwrap());
    assert_eq!(
        scim(app, Method::GET, &user, &token, None).await.status,
        200,
        "a user outlives its group"
    );
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
        .filter(|e| e["actor"]["type"] == "scim_token")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "scim.group_created",
        "scim.group_updated",
        "scim.group_deleted",
    ] {
        assert!(actions.contains(&action), "{action} in {}", audit.text);
    }
}

/// A mapped group grants its role; leaving it takes the member back to
/// the default roles; plain groups grant nothing. Settings need
/// `scim:manage`, and no group may grant `owner` by default.
pub async fn scim_group_roles_follow_the_mapping(app: &TestApp) {
    let owner = app.register("mapped", "owner@mapped.test").await;
    let member = app
        .add_member(&owner, "member@mapped.test", &["member"])
        .await;
    let admin = app
        .add_member(&owner, "admin@mapped.test", &["admin"])
        .await;
    let token = issue_token(app, &owner).await;

    for refused in [&member, &admin] {
        app.call(Method::GET, "/scim/settings", Some(&refused.token), None)
            .await
            .assert_problem(403, "forbidden");
        put_settings(app, refused, json!({ "deprovision": "remove" }))
            .await
            .assert_problem(403, "forbidden");
    }
    let defaults = app
        .call(Method::GET, "/scim/settings", Some(&owner.token), None)
        .await;
    assert_eq!(defaults.status, 200, "{}", defaults.text);
    assert_eq!(
        defaults.json,
        json!({ "deprovision": "suspend", "group_roles": [] })
    );
    put_settings(
        app,
        &owner,
        json!({ "deprovision": "suspend", "group_roles": [{ "group": "Owners", "role": "owner" }] }),
    )
    .await
    .assert_problem(422, "validation");
    put_settings(
        app,
        &owner,
        json!({ "deprovision": "suspend", "group_roles": [{ "group": "Ghosts", "role": "no-such-role" }] }),
    )
    .await
    .assert_problem(422, "validation");
    let saved = put_settings(
        app,
        &owner,
        json!({ "deprovision": "suspend", "group_roles": [{ "group": "Engineering Admins", "role": "admin" }] }),
    )
    .await;
    assert_eq!(saved.status, 200, "{}", saved.text);
    assert_eq!(saved.json["group_roles"][0]["role"], "admin");

    let ada = create(app, &token, "ada@mapped.test", "Ada", "Lovelace").await;
    let grace = create(app, &token, "grace@mapped.test", "Grace", "Hopper").await;
    assert_eq!(
        roles_of(app, &owner, "ada@mapped.test").await,
        json!(["member"])
    );
    let admins = create_group(app, &token, "engineering admins", &[&ada]).await;
    create_group(app, &token, "Everyone", &[&ada, &grace]).await;
    assert_eq!(
        roles_of(app, &owner, "ada@mapped.test").await,
        json!(["admin"]),
        "the mapped group (matched without case) grants admin"
    );
    assert_eq!(
        roles_of(app, &owner, "grace@mapped.test").await,
        json!(["member"]),
        "a plain group grants nothing"
    );
    // Entra ID adds grace; Okta removes ada.
    let added = scim(app, Method::PATCH, &path_of(&admins), &token, Some(patch(json!([
        { "op": "Add", "path": "members", "value": [{ "value": grace["id"] }] },
        { "op": "remove", "path": format!("members[value eq \"{}\"]", ada["id"].as_str().unwrap()) },
    ])))).await;
    assert_eq!(added.status, 200, "{}", added.text);
    assert_eq!(
        roles_of(app, &owner, "grace@mapped.test").await,
        json!(["admin"])
    );
    assert_eq!(
        roles_of(app, &owner, "ada@mapped.test").await,
        json!(["member"]),
        "leaving the mapped group takes ada back to the default roles"
    );
    // Changing the mapping re-derives the roles of the group's members.
    let unmapped = put_settings(
        app,
        &owner,
        json!({ "deprovision": "suspend", "group_roles": [] }),
    )
    .await;
    assert_eq!(unmapped.status, 200, "{}", unmapped.text);
    assert_eq!(
        roles_of(app, &owner, "grace@mapped.test").await,
        json!(["member"])
    );

    let audit = app
        .call(Method::GET, "/audit", Some(&owner.token), None)
        .await;
    let items = audit.json["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|e| e["action"] == "member.role_changed" && e["actor"]["type"] == "scim_token"),
        "role changes go through the directory, the token as actor: {}",
        audit.text
    );
    assert!(
        items.iter().any(|e| e["action"] == "scim.settings_changed"),
        "{}",
        audit.text
    );
}

/// With owner mapping allowed, a group may make owners, but a change that
/// would leave the tenant without an active owner is refused and changes
/// nothing.
pub async fn scim_groups_keep_the_last_owner(app: &TestApp) {
    let owner = app.register("owners", "owner@owners.test").await;
    let token = issue_token(app, &owner).await;
    let saved = put_settings(
        app,
        &owner,
        json!({ "deprovision": "suspend", "group_roles": [{ "group": "Owners", "role": "owner" }] }),
    )
    .await;
    assert_eq!(saved.status, 200, "{}", saved.text);
    let ada = create(app, &token, "ada@owners.test", "Ada", "Lovelace").await;
    let owners = create_group(app, &token, "Owners", &[&ada]).await;
    assert_eq!(
        roles_of(app, &owner, "ada@owners.test").await,
        json!(["owner"])
    );

    // The first owner steps down: ada is the last owner.
    let stepped = app
        .call(
            Method::PUT,
            &format!("/members/{}/roles", owner.user),
            Some(&owner.token),
            Some(json!({ "roles": ["admin"] })),
        )
        .await;
    assert_eq!(stepped.status, 200, "{}", stepped.text);

    let remove = scim(app, Method::PATCH, &path_of(&owners), &token, Some(patch(json!([
        { "op": "remove", "path": format!("members[value eq \"{}\"]", ada["id"].as_str().unwrap()) },
    ])))).await;
    assert_scim_error(&remove, 400, Some("mutability"));
    assert!(
        remove.json["detail"]
            .as_str()
            .unwrap()
            .contains("last active owner"),
        "{}",
        remove.text
    );
    assert_scim_error(
        &scim(app, Method::DELETE, &path_of(&owners), &token, None).await,
        400,
        Some("mutability"),
    );
    let unchanged = scim(app, Method::GET, &path_of(&owners), &token, None).await;
    assert_eq!(
        unchanged.json["meta"]["version"], "W/\"1\"",
        "nothing changed"
    );
    assert_eq!(member_ids(&unchanged.json).len(), 1);
    assert_eq!(
        roles_of(app, &owner, "ada@owners.test").await,
        json!(["owner"])
    );
}

/// A token of tenant A never reads or changes B's groups, and B's users
/// cannot join A's groups.
pub async fn scim_groups_are_isolated(app: &TestApp) {
    let a_owner = app.register("groups-a", "owner@ga.test").await;
    let b_owner = app.register("groups-b", "owner@gb.test").await;
    let a = issue_token(app, &a_owner).await;
    let b = issue_token(app, &b_owner).await;
    let in_a = create(app, &a, "ada@ga.test", "Ada", "InA").await;
    let in_b = create(app, &b, "bob@gb.test", "Bob", "InB").await;
    let group = create_group(app, &a, "Engineering", &[&in_a]).await;

    let leaky = scim(
        app,
        Method::POST,
        "/scim/v2/Groups",
        &a,
        Some(group_body("Leaky", &[&in_b])),
    )
    .await;
    assert_scim_error(&leaky, 400, Some("invalidValue"));
    assert!(!leaky.text.contains("bob"), "{}", leaky.text);
    let add_b = scim(
        app,
        Method::PATCH,
        &path_of(&group),
        &a,
        Some(patch(json!([
            { "op": "add", "path": "members", "value": [{ "value": in_b["id"] }] },
        ]))),
    )
    .await;
    assert_scim_error(&add_b, 400, Some("invalidValue"));

    let path = path_of(&group);
    assert_scim_error(&scim(app, Method::GET, &path, &b, None).await, 404, None);
    assert_scim_error(
        &scim(
            app,
            Method::PUT,
            &path,
            &b,
            Some(group_body("Mine", &[&in_b])),
        )
        .await,
        404,
        None,
    );
    assert_scim_error(
        &scim(
            app,
            Method::PATCH,
            &path,
            &b,
            Some(patch(json!([
                { "op": "replace", "path": "displayName", "value": "Mine" },
            ]))),
        )
        .await,
        404,
        None,
    );
    assert_scim_error(&scim(app, Method::DELETE, &path, &b, None).await, 404, None);
    let listed = scim(app, Method::GET, "/scim/v2/Groups", &b, None).await;
    assert_eq!(listed.json["totalResults"], 0);
    // B may use the same name.
    create_group(app, &b, "Engineering", &[&in_b]).await;
    let still = scim(app, Method::GET, &path, &a, None).await;
    assert_eq!(still.json["meta"]["version"], "W/\"1\"");
    assert_eq!(
        member_ids(&still.json),
        vec![in_a["id"].as_str().unwrap().to_owned()]
    );
}

/// Each tenant chooses what deactivation does: A removes, B suspends
/// (the module's default). A removed member who comes back gets their
/// mapped groups' roles again.
pub async fn scim_deprovisioning_follows_the_tenant_setting(app: &TestApp) {
    let a_owner = app.register("leave-a", "owner@la.test").await;
    let b_owner = app.register("leave-b", "owner@lb.test").await;
    let a = issue_token(app, &a_owner).await;
    let b = issue_token(app, &b_owner).await;
    let saved = put_settings(
        app,
        &a_owner,
        json!({ "deprovision": "remove", "group_roles": [{ "group": "Admins", "role": "admin" }] }),
    )
    .await;
    assert_eq!(saved.status, 200, "{}", saved.text);
    assert_eq!(saved.json["deprovision"], "remove");
    put_settings(app, &a_owner, json!({ "deprovision": "sometimes" }))
        .await
        .assert_problem(422, "validation");

    let mut in_a = Value::Null;
    for (token, email) in [(&a, "ada@la.test"), (&b, "ada@lb.test")] {
        let user = create(app, token, email, "Ada", "Lovelace").await;
        if token == &a {
            create_group(app, token, "Admins", &[&user]).await;
            assert_eq!(roles_of(app, &a_owner, email).await, json!(["admin"]));
            in_a = user.clone();
        }
        let off = scim(
            app,
            Method::PATCH,
            &format!("/scim/v2/Users/{}", user["id"].as_str().unwrap()),
            token,
            Some(patch(
                json!([{ "op": "replace", "path": "active", "value": false }]),
            )),
        )
        .await;
        assert_eq!(off.status, 200, "{}", off.text);
        assert_eq!(off.json["active"], false);
    }
    assert!(
        membership(app, &a_owner, "ada@la.test").await.is_none(),
        "tenant A removes"
    );
    assert_eq!(
        membership(app, &b_owner, "ada@lb.test").await.unwrap()["status"],
        "suspended",
        "tenant B suspends"
    );
    let back = scim(
        app,
        Method::PATCH,
        &format!("/scim/v2/Users/{}", in_a["id"].as_str().unwrap()),
        &a,
        Some(patch(
            json!([{ "op": "replace", "path": "active", "value": true }]),
        )),
    )
    .await;
    assert_eq!(back.status, 200, "{}", back.text);
    assert_eq!(
        roles_of(app, &a_owner, "ada@la.test").await,
        json!(["admin"]),
        "re-added with the mapped group's role"
    );
    let b_settings = app
        .call(Method::GET, "/scim/settings", Some(&b_owner.token), None)
        .await;
    assert_eq!(b_settings.json["deprovision"], "suspend");
}

/// `PUT /scim/settings` checks the caller's rank over every mapping it
/// adds and every mapping it removes or moves: a custom role holding
/// `scim:manage` below `admin` cannot take `admin` away from a group, nor
/// clear the mapping, but may add a mapping to a role it holds.
pub async fn scim_settings_changes_need_rank_over_old_and_new_roles(app: &TestApp) {
    let owner = app.register("ranked", "owner@ranked.test").await;
    let role = app
        .call(
            Method::PUT,
            "/roles/provisioner",
            Some(&owner.token),
            Some(
                json!({ "permissions": ["scim:manage", "members:manage"], "inherits": ["member"] }),
            ),
        )
        .await;
    assert_eq!(role.status, 200, "{}", role.text);
    let provisioner = app
        .add_member(&owner, "prov@ranked.test", &["provisioner"])
        .await;
    let admins = json!({ "group": "Admins", "role": "admin" });
    let saved = put_settings(
        app,
        &owner,
        json!({ "deprovision": "suspend", "group_roles": [admins.clone()] }),
    )
    .await;
    assert_eq!(saved.status, 200, "{}", saved.text);
    for refused in [
        json!([]),
        json!([{ "group": "Admins", "role": "member" }]),
        json!([{ "group": "Everyone", "role": "admin" }]),
    ] {
        put_settings(
            app,
            &provisioner,
            json!({ "deprovision": "suspend", "group_roles": refused.clone() }),
        )
        .await
        .assert_problem(403, "forbidden");
    }
    let kept = app
        .call(Method::GET, "/scim/settings", Some(&owner.token), None)
        .await;
    assert_eq!(kept.json["group_roles"], json!([admins.clone()]));
    let added = put_settings(
        app,
        &provisioner,
        json!({ "deprovision": "suspend", "group_roles": [admins, { "group": "Everyone", "role": "member" }] }),
    )
    .await;
    assert_eq!(added.status, 200, "{}", added.text);
}

/// A control character in a name or id, a NUL in any User attribute, or
/// an overlong `externalId` is `400 invalidValue` on every store (Postgres
/// cannot store a NUL), and so is a NUL in a mapped group's name.
pub async fn scim_control_characters_are_refused(app: &TestApp) {
    let owner = app.register("control", "owner@control.test").await;
    let token = issue_token(app, &owner).await;
    let long = "x".repeat(257);
    for body in [
        json!({ "schemas": [GROUP_SCHEMA], "displayName": "a\u{0}b" }),
        json!({ "schemas": [GROUP_SCHEMA], "displayName": "a\u{7}b" }),
        json!({ "schemas": [GROUP_SCHEMA], "displayName": "ok", "externalId": "a\u{0}b" }),
        json!({ "schemas": [GROUP_SCHEMA], "displayName": "ok", "externalId": long }),
    ] {
        let reply = scim(app, Method::POST, "/scim/v2/Groups", &token, Some(body)).await;
        assert_scim_error(&reply, 400, Some("invalidValue"));
    }
    let user = |name: &str, extra: Value| {
        let mut body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": name,
            "emails": [{ "value": "ada@control.test", "primary": true }],
            "active": true,
        });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        body
    };
    for body in [
        user("ada\u{0}@control.test", json!({})),
        user("ada@control.test", json!({ "externalId": "a\u{0}b" })),
        user("ada@control.test", json!({ "externalId": long })),
        user(
            "ada@control.test",
            json!({ "name": { "givenName": "A\u{0}da" } }),
        ),
    ] {
        let reply = scim(app, Method::POST, "/scim/v2/Users", &token, Some(body)).await;
        assert_scim_error(&reply, 400, Some("invalidValue"));
    }
    put_settings(
        app,
        &owner,
        json!({ "deprovision": "suspend", "group_roles": [{ "group": "a\u{0}b", "role": "admin" }] }),
    )
    .await
    .assert_problem(422, "validation");
    // Nothing was stored.
    let groups = scim(app, Method::GET, "/scim/v2/Groups", &token, None).await;
    assert_eq!(groups.json["totalResults"], 0, "{}", groups.text);
    let users = scim(app, Method::GET, "/scim/v2/Users", &token, None).await;
    assert_eq!(users.json["totalResults"], 0, "{}", users.text);
}
