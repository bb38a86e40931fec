//! SCIM Groups (RFC 7643 §4.2): the `/scim/v2/Groups` routes, and the
//! workflow that turns membership of a mapped group into tenant roles.
//!
//! A group's members are User resources of the token's tenant. A tenant
//! maps groups to roles by `displayName` ([`crate::ScimSettings`]); a
//! member's roles are the union of the roles of their mapped groups, or
//! [`crate::ScimConfig::default_roles`] when they are in none. Roles change
//! only through [`tenancy_core::Directory::change_roles`] (audited, the
//! SCIM token as actor). Only changes that touch a mapped group recompute
//! roles, so plain groups never change anyone's roles.
//!
//! A group or settings write and the role changes it implies run under a
//! per-tenant lock of the module, and the roles are recomputed from the
//! store's state after the write (desired against actual), so the last
//! writer's view wins. The lock is per process: with several processes on
//! one database the recompute narrows, but does not remove, the window in
//! which two writes plan against each other's old state.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};
use tenancy_core::{MembershipStore, RoleName, RoleSet, TenantId, UserId};
use tenancy_http::{ApiRequest, RequestContext, Tenancy};
use uuid::Uuid;

use crate::error::{ScimError, ScimStoreError, ScimType};
use crate::filter::{AttrPath, CaseRules, Filter, PatchPath};
use crate::module::{Caller, Scim, audit, now, store_error};
use crate::resource::{self, Op};
use crate::routes::{
    Answer, Query, answer, base, body, caller, check_if_match, list_answer, module,
    patch_operations, read_answer, require_schema, resource_answer, resource_id, search_query,
    url_query,
};
use crate::schema::{GROUP_SCHEMA, GroupCaseRules};
use crate::settings::ScimSettings;
use crate::store::GroupRecord;

/// The longest `displayName` kept.
const MAX_NAME: usize = 256;

/// The most member values one request may name (a POST, PUT or PATCH).
pub const MAX_MEMBERS_PER_REQUEST: usize = 1_000;

/// Audit actions of the Group routes.
pub(crate) mod actions {
    pub(crate) const GROUP_CREATED: &str = "scim.group_created";
    pub(crate) const GROUP_UPDATED: &str = "scim.group_updated";
    pub(crate) const GROUP_DELETED: &str = "scim.group_deleted";
}

fn invalid(detail: impl Into<String>) -> ScimError {
    ScimError::bad_request(ScimType::InvalidValue, detail)
}

fn unknown_member() -> ScimError {
    invalid("every member must be a User of this tenant")
}

/// A store failure of a group write as a SCIM error.
fn group_error(error: &ScimStoreError) -> ScimError {
    match error {
        ScimStoreError::Conflict => {
            ScimError::uniqueness("displayName is already taken in this tenant")
        }
        ScimStoreError::UnknownMember => unknown_member(),
        other => store_error(other),
    }
}

/// `400 mutability`: the change would leave the tenant without an active owner.
pub(crate) fn last_owner() -> ScimError {
    ScimError::bad_request(
        ScimType::Mutability,
        "the tenant's last active owner would lose the owner role; \
         a tenant always keeps an active owner, so nothing was changed",
    )
}

// ---------------------------------------------------------------- rendering

/// The members' `display`: the User's `displayName`, else its `userName`.
async fn member_names(
    scim: &Scim,
    caller: &Caller,
    groups: &[GroupRecord],
) -> Result<HashMap<Uuid, String>, ScimError> {
    let wanted: BTreeSet<Uuid> = groups.iter().flat_map(|g| g.members.clone()).collect();
    let name = |record: &crate::store::UserRecord| {
        record
            .attributes
            .get("displayName")
            .and_then(Value::as_str)
            .unwrap_or(&record.user_name)
            .to_owned()
    };
    let mut names = HashMap::new();
    // A few members: one lookup each; many: one scan of the tenant's users.
    if wanted.len() > 32 {
        let users = scim
            .store
            .list_users(caller.tenant())
            .await
            .map_err(|e| store_error(&e))?;
        for record in users.iter().filter(|r| wanted.contains(&r.id)) {
            names.insert(record.id, name(record));
        }
    } else {
        for id in wanted {
            if let Some(record) = scim
                .store
                .get_user(caller.tenant(), id)
                .await
                .map_err(|e| store_error(&e))?
            {
                names.insert(id, name(&record));
            }
        }
    }
    Ok(names)
}

