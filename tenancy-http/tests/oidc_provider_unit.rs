//! The provider's browser flow and token endpoint through the route table
//! (no sockets): login, consent, code, tokens, userinfo, scoped powers,
//! code replay, introspection and revocation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, header};
use sha2::Digest as _;
use tenancy_http::auth::oidc::{ClientKind, GrantType, NewOAuthClient, RedirectUri};
use tenancy_http::auth::{Argon2Config, AuthConfig, ClientInfo, Password, Registration};
use tenancy_http::authz::Catalog;
use tenancy_http::core::{Actor, Email, NewTenant, NewUser, Slug, TenantName};
use tenancy_http::oidc::{OidcConfig, OidcModule};
use tenancy_http::{ApiRequest, CookieConfig, HttpConfig, Tenancy};

const ISSUER: &str = "https://id.example";

async fn call(
    t: &Tenancy,
    method: Method,
    uri: &str,
    headers: &[(&str, String)],
    body: &str,
) -> Response<Bytes> {
    let path = uri.split('?').next().unwrap();
    let route = t
        .routes()
        .into_iter()
        .find(|r| r.method == method && r.path == path)
        .unwrap_or_else(|| panic!("no route {method} {path}"));
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let request = ApiRequest::new(
        method,
        uri.parse().unwrap(),
        map,
        Some("127.0.0.1".parse().unwrap()),
        Bytes::from(body.to_owned()),
    );
    t.dispatch(&route, request).await
}

fn location(response: &Response<Bytes>) -> String {
    response
        .headers()
        .get(header::LOCATION)
        .expect("a redirect")
        .to_str()
        .unwrap()
        .to_owned()
}

/// `name=value` of every `Set-Cookie`, joined as a `Cookie` header.
fn cookies(response: &Response<Bytes>, jar: &mut Vec<(String, String)>) {
    for value in response.headers().get_all(header::SET_COOKIE) {
        let text = value.to_str().unwrap();
        let pair = text.split(';').next().unwrap();
        let (name, value) = pair.split_once('=').unwrap();
        jar.retain(|(n, _)| n != name);
        jar.push((name.to_owned(), value.to_owned()));
    }
}

