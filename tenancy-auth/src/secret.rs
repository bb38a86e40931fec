//! Random secrets and their hashes.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;
use tenancy_core::TokenHash;

/// 256 bits from the thread-local CSPRNG (ChaCha, seeded by the OS).
pub(crate) fn random_256() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes[..]);
    bytes
}

/// Constant-time equality of two hashes.
pub(crate) fn hashes_equal(a: &TokenHash, b: &TokenHash) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Whether two byte strings are equal, in time that depends only on their
/// lengths: the differences are folded eight bytes at a time and only the
/// folded word goes through `subtle`'s optimization barrier.
pub(crate) fn bytes_equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, a_rest) = a.as_chunks::<8>();
    let (b_words, b_rest) = b.as_chunks::<8>();
    let mut diff = 0u64;
    for (x, y) in a_words.iter().zip(b_words) {
        diff |= u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y);
    }
    for (x, y) in a_rest.iter().zip(b_rest) {
        diff |= u64::from(x ^ y);
    }
    diff.ct_eq(&0).into()
}

/// An opaque bearer secret (refresh token, email-verification or
/// password-reset token): a short prefix naming its kind, then 256 random
/// bits in URL-safe base64. Only its SHA-256 [`TokenHash`] is stored.
///
/// `Debug` prints the kind only; [`SecretToken::expose_secret`] gives the text.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken {
    text: String,
    prefix: &'static str,
}

impl SecretToken {
    /// A new token: `prefix` (which names its kind, such as `rt_`) and 256
    /// random bits. Other crates mint their bearer secrets with it (SCIM
    /// tokens) rather than with crypto of their own.
    pub fn generate(prefix: &'static str) -> Self {
        Self {
            text: format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random_256())),
            prefix,
        }
    }

    /// Accepts `text` if it has the shape of a token of this kind (the
    /// secret itself is checked by comparing [`SecretToken::hash`]).
    pub fn parse(prefix: &'static str, text: &str) -> Option<Self> {
        let body = text.strip_prefix(prefix)?;
        let decoded = (body.len() == 43)
            .then(|| URL_SAFE_NO_PAD.decode(body).ok())
            .flatten()?;
        (decoded.len() == 32).then(|| Self {
            text: text.to_owned(),
            prefix,
        })
    }

    /// The hash stored in place of the token.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(self.text.as_bytes())
    }

    /// The token text, to hand to its owner once.
    ///
    /// This is a secret: never log or store it.
    pub fn expose_secret(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretToken({}[redacted])", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bytes_equal_is_equality(
            a in proptest::collection::vec(any::<u8>(), 0..40),
            flip in any::<(usize, u8)>(),
            b in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            prop_assert_eq!(bytes_equal(&a, &b), a == b);
            prop_assert!(bytes_equal(&a, &a.clone()));
            if !a.is_empty() && flip.1 != 0 {
                let mut changed = a.clone();
                changed[flip.0 % a.len()] ^= flip.1;
                prop_assert!(!bytes_equal(&a, &changed));
            }
        }
    }

    #[test]
    fn tokens_round_trip_and_redact() {
        let token = SecretToken::generate("rt_");
        assert_eq!(token.expose_secret().len(), 3 + 43);
        let parsed = SecretToken::parse("rt_", token.expose_secret()).unwrap();
        assert_eq!(parsed.hash(), token.hash());
        assert_eq!(format!("{token:?}"), "SecretToken(rt_[redacted])");
        assert_ne!(SecretToken::generate("rt_").hash(), token.hash());
    }

    #[test]
    fn foreign_shapes_are_refused() {
        let token = SecretToken::generate("rt_");
        let text = token.expose_secret();
        for bad in [
            "",
            "rt_",
            &text[3..],
            &format!("ot_{}", &text[3..]),
            &text[..text.len() - 1],
            &format!("{text}A"),
        ] {
            assert!(SecretToken::parse("rt_", bad).is_none(), "{bad:?}");
        }
    }
}
