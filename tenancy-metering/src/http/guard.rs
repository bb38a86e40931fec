//! [`MeteringGuard`]: the metering step of a route, as a
//! [`tenancy_http::Guard`]: rate limits by key, then hard quotas, then the
//! request's usage recorded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tenancy_http::http::{HeaderName, HeaderValue, StatusCode};
use tenancy_http::{Admission, Guard, Problem, RequestContext, async_trait};
use time::OffsetDateTime;

use super::Shared;
use super::headers::{PolicyState, ceil_seconds, policy_field, state_field, valid_policy_name};
use crate::meter::{MeterError, MeterName};
use crate::quota::QuotaDecision;
use crate::ratelimit::{OnStoreError, RateLimit};

/// What part of a request a rate limit counts by. A rule keyed by parts a
/// request lacks (an API key for a signed-in user) does not apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyPart {
    /// The tenant the request acts in.
    Tenant,
    /// The API key calling (API-key callers only).
    ApiKey,
    /// The user calling (signed-in users only).
    User,
    /// The client's address, through the trusted proxies. When the
    /// integration cannot tell it (axum without `ConnectInfo`), every such
    /// request counts in one shared bucket, `unknown`, and a warning is
    /// logged once: a limit never silently stops applying.
    ClientIp,
    /// The route the guard wraps (its name given to
    /// [`MeteringModule::guard`](super::MeteringModule::guard)).
    Route,
}

/// Why a rule or a guard setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// A policy name must be 1–64 of lowercase letters, digits, `_`, `-`,
    /// `.`, `:` (it is sent in the `RateLimit` fields).
    #[error("invalid policy name {0:?}")]
    InvalidName(String),
    /// A meter name is invalid.
    #[error(transparent)]
    Meter(#[from] MeterError),
    /// A quota needs the tenants' plans: the module was built without
    /// [`MeteringModuleBuilder::plans`](super::MeteringModuleBuilder::plans),
    /// so the quota could never be checked.
    #[error("quota on {0}: the metering module has no plan source")]
    NoPlanSource(String),
}

/// A named GCRA limit counted per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateRule {
    name: String,
    limit: RateLimit,
    parts: Vec<KeyPart>,
}

impl RateRule {
    /// `limit` under the policy name `name` (sent in `RateLimit-Policy`),
    /// counted per tenant until [`by`](Self::by) says otherwise.
    pub fn new(name: &str, limit: RateLimit) -> Result<Self, GuardError> {
        if !valid_policy_name(name) {
            return Err(GuardError::InvalidName(name.chars().take(64).collect()));
        }
        Ok(Self {
            name: name.to_owned(),
            limit,
            parts: Vec::new(),
        })
    }

    /// Counts per `part` too (parts combine: tenant and route is one
    /// bucket per tenant per route).
    pub fn by(mut self, part: KeyPart) -> Self {
        if !self.parts.contains(&part) {
            self.parts.push(part);
        }
        self
    }

    /// The policy name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The limit.
    pub fn limit(&self) -> &RateLimit {
        &self.limit
    }

    /// The store key of this rule for `context` on `route`; `None` when the
    /// request lacks a part.
    fn key(&self, context: &RequestContext, route: &str) -> Option<String> {
        let mut key = format!("rl:{}", self.name);
        let parts: &[KeyPart] = if self.parts.is_empty() {
            &[KeyPart::Tenant]
        } else {
            &self.parts
        };
        for part in parts {
            key.push('|');
            match part {
                KeyPart::Tenant => key.push_str(&context.tenant_id().to_string()),
                KeyPart::User => key.push_str(&context.user_id()?.to_string()),
                KeyPart::ApiKey => match context.principal().subject {
                    tenancy_http::auth::Subject::ApiKey(id) => key.push_str(&id.to_string()),
                    _ => return None,
                },
                KeyPart::ClientIp => match context.client_ip() {
                    Some(ip) => key.push_str(&ip.to_string()),
                    None => {
                        warn_unknown_client();
                        key.push_str("unknown");
                    }
                },
                KeyPart::Route => key.push_str(route),
            }
        }
        Some(key)
    }
}

#[derive(Debug, Clone)]
struct QuotaRule {
    meter: MeterName,
    cost: u64,
    on_store_error: OnStoreError,
}

