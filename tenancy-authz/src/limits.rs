//! Per-tenant bounds on policies, so that no tenant can make its compile
//! (or every replica's memory) arbitrarily large.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tenancy_core::TenantId;

use crate::policy::{Policy, PolicyDocument};

/// How much policy one tenant may hold. Checked when a policy is written
/// through [`crate::AuthzAdmin`] (refused with
/// [`crate::AdminError::Limit`]) and when a tenant's policies are loaded
/// into a [`crate::PolicyCache`] (a tenant over the limits, for example
/// after they were lowered, fails to load with
/// [`crate::CacheError::Limit`] until its policies are trimmed).
///
/// Set them with [`crate::EngineBuilder::limits`].
///
/// ```
/// use tenancy_authz::{Catalog, Engine, Limits};
/// let limits = Limits::default().with_max_statements(200);
/// let engine = Engine::builder(Catalog::new(["projects:read"])?).limits(limits).build();
/// assert_eq!(engine.limits().max_statements, 200);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Most policies per tenant. Default 1,000 (the stores hold no more).
    pub max_policies: usize,
    /// Most statements per tenant, over all its policies. Default 1,000.
    pub max_statements: usize,
    /// Most bytes of condition text per tenant, over all its statements.
    /// Default 256 KiB.
    pub max_condition_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_policies: 1_000,
            max_statements: 1_000,
            max_condition_bytes: 256 * 1024,
        }
    }
}

/// Which of the [`Limits`] a tenant's policies exceed, the limit and how
/// far the policies would go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// More policies than [`Limits::max_policies`].
    #[error(
        "too many policies: a tenant may hold at most {max} (max_policies), this makes {actual}"
    )]
    Policies {
        /// The limit.
        max: usize,
        /// How many there would be.
        actual: usize,
    },
    /// More statements than [`Limits::max_statements`].
    #[error(
        "too many policy statements: a tenant may hold at most {max} over all its policies (max_statements), this makes {actual}"
    )]
    Statements {
        /// The limit.
        max: usize,
        /// How many there would be.
        actual: usize,
    },
    /// More condition text than [`Limits::max_condition_bytes`].
    #[error(
        "too much condition text: a tenant may hold at most {max} bytes over all its statements (max_condition_bytes), this makes {actual}"
    )]
    ConditionBytes {
        /// The limit, in bytes.
        max: usize,
        /// How many bytes there would be.
        actual: usize,
    },
}

impl LimitError {
    /// The name of the bound exceeded, as in [`Limits`]: `max_policies`,
    /// `max_statements` or `max_condition_bytes`.
    pub fn bound(&self) -> &'static str {
        match self {
            LimitError::Policies { .. } => "max_policies",
            LimitError::Statements { .. } => "max_statements",
            LimitError::ConditionBytes { .. } => "max_condition_bytes",
        }
    }
}

impl Limits {
    /// Limits with the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`Limits::max_policies`].
    pub fn with_max_policies(mut self, max: usize) -> Self {
        self.max_policies = max;
        self
    }

    /// Sets [`Limits::max_statements`].
    pub fn with_max_statements(mut self, max: usize) -> Self {
        self.max_statements = max;
        self
    }

    /// Sets [`Limits::max_condition_bytes`].
    pub fn with_max_condition_bytes(mut self, max: usize) -> Self {
        self.max_condition_bytes = max;
        self
    }

    /// Checks a tenant's whole set of policy documents.
    pub fn check_documents<'a>(
        &self,
        documents: impl IntoIterator<Item = &'a PolicyDocument>,
    ) -> Result<(), LimitError> {
        let mut policies = 0;
        let mut statements = 0;
        let mut condition_bytes = 0;
        for document in documents {
            policies += 1;
            statements += document.statements.len();
            condition_bytes += document
                .statements
                .iter()
                .filter_map(|s| s.condition.as_ref())
                .map(String::len)
                .sum::<usize>();
        }
        if policies > self.max_policies {
            return Err(LimitError::Policies {
                max: self.max_policies,
                actual: policies,
            });
        }
        if statements > self.max_statements {
            return Err(LimitError::Statements {
                max: self.max_statements,
                actual: statements,
            });
        }
        if condition_bytes > self.max_condition_bytes {
            return Err(LimitError::ConditionBytes {
                max: self.max_condition_bytes,
                actual: condition_bytes,
            });
        }
        Ok(())
    }

    /// Checks a tenant's whole set of validated policies.
    pub fn check(&self, policies: &[Policy]) -> Result<(), LimitError> {
        self.check_documents(policies.iter().map(Policy::document))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Effect, PolicyId, StatementDocument};

    fn document(id: &str, statements: usize, condition: &str) -> PolicyDocument {
        let mut document = PolicyDocument::new(PolicyId::new(id).unwrap());
        for _ in 0..statements {
            document = document.with_statement(
                StatementDocument::new(Effect::Deny, ["*".parse().unwrap()])
                    .with_condition(condition),
            );
        }
        document
    }

    #[test]
    fn each_bound_is_named() {
        let limits = Limits::new()
            .with_max_policies(2)
            .with_max_statements(4)
            .with_max_condition_bytes(30);
        let a = document("a", 2, "principal.x");
        let b = document("b", 2, "");
        assert_eq!(limits.check_documents([&a, &b]), Ok(()));
        let err = limits.check_documents([&a, &b, &b]).unwrap_err();
        assert_eq!(err.bound(), "max_policies");
        assert_eq!(
            err.to_string(),
            "too many policies: a tenant may hold at most 2 (max_policies), this makes 3"
        );
        let c = document("c", 3, "");
        let err = limits.check_documents([&a, &c]).unwrap_err();
        assert_eq!(err, LimitError::Statements { max: 4, actual: 5 });
        assert_eq!(err.bound(), "max_statements");
        let d = document("d", 1, "principal.x && principal.y");
        let err = limits.check_documents([&a, &d]).unwrap_err();
        assert_eq!(
            err,
            LimitError::ConditionBytes {
                max: 30,
                actual: 22 + 26
            }
        );
        assert!(err.to_string().contains("max_condition_bytes"));
    }
}

