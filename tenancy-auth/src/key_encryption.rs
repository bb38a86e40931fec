//! Private signing keys encrypted at rest (envelope encryption).
//!
//! Each private key is stored as a JWE (RFC 7516) in compact serialization:
//! `alg` `dir`, `enc` `A256GCM`, and the key-encryption key's id as the
//! header's `kid`, so several key-encryption keys can be held at once: the
//! current one encrypts, all of them decrypt. The key-encryption keys come
//! from the host (a secret manager, an environment variable), never from
//! the database the signing keys are stored in.
//!
//! # Rotating the key-encryption key
//!
//! 1. Configure the new key as current and keep the old one as previous
//!    (`KeyEncryption::key(new).with_previous(old)`) on every replica.
//! 2. Call [`crate::Auth::reencrypt_signing_keys`] once: every stored key
//!    is re-encrypted under the new key.
//! 3. Drop the old key from the configuration.
//!
//! A replica still holding only the old key cannot read keys re-encrypted
//! under the new one, so finish step 1 everywhere before step 2.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use josekit::jwe::{self, JweDecrypter, JweHeader};
use josekit::jwk::Jwk;
use serde_json::{Map, Value};

use crate::keys::{KeyError, PrivateJwk};

/// A 256-bit key that encrypts private signing keys at rest. `Debug` shows
/// its id only.
#[derive(Clone)]
pub struct KeyEncryptionKey {
    id: String,
    key: [u8; 32],
}

impl KeyEncryptionKey {
    /// A key named `id` (1 to 64 characters of `A-Z a-z 0-9 . _ -`, stored
    /// in each encrypted key's header) with the 32 bytes `key`.
    pub fn new(id: impl Into<String>, key: [u8; 32]) -> Result<Self, KeyError> {
        let id = id.into();
        let valid = (1..=64).contains(&id.len())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(KeyError::InvalidEncryptionKey);
        }
        Ok(Self { id, key })
    }

    /// A key from its base64 text (standard or URL-safe, padded or not),
    /// as kept in a secret manager or an environment variable.
    pub fn from_base64(id: impl Into<String>, text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
            .map_err(|_| KeyError::InvalidEncryptionKey)?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::InvalidEncryptionKey)?;
        Self::new(id, key)
    }

    /// A fresh random key named `id`.
    pub fn generate(id: impl Into<String>) -> Result<Self, KeyError> {
        Self::new(id, crate::secret::random_256())
    }

    /// A random key with an id known to be valid.
    #[cfg(feature = "memory")]
    pub(crate) fn random(id: &'static str) -> Self {
        Self {
            id: id.to_owned(),
            key: crate::secret::random_256(),
        }
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key in standard base64, to store in a secret manager. This is
    /// a secret: never log it.
    pub fn expose_secret_base64(&self) -> String {
        STANDARD.encode(self.key)
    }
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyEncryptionKey({}, [redacted])", self.id)
    }
}

/// How private signing keys are protected at rest: a setting of
/// [`crate::AuthConfig`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum KeyEncryption {
    /// No key given (the default). A store that outlives the process (such
    /// as Postgres) refuses to start, with
    /// [`crate::ConfigError::KeyEncryptionRequired`]; a store in memory
    /// uses a key it generated, as short-lived as its keys.
    #[default]
    Unconfigured,
    /// Envelope encryption: `current` encrypts new and re-encrypted keys;
    /// it and every one of `previous` decrypt.
    Keys {
        /// The key that encrypts.
        current: KeyEncryptionKey,
        /// Older keys, kept to decrypt until every stored key is
        /// re-encrypted ([`crate::Auth::reencrypt_signing_keys`]).
        previous: Vec<KeyEncryptionKey>,
    },
    /// Private keys stored as plain JWKs. Insecure: anyone who can read the
    /// key table can mint a token for any user in any tenant. Only for
    /// throwaway development databases.
    InsecurePlaintext,
}

impl KeyEncryption {
    /// Encrypts under `current`.
    pub fn key(current: KeyEncryptionKey) -> Self {
        KeyEncryption::Keys {
            current,
            previous: Vec::new(),
        }
    }

    /// Also decrypts with `older`. Only for [`KeyEncryption::Keys`]; other
    /// settings are returned unchanged.
    pub fn with_previous(self, older: KeyEncryptionKey) -> Self {
        match self {
            KeyEncryption::Keys {
                current,
                mut previous,
            } => {
                previous.push(older);
                KeyEncryption::Keys { current, previous }
            }
            other => other,
        }
    }
}

