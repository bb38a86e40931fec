//! Token-signing keys: generated as JWK with josekit, kept in a
//! [`KeyStore`](crate::KeyStore) with the private half encrypted (see
//! [`crate::key_encryption`]), rotated, and published as a JWKS.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use josekit::jwk::Jwk;
use josekit::jwk::KeyPair as _;
use josekit::jwk::alg::ec::{EcCurve, EcKeyPair};
use josekit::jwk::alg::ed::{EdCurve, EdKeyPair};
use josekit::jwk::alg::rsa::RsaKeyPair;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde_json::{Map, Value, json};
use tenancy_core::{Conflict, StoreError};
use time::{Duration, OffsetDateTime};

use crate::key_encryption::{KeyEncryption, Sealer, StoredPrivateKey};
use crate::store::KeyStore;

/// A JWS algorithm tenancy signs access tokens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// Ed25519 (the default): small keys, fast, no parameter pitfalls.
    EdDsa,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys.
    Rs256,
    /// HMAC with SHA-256. Symmetric: every verifier holds the signing secret
    /// and the JWKS cannot publish it, so it must be chosen explicitly
    /// (see `AuthConfig::allow_hs256`).
    Hs256,
}

impl KeyAlgorithm {
    /// The JWS `alg` name.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EdDsa => "EdDSA",
            KeyAlgorithm::Es256 => "ES256",
            KeyAlgorithm::Rs256 => "RS256",
            KeyAlgorithm::Hs256 => "HS256",
        }
    }

    pub(crate) const fn jwt(self) -> Algorithm {
        match self {
            KeyAlgorithm::EdDsa => Algorithm::EdDSA,
            KeyAlgorithm::Es256 => Algorithm::ES256,
            KeyAlgorithm::Rs256 => Algorithm::RS256,
            KeyAlgorithm::Hs256 => Algorithm::HS256,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "EdDSA" => Ok(KeyAlgorithm::EdDsa),
            "ES256" => Ok(KeyAlgorithm::Es256),
            "RS256" => Ok(KeyAlgorithm::Rs256),
            "HS256" => Ok(KeyAlgorithm::Hs256),
            _ => Err(KeyError::UnknownAlgorithm),
        }
    }
}

/// A private key as a JWK. `Debug` never shows the key material.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateJwk(Map<String, Value>);

impl PrivateJwk {
    /// Wraps a JWK read from storage.
    pub fn from_map(map: Map<String, Value>) -> Self {
        Self(map)
    }

    /// The JWK, for storage. This is secret key material.
    pub fn expose_secret(&self) -> &Map<String, Value> {
        &self.0
    }
}

impl fmt::Debug for PrivateJwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateJwk([redacted])")
    }
}

/// A signing key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Its key id, the JWT header's `kid`.
    pub kid: String,
    /// Its algorithm.
    pub algorithm: KeyAlgorithm,
    /// The private key, encrypted unless configured otherwise.
    pub private_key: StoredPrivateKey,
    /// The public key (`None` for HS256, which has none to publish).
    pub public_jwk: Option<Map<String, Value>>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it stopped signing; it still verifies until pruned.
    pub retired_at: Option<OffsetDateTime>,
}

