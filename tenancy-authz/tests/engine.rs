//! Decisions and explanations of the compiled engine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests report failure by panicking

use tenancy_authz::*;
use tenancy_core::{ApiKeyId, RoleName, RoleSet, TenantId, UserId};

fn catalog() -> Catalog {
    Catalog::new([
        "projects:read",
        "projects:create",
        "projects:update",
        "projects:delete",
        "invoices:read",
        "invoices:pay",
    ])
    .unwrap()
}

fn role(name: &str, permissions: &[&str], inherits: &[&str]) -> RoleDefinition {
    let mut r = RoleDefinition::new(RoleName::new(name).unwrap());
    for p in permissions {
        r = r.grant(p.parse().unwrap());
    }
    for i in inherits {
        r = r.inherit(RoleName::new(*i).unwrap());
    }
    r
}

fn user(tenant: TenantId, roles: &[&str]) -> Principal {
    Principal::user(UserId::new(), tenant, RoleSet::parse(roles).unwrap())
}

fn allowed(a: &Authorizer, p: &Principal, action: &str, r: &Resource) -> bool {
    let request = AuthzRequest::new(p, action, r);
    let decision = a.check(&request);
    // The interned-id path agrees with the string path.
    if let Some(id) = a.permission_id(action) {
        let prepared = a.prepare(p);
        assert_eq!(
            a.check_prepared(&prepared, id, r, request.context()),
            decision,
            "{action}"
        );
    }
    decision.allowed()
}

#[test]
fn built_in_roles_have_their_documented_permissions() {
    let tenant = TenantId::new();
    let a = Engine::new(catalog()).compile(tenant, &[], &[]).unwrap();
    let project = Resource::new("project").in_tenant(tenant);
    let names = |role: &RoleName| -> Vec<String> {
        a.role_permissions(role)
            .unwrap()
            .iter()
            .map(|p| p.to_string())
            .collect()
    };
    assert_eq!(names(&RoleName::OWNER).len(), catalog().len());
    let admin = names(&RoleName::ADMIN);
    assert_eq!(admin.len(), catalog().len() - 4);
    assert!(
        !admin.contains(&"tenant:delete".to_owned())
            && !admin.contains(&"billing:manage".to_owned())
            && !admin.contains(&"scim:manage".to_owned())
            && !admin.contains(&"sso:manage".to_owned())
    );
    assert_eq!(
        names(&RoleName::MEMBER),
        [
            "members:read",
            "roles:read",
            "projects:read",
            "projects:create",
            "invoices:read"
        ]
    );
    assert_eq!(
        names(&RoleName::BILLING),
        [
            "members:read",
            "billing:read",
            "billing:manage",
            "usage:read"
        ]
    );
    assert_eq!(
        names(&RoleName::READONLY),
        ["projects:read", "invoices:read"]
    );
    assert!(allowed(
        &a,
        &user(tenant, &["member"]),
        "projects:create",
        &project
    ));
    assert!(!allowed(
        &a,
        &user(tenant, &["readonly"]),
        "projects:create",
        &project
    ));
    assert!(allowed(
        &a,
        &user(tenant, &["readonly", "billing"]),
        "billing:manage",
        &project
    ));
}

#[test]
fn inheritance_grants_and_explains_the_path() {
    let tenant = TenantId::new();
    let roles = [
        role("lead", &["projects:delete"], &["editor"]),
        role("editor", &["projects:update"], &["member"]),
    ];
    let a = Engine::new(catalog()).compile(tenant, &roles, &[]).unwrap();
    let lead = user(tenant, &["lead"]);
    let project = Resource::new("project").in_tenant(tenant);
    for action in ["projects:delete", "projects:update", "projects:read"] {
        assert!(allowed(&a, &lead, action, &project), "{action}");
    }
    let explained = a.explain(&AuthzRequest::new(&lead, "projects:read", &project));
    assert_eq!(explained.reason, Reason::Role);
    assert_eq!(
        explained.to_string(),
        "allowed: `projects:read` granted by role path `lead` -> `editor` -> `member` (pattern `projects:read`)"
    );
    assert!(!allowed(
        &a,
        &user(tenant, &["editor"]),
        "projects:delete",
        &project
    ));
    let mut perms: Vec<String> = a
        .permissions_of(&lead)
        .iter()
        .map(|p| p.to_string())
        .collect();
    perms.sort();
    assert!(
        perms.contains(&"projects:delete".to_owned()) && perms.contains(&"roles:read".to_owned())
    );
}

