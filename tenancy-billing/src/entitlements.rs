//! Entitlements: the resolved, immutable snapshot of what one tenant may use.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tenancy_core::TenantId;
use time::OffsetDateTime;

use crate::access::{Access, AccessPolicy};
use crate::catalog::{Catalog, FeatureId, FeatureValue, Limit};
use crate::overrides::{Override, merge};
use crate::subscription::{BillingAccount, Subscription};

/// The version of a tenant's billing state: 0 before the first change, then
/// one more on every change of its account, subscription or overrides.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Revision(pub u64);

impl Revision {
    /// Before any change.
    pub const ZERO: Revision = Revision(0);

    /// The revision after this one.
    pub fn next(self) -> Revision {
        Revision(self.0.saturating_add(1))
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Everything billing knows of one tenant, read at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BillingState {
    /// The revision it was read at.
    pub revision: Revision,
    /// The tenant's billing account, if linked.
    pub account: Option<BillingAccount>,
    /// The tenant's subscription, if any.
    pub subscription: Option<Subscription>,
    /// Its overrides, expired ones included, in creation order.
    pub overrides: Vec<Override>,
}

/// What one tenant may use, resolved from its plan, its overrides and its
/// subscription's status under an [`AccessPolicy`]. Immutable and cheap to
/// share (`Arc<Entitlements>`); [`Entitlements::check`] and
/// [`Entitlements::limit`] index an array: no database, no allocation, no
/// hashing.
///
/// ```
/// use tenancy_billing::{AccessPolicy, BillingState, Catalog, CatalogDocument, Entitlements, PlanDocument};
///
/// let catalog = Catalog::from_document(
///     &CatalogDocument::new("free").gate("sso")
///         .plan("free", PlanDocument::default())
///         .plan("pro", PlanDocument::default().grant("sso", true)),
/// )?;
/// let sso = catalog.feature("sso").unwrap();
/// let tenant = tenancy_core::TenantId::new();
/// let e = Entitlements::resolve(&catalog, &AccessPolicy::new(), tenant, &BillingState::default(), time::OffsetDateTime::now_utc());
/// assert!(!e.check(sso));
/// assert_eq!(e.plan(), "free");
/// # Ok::<(), tenancy_billing::CatalogError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Entitlements {
    tenant_id: TenantId,
    revision: Revision,
    plan: Arc<str>,
    access: Access,
    values: Arc<[FeatureValue]>,
    valid_until: Option<OffsetDateTime>,
    catalog: Catalog,
}

impl Entitlements {
    /// Resolves `state` at `now`: the subscription's plan if the policy
    /// grants it (the default plan otherwise, or when the catalog lacks
    /// that plan), then the active overrides merged feature by feature.
    pub fn resolve(
        catalog: &Catalog,
        policy: &AccessPolicy,
        tenant_id: TenantId,
        state: &BillingState,
        now: OffsetDateTime,
    ) -> Self {
        let (mut access, mut valid_until) = policy.access(state.subscription.as_ref(), now);
        let mut plan = catalog.default_plan();
        if access.grants_plan()
            && let Some(subscription) = &state.subscription
        {
            match catalog.plan(&subscription.plan) {
                Some(p) => plan = p,
                None => {
                    tracing::warn!(
                        tenant = %tenant_id,
                        plan = %subscription.plan,
                        "subscription names a plan the catalog lacks; granting the default plan"
                    );
                    access = Access::FallenBack {
                        status: subscription.status,
                    };
                    valid_until = None;
                }
            }
        }
        let active: Vec<&Override> = state
            .overrides
            .iter()
            .filter(|o| o.active_at(now))
            .collect();
        let values = if active.is_empty() {
            Arc::clone(plan.values())
        } else {
            let mut values = plan.values().to_vec();
            if let Some(expiry) = merge(catalog, &mut values, &state.overrides, now) {
                valid_until = Some(valid_until.map_or(expiry, |v| v.min(expiry)));
            }
            values.into()
        };
        Self {
            tenant_id,
            revision: state.revision,
            plan: plan.key_arc(),
            access,
            values,
            valid_until,
            catalog: catalog.clone(),
        }
    }

    /// The tenant.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    /// The revision of the billing state it was resolved from.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The plan granted.
    pub fn plan(&self) -> &str {
        &self.plan
    }

    /// How the plan is held.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Until when this snapshot holds without a change in the store (the
    /// end of a grace period, the first override expiry); `None` if until
    /// the next change.
    pub fn valid_until(&self) -> Option<OffsetDateTime> {
        self.valid_until
    }

    /// Whether the snapshot still holds at `now`.
    pub fn is_current_at(&self, now: OffsetDateTime) -> bool {
        self.valid_until.is_none_or(|until| now < until)
    }

