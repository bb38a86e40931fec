//! What each subscription status grants.

use time::{Duration, OffsetDateTime};

use crate::subscription::{Subscription, SubscriptionStatus};

/// Which plan a tenant's subscription grants, by status:
///
/// | status | grants |
/// | --- | --- |
/// | `trialing`, `active` | the subscription's plan (also when `cancel_at_period_end`: the provider cancels at the end and says so) |
/// | `past_due` | the plan for the grace period (default 7 days, counted from the first `past_due` snapshot), then the default plan |
/// | `unpaid`, `canceled`, `incomplete`, `incomplete_expired`, `paused` | the default plan |
/// | no subscription | the default plan |
///
/// Falling back changes what is *granted*; nothing is ever deleted: a
/// tenant past its new limits keeps its data and is refused new usage by
/// hard limits until it upgrades again. A subscription naming a plan the
/// catalog does not know also grants the default plan (and is logged by
/// the resolver), rather than failing every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessPolicy {
    past_due_grace: Duration,
}

impl Default for AccessPolicy {
    fn default() -> Self {
        Self {
            past_due_grace: Duration::days(7),
        }
    }
}

/// How a tenant holds its current plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No subscription: the default plan.
    Default,
    /// The subscription's plan, paid or trialing.
    Subscribed,
    /// The subscription's plan, in the `past_due` grace period until the
    /// instant given.
    Grace {
        /// When the grace period ends.
        until: OffsetDateTime,
    },
    /// The default plan, because the subscription's status no longer grants
    /// its plan.
    FallenBack {
        /// The status that stopped granting.
        status: SubscriptionStatus,
    },
}

impl Access {
    /// Whether the subscription's plan is granted.
    pub fn grants_plan(self) -> bool {
        matches!(self, Access::Subscribed | Access::Grace { .. })
    }
}

impl AccessPolicy {
    /// The default policy: 7 days of grace for `past_due`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the `past_due` grace period (zero falls back at once).
    pub fn with_past_due_grace(mut self, grace: Duration) -> Self {
        self.past_due_grace = grace.max(Duration::ZERO);
        self
    }

    /// The `past_due` grace period.
    pub fn past_due_grace(&self) -> Duration {
        self.past_due_grace
    }

    /// What `subscription` grants at `now`, and until when that answer
    /// holds (the end of a grace period), so caches know when to resolve
    /// again.
    pub fn access(
        &self,
        subscription: Option<&Subscription>,
        now: OffsetDateTime,
    ) -> (Access, Option<OffsetDateTime>) {
        let Some(subscription) = subscription else {
            return (Access::Default, None);
        };
        match subscription.status {
            SubscriptionStatus::Trialing | SubscriptionStatus::Active => (Access::Subscribed, None),
            SubscriptionStatus::PastDue => {
                let since = subscription
                    .past_due_since
                    .unwrap_or(subscription.observed_at);
                let until = since.saturating_add(self.past_due_grace);
                if now < until {
                    (Access::Grace { until }, Some(until))
                } else {
                    (
                        Access::FallenBack {
                            status: SubscriptionStatus::PastDue,
                        },
                        None,
                    )
                }
            }
            status @ (SubscriptionStatus::Unpaid
            | SubscriptionStatus::Canceled
            | SubscriptionStatus::Incomplete
            | SubscriptionStatus::IncompleteExpired
            | SubscriptionStatus::Paused) => (Access::FallenBack { status }, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscription::{CustomerId, SubscriptionId};
    use time::macros::datetime;

    fn sub(status: SubscriptionStatus) -> Subscription {
        Subscription {
            id: SubscriptionId::new("sub_1").unwrap(),
            customer_id: CustomerId::new("cus_1").unwrap(),
            plan: "pro".into(),
            status,
            current_period_start: datetime!(2030-01-01 0:00 UTC),
            current_period_end: datetime!(2030-02-01 0:00 UTC),
            cancel_at_period_end: false,
            quantity: 1,
            trial_end: None,
            past_due_since: Some(datetime!(2030-01-10 0:00 UTC)),
            observed_at: datetime!(2030-01-10 0:00 UTC),
        }
    }

    #[test]
    fn each_status_grants_as_documented() {
        let policy = AccessPolicy::new();
        let now = datetime!(2030-01-11 0:00 UTC);
        for status in SubscriptionStatus::ALL {
            let (access, _) = policy.access(Some(&sub(status)), now);
            let expected = matches!(
                status,
                SubscriptionStatus::Trialing
                    | SubscriptionStatus::Active
                    | SubscriptionStatus::PastDue
            );
            assert_eq!(access.grants_plan(), expected, "{status}");
        }
        assert_eq!(policy.access(None, now), (Access::Default, None));
    }

    #[test]
    fn grace_ends() {
        let policy = AccessPolicy::new().with_past_due_grace(Duration::days(3));
        let s = sub(SubscriptionStatus::PastDue);
        let until = datetime!(2030-01-13 0:00 UTC);
        assert_eq!(
            policy.access(Some(&s), datetime!(2030-01-12 23:59 UTC)),
            (Access::Grace { until }, Some(until))
        );
        assert_eq!(
            policy.access(Some(&s), until).0,
            Access::FallenBack {
                status: SubscriptionStatus::PastDue
            }
        );
        let none = AccessPolicy::new().with_past_due_grace(Duration::ZERO);
        assert!(!none.access(Some(&s), s.observed_at).0.grants_plan());
    }
}
