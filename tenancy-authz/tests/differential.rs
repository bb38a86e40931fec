//! Differential test: random roles, policies (with random conditions) and
//! requests, decided by the compiled engine and by a naive reference
//! interpreter written here from the documented semantics. They must agree
//! on every decision and its reason, on the string API and the
//! interned-id API alike.
//!
//! The reference shares no code with the engine: it walks role definitions
//! by name, matches permission patterns as strings, scans every statement
//! in order, and evaluates conditions from the generated syntax tree (the
//! engine gets the same tree rendered as text, so its parser is exercised
//! too), computing hours and weekdays from Unix seconds by hand.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests report failure by panicking

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use tenancy_authz::*;
use tenancy_core::{RoleName, RoleSet, TenantId};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const HOST: [&str; 6] = [
    "projects:read",
    "projects:create",
    "projects:update",
    "projects:delete",
    "invoices:read",
    "invoices:pay",
];
const PATTERNS: [&str; 12] = [
    "*",
    "projects:*",
    "*:read",
    "invoices:*",
    "projects:read",
    "projects:update",
    "projects:delete",
    "invoices:pay",
    "roles:manage",
    "billing:*",
    "*:delete",
    "members:read",
];
const ACTIONS: [&str; 10] = [
    "projects:read",
    "projects:create",
    "projects:update",
    "projects:delete",
    "invoices:read",
    "invoices:pay",
    "roles:manage",
    "policies:read",
    "billing:read",
    "projects:archive", // not in the catalog
];
/// What no deny statement takes from an owner.
const BREAK_GLASS: [&str; 4] = [
    "policies:read",
    "policies:manage",
    "roles:read",
    "roles:manage",
];
const CUSTOM: [&str; 5] = ["r0", "r1", "r2", "r3", "r4"];
const BUILT_IN: [&str; 5] = ["owner", "admin", "member", "billing", "readonly"];
const HELD: [&str; 11] = [
    "owner", "admin", "member", "billing", "readonly", "r0", "r1", "r2", "r3", "r4", "ghost",
];
const TYPES: [&str; 3] = ["project", "invoice", "report"];
const STRINGS: [&str; 4] = ["ann", "bob", "eng", "p1"];
const NETS: [&str; 3] = ["10.0.0.0/8", "10.1.0.0/16", "192.168.0.0/16"];
const IPS: [[u8; 4]; 3] = [[10, 1, 2, 3], [10, 200, 0, 1], [192, 168, 5, 5]];
const TIMES: [i64; 4] = [1_893_837_600, 1_893_873_600, 1_894_278_000, 1_893_456_000];

// ------------------------------------------------------------ the model

#[derive(Debug, Clone, Copy, PartialEq)]
enum Path {
    PrincipalId,
    ResourceType,
    ResourceId,
    Level,
    Dept,
    Suspended,
    Owner,
    ResourceLevel,
    Frozen,
    Tags,
    Ip,
    Time,
    Missing,
}

impl Path {
    fn text(self) -> &'static str {
        match self {
            Path::PrincipalId => "principal.id",
            Path::ResourceType => "resource.type",
            Path::ResourceId => "resource.id",
            Path::Level => "principal.level",
            Path::Dept => "principal.dept",
            Path::Suspended => "principal.suspended",
            Path::Owner => "resource.owner",
            Path::ResourceLevel => "resource.level",
            Path::Frozen => "resource.frozen",
            Path::Tags => "resource.tags",
            Path::Ip => "context.ip",
            Path::Time => "context.time",
            Path::Missing => "principal.nope",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Contains,
    StartsWith,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::In => "in",
            Op::Contains => "contains",
            Op::StartsWith => "starts_with",
        }
    }
}