fn render(group: &GroupRecord, base: &str, names: &HashMap<Uuid, String>) -> Value {
    let mut out = Map::new();
    out.insert("schemas".into(), json!([GROUP_SCHEMA]));
    out.insert("id".into(), json!(group.id.to_string()));
    if let Some(external) = &group.external_id {
        out.insert("externalId".into(), json!(external));
    }
    out.insert("displayName".into(), json!(group.display_name));
    if !group.members.is_empty() {
        let members: Vec<Value> = group
            .members
            .iter()
            .map(|id| {
                let mut member = json!({
                    "value": id.to_string(),
                    "$ref": format!("{base}/Users/{id}"),
                    "type": "User",
                });
                if let (Some(name), Some(object)) = (names.get(id), member.as_object_mut()) {
                    object.insert("display".into(), json!(name));
                }
                member
            })
            .collect();
        out.insert("members".into(), Value::Array(members));
    }
    out.insert(
        "meta".into(),
        resource::meta(
            "Group",
            format!("{base}/Groups/{}", group.id),
            group.created_at,
            group.updated_at,
            group,
        ),
    );
    Value::Object(out)
}

async fn group_response(
    t: &Tenancy,
    status: StatusCode,
    scim: &Scim,
    caller: &Caller,
    r: &ApiRequest,
    group: &GroupRecord,
) -> Result<Response<Bytes>, ScimError> {
    let names = member_names(scim, caller, std::slice::from_ref(group)).await?;
    Ok(resource_answer(
        status,
        &render(group, &base(t, scim, r), &names),
        group,
    ))
}

// ---------------------------------------------------------------- input

/// What a create or replace body (or a patched group) says.
#[derive(Debug, Clone)]
struct GroupInput {
    display_name: String,
    external_id: Option<String>,
    members: Vec<Uuid>,
    /// How many member values the request named (capped per request).
    given: usize,
}

/// The User ids of a `members` value: an array of (or one) `{value}`
/// object. A member of another type (nested groups) or an id that is no
/// SCIM id is refused like an unknown member.
fn member_ids(value: &Value) -> Result<Vec<Uuid>, ScimError> {
    let items: Vec<&Value> = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    if items.len() > MAX_MEMBERS_PER_REQUEST {
        return Err(too_many_members());
    }
    items
        .into_iter()
        .map(|item| {
            let object = item
                .as_object()
                .ok_or_else(|| invalid("a member must be an object with a value"))?;
            let field = |name: &str| {
                object
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            };
            if let Some(kind) = field("type").and_then(Value::as_str)
                && !kind.eq_ignore_ascii_case("User")
            {
                return Err(invalid(
                    "members must be Users (nested groups are not supported)",
                ));
            }
            field("value")
                .and_then(Value::as_str)
                .and_then(|id| id.parse().ok())
                .ok_or_else(unknown_member)
        })
        .collect()
}

fn too_many_members() -> ScimError {
    invalid(format!(
        "at most {MAX_MEMBERS_PER_REQUEST} member values per request; send the rest in further requests"
    ))
}

impl Scim {
    /// Refuses a request naming too many members, or a group that would
    /// hold more than [`crate::ScimConfig::max_group_members`].
    fn check_members(&self, input: &GroupInput) -> Result<(), ScimError> {
        if input.given > MAX_MEMBERS_PER_REQUEST {
            return Err(too_many_members());
        }
        let mut distinct = input.members.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let max = self.config.max_group_members;
        if distinct.len() > max {
            return Err(invalid(format!("a group holds at most {max} members")));
        }
        Ok(())
    }
}

fn text(value: &Value, name: &str) -> Result<String, ScimError> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| invalid(format!("`{name}` must be a string")))
}

fn display_name(value: &Value) -> Result<String, ScimError> {
    let name = text(value, "displayName")?;
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > MAX_NAME {
        return Err(invalid(format!(
            "displayName is required: 1 to {MAX_NAME} characters"
        )));
    }
    resource::check_text("displayName", trimmed, MAX_NAME)?;
    Ok(trimmed.to_owned())
}

