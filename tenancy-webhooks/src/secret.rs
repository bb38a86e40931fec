//! Endpoint signing secrets (Standard Webhooks `whsec_` format) and their
//! encryption at rest.
//!
//! A secret is shown once, when the endpoint is created or its secret
//! rotated; the store keeps it only as a JWE (RFC 7516, compact form, `alg`
//! `dir`, `enc` `A256GCM`) under a key-encryption key the host supplies
//! (a secret manager, an environment variable), never from the database
//! the ciphertexts are in. The key's id is in each JWE's `kid`, so several
//! keys can be configured at once: the current one encrypts, all decrypt.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use josekit::jwe::{self, JweHeader};

use crate::error::WebhookError;

const PREFIX: &str = "whsec_";
/// Fewest random bytes in a secret, per the Standard Webhooks spec.
pub const MIN_SECRET_BYTES: usize = 24;
/// Most random bytes in a secret, per the Standard Webhooks spec.
pub const MAX_SECRET_BYTES: usize = 64;
const GENERATED_BYTES: usize = 32;

/// An endpoint's signing secret: `whsec_` followed by the base64 of 24 to
/// 64 random bytes. `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    /// A fresh secret of 32 random bytes.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; GENERATED_BYTES];
        rand::fill(&mut bytes[..]);
        Self(bytes)
    }

    /// Parses the `whsec_…` text form.
    pub fn parse(text: &str) -> Result<Self, WebhookError> {
        let invalid = || {
            WebhookError::InvalidInput(format!(
                "a webhook secret is {PREFIX} and the base64 of {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes"
            ))
        };
        let encoded = text.strip_prefix(PREFIX).ok_or_else(invalid)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| invalid())?;
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
            return Err(invalid());
        }
        Ok(Self(bytes))
    }

    /// The `whsec_…` text to show the tenant once.
    ///
    /// Security: whoever holds this text can forge deliveries to the
    /// endpoint; do not log it or store it in plaintext.
    pub fn expose_secret(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// The raw key bytes the HMAC is computed with.
    pub(crate) fn key_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

/// A 256-bit key-encryption key with an id. `Debug` shows its id only.
#[derive(Clone)]
pub struct SecretKey {
    id: String,
    key: [u8; 32],
}

impl SecretKey {
    /// A key named `id` (1 to 64 characters of `A-Z a-z 0-9 . _ -`) with the 32 bytes `key`.
    pub fn new(id: impl Into<String>, key: [u8; 32]) -> Result<Self, WebhookError> {
        let id = id.into();
        let valid = (1..=64).contains(&id.len())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(WebhookError::InvalidInput(
                "a key-encryption key id is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"
                    .into(),
            ));
        }
        Ok(Self { id, key })
    }

    /// A key from its base64 text (standard alphabet).
    pub fn from_base64(id: impl Into<String>, text: &str) -> Result<Self, WebhookError> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| {
            WebhookError::InvalidInput("a key-encryption key is the base64 of 32 bytes".into())
        })?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| {
            WebhookError::InvalidInput("a key-encryption key is the base64 of 32 bytes".into())
        })?;
        Self::new(id, key)
    }

    /// A fresh random key named `id`.
    pub fn generate(id: impl Into<String>) -> Result<Self, WebhookError> {
        let mut key = [0u8; 32];
        rand::fill(&mut key[..]);
        Self::new(id, key)
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}, [redacted])", self.id)
    }
}

/// A secret as stored: a JWE in compact form.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret(String);

impl SealedSecret {
    /// Wraps a stored compact JWE.
    pub fn from_compact(compact: impl Into<String>) -> Self {
        Self(compact.into())
    }

    /// The compact JWE text.
    pub fn as_compact(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealedSecret([ciphertext])")
    }
}

/// Encrypts secrets for storage and decrypts them for signing.
#[derive(Clone)]
pub struct SecretCipher {
    current: SecretKey,
    all: HashMap<String, SecretKey>,
}

