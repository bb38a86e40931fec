//! tenancy-authz against cedar-policy and casbin, on the same workloads, in
//! one run:
//!
//! - `rbac/*`: tenants with 20 roles each (with inheritance), 200 actions
//!   (each role granting about 50), 100 members per tenant holding 1 or 2
//!   roles; allowed, denied and cross-tenant requests measured apart.
//! - `flat/*`: the same check in one tenant whose roles hold 1,000 and
//!   10,000 grants (policy statements, for the peers).
//! - `abac/*`: ownership + IP range + time window, with forbids for
//!   suspended principals and cross-tenant resources (4 statements).
//! - `compile/*`: compiling (parsing included) a 1,000-statement policy set.
//!
//! Every engine is built before timing, and every request is checked to get
//! the same decision from every engine before it is timed.
//!
//! ```text
//! cargo bench -p tenancy-benches --bench authz -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! `AUTHZ_BENCH=abac,compile` runs only the named groups (their setup
//! included; a criterion filter would still build every workload).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a benchmark reports failure by panicking

use std::collections::{HashMap, HashSet};
use std::hint::black_box;
use std::str::FromStr;

use casbin::prelude::*;
use cedar_policy as cedar;
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use tenancy::authz::{
    AttrKey, Attributes, AuthzRequest, Catalog, Engine, Policy, PolicyDocument, Principal,
    PrincipalKind, Resource, RoleDefinition,
};
use tenancy::{RoleName, RoleSet, TenantId};

const ROLES: usize = 20;
const RESOURCES: usize = 20;
const ACTIONS_PER_RESOURCE: usize = 10; // 200 actions
const GRANTS_PER_ROLE: usize = 50;
const MEMBERS: usize = 100;
const POOL: usize = 512;

/// splitmix64: a small deterministic generator, so every run sees the same workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn permission(i: usize) -> String {
    format!(
        "res{}:act{}",
        i / ACTIONS_PER_RESOURCE,
        i % ACTIONS_PER_RESOURCE
    )
}

fn actions() -> Vec<String> {
    (0..RESOURCES * ACTIONS_PER_RESOURCE)
        .map(permission)
        .collect()
}

/// One tenant's roles: each grants `grants` distinct actions and inherits
/// one earlier role half of the time.
#[derive(Clone)]
struct TenantModel {
    roles: Vec<(Vec<usize>, Vec<usize>)>,
    members: Vec<Vec<usize>>,
}

fn tenant_model(rng: &mut Rng, roles: usize, grants: usize) -> TenantModel {
    let total = RESOURCES * ACTIONS_PER_RESOURCE;
    let roles = (0..roles)
        .map(|i| {
            let mut granted = HashSet::new();
            while granted.len() < grants {
                granted.insert(rng.below(total));
            }
            let mut granted: Vec<usize> = granted.into_iter().collect();
            granted.sort_unstable();
            let inherits = if i > 0 && rng.below(2) == 0 {
                vec![rng.below(i)]
            } else {
                vec![]
            };
            (granted, inherits)
        })
        .collect::<Vec<_>>();
    let members = (0..MEMBERS)
        .map(|_| {
            let n = 1 + rng.below(2);
            let mut held: Vec<usize> = (0..n).map(|_| rng.below(roles.len())).collect();
            held.sort_unstable();
            held.dedup();
            held
        })
        .collect();
    TenantModel { roles, members }
}

fn role_name(i: usize) -> String {
    format!("r{i}")
}

/// A request: principal (tenant, member), action, and the resource's tenant.
#[derive(Clone, Copy)]
struct Req {
    tenant: usize,
    member: usize,
    action: usize,
    resource_tenant: usize,
}

// ---------------------------------------------------------------- tenancy-authz

struct Ours {
    authorizers: Vec<tenancy::authz::Authorizer>,
    principals: Vec<Vec<Principal>>,
    resources: Vec<Resource>,
    actions: Vec<String>,
}

