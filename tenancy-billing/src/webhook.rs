//! Verification of signed provider webhooks (Stripe's `Stripe-Signature`).
//!
//! The header is `t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=…]`, the
//! signature being over `"<t>.<raw body>"` keyed by the endpoint secret.
//! [`WebhookVerifier`]:
//!
//! - verifies **before** anything parses the body: [`WebhookVerifier::verify`]
//!   hands back a [`VerifiedPayload`], the only way to the bytes;
//! - tries every `v1` against every configured secret, so an endpoint
//!   secret can be rolled (Stripe signs with the old and the new secret for
//!   up to 24 hours) and several endpoints can share one route;
//! - rejects timestamps further than the tolerance (default 300 s) in the
//!   past or in the future, by an injectable [`Clock`];
//! - compares in constant time;
//! - bounds its work: headers over [`MAX_HEADER_LEN`] bytes or with more
//!   than [`MAX_SIGNATURES`] signatures are refused unread.
//!
//! Each refusal has its own [`SignatureError`] variant for logs and
//! metrics; over HTTP they all answer one `400`.
//!
//! ```
//! use std::sync::Arc;
//! use tenancy_billing::webhook::{WebhookSecret, WebhookVerifier};
//! use tenancy_core::{Clock, ManualClock};
//!
//! let secret = WebhookSecret::new("whsec_test")?;
//! let clock = Arc::new(ManualClock::new(time::macros::datetime!(2030-01-01 0:00 UTC)));
//! let body = br#"{"id":"evt_1","type":"invoice.paid"}"#;
//! let header = secret.sign(clock.now().unix_timestamp(), body);
//! let verifier = WebhookVerifier::new([secret]).with_clock(clock);
//! let payload = verifier.verify(Some(&header), body)?;
//! assert_eq!(payload.body(), body);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tenancy_core::{Clock, SystemClock};
use time::Duration;

/// The default tolerance between the signature's timestamp and now.
pub const DEFAULT_TOLERANCE: Duration = Duration::seconds(300);
/// Longest `Stripe-Signature` header read, in bytes.
pub const MAX_HEADER_LEN: usize = 4096;
/// Most `v1` signatures read from one header.
pub const MAX_SIGNATURES: usize = 16;
/// Most secrets one verifier holds.
pub const MAX_SECRETS: usize = 8;

type HmacSha256 = Hmac<Sha256>;

/// An endpoint's signing secret (`whsec_…`). `Debug` prints
/// `[redacted]`.
///
/// It holds the HMAC state already keyed with the secret (the key
/// schedule is done once, not per delivery); the secret's bytes themselves
/// are not kept.
#[derive(Clone)]
pub struct WebhookSecret(Arc<HmacSha256>);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

/// A secret is refused: empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("empty webhook secret")]
pub struct EmptySecret;

impl WebhookSecret {
    /// The secret as the provider shows it; its bytes (prefix included,
    /// as Stripe does) are the HMAC key.
    pub fn new(secret: &str) -> Result<Self, EmptySecret> {
        if secret.is_empty() {
            return Err(EmptySecret);
        }
        // HMAC accepts keys of any length: this cannot fail.
        let keyed = HmacSha256::new_from_slice(secret.as_bytes()).map_err(|_| EmptySecret)?;
        Ok(Self(Arc::new(keyed)))
    }

    fn mac(&self, timestamp: i64, body: &[u8]) -> [u8; 32] {
        let mut mac = (*self.0).clone();
        let mut digits = [0u8; 20];
        mac.update(decimal(timestamp, &mut digits));
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// A `Stripe-Signature` header for `body` at `timestamp` (unix
    /// seconds), as the provider would send: for tests and fake providers.
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        format!("t={timestamp},v1={}", hex(&self.mac(timestamp, body)))
    }
}

/// `n` in decimal, written into `buffer` (no allocation).
fn decimal(n: i64, buffer: &mut [u8; 20]) -> &[u8] {
    let mut at = buffer.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        // `rest % 10` is below 10.
        buffer[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        at -= 1;
        buffer[at] = b'-';
    }
    &buffer[at..]
}

/// Why a webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// No signature header.
    #[error("missing signature header")]
    Missing,
    /// The header is too long, not `key=value` pairs, or has several `t`.
    #[error("malformed signature header")]
    Malformed,
    /// No `t=` timestamp.
    #[error("signature header has no timestamp")]
    NoTimestamp,
    /// No `v1=` signature (or more than [`MAX_SIGNATURES`]).
    #[error("signature header has no v1 signature")]
    NoSignature,
    /// Signed longer ago than the tolerance (a replay, or a delivery held
    /// too long).
    #[error("signature timestamp is too old")]
    Expired,
    /// Signed further in the future than the tolerance.
    #[error("signature timestamp is in the future")]
    FutureDated,
    /// No signature matches any secret: tampered, or signed with another
    /// secret.
    #[error("no signature matches")]
    Mismatch,
}

