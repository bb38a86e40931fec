//! Idempotency keys: the store behind idempotent requests
//! (draft-ietf-httpapi-idempotency-key-header).
//!
//! A client marks a state-changing request with an `Idempotency-Key`
//! header. The first request with a key *claims* it ([`Claim::Acquired`],
//! holding a lease while it runs); its response is then stored
//! ([`IdempotencyStore::complete`]) or the key released
//! ([`IdempotencyStore::release`]) so a retry runs again. A later request
//! with the same key and the same [`Fingerprint`] gets the stored response
//! ([`Claim::Replay`]); a different fingerprint is [`Claim::Mismatch`]; a
//! duplicate while the first still runs is [`Claim::InFlight`].
//!
//! Keys are scoped by tenant *and* caller ([`IdempotencyScope`]): the same
//! key sent by two tenants or two callers never collides. A key lives
//! `ttl` from its claim; a lease whose owner crashed lapses after `lease`,
//! so a crash never wedges a key. [`IdempotencyStore::purge_expired`]
//! deletes what is past its lifetime.
//!
//! The claim is atomic: of two replicas racing for one key, exactly one
//! acquires it (Postgres: one `INSERT … ON CONFLICT` statement).

use std::fmt;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::error::StoreError;
use crate::id::TenantId;

/// The longest key accepted, in characters.
pub const MAX_KEY_LEN: usize = 255;

/// The longest caller identity accepted, in bytes.
pub const MAX_CALLER_LEN: usize = 255;

/// A client's idempotency key: 1 to [`MAX_KEY_LEN`] printable ASCII
/// characters (space to `~`).
///
/// ```
/// use tenancy_core::IdempotencyKey;
///
/// // The draft's form: a structured-field string.
/// let key = IdempotencyKey::parse_header(br#""8e03978e-40d5-43e8-bc93-6894a57f9324""#)?;
/// assert_eq!(key.as_str(), "8e03978e-40d5-43e8-bc93-6894a57f9324");
/// // Leniently, a bare token.
/// assert_eq!(IdempotencyKey::parse_header(b"order-42")?.as_str(), "order-42");
/// assert_eq!(key.to_header_value(), r#""8e03978e-40d5-43e8-bc93-6894a57f9324""#);
/// assert!(IdempotencyKey::parse_header(b"\"unterminated").is_err());
/// # Ok::<(), tenancy_core::InvalidIdempotencyKey>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

