//! The protocol side: authorization URLs, code exchange, ID-token
//! validation (`openidconnect`) and GitHub-style profiles (`oauth2`).

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient,
    CoreClientAuthMethod, CoreGenderClaim, CoreGrantType, CoreIdTokenClaims, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AuthorizationCode, ClientId, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};
use url::Url;

use super::connection::OAuth2Endpoints;
use super::error::SsoError;
use super::net::{GuardedHttp, HttpError};

/// What a provider says about the account that signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProviderIdentity {
    /// The provider's stable id of the account.
    pub(crate) subject: String,
    /// The email address, if any.
    pub(crate) email: Option<String>,
    /// Whether the provider says the address is verified: `Some(false)`
    /// when it says not, `None` when it says nothing.
    pub(crate) email_verified: Option<bool>,
    /// A display name.
    pub(crate) name: Option<String>,
}

/// A client's registration at a provider.
pub(crate) struct Registration<'a> {
    pub(crate) client_id: &'a str,
    pub(crate) client_secret: &'a str,
    pub(crate) redirect_uri: &'a Url,
    pub(crate) scopes: &'a [String],
}

/// The per-sign-in secrets.
pub(crate) struct FlowSecrets {
    pub(crate) state: String,
    pub(crate) nonce: String,
    pub(crate) pkce_verifier: String,
}

fn unavailable(error: impl Into<tenancy_core::BoxError>) -> SsoError {
    SsoError::ProviderUnavailable(error.into())
}

fn refused_or(error: &HttpError) -> Option<SsoError> {
    error.refusal().map(SsoError::AddressRefused)
}

fn redirect(uri: &Url) -> RedirectUrl {
    RedirectUrl::from_url(uri.clone())
}

/// The discovery fields beyond OpenID Connect Discovery 1.0 that matter
/// here: RFC 9207's promise to put `iss` in authorization responses.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub(crate) struct ExtraMetadata {
    #[serde(default)]
    authorization_response_iss_parameter_supported: Option<bool>,
}

impl openidconnect::AdditionalProviderMetadata for ExtraMetadata {}

/// A provider's discovery document.
pub(crate) type Metadata = openidconnect::ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// The ID-token signatures accepted: asymmetric only. An `HS*` token is
/// keyed by the client secret, which the provider's discovery does not
/// get to choose; `none` is never accepted.
const ID_TOKEN_ALGORITHMS: [CoreJwsSigningAlgorithm; 10] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EcdsaP521Sha512,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// How far an ID token's `iat` may lie in the past (the code exchange
/// follows the sign-in within minutes) or the future (clock skew).
const MAX_IAT_AGE_SECS: i64 = 600;
const MAX_IAT_SKEW_SECS: i64 = 300;

/// How long a provider's discovery document and keys are reused.
const DISCOVERY_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// Discovery documents (with their JWKS) by issuer, for
/// [`DISCOVERY_TTL`]: an anonymous sign-in start does not make the server
/// fetch them each time.
#[derive(Clone, Default)]
pub(crate) struct DiscoveryCache(
    std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Metadata)>>,
    >,
);

impl std::fmt::Debug for DiscoveryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscoveryCache").finish_non_exhaustive()
    }
}

impl DiscoveryCache {
    fn get(&self, issuer: &str) -> Option<Metadata> {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(issuer)
            .filter(|(at, _)| at.elapsed() < DISCOVERY_TTL)
            .map(|(_, metadata)| metadata.clone())
    }

    fn put(&self, issuer: &str, metadata: &Metadata) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, (at, _)| at.elapsed() < DISCOVERY_TTL);
        map.insert(
            issuer.to_owned(),
            (std::time::Instant::now(), metadata.clone()),
        );
    }
}

/// The provider's discovery document, from the cache unless `fresh`.
async fn discover_cached(
    http: &GuardedHttp,
    issuer: &str,
    fresh: bool,
) -> Result<(Metadata, bool), SsoError> {
    if !fresh && let Some(metadata) = http.discovery().get(issuer) {
        return Ok((metadata, true));
    }
    let metadata = discover(http, issuer).await?;
    http.discovery().put(issuer, &metadata);
    Ok((metadata, false))
}

