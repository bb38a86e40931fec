//! Suites for the admin rules that keep a tenant safe from its own
//! delegates: deny statements only over what the writer holds (and no
//! policy locking owners out), roles that must exist to be handed out and
//! may not be deleted while held, the per-tenant limits, and writes that
//! compile once.

use std::sync::Arc;

use tenancy_core::{
    Acceptor, AuditContext, Directory, Email, RoleName, RoleSet, TenantScope, UserId,
};

use super::probe::Probe;
use super::suites::{catalog, holders, role};
use super::{Fixture, create_tenant};
use crate::admin::{AdminError, AuthzAdmin, RoleUse};
use crate::cache::{CacheConfig, CacheError, Freshness, PolicyCache};
use crate::engine::{Authorizer, Decision, Engine, Reason};
use crate::limits::{LimitError, Limits, WriteRate};
use crate::policy::{Effect, PolicyDocument, PolicyId, StatementDocument};
use crate::request::{AuthzRequest, Principal, Resource};
use crate::store::Epoch;

/// A policy of one statement over every resource type.
fn statement_policy(id: &str, effect: Effect, actions: &[&str]) -> PolicyDocument {
    PolicyDocument::new(PolicyId::new(id).unwrap()).with_statement(StatementDocument::new(
        effect,
        actions.iter().map(|a| a.parse().unwrap()),
    ))
}

fn decide(authorizer: &Authorizer, principal: &Principal, action: &str) -> Decision {
    let resource = Resource::new("policy").in_tenant(authorizer.tenant_id());
    authorizer.check(&AuthzRequest::new(principal, action, &resource))
}

fn explain(authorizer: &Authorizer, principal: &Principal, action: &str) -> String {
    let resource = Resource::new("policy").in_tenant(authorizer.tenant_id());
    authorizer
        .explain(&AuthzRequest::new(principal, action, &resource))
        .to_string()
}

