//! A [`Guard`] for the integrations' own tests of their guard layers.

use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use http::{HeaderName, HeaderValue};

use crate::guard::{Admission, Guard};
use crate::pipeline::RequestContext;
use crate::problem::{Problem, ProblemKind};

/// Admits `n` requests, each answered with `x-left` saying how many
/// remain, then refuses with a `429` carrying `x-left: 0`.
#[derive(Debug)]
pub struct Countdown(AtomicU32);

impl Countdown {
    /// Admits `n` requests.
    pub fn new(n: u32) -> Self {
        Self(AtomicU32::new(n))
    }
}

#[async_trait]
impl Guard for Countdown {
    fn name(&self) -> &str {
        "countdown"
    }

    async fn check(&self, _context: &RequestContext) -> Result<Admission, Problem> {
        let left = HeaderName::from_static("x-left");
        match self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        {
            Ok(before) => Ok(Admission::new().with_header(left, HeaderValue::from(before - 1))),
            Err(_) => Err(Problem::of(ProblemKind::RateLimited)
                .with_header(left, HeaderValue::from_static("0"))),
        }
    }
}
