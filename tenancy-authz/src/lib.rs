//! Authorization for the tenancy SDK.
//!
//! This crate will hold `resource:action` permissions, per-tenant roles with
//! inheritance, and an RBAC + ABAC policy engine that compiles each tenant's
//! policies into an index and explains every decision. It is not implemented
//! yet; the membership role names it gives meaning to live in [`tenancy_core`].
#![forbid(unsafe_code)]

pub use tenancy_core;
