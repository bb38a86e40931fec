//! API keys: `<prefix>_<key id>_<secret>`, stored as a hash under the key id.

use std::fmt;

use serde::{Deserialize, Serialize};
use tenancy_core::{Actor, ApiKeyId, TenantId, TokenHash, ValidationError};
use time::OffsetDateTime;

use crate::secret::random_256;

/// A permission an API key carries, such as `projects:read` or `projects:*`:
/// 1 to 128 characters of `a-z`, `0-9`, `_`, `-`, `.`, `:` and `*`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Scope(String);

impl Scope {
    /// Validates a scope.
    pub fn new(raw: impl Into<String>) -> Result<Self, ValidationError> {
        let raw = raw.into();
        let ok = (1..=128).contains(&raw.len())
            && raw.chars().all(|c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, '_' | '-' | '.' | ':' | '*')
            });
        if ok {
            Ok(Self(raw))
        } else {
            Err(ValidationError::Scope { scope: raw })
        }
    }

    /// The scope text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Scope {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Scope> for String {
    fn from(scope: Scope) -> Self {
        scope.0
    }
}

/// An API key as stored. The secret is not: only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    /// Its id, the public middle part of the key.
    pub id: ApiKeyId,
    /// The tenant it acts in.
    pub tenant_id: TenantId,
    /// A label for people.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// SHA-256 of the secret.
    #[serde(skip)]
    pub secret_hash: TokenHash,
    /// Who created it.
    pub created_by: Actor,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stops working, if ever.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When it was last used (updated at most once a minute).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// When it was revoked, if it was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// What it takes to create an API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// A label for people: 1 to 200 characters, trimmed.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// When it stops working, if ever.
    pub expires_at: Option<OffsetDateTime>,
}

/// The full key text, shown once at creation. `Debug` shows only its id.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret {
    text: String,
    id: ApiKeyId,
}

impl ApiKeySecret {
    /// The key text to give the caller. This is a secret.
    pub fn expose_secret(&self) -> &str {
        &self.text
    }

    /// The key's id.
    pub fn id(&self) -> ApiKeyId {
        self.id
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeySecret({}, [redacted])", self.id)
    }
}

/// The key prefix hosts choose, such as `tnc_live`: 1 to 32 characters of
/// `a-z`, `0-9` and `_`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyPrefix(String);

impl ApiKeyPrefix {
    /// Validates a prefix.
    pub fn new(raw: &str) -> Result<Self, ValidationError> {
        let ok = (1..=32).contains(&raw.len())
            && raw.starts_with(|c: char| c.is_ascii_lowercase())
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValidationError::KeyPrefix {
                prefix: raw.to_owned(),
            })
        }
    }

    /// The prefix text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A fresh key for `id`: the text and the hash to store.
    pub(crate) fn generate(&self, id: ApiKeyId) -> (ApiKeySecret, TokenHash) {
        let secret = random_256();
        let text = format!("{}_{}_{}", self.0, id.as_uuid().simple(), hex(&secret));
        (ApiKeySecret { text, id }, TokenHash::of(&secret))
    }

    /// Splits presented key text into its id and the hash of its secret,
    /// or `None` if it is not a key with this prefix.
    pub fn parse(&self, text: &str) -> Option<(ApiKeyId, TokenHash)> {
        let rest = text.strip_prefix(self.0.as_str())?.strip_prefix('_')?;
        let (id, secret) = rest.split_once('_')?;
        if id.len() != 32 || secret.len() != 64 {
            return None;
        }
        let id = uuid::Uuid::try_parse(id).ok()?;
        let secret = unhex(secret)?;
        Some((ApiKeyId::from_uuid(id), TokenHash::of(&secret)))
    }

    /// Whether `text` looks like a key of this prefix (before any checks).
    pub fn claims(&self, text: &str) -> bool {
        text.strip_prefix(self.0.as_str())
            .is_some_and(|rest| rest.starts_with('_'))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    let bytes = text.as_bytes();
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let high = (pair[0] as char).to_digit(16)?;
        let low = (pair[1] as char).to_digit(16)?;
        if pair.iter().any(u8::is_ascii_uppercase) {
            return None;
        }
        *out.get_mut(i)? = u8::try_from(high * 16 + low).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let prefix = ApiKeyPrefix::new("tnc_live").unwrap();
        let id = ApiKeyId::new();
        let (secret, hash) = prefix.generate(id);
        assert!(secret.expose_secret().starts_with("tnc_live_"));
        assert_eq!(secret.expose_secret().len(), 9 + 32 + 1 + 64);
        assert_eq!(prefix.parse(secret.expose_secret()), Some((id, hash)));
        assert!(prefix.claims(secret.expose_secret()));
        assert_eq!(
            format!("{secret:?}"),
            format!("ApiKeySecret({id}, [redacted])")
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        let prefix = ApiKeyPrefix::new("tnc_live").unwrap();
        let (secret, _) = prefix.generate(ApiKeyId::new());
        let text = secret.expose_secret();
        let other_prefix = text.replacen("tnc_live", "tnc_test", 1);
        let upper = text.to_uppercase().replacen("TNC_LIVE", "tnc_live", 1);
        let cases = [
            "",
            "tnc_live",
            "tnc_live_",
            &text[..text.len() - 1],
            &other_prefix,
            &upper,
            &format!("{text}0"),
            &text.replacen('_', "-", 2),
        ];
        for bad in cases {
            assert_eq!(prefix.parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn prefix_and_scope_rules() {
        assert!(ApiKeyPrefix::new("sk").is_ok());
        for bad in ["", "1abc", "Tnc", "tnc-live", &"a".repeat(33)] {
            assert!(ApiKeyPrefix::new(bad).is_err(), "{bad:?}");
        }
        assert!(Scope::new("projects:read").is_ok());
        assert!(Scope::new("*").is_ok());
        assert!(Scope::new("Projects:read").is_err());
        assert!(Scope::new("").is_err());
    }
}