#[test]
fn invalid_role_sets_are_rejected_with_names() {
    let engine = Engine::new(catalog());
    let t = TenantId::new();
    let cycle = engine
        .compile(
            t,
            &[
                role("a", &[], &["b"]),
                role("b", &[], &["c"]),
                role("c", &[], &["a"]),
            ],
            &[],
        )
        .unwrap_err();
    assert_eq!(
        cycle.to_string(),
        "role inheritance cycle: a -> b -> c -> a"
    );
    let own = engine
        .compile(t, &[role("a", &[], &["a"])], &[])
        .unwrap_err();
    assert_eq!(own.to_string(), "role inheritance cycle: a -> a");
    let unknown = engine
        .compile(t, &[role("a", &["projects:archive"], &[])], &[])
        .unwrap_err();
    assert_eq!(
        unknown.to_string(),
        "role `a`: unknown permission `projects:archive`: it is not in the permission catalog"
    );
    let parent = engine
        .compile(t, &[role("a", &[], &["ghost"])], &[])
        .unwrap_err();
    assert_eq!(parent.to_string(), "role `a` inherits unknown role `ghost`");
    let built_in = engine
        .compile(t, &[role("owner", &[], &[])], &[])
        .unwrap_err();
    assert!(matches!(built_in, RoleError::BuiltIn { .. }));
    let dup = engine
        .compile(t, &[role("a", &[], &[]), role("a", &[], &[])], &[])
        .unwrap_err();
    assert!(matches!(dup, RoleError::Duplicate { .. }));
    let nothing = engine
        .compile(t, &[role("a", &["nothing:*"], &[])], &[])
        .unwrap_err();
    assert_eq!(
        nothing.to_string(),
        "role `a`: permission pattern `nothing:*` matches no permission in the catalog"
    );
}

#[test]
fn tenants_actions_and_scopes() {
    let tenant = TenantId::new();
    let a = Engine::new(catalog()).compile(tenant, &[], &[]).unwrap();
    let owner = user(tenant, &["owner"]);
    let mine = Resource::new("project").in_tenant(tenant);
    let theirs = Resource::new("project").in_tenant(TenantId::new());
    assert!(allowed(&a, &owner, "projects:delete", &mine));
    assert!(allowed(
        &a,
        &owner,
        "projects:delete",
        &Resource::new("project")
    ));
    let cross = a.check(&AuthzRequest::new(&owner, "projects:read", &theirs));
    assert_eq!(
        (cross.allowed(), cross.reason()),
        (false, Reason::ResourceInOtherTenant)
    );
    let outsider = user(TenantId::new(), &["owner"]);
    assert_eq!(
        a.check(&AuthzRequest::new(&outsider, "projects:read", &mine))
            .reason(),
        Reason::PrincipalInOtherTenant
    );
    assert_eq!(
        a.check(&AuthzRequest::new(&owner, "projects:archive", &mine))
            .reason(),
        Reason::UnknownAction
    );
    // API keys: the intersection of the minting roles and the scopes.
    let key = |roles: &[&str], scopes: &[&str]| {
        Principal::api_key(
            ApiKeyId::new(),
            tenant,
            RoleSet::parse(roles).unwrap(),
            scopes.iter().map(|s| s.parse().unwrap()),
        )
    };
    let narrow = key(&["owner"], &["projects:read"]);
    assert!(allowed(&a, &narrow, "projects:read", &mine));
    assert!(!allowed(&a, &narrow, "projects:delete", &mine));
    assert_eq!(
        a.explain(&AuthzRequest::new(&narrow, "projects:delete", &mine))
            .to_string(),
        "denied: the principal's scopes do not include `projects:delete`"
    );
    let wide = key(&["readonly"], &["*"]);
    assert!(allowed(&a, &wide, "projects:read", &mine));
    assert!(!allowed(&a, &wide, "projects:update", &mine));
    assert_eq!(
        a.permissions_of(&key(&["member"], &["projects:*"]))
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>(),
        ["projects:read", "projects:create"]
    );
}

fn abac() -> (TenantId, Authorizer) {
    let tenant = TenantId::new();
    let policy = Policy::from_json(
        r#"{"id": "office", "statements": [
            {"sid": "own", "effect": "allow", "roles": ["member"], "actions": ["projects:update"],
             "resource_types": ["project"],
             "condition": "resource.owner == principal.id && context.ip in cidr(\"10.0.0.0/8\")"},
            {"sid": "suspended", "effect": "deny", "actions": ["*"], "condition": "principal.suspended"},
            {"sid": "frozen", "effect": "deny", "actions": ["projects:update", "projects:delete"],
             "resource_types": ["project"], "condition": "has(resource.frozen) && resource.frozen"}
        ]}"#,
        &catalog(),
    )
    .unwrap();
    let roles = [role("lead", &["projects:*"], &["member"])];
    let a = Engine::new(catalog())
        .compile(tenant, &roles, &[policy])
        .unwrap();
    (tenant, a)
}

