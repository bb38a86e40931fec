#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod admin;
mod cache;
pub mod condition;
mod engine;
pub mod harness;
mod holders;
mod limits;
mod permission;
mod policy;
mod request;
pub mod role;
pub mod store;
mod table;
#[cfg(feature = "testkit")]
pub mod testkit;
mod value;

pub use admin::{AdminError, AuthzAdmin, RoleUse};
pub use cache::{CacheConfig, CacheError, Freshness, MalformedNotification, PolicyCache};
pub use condition::{Condition, ConditionError, EvalError};
pub use engine::{
    Authorizer, Decision, Engine, EngineBuilder, Explain, Explanation, PreparedPrincipal, Reason,
};
pub use holders::{DirectoryRoleHolders, RoleHolders};
pub use limits::{LimitError, Limits, WriteRate};
pub use permission::{
    Catalog, Permission, PermissionEnum, PermissionError, PermissionId, PermissionPattern, sdk,
};
pub use policy::{
    Effect, MAX_STATEMENTS, Policy, PolicyDocument, PolicyError, PolicyId, StatementDocument,
};
pub use request::{AuthzRequest, Principal, PrincipalKind, Resource};
pub use role::{RoleDefinition, RoleError};
#[cfg(feature = "memory")]
pub use store::MemoryAuthzStore;
pub use store::{AuthzStoreError, Epoch, PolicyStore, RoleStore, Versioned};
pub use value::{
    AttrKey, AttrNameError, Attributes, Cidr, CidrParseError, MAX_ATTRIBUTE_NAME_LEN, Value,
};