/// The metering step of one route, made by
/// [`MeteringModule::guard`](super::MeteringModule::guard) and wrapped
/// around the route with `tenancy_axum::guard` or `tenancy_actix::guard`.
///
/// In order, each step refusing stops the request:
/// 1. **Rate limits** (GCRA, [`RateRule`]s): the plan's rules when
///    [`limit_for_plan`](Self::limit_for_plan) gave the tenant's plan some,
///    else the rules of [`limit`](Self::limit). Over a limit: `429`
///    `urn:tenancy:problem:rate-limited` with `Retry-After`. A rate-limit
///    store that fails applies each limit's [`OnStoreError`].
/// 2. **Quotas** ([`quota`](Self::quota)): an atomic check-and-consume of
///    the tenant's plan quota for the period; a hard limit reached answers
///    `429` `urn:tenancy:problem:quota-exceeded` with `Retry-After` at the
///    period's end. When the quota or plan store fails, the quota's
///    [`OnStoreError`] decides: open admits the request uncounted
///    (logged), closed answers `503` with `Retry-After: 1`. With several
///    quotas on one route, those consumed before a refusal stay consumed
///    (the request counted against them): give a route one quota.
/// 3. **Usage** ([`record`](Self::record)): added to the buffered ingest
///    with the route as the `route` dimension (kept if the meter keeps
///    it); it reaches the store with the next flush.
///
/// Every answer, refusals included, carries `RateLimit-Policy` and
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers-09) for each limit
/// and quota checked: a quota is the policy `quota:<meter>` whose window
/// is its period.
#[derive(Clone)]
pub struct MeteringGuard {
    shared: Arc<Shared>,
    route: Arc<str>,
    rules: Vec<RateRule>,
    plan_rules: HashMap<Arc<str>, Vec<RateRule>>,
    quotas: Vec<QuotaRule>,
    record: Vec<(MeterName, i64)>,
}

impl std::fmt::Debug for MeteringGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteringGuard")
            .field("route", &self.route)
            .field("rules", &self.rules)
            .field("plan_rules", &self.plan_rules)
            .field("quotas", &self.quotas)
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

impl MeteringGuard {
    pub(crate) fn new(shared: Arc<Shared>, route: &str) -> Self {
        Self {
            shared,
            route: route.into(),
            rules: Vec::new(),
            plan_rules: HashMap::new(),
            quotas: Vec::new(),
            record: Vec::new(),
        }
    }

    /// Applies `rule` to tenants whose plan has no rules of its own.
    pub fn limit(mut self, rule: RateRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Applies `rule` to tenants on `plan` (instead of the default rules).
    pub fn limit_for_plan(mut self, plan: &str, rule: RateRule) -> Self {
        self.plan_rules.entry(plan.into()).or_default().push(rule);
        self
    }

    /// Consumes `cost` of the tenant's quota on `meter` per request; what a
    /// failing quota store does is `on_store_error`.
    /// [`GuardError::NoPlanSource`] when the module has no plans to read
    /// the quota from.
    pub fn quota(
        mut self,
        meter: &str,
        cost: u64,
        on_store_error: OnStoreError,
    ) -> Result<Self, GuardError> {
        if self.shared.quotas.is_none() {
            return Err(GuardError::NoPlanSource(meter.chars().take(64).collect()));
        }
        self.quotas.push(QuotaRule {
            meter: MeterName::new(meter)?,
            cost,
            on_store_error,
        });
        Ok(self)
    }

    /// Records `value` of `meter` per admitted request.
    pub fn record(mut self, meter: &str, value: i64) -> Result<Self, GuardError> {
        self.record.push((MeterName::new(meter)?, value));
        Ok(self)
    }

    async fn rules_for(&self, context: &RequestContext, now: OffsetDateTime) -> &[RateRule] {
        if self.plan_rules.is_empty() {
            return &self.rules;
        }
        let Some(plans) = &self.shared.plans else {
            return &self.rules;
        };
        match plans.plan(context.tenant_id(), now).await {
            Ok(Some(plan)) => self
                .plan_rules
                .get(&plan.plan)
                .map_or(&self.rules[..], Vec::as_slice),
            Ok(None) => &self.rules,
            Err(error) => {
                tracing::warn!(error = %error, "plan source failed; default rate limits applied");
                &self.rules
            }
        }
    }

    fn refusal(problem: Problem, states: &[PolicyState]) -> Problem {
        match headers_of(states) {
            Some((policy, state)) => problem
                .with_header(HeaderName::from_static("ratelimit-policy"), policy)
                .with_header(HeaderName::from_static("ratelimit"), state),
            None => problem,
        }
    }
}

/// Logs, once per process, that a rule keyed by client address met a
/// request whose address is unknown.
fn warn_unknown_client() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            "a rate limit keyed by client address met a request without one; such requests share one bucket (serve axum with ConnectInfo)"
        );
    });
}

