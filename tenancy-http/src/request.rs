//! Reading requests: JSON bodies, cookies, client addresses, CSRF checks.

use std::collections::HashMap;
use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, header};
use serde::de::DeserializeOwned;
use tenancy_auth::ClientInfo;

use crate::config::HttpConfig;
use crate::origin::Origin;
use crate::pipeline::RequestHead;
use crate::problem::Problem;

/// A request as the shared route logic sees it: what every framework can
/// hand over. `Debug` redacts credentials (`Authorization`, cookies) and
/// shows only the body's length: bodies carry passwords and tokens.
#[derive(Clone)]
#[non_exhaustive]
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
    /// Whether the connection to the app is TLS; see [`RequestHead::tls`].
    pub tls: bool,
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
            .field("tls", &self.tls)
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
    /// A request with no path parameters, over a connection not known to
    /// be TLS (an `https` URI counts as TLS).
    pub fn new(
        method: Method,
        uri: http::Uri,
        headers: HeaderMap,
        peer: Option<IpAddr>,
        body: Bytes,
    ) -> Self {
        let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        Self {
            method,
            uri,
            headers,
            peer,
            body,
            params: HashMap::new(),
            tls,
        }
    }

    /// Sets the path parameters.
    pub fn with_params(mut self, params: HashMap<String, String>) -> Self {
        self.params = params;
        self
    }

    /// Marks the connection as TLS (or not).
    pub fn with_tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// The request head, borrowed, for the pipeline.
    pub fn head(&self) -> RequestHead<'_> {
        RequestHead::new(&self.method, &self.uri, &self.headers, self.peer).with_tls(self.tls)
    }

    /// A path parameter.
    pub fn param(&self, name: &str) -> Result<&str, Problem> {
        self.params
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| Problem::bad_request(format!("missing path parameter {name}")))
    }

    /// A query parameter, decoded as `application/x-www-form-urlencoded`
    /// (`+` is a space, `%XX` a byte; invalid UTF-8 is replaced).
    pub fn query(&self, name: &str) -> Option<String> {
        let query = self.uri.query()?;
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
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

    /// The origin the client sent this request to, for absolute URLs in
    /// answers: [`HttpConfig::public_origin`] when set, else the scheme and
    /// host a trusted proxy forwarded, else the connection's scheme and the
    /// `Host` header, validated as an origin (a `Host` that is not a plain
    /// `host[:port]` gives `None`). Set `public_origin` in production: the
    /// `Host` header is whatever the client wrote.
    pub fn origin(&self, config: &HttpConfig) -> Option<Origin> {
        own_origin(self.head(), config)
    }

    /// Who is calling: address (the peer, or the client a trusted proxy
    /// names; see [`HttpConfig::trusted_proxies`]) and user agent.
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

/// The client address: the peer, or the client a trusted proxy names.
pub(crate) fn client_ip(
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    config: &HttpConfig,
) -> Option<IpAddr> {
    crate::forwarded::resolve(headers, peer, &config.trusted_proxies).ip
}

/// Refuses a cookie-authenticated, state-changing request that does not
/// come from the app's own origin (CSRF): its `Origin` (or, without one,
/// its `Referer`) must be the same origin (scheme, host and port) as
/// [`HttpConfig::public_origin`], or as the request itself (see there), or
/// one of [`HttpConfig::allowed_origins`].
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
    let refused = || Problem::forbidden("cross-site request refused: origin not allowed");
    let source: Origin = source.parse().map_err(|_| refused())?;
    if config.allowed_origins.contains(&source) {
        return Ok(());
    }
    if own_origin(head, config).as_ref() == Some(&source) {
        Ok(())
    } else {
        Err(refused())
    }
}

/// The app's origin: configured, else the request's.
fn own_origin(head: RequestHead<'_>, config: &HttpConfig) -> Option<Origin> {
    match &config.public_origin {
        Some(origin) => Some(origin.clone()),
        None => request_origin(head, config),
    }
}