fn external_id(value: &Value) -> Result<Option<String>, ScimError> {
    match value {
        Value::Null => Ok(None),
        other => {
            let id = text(other, "externalId")?;
            resource::check_text("externalId", &id, resource::MAX_EXTERNAL_ID)?;
            Ok(Some(id))
        }
    }
}

fn group_input(value: &Value) -> Result<GroupInput, ScimError> {
    let object = value.as_object().ok_or_else(|| {
        ScimError::bad_request(ScimType::InvalidSyntax, "a Group must be a JSON object")
    })?;
    let field = |name: &str| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    let members = member_ids(field("members").unwrap_or(&Value::Null))?;
    Ok(GroupInput {
        display_name: display_name(field("displayName").unwrap_or(&Value::Null))?,
        external_id: external_id(field("externalId").unwrap_or(&Value::Null))?,
        given: members.len(),
        members,
    })
}

/// Case rules inside `members[…]`.
struct MemberRules;

impl CaseRules for MemberRules {
    fn case_exact(&self, path: &AttrPath) -> bool {
        GroupCaseRules.case_exact(&AttrPath {
            uri: None,
            name: "members".into(),
            sub: Some(path.name.clone()),
        })
    }
}

fn invalid_path(detail: impl Into<String>) -> ScimError {
    ScimError::bad_request(ScimType::InvalidPath, detail)
}

/// Applies one PATCH operation, in the forms Okta and Entra ID send
/// (see the crate README).
fn apply(
    group: &mut GroupInput,
    op: Op,
    path: Option<&str>,
    value: Option<Value>,
) -> Result<(), ScimError> {
    let Some(path) = path.filter(|p| !p.trim().is_empty()) else {
        // Entra ID: `{"op": "Replace", "value": {"displayName": "…"}}`.
        if op == Op::Remove {
            return Err(ScimError::bad_request(
                ScimType::NoTarget,
                "remove needs a path",
            ));
        }
        let Some(Value::Object(values)) = value else {
            return Err(invalid("an operation without a path needs an object value"));
        };
        for (key, value) in values {
            if ["displayName", "externalId", "members"]
                .iter()
                .any(|k| k.eq_ignore_ascii_case(&key))
            {
                apply(group, op, Some(&key), Some(value))?;
            }
        }
        return Ok(());
    };
    let path = PatchPath::parse(path).map_err(|e| invalid_path(format!("`{path}`: {e}")))?;
    let name = path.attr.name.as_str();
    if path
        .attr
        .uri
        .as_deref()
        .is_some_and(|u| !u.eq_ignore_ascii_case(GROUP_SCHEMA))
    {
        return Err(invalid_path(format!(
            "`{path}` is not an attribute of the Group schema"
        )));
    }
    let whole = path.filter.is_none() && path.sub.is_none() && path.attr.sub.is_none();
    if name.eq_ignore_ascii_case("id") || name.eq_ignore_ascii_case("meta") {
        return Err(ScimError::bad_request(
            ScimType::Mutability,
            format!("`{name}` is read-only"),
        ));
    }
    if name.eq_ignore_ascii_case("displayName") && whole {
        return match (op, value) {
            (Op::Remove, _) => Err(invalid("displayName is required")),
            (_, Some(value)) => {
                group.display_name = display_name(&value)?;
                Ok(())
            }
            (_, None) => Err(invalid("`displayName` needs a value")),
        };
    }
    if name.eq_ignore_ascii_case("externalId") && whole {
        group.external_id = match (op, value) {
            (Op::Remove, _) => None,
            (_, Some(value)) => external_id(&value)?,
            (_, None) => return Err(invalid("`externalId` needs a value")),
        };
        return Ok(());
    }
    if !name.eq_ignore_ascii_case("members") || path.attr.sub.is_some() || path.sub.is_some() {
        return Err(invalid_path(format!(
            "`{path}` is not a writable attribute of the Group schema"
        )));
    }
    match (&path.filter, op) {
        // Okta: `remove` with `members[value eq "…"]`.
        (Some(filter), Op::Remove) => {
            group.members.retain(|id| !selects(filter, id));
            Ok(())
        }
        (Some(_), _) => Err(invalid_path(
            "a filtered members path is supported for remove only",
        )),
        (None, Op::Add | Op::Replace) => {
            let value = value.ok_or_else(|| invalid("`members` needs a value"))?;
            let given = member_ids(&value)?;
            group.given += given.len();
            if op == Op::Add {
                group.members.extend(given);
            } else {
                group.members = given;
            }
            Ok(())
        }
        // Entra ID removes with a value array; without one, every member goes.
        (None, Op::Remove) => {
            match value {
                Some(value) if !value.is_null() => {
                    let removed = member_ids(&value)?;
                    group.given += removed.len();
                    group.members.retain(|id| !removed.contains(id));
                }
                _ => group.members.clear(),
            }
            Ok(())
        }
    }
}