async fn discover(http: &GuardedHttp, issuer: &str) -> Result<Metadata, SsoError> {
    let issuer = IssuerUrl::new(issuer.to_owned()).map_err(|e| SsoError::InvalidInput {
        field: "issuer",
        reason: e.to_string(),
    })?;
    let issuer_url = Url::parse(issuer.as_str()).map_err(unavailable)?;
    http.check(&issuer_url)?;
    let metadata = Metadata::discover_async(issuer, http)
        .await
        .map_err(|error| {
            if let openidconnect::DiscoveryError::Request(inner) = &error
                && let Some(refused) = refused_or(inner)
            {
                return refused;
            }
            unavailable(error)
        })?;
    // The browser is sent to the authorization endpoint: a `javascript:`
    // or `data:` URL there would run in the app's origin. It must pass
    // the same policy as the issuer (https; http only where private
    // networks are allowed).
    http.check(metadata.authorization_endpoint().url())?;
    if let Some(token) = metadata.token_endpoint() {
        http.check(token.url())?;
    }
    Ok(metadata)
}

impl GuardedHttp {
    fn check(&self, url: &Url) -> Result<(), SsoError> {
        self.policy()
            .check_url(url)
            .map_err(SsoError::AddressRefused)
    }
}

/// The authorization URL of an OpenID provider.
pub(crate) async fn oidc_authorize_url(
    http: &GuardedHttp,
    issuer: &str,
    registration: &Registration<'_>,
    secrets: &FlowSecrets,
) -> Result<Url, SsoError> {
    let (metadata, _) = discover_cached(http, issuer, false).await?;
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(registration.client_id.to_owned()),
        Some(openidconnect::ClientSecret::new(
            registration.client_secret.to_owned(),
        )),
    )
    .set_redirect_uri(redirect(registration.redirect_uri));
    let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(
        secrets.pkce_verifier.clone(),
    ));
    let state = secrets.state.clone();
    let nonce = secrets.nonce.clone();
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(state),
            move || Nonce::new(nonce),
        )
        .set_pkce_challenge(challenge);
    for scope in registration.scopes.iter().filter(|s| *s != "openid") {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    let (url, _, _) = request.url();
    Ok(url)
}

/// Exchanges the code at an OpenID provider and validates the ID token:
/// signature by the provider's JWKS, `iss`, `aud` (and `azp`), `exp`,
/// `iat`, `nonce`.
pub(crate) async fn oidc_finish(
    http: &GuardedHttp,
    issuer: &str,
    registration: &Registration<'_>,
    code: &str,
    secrets: &FlowSecrets,
    response_iss: Option<&str>,
) -> Result<ProviderIdentity, SsoError> {
    let (metadata, cached) = discover_cached(http, issuer, false).await?;
    // RFC 9207 §2.4: a provider that promises `iss` in its authorization
    // responses must send it (a mix-up attack strips it).
    if metadata
        .additional_metadata()
        .authorization_response_iss_parameter_supported
        == Some(true)
        && response_iss.is_none()
    {
        return Err(SsoError::InvalidState);
    }
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(registration.client_id.to_owned()),
        Some(openidconnect::ClientSecret::new(
            registration.client_secret.to_owned(),
        )),
    )
    .set_redirect_uri(redirect(registration.redirect_uri));
    let request = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(unavailable)?
        .set_pkce_verifier(PkceCodeVerifier::new(secrets.pkce_verifier.clone()));
    let token = request.request_async(http).await.map_err(|error| {
        if let openidconnect::RequestTokenError::Request(inner) = &error
            && let Some(refused) = refused_or(inner)
        {
            return refused;
        }
        SsoError::CodeExchange(Box::new(error))
    })?;
    let id_token = token.id_token().ok_or(SsoError::MissingIdToken)?;
    let nonce = Nonce::new(secrets.nonce.clone());
    match verify(client.id_token_verifier(), id_token, &nonce) {
        Ok(identity) => Ok(identity),
        // The provider may have rotated its keys since the cached JWKS:
        // fetched again, once, and the same token checked against them.
        Err(_) if cached => {
            let (fresh, _) = discover_cached(http, issuer, true).await?;
            let verifier = openidconnect::core::CoreIdTokenVerifier::new_confidential_client(
                ClientId::new(registration.client_id.to_owned()),
                openidconnect::ClientSecret::new(registration.client_secret.to_owned()),
                fresh.issuer().clone(),
                fresh.jwks().clone(),
            );
            verify(verifier, id_token, &nonce)
        }
        Err(error) => Err(error),
    }
}