fn headers_of(states: &[PolicyState]) -> Option<(HeaderValue, HeaderValue)> {
    if states.is_empty() {
        return None;
    }
    let policy = HeaderValue::from_str(&policy_field(states)).ok()?;
    let state = HeaderValue::from_str(&state_field(states)).ok()?;
    Some((policy, state))
}

fn micros(duration: time::Duration) -> Duration {
    Duration::from_micros(u64::try_from(duration.whole_microseconds()).unwrap_or(0))
}

#[async_trait]
impl Guard for MeteringGuard {
    fn name(&self) -> &str {
        "metering"
    }

    async fn check(&self, context: &RequestContext) -> Result<Admission, Problem> {
        let shared = &*self.shared;
        let now = shared.clock.now();
        let mut states = Vec::new();
        for rule in self.rules_for(context, now).await {
            let Some(key) = rule.key(context, &self.route) else {
                continue;
            };
            let decision = shared.limiter.check(&key, &rule.limit, 1).await;
            let period = rule.limit.period();
            states.push(PolicyState {
                name: rule.name.clone(),
                quota: u64::from(rule.limit.requests()),
                window: ceil_seconds(period),
                remaining: u64::from(decision.remaining),
                reset: ceil_seconds(decision.reset_after),
            });
            if !decision.allowed {
                let until = now + decision.retry_after;
                return Err(Self::refusal(Problem::rate_limited(until, now), &states));
            }
        }
        for quota in &self.quotas {
            let Some(quotas) = &shared.quotas else {
                break;
            };
            match quotas
                .consume(context.scope(), &quota.meter, quota.cost)
                .await
            {
                Ok(QuotaDecision::Unlimited) => {}
                Ok(QuotaDecision::Allowed { used, limit }) => states.push(PolicyState {
                    name: format!("quota:{}", quota.meter.as_str()),
                    quota: limit.amount,
                    window: ceil_seconds(micros(limit.period_end - limit.period_start)),
                    remaining: limit.amount.saturating_sub(used),
                    reset: ceil_seconds(micros(limit.period_end - now)),
                }),
                Ok(QuotaDecision::Refused { used, limit }) => {
                    states.push(PolicyState {
                        name: format!("quota:{}", quota.meter.as_str()),
                        quota: limit.amount,
                        window: ceil_seconds(micros(limit.period_end - limit.period_start)),
                        remaining: limit.amount.saturating_sub(used),
                        reset: ceil_seconds(micros(limit.period_end - now)),
                    });
                    let problem = Problem::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "quota-exceeded",
                        "Quota exceeded",
                    )
                    .with_detail(format!(
                        "the plan's {} quota for this period is used up",
                        quota.meter.as_str()
                    ))
                    .retry_after(limit.period_end, now);
                    return Err(Self::refusal(problem, &states));
                }
                Err(error) => match quota.on_store_error {
                    OnStoreError::Open => {
                        tracing::warn!(error = %error, meter = %quota.meter.as_str(), "quota check failed; admitted uncounted (fail open)");
                    }
                    OnStoreError::Closed => {
                        let problem = Problem::unavailable(&error)
                            .retry_after(now + Duration::from_secs(1), now);
                        return Err(Self::refusal(problem, &states));
                    }
                },
            }
        }
        for (meter, value) in &self.record {
            if let Err(error) = shared.ingest.add(
                context.scope(),
                meter.as_str(),
                *value,
                now,
                &[("route", &self.route)],
            ) {
                tracing::warn!(error = %error, meter = %meter.as_str(), "request usage not recorded");
            }
        }
        Ok(match headers_of(&states) {
            Some((policy, state)) => Admission::new()
                .with_header(HeaderName::from_static("ratelimit-policy"), policy)
                .with_header(HeaderName::from_static("ratelimit"), state),
            None => Admission::new(),
        })
    }
}