/// A private signing key as stored.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum StoredPrivateKey {
    /// The private JWK encrypted as a JWE.
    Encrypted(EncryptedJwk),
    /// The private JWK in the clear: written before encryption was
    /// configured, or under [`KeyEncryption::InsecurePlaintext`].
    Plaintext(PrivateJwk),
}

/// A private JWK encrypted as a compact JWE (`dir`, `A256GCM`). `Debug`
/// shows which key-encryption key it is under, not the ciphertext.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptedJwk(String);

impl EncryptedJwk {
    /// Wraps a JWE read from storage.
    pub fn from_compact(jwe: impl Into<String>) -> Self {
        Self(jwe.into())
    }

    /// The compact serialization, for storage.
    pub fn as_compact(&self) -> &str {
        &self.0
    }

    /// The id of the key-encryption key named in its header.
    pub fn key_encryption_key_id(&self) -> Option<String> {
        let header = self.0.split('.').next()?;
        let header: Map<String, Value> =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        header.get("kid")?.as_str().map(str::to_owned)
    }
}

impl fmt::Debug for EncryptedJwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key_encryption_key_id() {
            Some(id) => write!(f, "EncryptedJwk(under {id})"),
            None => f.write_str("EncryptedJwk(unreadable header)"),
        }
    }
}

/// [`KeyEncryption`] resolved at build time.
#[derive(Clone)]
pub(crate) enum Sealer {
    Encrypt {
        current: KeyEncryptionKey,
        all: HashMap<String, KeyEncryptionKey>,
    },
    Plaintext,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sealer::Encrypt { current, all } => f
                .debug_struct("Encrypt")
                .field("current", &current.id)
                .field("keys", &all.len())
                .finish(),
            Sealer::Plaintext => f.write_str("Plaintext"),
        }
    }
}

/// The JWE content encryption.
const ENC: &str = "A256GCM";

impl Sealer {
    pub(crate) fn new(current: KeyEncryptionKey, previous: Vec<KeyEncryptionKey>) -> Self {
        let mut all: HashMap<String, KeyEncryptionKey> = previous
            .into_iter()
            .map(|key| (key.id.clone(), key))
            .collect();
        all.insert(current.id.clone(), current.clone());
        Sealer::Encrypt { current, all }
    }

    /// Protects `jwk` of the signing key `kid` for storage.
    pub(crate) fn seal(&self, kid: &str, jwk: &PrivateJwk) -> Result<StoredPrivateKey, KeyError> {
        let Sealer::Encrypt { current, .. } = self else {
            return Ok(StoredPrivateKey::Plaintext(jwk.clone()));
        };
        let sealing = || KeyError::Unusable {
            kid: kid.to_owned(),
        };
        let mut header = JweHeader::new();
        header.set_content_encryption(ENC);
        header.set_key_id(&current.id);
        let encrypter = jwe::Dir
            .encrypter_from_bytes(current.key)
            .map_err(|_| sealing())?;
        let payload = serde_json::to_vec(jwk.expose_secret()).map_err(|_| sealing())?;
        let compact =
            jwe::serialize_compact(&payload, &header, &encrypter).map_err(|_| sealing())?;
        Ok(StoredPrivateKey::Encrypted(EncryptedJwk(compact)))
    }

    /// Reads the private JWK of the stored key `kid`. The decrypted JWK
    /// must name `kid` itself, so a ciphertext moved to another row is
    /// refused.
    pub(crate) fn open(&self, kid: &str, stored: &StoredPrivateKey) -> Result<Jwk, KeyError> {
        let unusable = || KeyError::Unusable {
            kid: kid.to_owned(),
        };
        let map = match stored {
            StoredPrivateKey::Plaintext(jwk) => jwk.expose_secret().clone(),
            StoredPrivateKey::Encrypted(encrypted) => {
                let key_id = encrypted.key_encryption_key_id();
                let Sealer::Encrypt { all, .. } = self else {
                    return Err(KeyError::EncryptionKeyMissing {
                        kid: kid.to_owned(),
                        key_encryption_key: key_id,
                    });
                };
                let Some(key) = key_id.as_deref().and_then(|id| all.get(id)) else {
                    return Err(KeyError::EncryptionKeyMissing {
                        kid: kid.to_owned(),
                        key_encryption_key: key_id,
                    });
                };
                let decrypter = jwe::Dir
                    .decrypter_from_bytes(key.key)
                    .map_err(|_| unusable())?;
                let (payload, header) = jwe::deserialize_compact(
                    encrypted.as_compact(),
                    &decrypter as &dyn JweDecrypter,
                )
                .map_err(|_| KeyError::Undecryptable {
                    kid: kid.to_owned(),
                })?;
                if header.content_encryption() != Some(ENC) {
                    return Err(KeyError::Undecryptable {
                        kid: kid.to_owned(),
                    });
                }
                serde_json::from_slice(&payload).map_err(|_| unusable())?
            }
        };
        let jwk = Jwk::from_map(map).map_err(|_| unusable())?;
        if jwk.key_id() != Some(kid) {
            return Err(unusable());
        }
        Ok(jwk)
    }

