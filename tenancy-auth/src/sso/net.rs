//! Outgoing requests to identity providers: the SSRF guard and the HTTP
//! client handed to `oauth2` and `openidconnect`.
//!
//! A tenant admin types the issuer URL of an enterprise connection, and the
//! server fetches it (discovery, JWKS, token, user info). Every host name is
//! resolved by the client's own resolver, which refuses non-public
//! addresses (as classified by [`tenancy_core::net::classify`], the same
//! rules as outgoing webhooks), so a DNS answer that changes between a check
//! and the connection cannot reach an internal address; an IP literal in a
//! URL (which skips the resolver) is checked before the request. Redirects
//! are not followed, answers are capped in size, requests time out.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};
use tenancy_core::net::{AddressClass, classify};
use url::Url;

/// Which addresses the server may fetch identity-provider URLs from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetworkPolicy {
    /// Also private, loopback, link-local and other non-public addresses,
    /// and plain `http`: for tests and development against a local
    /// provider (`127.0.0.1`). Never in production.
    pub allow_private_network: bool,
}

impl NetworkPolicy {
    /// Public `https` providers only (the default).
    pub const PUBLIC_ONLY: NetworkPolicy = NetworkPolicy {
        allow_private_network: false,
    };

    /// Any address and `http`: tests and development only.
    pub const ALLOW_PRIVATE: NetworkPolicy = NetworkPolicy {
        allow_private_network: true,
    };

    /// Whether `ip` may be connected to.
    pub fn allows(self, ip: IpAddr) -> bool {
        self.allow_private_network || classify(ip) == AddressClass::Public
    }

    /// Checks the scheme and, for an IP literal, the address of `url`.
    /// Host names are checked when resolved (by the client's resolver).
    pub fn check_url(self, url: &Url) -> Result<(), String> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_private_network => {}
            other => return Err(format!("the scheme {other:?} is not allowed")),
        }
        let ip = match url.host() {
            None => return Err("the url has no host".to_owned()),
            Some(url::Host::Domain(_)) => return Ok(()),
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        };
        if self.allows(ip) {
            Ok(())
        } else {
            Err("the host is a non-public address".to_owned())
        }
    }
}

/// The resolver's refusal, found again in the client's error chain.
#[derive(Debug, thiserror::Error)]
#[error("the identity provider's host resolves to a non-public address")]
struct AddressRefused;

