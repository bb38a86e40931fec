//! The tamper-evident, append-only audit log.
//!
//! Each tenant has its own chain of events. Event `n` carries the hash of
//! event `n - 1` (`prev_hash`) and its own `hash`, a SHA-256 over a canonical
//! encoding of every field, so editing, inserting or deleting an event breaks
//! the chain where it happened. [`crate::AuditLog::verify_chain`] finds the
//! first broken link. [`export`] writes events as JSON lines or CSV.

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::clock::truncate_to_micros;
use crate::error::{StoreError, ValidationError};
use crate::id::{ApiKeyId, AuditEventId, OAuthClientId, ScimTokenId, TenantId, UserId};
use crate::page::{PageRequest, PageSize};
use crate::store::AuditLog;
use crate::text::{Metadata, bounded_text};

/// Who performed an audited action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Actor {
    /// A signed-in user.
    User(UserId),
    /// A machine caller holding an API key.
    ApiKey(ApiKeyId),
    /// The host application itself (jobs, webhooks, migrations).
    System,
    /// A tenant's identity provider, through a SCIM provisioning token.
    ScimToken(ScimTokenId),
    /// A machine client of the SDK's authorization server, through the
    /// OAuth `client_credentials` grant.
    OAuthClient(OAuthClientId),
}

impl Actor {
    /// The lowercase kind used in storage: `user`, `api_key`, `system` or
    /// `scim_token`.
    pub const fn kind(&self) -> &'static str {
        match self {
            Actor::User(_) => "user",
            Actor::ApiKey(_) => "api_key",
            Actor::System => "system",
            Actor::ScimToken(_) => "scim_token",
            Actor::OAuthClient(_) => "oauth_client",
        }
    }

    /// The id of the user, API key or SCIM token; `None` for [`Actor::System`].
    pub fn id(&self) -> Option<uuid::Uuid> {
        match self {
            Actor::User(id) => Some(id.as_uuid()),
            Actor::ApiKey(id) => Some(id.as_uuid()),
            Actor::ScimToken(id) => Some(id.as_uuid()),
            Actor::OAuthClient(id) => Some(id.as_uuid()),
            Actor::System => None,
        }
    }

    /// Rebuilds an actor from its stored kind and id.
    pub fn from_parts(kind: &str, id: Option<uuid::Uuid>) -> Option<Self> {
        match (kind, id) {
            ("user", Some(id)) => Some(Actor::User(UserId::from_uuid(id))),
            ("api_key", Some(id)) => Some(Actor::ApiKey(ApiKeyId::from_uuid(id))),
            ("system", None) => Some(Actor::System),
            ("scim_token", Some(id)) => Some(Actor::ScimToken(ScimTokenId::from_uuid(id))),
            ("oauth_client", Some(id)) => Some(Actor::OAuthClient(OAuthClientId::from_uuid(id))),
            _ => None,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User(id) => write!(f, "user:{id}"),
            Actor::ApiKey(id) => write!(f, "api_key:{id}"),
            Actor::System => f.write_str("system"),
            Actor::ScimToken(id) => write!(f, "scim_token:{id}"),
            Actor::OAuthClient(id) => write!(f, "oauth_client:{id}"),
        }
    }
}

/// What happened: two or more dot-separated segments of `a-z`, `0-9` and
/// `_`, such as `member.role_changed`; at most 128 characters.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AuditAction(String);

impl AuditAction {
    /// Validates an action name.
    pub fn new(raw: impl Into<String>) -> Result<Self, ValidationError> {
        let raw = raw.into();
        let segment_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        if raw.len() <= 128 && raw.split('.').count() >= 2 && raw.split('.').all(segment_ok) {
            Ok(Self(raw))
        } else {
            Err(ValidationError::AuditAction { action: raw })
        }
    }

    /// The action text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl TryFrom<String> for AuditAction {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<AuditAction> for String {
    fn from(action: AuditAction) -> Self {
        action.0
    }
}

impl FromStr for AuditAction {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// The kind of thing an event is about, such as `membership` or `tenant`:
/// 1 to 64 characters of `a-z`, `0-9` and `_`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TargetType(String);

impl TargetType {
    /// Validates a target type.
    pub fn new(raw: impl Into<String>) -> Result<Self, ValidationError> {
        let raw = raw.into();
        if (1..=64).contains(&raw.len())
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            Ok(Self(raw))
        } else {
            Err(ValidationError::TargetType { target_type: raw })
        }
    }

