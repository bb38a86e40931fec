//! Compiling one tenant's roles and policies into an [`Authorizer`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tenancy_core::{RoleName, TenantId};

use super::Engine;
use super::authorizer::{Authorizer, Buckets, CompiledRole, CompiledStatement};
use crate::permission::{Bits, sdk};
use crate::policy::{Effect, Policy};
use crate::role::{RoleDefinition, RoleError};
use crate::table::StrTable;

/// The permissions no deny statement takes from an owner, so that an owner
/// can always see and undo any policy or role (break-glass).
pub(crate) const BREAK_GLASS: [&str; 4] = [
    sdk::POLICIES_READ,
    sdk::POLICIES_MANAGE,
    sdk::ROLES_READ,
    sdk::ROLES_MANAGE,
];

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

static NEXT_AUTHORIZER: AtomicU64 = AtomicU64::new(1);

pub(super) fn compile(
    engine: &Engine,
    tenant_id: TenantId,
    custom: &[RoleDefinition],
    policies: &[Policy],
) -> Result<Authorizer, RoleError> {
    let catalog = engine.catalog().clone();
    let words = catalog.words();
    let mut definitions: Vec<RoleDefinition> = engine.built_ins().to_vec();
    for role in custom {
        if role.name.is_built_in() {
            return Err(RoleError::BuiltIn {
                role: role.name.clone(),
            });
        }
        role.validate(&catalog)?;
        definitions.push(role.clone());
    }
    let mut role_index: FastMap<Box<str>, u32> = FastMap::default();
    for (i, role) in definitions.iter().enumerate() {
        if role_index
            .insert(role.name.as_str().into(), i as u32)
            .is_some()
        {
            return Err(RoleError::Duplicate {
                role: role.name.clone(),
            });
        }
    }
    let role_words = definitions.len().div_ceil(64);
    let mut roles = Vec::with_capacity(definitions.len());
    for role in definitions {
        let mut parents = Vec::with_capacity(role.inherits.len());
        for parent in &role.inherits {
            match role_index.get(parent.as_str()) {
                Some(&p) => parents.push(p),
                None => {
                    return Err(RoleError::UnknownParent {
                        role: role.name.clone(),
                        parent: parent.clone(),
                    });
                }
            }
        }
        let mut direct = Bits::new(words);
        for pattern in &role.permissions {
            for id in catalog.expand(pattern) {
                direct.set(id.index());
            }
        }
        roles.push(CompiledRole {
            definition: role,
            parents,
            flat: direct.clone(),
            direct,
            closure: Bits::new(role_words),
        });
    }
    flatten(&mut roles)?;

    let mut resource_types: FastMap<Box<str>, u32> = FastMap::default();
    let mut statements = Vec::new();
    let mut deny_lists = vec![Vec::new(); catalog.len()];
    let mut allow_lists = vec![Vec::new(); catalog.len()];
    for (p, policy) in policies.iter().enumerate() {
        for (s, (statement, condition)) in policy.parts().enumerate() {
            let types = if statement.resource_types.is_empty() {
                None
            } else {
                Some(
                    statement
                        .resource_types
                        .iter()
                        .map(|t| {
                            let next = resource_types.len() as u32;
                            *resource_types.entry(t.as_str().into()).or_insert(next)
                        })
                        .collect(),
                )
            };
            let role_mask = if statement.roles.is_empty() {
                None
            } else {
                // Roles the tenant does not define match nobody.
                let mut mask = Bits::new(role_words);
                for name in &statement.roles {
                    if let Some(&r) = role_index.get(name.as_str()) {
                        mask.set(r as usize);
                    }
                }
                Some(mask)
            };
            let index = statements.len() as u32;
            let mut covered = Bits::new(words);
            for action in &statement.actions {
                for id in catalog.expand(action) {
                    covered.set(id.index());
                }
            }
            let lists = match statement.effect {
                Effect::Deny => &mut deny_lists,
                Effect::Allow => &mut allow_lists,
            };
            for id in covered.iter() {
                if let Some(list) = lists.get_mut(id) {
                    list.push(index);
                }
            }
            statements.push(CompiledStatement {
                policy: p as u32,
                index: s as u32,
                effect: statement.effect,
                resource_types: types,
                roles: role_mask,
                condition: condition.map(|c| Arc::clone(&c.expr)),
            });
        }
    }
    let owner = role_index.get(RoleName::OWNER.as_str()).copied();
    let mut break_glass = Bits::new(words);
    for permission in BREAK_GLASS {
        if let Some(id) = catalog.id(permission) {
            break_glass.set(id.index());
        }
    }
    let permission_count = catalog.len();
    let mut flat = Vec::with_capacity(roles.len() * words);
    for role in &roles {
        flat.extend_from_slice(role.flat.as_words());
    }
    // Both maps have unique keys already.
    let role_index = StrTable::from_unique(role_index.iter().map(|(k, &v)| (&**k, v)));
    let resource_types = StrTable::from_unique(resource_types.iter().map(|(k, &v)| (&**k, v)));
    Ok(Authorizer {
        serial: NEXT_AUTHORIZER.fetch_add(1, Ordering::Relaxed),
        tenant_id,
        epoch: None,
        owners_exempt: engine.owners_exempt(),
        deny: Buckets::build(catalog.len(), deny_lists),
        allow: Buckets::build(catalog.len(), allow_lists),
        catalog,
        roles,
        role_index,
        flat: flat.into(),
        words,
        permission_count,
        owner,
        break_glass,
        policies: policies.to_vec(),
        statements,
        resource_types,
    })
}

/// Flattens permissions and role closures through inheritance, rejecting
/// cycles with the cycle named.
fn flatten(roles: &mut [CompiledRole]) -> Result<(), RoleError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let n = roles.len();
    let mut marks = vec![Mark::New; n];
    let mut order = Vec::with_capacity(n);
    // Iterative depth-first search: a stack of (role, next parent to visit).
    for start in 0..n {
        if marks[start] != Mark::New {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::Active;
        while let Some(&mut (role, ref mut next)) = stack.last_mut() {
            let parents = &roles[role].parents;
            if *next < parents.len() {
                let parent = parents[*next] as usize;
                *next += 1;
                match marks[parent] {
                    Mark::New => {
                        marks[parent] = Mark::Active;
                        stack.push((parent, 0));
                    }
                    Mark::Active => {
                        let from = stack.iter().position(|&(r, _)| r == parent).unwrap_or(0);
                        let mut path: Vec<RoleName> = stack[from..]
                            .iter()
                            .map(|&(r, _)| roles[r].definition.name.clone())
                            .collect();
                        path.push(roles[parent].definition.name.clone());
                        return Err(RoleError::Cycle { path });
                    }
                    Mark::Done => {}
                }
            } else {
                marks[role] = Mark::Done;
                order.push(role);
                stack.pop();
            }
        }
    }
    // `order` lists parents before children.
    for role in order {
        let mut flat = roles[role].direct.clone();
        let mut closure = Bits::new(roles[role].closure.words());
        closure.set(role);
        let parents = roles[role].parents.clone();
        for parent in parents {
            flat.union_with(&roles[parent as usize].flat);
            closure.union_with(&roles[parent as usize].closure);
        }
        roles[role].flat = flat;
        roles[role].closure = closure;
    }
    Ok(())
}