/// What key handling can fail with. Never carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Generating a key pair failed.
    #[error("key generation failed")]
    Generate,
    /// A stored key cannot be used (malformed JWK, wrong type).
    #[error("signing key {kid} is unusable")]
    Unusable {
        /// The key's id.
        kid: String,
    },
    /// A stored algorithm name is not supported.
    #[error("unknown key algorithm")]
    UnknownAlgorithm,
    /// No key is active for signing.
    #[error("no active signing key")]
    NoActiveKey,
    /// Signing a token failed.
    #[error("signing failed")]
    Sign,
    /// A key-encryption key is malformed (its id, or not 32 bytes).
    #[error(
        "a key-encryption key must be 32 bytes, with an id of 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"
    )]
    InvalidEncryptionKey,
    /// A stored key is encrypted under a key-encryption key that is not
    /// configured (or none is): add it to the configuration.
    #[error(
        "signing key {kid} is encrypted under key-encryption key {key_encryption_key:?}, which is not configured"
    )]
    EncryptionKeyMissing {
        /// The signing key's id.
        kid: String,
        /// The key-encryption key its header names.
        key_encryption_key: Option<String>,
    },
    /// A stored key does not decrypt with the key-encryption key its
    /// header names: the ciphertext was altered, or the key differs.
    #[error("signing key {kid} does not decrypt")]
    Undecryptable {
        /// The signing key's id.
        kid: String,
    },
    /// No key-encryption key is configured, and the store keeps keys
    /// beyond this process: configure one (or, knowingly,
    /// `KeyEncryption::InsecurePlaintext`).
    #[error("private signing keys need a key-encryption key for a store that outlives the process")]
    EncryptionRequired,
    /// The key store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl StoredKey {
    /// Generates a new key pair for `algorithm`, with a fresh `kid`. The
    /// private key is in plaintext until sealed for storage (the
    /// [`KeyRing`] encrypts the keys it creates).
    pub fn generate(algorithm: KeyAlgorithm, now: OffsetDateTime) -> Result<Self, KeyError> {
        let kid = uuid::Uuid::now_v7().simple().to_string();
        let mut jwk = match algorithm {
            KeyAlgorithm::EdDsa => Jwk::generate_ed_key(EdCurve::Ed25519),
            KeyAlgorithm::Es256 => Jwk::generate_ec_key(EcCurve::P256),
            KeyAlgorithm::Rs256 => Jwk::generate_rsa_key(2048),
            KeyAlgorithm::Hs256 => Jwk::generate_oct_key(32),
        }
        .map_err(|_| KeyError::Generate)?;
        jwk.set_key_id(kid.clone());
        jwk.set_algorithm(algorithm.as_str());
        jwk.set_key_use("sig");
        let public_jwk = match algorithm {
            KeyAlgorithm::Hs256 => None,
            _ => {
                let mut public = jwk.to_public_key().map_err(|_| KeyError::Generate)?;
                public.set_key_id(kid.clone());
                public.set_algorithm(algorithm.as_str());
                public.set_key_use("sig");
                Some(public.into())
            }
        };
        Ok(Self {
            kid,
            algorithm,
            private_key: StoredPrivateKey::Plaintext(PrivateJwk(jwk.into())),
            public_jwk,
            created_at: now,
            retired_at: None,
        })
    }

    fn unusable(&self) -> KeyError {
        KeyError::Unusable {
            kid: self.kid.clone(),
        }
    }

    /// The signing key, from its private JWK `jwk` (opened by a [`Sealer`]).
    pub(crate) fn encoding_key(&self, jwk: &Jwk) -> Result<EncodingKey, KeyError> {
        let pem = match self.algorithm {
            KeyAlgorithm::Hs256 => {
                let secret = jwk.key_value().ok_or_else(|| self.unusable())?;
                return Ok(EncodingKey::from_secret(&secret));
            }
            KeyAlgorithm::EdDsa => EdKeyPair::from_jwk(jwk).map(|k| k.to_pem_private_key()),
            KeyAlgorithm::Es256 => EcKeyPair::from_jwk(jwk).map(|k| k.to_pem_private_key()),
            KeyAlgorithm::Rs256 => RsaKeyPair::from_jwk(jwk).map(|k| k.to_pem_private_key()),
        }
        .map_err(|_| self.unusable())?;
        match self.algorithm {
            KeyAlgorithm::EdDsa => EncodingKey::from_ed_pem(&pem),
            KeyAlgorithm::Es256 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_rsa_pem(&pem),
        }
        .map_err(|_| self.unusable())
    }

    /// The verifying key: the public JWK, or for HS256 (which has none)
    /// the secret, opened with `sealer`.
    pub(crate) fn decoding_key(&self, sealer: &Sealer) -> Result<DecodingKey, KeyError> {
        match &self.public_jwk {
            None => {
                let secret = sealer
                    .open(&self.kid, &self.private_key)?
                    .key_value()
                    .ok_or_else(|| self.unusable())?;
                Ok(DecodingKey::from_secret(&secret))
            }
            Some(public) => {
                let jwk: jsonwebtoken::jwk::Jwk =
                    serde_json::from_value(Value::Object(public.clone()))
                        .map_err(|_| self.unusable())?;
                DecodingKey::from_jwk(&jwk).map_err(|_| self.unusable())
            }
        }
    }
}

/// A key ready to sign.
#[derive(Clone)]
pub(crate) struct Signer {
    pub(crate) kid: String,
    pub(crate) algorithm: KeyAlgorithm,
    pub(crate) key: EncodingKey,
}

/// A key ready to verify.
#[derive(Clone)]
pub(crate) struct Verifier {
    pub(crate) algorithm: KeyAlgorithm,
    pub(crate) key: DecodingKey,
}

#[derive(Default)]
struct RingState {
    signer: Option<Signer>,
    verifiers: HashMap<String, Verifier>,
    jwks: Arc<Value>,
}