#[derive(Debug, Clone)]
enum Operand {
    Int(i64),
    Str(&'static str),
    Path(Path),
    Strs(Vec<&'static str>),
    Ints(Vec<i64>),
    Net(&'static str),
    Time(i64),
    Hour(Path),
    Weekday(Path),
}

#[derive(Debug, Clone)]
enum Cond {
    Lit(bool),
    Attr(Path),
    Has(Path),
    Not(Box<Cond>),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Cmp(Op, Operand, Operand),
}

fn time_text(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

fn render_operand(o: &Operand) -> String {
    match o {
        Operand::Int(i) => i.to_string(),
        Operand::Str(s) => format!("{s:?}"),
        Operand::Path(p) => p.text().to_owned(),
        Operand::Strs(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Operand::Ints(items) => format!(
            "[{}]",
            items
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Operand::Net(n) => format!("cidr({n:?})"),
        Operand::Time(t) => format!("time({:?})", time_text(*t)),
        Operand::Hour(p) => format!("hour({})", p.text()),
        Operand::Weekday(p) => format!("weekday({})", p.text()),
    }
}

fn render(c: &Cond) -> String {
    match c {
        Cond::Lit(b) => b.to_string(),
        Cond::Attr(p) => p.text().to_owned(),
        Cond::Has(p) => format!("has({})", p.text()),
        Cond::Not(inner) => format!("!({})", render(inner)),
        Cond::And(items) => format!(
            "({})",
            items.iter().map(render).collect::<Vec<_>>().join(" && ")
        ),
        Cond::Or(items) => format!(
            "({})",
            items.iter().map(render).collect::<Vec<_>>().join("\n || ")
        ),
        Cond::Cmp(op, l, r) => format!("{} {} {}", render_operand(l), op.text(), render_operand(r)),
    }
}

#[derive(Debug, Clone)]
struct StatementModel {
    allow: bool,
    actions: Vec<&'static str>,
    types: Vec<&'static str>,
    roles: Vec<&'static str>,
    condition: Option<Cond>,
}

#[derive(Debug, Clone)]
struct RoleModel {
    name: &'static str,
    patterns: Vec<&'static str>,
    inherits: Vec<&'static str>,
}

#[derive(Debug, Clone, PartialEq)]
enum RV {
    B(bool),
    I(i64),
    S(String),
    L(Vec<RV>),
    Ip([u8; 4]),
    Net([u8; 4], u8),
    T(i64),
}

#[derive(Debug, Clone)]
struct RequestModel {
    principal_id: &'static str,
    roles: Vec<&'static str>,
    scopes: Option<Vec<&'static str>>,
    principal_elsewhere: bool,
    resource_elsewhere: Option<bool>,
    action: &'static str,
    resource_type: &'static str,
    resource_id: Option<&'static str>,
    attrs: HashMap<&'static str, RV>,
}

// ------------------------------------------------------------ strategies

fn path() -> impl Strategy<Value = Path> {
    prop::sample::select(vec![
        Path::PrincipalId,
        Path::ResourceType,
        Path::ResourceId,
        Path::Level,
        Path::Dept,
        Path::Suspended,
        Path::Owner,
        Path::ResourceLevel,
        Path::Frozen,
        Path::Tags,
        Path::Ip,
        Path::Time,
        Path::Missing,
    ])
}

fn operand() -> impl Strategy<Value = Operand> {
    prop_oneof![
        (-2i64..6).prop_map(Operand::Int),
        prop::sample::select(STRINGS.to_vec()).prop_map(Operand::Str),
        path().prop_map(Operand::Path),
        path().prop_map(Operand::Path),
        prop::collection::vec(prop::sample::select(STRINGS.to_vec()), 0..3).prop_map(Operand::Strs),
        prop::collection::vec(0i64..5, 0..3).prop_map(Operand::Ints),
        prop::sample::select(NETS.to_vec()).prop_map(Operand::Net),
        prop::sample::select(TIMES.to_vec()).prop_map(Operand::Time),
        path().prop_map(Operand::Hour),
        path().prop_map(Operand::Weekday),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop::sample::select(vec![
        Op::Eq,
        Op::Ne,
        Op::Lt,
        Op::Le,
        Op::Gt,
        Op::Ge,
        Op::In,
        Op::Contains,
        Op::StartsWith,
    ])
}

/// Comparisons whose operands have fitting types, so they decide more
/// often than they err.
fn typed_comparison() -> impl Strategy<Value = Cond> {
    let ordering = prop::sample::select(vec![Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge]);
    prop_oneof![
        (
            ordering.clone(),
            prop::sample::select(vec![Path::Level, Path::ResourceLevel]),
            -1i64..6
        )
            .prop_map(|(o, p, i)| Cond::Cmp(o, Operand::Path(p), Operand::Int(i))),
        (ordering.clone(), 0i64..24).prop_map(|(o, h)| Cond::Cmp(
            o,
            Operand::Hour(Path::Time),
            Operand::Int(h)
        )),
        (ordering.clone(), 1i64..8).prop_map(|(o, d)| Cond::Cmp(
            o,
            Operand::Weekday(Path::Time),
            Operand::Int(d)
        )),
        (ordering.clone(), prop::sample::select(TIMES.to_vec())).prop_map(|(o, t)| Cond::Cmp(
            o,
            Operand::Path(Path::Time),
            Operand::Time(t)
        )),
        (ordering, prop::sample::select(STRINGS.to_vec())).prop_map(|(o, s)| Cond::Cmp(
            o,
            Operand::Path(Path::Dept),
            Operand::Str(s)
        )),
        Just(Cond::Cmp(
            Op::Eq,
            Operand::Path(Path::Owner),
            Operand::Path(Path::PrincipalId)
        )),
        prop::sample::select(NETS.to_vec()).prop_map(|n| Cond::Cmp(
            Op::In,
            Operand::Path(Path::Ip),
            Operand::Net(n)
        )),
        prop::collection::vec(prop::sample::select(STRINGS.to_vec()), 0..3)
            .prop_map(|l| Cond::Cmp(Op::In, Operand::Path(Path::Dept), Operand::Strs(l))),
        prop::sample::select(STRINGS.to_vec()).prop_map(|s| Cond::Cmp(
            Op::Contains,
            Operand::Path(Path::Tags),
            Operand::Str(s)
        )),
        prop::sample::select(vec!["a", "b", "p", "an"]).prop_map(|s| Cond::Cmp(
            Op::StartsWith,
            Operand::Path(Path::PrincipalId),
            Operand::Str(s)
        )),
    ]
}

fn condition() -> impl Strategy<Value = Cond> {
    let leaf = prop_oneof![
        1 => any::<bool>().prop_map(Cond::Lit),
        2 => path().prop_map(Cond::Attr),
        1 => path().prop_map(Cond::Has),
        3 => (op(), operand(), operand()).prop_map(|(o, l, r)| Cond::Cmp(o, l, r)),
        6 => typed_comparison(),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|c| Cond::Not(Box::new(c))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Cond::And),
            prop::collection::vec(inner, 2..4).prop_map(Cond::Or),
        ]
    })
}

fn roles() -> impl Strategy<Value = Vec<RoleModel>> {
    prop::collection::vec(
        (
            prop::collection::vec(prop::sample::select(PATTERNS.to_vec()), 0..3),
            prop::collection::vec(0usize..10, 0..3),
        ),
        0..=5,
    )
    .prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (patterns, parents))| {
                // Parents: built-ins and earlier custom roles, so no cycles.
                let candidates: Vec<&'static str> =
                    BUILT_IN.iter().chain(CUSTOM[..i].iter()).copied().collect();
                let mut inherits: Vec<&'static str> = parents
                    .into_iter()
                    .map(|p| candidates[p % candidates.len()])
                    .collect();
                inherits.sort_unstable();
                inherits.dedup();
                RoleModel {
                    name: CUSTOM[i],
                    patterns,
                    inherits,
                }
            })
            .collect()
    })
}