impl Ours {
    fn build(models: &[TenantModel]) -> Self {
        let actions = actions();
        let engine = Engine::new(Catalog::new(&actions).unwrap());
        let tenants: Vec<TenantId> = models.iter().map(|_| TenantId::new()).collect();
        let authorizers = models
            .iter()
            .zip(&tenants)
            .map(|(model, &tenant)| {
                let roles: Vec<RoleDefinition> = model
                    .roles
                    .iter()
                    .enumerate()
                    .map(|(i, (grants, inherits))| {
                        let mut role = RoleDefinition::new(RoleName::new(role_name(i)).unwrap());
                        role.permissions = grants
                            .iter()
                            .map(|&g| actions[g].parse().unwrap())
                            .collect();
                        role.inherits = inherits
                            .iter()
                            .map(|&p| RoleName::new(role_name(p)).unwrap())
                            .collect();
                        role
                    })
                    .collect();
                engine.compile(tenant, &roles, &[]).unwrap()
            })
            .collect();
        let principals = models
            .iter()
            .zip(&tenants)
            .map(|(model, &tenant)| {
                model
                    .members
                    .iter()
                    .enumerate()
                    .map(|(m, held)| {
                        Principal::new(
                            PrincipalKind::User,
                            format!("u{m}"),
                            tenant,
                            RoleSet::parse(held.iter().map(|&r| role_name(r))).unwrap(),
                        )
                    })
                    .collect()
            })
            .collect();
        let resources = tenants
            .iter()
            .map(|&t| Resource::new("doc").with_id("d1").in_tenant(t))
            .collect();
        Self {
            authorizers,
            principals,
            resources,
            actions,
        }
    }

    #[inline]
    fn check(&self, r: &Req) -> bool {
        let principal = &self.principals[r.tenant][r.member];
        let request = AuthzRequest::new(
            principal,
            &self.actions[r.action],
            &self.resources[r.resource_tenant],
        );
        self.authorizers[r.tenant].check(&request).allowed()
    }
}

// ---------------------------------------------------------------- cedar

struct Cedar {
    authorizer: cedar::Authorizer,
    entities: cedar::Entities,
    /// Per request of a pool: the request and the policy set sliced to the
    /// principal's roles and their ancestors, built before timing.
    role_policies: Vec<Vec<cedar::Policy>>,
}

fn uid(kind: &str, id: &str) -> cedar::EntityUid {
    cedar::EntityUid::from_str(&format!("{kind}::\"{id}\"")).unwrap()
}

impl Cedar {
    fn build(models: &[TenantModel]) -> Self {
        let actions = actions();
        let mut entities = Vec::new();
        let mut action_groups: HashMap<usize, HashSet<cedar::EntityUid>> = HashMap::new();
        let mut role_policies = Vec::new();
        for (t, model) in models.iter().enumerate() {
            entities.push(cedar::Entity::new_no_attrs(
                uid("Tenant", &format!("t{t}")),
                HashSet::new(),
            ));
            entities.push(cedar::Entity::new_no_attrs(
                uid("Doc", &format!("t{t}:d1")),
                HashSet::from([uid("Tenant", &format!("t{t}"))]),
            ));
            let mut policies = Vec::new();
            for (r, (grants, inherits)) in model.roles.iter().enumerate() {
                let role = format!("t{t}:r{r}");
                let group = uid("Action", &format!("grp:{role}"));
                for &g in grants {
                    action_groups.entry(g).or_default().insert(group.clone());
                }
                entities.push(cedar::Entity::new_no_attrs(group, HashSet::new()));
                entities.push(cedar::Entity::new_no_attrs(
                    uid("Role", &role),
                    inherits
                        .iter()
                        .map(|p| uid("Role", &format!("t{t}:r{p}")))
                        .collect(),
                ));
                policies.push(
                    cedar::Policy::parse(
                        Some(cedar::PolicyId::new(&role)),
                        format!(
                            "permit(principal in Role::\"{role}\", action in Action::\"grp:{role}\", resource in Tenant::\"t{t}\");"
                        ),
                    )
                    .unwrap(),
                );
            }
            role_policies.push(policies);
            for (m, held) in model.members.iter().enumerate() {
                entities.push(cedar::Entity::new_no_attrs(
                    uid("User", &format!("t{t}:u{m}")),
                    held.iter()
                        .map(|r| uid("Role", &format!("t{t}:r{r}")))
                        .collect(),
                ));
            }
        }
        for (i, action) in actions.iter().enumerate() {
            entities.push(cedar::Entity::new_no_attrs(
                uid("Action", action),
                action_groups.remove(&i).unwrap_or_default(),
            ));
        }
        Self {
            authorizer: cedar::Authorizer::new(),
            entities: cedar::Entities::from_entities(entities, None).unwrap(),
            role_policies,
        }
    }