fn verify(
    verifier: openidconnect::core::CoreIdTokenVerifier<'_>,
    id_token: &openidconnect::core::CoreIdToken,
    nonce: &Nonce,
) -> Result<ProviderIdentity, SsoError> {
    let verifier = verifier
        .set_allowed_algs(ID_TOKEN_ALGORITHMS)
        .set_issue_time_verifier_fn(|iat| {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let iat = iat.timestamp();
            if iat > now + MAX_IAT_SKEW_SECS {
                Err("the id token was issued in the future".to_owned())
            } else if iat < now - MAX_IAT_AGE_SECS {
                Err("the id token was issued too long ago".to_owned())
            } else {
                Ok(())
            }
        });
    let claims: &CoreIdTokenClaims = id_token
        .claims(&verifier, nonce)
        .map_err(|e| SsoError::InvalidIdToken(Box::new(e)))?;
    Ok(identity_of(claims))
}

fn identity_of(claims: &CoreIdTokenClaims) -> ProviderIdentity {
    let name = claims
        .name()
        .and_then(|n| n.get(None))
        .map(|n| n.as_str().to_owned());
    let _: Option<&CoreGenderClaim> = claims.gender();
    ProviderIdentity {
        subject: claims.subject().as_str().to_owned(),
        email: claims.email().map(|e| e.as_str().to_owned()),
        email_verified: claims.email_verified(),
        name,
    }
}

/// The authorization URL of a GitHub-style provider.
pub(crate) fn oauth2_authorize_url(
    endpoints: &OAuth2Endpoints,
    registration: &Registration<'_>,
    secrets: &FlowSecrets,
) -> Url {
    let client =
        oauth2::basic::BasicClient::new(oauth2::ClientId::new(registration.client_id.to_owned()))
            .set_auth_uri(oauth2::AuthUrl::from_url(endpoints.authorize.clone()))
            .set_redirect_uri(oauth2::RedirectUrl::from_url(
                registration.redirect_uri.clone(),
            ));
    let challenge = oauth2::PkceCodeChallenge::from_code_verifier_sha256(
        &oauth2::PkceCodeVerifier::new(secrets.pkce_verifier.clone()),
    );
    let state = secrets.state.clone();
    let mut request = client
        .authorize_url(move || oauth2::CsrfToken::new(state))
        .set_pkce_challenge(challenge);
    for scope in registration.scopes {
        request = request.add_scope(oauth2::Scope::new(scope.clone()));
    }
    let (url, _) = request.url();
    url
}

#[derive(Deserialize)]
struct Profile {
    id: serde_json::Value,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<bool>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    login: Option<String>,
}

#[derive(Deserialize)]
struct ProfileEmail {
    email: String,
    #[serde(default)]
    primary: bool,
    #[serde(default)]
    verified: bool,
}