    /// The type text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TargetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TargetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl TryFrom<String> for TargetType {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<TargetType> for String {
    fn from(target_type: TargetType) -> Self {
        target_type.0
    }
}

/// What an event is about: a type and the id of one thing of that type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    /// The kind of thing.
    #[serde(rename = "type")]
    pub target_type: TargetType,
    /// Its id: 1 to 128 characters, no control characters.
    pub id: String,
}

impl Target {
    /// Longest accepted id, in characters.
    pub const MAX_ID_CHARS: usize = 128;

    /// Validates a target.
    pub fn new(target_type: &str, id: impl fmt::Display) -> Result<Self, ValidationError> {
        Ok(Self {
            target_type: TargetType::new(target_type)?,
            id: bounded_text("audit target id", &id.to_string(), Self::MAX_ID_CHARS)?,
        })
    }
}

/// Facts about the request behind a change, recorded with its audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditContext {
    /// Who acted.
    pub actor: Actor,
    /// The client's address, if known.
    pub ip: Option<IpAddr>,
    /// The client's `User-Agent`, if known (see [`AuditContext::with_user_agent`]).
    pub user_agent: Option<String>,
}

impl AuditContext {
    /// Longest user agent kept, in characters.
    pub const MAX_USER_AGENT_CHARS: usize = 512;

    /// A context for `actor` with no request details.
    pub fn new(actor: Actor) -> Self {
        Self {
            actor,
            ip: None,
            user_agent: None,
        }
    }

    /// The host application acting on its own.
    pub fn system() -> Self {
        Self::new(Actor::System)
    }

    /// A signed-in user acting.
    pub fn user(id: UserId) -> Self {
        Self::new(Actor::User(id))
    }

    /// Records the client address.
    pub fn with_ip(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }

    /// Records the client's user agent. Headers are client-controlled, so
    /// control characters are dropped and the text is cut to 512 characters
    /// rather than failing the request; an empty result records nothing.
    pub fn with_user_agent(mut self, user_agent: &str) -> Self {
        let cleaned: String = user_agent
            .trim()
            .chars()
            .filter(|c| !c.is_control())
            .take(Self::MAX_USER_AGENT_CHARS)
            .collect();
        let cleaned = cleaned.trim_end();
        self.user_agent = (!cleaned.is_empty()).then(|| cleaned.to_owned());
        self
    }
}

/// An event about to be appended. The store adds its sequence number and hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEvent {
    /// Its id.
    pub id: AuditEventId,
    /// Who acted.
    pub actor: Actor,
    /// What happened.
    pub action: AuditAction,
    /// What it happened to.
    pub target: Target,
    /// Details, such as the roles before and after a change.
    pub metadata: Metadata,
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// When it happened, to the microsecond.
    pub occurred_at: OffsetDateTime,
}

impl NewAuditEvent {
    /// An event from a request context.
    pub fn new(
        context: &AuditContext,
        action: AuditAction,
        target: Target,
        metadata: Metadata,
        occurred_at: OffsetDateTime,
    ) -> Self {
        Self {
            id: AuditEventId::new(),
            actor: context.actor,
            action,
            target,
            metadata,
            ip: context.ip,
            user_agent: context.user_agent.clone(),
            occurred_at: truncate_to_micros(occurred_at),
        }
    }

    /// Re-checks the fields that are public and so may have been set without
    /// validation: the target id and the user agent. Stores call this before
    /// appending, so every backend refuses the same events.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let target_id = bounded_text("audit target id", &self.target.id, Target::MAX_ID_CHARS)?;
        if target_id != self.target.id {
            return Err(ValidationError::TextLength {
                field: "audit target id",
                max: Target::MAX_ID_CHARS,
                len: self.target.id.chars().count(),
            });
        }
        if let Some(agent) = &self.user_agent {
            if agent.chars().any(char::is_control) {
                return Err(ValidationError::ControlCharacter {
                    field: "user agent",
                });
            }
            if agent.chars().count() > AuditContext::MAX_USER_AGENT_CHARS {
                return Err(ValidationError::TextLength {
                    field: "user agent",
                    max: AuditContext::MAX_USER_AGENT_CHARS,
                    len: agent.chars().count(),
                });
            }
        }
        Ok(())
    }

    /// Seals this event as number `seq` of `tenant_id`'s chain after `prev_hash`.
    pub fn seal(self, tenant_id: TenantId, seq: u64, prev_hash: ChainHash) -> AuditEvent {
        let mut event = AuditEvent {
            id: self.id,
            tenant_id,
            seq,
            actor: self.actor,
            action: self.action,
            target: self.target,
            metadata: self.metadata,
            ip: self.ip,
            user_agent: self.user_agent,
            occurred_at: truncate_to_micros(self.occurred_at),
            prev_hash,
            hash: ChainHash::GENESIS,
        };
        event.hash = event.compute_hash();
        event
    }
}

