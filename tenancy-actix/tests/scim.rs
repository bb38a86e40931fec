//! The SCIM scenarios against an actix-web app, in a test binary of their
//! own: each app's server (and its Postgres pools) lives until the binary
//! exits, so one binary for every suite would hold too many connections.
// A test harness: failing to bind or start is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod common;

use common::start;

tenancy_scim::scim_scenarios!(start);