fn cookie_header(jar: &[(String, String)]) -> String {
    jar.iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap() + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

fn query(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn json(response: &Response<Bytes>) -> serde_json::Value {
    serde_json::from_slice(response.body()).unwrap()
}

fn configs() -> (Catalog, AuthConfig, HttpConfig) {
    let mut auth = AuthConfig::new(ISSUER, "app");
    auth.argon2 = Argon2Config::new(1024, 1, 1);
    let http = HttpConfig::default().with_cookies(CookieConfig::default().with_secure(false));
    (Catalog::new(["projects:read"]).unwrap(), auth, http)
}

#[tokio::test]
async fn code_flow_in_memory() {
    let (catalog, auth, http) = configs();
    let t = Tenancy::builder(catalog, auth)
        .http(http)
        .module(OidcModule::new(OidcConfig::default()))
        .build()
        .await
        .unwrap();
    code_flow_with_pkce_consent_tokens_and_scoped_powers(t).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn code_flow_on_postgres() {
    use tenancy_http::auth::KeyEncryption;
    let Some(schema) = tenancy_http::core::testkit::postgres::TestSchema::create().await else {
        return;
    };
    let (catalog, auth, http) = configs();
    let auth = auth.with_key_encryption(KeyEncryption::InsecurePlaintext);
    let t = Tenancy::builder(catalog, auth)
        .postgres(schema.pool.clone())
        .http(http)
        .module(OidcModule::postgres(
            schema.pool.clone(),
            OidcConfig::default(),
        ))
        .build()
        .await
        .unwrap();
    code_flow_with_pkce_consent_tokens_and_scoped_powers(t).await;
}

async fn code_flow_with_pkce_consent_tokens_and_scoped_powers(t: Tenancy) {
    let registered = t
        .auth()
        .register(
            Registration {
                user: NewUser::new(Email::new("ada@acme.example").unwrap()),
                password: Password::new("correct horse battery staple"),
                tenant: NewTenant::new(
                    Slug::new("acme").unwrap(),
                    TenantName::new("Acme").unwrap(),
                ),
            },
            &ClientInfo::default(),
        )
        .await
        .unwrap();
    let tenant = registered.membership.tenant_id;
    let oidc = t.module::<OidcModule>().unwrap();
    let (client, secret) = oidc
        .provider()
        .register_client(
            Some(tenant),
            NewOAuthClient {
                name: "Acme <CLI>".into(),
                kind: ClientKind::Confidential,
                redirect_uris: vec![RedirectUri::parse("http://127.0.0.1:8080/callback").unwrap()],
                post_logout_redirect_uris: vec![],
                grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
                scopes: [
                    "openid",
                    "profile",
                    "email",
                    "offline_access",
                    "projects:read",
                ]
                .map(String::from)
                .to_vec(),
                first_party: false,
                ..NewOAuthClient::default()
            },
            Actor::User(registered.user.id),
        )
        .await
        .unwrap();
    let secret = secret.unwrap();
    let verifier = "a".repeat(43) + "-verifier";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let authorize = format!(
        "/oauth/authorize?{}",
        form(&[
            ("response_type", "code"),
            ("client_id", client.id.as_str()),
            ("redirect_uri", "http://127.0.0.1:8080/callback"),
            ("scope", "openid email offline_access projects:read"),
            ("state", "st<&>"),
            ("nonce", "n-1"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
    );
    let mut jar = Vec::new();

    // Not signed in: to the login page.
    let answer = call(&t, Method::GET, &authorize, &[], "").await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let login = location(&answer);
    assert!(login.starts_with("/oauth/login?interaction="), "{login}");
    let page = call(&t, Method::GET, &login, &[], "").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()[header::X_FRAME_OPTIONS], "DENY");
    assert!(page.headers().contains_key(header::CONTENT_SECURITY_POLICY));
    cookies(&page, &mut jar);
    let html = String::from_utf8(page.body().to_vec()).unwrap();
    assert!(html.contains("Acme &lt;CLI&gt;"));
    let interaction = hidden(&html, "interaction");
    let csrf = hidden(&html, "csrf");
    let form_type = (
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    );

    // A wrong CSRF token, or none of the browser's cookie, is refused.
    let forged = form(&[
        ("interaction", &interaction),
        ("csrf", "forged"),
        ("email", "ada@acme.example"),
        ("password", "correct horse battery staple"),
    ]);
    let refused = call(
        &t,
        Method::POST,
        "/oauth/login",
        &[form_type.clone(), ("cookie", cookie_header(&jar))],
        &forged,
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let wrong = form(&[
        ("interaction", &interaction),
        ("csrf", &csrf),
        ("email", "ada@acme.example"),
        ("password", "wrong password entirely"),
    ]);
    let refused = call(
        &t,
        Method::POST,
        "/oauth/login",
        &[form_type.clone(), ("cookie", cookie_header(&jar))],
        &wrong,
    )
    .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let good = form(&[
        ("interaction", &interaction),
        ("csrf", &csrf),
        ("email", "ada@acme.example"),
        ("password", "correct horse battery staple"),
    ]);
    let signed_in = call(
        &t,
        Method::POST,
        "/oauth/login",
        &[form_type.clone(), ("cookie", cookie_header(&jar))],
        &good,
    )
    .await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    cookies(&signed_in, &mut jar);
    let resume = location(&signed_in);
    let answer = call(
        &t,
        Method::GET,
        &resume,
        &[("cookie", cookie_header(&jar))],
        "",
    )
    .await;
    let consent = location(&answer);
    assert!(
        consent.starts_with("/oauth/consent?interaction="),
        "{consent}"
    );
    let page = call(
        &t,
        Method::GET,
        &consent,
        &[("cookie", cookie_header(&jar))],
        "",
    )
    .await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = String::from_utf8(page.body().to_vec()).unwrap();
    let csrf = hidden(&html, "csrf");
    let allow = form(&[
        ("interaction", &interaction),
        ("csrf", &csrf),
        ("decision", "allow"),
    ]);
    let answer = call(
        &t,
        Method::POST,
        "/oauth/consent",
        &[form_type.clone(), ("cookie", cookie_header(&jar))],
        &allow,
    )
    .await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let callback = location(&answer);
    assert!(
        callback.starts_with("http://127.0.0.1:8080/callback?"),
        "{callback}"
    );
    assert_eq!(query(&callback, "state").as_deref(), Some("st<&>"));
    assert_eq!(query(&callback, "iss").as_deref(), Some(ISSUER));
    let code = query(&callback, "code").unwrap();

    // Consent is remembered: the next request comes straight back.
    let again = call(
        &t,
        Method::GET,
        &authorize,
        &[("cookie", cookie_header(&jar))],
        "",
    )
    .await;
    let second = location(&again);
    assert!(
        second.starts_with("http://127.0.0.1:8080/callback?code="),
        "{second}"
    );

    // The token endpoint: Basic with form-urlencoded id and secret.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            client.id.as_str(),
            secret.expose()
        ))
    );
    let exchange = form(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", "http://127.0.0.1:8080/callback"),
        ("code_verifier", &verifier),
    ]);
    let bad_secret = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:nope", client.id.as_str()))
    );
    let refused = call(
        &t,
        Method::POST,
        "/oauth/token",
        &[form_type.clone(), ("authorization", bad_secret)],
        &exchange,
    )
    .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(
        refused.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Basic realm=")
    );
    assert_eq!(json(&refused)["error"], "invalid_client");
    let tokens = call(
        &t,
        Method::POST,
        "/oauth/token",
        &[form_type.clone(), ("authorization", basic.clone())],
        &exchange,
    )
    .await;
    assert_eq!(tokens.status(), StatusCode::OK, "{:?}", tokens.body());
    assert_eq!(tokens.headers()[header::CACHE_CONTROL], "no-store");
    let tokens = json(&tokens);
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let id_token = tokens["id_token"].as_str().unwrap().to_owned();
    let id_token = id_token.as_str();
    let header_part = id_token.split('.').next().unwrap();
    let id_header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header_part)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(id_header["alg"], "RS256");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(id_token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["nonce"], "n-1");
    assert_eq!(claims["aud"], client.id.as_str());
    assert_eq!(claims["email"], "ada@acme.example");
    assert_eq!(claims["tid"], tenant.to_string());
    let jwks = json(&call(&t, Method::GET, "/.well-known/jwks.json", &[], "").await);
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == id_header["kid"])
    );

    // Userinfo, and powers capped by the granted scopes.
    let bearer = ("authorization", format!("Bearer {access}"));
    let info = call(
        &t,
        Method::GET,
        "/oauth/userinfo",
        std::slice::from_ref(&bearer),
        "",
    )
    .await;
    assert_eq!(info.status(), StatusCode::OK);
    assert_eq!(json(&info)["email"], "ada@acme.example");
    let headers = {
        let mut map = HeaderMap::new();
        map.insert(header::AUTHORIZATION, bearer.1.parse().unwrap());
        map
    };
    let uri: http::Uri = "/x".parse().unwrap();
    let head = tenancy_http::RequestHead::new(&Method::GET, &uri, &headers, None);
    let context = t.authenticate(head).await.unwrap();
    assert!(context.require("projects:read").await.is_ok());
    assert_eq!(
        context.require("members:read").await.unwrap_err().status(),
        StatusCode::FORBIDDEN
    );
    // The SDK's own routes give the client no more than its scopes: /auth/me
    // shows the email (scope email) but not the name (no scope profile);
    // accepting an invitation (joining another tenant) is refused.
    let me = call(
        &t,
        Method::GET,
        "/auth/me",
        std::slice::from_ref(&bearer),
        "",
    )
    .await;
    assert_eq!(me.status(), StatusCode::OK);
    let me = json(&me);
    assert_eq!(me["user"]["email"], "ada@acme.example");
    assert!(me["user"].get("display_name").is_none(), "{me}");
    assert!(me["user"].get("created_at").is_none(), "{me}");
    let join = call(
        &t,
        Method::POST,
        "/invitations/accept",
        &[
            bearer.clone(),
            ("content-type", "application/json".to_owned()),
        ],
        r#"{"token":"inv_x"}"#,
    )
    .await;
    assert_eq!(join.status(), StatusCode::FORBIDDEN);
    // The SDK's own refresh route refuses an OAuth refresh token.
    let sdk_refresh = call(
        &t,
        Method::POST,
        "/auth/refresh",
        &[("content-type", "application/json".to_owned())],
        &serde_json::json!({ "refresh_token": refresh }).to_string(),
    )
    .await;
    assert_eq!(sdk_refresh.status(), StatusCode::UNAUTHORIZED);

    // Introspection by the client.
    let introspected = call(
        &t,
        Method::POST,
        "/oauth/introspect",
        &[form_type.clone(), ("authorization", basic.clone())],
        &form(&[("token", &access)]),
    )
    .await;
    let introspected = json(&introspected);
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["client_id"], client.id.as_str());

    // Refresh rotates.
    let refreshed = call(
        &t,
        Method::POST,
        "/oauth/token",
        &[form_type.clone(), ("authorization", basic.clone())],
        &form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]),
    )
    .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed = json(&refreshed);
    assert_ne!(refreshed["refresh_token"], refresh.as_str());

    // The code again: refused, and what it issued is revoked.
    let replay = call(
        &t,
        Method::POST,
        "/oauth/token",
        &[form_type.clone(), ("authorization", basic.clone())],
        &exchange,
    )
    .await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(&replay)["error"], "invalid_grant");
    let revoked = call(
        &t,
        Method::GET,
        "/oauth/userinfo",
        &[(
            "authorization",
            format!("Bearer {}", refreshed["access_token"].as_str().unwrap()),
        )],
        "",
    )
    .await;
    assert_eq!(revoked.status(), StatusCode::UNAUTHORIZED);
    let introspected = json(
        &call(
            &t,
            Method::POST,
            "/oauth/introspect",
            &[form_type.clone(), ("authorization", basic.clone())],
            &form(&[("token", &access)]),
        )
        .await,
    );
    assert_eq!(introspected["active"], false);

    // A redirect URI that is not registered is shown, never followed; a
    // missing PKCE challenge of a public client goes back as an error.
    let evil = format!(
        "/oauth/authorize?{}",
        form(&[
            ("response_type", "code"),
            ("client_id", client.id.as_str()),
            ("redirect_uri", "http://127.0.0.1:8080/callback/../evil"),
            ("scope", "openid"),
        ])
    );
    let shown = call(&t, Method::GET, &evil, &[], "").await;
    assert_eq!(shown.status(), StatusCode::BAD_REQUEST);
    assert!(!shown.headers().contains_key(header::LOCATION));
    let (public, _) = oidc
        .provider()
        .register_client(
            Some(tenant),
            NewOAuthClient {
                name: "SPA".into(),
                kind: ClientKind::Public,
                redirect_uris: vec![RedirectUri::parse("https://spa.example/cb").unwrap()],
                scopes: vec!["openid".into()],
                ..NewOAuthClient::default()
            },
            Actor::User(registered.user.id),
        )
        .await
        .unwrap();
    let no_pkce = format!(
        "/oauth/authorize?{}",
        form(&[
            ("response_type", "code"),
            ("client_id", public.id.as_str()),
            ("redirect_uri", "https://spa.example/cb"),
            ("scope", "openid"),
            ("state", "s1"),
        ])
    );
    let refused = location(&call(&t, Method::GET, &no_pkce, &[], "").await);
    assert!(
        refused.starts_with("https://spa.example/cb?error=invalid_request"),
        "{refused}"
    );
    assert_eq!(query(&refused, "state").as_deref(), Some("s1"));
    assert_eq!(query(&refused, "iss").as_deref(), Some(ISSUER));
    let unknown_grant = call(
        &t,
        Method::POST,
        "/oauth/token",
        &[form_type.clone(), ("authorization", basic.clone())],
        &form(&[("grant_type", "password")]),
    )
    .await;
    assert_eq!(json(&unknown_grant)["error"], "unsupported_grant_type");

    // Logout without an ID token asks first (a CSRF-bound form), then ends
    // the browser session; with one it signs out at once.
    let confirm = call(
        &t,
        Method::GET,
        "/oauth/logout",
        &[("cookie", cookie_header(&jar))],
        "",
    )
    .await;
    assert_eq!(confirm.status(), StatusCode::OK);
    cookies(&confirm, &mut jar);
    let html = String::from_utf8(confirm.body().to_vec()).unwrap();
    assert!(html.contains("Sign out?"));
    let forged = call(
        &t,
        Method::POST,
        "/oauth/logout",
        &[form_type.clone(), ("cookie", cookie_header(&jar))],
        &form(&[("csrf", "forged")]),
    )
    .await;
    assert!(
        String::from_utf8(forged.body().to_vec())
            .unwrap()
            .contains("Sign out?")
    );
    let out = call(
        &t,
        Method::POST,
        "/oauth/logout",
        &[form_type.clone(), ("cookie", cookie_header(&jar))],
        &form(&[("csrf", &hidden(&html, "csrf"))]),
    )
    .await;
    assert!(
        String::from_utf8(out.body().to_vec())
            .unwrap()
            .contains("signed out")
    );
    let again = call(
        &t,
        Method::GET,
        &authorize,
        &[("cookie", cookie_header(&jar))],
        "",
    )
    .await;
    assert!(
        location(&again).starts_with("/oauth/login?"),
        "{}",
        location(&again)
    );
    // Someone else signed in in this browser: another user's ID token
    // (say the attacker's own) does not sign them out unasked.
    let other = t
        .auth()
        .register(
            Registration {
                user: NewUser::new(Email::new("bea@beta.example").unwrap()),
                password: Password::new("correct horse battery staple"),
                tenant: NewTenant::new(
                    Slug::new("beta").unwrap(),
                    TenantName::new("Beta").unwrap(),
                ),
            },
            &ClientInfo::default(),
        )
        .await
        .unwrap();
    let other_cookie = format!(
        "{}={}",
        t.config().cookies.access_name,
        other.access_token.token
    );
    let foreign = call(
        &t,
        Method::GET,
        &format!("/oauth/logout?{}", form(&[("id_token_hint", id_token)])),
        &[("cookie", other_cookie.clone())],
        "",
    )
    .await;
    assert_eq!(foreign.status(), StatusCode::OK);
    assert!(foreign.headers().get(header::LOCATION).is_none());
    assert!(
        String::from_utf8(foreign.body().to_vec())
            .unwrap()
            .contains("Sign out?")
    );
    let mut still = HeaderMap::new();
    still.insert(
        header::AUTHORIZATION,
        format!("Bearer {}", other.access_token.token)
            .parse()
            .unwrap(),
    );
    let uri: http::Uri = "/x".parse().unwrap();
    assert!(
        t.authenticate(tenancy_http::RequestHead::new(
            &Method::GET,
            &uri,
            &still,
            None
        ))
        .await
        .is_ok()
    );
    let hinted = call(
        &t,
        Method::GET,
        &format!("/oauth/logout?{}", form(&[("id_token_hint", id_token)])),
        &[],
        "",
    )
    .await;
    assert!(
        String::from_utf8(hinted.body().to_vec())
            .unwrap()
            .contains("signed out")
    );

    // Discovery names what is implemented.
    let discovery = json(
        &call(
            &t,
            Method::GET,
            "/.well-known/openid-configuration",
            &[],
            "",
        )
        .await,
    );
    assert_eq!(discovery["issuer"], ISSUER);
    assert_eq!(discovery["code_challenge_methods_supported"][0], "S256");
    assert_eq!(discovery["token_endpoint"], format!("{ISSUER}/oauth/token"));
}