/// Exchanges the code at a GitHub-style provider, then reads the profile
/// and the addresses: the email is the primary one the provider marks
/// verified.
pub(crate) async fn oauth2_finish(
    http: &GuardedHttp,
    endpoints: &OAuth2Endpoints,
    registration: &Registration<'_>,
    code: &str,
    secrets: &FlowSecrets,
) -> Result<ProviderIdentity, SsoError> {
    for url in [&endpoints.token, &endpoints.user] {
        http.check(url)?;
    }
    if let Some(emails) = &endpoints.emails {
        http.check(emails)?;
    }
    let client =
        oauth2::basic::BasicClient::new(oauth2::ClientId::new(registration.client_id.to_owned()))
            .set_client_secret(oauth2::ClientSecret::new(
                registration.client_secret.to_owned(),
            ))
            .set_auth_uri(oauth2::AuthUrl::from_url(endpoints.authorize.clone()))
            .set_token_uri(oauth2::TokenUrl::from_url(endpoints.token.clone()))
            .set_redirect_uri(oauth2::RedirectUrl::from_url(
                registration.redirect_uri.clone(),
            ));
    let token = client
        .exchange_code(oauth2::AuthorizationCode::new(code.to_owned()))
        .set_pkce_verifier(oauth2::PkceCodeVerifier::new(secrets.pkce_verifier.clone()))
        .request_async(http)
        .await
        .map_err(|error| {
            if let oauth2::RequestTokenError::Request(inner) = &error
                && let Some(refused) = refused_or(inner)
            {
                return refused;
            }
            SsoError::CodeExchange(Box::new(error))
        })?;
    let access = token.access_token().secret().clone();
    let profile: Profile = get_json(http, &endpoints.user, &access).await?;
    let subject = match &profile.id {
        serde_json::Value::String(s) if !s.is_empty() => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return Err(unavailable("the profile has no id")),
    };
    let (email, email_verified) = match &endpoints.emails {
        Some(url) => {
            let emails: Vec<ProfileEmail> = get_json(http, url, &access).await?;
            match emails.into_iter().find(|e| e.primary) {
                Some(primary) => (Some(primary.email), Some(primary.verified)),
                None => (None, None),
            }
        }
        None => (profile.email.clone(), profile.email_verified),
    };
    Ok(ProviderIdentity {
        subject,
        email,
        email_verified,
        name: profile.name.or(profile.login),
    })
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &GuardedHttp,
    url: &Url,
    access_token: &str,
) -> Result<T, SsoError> {
    let request = openidconnect::http::Request::builder()
        .method(openidconnect::http::Method::GET)
        .uri(url.as_str())
        .header(openidconnect::http::header::ACCEPT, "application/json")
        .header(
            openidconnect::http::header::AUTHORIZATION,
            format!("Bearer {access_token}"),
        )
        .body(Vec::new())
        .map_err(unavailable)?;
    let response = http
        .send(request)
        .await
        .map_err(|error| refused_or(&error).unwrap_or_else(|| unavailable(error)))?;
    if !response.status().is_success() {
        return Err(unavailable(format!("{url} answered {}", response.status())));
    }
    serde_json::from_slice(response.body()).map_err(unavailable)
}

#[cfg(test)]
mod discovery_tests {
    use super::*;
    use crate::sso::NetworkPolicy;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves a discovery document whose authorization endpoint is
    /// `authorize`, and an empty JWKS.
    async fn provider(authorize: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let document = serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": authorize,
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })
        .to_string();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = if String::from_utf8_lossy(&head).starts_with("GET /jwks") {
                    "{\"keys\":[]}".to_owned()
                } else {
                    document.clone()
                };
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        issuer
    }

    #[tokio::test]
    async fn a_script_authorization_endpoint_is_refused() {
        let http = GuardedHttp::new(NetworkPolicy::ALLOW_PRIVATE, Duration::from_secs(5)).unwrap();
        let issuer = provider("javascript:alert(document.cookie)//").await;
        let refused = discover(&http, &issuer).await;
        assert!(
            matches!(refused, Err(SsoError::AddressRefused(_))),
            "{:?}",
            refused.map(|_| ())
        );
        let issuer = provider("http://127.0.0.1:9/authorize").await;
        assert!(discover(&http, &issuer).await.is_ok());
    }
}
