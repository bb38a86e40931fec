//! The conformance suites.

use std::sync::Arc;

use tenancy_core::{
    ActionFilter, AuditContext, AuditLog, AuditQuery, PageRequest, RoleName, RoleSet, TenantScope,
    UserId,
};

use super::{Fixture, create_tenant};
use crate::admin::{AdminError, AuthzAdmin};
use crate::cache::{Freshness, PolicyCache};
use crate::engine::Engine;
use crate::holders::{DirectoryRoleHolders, RoleHolders};
use crate::permission::Catalog;
use crate::policy::{Effect, PolicyDocument, PolicyId, StatementDocument};
use crate::request::{AuthzRequest, Principal, Resource};
use crate::role::RoleDefinition;
use crate::store::{AuthzStoreError, Epoch};

pub(super) fn role(name: &str, permissions: &[&str], inherits: &[&str]) -> RoleDefinition {
    RoleDefinition {
        name: RoleName::new(name).unwrap(),
        description: Some(format!("the {name} role")),
        permissions: permissions.iter().map(|p| p.parse().unwrap()).collect(),
        inherits: inherits
            .iter()
            .map(|r| RoleName::new(*r).unwrap())
            .collect(),
    }
}

fn policy(id: &str, effect: Effect, actions: &[&str], condition: Option<&str>) -> PolicyDocument {
    PolicyDocument {
        id: PolicyId::new(id).unwrap(),
        description: None,
        statements: vec![StatementDocument {
            sid: Some("s1".into()),
            effect,
            actions: actions.iter().map(|a| a.parse().unwrap()).collect(),
            resource_types: vec!["project".into()],
            roles: vec![],
            condition: condition.map(str::to_owned),
        }],
    }
}

fn ctx() -> AuditContext {
    AuditContext::system()
}

/// Who holds roles, read from the fixture's directory.
pub(super) fn holders(f: &Fixture) -> Arc<dyn RoleHolders> {
    Arc::new(DirectoryRoleHolders::new(Arc::clone(&f.backend)))
}

fn assert_stale<T: std::fmt::Debug>(
    result: Result<T, AuthzStoreError>,
    expected: u64,
    actual: u64,
) {
    match result {
        Err(AuthzStoreError::StaleEpoch {
            expected: e,
            actual: a,
        }) => {
            assert_eq!((e, a), (Epoch(expected), Epoch(actual)));
        }
        other => panic!("expected a stale epoch error, got {other:?}"),
    }
}

/// Roles: empty start, create, read back, stale writes refused, update,
/// delete, not-found, order by name, unknown tenant.
pub async fn role_store(f: Fixture) {
    let (tenant, _) = create_tenant(&f).await;
    let store = &*f.roles;
    let empty = store.list_roles(tenant).await.unwrap();
    assert_eq!((empty.epoch, empty.value.len()), (Epoch::ZERO, 0));
    assert_eq!(store.roles_epoch(tenant).await.unwrap(), Epoch::ZERO);

    let editor = role("editor", &["projects:update"], &["member"]);
    assert_eq!(
        store
            .put_role(tenant, &editor, Epoch(0), &ctx())
            .await
            .unwrap(),
        Epoch(1)
    );
    let listed = store.list_roles(tenant).await.unwrap();
    assert_eq!(listed.epoch, Epoch(1));
    assert_eq!(listed.value, vec![editor.clone()]);

    // A write based on an old epoch is refused and changes nothing.
    let stale = role("editor", &["projects:*"], &[]);
    assert_stale(store.put_role(tenant, &stale, Epoch(0), &ctx()).await, 0, 1);
    assert_eq!(
        store.list_roles(tenant).await.unwrap().value,
        vec![editor.clone()]
    );

    let updated = role(
        "editor",
        &["projects:update", "projects:delete"],
        &["member"],
    );
    assert_eq!(
        store
            .put_role(tenant, &updated, Epoch(1), &ctx())
            .await
            .unwrap(),
        Epoch(2)
    );
    let auditor = role("auditor", &["audit:read"], &[]);
    assert_eq!(
        store
            .put_role(tenant, &auditor, Epoch(2), &ctx())
            .await
            .unwrap(),
        Epoch(3)
    );
    let listed = store.list_roles(tenant).await.unwrap();
    assert_eq!(
        listed.value,
        vec![auditor.clone(), updated.clone()],
        "ordered by name"
    );

    let ghost = RoleName::new("ghost").unwrap();
    match store.delete_role(tenant, &ghost, Epoch(3), &ctx()).await {
        Err(AuthzStoreError::RoleNotFound(name)) => assert_eq!(name, ghost),
        other => panic!("expected role not found, got {other:?}"),
    }
    assert_eq!(
        store.roles_epoch(tenant).await.unwrap(),
        Epoch(3),
        "failed delete keeps the epoch"
    );
    assert_stale(
        store
            .delete_role(tenant, &auditor.name, Epoch(1), &ctx())
            .await,
        1,
        3,
    );
    assert_eq!(
        store
            .delete_role(tenant, &auditor.name, Epoch(3), &ctx())
            .await
            .unwrap(),
        Epoch(4)
    );
    assert_eq!(store.list_roles(tenant).await.unwrap().value, vec![updated]);

    let nowhere = tenancy_core::TenantId::new();
    assert!(matches!(
        store.put_role(nowhere, &auditor, Epoch(0), &ctx()).await,
        Err(AuthzStoreError::TenantNotFound)
    ));
    assert_eq!(store.list_roles(nowhere).await.unwrap().value, vec![]);
}

