//! Error types shared by every store and service in this crate.

use std::fmt;

/// A boxed error from a storage backend, kept as the `source` of
/// [`StoreError::Unavailable`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Input that breaks a validation rule. Each rule has its own variant so a
/// caller (or an HTTP layer) can point at the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// A slug shorter than 3 or longer than 63 characters.
    #[error("slug must be 3 to 63 characters long, got {len}")]
    SlugLength {
        /// Length of the rejected slug, in characters.
        len: usize,
    },
    /// A slug containing something other than `a-z`, `0-9` and `-`.
    #[error("slug may contain only lowercase letters a-z, digits and '-', found {found:?}")]
    SlugCharacter {
        /// The first character that is not allowed.
        found: char,
    },
    /// A slug starting or ending with `-`.
    #[error("slug may not start or end with '-'")]
    SlugHyphenEdge,
    /// A slug with `--` as third and fourth characters: DNS reserves such
    /// labels for encodings (`xn--` is punycode).
    #[error(
        "slug may not have '--' as third and fourth characters (reserved for encoded names such as xn--)"
    )]
    SlugReservedHyphens,
    /// A slug on the reserved list (see [`crate::RESERVED_SLUGS`]).
    #[error("slug {slug:?} is reserved")]
    SlugReserved {
        /// The reserved slug.
        slug: String,
    },
    /// A text field that is empty after trimming, or too long.
    #[error("{field} must be 1 to {max} characters after trimming, got {len}")]
    TextLength {
        /// The field, such as `"tenant name"`.
        field: &'static str,
        /// The largest accepted length, in characters.
        max: usize,
        /// Length of the rejected value after trimming, in characters.
        len: usize,
    },
    /// A text field containing a control character (including NUL).
    #[error("{field} may not contain control characters")]
    ControlCharacter {
        /// The field, such as `"display name"`.
        field: &'static str,
    },
    /// An email address that is not a plain `local@domain.tld` address.
    #[error("invalid email address: {reason}")]
    Email {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A role name that is empty, too long, or has characters outside `[a-z0-9_:-]`.
    #[error("role name {name:?} must be 1 to 64 characters of a-z, 0-9, '_', ':' and '-'")]
    RoleName {
        /// The rejected name.
        name: String,
    },
    /// A membership or invitation without any role.
    #[error("at least one role is required")]
    NoRoles,
    /// More roles than a membership may hold.
    #[error("at most {max} roles are allowed, got {len}")]
    TooManyRoles {
        /// The largest accepted number of roles.
        max: usize,
        /// How many were given.
        len: usize,
    },
    /// Metadata that is not a JSON object.
    #[error("{field} must be a JSON object")]
    MetadataNotObject {
        /// The field, such as `"tenant metadata"`.
        field: &'static str,
    },
    /// Metadata whose JSON encoding is larger than allowed.
    #[error("{field} must be at most {max} bytes as JSON, got {len}")]
    MetadataTooLarge {
        /// The field, such as `"audit metadata"`.
        field: &'static str,
        /// The largest accepted size in bytes.
        max: usize,
        /// Size of the rejected value in bytes.
        len: usize,
    },
    /// Metadata containing a NUL character, which Postgres cannot store.
    #[error("{field} may not contain NUL characters")]
    MetadataNul {
        /// The field, such as `"tenant metadata"`.
        field: &'static str,
    },
    /// An audit action that is not a dotted lowercase name such as `member.role_changed`.
    #[error(
        "audit action {action:?} must be 2 or more dot-separated segments of a-z, 0-9 and '_', at most 128 characters"
    )]
    AuditAction {
        /// The rejected action.
        action: String,
    },
    /// An audit target type that is not 1 to 64 characters of `[a-z0-9_]`.
    #[error("audit target type {target_type:?} must be 1 to 64 characters of a-z, 0-9 and '_'")]
    TargetType {
        /// The rejected target type.
        target_type: String,
    },
    /// An event type that is not a dotted lowercase name such as `member.role_changed`.
    #[error(
        "event type {event_type:?} must be 2 or more dot-separated segments of a-z, 0-9 and '_', at most 128 characters"
    )]
    EventType {
        /// The rejected type.
        event_type: String,
    },
    /// An event schema version of 0 (versions start at 1).
    #[error("event version must be 1 or more")]
    EventVersion,
    /// An acknowledgement naming an event number outside the claimed batch.
    #[error("event number {seq} is outside the claimed batch")]
    EventSeq {
        /// The rejected number.
        seq: u64,
    },
    /// An outbox consumer name that is not 1 to 64 characters of `[a-z0-9_.-]`.
    #[error("consumer name {name:?} must be 1 to 64 characters of a-z, 0-9, '_', '-' and '.'")]
    ConsumerName {
        /// The rejected name.
        name: String,
    },
    /// A page size outside 1..=1000.
    #[error("page size must be between 1 and 1000, got {size}")]
    PageSize {
        /// The rejected size.
        size: usize,
    },
    /// A pagination cursor that this list did not issue.
    #[error("invalid pagination cursor")]
    Cursor,
    /// A time range whose start is after its end.
    #[error("time range starts after it ends")]
    TimeRange,
    /// A permission scope that is not 1 to 128 characters of `[a-z0-9_.:*-]`.
    #[error("scope {scope:?} must be 1 to 128 characters of a-z, 0-9, '_', '-', '.', ':' and '*'")]
    Scope {
        /// The rejected scope.
        scope: String,
    },
    /// An API key prefix that is not 1 to 32 characters of `[a-z0-9_]` starting with a letter.
    #[error(
        "api key prefix {prefix:?} must be 1 to 32 characters of a-z, 0-9 and '_', starting with a letter"
    )]
    KeyPrefix {
        /// The rejected prefix.
        prefix: String,
    },
}