/// The keys in use: the active signer and every key that may still verify,
/// loaded from a [`KeyStore`] and kept in memory so verification never
/// touches the store.
///
/// Rotation ([`KeyRing::rotate`]) makes a new key active and retires the
/// old one; retired keys keep verifying, and stay in the JWKS, until
/// [`KeyRing::prune`] removes those retired longer ago than the longest
/// token lifetime. A token with an unknown `kid` makes the ring reload from
/// the store (at most once a second), so replicas pick up another replica's
/// rotation on first sight of its tokens.
///
/// Private keys are stored encrypted under the configured key-encryption
/// keys ([`KeyEncryption`]); only the keys that sign (and HS256 keys, which
/// verify with their secret) are decrypted, in memory.
pub struct KeyRing {
    store: Arc<dyn KeyStore>,
    algorithm: KeyAlgorithm,
    sealer: Sealer,
    state: RwLock<Arc<RingState>>,
    last_reload: Mutex<Option<Instant>>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("algorithm", &self.algorithm)
            .field("encryption", &self.sealer)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// The key-encryption setting resolved for this ring: also seals other
    /// secrets the host keeps (SSO client secrets).
    #[cfg(feature = "sso")]
    pub(crate) fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Loads the keys of `store`, creating an active `algorithm` key if
    /// there is none. Keys stored in plaintext are encrypted on the way
    /// (when `encryption` holds a key).
    ///
    /// [`KeyEncryption::Unconfigured`] is refused
    /// ([`KeyError::EncryptionRequired`]) unless the store offers a key of
    /// its own lifetime ([`KeyStore::process_encryption_key`], in memory).
    pub async fn load(
        store: Arc<dyn KeyStore>,
        algorithm: KeyAlgorithm,
        encryption: &KeyEncryption,
        now: OffsetDateTime,
    ) -> Result<Self, KeyError> {
        let sealer = match encryption {
            KeyEncryption::Keys { current, previous } => {
                Sealer::new(current.clone(), previous.clone())
            }
            KeyEncryption::InsecurePlaintext => Sealer::Plaintext,
            KeyEncryption::Unconfigured => match store.process_encryption_key() {
                Some(key) => Sealer::new(key, Vec::new()),
                None => return Err(KeyError::EncryptionRequired),
            },
        };
        let ring = Self {
            store,
            algorithm,
            sealer,
            state: RwLock::new(Arc::new(RingState::default())),
            last_reload: Mutex::new(None),
        };
        let sealed = ring.reseal(false).await?;
        if sealed > 0 {
            tracing::info!(keys = sealed, "encrypted signing keys stored in plaintext");
        }
        ring.reload().await?;
        if ring.current().signer.is_none() {
            ring.activate_new(now).await?;
        }
        Ok(ring)
    }

    /// Rewrites stored keys under the current key-encryption key: the
    /// plaintext ones, and with `older` also those under an older key.
    /// Returns how many were rewritten.
    async fn reseal(&self, older: bool) -> Result<usize, KeyError> {
        let mut count = 0;
        for key in self.store.list_signing_keys().await? {
            let plaintext = matches!(key.private_key, StoredPrivateKey::Plaintext(_));
            if !self.sealer.is_stale(&key.private_key) || !(plaintext || older) {
                continue;
            }
            let jwk = PrivateJwk(self.sealer.open(&key.kid, &key.private_key)?.into());
            let sealed = self.sealer.seal(&key.kid, &jwk)?;
            match self.store.replace_private_key(&key.kid, &sealed).await {
                Ok(()) => count += 1,
                // Pruned meanwhile.
                Err(StoreError::NotFound(_)) => {}
                Err(other) => return Err(other.into()),
            }
        }
        Ok(count)
    }

    /// Re-encrypts every stored key under the current key-encryption key
    /// (step 2 of a key-encryption key rotation, see
    /// [`crate::key_encryption`]). Returns how many keys were rewritten.
    pub async fn reencrypt(&self) -> Result<usize, KeyError> {
        let count = self.reseal(true).await?;
        self.reload().await?;
        Ok(count)
    }

    fn current(&self) -> Arc<RingState> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads every key from the store.
    pub async fn reload(&self) -> Result<(), KeyError> {
        let keys = self.store.list_signing_keys().await?;
        let mut state = RingState::default();
        let mut published = Vec::new();
        for key in &keys {
            state.verifiers.insert(
                key.kid.clone(),
                Verifier {
                    algorithm: key.algorithm,
                    key: key.decoding_key(&self.sealer)?,
                },
            );
            if key.retired_at.is_none() {
                let jwk = self.sealer.open(&key.kid, &key.private_key)?;
                state.signer = Some(Signer {
                    kid: key.kid.clone(),
                    algorithm: key.algorithm,
                    key: key.encoding_key(&jwk)?,
                });
            }
            if let Some(public) = &key.public_jwk {
                published.push(Value::Object(public.clone()));
            }
        }
        state.jwks = Arc::new(json!({ "keys": published }));
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(state);
        *self
            .last_reload
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        Ok(())
    }