fn statements() -> impl Strategy<Value = Vec<Vec<StatementModel>>> {
    let statement = (
        any::<bool>(),
        prop::collection::vec(prop::sample::select(PATTERNS.to_vec()), 1..3),
        prop::collection::vec(prop::sample::select(TYPES.to_vec()), 0..2),
        prop::collection::vec(prop::sample::select(HELD.to_vec()), 0..2),
        prop::option::weighted(0.8, condition()),
    )
        .prop_map(|(allow, actions, types, roles, condition)| StatementModel {
            allow,
            actions,
            types,
            roles,
            condition,
        });
    prop::collection::vec(prop::collection::vec(statement, 0..4), 0..3)
}

fn rv() -> impl Strategy<Value = Option<RV>> {
    prop::option::weighted(0.85, Just(()))
        .prop_flat_map(|_| Just(None::<RV>))
        .boxed()
}

fn request() -> impl Strategy<Value = RequestModel> {
    let _ = rv;
    (
        prop::sample::select(STRINGS.to_vec()),
        prop::collection::vec(prop::sample::select(HELD.to_vec()), 1..4),
        prop::option::weighted(
            0.2,
            prop::collection::vec(prop::sample::select(PATTERNS.to_vec()), 0..3),
        ),
        prop::sample::select(vec![
            false, false, false, false, false, false, false, false, false, true,
        ]),
        prop::sample::select(vec![
            None,
            Some(false),
            Some(false),
            Some(false),
            Some(true),
        ]),
        prop::sample::select(ACTIONS.to_vec()),
        prop::sample::select(TYPES.to_vec()),
        prop::option::of(prop::sample::select(STRINGS.to_vec())),
        (
            prop::option::weighted(0.8, 0i64..5),
            prop::option::weighted(0.8, prop::sample::select(STRINGS.to_vec())),
            prop::option::weighted(0.7, any::<bool>()),
            prop::option::weighted(0.8, prop::sample::select(STRINGS.to_vec())),
            prop::option::weighted(0.8, 0i64..5),
            prop::option::weighted(0.6, any::<bool>()),
            prop::option::weighted(
                0.7,
                prop::collection::vec(prop::sample::select(STRINGS.to_vec()), 0..3),
            ),
            prop::option::weighted(0.8, prop::sample::select(IPS.to_vec())),
            prop::option::weighted(0.8, prop::sample::select(TIMES.to_vec())),
        ),
    )
        .prop_map(
            |(
                principal_id,
                roles,
                scopes,
                principal_elsewhere,
                resource_elsewhere,
                action,
                resource_type,
                resource_id,
                a,
            )| {
                let mut attrs = HashMap::new();
                let (level, dept, suspended, owner, rlevel, frozen, tags, ip, time) = a;
                let mut put = |k: &'static str, v: Option<RV>| {
                    if let Some(v) = v {
                        attrs.insert(k, v);
                    }
                };
                put("principal.level", level.map(RV::I));
                put("principal.dept", dept.map(|s| RV::S(s.into())));
                put("principal.suspended", suspended.map(RV::B));
                put("resource.owner", owner.map(|s| RV::S(s.into())));
                put("resource.level", rlevel.map(RV::I));
                put("resource.frozen", frozen.map(RV::B));
                put(
                    "resource.tags",
                    tags.map(|t| RV::L(t.into_iter().map(|s| RV::S(s.into())).collect())),
                );
                put("context.ip", ip.map(RV::Ip));
                put("context.time", time.map(RV::T));
                RequestModel {
                    principal_id,
                    roles,
                    scopes,
                    principal_elsewhere,
                    resource_elsewhere,
                    action,
                    resource_type,
                    resource_id,
                    attrs,
                }
            },
        )
}