/// A body whose signature was verified: the only way to its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedPayload<'a> {
    body: &'a [u8],
    timestamp: i64,
}

impl<'a> VerifiedPayload<'a> {
    /// The raw body.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The signature's timestamp (unix seconds).
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }
}

/// Verifies webhook signatures against one or more secrets.
///
/// Secrets are tried starting with the one that matched last: while an
/// endpoint secret is rolled every delivery carries a signature by each
/// secret, and otherwise one secret signs them all, so a delivery usually
/// costs one HMAC. Which secret matched is not secret; each comparison
/// stays constant-time.
#[derive(Clone)]
pub struct WebhookVerifier {
    secrets: Vec<WebhookSecret>,
    tolerance: Duration,
    clock: Arc<dyn Clock>,
    last_match: Arc<AtomicUsize>,
}

impl fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field("secrets", &self.secrets.len())
            .field("tolerance", &self.tolerance)
            .finish_non_exhaustive()
    }
}

/// A parsed header: the timestamp and up to [`MAX_SIGNATURES`] signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    /// `t`, unix seconds.
    pub timestamp: i64,
    /// The `v1` values that are 64 hex digits (others cannot match and
    /// are skipped).
    pub signatures: Vec<[u8; 32]>,
}

impl SignatureHeader {
    /// Parses a `Stripe-Signature` header. Schemes other than `t` and `v1`
    /// (`v0`, future ones) are ignored.
    pub fn parse(header: &str) -> Result<Self, SignatureError> {
        let parsed = ParsedHeader::parse(header)?;
        Ok(Self {
            timestamp: parsed.timestamp,
            signatures: parsed.signatures().to_vec(),
        })
    }
}

/// [`SignatureHeader`] without allocating, for [`WebhookVerifier::verify`].
struct ParsedHeader {
    timestamp: i64,
    signatures: [[u8; 32]; MAX_SIGNATURES],
    len: usize,
}

impl ParsedHeader {
    fn signatures(&self) -> &[[u8; 32]] {
        &self.signatures[..self.len]
    }

    fn parse(header: &str) -> Result<Self, SignatureError> {
        if header.len() > MAX_HEADER_LEN {
            return Err(SignatureError::Malformed);
        }
        let mut timestamp = None;
        let mut signatures = [[0u8; 32]; MAX_SIGNATURES];
        let mut len = 0usize;
        let mut v1_seen = 0usize;
        for item in header.split(',') {
            let (key, value) = item
                .trim()
                .split_once('=')
                .ok_or(SignatureError::Malformed)?;
            match key {
                "t" => {
                    if timestamp.is_some() {
                        return Err(SignatureError::Malformed);
                    }
                    let t: i64 = value.parse().map_err(|_| SignatureError::Malformed)?;
                    timestamp = Some(t);
                }
                "v1" => {
                    v1_seen += 1;
                    if v1_seen > MAX_SIGNATURES {
                        return Err(SignatureError::NoSignature);
                    }
                    if let (Some(sig), Some(slot)) = (unhex32(value), signatures.get_mut(len)) {
                        *slot = sig;
                        len += 1;
                    }
                }
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::NoTimestamp)?;
        if v1_seen == 0 {
            return Err(SignatureError::NoSignature);
        }
        Ok(Self {
            timestamp,
            signatures,
            len,
        })
    }
}

impl WebhookVerifier {
    /// A verifier accepting signatures by any of `secrets` (the first
    /// [`MAX_SECRETS`]), with the default tolerance and the system clock.
    pub fn new(secrets: impl IntoIterator<Item = WebhookSecret>) -> Self {
        Self {
            secrets: secrets.into_iter().take(MAX_SECRETS).collect(),
            tolerance: DEFAULT_TOLERANCE,
            clock: Arc::new(SystemClock),
            last_match: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Sets the tolerance (negative counts as zero).
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance.max(Duration::ZERO);
        self
    }

    /// Uses `clock` for the timestamp check.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Verifies `body` against the `Stripe-Signature` `header`.
    pub fn verify<'a>(
        &self,
        header: Option<&str>,
        body: &'a [u8],
    ) -> Result<VerifiedPayload<'a>, SignatureError> {
        let header = ParsedHeader::parse(header.ok_or(SignatureError::Missing)?)?;
        let now = self.clock.now().unix_timestamp();
        let age = i128::from(now) - i128::from(header.timestamp);
        let tolerance = i128::from(self.tolerance.whole_seconds());
        if age > tolerance {
            return Err(SignatureError::Expired);
        }
        if -age > tolerance {
            return Err(SignatureError::FutureDated);
        }
        let count = self.secrets.len();
        let first = self.last_match.load(Ordering::Relaxed);
        for offset in 0..count {
            let index = (first + offset) % count;
            let Some(secret) = self.secrets.get(index) else {
                continue;
            };
            let expected = secret.mac(header.timestamp, body);
            let mut matched = subtle::Choice::from(0);
            for signature in header.signatures() {
                matched |= expected.ct_eq(signature);
            }
            if bool::from(matched) {
                if index != first {
                    self.last_match.store(index, Ordering::Relaxed);
                }
                return Ok(VerifiedPayload {
                    body,
                    timestamp: header.timestamp,
                });
            }
        }
        Err(SignatureError::Mismatch)
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let byte = (digit(pair[0])? << 4) | digit(pair[1])?;
        *out.get_mut(i)? = byte;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tenancy_core::ManualClock;
    use time::macros::datetime;

