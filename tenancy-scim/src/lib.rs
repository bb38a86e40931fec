//! Inbound SCIM 2.0 provisioning for the tenancy SDK (RFC 7643 schema,
//! RFC 7644 protocol): a tenant's identity provider (Okta, Entra ID,
//! Google Workspace, JumpCloud) creates, updates and deprovisions the
//! tenant's members through `/scim/v2`.
//!
//! - [`Scim`] is a [`tenancy_http::Module`]: add it to the builder and
//!   both framework integrations mount its routes.
//! - Tokens: `POST /scim/tokens` (permission `scim:manage`) issues a
//!   per-tenant bearer token, shown once and kept as a SHA-256 hash;
//!   `GET /scim/tokens` lists, `DELETE /scim/tokens/{id}` revokes. The
//!   `/scim/v2` routes accept only such a token, and it alone decides the
//!   tenant.
//! - Users map to a user account plus its membership in the token's
//!   tenant: an account that exists already (another tenant, an earlier
//!   invitation) is linked, not copied; what the identity provider says
//!   about the person is kept per tenant ([`store::UserRecord`]).
//! - `active: false` suspends (or, per the tenant's setting, whose default
//!   is [`ScimConfig::deprovision`], removes) the membership, which ends
//!   every session and refresh family of the user in the tenant at once,
//!   and revokes the API keys they minted; `DELETE` removes the membership. Every change goes through
//!   the directory's workflows, audited with the SCIM token as actor.
//! - Groups (`/scim/v2/Groups`) hold Users of the same tenant; deleting a
//!   User removes it from its groups. A tenant maps groups (by
//!   `displayName`) to roles with `PUT /scim/settings` ([`ScimSettings`]):
//!   a member's roles are the union of their mapped groups' roles, or
//!   [`ScimConfig::default_roles`] in none, changed through
//!   [`tenancy_core::Directory::change_roles`]; a change that would leave
//!   the tenant without an active owner is refused before anything is
//!   written. Mapping a group to `owner` needs
//!   [`ScimConfig::allow_owner_mapping`]: without it, whoever administers
//!   the identity provider could make themselves owner.
//! - Per-tenant settings ([`Scim::tenant_settings`],
//!   [`Scim::update_settings`], `GET`/`PUT /scim/settings` with
//!   `scim:manage`): the deprovisioning mode and the group → role mapping.
//! - [`filter`] parses the RFC 7644 filter grammar and PATCH paths.
//!
//! Features: `memory` (default) and `postgres` stores, `testkit` (the store
//! conformance suite and the HTTP scenarios).
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
pub mod filter;
mod groups;
mod module;
mod resource;
mod routes;
mod schema;
mod settings;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::{SCIM_JSON, ScimError, ScimStoreError, ScimType};
pub use groups::MAX_MEMBERS_PER_REQUEST;
pub use module::{Deprovision, IssuedToken, Scim, ScimConfig, TOKEN_PREFIX, actions};
pub use routes::BASE_PATH;
pub use schema::{
    ENTERPRISE_SCHEMA, ERROR, GROUP_SCHEMA, GroupCaseRules, LIST_RESPONSE, PATCH_OP, USER_SCHEMA,
    UserCaseRules,
};
pub use settings::{MAX_GROUP_ROLES, SETTINGS_CHANGED, ScimSettings};
pub use store::{GroupRecord, GroupRole, ScimStore, ScimToken, TenantSettings, UserRecord};
