//! Reading requests: JSON bodies, cookies, client addresses, CSRF checks.

use std::collections::HashMap;
use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, header};
use serde::de::DeserializeOwned;
use tenancy_auth::ClientInfo;

use crate::config::HttpConfig;
use crate::pipeline::RequestHead;
use crate::problem::Problem;

/// A request as the shared route logic sees it: what every framework can
/// hand over. `Debug` redacts credentials (`Authorization`, cookies) and
/// shows only the body's length: bodies carry passwords and tokens.
#[derive(Clone)]
pub struct ApiRequest {
    /// The method.
    pub method: Method,
    /// The URI.
    pub uri: http::Uri,
    /// The headers.
    pub headers: HeaderMap,
    /// The peer's address.
    pub peer: Option<IpAddr>,
    /// The body, already bounded by [`HttpConfig::body_limit`].
    pub body: Bytes,
    /// Path parameters by name (`{id}` → `id`).
    pub params: HashMap<String, String>,
}

impl std::fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiRequest")
            .field("method", &self.method)
            .field("uri", &self.uri)
            .field("headers", &RedactedHeaders(&self.headers))
            .field("peer", &self.peer)
            .field("body_len", &self.body.len())
            .field("params", &self.params)
            .finish()
    }
}

/// Headers for `Debug`, with the values of credential-bearing ones hidden.
pub(crate) struct RedactedHeaders<'a>(pub(crate) &'a HeaderMap);

impl std::fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |name: &header::HeaderName| {
            [
                header::AUTHORIZATION,
                header::PROXY_AUTHORIZATION,
                header::COOKIE,
                header::SET_COOKIE,
            ]
            .contains(name)
        };
        f.debug_map()
            .entries(self.0.iter().map(|(name, value)| {
                let shown: &dyn std::fmt::Debug = if secret(name) { &"[redacted]" } else { value };
                (name, shown)
            }))
            .finish()
    }
}

impl ApiRequest {
    /// The request head, borrowed, for the pipeline.
    pub fn head(&self) -> RequestHead<'_> {
        RequestHead {
            method: &self.method,
            uri: &self.uri,
            headers: &self.headers,
            peer: self.peer,
        }
    }

    /// A path parameter.
    pub fn param(&self, name: &str) -> Result<&str, Problem> {
        self.params
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| Problem::bad_request(format!("missing path parameter {name}")))
    }

    /// A query parameter, decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        let query = self.uri.query()?;
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == name).then(|| percent_decode(value))
        })
    }

    /// The JSON body as `T`, limited to `limit` bytes; see [`parse_json`].
    pub fn json<T: DeserializeOwned>(&self, limit: usize) -> Result<T, Problem> {
        if self.body.len() > limit {
            return Err(Problem::payload_too_large(limit));
        }
        parse_json(&self.headers, &self.body)
    }

    /// A cookie's value.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        cookie(&self.headers, name)
    }

    /// Who is calling: address (peer, or `X-Forwarded-For` when trusted)
    /// and user agent.
    pub fn client(&self, config: &HttpConfig) -> ClientInfo {
        let mut client = ClientInfo {
            ip: client_ip(&self.headers, self.peer, config),
            user_agent: None,
        };
        if let Some(agent) = self
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            client = client.with_user_agent(agent);
        }
        client
    }
}

/// A cookie's value.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

/// The client address: the peer, or the first `X-Forwarded-For` hop when trusted.
pub(crate) fn client_ip(
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    config: &HttpConfig,
) -> Option<IpAddr> {
    let forwarded = config
        .trust_forwarded_for
        .then(|| {
            headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|ip| ip.trim().parse().ok())
        })
        .flatten();
    forwarded.or(peer)
}