/// A member holding only `policies:manage` cannot write a deny statement
/// over permissions it does not hold (the lock-out sequence is refused),
/// and a deny-all written straight into the store still leaves the owner
/// able to read and delete it, and to manage roles (break-glass), while it
/// binds everyone else.
pub async fn owners_cannot_be_locked_out(f: Fixture) {
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
    admin
        .put_role(
            &scope,
            &owner,
            role("policy-editor", &["policies:manage", "policies:read"], &[]),
            &audit,
        )
        .await
        .unwrap();
    let delegate = Principal::user(
        UserId::new(),
        tenant,
        RoleSet::parse(["policy-editor"]).unwrap(),
    );

    // The lock-out sequence: `PUT /policies/x`, deny, every action.
    let deny_all = statement_policy("x", Effect::Deny, &["*"]);
    match admin
        .put_policy(&scope, &delegate, deny_all.clone(), &audit)
        .await
    {
        Err(
            ref err @ AdminError::Escalation {
                effect: Effect::Deny,
                ref missing,
            },
        ) => {
            assert!(missing.iter().any(|p| p == "members:read"), "{err}");
            assert!(!missing.iter().any(|p| p.starts_with("policies:")), "{err}");
            assert!(err.to_string().starts_with(
                "privilege escalation: the change would deny `tenant:manage`, `tenant:delete`, `members:read`"
            ), "{err}");
        }
        other => panic!("expected the deny-all refused, got {other:?}"),
    }
    // Denying one permission it does not hold: refused just the same.
    let err = admin
        .put_policy(
            &scope,
            &delegate,
            statement_policy("x", Effect::Deny, &["members:read"]),
            &audit,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AdminError::Escalation { effect: Effect::Deny, missing } if missing == &["members:read"]),
        "{err}"
    );
    assert!(
        f.policies
            .list_policies(tenant)
            .await
            .unwrap()
            .value
            .is_empty(),
        "nothing was written"
    );

    // Within what it holds, a deny is fine; it binds the delegate, never
    // the owner.
    admin
        .put_policy(
            &scope,
            &delegate,
            statement_policy("freeze", Effect::Deny, &["policies:*"]),
            &audit,
        )
        .await
        .unwrap();
    let current = cache.authorizer(tenant).await.unwrap();
    assert!(!decide(&current, &delegate, "policies:manage").allowed());
    let decision = decide(&current, &owner, "policies:manage");
    assert!(decision.allowed());
    assert_eq!(decision.reason(), Reason::OwnerBreakGlass);
    assert_eq!(
        explain(&current, &owner, "policies:manage"),
        "allowed: `policies:manage` granted to an owner although policy `freeze` statement `#1` denies it: no deny statement applies to owners reading or managing policies and roles (break-glass)"
    );
    let freeze = PolicyId::new("freeze").unwrap();
    assert!(matches!(
        admin
            .delete_policy(&scope, &delegate, &freeze, &audit)
            .await,
        Err(AdminError::Forbidden {
            permission: "policies:manage"
        })
    ));
    admin
        .delete_policy(&scope, &owner, &freeze, &audit)
        .await
        .unwrap();

    // A deny-all written straight into the store, bypassing the admin.
    let epoch = f.policies.policies_epoch(tenant).await.unwrap();
    f.policies
        .put_policy(tenant, &deny_all, epoch, &AuditContext::system())
        .await
        .unwrap();
    let current = cache.authorizer(tenant).await.unwrap();
    for action in [
        "policies:read",
        "policies:manage",
        "roles:read",
        "roles:manage",
    ] {
        let decision = decide(&current, &owner, action);
        assert!(decision.allowed(), "{action}");
        assert_eq!(decision.reason(), Reason::OwnerBreakGlass, "{action}");
    }
    let denied = decide(&current, &owner, "members:read");
    assert_eq!(
        (denied.allowed(), denied.reason()),
        (false, Reason::DenyStatement)
    );
    // Only owners: an admin is bound by it.
    let admin_member = Principal::user(UserId::new(), tenant, RoleSet::single(RoleName::ADMIN));
    assert!(!decide(&current, &admin_member, "policies:manage").allowed());
    assert!(matches!(
        admin
            .delete_policy(&scope, &admin_member, &deny_all.id, &audit)
            .await,
        Err(AdminError::Forbidden { .. })
    ));
    // The owner lists the policies, manages roles, and deletes the deny-all.
    let listed = f.policies.list_policies(tenant).await.unwrap();
    assert_eq!(listed.value, vec![deny_all.clone()]);
    admin
        .put_role(
            &scope,
            &owner,
            role("auditor", &["audit:read"], &[]),
            &audit,
        )
        .await
        .unwrap();
    admin
        .delete_policy(&scope, &owner, &deny_all.id, &audit)
        .await
        .unwrap();
    let current = cache.authorizer(tenant).await.unwrap();
    assert_eq!(
        decide(&current, &owner, "members:read").reason(),
        Reason::Role
    );
    assert_eq!(
        decide(&current, &owner, "policies:manage").reason(),
        Reason::Role
    );
}

