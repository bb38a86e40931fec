//! The foundation of the tenancy SDK: tenants, users, memberships,
//! invitations and a tamper-evident audit log, with the store traits every
//! storage backend implements and the [`Directory`] workflows built on them.
//!
//! - Records: [`Tenant`], [`User`], [`Membership`], [`Invitation`],
//!   [`AuditEvent`], each field validated by its type ([`Slug`], [`Email`],
//!   [`RoleName`], …) so invalid values cannot be built.
//! - Stores: [`TenantStore`], [`UserStore`], [`MembershipStore`],
//!   [`InvitationStore`] and [`AuditLog`], object-safe and `Send + Sync`,
//!   implemented by every [`Backend`]. Errors are [`StoreError`] with one
//!   variant per thing a caller acts on.
//! - Workflows: [`Directory`] creates tenants with their owner, invites and
//!   admits members, changes roles, removes members, suspends and deletes
//!   tenants, each in one transaction together with its audit event.
//! - Idempotency keys: [`IdempotencyStore`] (memory and Postgres) keeps
//!   the first response of a keyed request for replay; see [`idempotency`].
//! - Outbox: [`Outbox`] appends an [`Event`] in the transaction of the
//!   change it reports, and [`EventFeed`] lets relays deliver each tenant's
//!   stream in order; see [`outbox`].
//! - Audit: per-tenant hash chains, [`AuditLog::verify_chain`], filtered
//!   queries and [`audit::export`] as JSON lines or CSV.
//!
//! # Features
//!
//! - `memory` (default): [`MemoryBackend`], everything in process memory.
//! - `postgres`: [`postgres::PgBackend`] over sqlx, with embedded migrations
//!   and row-level security, plus helpers to give host tables the same
//!   tenant isolation.
//! - `testkit`: [`testkit`], the conformance suites a backend must pass.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod audit;
mod cache;
mod clock;
mod directory;
mod error;
mod grants;
mod id;
pub mod idempotency;
mod invitation;
mod membership;
#[cfg(feature = "memory")]
mod memory;
pub mod net;
pub mod outbox;
mod page;
#[cfg(feature = "postgres")]
pub mod postgres;
mod scope;
mod seats;
mod store;
mod tenant;
#[cfg(feature = "testkit")]
pub mod testkit;
mod text;
mod user;

pub use audit::{
    ActionFilter, Actor, AuditAction, AuditContext, AuditEvent, AuditQuery, BrokenLink,
    BrokenReason, ChainEntry, ChainHash, ChainHead, ChainReport, ChainVerifier, ExportFormat,
    NewAuditEvent, Target, TargetType,
};
pub use cache::{CacheConfig, CachingStore, DirectoryChange};
pub use clock::{Clock, ManualClock, SystemClock, truncate_to_micros};
pub use directory::{
    Acceptance, Acceptor, CreatedTenant, Directory, DirectoryError, IssuedInvitation, Owner,
    Provisioned, actions,
};
pub use error::{BoxError, Conflict, Entity, StoreError, ValidationError};
pub use grants::{GrantCheck, Grantor};
pub use id::{
    ApiKeyId, AuditEventId, EventId, IdParseError, InvitationId, MembershipId, OAuthClientId,
    ScimTokenId, SessionId, TenantId, UserId,
};
pub use idempotency::{
    Claim, Fingerprint, IdempotencyKey, IdempotencyScope, IdempotencyStore, InvalidIdempotencyKey,
    LeaseToken, Lifetimes, MemoryIdempotencyStore, StoredResponse,
};
pub use invitation::{Invitation, InvitationStatus, InvitationToken, MalformedToken, TokenHash};
pub use membership::{Member, Membership, MembershipStatus, RoleName, RoleSet, UserTenant};
#[cfg(feature = "memory")]
pub use memory::MemoryBackend;
pub use outbox::{
    ClaimedEvents, ConsumerName, Event, EventFeed, EventType, NewEvent, Outbox, ReplayFrom,
};
pub use page::{Cursor, Page, PageRequest, PageSize};
pub use scope::TenantScope;
pub use seats::{Seats, active_members};
pub use store::{
    AuditLog, Backend, InvitationStore, MembershipStore, TenantStore, Transaction, UserStore,
};
pub use tenant::{
    NewTenant, RESERVED_SLUGS, Slug, Tenant, TenantName, TenantStatus, TenantUpdate, UnknownStatus,
};
pub use text::Metadata;
pub use user::{DisplayName, Email, NewUser, User, UserStatus};
