//! Background upkeep: signing-key rotation and revocation sync.

use super::{Auth, Result};

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
}
