//! Web origins (RFC 6454) for the CSRF check: scheme, host and port, so
//! `https://app.example` and `http://app.example` are different origins.

use std::fmt;
use std::str::FromStr;

/// A web origin: scheme (`http` or `https`), host and port, with the
/// scheme's default port filled in. Parsed from an `Origin` header value,
/// the start of a `Referer`, or configuration.
///
/// ```
/// use tenancy_http::Origin;
///
/// let app: Origin = "https://App.Example".parse().unwrap();
/// assert_eq!(app, "https://app.example:443".parse().unwrap());
/// assert_ne!(app, "http://app.example".parse().unwrap());
/// assert!("null".parse::<Origin>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: Scheme,
    host: String,
    port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Scheme {
    Http,
    Https,
}

/// Text that is not an `http` or `https` origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an http(s) origin: {0:?}")]
pub struct InvalidOrigin(String);

impl Origin {
    /// The origin of a request received over `scheme` (`http`/`https`)
    /// for `authority` (`host[:port]`).
    pub fn from_parts(scheme: &str, authority: &str) -> Result<Self, InvalidOrigin> {
        format!("{scheme}://{authority}").parse()
    }

    /// Whether the origin is `https`.
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::Https
    }

    /// The host, lowercase (IPv6 addresses in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (the scheme's default when none was written).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The origin as the start of an absolute URL, the default port left
    /// out: `https://app.example`, `http://127.0.0.1:3000`.
    ///
    /// ```
    /// use tenancy_http::Origin;
    ///
    /// let app: Origin = "https://App.Example:443".parse().unwrap();
    /// assert_eq!(app.url_prefix(), "https://app.example");
    /// let local: Origin = "http://127.0.0.1:3000".parse().unwrap();
    /// assert_eq!(local.url_prefix(), "http://127.0.0.1:3000");
    /// ```
    pub fn url_prefix(&self) -> String {
        let (scheme, default_port) = match self.scheme {
            Scheme::Http => ("http", 80),
            Scheme::Https => ("https", 443),
        };
        if self.port == default_port {
            format!("{scheme}://{}", self.host)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for Origin {
    type Err = InvalidOrigin;

    /// Parses `scheme://host[:port]`, ignoring a path, query or fragment
    /// after it (as a `Referer` has); userinfo is refused.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidOrigin(text.chars().take(200).collect());
        let (scheme, rest) = text.split_once("://").ok_or_else(invalid)?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(invalid()),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority: http::uri::Authority = rest[..end].parse().map_err(|_| invalid())?;
        if authority.as_str().contains('@') || authority.host().is_empty() {
            return Err(invalid());
        }
        let default_port = match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        Ok(Self {
            scheme,
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(default_port),
        })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_scheme_host_and_port() {
        let parse = |s: &str| s.parse::<Origin>();
        assert_eq!(
            parse("https://a.example").unwrap(),
            parse("HTTPS://A.EXAMPLE:443").unwrap()
        );
        assert_eq!(
            parse("http://a.example").unwrap(),
            parse("http://a.example:80/x?y#z").unwrap()
        );
        assert_ne!(
            parse("https://a.example:8443").unwrap(),
            parse("https://a.example").unwrap()
        );
        assert_ne!(
            parse("http://a.example:443").unwrap(),
            parse("https://a.example").unwrap()
        );
        assert_eq!(parse("http://[::1]:3000").unwrap().host(), "[::1]");
        for bad in [
            "null",
            "a.example",
            "ftp://a.example",
            "https://",
            "https://u:p@a.example",
            "https://a b",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Origin::from_parts("https", "a.example")
                .unwrap()
                .to_string(),
            "https://a.example:443"
        );
    }
}