fn selects(filter: &Filter, id: &Uuid) -> bool {
    filter.matches(
        &json!({ "value": id.to_string(), "type": "User" }),
        &MemberRules,
    )
}

// ---------------------------------------------------------------- roles

/// One planned role change.
struct RoleChange {
    user: UserId,
    roles: RoleSet,
    gains_owner: bool,
    loses_active_owner: bool,
}

impl Scim {
    /// The role changes that bring the SCIM users `affected` in line with
    /// `settings`, with `group` (by id) replaced by `replacement` (`None`:
    /// deleted). Refuses (before anything is written) a plan that would
    /// leave the tenant without an active owner.
    async fn plan_roles(
        &self,
        tenancy: &Tenancy,
        caller: &Caller,
        settings: &ScimSettings,
        affected: BTreeSet<Uuid>,
        replaced: Option<(Uuid, Option<&GroupRecord>)>,
    ) -> Result<Vec<RoleChange>, ScimError> {
        let tenant = caller.tenant();
        let backend = tenancy.directory().backend();
        let mut plan = Vec::new();
        if affected.is_empty() {
            return Ok(plan);
        }
        // The tenant's mapped groups, read once rather than once per member:
        // their (sorted) members and the roles they grant.
        let mut groups = self
            .store
            .list_groups(tenant)
            .await
            .map_err(|e| store_error(&e))?;
        if let Some((id, replacement)) = replaced {
            groups.retain(|g| g.id != id);
            groups.extend(replacement.cloned());
        }
        let mapped: Vec<(Vec<Uuid>, Vec<RoleName>)> = groups
            .into_iter()
            .filter_map(|g| {
                let roles = self.granted(settings, &g.display_name);
                let mut members = g.members;
                members.sort_unstable();
                (!roles.is_empty()).then_some((members, roles))
            })
            .collect();
        for scim_id in affected {
            let Some(record) = self
                .store
                .get_user(tenant, scim_id)
                .await
                .map_err(|e| store_error(&e))?
            else {
                continue;
            };
            let granted: Vec<RoleName> = mapped
                .iter()
                .filter(|(members, _)| members.binary_search(&scim_id).is_ok())
                .flat_map(|(_, roles)| roles.iter().cloned())
                .collect();
            let roles = if granted.is_empty() {
                self.config.default_roles.clone()
            } else {
                RoleSet::new(granted).map_err(|e| invalid(e.to_string()))?
            };
            let Some(membership) = backend
                .find_membership(tenant, record.user_id)
                .await
                .map_err(|e| ScimError::unavailable(&e))?
            else {
                continue;
            };
            if membership.roles == roles {
                continue;
            }
            let owner = membership.roles.contains(&RoleName::OWNER);
            if owner && !roles.contains(&RoleName::OWNER) && !self.config.allow_owner_mapping {
                // Without owner mapping the directory never manages owners.
                continue;
            }
            // Only an active membership that gains the role is a new owner
            // the last-owner rule can count on.
            let active = membership.status == tenancy_core::MembershipStatus::Active;
            plan.push(RoleChange {
                user: record.user_id,
                gains_owner: active && !owner && roles.contains(&RoleName::OWNER),
                loses_active_owner: membership.is_active_owner()
                    && !roles.contains(&RoleName::OWNER),
                roles,
            });
        }
        let losing = plan.iter().filter(|c| c.loses_active_owner).count() as u64;
        if losing > 0 {
            let owners = backend
                .count_active_with_role(tenant, &RoleName::OWNER)
                .await
                .map_err(|e| ScimError::unavailable(&e))?;
            let gaining = plan.iter().filter(|c| c.gains_owner).count() as u64;
            if owners + gaining <= losing {
                return Err(last_owner());
            }
        }
        // New owners first, so the last-owner rule holds at every step.
        plan.sort_by_key(|c| !c.gains_owner);
        Ok(plan)
    }

