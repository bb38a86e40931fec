//! The SCIM scenarios against an actix-web app, in a test binary of their
//! own.
// A test harness: failing to bind or start is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod common;
mod serve;

use common::start;

tenancy_scim::scim_scenarios!(start);
