//! The simulated identity provider, driven by independent client libraries
//! (`openidconnect` for the OIDC dialect, `oauth2` for the GitHub-style
//! one) and by raw HTTP for what those libraries would never send.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreProviderMetadata, CoreUserInfoClaims,
};
use openidconnect::{
    AccessTokenHash, AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    Nonce, OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use serde_json::Value;
use tenancy_auth::testkit::idp::{
    ClientAuth, GITHUB_EMAILS_PATH, GITHUB_TOKEN_PATH, IdpAccount, IdpClient, Misbehaviour,
    OIDC_TOKEN_PATH, SimulatedIdp,
};

const CLIENT_ID: &str = "rp-client";
const CLIENT_SECRET: &str = "rp-secret";
const REDIRECT: &str = "http://127.0.0.1:9/sso/callback";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("tenancy-idp-tests")
        .build()
        .unwrap()
}

async fn idp() -> SimulatedIdp {
    let idp = SimulatedIdp::start().await;
    idp.register_client(IdpClient::new(CLIENT_ID, CLIENT_SECRET, [REDIRECT]));
    idp.sign_in_as(
        IdpAccount::new("ada@acme.test")
            .with_name("Ada Lovelace")
            .with_subject("110248495921238986420"),
    );
    idp
}

type Client = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

async fn oidc_client(idp: &SimulatedIdp, http: &reqwest::Client) -> Client {
    let metadata = CoreProviderMetadata::discover_async(
        IssuerUrl::new(idp.issuer().to_owned()).unwrap(),
        http,
    )
    .await
    .unwrap();
    CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(CLIENT_ID.to_owned()),
        Some(ClientSecret::new(CLIENT_SECRET.to_owned())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.to_owned()).unwrap())
}

struct Started {
    code: String,
    nonce: Nonce,
    verifier: openidconnect::PkceCodeVerifier,
}

/// Authorizes through the in-process browser; checks the redirect.
fn start(idp: &SimulatedIdp, client: &Client) -> Started {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".to_owned()))
        .add_scope(Scope::new("profile".to_owned()))
        .set_pkce_challenge(challenge)
        .url();
    let redirect = idp.authorize(url.as_str());
    assert_eq!(redirect.status, 302, "{redirect:?}");
    assert!(redirect.location.as_deref().unwrap().starts_with(REDIRECT));
    assert_eq!(redirect.state().as_deref(), Some(csrf.secret().as_str()));
    assert_eq!(redirect.param("iss").as_deref(), Some(idp.issuer()));
    Started {
        code: redirect.code().expect("a code"),
        nonce,
        verifier,
    }
}