/// Roles are handed out only if they exist, and deleted only when nobody
/// holds them: a delegate cannot give itself (or invite others with) a
/// role name the owner defines later, and a deleted role cannot come back
/// to someone who held it.
pub async fn roles_must_exist_to_be_held(f: Fixture) {
    let (tenant, owner_id) = create_tenant(&f).await;
    let directory = Directory::new(Arc::clone(&f.backend));
    let scope = directory.scope(tenant).await.unwrap();
    let cache = Arc::new(PolicyCache::new(
        Engine::new(catalog()),
        Arc::clone(&f.roles),
        Arc::clone(&f.policies),
    ));
    let admin = AuthzAdmin::new(Arc::clone(&cache), holders(&f));
    let owner = Principal::user(owner_id, tenant, RoleSet::single(RoleName::OWNER));
    let audit = AuditContext::user(owner_id);
    admin
        .put_role(
            &scope,
            &owner,
            role("member-manager", &["members:manage"], &["member"]),
            &audit,
        )
        .await
        .unwrap();
    let held = RoleSet::parse(["member-manager"]).unwrap();
    let delegate = Principal::user(UserId::new(), tenant, held.clone());
    let with_super = RoleSet::parse(["member-manager", "superadmin"]).unwrap();
    let superadmin = RoleName::new("superadmin").unwrap();

    // Giving itself an undefined role, or inviting someone with one: refused.
    for before in [Some(&held), None] {
        match admin
            .authorize_assignment(&scope, &delegate, before, &with_super)
            .await
        {
            Err(err @ AdminError::UnknownRole { .. }) => {
                assert_eq!(
                    err.to_string(),
                    "role `superadmin` is not defined in this tenant"
                );
            }
            other => panic!("expected an unknown role, got {other:?}"),
        }
    }
    // Not even an owner hands out a role that does not exist.
    assert!(matches!(
        admin
            .authorize_assignment(&scope, &owner, None, &RoleSet::single(superadmin.clone()))
            .await,
        Err(AdminError::UnknownRole { role }) if role == superadmin
    ));
    // Built-in and defined roles within the delegate's permissions are fine;
    // removing an undefined role from someone is too.
    admin
        .authorize_assignment(&scope, &delegate, None, &RoleSet::single(RoleName::MEMBER))
        .await
        .unwrap();
    admin
        .authorize_assignment(&scope, &delegate, Some(&with_super), &held)
        .await
        .unwrap();

    // A role held by a pending invitation, then by a member (active or
    // suspended), is not deleted.
    admin
        .put_role(
            &scope,
            &owner,
            role("lead", &["projects:delete"], &[]),
            &audit,
        )
        .await
        .unwrap();
    let lead = RoleName::new("lead").unwrap();
    let in_use = |result: Result<Epoch, AdminError>| match result {
        Err(
            err @ AdminError::RoleInUse {
                by: RoleUse::Assigned,
                ..
            },
        ) => assert_eq!(
            err.to_string(),
            "role `lead` is still held by members or pending invitations"
        ),
        other => panic!("expected the role in use, got {other:?}"),
    };
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let issued = directory
        .invite(
            &scope,
            Email::new(&format!("lee-{suffix}@example.test")).unwrap(),
            RoleSet::single(lead.clone()),
            &AuditContext::system(),
        )
        .await
        .unwrap();
    in_use(admin.delete_role(&scope, &owner, &lead, &audit).await);
    let accepted = directory
        .accept_invitation(
            &issued.token,
            Acceptor::NewUser { display_name: None },
            &AuditContext::system(),
        )
        .await
        .unwrap();
    in_use(admin.delete_role(&scope, &owner, &lead, &audit).await);
    directory
        .suspend_member(&scope, accepted.user.id, &AuditContext::system())
        .await
        .unwrap();
    in_use(admin.delete_role(&scope, &owner, &lead, &audit).await);
    directory
        .change_roles(
            &scope,
            accepted.user.id,
            RoleSet::single(RoleName::MEMBER),
            &AuditContext::system(),
        )
        .await
        .unwrap();
    admin
        .delete_role(&scope, &owner, &lead, &audit)
        .await
        .unwrap();
    // Once deleted, it cannot be handed out until it is defined anew.
    assert!(matches!(
        admin
            .authorize_assignment(&scope, &owner, None, &RoleSet::single(lead.clone()))
            .await,
        Err(AdminError::UnknownRole { role }) if role == lead
    ));
}

