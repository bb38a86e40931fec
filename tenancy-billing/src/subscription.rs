//! Billing accounts and subscriptions, mirroring the provider's.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tenancy_core::TenantId;
use time::OffsetDateTime;

/// Longest provider id accepted (customer, subscription, event), in bytes.
pub const MAX_PROVIDER_ID_LEN: usize = 255;

/// A provider id is refused: empty, too long, or with characters other
/// than ASCII letters, digits and `_`, `-`, `.`, `:`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} id")]
pub struct InvalidProviderId {
    /// Which kind of id.
    pub what: &'static str,
}

fn check_provider_id(what: &'static str, raw: &str) -> Result<(), InvalidProviderId> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_PROVIDER_ID_LEN
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(InvalidProviderId { what })
    }
}

macro_rules! provider_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates an id.
            pub fn new(raw: impl Into<String>) -> Result<Self, InvalidProviderId> {
                let raw = raw.into();
                check_provider_id($what, &raw)?;
                Ok(Self(raw))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidProviderId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidProviderId;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

provider_id!(
    /// The provider's id of a customer (`cus_…` at Stripe).
    CustomerId,
    "customer"
);
provider_id!(
    /// The provider's id of a subscription (`sub_…` at Stripe).
    SubscriptionId,
    "subscription"
);
provider_id!(
    /// The provider's id of a webhook event (`evt_…` at Stripe).
    EventId,
    "event"
);

/// A tenant's billing account: the tenant and its provider customer, one
/// to one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingAccount {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Its customer at the provider.
    pub customer_id: CustomerId,
    /// When the link was made.
    pub created_at: OffsetDateTime,
}

/// A subscription's status, as the provider names it (Stripe's statuses).
/// What each grants is the [`crate::AccessPolicy`]'s business.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// In a free trial.
    Trialing,
    /// Paid up.
    Active,
    /// The latest invoice failed; the provider is retrying.
    PastDue,
    /// Retries are exhausted; invoices stay open.
    Unpaid,
    /// Ended. Final: a canceled subscription never comes back.
    Canceled,
    /// Created, first payment not yet made.
    Incomplete,
    /// The first payment never came. Final.
    IncompleteExpired,
    /// A trial ended without a payment method; collection is paused.
    Paused,
}

impl SubscriptionStatus {
    /// Every status.
    pub const ALL: [SubscriptionStatus; 8] = [
        SubscriptionStatus::Trialing,
        SubscriptionStatus::Active,
        SubscriptionStatus::PastDue,
        SubscriptionStatus::Unpaid,
        SubscriptionStatus::Canceled,
        SubscriptionStatus::Incomplete,
        SubscriptionStatus::IncompleteExpired,
        SubscriptionStatus::Paused,
    ];

    /// The provider's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Trialing => "trialing",
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::PastDue => "past_due",
            SubscriptionStatus::Unpaid => "unpaid",
            SubscriptionStatus::Canceled => "canceled",
            SubscriptionStatus::Incomplete => "incomplete",
            SubscriptionStatus::IncompleteExpired => "incomplete_expired",
            SubscriptionStatus::Paused => "paused",
        }
    }

    /// Whether the subscription can never change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            SubscriptionStatus::Canceled | SubscriptionStatus::IncompleteExpired
        )
    }
}

impl fmt::Display for SubscriptionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name the provider sent that is not one of
/// [`SubscriptionStatus`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown subscription status")]
pub struct UnknownStatus;

impl FromStr for SubscriptionStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SubscriptionStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or(UnknownStatus)
    }
}

