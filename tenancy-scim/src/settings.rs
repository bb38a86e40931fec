//! Per-tenant SCIM settings: what deactivation does in the tenant, and
//! which group grants which tenant role. `GET`/`PUT /scim/settings`
//! (permission `scim:manage`, problem+json errors, audited as
//! `scim.settings_changed`).

use bytes::Bytes;
use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tenancy_authz::AdminError;
use tenancy_core::{AuditContext, RoleName, RoleSet, TenantId, TenantScope};
use tenancy_http::{ApiRequest, Problem, RequestContext, Tenancy};

use crate::error::{ScimError, ScimType};
use crate::module::{Caller, Deprovision, Scim, audit, now, store_error};
use crate::routes::{Answer, context, module};
use crate::store::{GroupRole, TenantSettings};

/// Most entries one tenant's group → role mapping holds.
pub const MAX_GROUP_ROLES: usize = 100;

/// The audit action of a settings change.
pub const SETTINGS_CHANGED: &str = "scim.settings_changed";

impl Deprovision {
    /// The mode's name: `suspend` or `remove`.
    pub fn as_str(self) -> &'static str {
        match self {
            Deprovision::Suspend => "suspend",
            Deprovision::Remove => "remove",
        }
    }

    /// The mode named `text` (`suspend` or `remove`, any case).
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "suspend" => Some(Deprovision::Suspend),
            "remove" => Some(Deprovision::Remove),
            _ => None,
        }
    }
}

/// A tenant's SCIM settings in effect: its own choice, or the module's
/// defaults ([`crate::ScimConfig::deprovision`], no mapping).
///
/// ```
/// use tenancy_core::RoleName;
/// use tenancy_scim::{Deprovision, GroupRole, ScimSettings};
///
/// let settings = ScimSettings {
///     deprovision: Deprovision::Remove,
///     group_roles: vec![GroupRole { group: "Engineering Admins".into(), role: RoleName::ADMIN }],
/// };
/// assert_eq!(settings.roles_of("engineering admins"), vec![RoleName::ADMIN]);
/// assert!(settings.roles_of("Everyone").is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimSettings {
    /// What `active: false` does to the membership.
    pub deprovision: Deprovision,
    /// Which group (by `displayName`, without case) grants which role;
    /// groups not named here grant nothing.
    pub group_roles: Vec<GroupRole>,
}

impl ScimSettings {
    /// The roles the group named `display_name` grants, sorted.
    pub fn roles_of(&self, display_name: &str) -> Vec<RoleName> {
        let wanted = display_name.to_lowercase();
        let mut roles: Vec<RoleName> = self
            .group_roles
            .iter()
            .filter(|m| m.group.to_lowercase() == wanted)
            .map(|m| m.role.clone())
            .collect();
        roles.sort();
        roles.dedup();
        roles
    }
}

fn invalid(detail: impl Into<String>) -> ScimError {
    ScimError::bad_request(ScimType::InvalidValue, detail)
}

impl Scim {
    /// The settings in effect for `tenant`.
    pub async fn tenant_settings(&self, tenant: TenantId) -> Result<ScimSettings, ScimError> {
        let stored = self
            .store
            .get_settings(tenant)
            .await
            .map_err(|e| store_error(&e))?;
        Ok(match stored {
            Some(stored) => ScimSettings {
                deprovision: stored.deprovision,
                group_roles: stored.group_roles,
            },
            None => ScimSettings {
                deprovision: self.config.deprovision,
                group_roles: Vec::new(),
            },
        })
    }

    /// The roles the group named `display_name` grants under `settings`
    /// in this service.
    /// An `owner` entry stored while [`crate::ScimConfig::allow_owner_mapping`]
    /// was on grants nothing once it is off.
    pub(crate) fn granted(&self, settings: &ScimSettings, display_name: &str) -> Vec<RoleName> {
        let mut roles = settings.roles_of(display_name);
        if !self.config.allow_owner_mapping {
            roles.retain(|role| *role != RoleName::OWNER);
        }
        roles
    }

    /// What deactivation does in `tenant`.
    pub(crate) async fn deprovision_mode(
        &self,
        tenant: TenantId,
    ) -> Result<Deprovision, ScimError> {
        Ok(self.tenant_settings(tenant).await?.deprovision)
    }

