//! Settings of the HTTP surface.

use http::HeaderName;

/// Where a request's tenant comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Settings of the HTTP pipeline and routes.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The realm named in `WWW-Authenticate` (default `tenancy`).
    pub realm: String,
    /// Where the tenant comes from (default: the token).
    pub tenant_source: TenantSource,
    /// Cookies for browser apps.
    pub cookies: CookieConfig,
    /// Origins allowed to send cookie-authenticated state-changing requests
    /// (besides the request's own host), such as `https://app.example`.
    pub allowed_origins: Vec<String>,
    /// Largest request body accepted, in bytes (default 64 KiB).
    pub body_limit: usize,
    /// Largest audit export answered, in bytes (default 16 MiB): the export
    /// is built in memory, so a bigger one answers `422 export-too-large`
    /// and the caller narrows it with `since`/`until` or `action`.
    pub export_limit: usize,
    /// Whether to take the client address from `X-Forwarded-For` (only
    /// behind a proxy that sets it; default false).
    pub trust_forwarded_for: bool,
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
            allowed_origins: Vec::new(),
            body_limit: 64 * 1024,
            export_limit: 16 * 1024 * 1024,
            trust_forwarded_for: false,
            tenant_status_ttl: std::time::Duration::from_secs(5),
        }
    }
}