    /// The request and its sliced policy set: the policies of the roles the
    /// principal holds and of every role those inherit.
    fn prepare(&self, models: &[TenantModel], r: &Req) -> (cedar::Request, cedar::PolicySet) {
        let model = &models[r.tenant];
        let mut roles: Vec<usize> = model.members[r.member].clone();
        let mut i = 0;
        while i < roles.len() {
            for &p in &model.roles[roles[i]].1 {
                if !roles.contains(&p) {
                    roles.push(p);
                }
            }
            i += 1;
        }
        let policies = roles
            .iter()
            .map(|&role| self.role_policies[r.tenant][role].clone())
            .collect::<Vec<_>>();
        let request = cedar::Request::new(
            uid("User", &format!("t{}:u{}", r.tenant, r.member)),
            uid("Action", &permission(r.action)),
            uid("Doc", &format!("t{}:d1", r.resource_tenant)),
            cedar::Context::empty(),
            None,
        )
        .unwrap();
        (request, cedar::PolicySet::from_policies(policies).unwrap())
    }

    fn check(&self, request: &cedar::Request, policies: &cedar::PolicySet) -> bool {
        self.authorizer
            .is_authorized(request, policies, &self.entities)
            .decision()
            == cedar::Decision::Allow
    }
}

// ---------------------------------------------------------------- casbin

const CASBIN_MODEL: &str = r#"
[request_definition]
r = sub, dom, obj, act

[policy_definition]
p = sub, dom, obj, act

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = r.dom == p.dom && r.obj == p.obj && r.act == p.act && g(r.sub, p.sub, r.dom)
"#;

fn casbin_rules(models: &[TenantModel]) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let actions = actions();
    let mut p = Vec::new();
    let mut g = Vec::new();
    for (t, model) in models.iter().enumerate() {
        let dom = format!("t{t}");
        for (r, (grants, inherits)) in model.roles.iter().enumerate() {
            for &a in grants {
                let (obj, act) = actions[a].split_once(':').unwrap();
                p.push(vec![
                    role_name(r),
                    dom.clone(),
                    obj.to_owned(),
                    act.to_owned(),
                ]);
            }
            for &parent in inherits {
                g.push(vec![role_name(r), role_name(parent), dom.clone()]);
            }
        }
        for (m, held) in model.members.iter().enumerate() {
            for &r in held {
                // User ids are global: user m of tenant t is not user m of another tenant.
                g.push(vec![format!("t{t}:u{m}"), role_name(r), dom.clone()]);
            }
        }
    }
    (p, g)
}

async fn casbin_enforcer(models: &[TenantModel]) -> Enforcer {
    let model = DefaultModel::from_str(CASBIN_MODEL).await.unwrap();
    let mut e = Enforcer::new(model, MemoryAdapter::default())
        .await
        .unwrap();
    let (p, g) = casbin_rules(models);
    e.add_policies(p).await.unwrap();
    e.add_grouping_policies(g).await.unwrap();
    e
}

async fn casbin_cached(models: &[TenantModel]) -> CachedEnforcer {
    let model = DefaultModel::from_str(CASBIN_MODEL).await.unwrap();
    let mut e = CachedEnforcer::new(model, MemoryAdapter::default())
        .await
        .unwrap();
    let (p, g) = casbin_rules(models);
    e.add_policies(p).await.unwrap();
    e.add_grouping_policies(g).await.unwrap();
    e
}

fn casbin_args(r: &Req) -> Vec<String> {
    let action = permission(r.action);
    let (obj, act) = action.split_once(':').unwrap();
    vec![
        format!("t{}:u{}", r.tenant, r.member),
        format!("t{}", r.resource_tenant),
        obj.to_owned(),
        act.to_owned(),
    ]
}

// ---------------------------------------------------------------- workloads

struct Pools {
    allow: Vec<Req>,
    deny: Vec<Req>,
    cross: Vec<Req>,
}