impl fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretCipher")
            .field("current", &self.current.id)
            .field("keys", &self.all.len())
            .finish()
    }
}

const ENC: &str = "A256GCM";

impl SecretCipher {
    /// Encrypts under `current`, decrypts with it.
    pub fn new(current: SecretKey) -> Self {
        let mut all = HashMap::new();
        all.insert(current.id.clone(), current.clone());
        Self { current, all }
    }

    /// Also decrypts secrets sealed under `older` (while re-encrypting after
    /// a key rotation).
    pub fn with_previous(mut self, older: SecretKey) -> Self {
        self.all.entry(older.id.clone()).or_insert(older);
        self
    }

    /// Encrypts `secret` under the current key.
    pub fn seal(&self, secret: &WebhookSecret) -> Result<SealedSecret, WebhookError> {
        let mut header = JweHeader::new();
        header.set_content_encryption(ENC);
        header.set_key_id(&self.current.id);
        let encrypter = jwe::Dir
            .encrypter_from_bytes(self.current.key)
            .map_err(|e| WebhookError::Secret(e.into()))?;
        let compact = jwe::serialize_compact(&secret.0, &header, &encrypter)
            .map_err(|e| WebhookError::Secret(e.into()))?;
        Ok(SealedSecret(compact))
    }

    /// Decrypts a stored secret with the key named in its header.
    pub fn open(&self, sealed: &SealedSecret) -> Result<WebhookSecret, WebhookError> {
        let kid = kid_of(&sealed.0)
            .ok_or_else(|| WebhookError::Secret("the sealed secret names no key".into()))?;
        let key = self.all.get(&kid).ok_or_else(|| {
            WebhookError::Secret(format!("no key-encryption key {kid:?} is configured").into())
        })?;
        let decrypter = jwe::Dir
            .decrypter_from_bytes(key.key)
            .map_err(|e| WebhookError::Secret(e.into()))?;
        let (bytes, header) = jwe::deserialize_compact(&sealed.0, &decrypter)
            .map_err(|e| WebhookError::Secret(e.into()))?;
        if header.content_encryption() != Some(ENC) {
            return Err(WebhookError::Secret("unexpected content encryption".into()));
        }
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
            return Err(WebhookError::Secret(
                "the decrypted secret has the wrong length".into(),
            ));
        }
        Ok(WebhookSecret(bytes))
    }
}

fn kid_of(compact: &str) -> Option<String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = compact.split('.').next()?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    header.get("kid")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip_and_redact() {
        let secret = WebhookSecret::generate();
        let text = secret.expose_secret();
        assert!(text.starts_with("whsec_"));
        assert_eq!(WebhookSecret::parse(&text).unwrap(), secret);
        assert_eq!(format!("{secret:?}"), "WebhookSecret([redacted])");
        assert!(WebhookSecret::parse("whsec_AAAA").is_err());
        assert!(WebhookSecret::parse("nope").is_err());
    }

    #[test]
    fn sealing_round_trips_and_needs_the_key() {
        let cipher = SecretCipher::new(SecretKey::generate("k1").unwrap());
        let secret = WebhookSecret::generate();
        let sealed = cipher.seal(&secret).unwrap();
        assert!(!sealed.as_compact().contains(&secret.expose_secret()[6..]));
        assert_eq!(cipher.open(&sealed).unwrap(), secret);

        let other = SecretCipher::new(SecretKey::generate("k2").unwrap());
        assert!(matches!(other.open(&sealed), Err(WebhookError::Secret(_))));
        let same_id = SecretCipher::new(SecretKey::generate("k1").unwrap());
        assert!(matches!(
            same_id.open(&sealed),
            Err(WebhookError::Secret(_))
        ));

        let rotated = SecretCipher::new(SecretKey::generate("k2").unwrap())
            .with_previous(SecretKey::new("k1", cipher.current.key).unwrap());
        assert_eq!(rotated.open(&sealed).unwrap(), secret);
    }
}