/// SHA-256 link of an audit chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainHash([u8; 32]);

impl ChainHash {
    /// The `prev_hash` of a tenant's first event: all zeroes.
    pub const GENESIS: ChainHash = ChainHash([0; 32]);

    /// Wraps a hash read from storage.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The hash bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({})", self.to_hex())
    }
}

impl Serialize for ChainHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ChainHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let invalid = || serde::de::Error::custom("expected 64 lowercase hex digits");
        if text.len() != 64 {
            return Err(invalid());
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            let digit = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            *byte = digit(pair[0])
                .zip(digit(pair[1]))
                .map(|(h, l)| h * 16 + l)
                .ok_or_else(invalid)?;
        }
        Ok(Self(bytes))
    }
}

/// One event of a tenant's audit log, as stored (and as exported).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Its id.
    pub id: AuditEventId,
    /// The tenant whose log it belongs to.
    pub tenant_id: TenantId,
    /// Its position in the tenant's chain, from 1 with no gaps.
    pub seq: u64,
    /// Who acted.
    pub actor: Actor,
    /// What happened.
    pub action: AuditAction,
    /// What it happened to.
    pub target: Target,
    /// Details.
    pub metadata: Metadata,
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// Hash of the previous event ([`ChainHash::GENESIS`] for the first).
    pub prev_hash: ChainHash,
    /// Hash of this event's canonical encoding, including `prev_hash`.
    pub hash: ChainHash,
}

impl AuditEvent {
    /// Recomputes the hash from the event's fields. Each field is
    /// length-prefixed so no two different events encode alike.
    pub fn compute_hash(&self) -> ChainHash {
        fn field(hasher: &mut Sha256, bytes: &[u8]) {
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        }
        fn optional(hasher: &mut Sha256, bytes: Option<&[u8]>) {
            match bytes {
                Some(bytes) => {
                    hasher.update([1]);
                    field(hasher, bytes);
                }
                None => hasher.update([0]),
            }
        }
        let micros = self.occurred_at.unix_timestamp_nanos() / 1_000;
        let mut hasher = Sha256::new();
        hasher.update(b"tenancy.audit.v1");
        field(&mut hasher, self.tenant_id.as_uuid().as_bytes());
        field(&mut hasher, &self.seq.to_be_bytes());
        field(&mut hasher, self.id.as_uuid().as_bytes());
        field(&mut hasher, &micros.to_be_bytes());
        field(&mut hasher, self.actor.kind().as_bytes());
        optional(
            &mut hasher,
            self.actor.id().as_ref().map(|id| id.as_bytes().as_slice()),
        );
        field(&mut hasher, self.action.as_str().as_bytes());
        field(&mut hasher, self.target.target_type.as_str().as_bytes());
        field(&mut hasher, self.target.id.as_bytes());
        field(&mut hasher, self.metadata.canonical_json().as_bytes());
        optional(
            &mut hasher,
            self.ip
                .map(|ip| ip.to_string())
                .as_deref()
                .map(str::as_bytes),
        );
        optional(&mut hasher, self.user_agent.as_deref().map(str::as_bytes));
        field(&mut hasher, self.prev_hash.as_bytes());
        ChainHash(hasher.finalize().into())
    }
}

/// The newest link of a tenant's chain, kept apart from the events so that
/// deleting the last events is detected too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// Sequence number of the newest event.
    pub seq: u64,
    /// Its hash.
    pub hash: ChainHash,
}