// ------------------------------------------------------------ the reference

fn pattern_matches(pattern: &str, permission: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let (pr, pa) = pattern.split_once(':').unwrap();
    let (r, a) = permission.split_once(':').unwrap();
    (pr == "*" || pr == r) && (pa == "*" || pa == a)
}

struct Reference<'a> {
    catalog: Vec<String>,
    roles: Vec<(String, Vec<String>, Vec<String>)>,
    policies: &'a [Vec<StatementModel>],
}

impl Reference<'_> {
    fn role(&self, name: &str) -> Option<&(String, Vec<String>, Vec<String>)> {
        self.roles.iter().find(|(n, _, _)| n == name)
    }

    fn grants(&self, role: &str, permission: &str) -> bool {
        match self.role(role) {
            None => false,
            Some((_, patterns, inherits)) => {
                patterns.iter().any(|p| pattern_matches(p, permission))
                    || inherits
                        .iter()
                        .any(|parent| self.grants(parent, permission))
            }
        }
    }

    fn reaches(&self, role: &str, target: &str) -> bool {
        match self.role(role) {
            None => false,
            Some((name, _, inherits)) => {
                name == target || inherits.iter().any(|parent| self.reaches(parent, target))
            }
        }
    }

    fn decide(&self, req: &RequestModel) -> (bool, Reason) {
        if req.principal_elsewhere {
            return (false, Reason::PrincipalInOtherTenant);
        }
        if req.resource_elsewhere == Some(true) {
            return (false, Reason::ResourceInOtherTenant);
        }
        if !self.catalog.iter().any(|p| p == req.action) {
            return (false, Reason::UnknownAction);
        }
        if let Some(scopes) = &req.scopes
            && !scopes.iter().any(|s| pattern_matches(s, req.action))
        {
            return (false, Reason::OutsideScopes);
        }
        let applies = |s: &StatementModel| {
            s.actions.iter().any(|a| pattern_matches(a, req.action))
                && (s.types.is_empty() || s.types.contains(&req.resource_type))
                && (s.roles.is_empty()
                    || req
                        .roles
                        .iter()
                        .any(|held| s.roles.iter().any(|target| self.reaches(held, target))))
        };
        let mut set_aside = false;
        for statement in self.policies.iter().flatten() {
            if !statement.allow
                && applies(statement)
                && statement
                    .condition
                    .as_ref()
                    .is_none_or(|c| eval(c, req) != Ok(false))
            {
                // Break-glass: no deny statement keeps an owner from
                // reading or managing policies and roles.
                if req.roles.contains(&"owner") && BREAK_GLASS.contains(&req.action) {
                    set_aside = true;
                    break;
                }
                return (false, Reason::DenyStatement);
            }
        }
        let allowed = |reason| {
            if set_aside {
                (true, Reason::OwnerBreakGlass)
            } else {
                (true, reason)
            }
        };
        if req.roles.iter().any(|r| self.grants(r, req.action)) {
            return allowed(Reason::Role);
        }
        for statement in self.policies.iter().flatten() {
            if statement.allow
                && applies(statement)
                && statement
                    .condition
                    .as_ref()
                    .is_none_or(|c| eval(c, req) == Ok(true))
            {
                return allowed(Reason::AllowStatement);
            }
        }
        (false, Reason::NothingGrants)
    }
}

