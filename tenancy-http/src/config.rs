//! Settings of the HTTP surface.

use http::HeaderName;

use crate::forwarded::TrustedProxies;
use crate::origin::Origin;

/// Where a request's tenant comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TenantSource {
    /// The `tid` claim of the access token, or the API key's tenant (default).
    Token,
    /// A header carrying the tenant id, such as `X-Tenant-Id`.
    Header(HeaderName),
    /// The first label of the `Host` under `base` (`acme.app.example` under
    /// `app.example`), matched against tenant slugs.
    Subdomain {
        /// The domain tenants are subdomains of.
        base: String,
    },
    /// A path segment (0-based) carrying the tenant id or slug, such as
    /// `/t/{tenant}/…` with index 1.
    PathSegment(usize),
}

/// Cookies for browser apps.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CookieConfig {
    /// Whether login also sets the access and refresh tokens as cookies
    /// when the client asks for it (`"cookies": true` in the login body).
    pub enabled: bool,
    /// Sets `Secure` (default true; turn off only for `http://localhost`).
    pub secure: bool,
    /// The access-token cookie (`Path=/`).
    pub access_name: String,
    /// The refresh-token cookie, sent only under [`Self::refresh_path`].
    pub refresh_name: String,
    /// The path the refresh cookie is limited to.
    pub refresh_path: String,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            secure: true,
            access_name: "tenancy_access".into(),
            refresh_name: "tenancy_refresh".into(),
            refresh_path: "/auth".into(),
        }
    }
}

impl CookieConfig {
    /// Whether login may set cookies (default true).
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Whether cookies are `Secure` (default true).
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// The cookies' names.
    pub fn with_names(mut self, access: impl Into<String>, refresh: impl Into<String>) -> Self {
        self.access_name = access.into();
        self.refresh_name = refresh.into();
        self
    }

    /// The path the refresh cookie is limited to (default `/auth`).
    pub fn with_refresh_path(mut self, path: impl Into<String>) -> Self {
        self.refresh_path = path.into();
        self
    }
}

/// Settings of the HTTP pipeline and routes: start from
/// [`HttpConfig::default`] and change what you need with the `with_*`
/// setters (or the public fields).
///
/// ```
/// use tenancy_http::{ForwardedHeader, HttpConfig, TrustedProxies};
///
/// let config = HttpConfig::default()
///     .with_public_origin("https://app.example".parse().unwrap())
///     .with_trusted_proxies(TrustedProxies::count(1, ForwardedHeader::XForwardedFor));
/// assert!(config.public_origin.is_some());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpConfig {
    /// The realm named in `WWW-Authenticate` (default `tenancy`).
    pub realm: String,
    /// Where the tenant comes from (default: the token).
    pub tenant_source: TenantSource,
    /// Cookies for browser apps.
    pub cookies: CookieConfig,
    /// The app's own origin (scheme, host, port) as browsers see it, such as
    /// `https://app.example`. Cookie-authenticated state-changing requests
    /// must come from it (or from [`Self::allowed_origins`]). Unset, the
    /// origin is derived from the request: the scheme from a trusted proxy's
    /// `Forwarded: proto=` / `X-Forwarded-Proto`, else `https` when the
    /// integration knows the connection is TLS, else `http`; the host from a
    /// trusted proxy, else `Host` (or the HTTP/2 authority). Set it when the
    /// app terminates TLS itself under axum, which cannot tell.
    pub public_origin: Option<Origin>,
    /// Other origins allowed to send cookie-authenticated state-changing
    /// requests, such as a separate front-end at `https://app.example`.
    pub allowed_origins: Vec<Origin>,
    /// Largest request body accepted, in bytes (default 64 KiB).
    pub body_limit: usize,
    /// Largest audit export answered, in bytes (default 16 MiB): the export
    /// is built in memory, so a bigger one answers `422 export-too-large`
    /// and the caller narrows it with `since`/`until` or `action`.
    pub export_limit: usize,
    /// The reverse proxies whose forwarding headers are believed, for the
    /// client address (login throttles, audit log) and the public origin
    /// (CSRF check). Default: none, the client is the socket's peer.
    pub trusted_proxies: TrustedProxies,
    /// How long the pipeline caches a tenant's status and a member's roles
    /// and status (default 5 s). Changes made through this process's routes
    /// apply at once; so do changes committed by any process when the
    /// `Tenancy` comes from [`Tenancy::postgres`](crate::Tenancy::postgres),
    /// which listens for them. Otherwise (your own `Directory` calls on the
    /// in-memory stores, Postgres stores assembled with `Tenancy::new`
    /// unless you relay `listen_directory_changes` to the `forget_*`
    /// methods) they apply within this long.
    pub tenant_status_ttl: std::time::Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            realm: "tenancy".into(),
            tenant_source: TenantSource::Token,
            cookies: CookieConfig::default(),
            public_origin: None,
            allowed_origins: Vec::new(),
            body_limit: 64 * 1024,
            export_limit: 16 * 1024 * 1024,
            trusted_proxies: TrustedProxies::None,
            tenant_status_ttl: std::time::Duration::from_secs(5),
        }
    }
}

impl HttpConfig {
    /// The realm named in `WWW-Authenticate`.
    pub fn with_realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        self
    }

    /// Where the tenant comes from.
    pub fn with_tenant_source(mut self, source: TenantSource) -> Self {
        self.tenant_source = source;
        self
    }

    /// Cookie settings.
    pub fn with_cookies(mut self, cookies: CookieConfig) -> Self {
        self.cookies = cookies;
        self
    }

    /// The app's public origin, for the CSRF check.
    pub fn with_public_origin(mut self, origin: Origin) -> Self {
        self.public_origin = Some(origin);
        self
    }

    /// Adds an origin allowed to send cookie-authenticated writes.
    pub fn with_allowed_origin(mut self, origin: Origin) -> Self {
        self.allowed_origins.push(origin);
        self
    }

    /// The largest request body accepted, in bytes.
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The largest audit export answered, in bytes.
    pub fn with_export_limit(mut self, bytes: usize) -> Self {
        self.export_limit = bytes;
        self
    }

    /// The proxies whose forwarding headers are believed.
    pub fn with_trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// How long tenant statuses and memberships are cached.
    pub fn with_tenant_status_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.tenant_status_ttl = ttl;
        self
    }
}