/// Why an `Idempotency-Key` value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidIdempotencyKey {
    /// The key is empty.
    #[error("idempotency key is empty")]
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`] characters.
    #[error("idempotency key is longer than {max} characters")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// The key holds a character outside printable ASCII.
    #[error("idempotency key may hold printable ASCII characters only")]
    NotPrintable,
    /// The header is neither a structured-field string nor a bare token
    /// (an unterminated quote, a stray escape, something after the string,
    /// or a list of several values).
    #[error("idempotency key header is not a structured-field string")]
    Malformed,
}

impl IdempotencyKey {
    /// A key from its text (not from a header: see [`Self::parse_header`]).
    pub fn new(key: &str) -> Result<Self, InvalidIdempotencyKey> {
        if key.is_empty() {
            return Err(InvalidIdempotencyKey::Empty);
        }
        if !key.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(InvalidIdempotencyKey::NotPrintable);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(InvalidIdempotencyKey::TooLong { max: MAX_KEY_LEN });
        }
        Ok(Self(key.to_owned()))
    }

    /// Parses an `Idempotency-Key` header value: a structured-field string
    /// (RFC 8941 `sf-string`, `"…"` with `\"` and `\\` escapes), or,
    /// leniently, a bare run of visible ASCII without quotes, backslashes,
    /// commas or semicolons (many clients send a UUID unquoted).
    /// Surrounding spaces are ignored; parameters and lists are refused.
    pub fn parse_header(value: &[u8]) -> Result<Self, InvalidIdempotencyKey> {
        let value = trim_spaces(value);
        match value.split_first() {
            None => Err(InvalidIdempotencyKey::Empty),
            Some((b'"', rest)) => Self::new(&parse_sf_string(rest)?),
            Some(_) => {
                if value
                    .iter()
                    .any(|b| !(0x21..=0x7e).contains(b) && *b != b' ')
                {
                    return Err(InvalidIdempotencyKey::NotPrintable);
                }
                if value
                    .iter()
                    .any(|b| matches!(b, b'"' | b'\\' | b',' | b';' | b' '))
                {
                    return Err(InvalidIdempotencyKey::Malformed);
                }
                // Only visible ASCII is left, which is UTF-8.
                let text =
                    std::str::from_utf8(value).map_err(|_| InvalidIdempotencyKey::NotPrintable)?;
                Self::new(text)
            }
        }
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as a structured-field string, as a header carries it.
    pub fn to_header_value(&self) -> String {
        let mut out = String::with_capacity(self.0.len() + 2);
        out.push('"');
        for c in self.0.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        out
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdempotencyKey").field(&self.0).finish()
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn trim_spaces(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// The rest of an `sf-string` after its opening quote; nothing may follow
/// the closing quote.
fn parse_sf_string(rest: &[u8]) -> Result<String, InvalidIdempotencyKey> {
    let mut out = String::new();
    let mut bytes = rest.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => match bytes.next() {
                Some(&escaped @ (b'"' | b'\\')) => out.push(char::from(escaped)),
                _ => return Err(InvalidIdempotencyKey::Malformed),
            },
            b'"' => {
                return if bytes.as_slice().is_empty() {
                    Ok(out)
                } else {
                    Err(InvalidIdempotencyKey::Malformed)
                };
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => return Err(InvalidIdempotencyKey::NotPrintable),
        }
    }
    Err(InvalidIdempotencyKey::Malformed)
}

/// Where a key lives: a tenant, a caller in it (such as `user:<id>` or
/// `api_key:<id>`), and the key. Two scopes differing in any part never
/// see each other's keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyScope {
    tenant_id: TenantId,
    caller: String,
    key: IdempotencyKey,
}

impl IdempotencyScope {
    /// The scope of `key` sent by `caller` in `tenant_id`; `caller` is
    /// 1 to [`MAX_CALLER_LEN`] bytes of printable ASCII.
    pub fn new(
        tenant_id: TenantId,
        caller: impl Into<String>,
        key: IdempotencyKey,
    ) -> Result<Self, InvalidIdempotencyKey> {
        let caller = caller.into();
        if caller.is_empty()
            || caller.len() > MAX_CALLER_LEN
            || !caller.bytes().all(|b| (0x20..=0x7e).contains(&b))
        {
            return Err(InvalidIdempotencyKey::Malformed);
        }
        Ok(Self {
            tenant_id,
            caller,
            key,
        })
    }

    /// The tenant.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    /// The caller.
    pub fn caller(&self) -> &str {
        &self.caller
    }

    /// The key.
    pub fn key(&self) -> &IdempotencyKey {
        &self.key
    }
}

/// What makes two requests "the same": SHA-256 over the method, the
/// request target (path and query) and the SHA-256 of the body.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a request.
    ///
    /// ```
    /// use tenancy_core::Fingerprint;
    /// let a = Fingerprint::of("POST", "/projects", br#"{"name":"a"}"#);
    /// assert_eq!(a, Fingerprint::of("POST", "/projects", br#"{"name":"a"}"#));
    /// assert_ne!(a, Fingerprint::of("POST", "/projects", br#"{"name":"b"}"#));
    /// assert_ne!(a, Fingerprint::of("PATCH", "/projects", br#"{"name":"a"}"#));
    /// ```
    pub fn of(method: &str, target: &str, body: &[u8]) -> Self {
        let body = Sha256::digest(body);
        let mut hasher = Sha256::new();
        hasher.update((method.len() as u64).to_be_bytes());
        hasher.update(method.as_bytes());
        hasher.update((target.len() as u64).to_be_bytes());
        hasher.update(target.as_bytes());
        hasher.update(body);
        Self(hasher.finalize().into())
    }

    /// A fingerprint from its stored bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The bytes, for storage.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint(")?;
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// A response as stored for replay: the status, the headers that matter
/// (the HTTP layer chooses them) and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// Proof of holding a claimed key: completing or releasing it needs this,
/// so a request whose lease lapsed and was taken over cannot overwrite its
/// successor's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseToken(uuid::Uuid);

impl LeaseToken {
    /// A fresh token.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// The token as a UUID, for storage.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }

    /// A token from its stored UUID.
    pub fn from_uuid(id: uuid::Uuid) -> Self {
        Self(id)
    }
}

impl Default for LeaseToken {
    fn default() -> Self {
        Self::new()
    }
}

/// The answer to [`IdempotencyStore::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// The key is this request's: run it, then complete or release.
    Acquired(LeaseToken),
    /// A request with the same fingerprint completed: answer this.
    Replay(StoredResponse),
    /// The key was used for a request with another fingerprint.
    Mismatch,
    /// A request with the same fingerprint is still running.
    InFlight,
}