/// `private_key_jwt` (RFC 7523): a machine client signs an assertion with
/// its registered key; the assertion works once, for this issuer only.
#[tokio::test]
async fn private_key_jwt_client_credentials() {
    use josekit::jwk::alg::rsa::RsaKeyPair;
    use tenancy_http::auth::{KeyAlgorithm, StoredKey, StoredPrivateKey};

    let (catalog, auth, http) = configs();
    let t = Tenancy::builder(catalog, auth)
        .http(http)
        .module(OidcModule::new(OidcConfig::default()))
        .build()
        .await
        .unwrap();
    let registered = t
        .auth()
        .register(
            Registration {
                user: NewUser::new(Email::new("bo@acme.example").unwrap()),
                password: Password::new("correct horse battery staple"),
                tenant: NewTenant::new(
                    Slug::new("acme").unwrap(),
                    TenantName::new("Acme").unwrap(),
                ),
            },
            &ClientInfo::default(),
        )
        .await
        .unwrap();
    let key = StoredKey::generate(KeyAlgorithm::Rs256, time::OffsetDateTime::now_utc()).unwrap();
    let StoredPrivateKey::Plaintext(private) = &key.private_key else {
        panic!("a fresh key is plaintext");
    };
    let jwk = josekit::jwk::Jwk::from_map(private.expose_secret().clone()).unwrap();
    let pem = RsaKeyPair::from_jwk(&jwk).unwrap().to_pem_private_key();
    let signing = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap();
    let oidc = t.module::<OidcModule>().unwrap();
    let (client, _) = oidc
        .provider()
        .register_client(
            Some(registered.membership.tenant_id),
            NewOAuthClient {
                name: "Worker".into(),
                kind: ClientKind::Confidential,
                grant_types: vec![GrantType::ClientCredentials],
                scopes: vec!["projects:read".into()],
                jwks: Some(serde_json::json!({ "keys": [key.public_jwk.clone().unwrap()] })),
                ..NewOAuthClient::default()
            },
            Actor::User(registered.user.id),
        )
        .await
        .unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let assertion = |aud: &str, jti: &str| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(
            &header,
            &serde_json::json!({
                "iss": client.id.as_str(), "sub": client.id.as_str(), "aud": aud,
                "jti": jti, "iat": now, "exp": now + 120,
            }),
            &signing,
        )
        .unwrap()
    };
    let token_request = |assertion: String| {
        form(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &assertion),
        ])
    };
    let form_type = (
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    );
    let endpoint = format!("{ISSUER}/oauth/token");
    let ok = call(
        &t,
        Method::POST,
        "/oauth/token",
        std::slice::from_ref(&form_type),
        &token_request(assertion(&endpoint, "one")),
    )
    .await;
    assert_eq!(ok.status(), StatusCode::OK, "{:?}", ok.body());
    let access = json(&ok)["access_token"].as_str().unwrap().to_owned();
    let replay = call(
        &t,
        Method::POST,
        "/oauth/token",
        std::slice::from_ref(&form_type),
        &token_request(assertion(&endpoint, "one")),
    )
    .await;
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
    let elsewhere = call(
        &t,
        Method::POST,
        "/oauth/token",
        std::slice::from_ref(&form_type),
        &token_request(assertion("https://other.example/token", "two")),
    )
    .await;
    assert_eq!(json(&elsewhere)["error"], "invalid_client");
    // The audience is the issuer or an endpoint as served, exactly.
    let invented = call(
        &t,
        Method::POST,
        "/oauth/token",
        std::slice::from_ref(&form_type),
        &token_request(assertion(&format!("{ISSUER}/oauth/invented"), "three")),
    )
    .await;
    assert_eq!(json(&invented)["error"], "invalid_client");
    let at_issuer = call(
        &t,
        Method::POST,
        "/oauth/token",
        std::slice::from_ref(&form_type),
        &token_request(assertion(ISSUER, "four")),
    )
    .await;
    assert_eq!(at_issuer.status(), StatusCode::OK, "{:?}", at_issuer.body());

    // The machine client acts in its tenant with its creator's roles
    // capped by its scopes.
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        format!("Bearer {access}").parse().unwrap(),
    );
    let uri: http::Uri = "/x".parse().unwrap();
    let head = tenancy_http::RequestHead::new(&Method::GET, &uri, &headers, None);
    let context = t.authenticate(head).await.unwrap();
    assert_eq!(context.tenant_id(), registered.membership.tenant_id);
    assert!(context.require("projects:read").await.is_ok());
    assert!(context.require("members:read").await.is_err());

    // Deleting the client through its route stops its tokens at once.
    let route = t
        .routes()
        .into_iter()
        .find(|r| r.method == Method::DELETE && r.path == "/oauth/clients/{client_id}")
        .unwrap();
    let mut owner = HeaderMap::new();
    owner.insert(
        header::AUTHORIZATION,
        format!("Bearer {}", registered.access_token.token)
            .parse()
            .unwrap(),
    );
    let request = ApiRequest::new(
        Method::DELETE,
        format!("/oauth/clients/{}", client.id).parse().unwrap(),
        owner,
        None,
        Bytes::new(),
    )
    .with_params([("client_id".to_owned(), client.id.to_string())].into());
    assert_eq!(
        t.dispatch(&route, request).await.status(),
        StatusCode::NO_CONTENT
    );
    let head = tenancy_http::RequestHead::new(&Method::GET, &uri, &headers, None);
    assert_eq!(
        t.authenticate(head).await.unwrap_err().status(),
        StatusCode::UNAUTHORIZED
    );
}