/// The kind of record an error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Entity {
    /// A tenant.
    Tenant,
    /// A user.
    User,
    /// A membership.
    Membership,
    /// An invitation.
    Invitation,
    /// An audit event.
    AuditEvent,
    /// A login session.
    Session,
    /// An API key.
    ApiKey,
    /// A token-signing key.
    SigningKey,
    /// An outbox event.
    Event,
    /// An OAuth client registered with the authorization server.
    OAuthClient,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Tenant => "tenant",
            Entity::User => "user",
            Entity::Membership => "membership",
            Entity::Invitation => "invitation",
            Entity::AuditEvent => "audit event",
            Entity::Session => "session",
            Entity::ApiKey => "api key",
            Entity::SigningKey => "signing key",
            Entity::Event => "event",
            Entity::OAuthClient => "oauth client",
        })
    }
}

/// Which uniqueness rule a write broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Conflict {
    /// A record with the same id already exists.
    Id(Entity),
    /// Another tenant has this slug (slugs of deleted tenants stay taken).
    TenantSlug,
    /// Another user has this email address (compared case-insensitively).
    UserEmail,
    /// The user is already a member of this tenant.
    Membership,
    /// A pending invitation for this email already exists in this tenant.
    PendingInvitation,
    /// Another signing key became active at the same time.
    ActiveSigningKey,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conflict::Id(entity) => write!(f, "a {entity} with this id already exists"),
            Conflict::TenantSlug => f.write_str("tenant slug is already taken"),
            Conflict::UserEmail => f.write_str("a user with this email address already exists"),
            Conflict::Membership => f.write_str("user is already a member of this tenant"),
            Conflict::PendingInvitation => {
                f.write_str("a pending invitation for this email address already exists")
            }
            Conflict::ActiveSigningKey => f.write_str("another signing key is already active"),
        }
    }
}

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The record does not exist (or belongs to another tenant, which the
    /// caller must not be able to tell apart).
    #[error("{0} not found")]
    NotFound(Entity),
    /// A uniqueness rule was broken.
    #[error("conflict: {0}")]
    Conflict(Conflict),
    /// The input broke a validation rule.
    #[error(transparent)]
    InvalidInput(#[from] ValidationError),
    /// A write of this transaction failed earlier (for example, with a
    /// conflict): every later call and the commit are refused, and the
    /// transaction can only be dropped, which rolls it back. Postgres
    /// behaves this way, and every backend must.
    #[error("transaction aborted by an earlier failed operation")]
    TransactionAborted,
    /// A transaction was opened by a task that already holds one on a
    /// backend that serializes transactions: waiting would deadlock.
    #[error("a transaction is already open in this task")]
    NestedTransaction,
    /// Stored data does not decode into a valid record: it was changed
    /// outside tenancy. Retrying will not help.
    #[error("stored data is corrupt")]
    Corrupt(#[source] BoxError),
    /// The backend could not be reached or failed; retrying may help.
    #[error("storage backend unavailable")]
    Unavailable(#[source] BoxError),
}

impl StoreError {
    /// Wraps a backend failure.
    pub fn unavailable(source: impl Into<BoxError>) -> Self {
        StoreError::Unavailable(source.into())
    }
}