    /// Applies a plan through the directory's role workflow.
    async fn apply_roles(
        &self,
        tenancy: &Tenancy,
        caller: &Caller,
        plan: Vec<RoleChange>,
    ) -> Result<(), ScimError> {
        for change in plan {
            let changed = tenancy
                .directory()
                .change_roles(&caller.scope, change.user, change.roles, &caller.audit)
                .await;
            tenancy.forget_member(caller.tenant(), change.user);
            match changed {
                Ok(_) => {}
                Err(tenancy_core::DirectoryError::LastOwner) => return Err(last_owner()),
                Err(tenancy_core::DirectoryError::Store(tenancy_core::StoreError::NotFound(_))) => {
                }
                Err(error) => return Err(crate::module::directory_error(&error)),
            }
        }
        Ok(())
    }

    /// Re-derives the roles of every member of a group whose mapped roles
    /// differ between `before` and `after` (settings changes), refusing
    /// before writing anything if the last owner would lose the role.
    pub(crate) async fn plan_settings_change(
        &self,
        tenancy: &Tenancy,
        caller: &Caller,
        before: &ScimSettings,
        after: &ScimSettings,
    ) -> Result<RolePlanRun, ScimError> {
        let groups = self
            .store
            .list_groups(caller.tenant())
            .await
            .map_err(|e| store_error(&e))?;
        let affected: BTreeSet<Uuid> = groups
            .iter()
            .filter(|g| {
                self.granted(before, &g.display_name) != self.granted(after, &g.display_name)
            })
            .flat_map(|g| g.members.clone())
            .collect();
        let plan = self
            .plan_roles(tenancy, caller, after, affected, None)
            .await?;
        Ok(RolePlanRun(plan))
    }

    /// Gives `user`'s (new) membership the roles of their mapped groups.
    pub(crate) async fn restore_group_roles(
        &self,
        tenancy: &Tenancy,
        caller: &Caller,
        user: UserId,
    ) -> Result<(), ScimError> {
        let Some(record) = self
            .store
            .find_user_by_account(caller.tenant(), user)
            .await
            .map_err(|e| store_error(&e))?
        else {
            return Ok(());
        };
        let _serialised = self.role_locks.lock(caller.tenant()).await;
        let settings = self.tenant_settings(caller.tenant()).await?;
        self.converge(tenancy, caller, &settings, BTreeSet::from([record.id]))
            .await
    }

    /// Applies what [`Scim::plan_settings_change`] planned.
    pub(crate) async fn run_plan(
        &self,
        tenancy: &Tenancy,
        caller: &Caller,
        plan: RolePlanRun,
    ) -> Result<(), ScimError> {
        self.apply_roles(tenancy, caller, plan.0).await
    }

    /// Brings the roles of the SCIM users `affected` in line with the
    /// store's current groups and `settings` (desired against actual
    /// roles, so a repeated request repairs an earlier partial failure).
    pub(crate) async fn converge(
        &self,
        tenancy: &Tenancy,
        caller: &Caller,
        settings: &ScimSettings,
        affected: BTreeSet<Uuid>,
    ) -> Result<(), ScimError> {
        if affected.is_empty() {
            return Ok(());
        }
        let plan = self
            .plan_roles(tenancy, caller, settings, affected, None)
            .await?;
        self.apply_roles(tenancy, caller, plan).await
    }

