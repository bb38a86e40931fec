//! Identity for the tenancy SDK.
//!
//! This crate will hold password hashing (argon2id) with lockout, JWT access
//! tokens signed with rotating keys and published as JWKS, sessions with
//! single-use refresh-token families, and tenant-scoped API keys, all over
//! store traits with in-memory and Postgres adapters. It is not implemented
//! yet; the identity types it builds on (`UserId`, `TenantId`, memberships)
//! live in [`tenancy_core`].
#![forbid(unsafe_code)]

pub use tenancy_core;
