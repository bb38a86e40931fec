//! The SSO module's routes over the framework-neutral dispatcher: starting
//! a sign-in, refusing bad callbacks, management under `sso:manage`, and
//! password logins refused once a tenant requires SSO. The full flows
//! against a simulated identity provider run in the framework crates.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};
use tenancy_http::auth::sso::{ClientSecret, OAuth2Endpoints, SocialConnection};
use tenancy_http::auth::{Argon2Config, AuthConfig, ClientInfo, Password, Registration};
use tenancy_http::authz::Catalog;
use tenancy_http::core::{Email, NewTenant, NewUser, Slug, TenantName};
use tenancy_http::sso::{STATE_COOKIE, SsoConfig, SsoModule};
use tenancy_http::{ApiRequest, Tenancy};

async fn app() -> Tenancy {
    let mut auth = AuthConfig::new("https://app.test", "app");
    auth.argon2 = Argon2Config::new(1024, 1, 1);
    let endpoints = OAuth2Endpoints {
        authorize: "https://gh.test/login/oauth/authorize".parse().unwrap(),
        token: "https://gh.test/login/oauth/access_token".parse().unwrap(),
        user: "https://api.gh.test/user".parse().unwrap(),
        emails: Some("https://api.gh.test/user/emails".parse().unwrap()),
    };
    let config = SsoConfig::new().with_social(SocialConnection::oauth2(
        "gh",
        "gh-client",
        ClientSecret::new("gh-secret"),
        endpoints,
    ));
    Tenancy::builder(Catalog::new(["projects:read"]).unwrap(), auth)
        .module(SsoModule::new(config))
        .build()
        .await
        .unwrap()
}

async fn call(
    t: &Tenancy,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(header::HeaderName, String)],
) -> (StatusCode, HeaderMap, Value) {
    let route_path = path.split('?').next().unwrap();
    let route = t
        .routes()
        .into_iter()
        .find(|r| r.method == method && r.path == route_path)
        .unwrap_or_else(|| panic!("no route {method} {route_path}"));
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(name.clone(), value.parse().unwrap());
    }
    let bytes = match body {
        Some(body) => {
            map.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
            Bytes::from(serde_json::to_vec(&body).unwrap())
        }
        None => Bytes::new(),
    };
    let request = ApiRequest::new(method, path.parse().unwrap(), map, None, bytes);
    let response = t.dispatch(&route, request).await;
    let status = response.status();
    let headers = response.headers().clone();
    let body = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    (status, headers, body)
}

async fn owner(t: &Tenancy, slug: &str, email: &str) -> String {
    t.auth()
        .register(
            Registration {
                user: NewUser::new(Email::new(email).unwrap()),
                password: Password::new("correct horse battery staple"),
                tenant: NewTenant::new(Slug::new(slug).unwrap(), TenantName::new(slug).unwrap()),
            },
            &ClientInfo::default(),
        )
        .await
        .unwrap()
        .access_token
        .token
}

fn bearer(token: &str) -> Vec<(header::HeaderName, String)> {
    vec![(header::AUTHORIZATION, format!("Bearer {token}"))]
}