    /// Stores a group change (`before` = `None`: a new group; `after` =
    /// `None`: deleted) and updates the roles it implies, audited.
    ///
    /// Holds the tenant's role lock throughout, refuses a change that
    /// would leave the tenant without an active owner before writing, and
    /// after the write re-derives the members' roles from the store's
    /// current state. When that fails the previous row is put back (and
    /// the roles re-derived from it), so "nothing was changed" holds.
    async fn save_group(
        &self,
        tenancy: &Tenancy,
        caller: &Caller,
        before: Option<&GroupRecord>,
        after: Option<&GroupRecord>,
    ) -> Result<(), ScimError> {
        let tenant = caller.tenant();
        let _serialised = self.role_locks.lock(tenant).await;
        // Members from elsewhere are refused by the store's write below
        // (`UnknownMember`), which runs before any role changes.
        let settings = self.tenant_settings(tenant).await?;
        let mapped = |g: Option<&GroupRecord>| {
            g.is_some_and(|g| !self.granted(&settings, &g.display_name).is_empty())
        };
        let members = |g: Option<&GroupRecord>| -> BTreeSet<Uuid> {
            g.map(|g| g.members.iter().copied().collect())
                .unwrap_or_default()
        };
        // Every member before and after, when a mapped group is involved:
        // their roles are recomputed against what they hold now.
        let affected: BTreeSet<Uuid> = if mapped(before) || mapped(after) {
            members(before).union(&members(after)).copied().collect()
        } else {
            BTreeSet::new()
        };
        let id = before.or(after).map(|g| g.id);
        if let Some(id) = id
            && !affected.is_empty()
        {
            // Refused before anything is written.
            self.plan_roles(
                tenancy,
                caller,
                &settings,
                affected.clone(),
                Some((id, after)),
            )
            .await?;
        }
        let (action, target) = match (before, after) {
            (None, Some(group)) => {
                self.store
                    .insert_group(group)
                    .await
                    .map_err(|e| group_error(&e))?;
                (actions::GROUP_CREATED, group)
            }
            (Some(current), Some(group)) => {
                self.store
                    .update_group(group, current.version)
                    .await
                    .map_err(|e| group_error(&e))?;
                (actions::GROUP_UPDATED, group)
            }
            (Some(current), None) => {
                self.store
                    .delete_group(tenant, current.id, current.version)
                    .await
                    .map_err(|e| group_error(&e))?;
                (actions::GROUP_DELETED, current)
            }
            (None, None) => return Ok(()),
        };
        if let Err(error) = self
            .converge(tenancy, caller, &settings, affected.clone())
            .await
        {
            self.restore_group(before, after).await;
            if let Err(again) = self.converge(tenancy, caller, &settings, affected).await {
                tracing::warn!(tenant = %tenant, error = %again.detail, "scim: could not restore roles after a failed group change");
            }
            return Err(error);
        }
        audit(
            tenancy,
            tenant,
            &caller.audit,
            action,
            ("scim_group", &target.id),
            json!({
                "display_name": target.display_name,
                "members": target.members.len(),
                "version": target.version,
            }),
        )
        .await
    }

    /// Puts back the row a failed group change replaced (best effort: a
    /// concurrent change that won meanwhile is kept).
    async fn restore_group(&self, before: Option<&GroupRecord>, after: Option<&GroupRecord>) {
        let restored = match (before, after) {
            (None, Some(created)) => {
                self.store
                    .delete_group(created.tenant_id, created.id, created.version)
                    .await
            }
            (Some(previous), Some(written)) => {
                let restored = GroupRecord {
                    version: written.version + 1,
                    updated_at: now(),
                    ..previous.clone()
                };
                self.store.update_group(&restored, written.version).await
            }
            (Some(deleted), None) => {
                let restored = GroupRecord {
                    version: deleted.version + 1,
                    updated_at: now(),
                    ..deleted.clone()
                };
                self.store.insert_group(&restored).await
            }
            (None, None) => Ok(()),
        };
        if let Err(error) = restored {
            tracing::warn!(error = %error, "scim: could not restore a group after a failed role change");
        }
    }
}

/// Per-tenant locks serialising role derivation inside the process: a
/// group or settings write and the role changes it implies run under the
/// tenant's lock, so two of them never plan against each other's old
/// state. Striped (tenants share a fixed set of locks) so the set never
/// grows; one task only ever holds one.
pub(crate) struct RoleLocks([tokio::sync::Mutex<()>; 64]);

impl RoleLocks {
    pub(crate) fn new() -> Self {
        Self(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
    }

    /// Waits for `tenant`'s lock.
    pub(crate) async fn lock(&self, tenant: TenantId) -> tokio::sync::MutexGuard<'_, ()> {
        // The remainder is below 64, so the cast keeps it whole.
        let index = (tenant.as_uuid().as_u128() % 64) as usize;
        self.0[index].lock().await
    }
}

/// A planned set of role changes, applied by [`Scim::run_plan`].
pub(crate) struct RolePlanRun(Vec<RoleChange>);

// ---------------------------------------------------------------- routes