/// Why a link of the chain is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BrokenReason {
    /// Events are missing before this one, or it is out of place.
    SequenceGap {
        /// The sequence number that should have come next.
        expected: u64,
    },
    /// Its `prev_hash` is not the previous event's hash.
    PrevHashMismatch,
    /// Its fields no longer match its hash: it was edited.
    HashMismatch,
    /// The newest event does not match the recorded chain head.
    HeadMismatch,
    /// Events exist past the recorded chain head: they were inserted behind
    /// the append path's back.
    BeyondHead,
    /// A stored event cannot be decoded at all.
    Corrupt,
    /// The chain ends before its recorded head: the newest events were removed.
    Truncated {
        /// The head's sequence number.
        head_seq: u64,
    },
}

impl fmt::Display for BrokenReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokenReason::SequenceGap { expected } => {
                write!(f, "sequence gap: expected event {expected}")
            }
            BrokenReason::PrevHashMismatch => f.write_str("previous-hash link does not match"),
            BrokenReason::HashMismatch => f.write_str("event content does not match its hash"),
            BrokenReason::HeadMismatch => {
                f.write_str("newest event does not match the recorded chain head")
            }
            BrokenReason::BeyondHead => f.write_str("event was never recorded in the chain head"),
            BrokenReason::Corrupt => f.write_str("stored event cannot be decoded"),
            BrokenReason::Truncated { head_seq } => {
                write!(f, "chain ends before its head at event {head_seq}")
            }
        }
    }
}

/// The first broken link found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    /// Sequence number where the chain breaks.
    pub seq: u64,
    /// What is wrong there.
    pub reason: BrokenReason,
}

/// The outcome of [`crate::AuditLog::verify_chain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// Events checked before stopping.
    pub events_checked: u64,
    /// The last intact link.
    pub last_intact: Option<ChainHead>,
    /// The first broken link, if any.
    pub first_broken: Option<BrokenLink>,
}

impl ChainReport {
    /// Whether every event checked and the head are intact.
    pub fn is_intact(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// Verifies a chain one stored event at a time, in sequence order.
///
/// [`crate::AuditLog::verify_chain`] drives it from a store; it also
/// verifies an exported JSON-lines file offline, against a chain head kept
/// elsewhere (which is what defeats an attacker able to rewrite both the
/// events and the head in the database):
///
/// ```
/// use tenancy_core::audit::{AuditEvent, ChainVerifier};
/// # let exported = String::new();
/// let mut verifier = ChainVerifier::new();
/// for line in exported.lines() {
///     let event: AuditEvent = serde_json::from_str(line)?;
///     if !verifier.push(&event) {
///         break;
///     }
/// }
/// let report = verifier.finish_offline();
/// assert!(report.is_intact());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ChainVerifier {
    checked: u64,
    last: Option<ChainHead>,
    broken: Option<BrokenLink>,
}

impl ChainVerifier {
    /// A verifier expecting event 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next event: its sequence number, its link to the previous
    /// event and its own hash. Returns `false` once the chain is broken;
    /// later events are then ignored.
    pub fn push(&mut self, event: &AuditEvent) -> bool {
        let reason = if event.seq != self.expected() {
            Some(BrokenReason::SequenceGap {
                expected: self.expected(),
            })
        } else if event.prev_hash != self.last.map_or(ChainHash::GENESIS, |last| last.hash) {
            Some(BrokenReason::PrevHashMismatch)
        } else if event.compute_hash() != event.hash {
            Some(BrokenReason::HashMismatch)
        } else {
            None
        };
        self.record(event.seq, reason, event.hash)
    }

    /// Records a stored event that could not even be decoded.
    pub fn push_corrupt(&mut self, seq: u64) -> bool {
        self.record(seq, Some(BrokenReason::Corrupt), ChainHash::GENESIS)
    }

    fn expected(&self) -> u64 {
        self.last.map_or(1, |last| last.seq + 1)
    }

    fn record(&mut self, seq: u64, reason: Option<BrokenReason>, hash: ChainHash) -> bool {
        if self.broken.is_some() {
            return false;
        }
        match reason {
            Some(reason) => {
                self.broken = Some(BrokenLink { seq, reason });
                false
            }
            None => {
                self.checked += 1;
                self.last = Some(ChainHead { seq, hash });
                true
            }
        }
    }

