//! [`Entitlement`]: a route guard admitting tenants whose plan includes a
//! feature, and [`BillingContext`]: the tenant's entitlements from a
//! request's context.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::json;
use tenancy_http::http::StatusCode;
use tenancy_http::{Admission, Guard, Problem, RequestContext, async_trait};

use crate::entitlements::Entitlements;

/// The problem type slug of a refusal for lack of an entitlement
/// (`urn:tenancy:problem:entitlement-required`).
pub const ENTITLEMENT_REQUIRED: &str = "entitlement-required";

/// The tenant's billing, from a request's context.
#[async_trait]
pub trait BillingContext {
    /// The tenant's entitlements (cached; resolved from the store on a
    /// miss). `500` if the billing module is not added to the builder,
    /// `503` if the store fails.
    async fn entitlements(&self) -> Result<Arc<Entitlements>, Problem>;
}

#[async_trait]
impl BillingContext for RequestContext {
    async fn entitlements(&self) -> Result<Arc<Entitlements>, Problem> {
        super::module(self.tenancy())?
            .entitlements(self.tenant_id())
            .await
            .map_err(|e| Problem::unavailable(&e))
    }
}

/// Admits requests of tenants whose entitlements grant `feature` (an open
/// gate, or a limit above zero); others get `402`
/// [`entitlement_required`]. Wrap routes with it through
/// `tenancy_axum::require_entitlement` / `tenancy_actix::require_entitlement`
/// (or their generic `guard`).
///
/// A feature the catalog does not declare is a programming error: it
/// answers `500` and logs, rather than refusing every tenant as unpaid.
#[derive(Debug, Clone)]
pub struct Entitlement {
    feature: Cow<'static, str>,
    name: String,
}

impl Entitlement {
    /// A guard on `feature` (a catalog feature's name, e.g. `"sso"`).
    pub fn new(feature: impl Into<Cow<'static, str>>) -> Self {
        let feature = feature.into();
        let name = format!("entitlement:{feature}");
        Self { feature, name }
    }

    /// The feature guarded.
    pub fn feature(&self) -> &str {
        &self.feature
    }
}

#[async_trait]
impl Guard for Entitlement {
    fn name(&self) -> &str {
        &self.name
    }

    async fn check(&self, context: &RequestContext) -> Result<Admission, Problem> {
        let entitlements = context.entitlements().await?;
        let Some(feature) = entitlements.catalog().feature(&self.feature) else {
            return Err(Problem::internal(&UnknownFeature(self.feature.to_string())));
        };
        if entitlements.check(feature) {
            Ok(Admission::new())
        } else {
            Err(entitlement_required(&entitlements, &self.feature))
        }
    }
}

/// A route guards a feature the catalog does not declare.
#[derive(Debug, thiserror::Error)]
#[error("a route requires the entitlement `{0}`, which the billing catalog does not declare")]
struct UnknownFeature(String);

/// `402 Payment Required`, type `urn:tenancy:problem:entitlement-required`:
/// the tenant's plan does not include `feature`. The body names the
/// feature (`feature`), the tenant's plan (`plan`) and the plans that
/// include it (`plans`, by key), so a client can offer the
/// upgrade.
pub fn entitlement_required(entitlements: &Entitlements, feature: &str) -> Problem {
    let catalog = entitlements.catalog();
    let plans: Vec<&str> = catalog
        .feature(feature)
        .map(|id| {
            catalog
                .plans()
                .iter()
                .filter(|plan| plan.value(id).grants())
                .map(|plan| plan.key())
                .collect()
        })
        .unwrap_or_default();
    let detail = if plans.is_empty() {
        format!(
            "the `{}` plan does not include `{feature}`, and no plan does",
            entitlements.plan()
        )
    } else {
        format!(
            "the `{}` plan does not include `{feature}`; it comes with: {}",
            entitlements.plan(),
            plans.join(", ")
        )
    };
    Problem::new(
        StatusCode::PAYMENT_REQUIRED,
        ENTITLEMENT_REQUIRED,
        "Entitlement required",
    )
    .with_detail(detail)
    .with_extension("feature", json!(feature))
    .with_extension("plan", json!(entitlements.plan()))
    .with_extension("plans", json!(plans))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::AccessPolicy;
    use crate::catalog::{Catalog, CatalogDocument, PlanDocument};
    use crate::entitlements::BillingState;

    #[test]
    fn the_refusal_names_the_feature_and_the_plans_granting_it() {
        let catalog = Catalog::from_document(
            &CatalogDocument::new("free")
                .gate("sso")
                .gate("nothing")
                .plan("free", PlanDocument::default())
                .plan("pro", PlanDocument::default().grant("sso", true))
                .plan("enterprise", PlanDocument::default().grant("sso", true)),
        )
        .unwrap();
        let e = Entitlements::resolve(
            &catalog,
            &AccessPolicy::new(),
            tenancy_core::TenantId::new(),
            &BillingState::default(),
            time::OffsetDateTime::now_utc(),
        );
        let problem = entitlement_required(&e, "sso");
        assert_eq!(problem.status(), StatusCode::PAYMENT_REQUIRED);
        assert_eq!(problem.kind(), "urn:tenancy:problem:entitlement-required");
        assert_eq!(problem.extensions()["plans"], json!(["enterprise", "pro"]));
        assert_eq!(problem.extensions()["plan"], "free");
        assert_eq!(problem.extensions()["feature"], "sso");
        let none = entitlement_required(&e, "nothing");
        assert_eq!(none.extensions()["plans"], json!([]));
        assert!(none.detail().unwrap().contains("no plan does"));
    }
}