/// Policies: the same rules, and documents (conditions included) come back intact.
pub async fn policy_store(f: Fixture) {
    let (tenant, _) = create_tenant(&f).await;
    let store = &*f.policies;
    assert_eq!(store.policies_epoch(tenant).await.unwrap(), Epoch::ZERO);
    let own = policy(
        "own-projects",
        Effect::Allow,
        &["projects:update"],
        Some("resource.owner == principal.id && context.ip in cidr(\"10.0.0.0/8\")"),
    );
    let guard = policy("guard", Effect::Deny, &["*"], Some("principal.suspended"));
    assert_eq!(
        store
            .put_policy(tenant, &own, Epoch(0), &ctx())
            .await
            .unwrap(),
        Epoch(1)
    );
    assert_stale(
        store.put_policy(tenant, &guard, Epoch(0), &ctx()).await,
        0,
        1,
    );
    assert_eq!(
        store
            .put_policy(tenant, &guard, Epoch(1), &ctx())
            .await
            .unwrap(),
        Epoch(2)
    );
    let listed = store.list_policies(tenant).await.unwrap();
    assert_eq!(listed.epoch, Epoch(2));
    assert_eq!(
        listed.value,
        vec![guard.clone(), own.clone()],
        "ordered by id"
    );

    let mut changed = own.clone();
    changed.description = Some("members edit what they own".into());
    changed.statements[0].roles = vec![RoleName::MEMBER];
    assert_eq!(
        store
            .put_policy(tenant, &changed, Epoch(2), &ctx())
            .await
            .unwrap(),
        Epoch(3)
    );
    assert_eq!(store.list_policies(tenant).await.unwrap().value[1], changed);

    let missing = PolicyId::new("missing").unwrap();
    assert!(matches!(
        store.delete_policy(tenant, &missing, Epoch(3), &ctx()).await,
        Err(AuthzStoreError::PolicyNotFound(id)) if id == missing
    ));
    assert_eq!(
        store
            .delete_policy(tenant, &guard.id, Epoch(3), &ctx())
            .await
            .unwrap(),
        Epoch(4)
    );
    assert_eq!(
        store.list_policies(tenant).await.unwrap().value,
        vec![changed]
    );
    assert!(matches!(
        store
            .put_policy(tenancy_core::TenantId::new(), &guard, Epoch(0), &ctx())
            .await,
        Err(AuthzStoreError::TenantNotFound)
    ));
}

/// Roles and policies move one epoch per tenant: a policy write makes a
/// role write based on the older epoch stale, and both report the same epoch.
pub async fn shared_epoch(f: Fixture) {
    let (tenant, _) = create_tenant(&f).await;
    let r = role("viewer", &["projects:read"], &[]);
    let p = policy("p", Effect::Deny, &["projects:delete"], None);
    assert_eq!(
        f.roles
            .put_role(tenant, &r, Epoch(0), &ctx())
            .await
            .unwrap(),
        Epoch(1)
    );
    assert_eq!(
        f.policies
            .put_policy(tenant, &p, Epoch(1), &ctx())
            .await
            .unwrap(),
        Epoch(2)
    );
    assert_stale(f.roles.put_role(tenant, &r, Epoch(1), &ctx()).await, 1, 2);
    assert_eq!(f.roles.roles_epoch(tenant).await.unwrap(), Epoch(2));
    assert_eq!(f.policies.policies_epoch(tenant).await.unwrap(), Epoch(2));
    assert_eq!(f.roles.list_roles(tenant).await.unwrap().epoch, Epoch(2));
    assert_eq!(
        f.policies.list_policies(tenant).await.unwrap().epoch,
        Epoch(2)
    );
}