#[test]
fn deny_overrides_allow_and_conditions_decide() {
    let (tenant, a) = abac();
    let suspended = AttrKey::new("suspended").unwrap();
    let owner_key = AttrKey::new("owner").unwrap();
    let ip = AttrKey::new("ip").unwrap();
    let ann = user(tenant, &["member"]).with_attribute(suspended.clone(), false);
    let lead = user(tenant, &["lead"]).with_attribute(suspended, false);
    let own = Resource::new("project")
        .in_tenant(tenant)
        .with_attribute(owner_key.clone(), ann.id());
    let office =
        Attributes::new().with(ip.clone(), "10.0.0.7".parse::<std::net::IpAddr>().unwrap());
    let home = Attributes::new().with(ip, "192.168.0.7".parse::<std::net::IpAddr>().unwrap());
    let ask = |p: &Principal, action: &'static str, r: &Resource, c: &Attributes| {
        let request = AuthzRequest::new(p, action, r).with_context(c);
        let decision = a.check(&request);
        let prepared = a.prepare(p);
        assert_eq!(
            a.check_prepared(&prepared, a.permission_id(action).unwrap(), r, c),
            decision
        );
        (decision, a.explain(&request))
    };
    let (d, e) = ask(&ann, "projects:update", &own, &office);
    assert_eq!((d.allowed(), d.reason()), (true, Reason::AllowStatement));
    assert_eq!(
        e.to_string(),
        "allowed: `projects:update` granted by policy `office` statement `own`"
    );
    let (d, e) = ask(&ann, "projects:update", &own, &home);
    assert!(!d.allowed());
    assert_eq!(
        e.to_string(),
        "denied: nothing grants `projects:update` on `project`; allow statement `own` of policy `office` did not apply: its condition is false"
    );
    // The lead's role grants it, but a frozen project denies: deny overrides.
    let frozen = own
        .clone()
        .with_attribute(AttrKey::new("frozen").unwrap(), true);
    assert!(ask(&lead, "projects:update", &own, &home).0.allowed());
    let (d, e) = ask(&lead, "projects:update", &frozen, &home);
    assert_eq!((d.allowed(), d.reason()), (false, Reason::DenyStatement));
    assert_eq!(
        e.to_string(),
        "denied: policy `office` statement `frozen` denies `projects:update` (deny overrides allow)"
    );
    // A deny whose condition cannot be evaluated fails closed...
    let unknown = user(tenant, &["lead"]);
    let (d, e) = ask(&unknown, "projects:read", &own, &office);
    assert!(!d.allowed());
    assert_eq!(
        e.to_string(),
        "denied: policy `office` statement `suspended` denies `projects:read`: its condition could not be evaluated (attribute principal.suspended is missing), and a deny fails closed"
    );
    // ...an allow whose condition cannot be evaluated grants nothing.
    let (d, e) = ask(&ann, "projects:update", &own, &Attributes::new());
    assert!(!d.allowed());
    assert!(
        e.to_string()
            .ends_with("its condition could not be evaluated (attribute context.ip is missing)"),
        "{e}"
    );
    // Role filters follow inheritance: a lead is a member.
    let lead_own = Resource::new("project")
        .in_tenant(tenant)
        .with_attribute(owner_key.clone(), lead.id());
    let (d, _) = ask(&lead, "projects:update", &lead_own, &office);
    assert!(d.allowed());
    // Other resource types are out of the statement.
    let invoice = Resource::new("invoice")
        .in_tenant(tenant)
        .with_attribute(owner_key, ann.id());
    assert!(!ask(&ann, "projects:update", &invoice, &office).0.allowed());
}

#[test]
fn prepared_principals_survive_recompilation() {
    let (tenant, a) = abac();
    let (_, b) = {
        let a2 = Engine::new(catalog()).compile(tenant, &[], &[]).unwrap();
        (tenant, a2)
    };
    let owner = user(tenant, &["owner"]);
    let prepared = a.prepare(&owner);
    let project = Resource::new("project").in_tenant(tenant);
    let id = b.permission_id("projects:delete").unwrap();
    assert!(
        b.check_prepared(&prepared, id, &project, &Attributes::new())
            .allowed()
    );
}

