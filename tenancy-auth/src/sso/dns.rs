//! Domain verification by a DNS TXT record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

/// The prefix of the TXT record value that proves control of a domain.
pub const TXT_RECORD_PREFIX: &str = "tenancy-domain-verification=";

/// Looks up TXT records. The host plugs in its resolver (for example one
/// built on `hickory-resolver`); tests use [`StaticDnsResolver`].
#[async_trait]
pub trait DnsTxtResolver: Send + Sync {
    /// The TXT strings published at `name` (each record's strings joined);
    /// an empty list when there are none.
    async fn txt(&self, name: &str) -> Result<Vec<String>, tenancy_core::BoxError>;
}

/// No resolver: every lookup fails, so domains are verified by an
/// operator only (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDnsResolver;

#[async_trait]
impl DnsTxtResolver for NoDnsResolver {
    async fn txt(&self, _name: &str) -> Result<Vec<String>, tenancy_core::BoxError> {
        Err("no DNS resolver is configured; verify domains as an operator".into())
    }
}

/// TXT records held in memory, for tests and development.
#[derive(Debug, Clone, Default)]
pub struct StaticDnsResolver {
    records: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

impl StaticDnsResolver {
    /// No records.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes `value` at `name`.
    pub fn publish(&self, name: &str, value: &str) {
        let mut records = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        records
            .entry(name.trim_end_matches('.').to_ascii_lowercase())
            .or_default()
            .push(value.to_owned());
    }
}

#[async_trait]
impl DnsTxtResolver for StaticDnsResolver {
    async fn txt(&self, name: &str) -> Result<Vec<String>, tenancy_core::BoxError> {
        let records = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(records
            .get(&name.trim_end_matches('.').to_ascii_lowercase())
            .cloned()
            .unwrap_or_default())
    }
}