    /// Ends verification against the store's chain head, read before the
    /// events (`head_before`) and after them (`head_after`); `None` means no
    /// head is recorded. Events the head never recorded, events missing up
    /// to the head, or a head whose hash differs from its event all break
    /// the chain; events appended while verifying do not.
    pub fn finish(
        self,
        head_before: Option<ChainHead>,
        head_after: Option<ChainHead>,
    ) -> ChainReport {
        let last_seq = self.last.map_or(0, |last| last.seq);
        let seq_of = |head: Option<ChainHead>| head.map_or(0, |h| h.seq);
        let newest_head = seq_of(head_before).max(seq_of(head_after));
        let broken = self.broken.or_else(|| {
            if last_seq > newest_head {
                return Some(BrokenLink {
                    seq: newest_head + 1,
                    reason: BrokenReason::BeyondHead,
                });
            }
            if seq_of(head_before) > last_seq {
                return Some(BrokenLink {
                    seq: last_seq + 1,
                    reason: BrokenReason::Truncated {
                        head_seq: seq_of(head_before),
                    },
                });
            }
            [head_before, head_after]
                .into_iter()
                .flatten()
                .any(|head| head.seq == last_seq && Some(head) != self.last)
                .then_some(BrokenLink {
                    seq: last_seq,
                    reason: BrokenReason::HeadMismatch,
                })
        });
        self.report(broken)
    }

    /// Ends verification of events alone, with no head to compare (an
    /// export checked offline without a trusted head).
    pub fn finish_offline(self) -> ChainReport {
        let broken = self.broken;
        self.report(broken)
    }

    fn report(self, first_broken: Option<BrokenLink>) -> ChainReport {
        ChainReport {
            events_checked: self.checked,
            last_intact: self.last,
            first_broken,
        }
    }
}

/// One stored event as read for verification: decoded, or too damaged to decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainEntry {
    /// A decoded event.
    Event(Box<AuditEvent>),
    /// A stored event whose fields no longer decode (edited outside tenancy).
    Corrupt {
        /// Its sequence number.
        seq: u64,
    },
}

/// Which actions an [`AuditQuery`] selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionFilter {
    /// Exactly this action.
    Exact(AuditAction),
    /// Every action under a prefix: `member` selects `member.invited`,
    /// `member.role_changed`, and so on.
    Prefix(String),
}

impl ActionFilter {
    /// Parses `member.removed` (exact) or `member.*` (prefix).
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        match raw.strip_suffix(".*") {
            Some(prefix) => {
                // A prefix is valid if it can begin a valid action.
                AuditAction::new(format!("{prefix}.x"))?;
                Ok(ActionFilter::Prefix(prefix.to_owned()))
            }
            None => AuditAction::new(raw).map(ActionFilter::Exact),
        }
    }

    /// Whether `action` is selected.
    pub fn matches(&self, action: &AuditAction) -> bool {
        match self {
            ActionFilter::Exact(exact) => exact == action,
            ActionFilter::Prefix(prefix) => action
                .as_str()
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.starts_with('.')),
        }
    }
}

/// Filters for reading a tenant's audit log. Empty selects everything;
/// each filter set narrows the result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only these actions.
    pub action: Option<ActionFilter>,
    /// Only this actor.
    pub actor: Option<Actor>,
    /// Only events about this kind of target.
    pub target_type: Option<TargetType>,
    /// Only events at or after this instant.
    pub since: Option<OffsetDateTime>,
    /// Only events before this instant.
    pub until: Option<OffsetDateTime>,
}

impl AuditQuery {
    /// Selects every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// Narrows to actions matching `filter`.
    pub fn action(mut self, filter: ActionFilter) -> Self {
        self.action = Some(filter);
        self
    }

    /// Narrows to one actor.
    pub fn actor(mut self, actor: Actor) -> Self {
        self.actor = Some(actor);
        self
    }

    /// Narrows to one target type.
    pub fn target_type(mut self, target_type: TargetType) -> Self {
        self.target_type = Some(target_type);
        self
    }

    /// Narrows to `since <= occurred_at < until`; either end may be open.
    pub fn between(
        mut self,
        since: Option<OffsetDateTime>,
        until: Option<OffsetDateTime>,
    ) -> Result<Self, ValidationError> {
        if let (Some(since), Some(until)) = (since, until)
            && since > until
        {
            return Err(ValidationError::TimeRange);
        }
        self.since = since.map(truncate_to_micros);
        self.until = until.map(truncate_to_micros);
        Ok(self)
    }