fn attr(path: Path, req: &RequestModel) -> Result<RV, ()> {
    match path {
        Path::PrincipalId => Ok(RV::S(req.principal_id.into())),
        Path::ResourceType => Ok(RV::S(req.resource_type.into())),
        Path::ResourceId => req.resource_id.map(|s| RV::S(s.into())).ok_or(()),
        other => req.attrs.get(other.text()).cloned().ok_or(()),
    }
}

fn value(o: &Operand, req: &RequestModel) -> Result<RV, ()> {
    Ok(match o {
        Operand::Int(i) => RV::I(*i),
        Operand::Str(s) => RV::S((*s).into()),
        Operand::Path(p) => attr(*p, req)?,
        Operand::Strs(items) => RV::L(items.iter().map(|s| RV::S((*s).into())).collect()),
        Operand::Ints(items) => RV::L(items.iter().map(|i| RV::I(*i)).collect()),
        Operand::Net(text) => {
            let (addr, prefix) = text.split_once('/').unwrap();
            let octets = addr.parse::<Ipv4Addr>().unwrap().octets();
            RV::Net(octets, prefix.parse().unwrap())
        }
        Operand::Time(t) => RV::T(*t),
        Operand::Hour(p) => match attr(*p, req)? {
            RV::T(secs) => RV::I(secs.rem_euclid(86_400) / 3600),
            _ => return Err(()),
        },
        Operand::Weekday(p) => match attr(*p, req)? {
            // 1970-01-01 was a Thursday (4, counting Monday as 1).
            RV::T(secs) => RV::I((secs.div_euclid(86_400) + 3).rem_euclid(7) + 1),
            _ => return Err(()),
        },
    })
}