async fn find_group(
    scim: &Scim,
    caller: &Caller,
    r: &ApiRequest,
) -> Result<GroupRecord, ScimError> {
    let id = resource_id(r)?;
    scim.store
        .get_group(caller.tenant(), id)
        .await
        .map_err(|e| store_error(&e))?
        .ok_or_else(ScimError::not_found)
}

pub(crate) async fn get_group(t: &Tenancy, r: &ApiRequest, _: Option<&RequestContext>) -> Answer {
    answer(
        async {
            let (_, caller) = caller(t, r).await?;
            let scim = module(t)?;
            let group = find_group(scim, &caller, r).await?;
            let names = member_names(scim, &caller, std::slice::from_ref(&group)).await?;
            read_answer(r, &group, render(&group, &base(t, scim, r), &names))
        }
        .await,
    )
}

async fn run_list(t: &Tenancy, r: &ApiRequest, query: Query) -> Result<Response<Bytes>, ScimError> {
    let (_, caller) = caller(t, r).await?;
    let scim = module(t)?;
    let filter = query.filter.as_deref().map(Filter::parse).transpose()?;
    if let Some(filter) = &filter {
        crate::schema::check_group_filter(filter)?;
    }
    let groups = scim
        .store
        .list_groups(caller.tenant())
        .await
        .map_err(|e| store_error(&e))?;
    let names = member_names(scim, &caller, &groups).await?;
    let base = base(t, scim, r);
    let rendered = groups.iter().map(|g| render(g, &base, &names)).collect();
    list_answer(scim, query, filter.as_ref(), rendered, &GroupCaseRules)
}

pub(crate) async fn list_groups(t: &Tenancy, r: &ApiRequest, _: Option<&RequestContext>) -> Answer {
    answer(async { run_list(t, r, url_query(r)?).await }.await)
}