#[tokio::test]
async fn start_sets_the_binding_cookie_and_callbacks_are_checked() {
    let t = app().await;
    let (status, headers, body) = call(
        &t,
        Method::POST,
        "/sso/start",
        Some(json!({ "connection": "gh", "return_to": "/home" })),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let url = url::Url::parse(body["authorize_url"].as_str().unwrap()).unwrap();
    assert_eq!(url.host_str(), Some("gh.test"));
    assert_eq!(
        headers.get(header::LOCATION).unwrap().to_str().unwrap(),
        url.as_str()
    );
    assert_eq!(headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
    let cookie = headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with(&format!("{STATE_COOKIE}=")), "{cookie}");
    assert!(cookie.contains("HttpOnly"));
    assert!(cookie.contains("Path=/sso/callback"), "{cookie}");
    let binding = cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches(&format!("{STATE_COOKIE}="))
        .to_owned();
    let state = url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();

    let (status, _, body) = call(
        &t,
        Method::GET,
        "/sso/callback?state=forged&code=x",
        None,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .ends_with("invalid-sso-state"),
        "{body}"
    );

    // Another browser (no binding cookie) holding the callback URL: refused,
    // and the sign-in is spent.
    let path = format!("/sso/callback?state={state}&code=stolen");
    let (status, _, _) = call(&t, Method::GET, &path, None, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let with_cookie = vec![(header::COOKIE, format!("{STATE_COOKIE}={binding}"))];
    let (status, _, _) = call(&t, Method::GET, &path, None, &with_cookie).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "single use");

    for bad in [
        json!({ "connection": "gh", "return_to": "https://evil.test/" }),
        json!({ "connection": "gh", "return_to": "//evil.test/" }),
        json!({}),
        json!({ "connection": "gh", "email": "a@b.test" }),
    ] {
        let (status, _, _) = call(&t, Method::POST, "/sso/start", Some(bad.clone()), &[]).await;
        assert!(status.is_client_error(), "{bad}: {status}");
    }
    let (status, _, _) = call(
        &t,
        Method::POST,
        "/sso/start",
        Some(json!({ "connection": "nope" })),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn management_needs_the_permission_and_guards_the_default_role() {
    let t = app().await;
    let ada = owner(&t, "acme", "ada@acme.test").await;
    let (status, _, _) = call(&t, Method::GET, "/sso/connections", None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let connection = |role: &str| {
        json!({
            "name": "Acme IdP",
            "issuer": "https://idp.acme.test",
            "client_id": "acme",
            "client_secret": "very-secret",
            "default_role": role,
        })
    };
    let (status, _, body) = call(
        &t,
        Method::POST,
        "/sso/connections",
        Some(connection("owner")),
        &bearer(&ada),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _, body) = call(
        &t,
        Method::POST,
        "/sso/connections",
        Some(connection("no-such-role")),
        &bearer(&ada),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let mut private = connection("member");
    private["issuer"] = json!("https://169.254.169.254/");
    let (status, _, body) = call(
        &t,
        Method::POST,
        "/sso/connections",
        Some(private),
        &bearer(&ada),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(!body.to_string().contains("169.254"), "{body}");
    let (status, _, body) = call(
        &t,
        Method::POST,
        "/sso/connections",
        Some(connection("member")),
        &bearer(&ada),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(!body.to_string().contains("very-secret"));
    assert_eq!(body["default_role"], "member");
    let (status, _, body) = call(&t, Method::GET, "/sso/connections", None, &bearer(&ada)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    assert!(!body.to_string().contains("very-secret"));

    let (status, _, body) = call(
        &t,
        Method::POST,
        "/sso/domains",
        Some(json!({ "domain": "acme.test" })),
        &bearer(&ada),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["challenge"]["name"], "_tenancy-challenge.acme.test");
    assert_eq!(body["verified"], false);
    let bob = owner(&t, "globex", "bob@globex.test").await;
    let (status, _, _) = call(
        &t,
        Method::POST,
        "/sso/domains",
        Some(json!({ "domain": "ACME.test" })),
        &bearer(&bob),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _, body) = call(&t, Method::GET, "/sso/connections", None, &bearer(&bob)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body["items"].as_array().unwrap().is_empty(),
        "tenants see only their own"
    );
}

#[tokio::test]
async fn requiring_sso_refuses_password_logins() {
    let t = app().await;
    let ada = owner(&t, "acme", "ada@acme.test").await;
    let login = json!({ "email": "ada@acme.test", "password": "correct horse battery staple" });
    let (status, _, _) = call(&t, Method::POST, "/auth/login", Some(login.clone()), &[]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = call(
        &t,
        Method::PUT,
        "/sso/policy",
        Some(json!({ "require_sso": true })),
        &bearer(&ada),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "no connection yet: {body}"
    );
    let (status, _, _) = call(
        &t,
        Method::POST,
        "/sso/connections",
        Some(json!({
            "name": "Acme IdP",
            "issuer": "https://idp.acme.test",
            "client_id": "acme",
            "client_secret": "s",
            "default_role": "member",
        })),
        &bearer(&ada),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, body) = call(
        &t,
        Method::PUT,
        "/sso/policy",
        Some(json!({ "require_sso": true })),
        &bearer(&ada),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["require_sso"], true);
    let (status, _, body) = call(&t, Method::POST, "/auth/login", Some(login), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["type"].as_str().unwrap().ends_with("sso-required"),
        "{body}"
    );
}

/// The browser flow over the routes: start, the provider, the callback
/// with the binding cookie; the SDK cookies are set and the browser goes
/// to the path it asked for; without one, the tokens JSON answers.
#[tokio::test]
async fn the_callback_signs_in_with_cookies_or_tokens() {
    use tenancy_http::auth::testkit::idp::{IdpAccount, IdpClient, SimulatedIdp};

    let idp = SimulatedIdp::start().await;
    idp.register_client(IdpClient::new(
        "app",
        "app-secret",
        ["https://app.test/sso/callback"],
    ));
    idp.sign_in_as(IdpAccount::new("ada@flow.test"));
    let mut auth = AuthConfig::new("https://app.test", "app");
    auth.argon2 = Argon2Config::new(1024, 1, 1);
    let config = SsoConfig::new().allow_private_network(true).with_social(
        SocialConnection::oidc("idp", idp.issuer(), "app", ClientSecret::new("app-secret"))
            .unwrap(),
    );
    let t = Tenancy::builder(Catalog::new(["projects:read"]).unwrap(), auth)
        .module(SsoModule::new(config))
        .build()
        .await
        .unwrap();

    for return_to in [Some("/home"), None] {
        let mut body = json!({ "connection": "idp" });
        if let Some(path) = return_to {
            body["return_to"] = json!(path);
        }
        let (status, headers, started) =
            call(&t, Method::POST, "/sso/start", Some(body), &[]).await;
        assert_eq!(status, StatusCode::OK, "{started}");
        let binding = headers
            .get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let redirect = idp.authorize(started["authorize_url"].as_str().unwrap());
        let location = url::Url::parse(redirect.location.as_deref().unwrap()).unwrap();
        assert_eq!(location.path(), "/sso/callback");
        let path = format!("/sso/callback?{}", location.query().unwrap());
        let (status, headers, answer) =
            call(&t, Method::GET, &path, None, &[(header::COOKIE, binding)]).await;
        let cookies: Vec<&str> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        let access = &t.config().cookies.access_name;
        assert!(
            cookies
                .iter()
                .any(|c| c.starts_with(&format!("{access}="))
                    && !c.starts_with(&format!("{access}=;"))),
            "{cookies:?}"
        );
        assert!(
            cookies
                .iter()
                .any(|c| c.starts_with(&format!("{STATE_COOKIE}=;"))
                    || c.starts_with(&format!("{STATE_COOKIE}=")) && c.contains("Max-Age=0")),
            "the binding cookie is cleared: {cookies:?}"
        );
        match return_to {
            Some(path) => {
                assert_eq!(status, StatusCode::SEE_OTHER);
                assert_eq!(headers.get(header::LOCATION).unwrap(), path);
            }
            None => {
                assert_eq!(status, StatusCode::OK, "{answer}");
                assert!(answer["access_token"].is_string());
                assert_eq!(answer["user"]["email"], "ada@flow.test");
            }
        }
    }
}

/// Login CSRF: a form posted to /sso/start from another site's page is
/// refused before any sign-in starts, and no state cookie is set.
#[tokio::test]
async fn start_refuses_cross_site_forms() {
    let t = app().await;
    let route = t
        .routes()
        .into_iter()
        .find(|r| r.method == Method::POST && r.path == "/sso/start")
        .unwrap();
    for (name, value) in [
        (header::ORIGIN, "https://evil.test"),
        (header::REFERER, "https://evil.test/page"),
    ] {
        let mut map = HeaderMap::new();
        map.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        map.insert(header::HOST, "app.test".parse().unwrap());
        map.insert(name.clone(), value.parse().unwrap());
        let request = ApiRequest::new(
            Method::POST,
            "/sso/start".parse().unwrap(),
            map,
            None,
            Bytes::from_static(b"connection=gh"),
        );
        let response = t.dispatch(&route, request).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{name}");
        assert!(response.headers().get(header::SET_COOKIE).is_none());
        assert!(response.headers().get(header::LOCATION).is_none());
    }
    // A JSON start from another origin is refused as well.
    let (status, headers, _) = call(
        &t,
        Method::POST,
        "/sso/start",
        Some(json!({ "connection": "gh" })),
        &[(header::ORIGIN, "https://evil.test".to_owned())],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(headers.get(header::SET_COOKIE).is_none());
}