fn in_net(ip: [u8; 4], net: [u8; 4], prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    u32::from_be_bytes(ip) & mask == u32::from_be_bytes(net) & mask
}

fn compare(op: Op, l: RV, r: RV) -> Result<bool, ()> {
    match op {
        Op::Eq => Ok(l == r),
        Op::Ne => Ok(l != r),
        Op::Lt | Op::Le | Op::Gt | Op::Ge => {
            let ord = match (&l, &r) {
                (RV::I(a), RV::I(b)) => a.cmp(b),
                (RV::T(a), RV::T(b)) => a.cmp(b),
                (RV::S(a), RV::S(b)) => a.cmp(b),
                _ => return Err(()),
            };
            Ok(match op {
                Op::Lt => ord.is_lt(),
                Op::Le => ord.is_le(),
                Op::Gt => ord.is_gt(),
                _ => ord.is_ge(),
            })
        }
        Op::In => match (l, r) {
            (x, RV::L(items)) => Ok(items.contains(&x)),
            (RV::Ip(ip), RV::Net(net, prefix)) => Ok(in_net(ip, net, prefix)),
            _ => Err(()),
        },
        Op::Contains => match (l, r) {
            (RV::L(items), x) => Ok(items.contains(&x)),
            (RV::S(a), RV::S(b)) => Ok(a.contains(&b)),
            _ => Err(()),
        },
        Op::StartsWith => match (l, r) {
            (RV::S(a), RV::S(b)) => Ok(a.starts_with(&b)),
            _ => Err(()),
        },
    }
}

