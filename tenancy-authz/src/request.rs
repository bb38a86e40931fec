//! What a decision is about: the principal, the action, the resource and
//! the request context.

use std::sync::{Arc, LazyLock};

use tenancy_core::{ApiKeyId, RoleSet, TenantId, UserId};

use crate::permission::PermissionPattern;
use crate::value::{AttrKey, Attributes, Value};

/// How a principal authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PrincipalKind {
    /// A signed-in user acting through their membership.
    User,
    /// A machine caller with an API key: its scopes cap what its roles allow.
    ApiKey,
    /// Another kind of caller the host defines (a service account, a job).
    Service,
}

/// Who is asking: an id, the tenant it acts in, its roles there, for an API
/// key its scopes, and attributes conditions may read as `principal.*`.
///
/// Build one per request (or cache it with the session); building interns
/// nothing and checks nothing, so it is cheap.
#[derive(Debug, Clone)]
pub struct Principal {
    pub(crate) id: Arc<str>,
    pub(crate) kind: PrincipalKind,
    pub(crate) tenant_id: TenantId,
    pub(crate) roles: RoleSet,
    pub(crate) scopes: Option<Arc<[PermissionPattern]>>,
    pub(crate) attributes: Attributes,
}

impl Principal {
    /// A signed-in user with their membership's roles in `tenant_id`.
    pub fn user(id: UserId, tenant_id: TenantId, roles: RoleSet) -> Self {
        Self::new(PrincipalKind::User, id.to_string(), tenant_id, roles)
    }

    /// An API key acting in `tenant_id`. `roles` are the roles of the
    /// member who minted it (re-read at request time, so demoting the
    /// member demotes the key); `scopes` cap them: the key is allowed only
    /// what both its roles and its scopes allow.
    pub fn api_key(
        id: ApiKeyId,
        tenant_id: TenantId,
        roles: RoleSet,
        scopes: impl IntoIterator<Item = PermissionPattern>,
    ) -> Self {
        let mut principal = Self::new(PrincipalKind::ApiKey, id.to_string(), tenant_id, roles);
        principal.scopes = Some(scopes.into_iter().collect());
        principal
    }

    /// Any principal, with the id conditions see as `principal.id`.
    pub fn new(
        kind: PrincipalKind,
        id: impl Into<Arc<str>>,
        tenant_id: TenantId,
        roles: RoleSet,
    ) -> Self {
        Self {
            id: id.into(),
            kind,
            tenant_id,
            roles,
            scopes: None,
            attributes: Attributes::new(),
        }
    }

    /// Caps the principal to `scopes` (as for an API key).
    pub fn with_scopes(mut self, scopes: impl IntoIterator<Item = PermissionPattern>) -> Self {
        self.scopes = Some(scopes.into_iter().collect());
        self
    }

    /// Replaces the attributes.
    pub fn with_attributes(mut self, attributes: Attributes) -> Self {
        self.attributes = attributes;
        self
    }

    /// Sets one attribute.
    pub fn with_attribute(mut self, key: AttrKey, value: impl Into<Value>) -> Self {
        self.attributes.insert(key, value);
        self
    }

    /// The id, as conditions see it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How it authenticated.
    pub fn kind(&self) -> PrincipalKind {
        self.kind
    }

    /// The tenant it acts in.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    /// Its roles in that tenant.
    pub fn roles(&self) -> &RoleSet {
        &self.roles
    }

    /// Its scopes, if capped.
    pub fn scopes(&self) -> Option<&[PermissionPattern]> {
        self.scopes.as_deref()
    }

    /// Its attributes.
    pub fn attributes(&self) -> &Attributes {
        &self.attributes
    }
}

/// What is acted on: a type (such as `project`), optionally an id, the
/// tenant that owns it, and attributes conditions may read as `resource.*`.
///
/// Give the owning tenant whenever the resource was loaded from storage: a
/// resource of another tenant is then denied before any role or policy is
/// consulted.
#[derive(Debug, Clone)]
pub struct Resource {
    pub(crate) resource_type: Arc<str>,
    pub(crate) id: Option<Arc<str>>,
    pub(crate) tenant_id: Option<TenantId>,
    pub(crate) attributes: Attributes,
}

impl Resource {
    /// A resource of type `resource_type` (no id: a collection, or a new one).
    pub fn new(resource_type: impl Into<Arc<str>>) -> Self {
        Self {
            resource_type: resource_type.into(),
            id: None,
            tenant_id: None,
            attributes: Attributes::new(),
        }
    }

    /// Sets the id, seen as `resource.id`.
    pub fn with_id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the owning tenant, seen as `resource.tenant_id`.
    pub fn in_tenant(mut self, tenant_id: TenantId) -> Self {
        self.tenant_id = Some(tenant_id);
        self
    }

    /// Replaces the attributes.
    pub fn with_attributes(mut self, attributes: Attributes) -> Self {
        self.attributes = attributes;
        self
    }

    /// Sets one attribute.
    pub fn with_attribute(mut self, key: AttrKey, value: impl Into<Value>) -> Self {
        self.attributes.insert(key, value);
        self
    }

    /// The type.
    pub fn resource_type(&self) -> &str {
        &self.resource_type
    }

    /// The id.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The owning tenant.
    pub fn tenant_id(&self) -> Option<TenantId> {
        self.tenant_id
    }

    /// The attributes.
    pub fn attributes(&self) -> &Attributes {
        &self.attributes
    }
}

static EMPTY: LazyLock<Attributes> = LazyLock::new(Attributes::new);

/// One question: may `principal` do `action` on `resource`, given `context`?
/// Borrows everything, so building one costs nothing.
#[derive(Debug, Clone, Copy)]
pub struct AuthzRequest<'a> {
    pub(crate) principal: &'a Principal,
    pub(crate) action: &'a str,
    pub(crate) resource: &'a Resource,
    pub(crate) context: &'a Attributes,
}

impl<'a> AuthzRequest<'a> {
    /// A request with an empty context.
    pub fn new(principal: &'a Principal, action: &'a str, resource: &'a Resource) -> Self {
        Self {
            principal,
            action,
            resource,
            context: &EMPTY,
        }
    }

    /// Sets the context, seen as `context.*` (client address, time, …).
    pub fn with_context(mut self, context: &'a Attributes) -> Self {
        self.context = context;
        self
    }

    /// The principal.
    pub fn principal(&self) -> &'a Principal {
        self.principal
    }

    /// The action, a permission such as `projects:read`.
    pub fn action(&self) -> &'a str {
        self.action
    }

    /// The resource.
    pub fn resource(&self) -> &'a Resource {
        self.resource
    }

    /// The context.
    pub fn context(&self) -> &'a Attributes {
        self.context
    }
}