/// What one tenant writes, another never sees, changes or bumps.
pub async fn tenant_isolation(f: Fixture) {
    let (a, _) = create_tenant(&f).await;
    let (b, _) = create_tenant(&f).await;
    let r = role("editor", &["projects:update"], &[]);
    let p = policy("p", Effect::Allow, &["projects:read"], None);
    f.roles.put_role(a, &r, Epoch(0), &ctx()).await.unwrap();
    f.policies
        .put_policy(a, &p, Epoch(1), &ctx())
        .await
        .unwrap();
    assert_eq!(
        f.roles.list_roles(b).await.unwrap(),
        crate::store::Versioned {
            epoch: Epoch(0),
            value: vec![]
        }
    );
    assert_eq!(f.policies.list_policies(b).await.unwrap().value, vec![]);
    assert!(matches!(
        f.roles.delete_role(b, &r.name, Epoch(0), &ctx()).await,
        Err(AuthzStoreError::RoleNotFound(_))
    ));
    assert!(matches!(
        f.policies.delete_policy(b, &p.id, Epoch(0), &ctx()).await,
        Err(AuthzStoreError::PolicyNotFound(_))
    ));
    // The same names in B are B's own.
    let other = role("editor", &["projects:read"], &[]);
    assert_eq!(
        f.roles.put_role(b, &other, Epoch(0), &ctx()).await.unwrap(),
        Epoch(1)
    );
    assert_eq!(f.roles.list_roles(a).await.unwrap().value, vec![r]);
    assert_eq!(f.roles.list_roles(b).await.unwrap().value, vec![other]);
    assert_eq!(f.roles.roles_epoch(a).await.unwrap(), Epoch(2));
    assert_eq!(f.roles.roles_epoch(b).await.unwrap(), Epoch(1));
}