    /// Saves the scope's tenant's settings, audited as
    /// `scim.settings_changed`, and brings the roles of the members of
    /// every group whose mapping changed in line (through
    /// [`tenancy_core::Directory::change_roles`]).
    ///
    /// Refused with `invalidValue`: more than [`MAX_GROUP_ROLES`] entries,
    /// an empty or overlong group name, and a mapping to `owner` unless
    /// [`crate::ScimConfig::allow_owner_mapping`] is set (whoever
    /// administers the identity provider would otherwise make themselves
    /// owner). Refused with `mutability`, before anything changes: a
    /// mapping change that would leave the tenant without an active owner.
    pub async fn update_settings(
        &self,
        tenancy: &Tenancy,
        scope: &TenantScope,
        settings: ScimSettings,
        context: &AuditContext,
    ) -> Result<ScimSettings, ScimError> {
        let settings = self.validated(settings)?;
        let caller = Caller {
            scope: *scope,
            audit: context.clone(),
        };
        // Under the tenant's role lock, like group writes: the two never
        // plan against each other's old state.
        let _serialised = self.role_locks.lock(scope.tenant_id()).await;
        let stored = self
            .store
            .get_settings(scope.tenant_id())
            .await
            .map_err(|e| store_error(&e))?;
        let before = self.tenant_settings(scope.tenant_id()).await?;
        // Refused before anything is written.
        self.plan_settings_change(tenancy, &caller, &before, &settings)
            .await?;
        self.store
            .put_settings(&TenantSettings {
                tenant_id: scope.tenant_id(),
                deprovision: settings.deprovision,
                group_roles: settings.group_roles.clone(),
                updated_at: now(),
            })
            .await
            .map_err(|e| store_error(&e))?;
        // Planned again from the store's current groups, then applied.
        let applied = match self
            .plan_settings_change(tenancy, &caller, &before, &settings)
            .await
        {
            Ok(plan) => self.run_plan(tenancy, &caller, plan).await,
            Err(error) => Err(error),
        };
        if let Err(error) = applied {
            // The previous settings go back, and the roles they grant.
            let previous = stored.unwrap_or_else(|| TenantSettings {
                tenant_id: scope.tenant_id(),
                deprovision: before.deprovision,
                group_roles: before.group_roles.clone(),
                updated_at: now(),
            });
            if let Err(restore) = self.store.put_settings(&previous).await {
                tracing::warn!(error = %restore, "scim: could not restore settings after a failed role change");
            } else if let Ok(plan) = self
                .plan_settings_change(tenancy, &caller, &settings, &before)
                .await
                && let Err(again) = self.run_plan(tenancy, &caller, plan).await
            {
                tracing::warn!(error = %again.detail, "scim: could not restore roles after a failed settings change");
            }
            return Err(error);
        }
        audit(
            tenancy,
            scope.tenant_id(),
            context,
            SETTINGS_CHANGED,
            ("tenant", &scope.tenant_id()),
            json!({
                "deprovision": settings.deprovision.as_str(),
                "group_roles": settings.group_roles,
            }),
        )
        .await?;
        Ok(settings)
    }

    fn validated(&self, settings: ScimSettings) -> Result<ScimSettings, ScimError> {
        if settings.group_roles.len() > MAX_GROUP_ROLES {
            return Err(invalid(format!(
                "at most {MAX_GROUP_ROLES} group roles per tenant"
            )));
        }
        let mut group_roles: Vec<GroupRole> = Vec::with_capacity(settings.group_roles.len());
        for mapping in settings.group_roles {
            let group = mapping.group.trim().to_owned();
            if group.is_empty() || group.chars().count() > 256 {
                return Err(invalid("a group name must be 1 to 256 characters"));
            }
            crate::resource::check_text("group", &group, 256)?;
            if mapping.role == RoleName::OWNER && !self.config.allow_owner_mapping {
                return Err(invalid(
                    "a group cannot grant the owner role: this service does not let the \
                     identity provider mint owners",
                ));
            }
            let entry = GroupRole {
                group,
                role: mapping.role,
            };
            if !group_roles.iter().any(|m| {
                m.role == entry.role && m.group.to_lowercase() == entry.group.to_lowercase()
            }) {
                group_roles.push(entry);
            }
        }
        Ok(ScimSettings {
            deprovision: settings.deprovision,
            group_roles,
        })
    }
}

// ---------------------------------------------------------------- routes

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    deprovision: String,
    #[serde(default)]
    group_roles: Vec<GroupRole>,
}

fn settings_problem(error: ScimError) -> Problem {
    match error.status {
        // The last-owner rule: the settings are fine, the tenant's state refuses them.
        StatusCode::BAD_REQUEST if error.scim_type == Some(ScimType::Mutability) => {
            Problem::conflict(error.detail)
        }
        StatusCode::BAD_REQUEST => Problem::invalid("group_roles", error.detail),
        StatusCode::NOT_FOUND => Problem::not_found(),
        status => {
            Problem::new(status, "unavailable", "Service unavailable").with_detail(error.detail)
        }
    }
}

