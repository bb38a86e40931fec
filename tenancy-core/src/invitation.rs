//! Invitations to join a tenant, redeemed with a secret token shown once.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::audit::Actor;
use crate::id::{InvitationId, TenantId, UserId};
use crate::membership::RoleSet;
use crate::tenant::UnknownStatus;
use crate::user::Email;

const TOKEN_PREFIX: &str = "inv_";
const SECRET_LEN: usize = 32;
const RAW_LEN: usize = 16 + SECRET_LEN;

/// A string that is not an invitation token issued by this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed invitation token")]
pub struct MalformedToken;

/// The secret that redeems an invitation, shown once when the invitation is
/// created and stored only as a SHA-256 [`TokenHash`].
///
/// Its text is `inv_` followed by the URL-safe base64 of the tenant id and
/// 256 random bits, so it fits in a link and names the tenant it belongs to
/// without a lookup across tenants. `Debug` never prints the secret.
#[derive(Clone)]
pub struct InvitationToken {
    text: String,
    tenant_id: TenantId,
    hash: TokenHash,
}

impl InvitationToken {
    /// A new random token for `tenant_id`.
    pub(crate) fn generate(tenant_id: TenantId) -> Self {
        let mut raw = [0u8; RAW_LEN];
        raw[..16].copy_from_slice(tenant_id.as_uuid().as_bytes());
        rand::fill(&mut raw[16..]);
        Self::from_raw(&raw, tenant_id)
    }

    fn from_raw(raw: &[u8; RAW_LEN], tenant_id: TenantId) -> Self {
        Self {
            text: format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw)),
            tenant_id,
            hash: TokenHash::of(raw),
        }
    }

    /// Parses a token received from a user.
    pub fn parse(text: &str) -> Result<Self, MalformedToken> {
        let encoded = text.strip_prefix(TOKEN_PREFIX).ok_or(MalformedToken)?;
        // 48 bytes encode to exactly 64 characters; check before decoding.
        if encoded.len() != 64 {
            return Err(MalformedToken);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| MalformedToken)?;
        let raw: [u8; RAW_LEN] = bytes.try_into().map_err(|_| MalformedToken)?;
        let mut id = [0u8; 16];
        id.copy_from_slice(&raw[..16]);
        let tenant_id = TenantId::from_uuid(uuid::Uuid::from_bytes(id));
        Ok(Self::from_raw(&raw, tenant_id))
    }

    /// The tenant this token invites to.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    /// The hash stored in place of the token.
    pub fn hash(&self) -> &TokenHash {
        &self.hash
    }

    /// The token text, to put in the invitation link.
    ///
    /// This is a secret: send it to the invitee and do not log or store it.
    pub fn expose_secret(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for InvitationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvitationToken")
            .field("tenant_id", &self.tenant_id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl FromStr for InvitationToken {
    type Err = MalformedToken;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// SHA-256 of a secret token, the only form in which tokens are stored.
/// Compared in constant time.
#[derive(Clone, Copy, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// Hashes a secret token's bytes with SHA-256.
    pub fn of(secret: &[u8]) -> Self {
        Self(Sha256::digest(secret).into())
    }

    /// Wraps a hash read from storage.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The hash bytes, for storage.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PartialEq for TokenHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// Where an invitation is in its life. Expiry is not a status: it follows
/// from [`Invitation::expires_at`] and the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InvitationStatus {
    /// Waiting to be accepted.
    Pending,
    /// Redeemed; the token no longer works.
    Accepted,
    /// Withdrawn; the token no longer works.
    Revoked,
    /// Replaced by a new invitation after it ran out; the token no longer works.
    Expired,
}

impl InvitationStatus {
    /// The lowercase name used in storage and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            InvitationStatus::Pending => "pending",
            InvitationStatus::Accepted => "accepted",
            InvitationStatus::Revoked => "revoked",
            InvitationStatus::Expired => "expired",
        }
    }
}

impl fmt::Display for InvitationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InvitationStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(InvitationStatus::Pending),
            "accepted" => Ok(InvitationStatus::Accepted),
            "revoked" => Ok(InvitationStatus::Revoked),
            "expired" => Ok(InvitationStatus::Expired),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}

/// An invitation as stored. The token itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invitation {
    /// Its id.
    pub id: InvitationId,
    /// The tenant the invitee will join.
    pub tenant_id: TenantId,
    /// Who is invited; only a user with this address may accept.
    pub email: Email,
    /// The roles the invitee will hold.
    pub roles: RoleSet,
    /// Who sent it.
    pub invited_by: Actor,
    /// Where it is in its life.
    pub status: InvitationStatus,
    /// Hash of the token that redeems it.
    #[serde(skip)]
    pub token_hash: TokenHash,
    /// After this instant the token no longer works.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The user who accepted it.
    pub accepted_by: Option<UserId>,
}

impl Invitation {
    /// Whether the token has stopped working at `now` because time ran out.
    pub fn is_expired_at(&self, now: OffsetDateTime) -> bool {
        now >= self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_names_its_tenant() {
        let tenant = TenantId::new();
        let token = InvitationToken::generate(tenant);
        assert!(token.expose_secret().starts_with("inv_"));
        assert_eq!(token.expose_secret().len(), 4 + 64);
        let parsed = InvitationToken::parse(token.expose_secret()).unwrap();
        assert_eq!(parsed.tenant_id(), tenant);
        assert_eq!(parsed.hash(), token.hash());
        assert_ne!(InvitationToken::generate(tenant).hash(), token.hash());
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let good = InvitationToken::generate(TenantId::new());
        let text = good.expose_secret();
        let truncated = &text[..text.len() - 1];
        let unprefixed = &text[4..];
        let bad_char = format!("{}!", &text[..text.len() - 1]);
        for bad in [
            "",
            "inv_",
            truncated,
            unprefixed,
            &bad_char,
            &format!("{text}A"),
        ] {
            assert_eq!(
                InvitationToken::parse(bad).unwrap_err(),
                MalformedToken,
                "{bad:?}"
            );
        }
        assert_eq!(MalformedToken.to_string(), "malformed invitation token");
    }

    #[test]
    fn debug_redacts_the_secret() {
        let token = InvitationToken::generate(TenantId::new());
        let debug = format!("{token:?}");
        assert!(debug.contains("[redacted]"));
        assert!(!debug.contains(&token.expose_secret()[4..20]));
        assert_eq!(format!("{:?}", token.hash()), "TokenHash(..)");
    }
}