fn pools(rng: &mut Rng, models: &[TenantModel], ours: &Ours) -> Pools {
    let mut pools = Pools {
        allow: vec![],
        deny: vec![],
        cross: vec![],
    };
    let total = RESOURCES * ACTIONS_PER_RESOURCE;
    // With one tenant there is no cross-tenant request to make.
    let cross_wanted = if models.len() > 1 { POOL } else { 0 };
    while pools.allow.len() < POOL || pools.deny.len() < POOL || pools.cross.len() < cross_wanted {
        let tenant = rng.below(models.len());
        let cross = models.len() > 1 && rng.below(10) == 0;
        let resource_tenant = if cross {
            (tenant + 1 + rng.below(models.len() - 1)) % models.len()
        } else {
            tenant
        };
        let r = Req {
            tenant,
            member: rng.below(MEMBERS),
            action: rng.below(total),
            resource_tenant,
        };
        let pool = match (cross, ours.check(&r)) {
            (true, _) => &mut pools.cross,
            (false, true) => &mut pools.allow,
            (false, false) => &mut pools.deny,
        };
        if pool.len() < POOL {
            pool.push(r);
        }
    }
    pools
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// Whether the group is selected by `AUTHZ_BENCH` (all when unset).
fn wanted(group: &str) -> bool {
    std::env::var("AUTHZ_BENCH").map_or(true, |groups| groups.split(',').any(|g| g.trim() == group))
}

fn rbac(c: &mut Criterion) {
    if !wanted("rbac") {
        return;
    }
    let rt = rt();
    for tenants in [10usize, 100, 1000] {
        let mut rng = Rng(tenants as u64);
        let models: Vec<TenantModel> = (0..tenants)
            .map(|_| tenant_model(&mut rng, ROLES, GRANTS_PER_ROLE))
            .collect();
        let ours = Ours::build(&models);
        let pools = pools(&mut rng, &models, &ours);
        let cedar = Cedar::build(&models);
        let casbin = (tenants == 10).then(|| rt.block_on(casbin_enforcer(&models)));
        let cached = (tenants == 10).then(|| rt.block_on(casbin_cached(&models)));
        let mut group = c.benchmark_group(format!("rbac/{tenants}-tenants"));
        for (kind, pool, expected) in [
            ("allow", &pools.allow, true),
            ("deny", &pools.deny, false),
            ("cross-tenant", &pools.cross, false),
        ] {
            // Same answers from every engine before anything is timed.
            let prepared: Vec<_> = pool.iter().map(|r| cedar.prepare(&models, r)).collect();
            for (r, (request, set)) in pool.iter().zip(&prepared) {
                assert_eq!(ours.check(r), expected);
                assert_eq!(cedar.check(request, set), expected, "cedar disagrees");
                if let Some(e) = &casbin {
                    assert_eq!(
                        e.enforce(casbin_args(r)).unwrap(),
                        expected,
                        "casbin disagrees"
                    );
                }
            }
            let mut i = 0;
            group.bench_function(BenchmarkId::new("tenancy-authz", kind), |b| {
                b.iter(|| {
                    i = (i + 1) % POOL;
                    black_box(ours.check(black_box(&pool[i])))
                })
            });
            // The interned-id API: action id and principal resolved ahead.
            let ids: Vec<_> = pool
                .iter()
                .map(|r| {
                    let a = &ours.authorizers[r.tenant];
                    (
                        r.tenant,
                        a.prepare(&ours.principals[r.tenant][r.member]),
                        a.permission_id(&ours.actions[r.action]).unwrap(),
                        r.resource_tenant,
                    )
                })
                .collect();
            let empty = Attributes::new();
            let mut i = 0;
            group.bench_function(BenchmarkId::new("tenancy-authz-ids", kind), |b| {
                b.iter(|| {
                    i = (i + 1) % POOL;
                    let (t, prepared, action, rt) = &ids[i];
                    black_box(
                        ours.authorizers[*t]
                            .check_prepared(prepared, *action, &ours.resources[*rt], &empty)
                            .allowed(),
                    )
                })
            });
            let mut i = 0;
            group.bench_function(BenchmarkId::new("cedar-sliced", kind), |b| {
                b.iter(|| {
                    i = (i + 1) % POOL;
                    let (request, set) = &prepared[i];
                    black_box(cedar.check(request, set))
                })
            });
            if let Some(e) = &casbin {
                let args: Vec<_> = pool.iter().map(casbin_args).collect();
                let mut i = 0;
                // Milliseconds per call: fewer samples, or the run takes an hour.
                group.sample_size(10);
                group.bench_function(BenchmarkId::new("casbin", kind), |b| {
                    b.iter(|| {
                        i = (i + 1) % POOL;
                        black_box(e.enforce(args[i].clone()).unwrap())
                    })
                });
                group.sample_size(100);
            }
            if let Some(e) = &cached {
                let args = casbin_args(&pool[0]);
                assert_eq!(e.enforce(args.clone()).unwrap(), expected);
                group.bench_function(BenchmarkId::new("casbin-cached-hit", kind), |b| {
                    b.iter(|| black_box(e.enforce(black_box(args.clone())).unwrap()))
                });
            }
        }
        group.finish();
    }
}

/// One tenant whose roles hold 1,000 or 10,000 grants. The peers get one
/// statement (policy, row) per grant; tenancy-authz compiles them into bitsets.
fn flat(c: &mut Criterion) {
    if !wanted("flat") {
        return;
    }
    let rt = rt();
    let mut group = c.benchmark_group("flat");
    for statements in [1_000usize, 10_000] {
        let mut rng = Rng(statements as u64 + 7);
        let model = tenant_model(&mut rng, statements / GRANTS_PER_ROLE, GRANTS_PER_ROLE);
        let models = vec![model];
        let ours = Ours::build(&models);
        let pools = pools(&mut rng, &models, &ours);
        let pool = &pools.allow;
        let actions = actions();
        // Cedar, one policy per grant, not sliced: it evaluates every policy.
        let mut text = String::new();
        for (r, (grants, _)) in models[0].roles.iter().enumerate() {
            for &g in grants {
                text.push_str(&format!(
                    "permit(principal in Role::\"t0:r{r}\", action == Action::\"{}\", resource in Tenant::\"t0\");\n",
                    actions[g]
                ));
            }
        }
        let cedar_set = cedar::PolicySet::from_str(&text).unwrap();
        assert_eq!(cedar_set.policies().count(), statements);
        let cedar = Cedar::build(&models);
        let requests: Vec<_> = pool.iter().map(|r| cedar.prepare(&models, r).0).collect();
        let casbin = rt.block_on(casbin_enforcer(&models));
        for (r, request) in pool.iter().zip(&requests) {
            assert!(cedar.check(request, &cedar_set));
            assert!(casbin.enforce(casbin_args(r)).unwrap());
        }
        let mut i = 0;
        group.bench_function(BenchmarkId::new("tenancy-authz", statements), |b| {
            b.iter(|| {
                i = (i + 1) % POOL;
                black_box(ours.check(black_box(&pool[i])))
            })
        });
        let mut i = 0;
        group.sample_size(10);
        group.bench_function(BenchmarkId::new("cedar", statements), |b| {
            b.iter(|| {
                i = (i + 1) % POOL;
                black_box(cedar.check(&requests[i], &cedar_set))
            })
        });
        let args: Vec<_> = pool.iter().map(casbin_args).collect();
        let mut i = 0;
        group.bench_function(BenchmarkId::new("casbin", statements), |b| {
            b.iter(|| {
                i = (i + 1) % POOL;
                black_box(casbin.enforce(args[i].clone()).unwrap())
            })
        });
        group.sample_size(100);
    }
    group.finish();
}

// ---------------------------------------------------------------- ABAC

const WINDOW_START: &str = "2030-01-07T09:00:00Z";
const WINDOW_END: &str = "2030-01-07T17:00:00Z";

fn abac(c: &mut Criterion) {
    if !wanted("abac") {
        return;
    }
    let mut group = c.benchmark_group("abac");
    let tenant = TenantId::new();
    let catalog = Catalog::new(["projects:read", "projects:update"]).unwrap();
    let policy = Policy::from_json(
        &format!(
            r#"{{"id": "abac", "statements": [
            {{"effect": "allow", "actions": ["projects:update"], "resource_types": ["project"],
              "condition": "resource.owner == principal.id && context.ip in cidr(\"10.0.0.0/8\") && context.time >= time(\"{WINDOW_START}\") && context.time < time(\"{WINDOW_END}\")"}},
            {{"effect": "allow", "actions": ["projects:read"], "resource_types": ["project"]}},
            {{"effect": "deny", "actions": ["*"], "condition": "principal.suspended"}},
            {{"effect": "deny", "actions": ["*"], "condition": "resource.tenant_id != principal.tenant_id"}}
        ]}}"#
        ),
        &catalog,
    )
    .unwrap();
    let contractor = RoleDefinition::new(RoleName::new("contractor").unwrap());
    let authorizer = Engine::new(catalog)
        .compile(tenant, &[contractor], &[policy])
        .unwrap();
    let suspended = AttrKey::new("suspended").unwrap();
    let owner = AttrKey::new("owner").unwrap();
    let ip = AttrKey::new("ip").unwrap();
    let time_key = AttrKey::new("time").unwrap();
    let roles = RoleSet::parse(["contractor"]).unwrap();
    let ann = Principal::new(PrincipalKind::User, "ann", tenant, roles.clone())
        .with_attribute(suspended.clone(), false);
    let sam =
        Principal::new(PrincipalKind::User, "sam", tenant, roles).with_attribute(suspended, true);
    let project = Resource::new("project")
        .with_id("p1")
        .in_tenant(tenant)
        .with_attribute(owner, "ann");
    let at = time::OffsetDateTime::parse(
        "2030-01-07T10:30:00Z",
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let context = Attributes::new()
        .with(ip, "10.1.2.3".parse::<std::net::IpAddr>().unwrap())
        .with(time_key, at);

    // Cedar: the same four statements, entities and context.
    let policies = cedar::PolicySet::from_str(&format!(
        r#"
permit(principal, action == Action::"projects:update", resource is Project)
when {{ resource.owner == principal && context.ip.isInRange(ip("10.0.0.0/8"))
        && context.time >= datetime("{WINDOW_START}") && context.time < datetime("{WINDOW_END}") }};
permit(principal, action == Action::"projects:read", resource is Project);
forbid(principal, action, resource) when {{ principal.suspended }};
forbid(principal, action, resource) when {{ resource.tenant != principal.tenant }};
"#
    ))
    .unwrap();
    let user = |id: &str, suspended: bool| {
        cedar::Entity::new(
            uid("User", id),
            HashMap::from([
                (
                    "suspended".to_owned(),
                    cedar::RestrictedExpression::new_bool(suspended),
                ),
                (
                    "tenant".to_owned(),
                    cedar::RestrictedExpression::new_entity_uid(uid("Tenant", "t0")),
                ),
            ]),
            HashSet::new(),
        )
        .unwrap()
    };
    let entities = cedar::Entities::from_entities(
        [
            user("ann", false),
            user("sam", true),
            cedar::Entity::new_no_attrs(uid("Tenant", "t0"), HashSet::new()),
            cedar::Entity::new(
                uid("Project", "p1"),
                HashMap::from([
                    (
                        "owner".to_owned(),
                        cedar::RestrictedExpression::new_entity_uid(uid("User", "ann")),
                    ),
                    (
                        "tenant".to_owned(),
                        cedar::RestrictedExpression::new_entity_uid(uid("Tenant", "t0")),
                    ),
                ]),
                HashSet::new(),
            )
            .unwrap(),
        ],
        None,
    )
    .unwrap();
    let cedar_context = cedar::Context::from_pairs([
        (
            "ip".to_owned(),
            cedar::RestrictedExpression::new_ip("10.1.2.3"),
        ),
        (
            "time".to_owned(),
            cedar::RestrictedExpression::new_datetime("2030-01-07T10:30:00Z"),
        ),
    ])
    .unwrap();
    let cedar_request = |who: &str| {
        cedar::Request::new(
            uid("User", who),
            uid("Action", "projects:update"),
            uid("Project", "p1"),
            cedar_context.clone(),
            None,
        )
        .unwrap()
    };
    let cedar_authorizer = cedar::Authorizer::new();
    for (name, principal, who, expected) in [
        ("allow", &ann, "ann", true),
        ("forbid-suspended", &sam, "sam", false),
    ] {
        let request =
            AuthzRequest::new(principal, "projects:update", &project).with_context(&context);
        assert_eq!(authorizer.check(&request).allowed(), expected);
        let creq = cedar_request(who);
        assert_eq!(
            cedar_authorizer
                .is_authorized(&creq, &policies, &entities)
                .decision()
                == cedar::Decision::Allow,
            expected
        );
        group.bench_function(BenchmarkId::new("tenancy-authz", name), |b| {
            b.iter(|| black_box(authorizer.check(black_box(&request)).allowed()))
        });
        group.bench_function(BenchmarkId::new("cedar", name), |b| {
            b.iter(|| {
                black_box(
                    cedar_authorizer
                        .is_authorized(black_box(&creq), &policies, &entities)
                        .decision(),
                )
            })
        });
    }
    group.finish();
}