    /// Protects a secret string bound to `context` (the record it belongs
    /// to): a compact JWE whose payload names `context`, or, when keys are
    /// stored in plaintext, the marked plaintext.
    #[cfg(feature = "sso")]
    pub(crate) fn seal_text(&self, context: &str, secret: &str) -> Result<String, KeyError> {
        let sealing = || KeyError::Unusable {
            kid: context.to_owned(),
        };
        let payload = serde_json::to_vec(&serde_json::json!({ "ctx": context, "secret": secret }))
            .map_err(|_| sealing())?;
        let Sealer::Encrypt { current, .. } = self else {
            return Ok(format!("plain.{}", URL_SAFE_NO_PAD.encode(payload)));
        };
        let mut header = JweHeader::new();
        header.set_content_encryption(ENC);
        header.set_key_id(&current.id);
        let encrypter = jwe::Dir
            .encrypter_from_bytes(current.key)
            .map_err(|_| sealing())?;
        jwe::serialize_compact(&payload, &header, &encrypter).map_err(|_| sealing())
    }

    /// Opens what [`Sealer::seal_text`] sealed for the same `context`; a
    /// sealed value moved to another record is refused, and so is a
    /// plaintext value when a key-encryption key is configured.
    #[cfg(feature = "sso")]
    pub(crate) fn open_text(&self, context: &str, stored: &str) -> Result<String, KeyError> {
        let undecryptable = || KeyError::Undecryptable {
            kid: context.to_owned(),
        };
        let payload = if let Some(plain) = stored.strip_prefix("plain.") {
            // With a key-encryption key configured every secret is sealed:
            // a plaintext value was written past the service (a database
            // edit), and opening it would let that writer choose the secret.
            if matches!(self, Sealer::Encrypt { .. }) {
                return Err(undecryptable());
            }
            URL_SAFE_NO_PAD.decode(plain).map_err(|_| undecryptable())?
        } else {
            let encrypted = EncryptedJwk::from_compact(stored);
            let key_id = encrypted.key_encryption_key_id();
            let Sealer::Encrypt { all, .. } = self else {
                return Err(KeyError::EncryptionKeyMissing {
                    kid: context.to_owned(),
                    key_encryption_key: key_id,
                });
            };
            let Some(key) = key_id.as_deref().and_then(|id| all.get(id)) else {
                return Err(KeyError::EncryptionKeyMissing {
                    kid: context.to_owned(),
                    key_encryption_key: key_id,
                });
            };
            let decrypter = jwe::Dir
                .decrypter_from_bytes(key.key)
                .map_err(|_| undecryptable())?;
            let (payload, header) =
                jwe::deserialize_compact(stored, &decrypter as &dyn JweDecrypter)
                    .map_err(|_| undecryptable())?;
            if header.content_encryption() != Some(ENC) {
                return Err(undecryptable());
            }
            payload
        };
        let value: Value = serde_json::from_slice(&payload).map_err(|_| undecryptable())?;
        if value.get("ctx").and_then(Value::as_str) != Some(context) {
            return Err(undecryptable());
        }
        value
            .get("secret")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(undecryptable)
    }

