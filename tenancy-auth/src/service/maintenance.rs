//! Background upkeep: signing-key rotation, revocation sync, retention.

use time::Duration;

use crate::store::{LockoutStore, OneTimeTokenStore, SessionStore};

use super::{Auth, Result};

/// What [`Auth::purge_expired`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PurgeReport {
    /// Ended sessions.
    pub sessions: u64,
    /// Refresh tokens of ended sessions, and spent ones.
    pub refresh_tokens: u64,
    /// Throttle counters whose window and lock ended.
    pub throttles: u64,
    /// Used or expired one-time tokens.
    pub one_time_tokens: u64,
}

impl Auth {
    /// Rotates the signing key, then deletes keys retired for longer than
    /// an access token lives (plus leeway). Returns the new key id.
    pub async fn rotate_signing_key(&self) -> Result<String> {
        let now = self.now();
        let kid = self.inner.keys.rotate(now).await?;
        let tokens = &self.inner.config.tokens;
        self.inner
            .keys
            .prune(now, tokens.ttl + tokens.leeway)
            .await?;
        Ok(kid)
    }

    /// Re-encrypts every stored private signing key under the current
    /// key-encryption key, and returns how many were rewritten: step 2 of
    /// rotating that key (see [`crate::key_encryption`]). Keys stored in
    /// plaintext are encrypted too.
    pub async fn reencrypt_signing_keys(&self) -> Result<usize> {
        Ok(self.inner.keys.reencrypt().await?)
    }

    /// Reads sessions revoked elsewhere into the revocation set.
    pub async fn sync_revocations(&self) -> Result<usize> {
        let lookback = self.inner.config.sessions.absolute_timeout;
        Ok(self
            .inner
            .revocations
            .sync(&*self.inner.store, self.now(), lookback)
            .await?)
    }

    /// Spawns a task that calls [`Auth::sync_revocations`] every `interval`,
    /// logging failures. Abort the handle to stop it.
    pub fn spawn_revocation_sync(
        &self,
        interval: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let auth = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                ticker.tick().await;
                if let Err(error) = auth.sync_revocations().await {
                    tracing::warn!(%error, "revocation sync failed");
                }
            }
        })
    }

    /// Deletes what is past [`AuthConfig::retention`](crate::AuthConfig::retention):
    /// ended sessions and their refresh tokens, spent refresh tokens,
    /// ended throttle counters, used or expired one-time tokens; live ones
    /// stay. Returns how many of each went. Run it periodically (any
    /// replica; running it on several at once is harmless).
    ///
    /// Ended sessions are kept at least an access token's lifetime (and
    /// leeway), so a token is never refused for its session's absence
    /// before it expires; throttle counters at least the longest rule's
    /// window.
    pub async fn purge_expired(&self) -> Result<PurgeReport> {
        let now = self.now();
        let config = &self.inner.config;
        let retention = config.retention;
        let token_life = config.tokens.ttl + config.tokens.leeway;
        let limits = &config.limits;
        let longest_window = [
            config.lockout.account,
            config.lockout.client,
            limits.registration,
            limits.mail_per_address,
            limits.mail_per_client,
        ]
        .iter()
        .map(|rule| rule.window.max(rule.lock_for))
        .max()
        .unwrap_or(Duration::ZERO);
        let store = &self.inner.store;
        let sessions = SessionStore::purge_expired(
            &**store,
            now,
            retention.ended_sessions.max(token_life),
            retention.spent_refresh_tokens,
        )
        .await?;
        let throttles =
            LockoutStore::purge_expired(&**store, now, retention.throttles.max(longest_window))
                .await?;
        let one_time_tokens =
            OneTimeTokenStore::purge_expired(&**store, now, retention.one_time_tokens).await?;
        Ok(PurgeReport {
            sessions: sessions.sessions,
            refresh_tokens: sessions.refresh_tokens,
            throttles,
            one_time_tokens,
        })
    }
}
