//! The shared HTTP scenario suite against an actix-web app.
// A test harness: failing to bind or start is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

mod common;
mod serve;

use common::start;

tenancy_http::http_scenarios!(start);
tenancy_http::http_log_test!(start);
