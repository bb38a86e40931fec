//! The condition parser must never panic, whatever the input: it returns a
//! condition or an error with a line and column inside the input. Whatever
//! parses must evaluate without panicking too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenancy_authz::{
    AttrKey, Attributes, Condition, Permission, PermissionPattern, Principal, PrincipalKind,
    Resource,
};
use tenancy_core::{RoleSet, TenantId};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Permission::new(text);
    let _ = PermissionPattern::new(text);
    match Condition::parse(text) {
        Ok(condition) => {
            let tenant = TenantId::from_uuid(uuid::Uuid::from_u128(1));
            let Ok(roles) = RoleSet::parse(["member"]) else {
                return;
            };
            let mut principal = Principal::new(PrincipalKind::User, "ann", tenant, roles);
            let mut resource = Resource::new("project").with_id("p1").in_tenant(tenant);
            let mut context = Attributes::new();
            if let (Ok(level), Ok(owner), Ok(ip)) =
                (AttrKey::new("level"), AttrKey::new("owner"), AttrKey::new("ip"))
            {
                principal = principal.with_attribute(level, 3);
                resource = resource.with_attribute(owner, "ann");
                context.insert(ip, std::net::IpAddr::from([10, 0, 0, 1]));
            }
            let _ = condition.evaluate(&principal, &resource, &context);
        }
        Err(error) => {
            let lines = text.split('\n').count() as u32;
            assert!(error.line >= 1 && error.line <= lines.max(1), "{error}");
            assert!(error.column >= 1, "{error}");
            let _ = error.to_string();
        }
    }
});