pub(crate) async fn search_groups(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Answer {
    answer(
        async {
            caller(t, r).await?;
            run_list(t, r, search_query(t, r)?).await
        }
        .await,
    )
}

fn record_of(input: GroupInput, current: &GroupRecord) -> GroupRecord {
    let mut next = GroupRecord {
        display_name: input.display_name,
        external_id: input.external_id,
        members: input.members,
        version: current.version + 1,
        updated_at: now(),
        ..current.clone()
    };
    next.normalize();
    next
}

pub(crate) async fn create_group(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Answer {
    answer(
        async {
            let (_, caller) = caller(t, r).await?;
            let scim = module(t)?;
            let value = body(t, r)?;
            require_schema(&value, GROUP_SCHEMA)?;
            let input = group_input(&value)?;
            scim.check_members(&input)?;
            let at = now();
            let mut group = GroupRecord {
                id: Uuid::now_v7(),
                tenant_id: caller.tenant(),
                display_name: input.display_name,
                external_id: input.external_id,
                members: input.members,
                version: 1,
                created_at: at,
                updated_at: at,
            };
            group.normalize();
            scim.save_group(t, &caller, None, Some(&group)).await?;
            group_response(t, StatusCode::CREATED, scim, &caller, r, &group).await
        }
        .await,
    )
}

pub(crate) async fn replace_group(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Answer {
    answer(
        async {
            let (_, caller) = caller(t, r).await?;
            let scim = module(t)?;
            let current = find_group(scim, &caller, r).await?;
            check_if_match(r, &current)?;
            let value = body(t, r)?;
            require_schema(&value, GROUP_SCHEMA)?;
            if let Some(id) = value.get("id").and_then(Value::as_str)
                && id != current.id.to_string()
            {
                return Err(ScimError::bad_request(
                    ScimType::Mutability,
                    "id cannot change",
                ));
            }
            let input = group_input(&value)?;
            scim.check_members(&input)?;
            let next = record_of(input, &current);
            scim.save_group(t, &caller, Some(&current), Some(&next))
                .await?;
            group_response(t, StatusCode::OK, scim, &caller, r, &next).await
        }
        .await,
    )
}

pub(crate) async fn patch_group(t: &Tenancy, r: &ApiRequest, _: Option<&RequestContext>) -> Answer {
    answer(
        async {
            let (_, caller) = caller(t, r).await?;
            let scim = module(t)?;
            let current = find_group(scim, &caller, r).await?;
            check_if_match(r, &current)?;
            let operations = patch_operations(t, r)?;
            let mut input = GroupInput {
                display_name: current.display_name.clone(),
                external_id: current.external_id.clone(),
                members: current.members.clone(),
                given: 0,
            };
            for operation in operations {
                apply(
                    &mut input,
                    Op::parse(&operation.op)?,
                    operation.path.as_deref(),
                    operation.value,
                )?;
            }
            scim.check_members(&input)?;
            let next = record_of(input, &current);
            scim.save_group(t, &caller, Some(&current), Some(&next))
                .await?;
            group_response(t, StatusCode::OK, scim, &caller, r, &next).await
        }
        .await,
    )
}

pub(crate) async fn delete_group(
    t: &Tenancy,
    r: &ApiRequest,
    _: Option<&RequestContext>,
) -> Answer {
    answer(
        async {
            let (_, caller) = caller(t, r).await?;
            let scim = module(t)?;
            let current = find_group(scim, &caller, r).await?;
            check_if_match(r, &current)?;
            scim.save_group(t, &caller, Some(&current), None).await?;
            let mut response = Response::new(Bytes::new());
            *response.status_mut() = StatusCode::NO_CONTENT;
            Ok(response)
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn group(members: &[Uuid]) -> GroupInput {
        GroupInput {
            display_name: "Engineering".into(),
            external_id: Some("okta-1".into()),
            members: members.to_vec(),
            given: 0,
        }
    }

    #[test]
    fn patches_as_okta_and_entra_send() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut g = group(&[a]);
        // Okta adds with a value array and removes with a filtered path.
        apply(
            &mut g,
            Op::parse("add").unwrap(),
            Some("members"),
            Some(json!([{"value": b.to_string()}, {"value": c.to_string()}])),
        )
        .unwrap();
        assert_eq!(g.members, vec![a, b, c]);
        apply(
            &mut g,
            Op::Remove,
            Some(&format!("members[value eq \"{b}\"]")),
            None,
        )
        .unwrap();
        assert_eq!(g.members, vec![a, c]);
        // Entra ID removes with a value array and renames without a path.
        apply(
            &mut g,
            Op::parse("Remove").unwrap(),
            Some("members"),
            Some(json!([{"value": a.to_string()}])),
        )
        .unwrap();
        assert_eq!(g.members, vec![c]);
        apply(
            &mut g,
            Op::parse("Replace").unwrap(),
            None,
            Some(json!({"displayName": "Eng", "id": "ignored"})),
        )
        .unwrap();
        assert_eq!(g.display_name, "Eng");
        apply(
            &mut g,
            Op::Replace,
            Some("displayName"),
            Some(json!("Engineering Admins")),
        )
        .unwrap();
        assert_eq!(g.display_name, "Engineering Admins");
        apply(&mut g, Op::Remove, Some("externalId"), None).unwrap();
        assert_eq!(g.external_id, None);
        apply(&mut g, Op::Remove, Some("members"), None).unwrap();
        assert!(g.members.is_empty());
    }

    #[test]
    fn refusals() {
        let mut g = group(&[]);
        let kinds = [
            (
                apply(&mut g, Op::Replace, Some("id"), Some(json!("x"))),
                ScimType::Mutability,
            ),
            (
                apply(&mut g, Op::Remove, Some("displayName"), None),
                ScimType::InvalidValue,
            ),
            (
                apply(&mut g, Op::Replace, Some("displayName"), Some(json!(" "))),
                ScimType::InvalidValue,
            ),
            (
                apply(&mut g, Op::Add, Some("shoeSize"), Some(json!(1))),
                ScimType::InvalidPath,
            ),
            (
                apply(
                    &mut g,
                    Op::Add,
                    Some("members"),
                    Some(json!([{"value": "not-an-id"}])),
                ),
                ScimType::InvalidValue,
            ),
            (
                apply(
                    &mut g,
                    Op::Add,
                    Some("members"),
                    Some(json!([{"value": Uuid::now_v7().to_string(), "type": "Group"}])),
                ),
                ScimType::InvalidValue,
            ),
            (apply(&mut g, Op::Remove, None, None), ScimType::NoTarget),
        ];
        for (result, kind) in kinds {
            assert_eq!(result.unwrap_err().scim_type, Some(kind));
        }
    }
}