/// How fast one tenant may change its policies through
/// [`crate::AuthzAdmin`]: `burst` writes at once, then one more every
/// `every` (a token bucket, per tenant, in this process). Each policy write
/// compiles the tenant's whole policy set, so an unbounded stream of writes
/// from one tenant would keep the compile pool busy for everyone. Past the
/// rate a write is refused with [`crate::AdminError::RateLimited`], which
/// says when to retry. The default allows a burst of 30, then one write a
/// second.
///
/// ```
/// use std::time::Duration;
/// use tenancy_authz::WriteRate;
/// let rate = WriteRate::new(10, Duration::from_secs(2));
/// assert_eq!(rate.burst, 10);
/// assert_eq!(WriteRate::default().burst, 30);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteRate {
    /// Writes allowed at once (at least 1).
    pub burst: u32,
    /// How long until one more write is allowed.
    pub every: Duration,
}

impl WriteRate {
    /// A burst of `burst` writes (at least 1), then one every `every`.
    pub fn new(burst: u32, every: Duration) -> Self {
        Self {
            burst: burst.max(1),
            every,
        }
    }
}

impl Default for WriteRate {
    fn default() -> Self {
        Self::new(30, Duration::from_secs(1))
    }
}

/// Tenants tracked before idle ones are swept out.
const SWEEP_AT: usize = 1024;

/// Per-tenant [`WriteRate`] accounting (GCRA: each tenant's theoretical
/// arrival time). A tenant whose bucket is full again holds no entry, so
/// memory grows only with the tenants writing right now.
#[derive(Debug)]
pub(crate) struct WriteThrottle {
    rate: WriteRate,
    next: Mutex<HashMap<TenantId, Instant>>,
}

impl WriteThrottle {
    pub(crate) fn new(rate: WriteRate) -> Self {
        Self {
            rate,
            next: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a write of `tenant` at `now`, or says how long until one is
    /// allowed.
    pub(crate) fn admit(&self, tenant: TenantId, now: Instant) -> Result<(), Duration> {
        let tolerance = self.rate.every.saturating_mul(self.rate.burst - 1);
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        if next.len() >= SWEEP_AT {
            next.retain(|_, at| *at > now);
        }
        let at = next.get(&tenant).copied().map_or(now, |at| at.max(now));
        let ahead = at - now;
        if ahead > tolerance {
            return Err(ahead - tolerance);
        }
        next.insert(tenant, at + self.rate.every);
        Ok(())
    }
}

#[cfg(test)]
mod write_rate_tests {
    use super::*;

    #[test]
    fn a_burst_then_one_write_per_interval_per_tenant() {
        let throttle = WriteThrottle::new(WriteRate::new(3, Duration::from_secs(2)));
        let (a, b) = (TenantId::new(), TenantId::new());
        let start = Instant::now();
        for _ in 0..3 {
            throttle.admit(a, start).unwrap();
        }
        assert_eq!(throttle.admit(a, start), Err(Duration::from_secs(2)));
        // Another tenant has its own allowance.
        throttle.admit(b, start).unwrap();
        let later = start + Duration::from_millis(1500);
        assert_eq!(throttle.admit(a, later), Err(Duration::from_millis(500)));
        throttle.admit(a, start + Duration::from_secs(2)).unwrap();
        assert!(throttle.admit(a, start + Duration::from_secs(2)).is_err());
        // Idle long enough, the whole burst is back.
        let idle = start + Duration::from_secs(60);
        for _ in 0..3 {
            throttle.admit(a, idle).unwrap();
        }
        assert!(throttle.admit(a, idle).is_err());
    }

    #[test]
    fn idle_tenants_are_swept() {
        let throttle = WriteThrottle::new(WriteRate::new(1, Duration::from_secs(1)));
        let start = Instant::now();
        for _ in 0..SWEEP_AT {
            throttle.admit(TenantId::new(), start).unwrap();
        }
        throttle
            .admit(TenantId::new(), start + Duration::from_secs(5))
            .unwrap();
        assert_eq!(throttle.next.lock().unwrap().len(), 1);
    }
}