    async fn activate_new(&self, now: OffsetDateTime) -> Result<String, KeyError> {
        let mut key = StoredKey::generate(self.algorithm, now)?;
        if let StoredPrivateKey::Plaintext(jwk) = &key.private_key {
            key.private_key = self.sealer.seal(&key.kid, jwk)?;
        }
        match self.store.activate_signing_key(&key, now).await {
            // Another replica rotated at the same moment: use its key.
            Ok(()) | Err(StoreError::Conflict(Conflict::ActiveSigningKey)) => {}
            Err(other) => return Err(other.into()),
        }
        self.reload().await?;
        self.current()
            .signer
            .as_ref()
            .map(|s| s.kid.clone())
            .ok_or(KeyError::NoActiveKey)
    }

    /// Makes a freshly generated key active and retires the previous one.
    /// Returns the new key's id.
    pub async fn rotate(&self, now: OffsetDateTime) -> Result<String, KeyError> {
        self.activate_new(now).await
    }

    /// Deletes keys retired for longer than `keep_retired` (at least the
    /// access-token lifetime plus leeway), and returns how many went.
    pub async fn prune(
        &self,
        now: OffsetDateTime,
        keep_retired: Duration,
    ) -> Result<u64, KeyError> {
        let removed = self
            .store
            .delete_signing_keys_retired_before(now - keep_retired)
            .await?;
        if removed > 0 {
            self.reload().await?;
        }
        Ok(removed)
    }

    /// The public keys as a JWKS document (`{"keys": [...]}`), for
    /// `/.well-known/jwks.json`. HS256 keys are never included.
    pub fn jwks(&self) -> Arc<Value> {
        self.current().jwks.clone()
    }

    /// The id of the key that signs now.
    pub fn active_kid(&self) -> Option<String> {
        self.current().signer.as_ref().map(|s| s.kid.clone())
    }

    pub(crate) fn signer(&self) -> Result<Signer, KeyError> {
        self.current().signer.clone().ok_or(KeyError::NoActiveKey)
    }

    /// The verifier for `kid`, reloading once if it is unknown and the last
    /// reload is more than a second old.
    pub(crate) async fn verifier(&self, kid: &str) -> Result<Option<Verifier>, KeyError> {
        if let Some(found) = self.current().verifiers.get(kid) {
            return Ok(Some(found.clone()));
        }
        let stale = self
            .last_reload
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(1));
        if !stale {
            return Ok(None);
        }
        self.reload().await?;
        Ok(self.current().verifiers.get(kid).cloned())
    }

    /// The verifier for `kid` if already loaded; never reloads.
    pub(crate) fn loaded_verifier(&self, kid: &str) -> Option<Verifier> {
        self.current().verifiers.get(kid).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_and_verify_for_every_algorithm() {
        for algorithm in [
            KeyAlgorithm::EdDsa,
            KeyAlgorithm::Es256,
            KeyAlgorithm::Rs256,
            KeyAlgorithm::Hs256,
        ] {
            let key = StoredKey::generate(algorithm, OffsetDateTime::now_utc()).unwrap();
            let sealer = Sealer::Plaintext;
            let jwk = sealer.open(&key.kid, &key.private_key).unwrap();
            let mut header = jsonwebtoken::Header::new(algorithm.jwt());
            header.kid = Some(key.kid.clone());
            let token = jsonwebtoken::encode(
                &header,
                &json!({ "sub": "x", "exp": 4_000_000_000u64 }),
                &key.encoding_key(&jwk).unwrap(),
            )
            .unwrap();
            let mut validation = jsonwebtoken::Validation::new(algorithm.jwt());
            validation.validate_aud = false;
            jsonwebtoken::decode::<Value>(&token, &key.decoding_key(&sealer).unwrap(), &validation)
                .unwrap();
            match (&key.public_jwk, algorithm) {
                (None, KeyAlgorithm::Hs256) => {}
                (Some(public), _) => {
                    assert_eq!(public["kid"], key.kid.as_str());
                    assert_eq!(public["alg"], algorithm.as_str());
                    for private_part in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                        assert!(
                            !public.contains_key(private_part),
                            "{algorithm}: {private_part}"
                        );
                    }
                }
                _ => panic!("{algorithm}: unexpected public key"),
            }
            let debug = format!("{key:?}");
            assert!(debug.contains("PrivateJwk([redacted])"));
            if let StoredPrivateKey::Plaintext(private) = &key.private_key
                && let Some(Value::String(d)) = private.expose_secret().get("d")
            {
                assert!(!debug.contains(d.as_str()));
            }
        }
    }
}