#[tokio::test]
async fn openidconnect_completes_code_flow_with_pkce_basic_auth() {
    let idp = idp().await;
    let http = http();
    let client = oidc_client(&idp, &http).await;
    let started = start(&idp, &client);
    let response = client
        .exchange_code(AuthorizationCode::new(started.code.clone()))
        .unwrap()
        .set_pkce_verifier(started.verifier)
        .request_async(&http)
        .await
        .unwrap();
    let id_token = response.id_token().expect("an ID token");
    let verifier = client.id_token_verifier();
    let claims = id_token.claims(&verifier, &started.nonce).unwrap();
    assert_eq!(claims.subject().as_str(), "110248495921238986420");
    assert_eq!(claims.issuer().as_str(), idp.issuer());
    assert_eq!(claims.email().map(|e| e.as_str()), Some("ada@acme.test"));
    assert_eq!(claims.email_verified(), Some(true));
    assert_eq!(
        claims.name().and_then(|n| n.get(None)).map(|n| n.as_str()),
        Some("Ada Lovelace")
    );
    let expected_hash = claims.access_token_hash().expect("at_hash");
    let actual = AccessTokenHash::from_token(
        response.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(&actual, expected_hash);

    let userinfo: CoreUserInfoClaims = client
        .user_info(response.access_token().to_owned(), None)
        .unwrap()
        .request_async(&http)
        .await
        .unwrap();
    assert_eq!(userinfo.subject().as_str(), "110248495921238986420");
    assert_eq!(userinfo.email_verified(), Some(true));

    // What the client sent is on record.
    let token = idp.requests_to(OIDC_TOKEN_PATH).pop().unwrap();
    assert_eq!(
        token.client_auth,
        Some(ClientAuth::Basic {
            client_id: CLIENT_ID.to_owned()
        })
    );
    assert_eq!(token.param("grant_type"), Some("authorization_code"));
    assert_eq!(token.param("code"), Some(started.code.as_str()));
    assert_eq!(token.param("redirect_uri"), Some(REDIRECT));
    assert_eq!(token.param("code_verifier").map(str::len), Some(43));
    let authorize = &idp.requests()[2];
    assert_eq!(authorize.param("code_challenge_method"), Some("S256"));
    assert_eq!(authorize.param("response_type"), Some("code"));
}

#[tokio::test]
async fn client_secret_post_is_accepted_and_recorded() {
    let idp = idp().await;
    let http = http();
    let client = oidc_client(&idp, &http)
        .await
        .set_auth_type(AuthType::RequestBody);
    let started = start(&idp, &client);
    let response = client
        .exchange_code(AuthorizationCode::new(started.code))
        .unwrap()
        .set_pkce_verifier(started.verifier)
        .request_async(&http)
        .await
        .unwrap();
    assert!(response.id_token().is_some());
    let token = idp.token_requests().pop().unwrap();
    assert_eq!(
        token.client_auth,
        Some(ClientAuth::Post {
            client_id: CLIENT_ID.to_owned()
        })
    );
    assert_eq!(token.param("client_secret"), Some(CLIENT_SECRET));
}

#[tokio::test]
async fn discovery_document_has_the_documented_fields() {
    let idp = idp().await;
    let doc: Value = http()
        .get(idp.discovery_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], idp.issuer());
    for field in [
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
    ] {
        assert!(
            doc[field].as_str().unwrap().starts_with(idp.issuer()),
            "{field}"
        );
    }
    assert_eq!(doc["id_token_signing_alg_values_supported"][0], "RS256");
    assert_eq!(doc["response_types_supported"][0], "code");
    assert_eq!(doc["subject_types_supported"][0], "public");
    let methods = doc["token_endpoint_auth_methods_supported"].to_string();
    assert!(methods.contains("client_secret_basic") && methods.contains("client_secret_post"));
    assert!(
        doc["code_challenge_methods_supported"]
            .to_string()
            .contains("S256")
    );
    let jwks: Value = http()
        .get(idp.jwks_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["kid"], idp.key_id());
    assert_eq!(key["alg"], "RS256");
    assert!(
        key.get("d").is_none(),
        "the JWKS must not leak the private key"
    );
}

/// Runs a flow with `misbehaviour` and returns the ID token check's error.
async fn claims_error(misbehaviour: Misbehaviour) -> String {
    let idp = idp().await;
    idp.misbehave(misbehaviour);
    let http = http();
    let client = oidc_client(&idp, &http).await;
    let started = start(&idp, &client);
    let response = client
        .exchange_code(AuthorizationCode::new(started.code))
        .unwrap()
        .set_pkce_verifier(started.verifier)
        .request_async(&http)
        .await
        .unwrap();
    let id_token = response.id_token().unwrap();
    id_token
        .claims(&client.id_token_verifier(), &started.nonce)
        .map(|_| ())
        .expect_err("the client must refuse this ID token")
        .to_string()
}

#[tokio::test]
async fn misbehaviours_are_caught_by_an_independent_client() {
    let nonce = claims_error(Misbehaviour::wrong_nonce()).await;
    assert!(nonce.to_lowercase().contains("nonce"), "{nonce}");
    let key = claims_error(Misbehaviour::foreign_signing_key()).await;
    assert!(key.to_lowercase().contains("signature"), "{key}");
    let issuer = claims_error(Misbehaviour::wrong_issuer()).await;
    assert!(issuer.to_lowercase().contains("iss"), "{issuer}");
    let audience = claims_error(Misbehaviour::wrong_audience()).await;
    assert!(audience.to_lowercase().contains("aud"), "{audience}");
    let expired = claims_error(Misbehaviour::expired_id_token()).await;
    assert!(expired.to_lowercase().contains("expired"), "{expired}");
    let missing = claims_error(Misbehaviour::omit_nonce()).await;
    assert!(missing.to_lowercase().contains("nonce"), "{missing}");
    let unsigned = claims_error(Misbehaviour::unsigned_id_token()).await;
    assert!(!unsigned.is_empty());
}

