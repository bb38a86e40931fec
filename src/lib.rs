#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

#[doc(inline)]
pub use tenancy_core::*;

/// Authorization: the RBAC + ABAC policy engine (feature `authz`).
#[cfg(feature = "authz")]
#[doc(inline)]
pub use tenancy_authz as authz;
