//! Steps for tests: a simulated external DNS step and a recorder.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::step::{Step, StepContext, StepError, StepOutput};

/// A simulated external step: creates a DNS record named after the run's
/// `slug` input, the way a host's step would call a DNS provider.
///
/// It can fail transiently a number of times, fail permanently until
/// fixed, hang after creating the record (as a worker dying mid-step
/// would leave it), and take time; it counts creations, compensations and
/// how many attempts ran at once for one record. Idempotent like a real
/// step should be: a record that exists is returned, not made again.
#[derive(Debug, Default)]
pub struct SimulatedDns {
    records: Mutex<HashMap<String, String>>,
    creations: AtomicU32,
    compensations: AtomicU32,
    fail_times: AtomicU32,
    broken: AtomicBool,
    hang: AtomicBool,
    delay_ms: AtomicU32,
    entered: Notify,
    release: Notify,
    in_flight: Mutex<HashMap<String, u32>>,
    max_in_flight: AtomicU32,
}

impl SimulatedDns {
    /// The step's name.
    pub const NAME: &'static str = "dns";

    /// A working DNS.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The next `n` attempts fail transiently.
    pub fn fail_times(&self, n: u32) {
        self.fail_times.store(n, Ordering::SeqCst);
    }

    /// Every attempt fails permanently while `broken`.
    pub fn set_broken(&self, broken: bool) {
        self.broken.store(broken, Ordering::SeqCst);
    }

    /// While set, attempts create the record and then hang until
    /// [`SimulatedDns::release`] (or forever).
    pub fn set_hang(&self, hang: bool) {
        self.hang.store(hang, Ordering::SeqCst);
    }

    /// Lets one hanging attempt finish.
    pub fn release(&self) {
        self.release.notify_one();
    }

    /// Each attempt takes `delay` before answering.
    pub fn set_delay(&self, delay: StdDuration) {
        self.delay_ms.store(
            u32::try_from(delay.as_millis()).unwrap_or(u32::MAX),
            Ordering::SeqCst,
        );
    }

    /// Waits until an attempt hangs (created its record and stopped).
    pub async fn hanging(&self) {
        self.entered.notified().await;
    }

    /// The record of `slug`, if it exists.
    pub fn record(&self, slug: &str) -> Option<String> {
        self.records.lock().unwrap().get(slug).cloned()
    }

    /// How many records were ever created.
    pub fn creations(&self) -> u32 {
        self.creations.load(Ordering::SeqCst)
    }

    /// How many compensations removed a record.
    pub fn compensations(&self) -> u32 {
        self.compensations.load(Ordering::SeqCst)
    }

    /// The most attempts that ever ran at once for one record.
    pub fn max_in_flight(&self) -> u32 {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    fn enter(&self, slug: &str) {
        let mut map = self.in_flight.lock().unwrap();
        let n = map.entry(slug.to_owned()).or_default();
        *n += 1;
        self.max_in_flight.fetch_max(*n, Ordering::SeqCst);
    }

    fn leave(&self, slug: &str) {
        if let Some(n) = self.in_flight.lock().unwrap().get_mut(slug) {
            *n = n.saturating_sub(1);
        }
    }

    async fn attempt(&self, slug: &str) -> Result<StepOutput, StepError> {
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(StdDuration::from_millis(u64::from(delay))).await;
        }
        if self
            .fail_times
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StepError::transient("dns provider unavailable"));
        }
        if self.broken.load(Ordering::SeqCst) {
            return Err(StepError::permanent("dns zone rejected the record"));
        }
        let name = format!("{slug}.app.test");
        {
            let mut records = self.records.lock().unwrap();
            if !records.contains_key(slug) {
                records.insert(slug.to_owned(), name.clone());
                self.creations.fetch_add(1, Ordering::SeqCst);
            }
        }
        if self.hang.load(Ordering::SeqCst) {
            self.entered.notify_one();
            self.release.notified().await;
        }
        Ok(StepOutput::empty().with("dns_record", name))
    }
}

/// [`SimulatedDns`] as a step (shared, so the test keeps a handle).
#[async_trait]
impl Step for Arc<SimulatedDns> {
    fn name(&self) -> &str {
        SimulatedDns::NAME
    }

    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let slug = ctx.input_str("slug")?.to_owned();
        self.enter(&slug);
        let out = self.attempt(&slug).await;
        self.leave(&slug);
        out
    }

    async fn compensate(&self, ctx: &StepContext) -> Result<(), StepError> {
        let slug = ctx.input_str("slug")?;
        if self.records.lock().unwrap().remove(slug).is_some() {
            self.compensations.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// A step that only records, in one log shared by several recorders,
/// `run:NAME` and `undo:NAME` in the order they happen.
#[derive(Debug, Clone)]
pub struct Recorder {
    name: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    /// A recorder named `name` writing to `log`.
    pub fn new(name: &str, log: &Arc<Mutex<Vec<String>>>) -> Self {
        Self {
            name: name.to_owned(),
            log: log.clone(),
        }
    }
}

#[async_trait]
impl Step for Recorder {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, _ctx: &StepContext) -> Result<StepOutput, StepError> {
        self.log.lock().unwrap().push(format!("run:{}", self.name));
        Ok(StepOutput::empty().with(self.name.clone(), true))
    }

    async fn compensate(&self, _ctx: &StepContext) -> Result<(), StepError> {
        self.log.lock().unwrap().push(format!("undo:{}", self.name));
        Ok(())
    }
}