/// The engine's [`Limits`] bound what a tenant may store: each bound is
/// refused by name when written, and a tenant whose stored policies exceed
/// them (written around the admin) does not load.
pub async fn admin_enforces_limits(f: Fixture) {
    let (tenant, owner_id) = create_tenant(&f).await;
    let scope = TenantScope::assume_resolved(tenant);
    let engine = Engine::builder(catalog())
        .limits(
            Limits::new()
                .with_max_policies(2)
                .with_max_statements(3)
                .with_max_condition_bytes(40),
        )
        .build();
    let cache = Arc::new(PolicyCache::new(
        engine,
        Arc::clone(&f.roles),
        Arc::clone(&f.policies),
    ));
    let admin = AuthzAdmin::new(Arc::clone(&cache), holders(&f));
    let owner = Principal::user(owner_id, tenant, RoleSet::single(RoleName::OWNER));
    let audit = AuditContext::user(owner_id);
    let conditioned = |id: &str, statements: usize, condition: &str| {
        let mut document = PolicyDocument::new(PolicyId::new(id).unwrap());
        for _ in 0..statements {
            document = document.with_statement(
                StatementDocument::new(Effect::Deny, ["projects:delete".parse().unwrap()])
                    .with_condition(condition),
            );
        }
        document
    };
    let limit = |result: Result<Epoch, AdminError>| match result {
        Err(AdminError::Limit(limit)) => limit,
        other => panic!("expected a limit, got {other:?}"),
    };
    admin
        .put_policy(
            &scope,
            &owner,
            conditioned("a", 1, "principal.level > 3"),
            &audit,
        )
        .await
        .unwrap();
    admin
        .put_policy(
            &scope,
            &owner,
            conditioned("b", 1, "principal.level > 4"),
            &audit,
        )
        .await
        .unwrap();
    let err = limit(
        admin
            .put_policy(&scope, &owner, conditioned("c", 1, "true"), &audit)
            .await,
    );
    assert_eq!(err, LimitError::Policies { max: 2, actual: 3 });
    assert!(err.to_string().contains("max_policies"), "{err}");
    let err = limit(
        admin
            .put_policy(&scope, &owner, conditioned("b", 3, "true"), &audit)
            .await,
    );
    assert_eq!(err, LimitError::Statements { max: 3, actual: 4 });
    let err = limit(
        admin
            .put_policy(
                &scope,
                &owner,
                conditioned("b", 1, "principal.level > 4 && principal.level < 9"),
                &audit,
            )
            .await,
    );
    assert_eq!(
        err,
        LimitError::ConditionBytes {
            max: 40,
            actual: 61
        }
    );
    assert_eq!(err.bound(), "max_condition_bytes");
    // Replacing within the limits is fine.
    admin
        .put_policy(&scope, &owner, conditioned("b", 2, "true"), &audit)
        .await
        .unwrap();

    let epoch = f.policies.policies_epoch(tenant).await.unwrap();
    f.policies
        .put_policy(
            tenant,
            &conditioned("c", 1, "true"),
            epoch,
            &AuditContext::system(),
        )
        .await
        .unwrap();
    match cache.authorizer(tenant).await {
        Err(CacheError::Limit(LimitError::Policies { max: 2, actual: 3 })) => {}
        other => panic!("expected the tenant over its limits, got {other:?}"),
    }
}

