//! API keys: create, list, revoke.

use serde_json::json;
use tenancy_core::{
    ApiKeyId, AuditContext, DirectoryError, Entity, Page, PageRequest, StoreError, TenantScope,
    ValidationError, truncate_to_micros,
};

use crate::api_key::{ApiKey, ApiKeySecret, NewApiKey};

use super::{Auth, Result, actions, ensure_active};

impl Auth {
    /// Creates an API key in the scope's tenant. The secret is returned here
    /// only; the store keeps its hash. The key and its audit event are one
    /// transaction.
    ///
    /// Errors: [`Error::InvalidInput`](crate::Error::InvalidInput) for an empty or over-long name or an
    /// expiry in the past; [`Error::Directory`](crate::Error::Directory) if the tenant is not active.
    pub async fn create_api_key(
        &self,
        scope: &TenantScope,
        new: NewApiKey,
        context: &AuditContext,
    ) -> Result<(ApiKey, ApiKeySecret)> {
        let now = self.now();
        let name = validate_key_name(&new.name)?;
        if new.expires_at.is_some_and(|at| at <= now) {
            return Err(ValidationError::TimeRange.into());
        }
        let tx = self.begin().await?;
        // Locked, so a concurrent suspension cannot slip in before the key.
        let tenant = tx
            .core()
            .lock_tenant(scope.tenant_id())
            .await
            .map_err(DirectoryError::from)?;
        ensure_active(&tenant).map_err(|_| DirectoryError::TenantNotActive {
            status: tenant.status,
        })?;
        let id = ApiKeyId::new();
        let (secret, secret_hash) = self.inner.prefix.generate(id);
        let mut scopes = new.scopes;
        scopes.sort();
        scopes.dedup();
        let key = ApiKey {
            id,
            tenant_id: scope.tenant_id(),
            name,
            scopes,
            secret_hash,
            created_by: context.actor,
            created_at: now,
            expires_at: new.expires_at.map(truncate_to_micros),
            last_used_at: None,
            revoked_at: None,
        };
        let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
        self.audit_in(
            tx.core(),
            key.tenant_id,
            context,
            actions::API_KEY_CREATED,
            ("api_key", id.to_string()),
            json!({ "name": key.name, "scopes": scopes }),
        )
        .await?;
        tx.insert_api_key(&key).await?;
        tx.commit().await?;
        Ok((key, secret))
    }

    /// Lists the scope's API keys, oldest first.
    pub async fn list_api_keys(
        &self,
        scope: &TenantScope,
        page: &PageRequest,
    ) -> Result<Page<ApiKey>> {
        Ok(self
            .inner
            .store
            .list_api_keys(scope.tenant_id(), page)
            .await?)
    }

    /// Revokes one of the scope's API keys; it is refused from now on. The
    /// revocation and its audit event are one transaction.
    ///
    /// Errors: [`Error::Store`](crate::Error::Store) with
    /// `NotFound(ApiKey)` for a key of another tenant or none.
    pub async fn revoke_api_key(
        &self,
        scope: &TenantScope,
        id: ApiKeyId,
        context: &AuditContext,
    ) -> Result<ApiKey> {
        let current = self.inner.store.get_api_key(id).await?;
        if current.tenant_id != scope.tenant_id() {
            return Err(StoreError::NotFound(Entity::ApiKey).into());
        }
        let tx = self.begin().await?;
        self.audit_in(
            tx.core(),
            current.tenant_id,
            context,
            actions::API_KEY_REVOKED,
            ("api_key", id.to_string()),
            json!({ "name": current.name }),
        )
        .await?;
        let key = tx.revoke_api_key(scope.tenant_id(), id, self.now()).await?;
        tx.commit().await?;
        Ok(key)
    }
}

fn validate_key_name(raw: &str) -> Result<String, ValidationError> {
    const FIELD: &str = "api key name";
    let trimmed = raw.trim();
    let len = trimmed.chars().count();
    if len == 0 || len > 200 {
        return Err(ValidationError::TextLength {
            field: FIELD,
            max: 200,
            len,
        });
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ValidationError::ControlCharacter { field: FIELD });
    }
    Ok(trimmed.to_owned())
}