    /// Whether `stored` should be rewritten under the current key (it is
    /// plaintext, or under an older key).
    pub(crate) fn is_stale(&self, stored: &StoredPrivateKey) -> bool {
        match (self, stored) {
            (Sealer::Plaintext, _) => false,
            (Sealer::Encrypt { .. }, StoredPrivateKey::Plaintext(_)) => true,
            (Sealer::Encrypt { current, .. }, StoredPrivateKey::Encrypted(encrypted)) => {
                encrypted.key_encryption_key_id().as_deref() != Some(current.id.as_str())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyAlgorithm, StoredKey};
    use time::OffsetDateTime;

    fn plain_key() -> (String, PrivateJwk) {
        let key = StoredKey::generate(KeyAlgorithm::EdDsa, OffsetDateTime::now_utc()).unwrap();
        match key.private_key {
            StoredPrivateKey::Plaintext(jwk) => (key.kid, jwk),
            other => panic!("generated keys start in plaintext, got {other:?}"),
        }
    }

    #[test]
    fn sealed_keys_hide_the_material_and_open_with_any_held_key() {
        let (kid, jwk) = plain_key();
        let old = KeyEncryptionKey::generate("old").unwrap();
        let new = KeyEncryptionKey::generate("new").unwrap();
        let sealed = Sealer::new(old.clone(), vec![]).seal(&kid, &jwk).unwrap();
        let StoredPrivateKey::Encrypted(encrypted) = &sealed else {
            panic!("not encrypted");
        };
        let d = jwk.expose_secret()["d"].as_str().unwrap();
        assert!(!encrypted.as_compact().contains(d));
        assert_eq!(encrypted.key_encryption_key_id().as_deref(), Some("old"));
        assert_eq!(format!("{encrypted:?}"), "EncryptedJwk(under old)");
        // Rotation: the new key encrypts, the old one still decrypts.
        let rotated = Sealer::new(new.clone(), vec![old.clone()]);
        assert!(rotated.is_stale(&sealed));
        assert_eq!(rotated.open(&kid, &sealed).unwrap().key_id(), Some(&*kid));
        // Without the old key it cannot be read, and says which key it needs.
        match Sealer::new(new, vec![]).open(&kid, &sealed) {
            Err(KeyError::EncryptionKeyMissing {
                key_encryption_key, ..
            }) => assert_eq!(key_encryption_key.as_deref(), Some("old")),
            other => panic!("expected a missing key, got {other:?}"),
        }
        // The same id with other key material fails authentication.
        let impostor = KeyEncryptionKey::generate("old").unwrap();
        assert!(matches!(
            Sealer::new(impostor, vec![]).open(&kid, &sealed),
            Err(KeyError::Undecryptable { .. })
        ));
        // A ciphertext moved to another key's row is refused.
        assert!(matches!(
            Sealer::new(old, vec![]).open("another-kid", &sealed),
            Err(KeyError::Unusable { .. })
        ));
    }

    #[test]
    fn encryption_keys_parse_and_redact() {
        let key = KeyEncryptionKey::generate("kek-2026").unwrap();
        let text = key.expose_secret_base64();
        let again = KeyEncryptionKey::from_base64("kek-2026", &text).unwrap();
        assert_eq!(again.key, key.key);
        let url_safe = URL_SAFE_NO_PAD.encode(key.key);
        assert_eq!(
            KeyEncryptionKey::from_base64("kek-2026", &url_safe)
                .unwrap()
                .key,
            key.key
        );
        assert!(!format!("{key:?}").contains(&text));
        let config = crate::AuthConfig::new("https://x.test", "x")
            .with_key_encryption(KeyEncryption::key(key.clone()).with_previous(again.clone()));
        let debug = format!("{config:?}");
        assert!(
            debug.contains("kek-2026") && !debug.contains(&text),
            "{debug}"
        );
        for bad in ["", "c2hvcnQ=", "not base64!"] {
            assert!(KeyEncryptionKey::from_base64("x", bad).is_err(), "{bad:?}");
        }
        assert!(KeyEncryptionKey::new("", [0; 32]).is_err());
        assert!(KeyEncryptionKey::new("has space", [0; 32]).is_err());
    }

    #[cfg(feature = "sso")]
    #[test]
    fn sealed_text_is_bound_to_its_context_and_opens_after_rotation() {
        let old = KeyEncryptionKey::new("old", [1; 32]).unwrap();
        let sealed = Sealer::new(old.clone(), vec![])
            .seal_text("connection-a", "client-secret")
            .unwrap();
        assert!(!sealed.contains("client-secret"));
        let rotated = Sealer::new(KeyEncryptionKey::new("new", [2; 32]).unwrap(), vec![old]);
        assert_eq!(
            rotated.open_text("connection-a", &sealed).unwrap(),
            "client-secret"
        );
        assert!(
            rotated.open_text("connection-b", &sealed).is_err(),
            "moved to another row"
        );
        let stranger = Sealer::new(KeyEncryptionKey::new("old", [3; 32]).unwrap(), vec![]);
        assert!(
            stranger.open_text("connection-a", &sealed).is_err(),
            "wrong key"
        );
        let plain = Sealer::Plaintext.seal_text("c", "s").unwrap();
        assert_eq!(Sealer::Plaintext.open_text("c", &plain).unwrap(), "s");
        assert!(
            rotated.open_text("c", &plain).is_err(),
            "no plaintext once a key-encryption key is configured"
        );
    }
}