#[tokio::test]
async fn unverified_email_is_reported_as_such() {
    let idp = idp().await;
    idp.sign_in_as(IdpAccount::new("eve@acme.test").unverified());
    let http = http();
    let client = oidc_client(&idp, &http).await;
    let started = start(&idp, &client);
    let response = client
        .exchange_code(AuthorizationCode::new(started.code))
        .unwrap()
        .set_pkce_verifier(started.verifier)
        .request_async(&http)
        .await
        .unwrap();
    let claims = response
        .id_token()
        .unwrap()
        .claims(&client.id_token_verifier(), &started.nonce)
        .unwrap();
    assert_eq!(claims.email_verified(), Some(false));
}

async fn post_token(http: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let response = http
        .post(url)
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .header("accept", "application/json")
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn codes_are_single_use_bound_and_pkce_checked() {
    let idp = idp().await;
    let http = http();
    let client = oidc_client(&idp, &http).await;
    let token_url = idp.url(OIDC_TOKEN_PATH);

    // A wrong verifier fails, and spends the code.
    let started = start(&idp, &client);
    let wrong = "a".repeat(43);
    let (status, body) = post_token(
        &http,
        &token_url,
        &[
            ("grant_type", "authorization_code"),
            ("code", &started.code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &wrong),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // A missing verifier fails.
    let started = start(&idp, &client);
    let (status, body) = post_token(
        &http,
        &token_url,
        &[
            ("grant_type", "authorization_code"),
            ("code", &started.code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // A good exchange, then its replay.
    let started = start(&idp, &client);
    let form = [
        ("grant_type", "authorization_code"),
        ("code", started.code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", started.verifier.secret().as_str()),
    ];
    let (status, body) = post_token(&http, &token_url, &form).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let (status, body) = post_token(&http, &token_url, &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // The replay knob lets it through.
    idp.misbehave(Misbehaviour::allow_code_replay());
    let started = start(&idp, &client);
    let form = [
        ("grant_type", "authorization_code"),
        ("code", started.code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", started.verifier.secret().as_str()),
    ];
    assert_eq!(post_token(&http, &token_url, &form).await.0, 200);
    assert_eq!(post_token(&http, &token_url, &form).await.0, 200);

    // Wrong secret: 401 with a Basic challenge.
    let response = http
        .post(&token_url)
        .basic_auth(CLIENT_ID, Some("nope"))
        .form(&[("grant_type", "authorization_code"), ("code", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");

    // Unsupported grant.
    let (status, body) = post_token(
        &http,
        &token_url,
        &[("grant_type", "password"), ("username", "x")],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
}

#[tokio::test]
async fn authorize_refuses_unknown_redirects_and_reports_errors() {
    let idp = idp().await;
    let http = http();
    let client = oidc_client(&idp, &http).await;

    let url = format!(
        "{}/o/oauth2/v2/auth?response_type=code&client_id={CLIENT_ID}&scope=openid&state=s1&redirect_uri={}",
        idp.issuer(),
        "http%3A%2F%2F127.0.0.1%3A9%2Fsso%2Fcallback%2Fevil"
    );
    let redirect = idp.authorize(&url);
    assert_eq!(redirect.status, 400);
    assert!(redirect.location.is_none());
    // Over HTTP too: shown, never redirected.
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(!response.headers().contains_key("location"));

    idp.misbehave(Misbehaviour::authorize_error("access_denied"));
    let (url, csrf, _) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .url();
    let response = http.get(url.as_str()).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 302);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(REDIRECT), "{location}");
    assert!(location.contains("error=access_denied"), "{location}");
    assert!(
        location.contains(&format!("state={}", csrf.secret())),
        "{location}"
    );

    idp.misbehave(Misbehaviour::wrong_response_iss());
    let redirect = idp.authorize(url.as_str());
    assert!(redirect.code().is_some());
    assert_ne!(redirect.param("iss").as_deref(), Some(idp.issuer()));

    idp.misbehave(Misbehaviour::none());
    idp.sign_out();
    let redirect = idp.authorize(url.as_str());
    assert_eq!(redirect.error().as_deref(), Some("login_required"));
}

type GithubClient = oauth2::basic::BasicClient<
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

fn github_client(idp: &SimulatedIdp) -> GithubClient {
    oauth2::basic::BasicClient::new(oauth2::ClientId::new(CLIENT_ID.to_owned()))
        .set_client_secret(oauth2::ClientSecret::new(CLIENT_SECRET.to_owned()))
        .set_auth_uri(oauth2::AuthUrl::new(idp.github_authorize_url()).unwrap())
        .set_token_uri(oauth2::TokenUrl::new(idp.github_token_url()).unwrap())
        .set_redirect_uri(oauth2::RedirectUrl::new(REDIRECT.to_owned()).unwrap())
}

#[tokio::test]
async fn oauth2_completes_github_style_flow() {
    let idp = idp().await;
    idp.sign_in_as(
        IdpAccount::new("grace@acme.test")
            .with_github(583231, "grace")
            .with_extra_email("grace@old.test", false),
    );
    let http = http();
    let client = github_client(&idp);
    let (challenge, verifier) = oauth2::PkceCodeChallenge::new_random_sha256();
    let (url, csrf) = client
        .authorize_url(oauth2::CsrfToken::new_random)
        .add_scope(oauth2::Scope::new("read:user".to_owned()))
        .add_scope(oauth2::Scope::new("user:email".to_owned()))
        .set_pkce_challenge(challenge)
        .url();
    let response = http.get(url.as_str()).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 302);
    let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    let params: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(params["state"], *csrf.secret());
    let code = params["code"].clone();

    let token = client
        .exchange_code(oauth2::AuthorizationCode::new(code.clone()))
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap();
    use oauth2::TokenResponse as _;
    let access = token.access_token().secret().clone();
    assert!(access.starts_with("gho_"));
    let recorded = idp.requests_to(GITHUB_TOKEN_PATH).pop().unwrap();
    assert_eq!(recorded.header("accept"), Some("application/json"));
    assert!(recorded.param("code_verifier").is_some());
    assert!(matches!(
        recorded.client_auth,
        Some(ClientAuth::Basic { .. })
    ));

    let user: Value = http
        .get(idp.github_user_url())
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(user["id"], 583231);
    assert_eq!(user["login"], "grace");
    assert!(user["email"].is_null(), "private by default");
    let emails: Value = http
        .get(idp.github_emails_url())
        .header("authorization", format!("token {access}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(emails[0]["email"], "grace@acme.test");
    assert_eq!(emails[0]["primary"], true);
    assert_eq!(emails[0]["verified"], true);
    assert_eq!(emails[1]["verified"], false);
    assert_eq!(idp.requests_to(GITHUB_EMAILS_PATH).len(), 1);

    // No User-Agent: refused, as GitHub's API does.
    let bare = reqwest::Client::new();
    let response = bare
        .get(idp.github_user_url())
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);

    // Replay: GitHub answers 200 with an error field; the library fails.
    let replay = client
        .exchange_code(oauth2::AuthorizationCode::new(code.clone()))
        .request_async(&http)
        .await;
    assert!(replay.is_err());
    let response = http
        .post(idp.github_token_url())
        .form(&[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code", code.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body = response.text().await.unwrap();
    assert!(body.contains("error=bad_verification_code"), "{body}");
}

#[tokio::test]
async fn github_emails_need_the_email_scope() {
    let idp = idp().await;
    let http = http();
    let client = github_client(&idp);
    let (url, _) = client
        .authorize_url(oauth2::CsrfToken::new_random)
        .add_scope(oauth2::Scope::new("read:user".to_owned()))
        .url();
    let code = idp.authorize(url.as_str()).code().unwrap();
    let response = http
        .post(idp.github_token_url())
        .header("accept", "application/json")
        .form(&[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["scope"], "read:user");

    // Without `Accept: application/json`, GitHub answers form-encoded.
    let code = idp.authorize(url.as_str()).code().unwrap();
    let response = http
        .post(idp.github_token_url())
        .form(&[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/x-www-form-urlencoded")
    );
    let text = response.text().await.unwrap();
    let form: std::collections::HashMap<_, _> = url::form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect();
    assert!(form["access_token"].starts_with("gho_"), "{text}");
    assert_eq!(form["token_type"], "bearer");
    assert_eq!(
        idp.requests_to(GITHUB_TOKEN_PATH)
            .pop()
            .unwrap()
            .client_auth,
        Some(ClientAuth::Post {
            client_id: CLIENT_ID.to_owned()
        })
    );
    let access = body["access_token"].as_str().unwrap();
    let response = http
        .get(idp.github_emails_url())
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    // An OIDC access token is no GitHub token.
    let response = http
        .get(idp.github_user_url())
        .bearer_auth("ya29.nothing")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}
