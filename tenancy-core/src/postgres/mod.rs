//! Postgres backend.