/// Concurrent writers: of eight writes based on one epoch exactly one
/// wins; writers that re-read and retry all land, one epoch each.
pub async fn concurrent_writers(f: Fixture) {
    let (tenant, _) = create_tenant(&f).await;
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let roles = Arc::clone(&f.roles);
            tokio::spawn(async move {
                roles
                    .put_role(
                        tenant,
                        &role(&format!("racer-{i}"), &["projects:read"], &[]),
                        Epoch(0),
                        &ctx(),
                    )
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(epoch) => {
                assert_eq!(epoch, Epoch(1));
                won += 1;
            }
            Err(AuthzStoreError::StaleEpoch { .. }) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(won, 1);

    let writers: Vec<_> = (0..8)
        .map(|i| {
            let roles = Arc::clone(&f.roles);
            let policies = Arc::clone(&f.policies);
            tokio::spawn(async move {
                loop {
                    let epoch = roles.roles_epoch(tenant).await.unwrap();
                    let result = if i % 2 == 0 {
                        roles
                            .put_role(
                                tenant,
                                &role(&format!("writer-{i}"), &["projects:read"], &[]),
                                epoch,
                                &ctx(),
                            )
                            .await
                    } else {
                        policies
                            .put_policy(
                                tenant,
                                &policy(
                                    &format!("writer-{i}"),
                                    Effect::Deny,
                                    &["projects:delete"],
                                    None,
                                ),
                                epoch,
                                &ctx(),
                            )
                            .await
                    };
                    match result {
                        Ok(epoch) => return epoch,
                        Err(AuthzStoreError::StaleEpoch { .. }) => tokio::task::yield_now().await,
                        Err(other) => panic!("unexpected error {other:?}"),
                    }
                }
            })
        })
        .collect();
    let mut epochs = Vec::new();
    for writer in writers {
        epochs.push(writer.await.unwrap().0);
    }
    epochs.sort_unstable();
    assert_eq!(
        epochs,
        (2..=9).collect::<Vec<u64>>(),
        "each write got its own epoch"
    );
    assert_eq!(f.roles.list_roles(tenant).await.unwrap().value.len(), 5);
    assert_eq!(
        f.policies.list_policies(tenant).await.unwrap().value.len(),
        4
    );
    assert_eq!(f.roles.roles_epoch(tenant).await.unwrap(), Epoch(9));
}

/// Every change appends one audit event (action, target, actor, epoch); a
/// refused write appends none; the chain stays intact.
pub async fn audit_trail(f: Fixture) {
    let (tenant, owner) = create_tenant(&f).await;
    let actor = AuditContext::user(owner).with_ip("10.9.8.7".parse().unwrap());
    let r = role("editor", &["projects:update"], &[]);
    let p = policy("p", Effect::Deny, &["projects:delete"], None);
    f.roles
        .put_role(tenant, &r, Epoch(0), &actor)
        .await
        .unwrap();
    f.roles
        .put_role(tenant, &r, Epoch(1), &actor)
        .await
        .unwrap();
    let _ = f
        .roles
        .put_role(tenant, &r, Epoch(0), &actor)
        .await
        .unwrap_err();
    f.policies
        .put_policy(tenant, &p, Epoch(2), &actor)
        .await
        .unwrap();
    f.policies
        .put_policy(tenant, &p, Epoch(3), &actor)
        .await
        .unwrap();
    f.policies
        .delete_policy(tenant, &p.id, Epoch(4), &actor)
        .await
        .unwrap();
    f.roles
        .delete_role(tenant, &r.name, Epoch(5), &actor)
        .await
        .unwrap();

    let all = |prefix: &str| AuditQuery::all().action(ActionFilter::parse(prefix).unwrap());
    let mut events = f
        .backend
        .query_audit(tenant, &all("role.*"), &PageRequest::default())
        .await
        .unwrap()
        .items;
    events.extend(
        f.backend
            .query_audit(tenant, &all("policy.*"), &PageRequest::default())
            .await
            .unwrap()
            .items,
    );
    events.sort_by_key(|e| e.seq);
    let seen: Vec<(String, String, u64)> = events
        .iter()
        .map(|e| {
            (
                e.action.as_str().to_owned(),
                format!("{}:{}", e.target.target_type, e.target.id),
                e.metadata.as_map()["epoch"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, String, u64)> = [
        ("role.created", "role:editor", 1),
        ("role.updated", "role:editor", 2),
        ("policy.created", "policy:p", 3),
        ("policy.updated", "policy:p", 4),
        ("policy.deleted", "policy:p", 5),
        ("role.deleted", "role:editor", 6),
    ]
    .into_iter()
    .map(|(a, t, e)| (a.to_owned(), t.to_owned(), e))
    .collect();
    assert_eq!(seen, expected);
    for event in &events {
        assert_eq!(event.actor, tenancy_core::Actor::User(owner));
        assert_eq!(event.ip, Some("10.9.8.7".parse().unwrap()));
    }
    let created = &events[0].metadata.as_map()["role"];
    assert_eq!(
        created["permissions"],
        serde_json::json!(["projects:update"])
    );
    assert!(f.backend.verify_chain(tenant).await.unwrap().is_intact());
}

pub(super) fn catalog() -> Catalog {
    Catalog::new([
        "projects:read",
        "projects:create",
        "projects:update",
        "projects:delete",
        "invoices:read",
    ])
    .unwrap()
}

/// The cache compiles on first use, recompiles when the epoch moves (read
/// from the store), and with [`Freshness::Notified`] waits for a notice.
pub async fn cache_follows_epochs(f: Fixture) {
    let (tenant, _) = create_tenant(&f).await;
    let engine = Engine::new(catalog());
    let verify = PolicyCache::new(
        engine.clone(),
        Arc::clone(&f.roles),
        Arc::clone(&f.policies),
    );
    let notified = PolicyCache::new(engine, Arc::clone(&f.roles), Arc::clone(&f.policies))
        .with_freshness(Freshness::Notified);
    let ann = Principal::user(UserId::new(), tenant, RoleSet::parse(["editor"]).unwrap());
    let project = Resource::new("project").in_tenant(tenant);
    let update = AuthzRequest::new(&ann, "projects:update", &project);
    for cache in [&verify, &notified] {
        let first = cache.authorizer(tenant).await.unwrap();
        assert_eq!(first.epoch(), Some(Epoch(0)));
        assert!(!first.check(&update).allowed());
        let again = cache.authorizer(tenant).await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "unchanged epoch reuses the compiled authorizer"
        );
    }
    f.roles
        .put_role(
            tenant,
            &role("editor", &["projects:update"], &["member"]),
            Epoch(0),
            &ctx(),
        )
        .await
        .unwrap();
    let fresh = verify.authorizer(tenant).await.unwrap();
    assert_eq!(fresh.epoch(), Some(Epoch(1)));
    assert!(fresh.check(&update).allowed());
    let old = notified.authorizer(tenant).await.unwrap();
    assert_eq!(old.epoch(), Some(Epoch(0)), "no notice yet");
    notified.observe_epoch(tenant, Epoch(1));
    let now = notified.authorizer(tenant).await.unwrap();
    assert_eq!(now.epoch(), Some(Epoch(1)));
    assert!(now.check(&update).allowed());
    notified.observe_epoch(tenant, Epoch(1));
    assert!(
        Arc::ptr_eq(&now, &notified.authorizer(tenant).await.unwrap()),
        "same epoch: kept"
    );
}

/// [`AuthzAdmin`] refuses privilege escalation, directly and through
/// inheritance, and lets owners through.
pub async fn admin_prevents_escalation(f: Fixture) {
    let (tenant, owner_id) = create_tenant(&f).await;
    let scope = TenantScope::assume_resolved(tenant);
    let cache = Arc::new(PolicyCache::new(
        Engine::new(catalog()),
        Arc::clone(&f.roles),
        Arc::clone(&f.policies),
    ));
    let admin = AuthzAdmin::new(Arc::clone(&cache), holders(&f));
    let owner = Principal::user(owner_id, tenant, RoleSet::single(RoleName::OWNER));
    let audit = AuditContext::user(owner_id);

    // The owner sets up a role manager who can read and update projects only.
    admin
        .put_role(
            &scope,
            &owner,
            role(
                "role-manager",
                &[
                    "roles:manage",
                    "members:manage",
                    "projects:read",
                    "projects:update",
                ],
                &[],
            ),
            &audit,
        )
        .await
        .unwrap();
    admin
        .put_role(
            &scope,
            &owner,
            role("deleter", &["projects:delete"], &[]),
            &audit,
        )
        .await
        .unwrap();
    let manager = Principal::user(
        UserId::new(),
        tenant,
        RoleSet::parse(["role-manager"]).unwrap(),
    );
    let plain = Principal::user(UserId::new(), tenant, RoleSet::single(RoleName::MEMBER));

    let escalation = |result: Result<Epoch, AdminError>, missing: &[&str]| match result {
        Err(AdminError::Escalation {
            effect: Effect::Allow,
            missing: m,
        }) => assert_eq!(m, missing),
        other => panic!("expected escalation refused, got {other:?}"),
    };
    // Within their own permissions: fine.
    admin
        .put_role(
            &scope,
            &manager,
            role("reader", &["projects:read"], &[]),
            &audit,
        )
        .await
        .unwrap();
    // Directly beyond them: refused, naming what is missing.
    escalation(
        admin
            .put_role(
                &scope,
                &manager,
                role("nuker", &["projects:delete"], &[]),
                &audit,
            )
            .await,
        &["projects:delete"],
    );
    escalation(
        admin
            .put_role(&scope, &manager, role("wild", &["projects:*"], &[]), &audit)
            .await,
        &["projects:create", "projects:delete"],
    );
    // Through inheritance: refused.
    escalation(
        admin
            .put_role(
                &scope,
                &manager,
                role("sneaky", &["projects:read"], &["deleter"]),
                &audit,
            )
            .await,
        &["projects:delete"],
    );
    let err = admin
        .put_role(&scope, &manager, role("climber", &[], &["admin"]), &audit)
        .await
        .unwrap_err();
    assert!(matches!(err, AdminError::Escalation { .. }), "{err}");
    // Editing a role they inherit from, to grant themselves more: refused.
    admin
        .put_role(
            &scope,
            &owner,
            role("base", &["projects:read"], &[]),
            &audit,
        )
        .await
        .unwrap();
    admin
        .put_role(
            &scope,
            &owner,
            role(
                "role-manager",
                &[
                    "roles:manage",
                    "members:manage",
                    "projects:read",
                    "projects:update",
                ],
                &["base"],
            ),
            &audit,
        )
        .await
        .unwrap();
    escalation(
        admin
            .put_role(
                &scope,
                &manager,
                role("base", &["projects:read", "projects:delete"], &[]),
                &audit,
            )
            .await,
        &["projects:delete"],
    );
    escalation(
        admin
            .put_role(
                &scope,
                &manager,
                role("base", &["projects:read"], &["deleter"]),
                &audit,
            )
            .await,
        &["projects:delete"],
    );
    // Assigning roles beyond their own: refused; within: fine.
    let member = RoleSet::single(RoleName::MEMBER);
    let err = admin
        .authorize_assignment(
            &scope,
            &manager,
            Some(&member),
            &RoleSet::parse(["member", "deleter"]).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AdminError::Escalation { .. }), "{err}");
    admin
        .authorize_assignment(
            &scope,
            &manager,
            Some(&member),
            &RoleSet::parse(["member", "reader"]).unwrap(),
        )
        .await
        .unwrap_err_or_ok_member();
    // Removing a stronger role from someone: refused too.
    let err = admin
        .authorize_assignment(
            &scope,
            &manager,
            Some(&RoleSet::parse(["member", "deleter"]).unwrap()),
            &member,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AdminError::Escalation { .. }), "{err}");
    // Policies: allow statements only within the actor's permissions, and
    // only with policies:manage.
    let err = admin
        .put_policy(
            &scope,
            &manager,
            policy("p", Effect::Allow, &["projects:read"], None),
            &audit,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            AdminError::Forbidden {
                permission: "policies:manage"
            }
        ),
        "{err}"
    );
    admin
        .put_role(
            &scope,
            &owner,
            role("policy-manager", &["policies:manage", "projects:read"], &[]),
            &audit,
        )
        .await
        .unwrap();
    let policy_manager = Principal::user(
        UserId::new(),
        tenant,
        RoleSet::parse(["policy-manager"]).unwrap(),
    );
    escalation(
        admin
            .put_policy(
                &scope,
                &policy_manager,
                policy("p", Effect::Allow, &["projects:update"], None),
                &audit,
            )
            .await,
        &["projects:update"],
    );
    // Deny statements too: only over what the actor holds.
    let err = admin
        .put_policy(
            &scope,
            &policy_manager,
            policy("p", Effect::Deny, &["*"], Some("principal.suspended")),
            &audit,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            AdminError::Escalation {
                effect: Effect::Deny,
                ..
            }
        ),
        "{err}"
    );
    admin
        .put_policy(
            &scope,
            &policy_manager,
            policy(
                "p",
                Effect::Deny,
                &["projects:read"],
                Some("principal.suspended"),
            ),
            &audit,
        )
        .await
        .unwrap();
    // Without roles:manage nothing at all.
    let err = admin
        .put_role(&scope, &plain, role("x", &[], &[]), &audit)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            AdminError::Forbidden {
                permission: "roles:manage"
            }
        ),
        "{err}"
    );
    // Built-ins and cycles.
    let err = admin
        .put_role(&scope, &owner, role("admin", &["*"], &[]), &audit)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "role `admin` is built in and cannot be changed or deleted"
    );
    admin
        .put_role(&scope, &owner, role("c1", &[], &["c2"]), &audit)
        .await
        .unwrap_err();
    admin
        .put_role(&scope, &owner, role("c2", &[], &[]), &audit)
        .await
        .unwrap();
    admin
        .put_role(&scope, &owner, role("c1", &[], &["c2"]), &audit)
        .await
        .unwrap();
    let err = admin
        .put_role(&scope, &owner, role("c2", &[], &["c1"]), &audit)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "role inheritance cycle: c1 -> c2 -> c1");
    let err = admin
        .delete_role(&scope, &owner, &RoleName::new("c2").unwrap(), &audit)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "role `c2` is inherited by `c1`");
    // Owners may do what they like, including granting everything.
    admin
        .put_role(
            &scope,
            &owner,
            role("everything", &["*"], &["admin"]),
            &audit,
        )
        .await
        .unwrap();
    let other_tenant = Principal::user(
        owner_id,
        tenancy_core::TenantId::new(),
        RoleSet::single(RoleName::OWNER),
    );
    assert!(matches!(
        admin
            .put_role(&scope, &other_tenant, role("y", &[], &[]), &audit)
            .await,
        Err(AdminError::OtherTenant)
    ));
}

trait OkMember {
    fn unwrap_err_or_ok_member(self);
}

impl OkMember for Result<(), AdminError> {
    fn unwrap_err_or_ok_member(self) {
        if let Err(e) = self {
            panic!("assignment within the actor's permissions was refused: {e}");
        }
    }
}