/// A write through [`AuthzAdmin`] reuses the cached authorizer when the
/// epoch has not moved, compiles the new state once, and installs it at
/// the epoch it committed: no reload after the write.
pub async fn admin_write_compiles_once(f: Fixture) {
    let (tenant, owner_id) = create_tenant(&f).await;
    let scope = TenantScope::assume_resolved(tenant);
    let probe = Probe::new(Arc::clone(&f.roles), Arc::clone(&f.policies));
    let cache = Arc::new(PolicyCache::with_config(
        Engine::new(catalog()),
        probe.clone(),
        probe.clone(),
        CacheConfig::new().with_freshness(Freshness::Notified),
    ));
    let admin = AuthzAdmin::new(Arc::clone(&cache), holders(&f));
    let owner = Principal::user(owner_id, tenant, RoleSet::single(RoleName::OWNER));
    let audit = AuditContext::user(owner_id);
    cache.authorizer(tenant).await.unwrap();
    let reads = probe.lists();

    let epoch = admin
        .put_role(
            &scope,
            &owner,
            role("editor", &["projects:update"], &[]),
            &audit,
        )
        .await
        .unwrap();
    assert_eq!(cache.cached_epoch(tenant), Some(epoch));
    let epoch = admin
        .put_policy(
            &scope,
            &owner,
            statement_policy("no-deletes", Effect::Deny, &["projects:delete"]),
            &audit,
        )
        .await
        .unwrap();
    assert_eq!(cache.cached_epoch(tenant), Some(epoch));
    let current = cache.authorizer(tenant).await.unwrap();
    assert_eq!(current.epoch(), Some(epoch));
    assert_eq!(current.policies().len(), 1);
    let editor = Principal::user(UserId::new(), tenant, RoleSet::parse(["editor"]).unwrap());
    assert!(decide(&current, &editor, "projects:update").allowed());
    assert!(!decide(&current, &owner, "projects:delete").allowed());
    assert_eq!(
        probe.lists(),
        reads,
        "writes read only the epoch, and nothing was loaded after them"
    );
}

/// Policy writes count against the tenant's [`WriteRate`]: puts and
/// deletes alike, past the burst refused with how long to wait, nothing
/// written; an actor without `policies:manage` is refused without using
/// the tenant's allowance; other tenants keep theirs; `None` lifts it.
pub async fn admin_rate_limits_policy_writes(f: Fixture) {
    let (tenant, owner_id) = create_tenant(&f).await;
    let (other, other_owner) = create_tenant(&f).await;
    let cache = Arc::new(PolicyCache::new(
        Engine::new(catalog()),
        Arc::clone(&f.roles),
        Arc::clone(&f.policies),
    ));
    let hour = std::time::Duration::from_secs(3600);
    let admin = AuthzAdmin::new(Arc::clone(&cache), holders(&f))
        .with_write_rate(Some(WriteRate::new(2, hour)));
    let scope = TenantScope::assume_resolved(tenant);
    let owner = Principal::user(owner_id, tenant, RoleSet::single(RoleName::OWNER));
    let audit = AuditContext::user(owner_id);
    let policy = |id: &str| statement_policy(id, Effect::Deny, &["projects:delete"]);
    let outsider = Principal::user(UserId::new(), tenant, RoleSet::single(RoleName::MEMBER));
    for _ in 0..3 {
        assert!(matches!(
            admin
                .put_policy(&scope, &outsider, policy("x"), &audit)
                .await,
            Err(AdminError::Forbidden { .. })
        ));
    }
    admin
        .put_policy(&scope, &owner, policy("a"), &audit)
        .await
        .unwrap();
    admin
        .delete_policy(&scope, &owner, &PolicyId::new("a").unwrap(), &audit)
        .await
        .unwrap();
    let epoch = f.policies.policies_epoch(tenant).await.unwrap();
    match admin.put_policy(&scope, &owner, policy("b"), &audit).await {
        Err(error @ AdminError::RateLimited { retry_after }) => {
            assert!(retry_after > hour - std::time::Duration::from_secs(60));
            assert!(error.to_string().contains("retry in"), "{error}");
        }
        other => panic!("expected a rate limit, got {other:?}"),
    }
    assert!(matches!(
        admin
            .delete_policy(&scope, &owner, &PolicyId::new("b").unwrap(), &audit)
            .await,
        Err(AdminError::RateLimited { .. })
    ));
    assert_eq!(f.policies.policies_epoch(tenant).await.unwrap(), epoch);

    let other_scope = TenantScope::assume_resolved(other);
    let other_owner = Principal::user(other_owner, other, RoleSet::single(RoleName::OWNER));
    admin
        .put_policy(&other_scope, &other_owner, policy("b"), &audit)
        .await
        .unwrap();
    let unlimited = admin.clone().with_write_rate(None);
    unlimited
        .put_policy(&scope, &owner, policy("b"), &audit)
        .await
        .unwrap();
}