/// How long keys and leases last, for [`IdempotencyStore::claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// How long a key (and its stored response) lives from its claim.
    pub ttl: Duration,
    /// How long a claim holds the key while its request runs; past it, a
    /// retry takes the key over (the first request's owner crashed).
    pub lease: Duration,
}

/// Idempotency keys, per tenant and caller. Implemented in memory
/// (`MemoryIdempotencyStore`) and on Postgres
/// (`postgres::PgIdempotencyStore`); `testkit` holds the conformance suite
/// both pass (`idempotency_store_tests!`).
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims `scope`'s key for a request with `fingerprint` at `now`.
    ///
    /// - no record, a record past its `ttl`, or an unfinished one whose
    ///   lease lapsed: the key is taken, [`Claim::Acquired`];
    /// - otherwise a different fingerprint: [`Claim::Mismatch`];
    /// - the same fingerprint, completed: [`Claim::Replay`];
    /// - the same fingerprint, still running: [`Claim::InFlight`].
    ///
    /// Atomic: of concurrent claims of one free key, exactly one acquires.
    async fn claim(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &Fingerprint,
        now: OffsetDateTime,
        lifetimes: Lifetimes,
    ) -> Result<Claim, StoreError>;

    /// Stores the response of the request holding `token`; `false` (and
    /// nothing stored) when the key is no longer held by it.
    async fn complete(
        &self,
        scope: &IdempotencyScope,
        token: LeaseToken,
        response: &StoredResponse,
    ) -> Result<bool, StoreError>;

    /// Releases the key held with `token` without storing anything, so a
    /// retry runs again; nothing happens if it is no longer held.
    async fn release(&self, scope: &IdempotencyScope, token: LeaseToken) -> Result<(), StoreError>;

    /// Deletes every key (of every tenant) past its lifetime at `now`, and
    /// says how many went.
    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError>;
}

/// One stored key, as both adapters decide on it.
#[derive(Debug, Clone)]
struct Record {
    fingerprint: Fingerprint,
    token: LeaseToken,
    locked_until: OffsetDateTime,
    expires_at: OffsetDateTime,
    response: Option<StoredResponse>,
}

impl Record {
    /// Whether a new claim at `now` may take this record over.
    fn free_at(&self, now: OffsetDateTime) -> bool {
        match self.response {
            Some(_) => self.expires_at <= now,
            None => self.locked_until <= now || self.expires_at <= now,
        }
    }
}

/// Idempotency keys in process memory: for one replica (tests, single
/// instances). Keys are lost on restart. Needs no feature: it is what
/// the HTTP layer falls back to without a store of its own.
#[derive(Debug, Default)]
pub struct MemoryIdempotencyStore {
    records: std::sync::Mutex<std::collections::HashMap<IdempotencyScope, Record>>,
}

impl MemoryIdempotencyStore {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<IdempotencyScope, Record>> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    async fn claim(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &Fingerprint,
        now: OffsetDateTime,
        lifetimes: Lifetimes,
    ) -> Result<Claim, StoreError> {
        let mut records = self.lock();
        match records.get(scope) {
            Some(record) if !record.free_at(now) => Ok(if record.fingerprint != *fingerprint {
                Claim::Mismatch
            } else {
                match &record.response {
                    Some(response) => Claim::Replay(response.clone()),
                    None => Claim::InFlight,
                }
            }),
            _ => {
                let token = LeaseToken::new();
                records.insert(
                    scope.clone(),
                    Record {
                        fingerprint: *fingerprint,
                        token,
                        locked_until: now + lifetimes.lease,
                        expires_at: now + lifetimes.ttl,
                        response: None,
                    },
                );
                Ok(Claim::Acquired(token))
            }
        }
    }