#[test]
fn decisions_are_small_and_copy() {
    assert!(std::mem::size_of::<Decision>() <= 12);
    fn copy<T: Copy + Send + Sync>() {}
    copy::<Decision>();
    fn share<T: Send + Sync>() {}
    share::<Authorizer>();
    share::<PolicyCache>();
}

/// Attribute names belong to the compiled conditions that use them: one
/// tenant writing a great many names (more than a process-wide table of
/// 65,536 would hold) changes nothing for another tenant's compile.
#[test]
fn one_tenants_attribute_names_do_not_affect_another() {
    let engine = Engine::new(catalog());
    let noisy = TenantId::new();
    for chunk in 0..70 {
        let statements: Vec<String> = (0..1000)
            .map(|i| {
                format!(
                    r#"{{"effect": "deny", "actions": ["projects:delete"], "condition": "has(resource.n{chunk}_{i})"}}"#
                )
            })
            .collect();
        let policy = Policy::from_json(
            &format!(
                r#"{{"id": "p{chunk}", "statements": [{}]}}"#,
                statements.join(",")
            ),
            &catalog(),
        )
        .unwrap();
        engine.compile(noisy, &[], &[policy]).unwrap();
    }
    let quiet = TenantId::new();
    let policy = Policy::from_json(
        r#"{"id": "own", "statements": [{"effect": "allow", "actions": ["projects:update"],
            "condition": "resource.steward == principal.id"}]}"#,
        &catalog(),
    )
    .unwrap();
    let a = engine.compile(quiet, &[], &[policy]).unwrap();
    let ann = user(quiet, &["member"]);
    let steward = AttrKey::new("steward").unwrap();
    let mine = Resource::new("project")
        .in_tenant(quiet)
        .with_attribute(steward.clone(), ann.id());
    let theirs = Resource::new("project")
        .in_tenant(quiet)
        .with_attribute(steward, "someone else");
    assert!(allowed(&a, &ann, "projects:update", &mine));
    assert!(!allowed(&a, &ann, "projects:update", &theirs));
}

/// Break-glass: no deny statement takes reading or managing policies and
/// roles from a principal holding `owner`, even a deny-all; everything
/// else stays denied, and other roles are bound as usual.
#[test]
fn deny_statements_never_lock_owners_out_of_policies_and_roles() {
    let tenant = TenantId::new();
    let lockdown = Policy::from_json(
        r#"{"id": "lockdown", "statements": [{"sid": "all", "effect": "deny", "actions": ["*"]}]}"#,
        &catalog(),
    )
    .unwrap();
    let a = Engine::new(catalog())
        .compile(tenant, &[], &[lockdown])
        .unwrap();
    let owner = user(tenant, &["owner"]);
    let admin = user(tenant, &["admin"]);
    let anything = Resource::new("policy").in_tenant(tenant);
    for action in [
        "policies:read",
        "policies:manage",
        "roles:read",
        "roles:manage",
    ] {
        let decision = a.check(&AuthzRequest::new(&owner, action, &anything));
        assert_eq!(
            (decision.allowed(), decision.reason()),
            (true, Reason::OwnerBreakGlass),
            "{action}"
        );
        assert!(allowed(&a, &owner, action, &anything), "{action}");
        assert!(!allowed(&a, &admin, action, &anything), "{action}");
    }
    let request = AuthzRequest::new(&owner, "roles:manage", &anything);
    assert_eq!(
        a.explain(&request).to_string(),
        "allowed: `roles:manage` granted to an owner although policy `lockdown` statement `all` denies it: no deny statement applies to owners reading or managing policies and roles (break-glass)"
    );
    for action in ["members:read", "projects:read", "tenant:delete"] {
        let decision = a.check(&AuthzRequest::new(&owner, action, &anything));
        assert_eq!(
            (decision.allowed(), decision.reason()),
            (false, Reason::DenyStatement),
            "{action}"
        );
    }
    // A key of the owner keeps its scopes: break-glass does not widen them.
    let key = Principal::api_key(
        ApiKeyId::new(),
        tenant,
        RoleSet::single(RoleName::OWNER),
        ["policies:read".parse().unwrap()],
    );
    assert!(allowed(&a, &key, "policies:read", &anything));
    let decision = a.check(&AuthzRequest::new(&key, "policies:manage", &anything));
    assert_eq!(decision.reason(), Reason::OutsideScopes);
}