/// The origin a request was sent to, as far as it can be known: scheme and
/// host from a trusted proxy, else the connection and `Host` (HTTP/1.1) or
/// the URI's authority (HTTP/2).
fn request_origin(head: RequestHead<'_>, config: &HttpConfig) -> Option<Origin> {
    let forwarded = crate::forwarded::resolve(head.headers, head.peer, &config.trusted_proxies);
    let scheme = forwarded.proto.as_deref().unwrap_or(if head.tls {
        "https"
    } else {
        head.uri.scheme_str().unwrap_or("http")
    });
    let host = match forwarded.host.as_deref() {
        Some(host) => host,
        None => head
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| head.uri.authority().map(|a| a.as_str()))?,
    };
    Origin::from_parts(scheme, host).ok()
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
    // A key given twice would mean whatever the parser keeps (the last,
    // in serde_json): a parser differential. Refused at any depth, naming
    // where it is.
    let mut checker = serde_json::Deserializer::from_slice(body);
    if let Err(error) = serde_path_to_error::deserialize::<_, UniqueKeys>(&mut checker)
        && error.inner().is_data()
    {
        let path = error.path().to_string();
        let field = if path == "." { "body" } else { path.as_str() };
        return Err(Problem::invalid(field, error.inner().to_string()));
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

/// Any JSON document, accepted only if no object in it repeats a key.
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
            }
            map.next_value::<UniqueKeys>()?;
            seen.insert(key);
        }
        Ok(UniqueKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Lax`, on `path`, `Secure`
/// unless turned off, expiring after `max_age` seconds when given.
pub(crate) fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age: Option<i64>,
    secure: bool,
) -> String {
    let mut cookie = cookie::Cookie::build((name, value))
        .path(path)
        .http_only(true)
        .same_site(cookie::SameSite::Lax)
        .secure(secure);
    if let Some(seconds) = max_age {
        cookie = cookie.max_age(cookie::time::Duration::seconds(seconds));
    }
    cookie.build().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forwarded::{ForwardedHeader, TrustedProxies};
    use serde_json::Value;

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
            tls: false,
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
        // Duplicate keys, at the top or deep inside, whatever `T` is.
        let twice = request(
            Method::POST,
            &json,
            r#"{"email":"a@b.co","email":"c@d.co","roles":[]}"#,
        );
        let problem = twice.json::<Body>(1024).unwrap_err();
        assert_eq!(problem.status(), 422);
        assert!(
            problem.errors()[0]
                .message
                .contains("duplicate key `email`"),
            "{problem:?}"
        );
        let deep = request(
            Method::POST,
            &json,
            r#"{"statements":[{"effect":"allow"},{"effect":"allow","effect":"deny"}]}"#,
        );
        let problem = deep.json::<Value>(1024).unwrap_err();
        assert_eq!(problem.status(), 422);
        assert_eq!(problem.errors()[0].field, "statements[1]", "{problem:?}");
        assert!(problem.errors()[0].message.contains("`effect`"));
        let fine = request(Method::POST, &json, r#"{"a":{"x":1},"b":{"x":[{"x":1}]}}"#);
        assert!(fine.json::<Value>(1024).is_ok());
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
    fn set_cookie_headers() {
        let set = set_cookie("tenancy_access", "abc", "/", Some(900), true);
        let parsed = cookie::Cookie::parse(set.as_str()).unwrap();
        assert_eq!(parsed.name(), "tenancy_access");
        assert_eq!(parsed.value(), "abc");
        assert_eq!(parsed.path(), Some("/"));
        assert_eq!(parsed.http_only(), Some(true));
        assert_eq!(parsed.secure(), Some(true));
        assert_eq!(parsed.same_site(), Some(cookie::SameSite::Lax));
        assert_eq!(parsed.max_age(), Some(cookie::time::Duration::seconds(900)));
        let cleared = set_cookie("tenancy_refresh", "", "/auth", Some(0), false);
        assert!(
            cleared.contains("Max-Age=0") && !cleared.contains("Secure"),
            "{cleared}"
        );
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
        let config =
            HttpConfig::default().with_allowed_origin("https://app.example".parse().unwrap());
        let check = |r: &ApiRequest| check_origin(r.head(), &config);
        let same = request(
            Method::POST,
            &[("host", "api.example"), ("origin", "http://api.example")],
            "",
        );
        assert!(check(&same).is_ok());
        // Same host, other scheme or port: another origin.
        let https = request(
            Method::POST,
            &[("host", "api.example"), ("origin", "https://api.example")],
            "",
        );
        assert_eq!(check(&https).unwrap_err().status(), 403);
        let port = request(
            Method::POST,
            &[
                ("host", "api.example"),
                ("origin", "http://api.example:8080"),
            ],
            "",
        );
        assert!(check(&port).is_err());
        // Over TLS the https origin is the request's own.
        assert!(check(&https.clone().with_tls(true)).is_ok());
        assert!(check(&same.clone().with_tls(true)).is_err());
        let allowed = request(
            Method::POST,
            &[("host", "api.example"), ("origin", "https://app.example")],
            "",
        );
        assert!(check(&allowed).is_ok());
        let allowed_http = request(
            Method::POST,
            &[("host", "api.example"), ("origin", "http://app.example")],
            "",
        );
        assert!(check(&allowed_http).is_err());
        let referer = request(
            Method::DELETE,
            &[
                ("host", "api.example"),
                ("referer", "http://api.example/page?x"),
            ],
            "",
        );
        assert!(check(&referer).is_ok());
        let evil = request(
            Method::POST,
            &[("host", "api.example"), ("origin", "http://evil.example")],
            "",
        );
        assert_eq!(check(&evil).unwrap_err().status(), 403);
        let null = request(
            Method::POST,
            &[("host", "api.example"), ("origin", "null")],
            "",
        );
        assert!(check(&null).is_err());
        let bare = request(Method::PUT, &[("host", "api.example")], "");
        assert_eq!(check(&bare).unwrap_err().status(), 403);
        let read = request(Method::GET, &[], "");
        assert!(check(&read).is_ok());
        let mixed_case = request(
            Method::POST,
            &[("host", "API.example"), ("origin", "http://api.EXAMPLE")],
            "",
        );
        assert!(check(&mixed_case).is_ok());
        // HTTP/2: no `Host`, the authority (and scheme) are in the URI.
        let mut h2 = request(Method::POST, &[("origin", "https://api.example")], "");
        h2.uri = "https://api.example/x".parse().unwrap();
        assert!(check(&h2).is_ok());
        let mut h2_evil = request(Method::POST, &[("origin", "https://evil.example")], "");
        h2_evil.uri = "https://api.example/x".parse().unwrap();
        assert!(check(&h2_evil).is_err());
        let nowhere = request(Method::POST, &[("origin", "https://api.example")], "");
        assert!(check(&nowhere).is_err());
    }

    #[test]
    fn origin_behind_proxies_and_configured() {
        // The public origin, when set, is the only own origin.
        let public =
            HttpConfig::default().with_public_origin("https://app.example".parse().unwrap());
        let r = request(
            Method::POST,
            &[("host", "internal:8080"), ("origin", "https://app.example")],
            "",
        );
        assert!(check_origin(r.head(), &public).is_ok());
        let r = request(
            Method::POST,
            &[
                ("host", "internal:8080"),
                ("origin", "http://internal:8080"),
            ],
            "",
        );
        assert!(check_origin(r.head(), &public).is_err());
        // A TLS-terminating proxy that is trusted names the scheme and host.
        let proxied = HttpConfig::default()
            .with_trusted_proxies(TrustedProxies::count(1, ForwardedHeader::XForwardedFor));
        let r = request(
            Method::POST,
            &[
                ("host", "internal:8080"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "app.example"),
                ("origin", "https://app.example"),
            ],
            "",
        );
        assert!(check_origin(r.head(), &proxied).is_ok());
        // The same headers from an untrusted peer change nothing.
        assert!(check_origin(r.head(), &HttpConfig::default()).is_err());
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
        let one_proxy = HttpConfig::default()
            .with_trusted_proxies(TrustedProxies::count(1, ForwardedHeader::XForwardedFor));
        let client = r.client(&one_proxy);
        // The hop the proxy appended, not what the client wrote before it.
        assert_eq!(client.ip, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(client.user_agent.as_deref(), Some("curl/8"));
    }
}