/// The client's resolver: resolves, then refuses what the policy refuses.
#[derive(Debug, Clone, Copy)]
struct CheckedResolver(NetworkPolicy);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(format!("{host} does not resolve").into());
            }
            if let Some(refused) = addrs.iter().find(|a| !policy.allows(a.ip())) {
                tracing::warn!(%host, ip = %refused.ip(), "identity provider address refused by the network policy");
                return Err(Box::new(AddressRefused) as tenancy_core::BoxError);
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Largest answer read from a provider (discovery, JWKS, tokens, profile).
const MAX_BODY: usize = 1024 * 1024;

/// A failed outgoing request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// Refused by the network policy before sending.
    #[error("{0}")]
    Refused(String),
    /// The request failed.
    #[error("request failed")]
    Request(#[source] reqwest::Error),
    /// The answer is larger than allowed.
    #[error("the answer is too large")]
    TooLarge,
    /// The request could not be built.
    #[error("invalid request")]
    Build(#[source] tenancy_core::BoxError),
}

impl HttpError {
    /// Whether the network policy refused the address.
    pub(crate) fn refusal(&self) -> Option<String> {
        match self {
            HttpError::Refused(reason) => Some(reason.clone()),
            HttpError::Request(e) => {
                let mut source: Option<&dyn std::error::Error> = Some(e);
                while let Some(error) = source {
                    if error.downcast_ref::<AddressRefused>().is_some() {
                        return Some(error.to_string());
                    }
                    source = error.source();
                }
                None
            }
            _ => None,
        }
    }
}

/// The guarded HTTP client.
#[derive(Clone, Debug)]
pub(crate) struct GuardedHttp {
    client: reqwest::Client,
    policy: NetworkPolicy,
    discovery: super::provider::DiscoveryCache,
}

impl GuardedHttp {
    pub(crate) fn new(policy: NetworkPolicy, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would connect on the client's
            // behalf, past the resolver that enforces the policy.
            .no_proxy()
            .timeout(timeout)
            .user_agent(concat!("tenancy-sso/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(CheckedResolver(policy)))
            .build()?;
        Ok(Self {
            client,
            policy,
            discovery: super::provider::DiscoveryCache::default(),
        })
    }

    /// The providers' discovery documents fetched lately.
    pub(crate) fn discovery(&self) -> &super::provider::DiscoveryCache {
        &self.discovery
    }

    /// The policy it enforces.
    pub(crate) fn policy(&self) -> NetworkPolicy {
        self.policy
    }

    /// Sends `request` under the policy; reads at most [`MAX_BODY`] bytes.
    pub(crate) async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let url =
            Url::parse(&request.uri().to_string()).map_err(|e| HttpError::Build(Box::new(e)))?;
        self.policy.check_url(&url).map_err(HttpError::Refused)?;
        let request: reqwest::Request = request
            .try_into()
            .map_err(|e: reqwest::Error| HttpError::Build(Box::new(e)))?;
        let mut response = self
            .client
            .execute(request)
            .await
            .map_err(HttpError::Request)?;
        let mut builder = openidconnect::http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(HttpError::Request)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(HttpError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        builder
            .body(body)
            .map_err(|e| HttpError::Build(Box::new(e)))
    }
}

impl<'c> AsyncHttpClient<'c> for GuardedHttp {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_internal_literals_and_plain_http_by_default() {
        let policy = NetworkPolicy::default();
        for url in [
            "https://127.0.0.1/",
            "https://10.0.0.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://0.0.0.0/",
            "http://8.8.8.8/",
            "file:///etc/passwd",
        ] {
            let url = Url::parse(url).unwrap();
            assert!(policy.check_url(&url).is_err(), "{url}");
        }
        assert!(
            policy
                .check_url(&Url::parse("https://8.8.8.8/").unwrap())
                .is_ok()
        );
        let open = NetworkPolicy::ALLOW_PRIVATE;
        assert!(
            open.check_url(&Url::parse("http://127.0.0.1:8080/").unwrap())
                .is_ok()
        );
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_internal_addresses() {
        let http = GuardedHttp::new(NetworkPolicy::default(), Duration::from_secs(5)).unwrap();
        let request = openidconnect::http::Request::builder()
            .uri("https://localhost:1/.well-known/openid-configuration")
            .body(Vec::new())
            .unwrap();
        let error = http.send(request).await.unwrap_err();
        assert!(error.refusal().is_some(), "{error:?}");
    }

    const PROXY_CHILD: &str = "TENANCY_SSO_PROXY_CHILD";

    /// Run by [`client_ignores_proxy_environment`] in a child process whose
    /// environment names a proxy: the request still goes straight to the
    /// server.
    #[tokio::test]
    #[ignore = "run by client_ignores_proxy_environment in a child process"]
    async fn proxy_child() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if std::env::var_os(PROXY_CHILD).is_none() {
            return;
        }
        assert!(std::env::var_os("HTTP_PROXY").is_some());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the connection closed before the request head");
                head.extend_from_slice(&buf[..n]);
            }
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                .await
                .unwrap();
            String::from_utf8_lossy(&head).into_owned()
        });
        let http = GuardedHttp::new(NetworkPolicy::ALLOW_PRIVATE, Duration::from_secs(3)).unwrap();
        let request = openidconnect::http::Request::builder()
            .uri(format!("http://{addr}/.well-known/openid-configuration"))
            .body(Vec::new())
            .unwrap();
        let response = http.send(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let head = served.await.unwrap();
        assert!(
            head.starts_with("GET /.well-known/openid-configuration "),
            "{head}"
        );
    }

    #[test]
    fn client_ignores_proxy_environment() {
        // A proxy that accepts connections and never answers.
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--exact",
                "sso::net::tests::proxy_child",
                "--ignored",
                "--test-threads=1",
            ])
            .env(PROXY_CHILD, "1")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy");
        for var in [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            child.env(var, &proxy_url);
        }
        let output = child.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("1 passed"), "{stdout}");
        drop(proxy);
    }
}