/// Compiling 1,000 statements (100 policies of 10, each with a condition),
/// parsing and validation included.
fn compile(c: &mut Criterion) {
    if !wanted("compile") {
        return;
    }
    let actions = actions();
    let catalog = Catalog::new(&actions).unwrap();
    let engine = Engine::new(catalog);
    let mut rng = Rng(42);
    let documents: Vec<PolicyDocument> = (0..100)
        .map(|p| {
            let statements: Vec<serde_json::Value> = (0..10)
                .map(|s| {
                    let effect = if rng.below(4) == 0 { "deny" } else { "allow" };
                    serde_json::json!({
                        "sid": format!("s{s}"),
                        "effect": effect,
                        "actions": [actions[rng.below(actions.len())], format!("res{}:*", rng.below(RESOURCES))],
                        "resource_types": ["doc"],
                        "roles": [format!("r{}", rng.below(ROLES))],
                        "condition": format!(
                            "resource.owner == principal.id && principal.level >= {} && context.ip in cidr(\"10.{}.0.0/16\") || resource.tags contains \"t{}\"",
                            rng.below(5), rng.below(255), rng.below(50)
                        ),
                    })
                })
                .collect();
            serde_json::from_value(serde_json::json!({ "id": format!("p{p}"), "statements": statements })).unwrap()
        })
        .collect();
    let tenant = TenantId::new();
    let roles: Vec<RoleDefinition> = (0..ROLES)
        .map(|r| {
            RoleDefinition::new(RoleName::new(role_name(r)).unwrap())
                .grant(actions[r].parse().unwrap())
        })
        .collect();
    // From documents as a store returns them (owned) to a compiled authorizer.
    let build = |documents: Vec<PolicyDocument>| {
        let policies: Vec<Policy> = documents
            .into_iter()
            .map(|d| Policy::new(d, engine.catalog()).unwrap())
            .collect();
        engine.compile(tenant, &roles, &policies).unwrap()
    };
    let built = build(documents.clone());
    assert_eq!(
        built
            .policies()
            .iter()
            .map(|p| p.statements().len())
            .sum::<usize>(),
        1000
    );
    let mut group = c.benchmark_group("compile");
    group.sample_size(20);
    group.bench_function("tenancy-authz/1000-statements", |b| {
        b.iter_batched(
            || documents.clone(),
            |docs| black_box(build(docs)),
            BatchSize::LargeInput,
        )
    });
    // Cedar parsing the same number of policies, for scale (a different
    // language, so only roughly comparable).
    let cedar_text: String = (0..1000)
        .map(|i| {
            format!(
                "permit(principal in Role::\"r{}\", action == Action::\"{}\", resource) when {{ resource.owner == principal && principal.level >= {} && context.ip.isInRange(ip(\"10.{}.0.0/16\")) || resource.tags.contains(\"t{}\") }};\n",
                i % ROLES,
                actions[i % actions.len()],
                i % 5,
                i % 255,
                i % 50
            )
        })
        .collect();
    group.bench_function("cedar/1000-policies-parse", |b| {
        b.iter(|| black_box(cedar::PolicySet::from_str(&cedar_text).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, rbac, flat, abac, compile);
criterion_main!(benches);