    /// Whether `event` passes every filter.
    pub fn matches(&self, event: &AuditEvent) -> bool {
        self.action
            .as_ref()
            .is_none_or(|f| f.matches(&event.action))
            && self.actor.is_none_or(|a| a == event.actor)
            && self
                .target_type
                .as_ref()
                .is_none_or(|t| *t == event.target.target_type)
            && self
                .since
                .is_none_or(|s| event.occurred_at >= truncate_to_micros(s))
            && self
                .until
                .is_none_or(|u| event.occurred_at < truncate_to_micros(u))
    }
}

/// Output format of [`export`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per line.
    JsonLines,
    /// RFC 4180 CSV with a header row. Cells that a spreadsheet would read as
    /// a formula are prefixed with `'`.
    Csv,
}

/// What [`export`] can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Reading the log failed.
    #[error("reading the audit log failed")]
    Store(#[from] StoreError),
    /// Writing the output failed.
    #[error("writing the export failed")]
    Io(#[from] std::io::Error),
}

const CSV_HEADER: [&str; 13] = [
    "seq",
    "id",
    "occurred_at",
    "actor_type",
    "actor_id",
    "action",
    "target_type",
    "target_id",
    "ip",
    "user_agent",
    "metadata",
    "prev_hash",
    "hash",
];

/// Writes events of `tenant_id` matching `query` to `out`, oldest first, and
/// returns how many were written. Reads the log a page at a time, so the
/// whole log is never held in memory.
pub async fn export<L, W>(
    log: &L,
    tenant_id: TenantId,
    query: &AuditQuery,
    format: ExportFormat,
    out: W,
) -> Result<u64, ExportError>
where
    L: AuditLog + ?Sized,
    W: Write + Send,
{
    let mut sink = match format {
        ExportFormat::JsonLines => Sink::Lines(out),
        ExportFormat::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            writer.write_record(CSV_HEADER).map_err(csv_error)?;
            Sink::Csv(Box::new(writer))
        }
    };
    let mut written = 0u64;
    let mut page = PageRequest::first(PageSize::MAX);
    loop {
        let batch = log.query_audit(tenant_id, query, &page).await?;
        for event in &batch.items {
            sink.write(event)?;
            written += 1;
        }
        match batch.next {
            Some(cursor) => page = page.after(cursor),
            None => break,
        }
    }
    sink.flush()?;
    Ok(written)
}

enum Sink<W: Write> {
    Lines(W),
    Csv(Box<csv::Writer<W>>),
}

impl<W: Write> Sink<W> {
    fn write(&mut self, event: &AuditEvent) -> std::io::Result<()> {
        match self {
            Sink::Lines(out) => {
                serde_json::to_writer(&mut *out, event)?;
                out.write_all(b"\n")
            }
            Sink::Csv(writer) => writer.write_record(csv_row(event)).map_err(csv_error),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Lines(out) => out.flush(),
            Sink::Csv(writer) => writer.flush(),
        }
    }
}

fn csv_row(event: &AuditEvent) -> [String; 13] {
    let timestamp = event
        .occurred_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    [
        event.seq.to_string(),
        event.id.to_string(),
        timestamp,
        event.actor.kind().to_owned(),
        event
            .actor
            .id()
            .map(|id| id.to_string())
            .unwrap_or_default(),
        event.action.to_string(),
        event.target.target_type.to_string(),
        defuse_formula(&event.target.id),
        event.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        event
            .user_agent
            .as_deref()
            .map(defuse_formula)
            .unwrap_or_default(),
        event.metadata.canonical_json(),
        event.prev_hash.to_string(),
        event.hash.to_string(),
    ]
}