fn admin_problem(error: &AdminError) -> Problem {
    match error {
        AdminError::UnknownRole { .. } => Problem::invalid("group_roles", error.to_string()),
        AdminError::Forbidden { .. } | AdminError::Escalation { .. } | AdminError::OtherTenant => {
            Problem::forbidden(error.to_string())
        }
        other => Problem::unavailable(other),
    }
}

/// The settings as the routes show them: an entry this service ignores
/// (an `owner` mapping while owner mapping is off) is marked
/// `"active": false`.
fn settings_body(settings: &ScimSettings, allow_owner_mapping: bool) -> serde_json::Value {
    let group_roles: Vec<serde_json::Value> = settings
        .group_roles
        .iter()
        .map(|m| {
            if m.role == RoleName::OWNER && !allow_owner_mapping {
                json!({ "group": m.group, "role": m.role, "active": false })
            } else {
                json!({ "group": m.group, "role": m.role })
            }
        })
        .collect();
    json!({
        "deprovision": settings.deprovision.as_str(),
        "group_roles": group_roles,
    })
}

fn settings_answer(scim: &Scim, settings: &ScimSettings) -> Answer {
    tenancy_http::json(
        StatusCode::OK,
        &settings_body(settings, scim.config.allow_owner_mapping),
    )
}

pub(crate) async fn get_settings(
    t: &Tenancy,
    _: &ApiRequest,
    c: Option<&RequestContext>,
) -> Answer {
    let c = context(c)?;
    let scim = module(t).map_err(settings_problem)?;
    let settings = scim
        .tenant_settings(c.tenant_id())
        .await
        .map_err(settings_problem)?;
    settings_answer(scim, &settings)
}

pub(crate) async fn put_settings(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let c = context(c)?;
    let scim = module(t).map_err(settings_problem)?;
    let input: SettingsBody = r.json(t.config().body_limit)?;
    let deprovision = Deprovision::parse(&input.deprovision)
        .ok_or_else(|| Problem::invalid("deprovision", "expected suspend or remove"))?;
    // The caller may only add, remove or move mappings to roles it could
    // assign itself: the roles of every entry that is new, and of every
    // entry that goes (a removed mapping takes the role from members).
    let before = scim
        .tenant_settings(c.tenant_id())
        .await
        .map_err(settings_problem)?;
    let key = |m: &GroupRole| (m.group.trim().to_lowercase(), m.role.clone());
    let old: Vec<_> = before.group_roles.iter().map(key).collect();
    let new: Vec<_> = input.group_roles.iter().map(key).collect();
    let added: Vec<RoleName> = new
        .iter()
        .filter(|entry| !old.contains(entry))
        .map(|(_, role)| role.clone())
        .collect();
    let removed: Vec<RoleName> = old
        .iter()
        .filter(|entry| !new.contains(entry))
        .map(|(_, role)| role.clone())
        .collect();
    if !added.is_empty() {
        let roles =
            RoleSet::new(added).map_err(|e| Problem::invalid("group_roles", e.to_string()))?;
        t.authz_admin()
            .authorize_assignment(c.scope(), c.authz_principal(), None, &roles)
            .await
            .map_err(|e| admin_problem(&e))?;
    }
    if !removed.is_empty() {
        let roles =
            RoleSet::new(removed).map_err(|e| Problem::invalid("group_roles", e.to_string()))?;
        t.authz_admin()
            .authorize_removal(c.scope(), c.authz_principal(), &roles)
            .await
            .map_err(|e| admin_problem(&e))?;
    }
    let settings = scim
        .update_settings(
            t,
            c.scope(),
            ScimSettings {
                deprovision,
                group_roles: input.group_roles,
            },
            &c.audit(),
        )
        .await
        .map_err(settings_problem)?;
    settings_answer(scim, &settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_entry_shows_inactive_while_owner_mapping_is_off() {
        let settings = ScimSettings {
            deprovision: Deprovision::Suspend,
            group_roles: vec![
                GroupRole {
                    group: "Owners".into(),
                    role: RoleName::OWNER,
                },
                GroupRole {
                    group: "Admins".into(),
                    role: RoleName::ADMIN,
                },
            ],
        };
        let off = settings_body(&settings, false);
        assert_eq!(off["group_roles"][0]["active"], json!(false));
        assert!(off["group_roles"][1].get("active").is_none());
        let on = settings_body(&settings, true);
        assert!(on["group_roles"][0].get("active").is_none());
    }
}