fn eval(c: &Cond, req: &RequestModel) -> Result<bool, ()> {
    match c {
        Cond::Lit(b) => Ok(*b),
        Cond::Attr(p) => match attr(*p, req)? {
            RV::B(b) => Ok(b),
            _ => Err(()),
        },
        Cond::Has(p) => Ok(attr(*p, req).is_ok()),
        Cond::Not(inner) => eval(inner, req).map(|b| !b),
        Cond::And(items) => {
            for item in items {
                if !eval(item, req)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Cond::Or(items) => {
            for item in items {
                if eval(item, req)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Cond::Cmp(op, l, r) => {
            let l = value(l, req)?;
            let r = value(r, req)?;
            compare(*op, l, r)
        }
    }
}

// ------------------------------------------------------------ the engine side

fn to_value(v: &RV) -> Value {
    match v {
        RV::B(b) => Value::Bool(*b),
        RV::I(i) => Value::Int(*i),
        RV::S(s) => Value::Str(s.as_str().into()),
        RV::L(items) => Value::List(items.iter().map(to_value).collect()),
        RV::Ip(o) => Value::Ip(IpAddr::from(*o)),
        RV::Net(o, p) => Value::Cidr(Cidr::new(IpAddr::from(*o), *p).unwrap()),
        RV::T(t) => Value::Time(OffsetDateTime::from_unix_timestamp(*t).unwrap()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_the_reference(
        role_models in roles(),
        policy_models in statements(),
        requests in prop::collection::vec(request(), 8),
    ) {
        let catalog = Catalog::new(HOST).unwrap();
        let engine = Engine::new(catalog.clone());
        let custom: Vec<RoleDefinition> = role_models
            .iter()
            .map(|r| {
                let mut role = RoleDefinition::new(RoleName::new(r.name).unwrap());
                role.permissions = r.patterns.iter().map(|p| p.parse().unwrap()).collect();
                role.inherits = r.inherits.iter().map(|p| RoleName::new(*p).unwrap()).collect();
                role
            })
            .collect();
        let policies: Vec<Policy> = policy_models
            .iter()
            .enumerate()
            .map(|(i, statements)| {
                let mut document = PolicyDocument::new(PolicyId::new(format!("p{i}")).unwrap());
                for s in statements {
                    let mut statement = StatementDocument::new(
                        if s.allow { Effect::Allow } else { Effect::Deny },
                        s.actions.iter().map(|a| a.parse().unwrap()),
                    )
                    .with_resource_types(s.types.iter().copied())
                    .with_roles(s.roles.iter().map(|r| RoleName::new(*r).unwrap()));
                    statement.condition = s.condition.as_ref().map(render);
                    document = document.with_statement(statement);
                }
                Policy::new(document, &catalog).unwrap()
            })
            .collect();
        let tenant = TenantId::new();
        let authorizer = engine.compile(tenant, &custom, &policies).unwrap();

        let reference = Reference {
            catalog: catalog.permissions().iter().map(|p| p.to_string()).collect(),
            roles: engine
                .built_ins()
                .iter()
                .chain(custom.iter())
                .map(|r| {
                    (
                        r.name.to_string(),
                        r.permissions.iter().map(|p| p.to_string()).collect(),
                        r.inherits.iter().map(|p| p.to_string()).collect(),
                    )
                })
                .collect(),
            policies: &policy_models,
        };

        let elsewhere = TenantId::new();
        for req in &requests {
            let mut principal = Principal::new(
                PrincipalKind::User,
                req.principal_id,
                if req.principal_elsewhere { elsewhere } else { tenant },
                RoleSet::parse(&req.roles).unwrap(),
            );
            if let Some(scopes) = &req.scopes {
                principal = principal.with_scopes(scopes.iter().map(|s| s.parse().unwrap()));
            }
            let mut resource = Resource::new(req.resource_type);
            if let Some(id) = req.resource_id {
                resource = resource.with_id(id);
            }
            match req.resource_elsewhere {
                Some(true) => resource = resource.in_tenant(elsewhere),
                Some(false) => resource = resource.in_tenant(tenant),
                None => {}
            }
            let mut context = Attributes::new();
            for (name, v) in &req.attrs {
                let (scope, key) = name.split_once('.').unwrap();
                let key = AttrKey::new(key).unwrap();
                match scope {
                    "principal" => principal = principal.with_attribute(key, to_value(v)),
                    "resource" => resource = resource.with_attribute(key, to_value(v)),
                    _ => context.insert(key, to_value(v)),
                }
            }
            let request = AuthzRequest::new(&principal, req.action, &resource).with_context(&context);
            let decision = authorizer.check(&request);
            let expected = reference.decide(req);
            prop_assert_eq!(
                (decision.allowed(), decision.reason()),
                expected,
                "request {:?}\nexplained: {}",
                req,
                authorizer.explain(&request)
            );
            let explained = authorizer.explain(&request);
            prop_assert_eq!((explained.allowed, explained.reason), expected);
            if let Some(id) = authorizer.permission_id(req.action) {
                let prepared = authorizer.prepare(&principal);
                prop_assert_eq!(
                    authorizer.check_prepared(&prepared, id, &resource, &context),
                    decision
                );
            }
        }
    }

    /// Every generated condition parses, and renders back to a condition
    /// that evaluates alike (the parser accepts its own language).
    #[test]
    fn generated_conditions_parse(c in condition()) {
        let text = render(&c);
        prop_assert!(Condition::parse(&text).is_ok(), "{}", text);
    }
}