    const NOW: i64 = 1_893_456_000; // 2030-01-01

    fn clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(datetime!(2030-01-01 0:00 UTC)))
    }

    fn secret(s: &str) -> WebhookSecret {
        WebhookSecret::new(s).unwrap()
    }

    fn verifier(secrets: &[&str]) -> WebhookVerifier {
        WebhookVerifier::new(secrets.iter().map(|s| secret(s))).with_clock(clock())
    }

    #[test]
    fn timestamps_are_written_as_decimal_text() {
        let mut buffer = [0u8; 20];
        for n in [0, 7, -7, 10, 1_893_456_000, i64::MAX, i64::MIN] {
            assert_eq!(decimal(n, &mut buffer), n.to_string().as_bytes());
        }
    }

    #[test]
    fn the_secret_that_matched_last_is_tried_first_and_others_still_verify() {
        let body = b"{}";
        let v = verifier(&["whsec_old", "whsec_new"]);
        let new = secret("whsec_new").sign(NOW, body);
        let old = secret("whsec_old").sign(NOW, body);
        assert!(v.verify(Some(&new), body).is_ok());
        assert_eq!(v.last_match.load(Ordering::Relaxed), 1);
        assert!(v.verify(Some(&old), body).is_ok());
        assert_eq!(v.last_match.load(Ordering::Relaxed), 0);
        assert_eq!(
            v.verify(Some(&secret("whsec_x").sign(NOW, body)), body),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn known_vector() {
        // HMAC-SHA256(key "whsec_test", "1893456000.{}"), computed with
        // Python's hmac module.
        let header = secret("whsec_test").sign(NOW, b"{}");
        assert_eq!(
            header,
            "t=1893456000,v1=07b6305f3ee4aa9960c246660b26a184d45a77e755738b2301ff660c1e7fb0fa"
        );
        assert!(
            verifier(&["whsec_test"])
                .verify(Some(&header), b"{}")
                .is_ok()
        );
    }

    #[test]
    fn each_refusal_is_distinct() {
        let v = verifier(&["whsec_a"]);
        let body = br#"{"id":"evt_1"}"#;
        let good = secret("whsec_a").sign(NOW, body);
        assert_eq!(v.verify(None, body), Err(SignatureError::Missing));
        assert_eq!(
            v.verify(Some("garbage"), body),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            v.verify(Some("t=1,t=2,v1=00"), body),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            v.verify(Some("t=abc,v1=00"), body),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            v.verify(Some("v1=00"), body),
            Err(SignatureError::NoTimestamp)
        );
        assert_eq!(
            v.verify(Some(&format!("t={NOW},v0=00")), body),
            Err(SignatureError::NoSignature)
        );
        assert_eq!(
            v.verify(Some(&secret("whsec_a").sign(NOW - 301, body)), body),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            v.verify(Some(&secret("whsec_a").sign(NOW + 301, body)), body),
            Err(SignatureError::FutureDated)
        );
        assert_eq!(
            v.verify(Some(&good), br#"{"id":"evt_2"}"#),
            Err(SignatureError::Mismatch),
            "tampered"
        );
        assert_eq!(
            v.verify(Some(&secret("whsec_b").sign(NOW, body)), body),
            Err(SignatureError::Mismatch),
            "wrong secret"
        );
        assert_eq!(
            v.verify(Some(&format!("t={NOW},v1=zz")), body),
            Err(SignatureError::Mismatch),
            "unreadable v1"
        );
        assert!(v.verify(Some(&good), body).is_ok());
        assert!(
            v.verify(Some(&secret("whsec_a").sign(NOW - 300, body)), body)
                .is_ok()
        );
        assert!(
            v.verify(Some(&secret("whsec_a").sign(NOW + 300, body)), body)
                .is_ok()
        );
        let long = format!("{good},{}", "x=1,".repeat(MAX_HEADER_LEN));
        assert_eq!(v.verify(Some(&long), body), Err(SignatureError::Malformed));
        let many = format!("t={NOW}{}", ",v1=00".repeat(MAX_SIGNATURES + 1));
        assert_eq!(
            v.verify(Some(&many), body),
            Err(SignatureError::NoSignature)
        );
    }

    #[test]
    fn rotation_any_v1_any_secret() {
        let body = b"payload";
        let old = secret("whsec_old").sign(NOW, body);
        let new = secret("whsec_new").sign(NOW, body);
        let new_sig = new.split_once(",v1=").unwrap().1;
        // Stripe sends both signatures during a roll: the new one last.
        let both = format!("{old},v1={new_sig},v0=ignored");
        assert!(verifier(&["whsec_new"]).verify(Some(&both), body).is_ok());
        assert!(verifier(&["whsec_old"]).verify(Some(&both), body).is_ok());
        assert!(
            verifier(&["whsec_other", "whsec_new"])
                .verify(Some(&new), body)
                .is_ok()
        );
        assert_eq!(
            verifier(&[]).verify(Some(&new), body),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn tolerance_and_clock_are_injectable() {
        let c = clock();
        let v = WebhookVerifier::new([secret("whsec_a")])
            .with_clock(c.clone())
            .with_tolerance(Duration::seconds(10));
        let header = secret("whsec_a").sign(NOW, b"x");
        assert!(v.verify(Some(&header), b"x").is_ok());
        c.advance(Duration::seconds(11));
        assert_eq!(v.verify(Some(&header), b"x"), Err(SignatureError::Expired));
        assert_eq!(
            format!("{:?}", secret("whsec_topsecret")),
            "WebhookSecret([redacted])"
        );
        assert!(!format!("{v:?}").contains("whsec"));
    }

    proptest! {
        #[test]
        fn signed_bodies_verify_and_any_change_fails(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            key in "[a-zA-Z0-9_]{1,40}",
            skew in -300i64..300,
            flip in any::<proptest::sample::Index>(),
            bit in 0u8..8,
        ) {
            let s = secret(&key);
            let header = s.sign(NOW + skew, &body);
            let v = WebhookVerifier::new([s]).with_clock(clock());
            prop_assert!(v.verify(Some(&header), &body).is_ok());
            if !body.is_empty() {
                let mut tampered = body.clone();
                tampered[flip.index(body.len())] ^= 1 << bit;
                prop_assert_eq!(v.verify(Some(&header), &tampered), Err(SignatureError::Mismatch));
            }
            let other = format!("t={},v1={}", NOW + skew + 1, header.split_once(",v1=").unwrap().1);
            prop_assert_eq!(v.verify(Some(&other), &body), Err(SignatureError::Mismatch));
        }

        #[test]
        fn parser_never_panics_on_any_text(header in ".{0,600}") {
            let _ = SignatureHeader::parse(&header);
            let _ = verifier(&["whsec_a"]).verify(Some(&header), b"{}");
        }

        #[test]
        fn parser_never_panics_on_header_like_text(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("t".to_string()), Just("v1".to_string()), Just("v0".to_string()),
                    "[a-z0-9]{0,3}",
                ].prop_flat_map(|k| (Just(k), prop_oneof![
                    "-?[0-9]{0,20}", "[0-9a-fA-F]{0,70}", "[=, ]{0,3}", ".{0,8}",
                ])),
                0..24,
            ),
            sep in prop_oneof![Just(","), Just(", "), Just(",,"), Just("=")],
        ) {
            let header = parts
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(sep);
            if let Ok(parsed) = SignatureHeader::parse(&header) {
                prop_assert!(parsed.signatures.len() <= MAX_SIGNATURES);
            }
            let result = verifier(&["whsec_a"]).verify(Some(&header), b"{}");
            prop_assert!(result.is_err());
        }
    }
}