/// A machine client answers to whoever last changed it: a member widening
/// an owner-registered client gets no owner powers through it, and an
/// update or a secret rotation ends the tokens issued before it (at the
/// API and at introspection).
#[tokio::test]
async fn client_changes_rebind_the_registrant_and_end_older_tokens() {
    let (catalog, auth, http) = configs();
    let t = Tenancy::builder(catalog, auth)
        .http(http)
        .module(OidcModule::new(OidcConfig::default()))
        .build()
        .await
        .unwrap();
    let registered = t
        .auth()
        .register(
            Registration {
                user: NewUser::new(Email::new("cy@acme.example").unwrap()),
                password: Password::new("correct horse battery staple"),
                tenant: NewTenant::new(
                    Slug::new("acme").unwrap(),
                    TenantName::new("Acme").unwrap(),
                ),
            },
            &ClientInfo::default(),
        )
        .await
        .unwrap();
    let tenant = registered.membership.tenant_id;
    let provider = t.module::<OidcModule>().unwrap().provider().clone();
    let machine = |scopes: &[&str]| NewOAuthClient {
        name: "Worker".into(),
        kind: ClientKind::Confidential,
        grant_types: vec![GrantType::ClientCredentials],
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..NewOAuthClient::default()
    };
    // Registered by the system: owner powers capped by its scopes.
    let (client, _) = provider
        .register_client(Some(tenant), machine(&["projects:read"]), Actor::System)
        .await
        .unwrap();
    let powers = |token: String| {
        let t = t.clone();
        async move {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
            let uri: http::Uri = "/x".parse().unwrap();
            let head = tenancy_http::RequestHead::new(&Method::GET, &uri, &headers, None);
            match t.authenticate(head).await {
                Ok(context) => Ok(context.require("tenant:delete").await.is_ok()),
                Err(problem) => Err(problem.status()),
            }
        }
    };
    let first = provider
        .client_credentials(&client, None)
        .await
        .unwrap()
        .access_token;
    assert_eq!(powers(first.clone()).await, Ok(false));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    // Someone who is not an owner (here: no member at all) widens it.
    let outsider = tenancy_http::core::UserId::new();
    let widened = provider
        .update_client(
            Some(tenant),
            &client.id,
            machine(&["projects:read", "tenant:delete"]),
            Actor::User(outsider),
        )
        .await
        .unwrap();
    assert_eq!(widened.created_by, Actor::User(outsider));
    // The token issued before the change stops working.
    assert_eq!(powers(first.clone()).await, Err(StatusCode::UNAUTHORIZED));
    let caller = provider
        .find_client(client.id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        provider.introspect(&caller, &first).await.unwrap()["active"],
        false
    );
    // A new token carries the outsider's (absent) roles, not the owner's.
    let widened_token = provider
        .client_credentials(&caller, Some("tenant:delete"))
        .await
        .unwrap()
        .access_token;
    assert_ne!(powers(widened_token).await, Ok(true));

    // Rotation by the owner: tokens issued before it end.
    let owner = Actor::User(registered.user.id);
    provider
        .update_client(Some(tenant), &client.id, machine(&["projects:read"]), owner)
        .await
        .unwrap();
    let caller = provider
        .find_client(client.id.as_str())
        .await
        .unwrap()
        .unwrap();
    let before = provider
        .client_credentials(&caller, None)
        .await
        .unwrap()
        .access_token;
    assert_eq!(powers(before.clone()).await, Ok(false));
    assert_eq!(
        provider.introspect(&caller, &before).await.unwrap()["active"],
        true
    );
    // Another client learns nothing of it unless it is a resource server
    // (a machine client) of the same tenant.
    let (web, _) = provider
        .register_client(
            Some(tenant),
            NewOAuthClient {
                name: "Web".into(),
                kind: ClientKind::Confidential,
                redirect_uris: vec![RedirectUri::parse("https://web.example/cb").unwrap()],
                grant_types: vec![GrantType::AuthorizationCode],
                scopes: vec!["openid".into()],
                ..NewOAuthClient::default()
            },
            owner,
        )
        .await
        .unwrap();
    assert_eq!(
        provider.introspect(&web, &before).await.unwrap()["active"],
        false
    );
    let (resource_server, _) = provider
        .register_client(Some(tenant), machine(&["projects:read"]), owner)
        .await
        .unwrap();
    assert_eq!(
        provider
            .introspect(&resource_server, &before)
            .await
            .unwrap()["active"],
        true
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    provider
        .rotate_client_secret(Some(tenant), &client.id, owner)
        .await
        .unwrap();
    let caller = provider
        .find_client(client.id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        provider.introspect(&caller, &before).await.unwrap()["active"],
        false
    );
    assert_eq!(powers(before).await, Err(StatusCode::UNAUTHORIZED));

    // RFC 7009: revoking a client_credentials token ends it (and the
    // client's other tokens issued so far) at the API and at introspection.
    let token = provider
        .client_credentials(&caller, None)
        .await
        .unwrap()
        .access_token;
    assert_eq!(powers(token.clone()).await, Ok(false));
    provider.revoke(&caller, &token).await.unwrap();
    assert_eq!(powers(token.clone()).await, Err(StatusCode::UNAUTHORIZED));
    assert_eq!(
        provider.introspect(&resource_server, &token).await.unwrap()["active"],
        false
    );
    // Tokens asked for after the revocation's second work again.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let caller = provider
        .find_client(client.id.as_str())
        .await
        .unwrap()
        .unwrap();
    let later = provider
        .client_credentials(&caller, None)
        .await
        .unwrap()
        .access_token;
    assert_eq!(powers(later).await, Ok(false));
}

/// With `Secure` cookies the CSRF binding cookie is a `__Host-` cookie
/// (`Path=/`, no `Domain`): a sibling subdomain cannot plant it.
#[tokio::test]
async fn csrf_binding_cookie_is_host_prefixed_when_secure() {
    let (catalog, auth, _) = configs();
    let http = HttpConfig::default().with_cookies(CookieConfig::default().with_secure(true));
    let t = Tenancy::builder(catalog, auth)
        .http(http)
        .module(OidcModule::new(OidcConfig::default()))
        .build()
        .await
        .unwrap();
    let page = call(&t, Method::GET, "/oauth/logout", &[], "").await;
    assert_eq!(page.status(), StatusCode::OK);
    let set = page
        .headers()
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(set.starts_with("__Host-tenancy_oauth_csrf="), "{set}");
    assert!(set.contains("Path=/;") || set.ends_with("Path=/"), "{set}");
    assert!(set.contains("Secure"), "{set}");
    assert!(!set.contains("Domain"), "{set}");
}

/// A request answered after its client changed is held to the client as it
/// is now: a scope removed while the consent page was open is refused.
#[tokio::test]
async fn consent_is_checked_against_the_client_as_it_is_now() {
    let (catalog, auth, http) = configs();
    let t = Tenancy::builder(catalog, auth)
        .http(http)
        .module(OidcModule::new(OidcConfig::default()))
        .build()
        .await
        .unwrap();
    let registered = t
        .auth()
        .register(
            Registration {
                user: NewUser::new(Email::new("di@acme.example").unwrap()),
                password: Password::new("correct horse battery staple"),
                tenant: NewTenant::new(
                    Slug::new("acme").unwrap(),
                    TenantName::new("Acme").unwrap(),
                ),
            },
            &ClientInfo::default(),
        )
        .await
        .unwrap();
    let tenant = registered.membership.tenant_id;
    let provider = t.module::<OidcModule>().unwrap().provider().clone();
    let registration = |scopes: &[&str]| NewOAuthClient {
        name: "App".into(),
        kind: ClientKind::Confidential,
        redirect_uris: vec![RedirectUri::parse("http://127.0.0.1:8080/callback").unwrap()],
        grant_types: vec![GrantType::AuthorizationCode],
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..NewOAuthClient::default()
    };
    let owner = Actor::User(registered.user.id);
    let (client, _) = provider
        .register_client(
            Some(tenant),
            registration(&["openid", "projects:read"]),
            owner,
        )
        .await
        .unwrap();
    let mut jar = vec![(
        t.config().cookies.access_name.clone(),
        registered.access_token.token.clone(),
    )];
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest("b".repeat(50).as_bytes()));
    let authorize = format!(
        "/oauth/authorize?{}",
        form(&[
            ("response_type", "code"),
            ("client_id", client.id.as_str()),
            ("redirect_uri", "http://127.0.0.1:8080/callback"),
            ("scope", "openid projects:read"),
            ("state", "s"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
    );
    let answer = call(
        &t,
        Method::GET,
        &authorize,
        &[("cookie", cookie_header(&jar))],
        "",
    )
    .await;
    let consent = location(&answer);
    assert!(
        consent.starts_with("/oauth/consent?interaction="),
        "{consent}"
    );
    let page = call(
        &t,
        Method::GET,
        &consent,
        &[("cookie", cookie_header(&jar))],
        "",
    )
    .await;
    cookies(&page, &mut jar);
    let html = String::from_utf8(page.body().to_vec()).unwrap();
    provider
        .update_client(Some(tenant), &client.id, registration(&["openid"]), owner)
        .await
        .unwrap();
    let answer = call(
        &t,
        Method::POST,
        "/oauth/consent",
        &[
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("cookie", cookie_header(&jar)),
        ],
        &form(&[
            ("interaction", &hidden(&html, "interaction")),
            ("csrf", &hidden(&html, "csrf")),
            ("decision", "allow"),
        ]),
    )
    .await;
    let back = location(&answer);
    assert!(
        back.starts_with("http://127.0.0.1:8080/callback?"),
        "{back}"
    );
    assert_eq!(query(&back, "error").as_deref(), Some("invalid_scope"));
    assert!(query(&back, "code").is_none());
}

/// RFC 6749 §4.1.3: the token request repeats `redirect_uri` only if the
/// authorization request named it.
#[tokio::test]
async fn redirect_uri_at_the_token_endpoint_only_if_it_was_asked_with() {
    let (catalog, auth, http) = configs();
    let t = Tenancy::builder(catalog, auth)
        .http(http)
        .module(OidcModule::new(OidcConfig::default()))
        .build()
        .await
        .unwrap();
    let registered = t
        .auth()
        .register(
            Registration {
                user: NewUser::new(Email::new("ed@acme.example").unwrap()),
                password: Password::new("correct horse battery staple"),
                tenant: NewTenant::new(
                    Slug::new("acme").unwrap(),
                    TenantName::new("Acme").unwrap(),
                ),
            },
            &ClientInfo::default(),
        )
        .await
        .unwrap();
    let provider = t.module::<OidcModule>().unwrap().provider().clone();
    let (client, secret) = provider
        .register_client(
            Some(registered.membership.tenant_id),
            NewOAuthClient {
                name: "App".into(),
                kind: ClientKind::Confidential,
                redirect_uris: vec![RedirectUri::parse("https://app.example/cb").unwrap()],
                grant_types: vec![GrantType::AuthorizationCode],
                scopes: vec!["projects:read".into()],
                first_party: true,
                ..NewOAuthClient::default()
            },
            Actor::User(registered.user.id),
        )
        .await
        .unwrap();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            client.id,
            secret.unwrap().expose()
        ))
    );
    let cookie = format!(
        "{}={}",
        t.config().cookies.access_name,
        registered.access_token.token
    );
    let code = |with_uri: bool| {
        let t = t.clone();
        let cookie = cookie.clone();
        let client_id = client.id.to_string();
        async move {
            let mut params = vec![
                ("response_type", "code"),
                ("client_id", client_id.as_str()),
                // Plain OAuth: OIDC requires redirect_uri with openid.
                ("scope", "projects:read"),
            ];
            if with_uri {
                params.push(("redirect_uri", "https://app.example/cb"));
            }
            let answer = call(
                &t,
                Method::GET,
                &format!("/oauth/authorize?{}", form(&params)),
                &[("cookie", cookie)],
                "",
            )
            .await;
            assert_eq!(
                answer.status(),
                StatusCode::SEE_OTHER,
                "{}",
                String::from_utf8_lossy(answer.body())
            );
            query(&location(&answer), "code").expect("a code")
        }
    };
    let exchange = |code: String, uri: Option<&'static str>| {
        let t = t.clone();
        let basic = basic.clone();
        async move {
            let mut params = vec![("grant_type", "authorization_code"), ("code", &code)];
            if let Some(uri) = uri {
                params.push(("redirect_uri", uri));
            }
            call(
                &t,
                Method::POST,
                "/oauth/token",
                &[
                    (
                        "content-type",
                        "application/x-www-form-urlencoded".to_owned(),
                    ),
                    ("authorization", basic),
                ],
                &form(&params),
            )
            .await
        }
    };
    let omitted = exchange(code(false).await, None).await;
    assert_eq!(omitted.status(), StatusCode::OK, "{:?}", omitted.body());
    let unregistered = exchange(code(false).await, Some("https://evil.example/cb")).await;
    assert_eq!(json(&unregistered)["error"], "invalid_grant");
    let required = exchange(code(true).await, None).await;
    assert_eq!(json(&required)["error"], "invalid_grant");
    let repeated = exchange(code(true).await, Some("https://app.example/cb")).await;
    assert_eq!(repeated.status(), StatusCode::OK, "{:?}", repeated.body());
}