    /// The catalog it was resolved against.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The value of `feature` (off, or a limit of 0, for an id of another
    /// catalog).
    #[inline]
    pub fn value(&self, feature: FeatureId) -> FeatureValue {
        match self.values.get(feature.index()) {
            Some(value) => *value,
            None => FeatureValue::Gate(false),
        }
    }

    /// Whether `feature` may be used at all: an open gate or a limit above 0.
    #[inline]
    pub fn check(&self, feature: FeatureId) -> bool {
        self.value(feature).grants()
    }

    /// The limit of a numeric `feature`.
    #[inline]
    pub fn limit(&self, feature: FeatureId) -> Option<Limit> {
        self.value(feature).limit()
    }

    /// [`Entitlements::check`] by name; `false` for an unknown feature.
    pub fn check_key(&self, feature: &str) -> bool {
        self.catalog.feature(feature).is_some_and(|f| self.check(f))
    }

    /// [`Entitlements::limit`] by name.
    pub fn limit_key(&self, feature: &str) -> Option<Limit> {
        self.catalog.feature(feature).and_then(|f| self.limit(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{CatalogDocument, Enforcement, PlanDocument};
    use crate::overrides::{OverrideChange, OverrideId};
    use crate::subscription::{CustomerId, SubscriptionId, SubscriptionStatus};
    use time::macros::datetime;

    fn catalog() -> Catalog {
        Catalog::from_document(
            &CatalogDocument::new("free")
                .gate("sso")
                .limit("seats", None, Enforcement::Hard)
                .plan("free", PlanDocument::default().grant("seats", 3))
                .plan(
                    "pro",
                    PlanDocument::default()
                        .lookup_key("pro")
                        .grant("sso", true)
                        .grant("seats", 50),
                ),
        )
        .unwrap()
    }

    fn subscribed(status: SubscriptionStatus, plan: &str) -> BillingState {
        BillingState {
            revision: Revision(4),
            account: None,
            subscription: Some(Subscription {
                id: SubscriptionId::new("sub_1").unwrap(),
                customer_id: CustomerId::new("cus_1").unwrap(),
                plan: plan.into(),
                status,
                current_period_start: datetime!(2030-01-01 0:00 UTC),
                current_period_end: datetime!(2030-02-01 0:00 UTC),
                cancel_at_period_end: false,
                quantity: 1,
                trial_end: None,
                past_due_since: Some(datetime!(2030-01-05 0:00 UTC)),
                observed_at: datetime!(2030-01-05 0:00 UTC),
            }),
            overrides: Vec::new(),
        }
    }

    #[test]
    fn plan_status_and_overrides_resolve() {
        let c = catalog();
        let p = AccessPolicy::new();
        let t = TenantId::new();
        let sso = c.feature("sso").unwrap();
        let seats = c.feature("seats").unwrap();
        let now = datetime!(2030-01-06 0:00 UTC);

        let active = Entitlements::resolve(
            &c,
            &p,
            t,
            &subscribed(SubscriptionStatus::Active, "pro"),
            now,
        );
        assert!(active.check(sso));
        assert_eq!(active.limit(seats), Some(Limit::Max(50)));
        assert_eq!(active.revision(), Revision(4));
        assert_eq!(active.plan(), "pro");

        let grace = Entitlements::resolve(
            &c,
            &p,
            t,
            &subscribed(SubscriptionStatus::PastDue, "pro"),
            now,
        );
        assert!(grace.check(sso));
        assert_eq!(grace.valid_until(), Some(datetime!(2030-01-12 0:00 UTC)));
        assert!(!grace.is_current_at(datetime!(2030-01-12 0:00 UTC)));
        let after = Entitlements::resolve(
            &c,
            &p,
            t,
            &subscribed(SubscriptionStatus::PastDue, "pro"),
            datetime!(2030-01-12 0:00 UTC),
        );
        assert!(!after.check(sso));
        assert_eq!(after.plan(), "free");

        let unknown = Entitlements::resolve(
            &c,
            &p,
            t,
            &subscribed(SubscriptionStatus::Active, "gold"),
            now,
        );
        assert_eq!(unknown.plan(), "free");

        let mut with_override = subscribed(SubscriptionStatus::Canceled, "pro");
        with_override.overrides.push(Override {
            id: OverrideId::new(),
            tenant_id: t,
            feature: "sso".into(),
            change: OverrideChange::Enable,
            expires_at: Some(datetime!(2030-03-01 0:00 UTC)),
            reason: "trial".into(),
            created_at: datetime!(2030-01-01 0:00 UTC),
        });
        let e = Entitlements::resolve(&c, &p, t, &with_override, now);
        assert!(e.check(sso));
        assert!(e.check_key("sso"));
        assert_eq!(e.limit_key("seats"), Some(Limit::Max(3)));
        assert!(!e.check_key("nope"));
        assert_eq!(e.valid_until(), Some(datetime!(2030-03-01 0:00 UTC)));
    }
}