/// Refuses a cookie-authenticated, state-changing request that does not
/// come from the app's own origin (CSRF): its `Origin` (or `Referer`) must
/// be the request's host or one of [`HttpConfig::allowed_origins`].
pub(crate) fn check_origin(head: RequestHead<'_>, config: &HttpConfig) -> Result<(), Problem> {
    if matches!(*head.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let source = head
        .headers
        .get(header::ORIGIN)
        .or_else(|| head.headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    let Some(source) = source else {
        return Err(Problem::forbidden(
            "cross-site request refused: no Origin or Referer",
        ));
    };
    let origin: String = source.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    // HTTP/1.1 names the host in `Host`; HTTP/2 and absolute-form requests
    // in the URI's authority.
    let host = head
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| head.uri.authority().map(|a| a.as_str()));
    let same_host = origin
        .split_once("://")
        .zip(host)
        .is_some_and(|((_, authority), host)| authority.eq_ignore_ascii_case(host));
    if same_host
        || config
            .allowed_origins
            .iter()
            .any(|allowed| allowed == &origin)
    {
        Ok(())
    } else {
        Err(Problem::forbidden(
            "cross-site request refused: origin not allowed",
        ))
    }
}

/// A JSON request body as `T`, the way the SDK's routes read theirs: `415`
/// unless the `Content-Type` is JSON (`application/json` or `*+json`),
/// `400` for malformed JSON (with line and column) or trailing data, `422`
/// naming the field (a path such as `tenant.slug`) that has the wrong type
/// or is missing. Unknown fields are refused where `T` says
/// `#[serde(deny_unknown_fields)]`.
pub fn parse_json<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, Problem> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|media| media.trim().to_ascii_lowercase())
        .is_some_and(|media| media == "application/json" || media.ends_with("+json"));
    if !is_json {
        return Err(Problem::unsupported_media_type());
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut deserializer);
    let value = parsed.map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." { "body" } else { path.as_str() };
        Problem::from_json_error(field, error.inner())
    })?;
    deserializer
        .end()
        .map_err(|error| Problem::from_json_error("body", &error))?;
    Ok(value)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let decoded = bytes
                    .get(i + 1..i + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok());
                match decoded {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A `Set-Cookie` value.
pub(crate) fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age: Option<i64>,
    secure: bool,
) -> String {
    let mut cookie = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax");
    if let Some(seconds) = max_age {
        cookie.push_str(&format!("; Max-Age={seconds}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, headers: &[(&str, &str)], body: &str) -> ApiRequest {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        ApiRequest {
            method,
            uri: "/x?a=1&name=Ann%20Lee&plus=a+b".parse().unwrap(),
            headers: map,
            peer: Some("10.0.0.1".parse().unwrap()),
            body: Bytes::from(body.to_owned()),
            params: HashMap::new(),
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        email: String,
        roles: Vec<String>,
    }

    #[test]
    fn json_bodies_fail_with_the_right_status() {
        let json = [("content-type", "application/json")];
        let ok = request(Method::POST, &json, r#"{"email":"a@b.co","roles":["x"]}"#);
        assert!(ok.json::<Body>(1024).is_ok());
        let text = request(Method::POST, &[("content-type", "text/plain")], "{}");
        assert_eq!(text.json::<Body>(1024).unwrap_err().status(), 415);
        assert_eq!(ok.json::<Body>(4).unwrap_err().status(), 413);
        let broken = request(Method::POST, &json, r#"{"email": "#);
        let problem = broken.json::<Body>(1024).unwrap_err();
        assert_eq!(problem.status(), 400);
        assert!(problem.detail().unwrap().contains("line 1 column"));
        let wrong = request(Method::POST, &json, r#"{"email":"a@b.co","roles":[1]}"#);
        let problem = wrong.json::<Body>(1024).unwrap_err();
        assert_eq!(problem.status(), 422);
        assert_eq!(problem.errors()[0].field, "roles[0]");
        let missing = request(Method::POST, &json, r#"{"roles":[]}"#);
        let problem = missing.json::<Body>(1024).unwrap_err();
        assert_eq!(problem.status(), 422);
        assert!(
            problem.errors()[0]
                .message
                .contains("missing field `email`")
        );
        let trailing = request(Method::POST, &json, r#"{"email":"a@b.co","roles":[]} x"#);
        assert_eq!(trailing.json::<Body>(1024).unwrap_err().status(), 400);
    }

    #[test]
    fn debug_hides_credentials_and_bodies() {
        let r = request(
            Method::POST,
            &[
                ("authorization", "Bearer sekrit-token"),
                ("cookie", "tenancy_access=sekrit-cookie"),
                ("user-agent", "curl/8"),
            ],
            r#"{"password":"sekrit-password"}"#,
        );
        for shown in [format!("{r:?}"), format!("{:?}", r.head())] {
            assert!(!shown.contains("sekrit"), "{shown}");
            assert!(shown.contains("curl/8"), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
        }
    }

    #[test]
    fn queries_and_cookies() {
        let r = request(
            Method::GET,
            &[("cookie", "a=1; tenancy_access=tok; b=2")],
            "",
        );
        assert_eq!(r.query("name").as_deref(), Some("Ann Lee"));
        assert_eq!(r.query("plus").as_deref(), Some("a b"));
        assert_eq!(r.query("none"), None);
        assert_eq!(r.cookie("tenancy_access"), Some("tok"));
        assert_eq!(r.cookie("c"), None);
    }

    #[test]
    fn origin_checks() {
        let config = HttpConfig {
            allowed_origins: vec!["https://app.example".into()],
            ..HttpConfig::default()
        };
        let same = request(
            Method::POST,
            &[("host", "api.example"), ("origin", "https://api.example")],
            "",
        );
        assert!(check_origin(same.head(), &config).is_ok());
        let allowed = request(
            Method::POST,
            &[("host", "api.example"), ("origin", "https://app.example")],
            "",
        );
        assert!(check_origin(allowed.head(), &config).is_ok());
        let referer = request(
            Method::DELETE,
            &[
                ("host", "api.example"),
                ("referer", "https://api.example/page?x"),
            ],
            "",
        );
        assert!(check_origin(referer.head(), &config).is_ok());
        let evil = request(
            Method::POST,
            &[("host", "api.example"), ("origin", "https://evil.example")],
            "",
        );
        assert_eq!(
            check_origin(evil.head(), &config).unwrap_err().status(),
            403
        );
        let bare = request(Method::PUT, &[("host", "api.example")], "");
        assert_eq!(
            check_origin(bare.head(), &config).unwrap_err().status(),
            403
        );
        let read = request(Method::GET, &[], "");
        assert!(check_origin(read.head(), &config).is_ok());
        let mixed_case = request(
            Method::POST,
            &[("host", "API.example"), ("origin", "https://api.EXAMPLE")],
            "",
        );
        assert!(check_origin(mixed_case.head(), &config).is_ok());
        // HTTP/2: no `Host`, the authority is in the URI.
        let mut h2 = request(Method::POST, &[("origin", "https://api.example")], "");
        h2.uri = "https://api.example/x".parse().unwrap();
        assert!(check_origin(h2.head(), &config).is_ok());
        let mut h2_evil = request(Method::POST, &[("origin", "https://evil.example")], "");
        h2_evil.uri = "https://api.example/x".parse().unwrap();
        assert!(check_origin(h2_evil.head(), &config).is_err());
        let nowhere = request(Method::POST, &[("origin", "https://api.example")], "");
        assert!(check_origin(nowhere.head(), &config).is_err());
    }

    #[test]
    fn client_address() {
        let r = request(
            Method::GET,
            &[
                ("x-forwarded-for", "203.0.113.9, 10.0.0.2"),
                ("user-agent", "curl/8"),
            ],
            "",
        );
        assert_eq!(
            r.client(&HttpConfig::default()).ip,
            Some("10.0.0.1".parse().unwrap())
        );
        let trusting = HttpConfig {
            trust_forwarded_for: true,
            ..HttpConfig::default()
        };
        let client = r.client(&trusting);
        assert_eq!(client.ip, Some("203.0.113.9".parse().unwrap()));
        assert_eq!(client.user_agent.as_deref(), Some("curl/8"));
    }
}