/// Prefixes text a spreadsheet would evaluate as a formula (CSV injection).
fn defuse_formula(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

fn csv_error(error: csv::Error) -> std::io::Error {
    match error.into_kind() {
        csv::ErrorKind::Io(io) => io,
        other => std::io::Error::other(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(len: u64) -> Vec<AuditEvent> {
        let tenant = TenantId::new();
        let mut prev = ChainHash::GENESIS;
        (1..=len)
            .map(|seq| {
                let event = NewAuditEvent::new(
                    &AuditContext::user(UserId::new()),
                    AuditAction::new("member.role_changed").unwrap(),
                    Target::new("membership", seq).unwrap(),
                    Metadata::new(json!({ "seq": seq })).unwrap(),
                    OffsetDateTime::now_utc(),
                )
                .seal(tenant, seq, prev);
                prev = event.hash;
                event
            })
            .collect()
    }

    fn verify(events: &[AuditEvent], head: Option<ChainHead>) -> ChainReport {
        let mut verifier = ChainVerifier::new();
        for event in events {
            if !verifier.push(event) {
                break;
            }
        }
        verifier.finish(head, head)
    }

    fn verify_between(
        events: &[AuditEvent],
        before: Option<ChainHead>,
        after: Option<ChainHead>,
    ) -> ChainReport {
        let mut verifier = ChainVerifier::new();
        for event in events {
            verifier.push(event);
        }
        verifier.finish(before, after)
    }

    #[test]
    fn exported_events_deserialize_and_verify() {
        let events = chain(3);
        let lines: Vec<String> = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        let mut verifier = ChainVerifier::new();
        for line in &lines {
            let event: AuditEvent = serde_json::from_str(line).unwrap();
            assert!(verifier.push(&event));
        }
        assert!(
            verifier
                .finish(head_of(&events[2]), head_of(&events[2]))
                .is_intact()
        );
        assert!(serde_json::from_str::<ChainHash>("\"zz\"").is_err());
    }

    fn head_of(event: &AuditEvent) -> Option<ChainHead> {
        Some(ChainHead {
            seq: event.seq,
            hash: event.hash,
        })
    }

    #[test]
    fn intact_chain_verifies() {
        let events = chain(4);
        let report = verify(&events, head_of(&events[3]));
        assert!(report.is_intact());
        assert_eq!(report.events_checked, 4);
        assert!(verify(&[], None).is_intact());
    }

    #[test]
    fn every_kind_of_tampering_is_found() {
        let events = chain(4);
        let head = head_of(&events[3]);

        let mut edited = events.clone();
        edited[1].metadata = Metadata::new(json!({ "seq": 99 })).unwrap();
        assert_eq!(
            verify(&edited, head).first_broken,
            Some(BrokenLink {
                seq: 2,
                reason: BrokenReason::HashMismatch
            })
        );

        let mut actor_swapped = events.clone();
        actor_swapped[2].actor = Actor::System;
        assert_eq!(verify(&actor_swapped, head).first_broken.unwrap().seq, 3);

        let mut gap = events.clone();
        gap.remove(1);
        assert_eq!(
            verify(&gap, head).first_broken,
            Some(BrokenLink {
                seq: 3,
                reason: BrokenReason::SequenceGap { expected: 2 }
            })
        );

        // Rewritten with valid hashes but linked to the wrong predecessor.
        let mut relinked = events.clone();
        relinked[2].prev_hash = ChainHash::GENESIS;
        relinked[2].hash = relinked[2].compute_hash();
        assert_eq!(
            verify(&relinked, head).first_broken,
            Some(BrokenLink {
                seq: 3,
                reason: BrokenReason::PrevHashMismatch
            })
        );

        let truncated = &events[..2];
        assert_eq!(
            verify(truncated, head).first_broken,
            Some(BrokenLink {
                seq: 3,
                reason: BrokenReason::Truncated { head_seq: 4 }
            })
        );
        assert_eq!(
            verify(&events, None).first_broken,
            Some(BrokenLink {
                seq: 1,
                reason: BrokenReason::BeyondHead
            })
        );
        assert_eq!(
            verify(&events, head_of(&events[1])).first_broken,
            Some(BrokenLink {
                seq: 3,
                reason: BrokenReason::BeyondHead
            })
        );
        let mut offline = ChainVerifier::new();
        assert!(events.iter().all(|e| offline.push(e)));
        assert!(offline.finish_offline().is_intact());
        let mut corrupt = ChainVerifier::new();
        assert!(corrupt.push(&events[0]));
        assert!(!corrupt.push_corrupt(2));
        assert!(!corrupt.push(&events[2]));
        assert_eq!(
            corrupt.finish(head, head).first_broken,
            Some(BrokenLink {
                seq: 2,
                reason: BrokenReason::Corrupt
            })
        );
        // A head read before a concurrent append, and one read after it.
        let report = verify_between(&events, head_of(&events[2]), head);
        assert!(report.is_intact(), "{report:?}");
        let mut wrong_head = head;
        if let Some(h) = wrong_head.as_mut() {
            h.hash = ChainHash::GENESIS;
        }
        assert_eq!(
            verify(&events, wrong_head).first_broken.unwrap().reason,
            BrokenReason::HeadMismatch
        );
    }

    #[test]
    fn hash_covers_optional_fields_distinctly() {
        let mut event = chain(1).remove(0);
        event.user_agent = None;
        let without = event.compute_hash();
        event.user_agent = Some(String::new());
        assert_ne!(event.compute_hash(), without);
    }

    #[test]
    fn action_rules() {
        assert!(AuditAction::new("member.role_changed").is_ok());
        assert!(AuditAction::new("a.b.c_1").is_ok());
        for bad in [
            "member",
            "Member.added",
            "member..added",
            ".member",
            "member.",
            "member added.x",
            &format!("a.{}", "b".repeat(127)),
        ] {
            let err = AuditAction::new(bad).unwrap_err();
            assert_eq!(
                err,
                ValidationError::AuditAction {
                    action: bad.to_owned()
                }
            );
            assert!(
                err.to_string()
                    .contains("must be 2 or more dot-separated segments")
            );
        }
    }

    #[test]
    fn target_rules() {
        assert!(Target::new("project", "p-1").is_ok());
        assert_eq!(
            Target::new("Project", "p-1").unwrap_err().to_string(),
            "audit target type \"Project\" must be 1 to 64 characters of a-z, 0-9 and '_'"
        );
        assert_eq!(
            Target::new("project", "").unwrap_err().to_string(),
            "audit target id must be 1 to 128 characters after trimming, got 0"
        );
        assert!(matches!(
            Target::new("project", "x".repeat(129)),
            Err(ValidationError::TextLength { max: 128, .. })
        ));
    }

    #[test]
    fn action_filters() {
        let prefix = ActionFilter::parse("member.*").unwrap();
        let action = |s: &str| AuditAction::new(s).unwrap();
        assert!(prefix.matches(&action("member.removed")));
        assert!(!prefix.matches(&action("members.removed")));
        let exact = ActionFilter::parse("member.removed").unwrap();
        assert!(exact.matches(&action("member.removed")));
        assert!(!exact.matches(&action("member.removed_all")));
        assert!(matches!(
            ActionFilter::parse("Member.*"),
            Err(ValidationError::AuditAction { .. })
        ));
        assert!(matches!(
            ActionFilter::parse("*"),
            Err(ValidationError::AuditAction { .. })
        ));
    }

    #[test]
    fn time_range_must_be_ordered() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            AuditQuery::all().between(Some(now), Some(now - time::Duration::SECOND)),
            Err(ValidationError::TimeRange)
        );
        assert_eq!(
            ValidationError::TimeRange.to_string(),
            "time range starts after it ends"
        );
        assert!(AuditQuery::all().between(Some(now), Some(now)).is_ok());
    }

    #[test]
    fn user_agent_is_cleaned_not_rejected() {
        let context =
            AuditContext::system().with_user_agent(&format!("  a\u{0}b\n{}", "x".repeat(600)));
        let agent = context.user_agent.unwrap();
        assert!(agent.starts_with("ab"));
        assert_eq!(agent.chars().count(), 512);
        assert_eq!(
            AuditContext::system().with_user_agent(" \t ").user_agent,
            None
        );
    }

    #[test]
    fn csv_cells_that_look_like_formulas_are_defused() {
        assert_eq!(defuse_formula("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(defuse_formula("+1"), "'+1");
        assert_eq!(defuse_formula("@cmd"), "'@cmd");
        assert_eq!(defuse_formula("Mozilla/5.0"), "Mozilla/5.0");
    }

    #[test]
    fn actor_storage_round_trip() {
        for actor in [
            Actor::User(UserId::new()),
            Actor::ApiKey(ApiKeyId::new()),
            Actor::System,
        ] {
            assert_eq!(Actor::from_parts(actor.kind(), actor.id()), Some(actor));
        }
        assert_eq!(Actor::from_parts("system", Some(uuid::Uuid::nil())), None);
        assert_eq!(Actor::from_parts("robot", None), None);
        let json = serde_json::to_value(Actor::System).unwrap();
        assert_eq!(json, json!({ "type": "system" }));
    }
}