    async fn complete(
        &self,
        scope: &IdempotencyScope,
        token: LeaseToken,
        response: &StoredResponse,
    ) -> Result<bool, StoreError> {
        let mut records = self.lock();
        match records.get_mut(scope) {
            Some(record) if record.token == token && record.response.is_none() => {
                record.response = Some(response.clone());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, scope: &IdempotencyScope, token: LeaseToken) -> Result<(), StoreError> {
        let mut records = self.lock();
        if records
            .get(scope)
            .is_some_and(|record| record.token == token && record.response.is_none())
        {
            records.remove(scope);
        }
        Ok(())
    }

    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let mut records = self.lock();
        let before = records.len();
        records.retain(|_, record| record.expires_at > now);
        Ok((before - records.len()) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_forms() {
        let parse = |v: &str| IdempotencyKey::parse_header(v.as_bytes());
        assert_eq!(parse(r#""abc""#).unwrap().as_str(), "abc");
        assert_eq!(
            parse(r#"  "a \"b\" \\c"  "#).unwrap().as_str(),
            r#"a "b" \c"#
        );
        assert_eq!(
            parse("abc-123_x.y:z/w").unwrap().as_str(),
            "abc-123_x.y:z/w"
        );
        assert_eq!(parse(""), Err(InvalidIdempotencyKey::Empty));
        assert_eq!(parse(r#""""#), Err(InvalidIdempotencyKey::Empty));
        assert_eq!(parse("  "), Err(InvalidIdempotencyKey::Empty));
        assert_eq!(parse(r#""abc"#), Err(InvalidIdempotencyKey::Malformed));
        assert_eq!(parse(r#""abc";p=1"#), Err(InvalidIdempotencyKey::Malformed));
        assert_eq!(parse(r#""a\b""#), Err(InvalidIdempotencyKey::Malformed));
        assert_eq!(parse("a, b"), Err(InvalidIdempotencyKey::Malformed));
        assert_eq!(parse("a b"), Err(InvalidIdempotencyKey::Malformed));
        assert_eq!(parse("\"é\""), Err(InvalidIdempotencyKey::NotPrintable));
        assert_eq!(
            IdempotencyKey::parse_header(b"a\x01b"),
            Err(InvalidIdempotencyKey::NotPrintable)
        );
        assert!(parse(&"k".repeat(MAX_KEY_LEN)).is_ok());
        assert_eq!(
            parse(&"k".repeat(MAX_KEY_LEN + 1)),
            Err(InvalidIdempotencyKey::TooLong { max: MAX_KEY_LEN })
        );
        assert_eq!(
            parse(&format!("\"{}\"", "\\\\".repeat(MAX_KEY_LEN + 1))),
            Err(InvalidIdempotencyKey::TooLong { max: MAX_KEY_LEN })
        );
    }

    #[test]
    fn scopes_refuse_bad_callers() {
        let key = IdempotencyKey::new("k").unwrap();
        assert!(IdempotencyScope::new(TenantId::new(), "", key.clone()).is_err());
        assert!(IdempotencyScope::new(TenantId::new(), "a\nb", key.clone()).is_err());
        assert!(IdempotencyScope::new(TenantId::new(), "user:1", key).is_ok());
    }

    proptest! {
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = IdempotencyKey::parse_header(&bytes);
        }

        #[test]
        fn sf_strings_round_trip(key in "[ -~]{1,255}") {
            let parsed = IdempotencyKey::new(&key).unwrap();
            let header = parsed.to_header_value();
            prop_assert_eq!(IdempotencyKey::parse_header(header.as_bytes()), Ok(parsed));
        }

        #[test]
        fn bare_tokens_round_trip(key in "[!#-+\\--:<-\\[\\]-~]{1,255}") {
            prop_assert_eq!(
                IdempotencyKey::parse_header(key.as_bytes()).map(|k| k.as_str().to_owned()),
                Ok(key)
            );
        }

        #[test]
        fn accepted_keys_are_printable_and_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(key) = IdempotencyKey::parse_header(&bytes) {
                prop_assert!(!key.as_str().is_empty() && key.as_str().len() <= MAX_KEY_LEN);
                prop_assert!(key.as_str().bytes().all(|b| (0x20..=0x7e).contains(&b)));
            }
        }
    }
}