/// The tenant's subscription, as last heard from the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The provider's id.
    pub id: SubscriptionId,
    /// The customer paying.
    pub customer_id: CustomerId,
    /// The catalog plan its price maps to (by lookup key).
    pub plan: String,
    /// Its status.
    pub status: SubscriptionStatus,
    /// Start of the current billing period.
    pub current_period_start: OffsetDateTime,
    /// End of the current billing period.
    pub current_period_end: OffsetDateTime,
    /// Ends at the end of the period rather than renewing.
    pub cancel_at_period_end: bool,
    /// Quantity (seats).
    pub quantity: u32,
    /// End of the trial, if any.
    pub trial_end: Option<OffsetDateTime>,
    /// Since when it has been `past_due` (kept across updates that stay
    /// `past_due`, cleared otherwise), for the grace period.
    pub past_due_since: Option<OffsetDateTime>,
    /// When the provider's view of the object was taken (the `created` time
    /// of the event carrying it, or the time of a fetch): an older snapshot
    /// never replaces a newer one.
    pub observed_at: OffsetDateTime,
}

impl Subscription {
    /// Whether `self`, a snapshot arriving now, may replace `stored`: it is
    /// strictly newer, and `stored` is not a final state of the same
    /// subscription. A snapshot of another subscription replaces the
    /// stored one when newer (a new subscription after a cancellation).
    pub fn supersedes(&self, stored: &Subscription) -> bool {
        if self.id == stored.id && stored.status.is_final() {
            return false;
        }
        self.observed_at > stored.observed_at
    }

    /// Carries `past_due_since` over from `previous`: the grace period
    /// counts from the first `past_due` snapshot, not the latest.
    pub fn carry_past_due(mut self, previous: Option<&Subscription>) -> Self {
        if self.status == SubscriptionStatus::PastDue {
            let earlier = previous
                .filter(|p| p.id == self.id && p.status == SubscriptionStatus::PastDue)
                .and_then(|p| p.past_due_since);
            self.past_due_since = earlier.or(self.past_due_since).or(Some(self.observed_at));
        } else {
            self.past_due_since = None;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn sub(status: SubscriptionStatus, at: OffsetDateTime) -> Subscription {
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
            past_due_since: None,
            observed_at: at,
        }
    }

    #[test]
    fn statuses_round_trip() {
        for status in SubscriptionStatus::ALL {
            assert_eq!(status.as_str().parse::<SubscriptionStatus>(), Ok(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{status}\""));
        }
        assert_eq!("gone".parse::<SubscriptionStatus>(), Err(UnknownStatus));
    }

    #[test]
    fn ids_are_validated() {
        assert!(CustomerId::new("cus_ABC123").is_ok());
        assert!(CustomerId::new("").is_err());
        assert!(CustomerId::new("cus 1").is_err());
        assert!(EventId::new("x".repeat(256)).is_err());
        assert!(serde_json::from_str::<SubscriptionId>("\"sub\\n\"").is_err());
    }

    #[test]
    fn only_newer_snapshots_supersede_and_final_is_final() {
        let t0 = datetime!(2030-01-01 0:00 UTC);
        let t1 = datetime!(2030-01-01 0:01 UTC);
        let active = sub(SubscriptionStatus::Active, t0);
        assert!(sub(SubscriptionStatus::PastDue, t1).supersedes(&active));
        assert!(!sub(SubscriptionStatus::PastDue, t0).supersedes(&active));
        let canceled = sub(SubscriptionStatus::Canceled, t0);
        assert!(!sub(SubscriptionStatus::Active, t1).supersedes(&canceled));
        let mut other = sub(SubscriptionStatus::Active, t1);
        other.id = SubscriptionId::new("sub_2").unwrap();
        assert!(other.supersedes(&canceled));
    }

    #[test]
    fn past_due_since_counts_from_the_first() {
        let t0 = datetime!(2030-01-01 0:00 UTC);
        let t1 = datetime!(2030-01-02 0:00 UTC);
        let first = sub(SubscriptionStatus::PastDue, t0).carry_past_due(None);
        assert_eq!(first.past_due_since, Some(t0));
        let second = sub(SubscriptionStatus::PastDue, t1).carry_past_due(Some(&first));
        assert_eq!(second.past_due_since, Some(t0));
        let paid = sub(SubscriptionStatus::Active, t1).carry_past_due(Some(&second));
        assert_eq!(paid.past_due_since, None);
    }
}
