//! [`Webhooks`]: endpoint management, delivery attempts, the circuit
//! breaker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tenancy_core::{
    AuditAction, AuditContext, Backend, Event, EventId, EventType, Metadata, NewAuditEvent,
    NewEvent, Page, PageRequest, PageSize, Target, TenantId,
};
use tenancy_jobs::{JobId, JobKind, JobStore, NewJob, Queue};
use time::OffsetDateTime;

use crate::endpoint::{
    AttemptOutcome, DEFAULT_MAX_ENDPOINTS, DeliveryAttempt, DeliveryId, Endpoint, EndpointId,
    EndpointStatus, EndpointUpdate, NewEndpoint, StoredSecrets, validate_description, validate_url,
};
use crate::error::WebhookError;
use crate::secret::{SecretCipher, WebhookSecret};
use crate::signing::signature_header;
use crate::ssrf::{CheckedResolver, TargetPolicy, TargetRefused, check_target};
use crate::store::{Purged, WebhookStore};

/// The job kind of delivery attempts.
pub const DELIVER_KIND: &str = "webhook.deliver";
/// The event type appended to a tenant's stream when the circuit breaker
/// pauses one of its endpoints.
pub const ENDPOINT_PAUSED: &str = "webhook.endpoint.paused";
/// Most skipped deliveries [`Webhooks::resume`] sends again.
pub const MAX_RESUME_REPLAY: usize = 1000;
/// Longest response excerpt kept in the delivery log, in bytes.
pub const MAX_EXCERPT_BYTES: usize = 1024;

/// How deliveries are made.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebhookConfig {
    /// Which addresses may be reached (default: public only).
    pub policy: TargetPolicy,
    /// Time limit of one request, answer included (default 10 s).
    pub timeout: Duration,
    /// Most bytes of an answer read (default 64 KiB); the rest is not read.
    pub max_response_bytes: usize,
    /// Delays before the second, third, … attempt; after the last one
    /// the delivery is dead. Default 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
    /// 10 h: eight attempts over about 27.5 hours.
    pub retry_schedule: Vec<Duration>,
    /// Consecutive failed attempts that, with [`Self::breaker_period`]
    /// without success, pause an endpoint (default 20).
    pub breaker_failures: u32,
    /// Time without success that, with [`Self::breaker_failures`]
    /// failures, pauses an endpoint (default 24 h).
    pub breaker_period: Duration,
    /// Most endpoints per tenant (default 20).
    pub max_endpoints: usize,
    /// How long the previous secret still signs after a rotation (default 24 h).
    pub rotation_grace: Duration,
    /// The job queue of delivery jobs (default `default`).
    pub queue: Queue,
    /// How long [`Webhooks::purge`] keeps delivery-log rows and kept
    /// events (default 30 days; never less than the retry schedule's
    /// total, so a delivery still being retried keeps its event).
    pub retention: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            policy: TargetPolicy::PublicOnly,
            timeout: Duration::from_secs(10),
            max_response_bytes: 64 * 1024,
            retry_schedule: [5, 300, 1800, 7200, 18_000, 36_000, 36_000]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            breaker_failures: 20,
            breaker_period: Duration::from_secs(24 * 3600),
            max_endpoints: DEFAULT_MAX_ENDPOINTS,
            rotation_grace: Duration::from_secs(24 * 3600),
            queue: Queue::default_queue(),
            retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl WebhookConfig {
    /// With a target policy.
    pub fn with_policy(mut self, policy: TargetPolicy) -> Self {
        self.policy = policy;
        self
    }
    /// With a request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// With a retry schedule.
    pub fn with_retry_schedule(mut self, schedule: Vec<Duration>) -> Self {
        self.retry_schedule = schedule;
        self
    }
    /// With circuit breaker thresholds.
    pub fn with_breaker(mut self, failures: u32, period: Duration) -> Self {
        self.breaker_failures = failures.max(1);
        self.breaker_period = period;
        self
    }
    /// With a per-tenant endpoint limit.
    pub fn with_max_endpoints(mut self, max: usize) -> Self {
        self.max_endpoints = max;
        self
    }
    /// With a rotation grace period.
    pub fn with_rotation_grace(mut self, grace: Duration) -> Self {
        self.rotation_grace = grace;
        self
    }
    /// With a retention period for [`Webhooks::purge`].
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }
    /// With a response read cap.
    pub fn with_max_response_bytes(mut self, max: usize) -> Self {
        self.max_response_bytes = max;
        self
    }
}

/// The payload of a delivery job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeliverJob {
    pub(crate) tenant_id: TenantId,
    pub(crate) endpoint_id: EndpointId,
    pub(crate) event_id: EventId,
    pub(crate) attempt: u32,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn WebhookStore>,
    pub(crate) jobs: Arc<dyn JobStore>,
    backend: Arc<dyn Backend>,
    cipher: SecretCipher,
    pub(crate) config: WebhookConfig,
    client: reqwest::Client,
    pub(crate) kind: JobKind,
}

/// Outgoing webhooks: manage a tenant's endpoints, and deliver its events
/// to them. Cheap to clone.
///
/// Events come in through [`Webhooks::sink`] (a `tenancy-events` sink the
/// relay feeds), which enqueues one delivery job per matching endpoint;
/// a `tenancy-jobs` worker with [`Webhooks::handler`] makes the attempts.
#[derive(Clone)]
pub struct Webhooks {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("config", &self.inner.config)
            .field("cipher", &self.inner.cipher)
            .finish_non_exhaustive()
    }
}

/// What one HTTP attempt gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sent {
    pub(crate) ok: bool,
    pub(crate) status_code: Option<u16>,
    pub(crate) latency_ms: Option<u64>,
    pub(crate) error: Option<String>,
    pub(crate) excerpt: Option<String>,
}

fn span(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

impl Webhooks {
    /// Webhooks over `store`, enqueuing into `jobs`, telling tenants of
    /// paused endpoints through `backend`'s outbox and audit log, with
    /// secrets encrypted by `cipher`.
    pub fn new(
        store: Arc<dyn WebhookStore>,
        jobs: Arc<dyn JobStore>,
        backend: Arc<dyn Backend>,
        cipher: SecretCipher,
        config: WebhookConfig,
    ) -> Result<Self, WebhookError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // No proxy from the environment (HTTP(S)_PROXY, ALL_PROXY): a
            // proxy resolves the target's name itself, past the checked
            // resolver below, and could reach internal names.
            .no_proxy()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .dns_resolver(Arc::new(CheckedResolver(config.policy)))
            .user_agent(concat!("tenancy-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::InvalidInput(format!("http client: {e}")))?;
        let kind = JobKind::new(DELIVER_KIND)?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                jobs,
                backend,
                cipher,
                config,
                client,
                kind,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &WebhookConfig {
        &self.inner.config
    }

    fn now(&self) -> OffsetDateTime {
        tenancy_core::truncate_to_micros(self.inner.jobs.now())
    }

    /// Checks an endpoint URL as it is registered: the URL's form, and
    /// its address under the target policy. An address the policy refuses
    /// (an IP literal, or a name resolving to one) is
    /// [`WebhookError::Refused`]; a name that does not resolve yet is
    /// accepted, since every delivery checks again.
    pub async fn check_url(&self, url: &str) -> Result<(), WebhookError> {
        let parsed = validate_url(self.inner.config.policy, url)?;
        match check_target(self.inner.config.policy, &parsed).await {
            Ok(_) | Err(TargetRefused::Unresolvable { .. }) => Ok(()),
            Err(refused) => {
                tracing::warn!(%refused, "webhook endpoint url refused by the target policy");
                Err(WebhookError::Refused(refused))
            }
        }
    }

    /// Creates an endpoint; returns it with its secret, shown this once.
    /// The URL is checked by [`Webhooks::check_url`].
    pub async fn create_endpoint(
        &self,
        tenant_id: TenantId,
        new: NewEndpoint,
    ) -> Result<(Endpoint, WebhookSecret), WebhookError> {
        self.check_url(&new.url).await?;
        validate_description(&new.description)?;
        let now = self.now();
        let endpoint = Endpoint {
            id: EndpointId::new(),
            tenant_id,
            url: new.url,
            description: new.description,
            event_types: new.event_types,
            status: EndpointStatus::Active,
            consecutive_failures: 0,
            healthy_at: now,
            created_at: now,
            updated_at: now,
        };
        let secret = WebhookSecret::generate();
        let sealed = StoredSecrets::new(self.inner.cipher.seal(&secret)?);
        self.inner
            .store
            .create_endpoint(&endpoint, &sealed, self.inner.config.max_endpoints)
            .await?;
        Ok((endpoint, secret))
    }

    /// One endpoint of the tenant.
    pub async fn endpoint(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
    ) -> Result<Endpoint, WebhookError> {
        self.inner.store.get_endpoint(tenant_id, id).await
    }

    /// The tenant's endpoints.
    pub async fn endpoints(
        &self,
        tenant_id: TenantId,
        page: &PageRequest,
    ) -> Result<Page<Endpoint>, WebhookError> {
        self.inner.store.list_endpoints(tenant_id, page).await
    }

    /// Changes an endpoint's URL, description, event types, or disables
    /// (re-enables) it.
    pub async fn update_endpoint(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
        update: EndpointUpdate,
    ) -> Result<Endpoint, WebhookError> {
        let mut endpoint = self.inner.store.get_endpoint(tenant_id, id).await?;
        if let Some(url) = update.url {
            self.check_url(&url).await?;
            endpoint.url = url;
        }
        if let Some(description) = update.description {
            validate_description(&description)?;
            endpoint.description = description;
        }
        if let Some(types) = update.event_types {
            endpoint.event_types = types;
        }
        match update.disabled {
            Some(true) => endpoint.status = EndpointStatus::Disabled,
            Some(false) if endpoint.status == EndpointStatus::Disabled => {
                endpoint.status = EndpointStatus::Active;
            }
            _ => {}
        }
        endpoint.updated_at = self.now();
        self.inner.store.update_endpoint(&endpoint).await?;
        self.inner.store.get_endpoint(tenant_id, id).await
    }

    /// Deletes an endpoint; pending attempts to it end without a request.
    pub async fn delete_endpoint(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
    ) -> Result<(), WebhookError> {
        self.inner.store.delete_endpoint(tenant_id, id).await
    }

    /// Replaces the endpoint's secret; returns the new one, shown this
    /// once. The previous secret still signs (a second signature in the
    /// header) for [`WebhookConfig::rotation_grace`], so the tenant can
    /// switch its receiver without losing deliveries. A rotation within
    /// the grace period of the last one drops the oldest secret.
    pub async fn rotate_secret(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
    ) -> Result<WebhookSecret, WebhookError> {
        let stored = self.inner.store.secrets(tenant_id, id).await?;
        let secret = WebhookSecret::generate();
        let until = self.now() + span(self.inner.config.rotation_grace);
        let rotated = StoredSecrets {
            current: self.inner.cipher.seal(&secret)?,
            previous: Some((stored.current, until)),
        };
        self.inner
            .store
            .set_secrets(tenant_id, id, &rotated)
            .await?;
        Ok(secret)
    }

    /// Makes a paused endpoint active again, with its failure count reset,
    /// and sends again the deliveries skipped while it was paused.
    ///
    /// Deliveries that came due during the pause were logged as
    /// [`AttemptOutcome::Skipped`]; resuming enqueues each of their events
    /// once more as a new delivery (attempt 1, the whole retry schedule),
    /// at most [`MAX_RESUME_REPLAY`] of them, the most recent first. Older
    /// ones stay skipped: send those still wanted with
    /// [`Webhooks::redeliver`]. Resuming an active endpoint replays nothing.
    pub async fn resume(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
    ) -> Result<Endpoint, WebhookError> {
        let before = self.inner.store.get_endpoint(tenant_id, id).await?;
        let resumed = self.inner.store.resume(tenant_id, id, self.now()).await?;
        if let EndpointStatus::Paused { since, .. } = before.status {
            let replayed = self.replay_skipped(tenant_id, id, since).await?;
            if replayed > 0 {
                tracing::info!(endpoint = %id, tenant = %tenant_id, replayed, "webhook deliveries skipped while paused enqueued again");
            }
        }
        Ok(resumed)
    }

    /// Enqueues again the events of deliveries to `endpoint_id` skipped
    /// since `since`, newest first, at most [`MAX_RESUME_REPLAY`]; returns
    /// how many. Reads at most ten pages of the log.
    async fn replay_skipped(
        &self,
        tenant_id: TenantId,
        endpoint_id: EndpointId,
        since: OffsetDateTime,
    ) -> Result<usize, WebhookError> {
        let mut seen = std::collections::HashSet::new();
        let mut page = PageRequest::first(PageSize::MAX);
        'pages: for _ in 0..10 {
            let log = self
                .inner
                .store
                .list_attempts(tenant_id, endpoint_id, &page)
                .await?;
            for row in &log.items {
                if row.at < since || seen.len() >= MAX_RESUME_REPLAY {
                    break 'pages;
                }
                if row.outcome == AttemptOutcome::Skipped && seen.insert(row.event_id) {
                    self.enqueue_first_ids(tenant_id, endpoint_id, row.event_id)
                        .await?;
                }
            }
            match log.next {
                Some(cursor) => page = page.after(cursor),
                None => break,
            }
        }
        Ok(seen.len())
    }

    /// Deletes, across every tenant, the delivery-log rows older than
    /// [`WebhookConfig::retention`] and the kept events older than it that
    /// no remaining log row refers to; returns what was deleted. Call it
    /// periodically (a `tenancy-jobs` periodic job, a cron): nothing else
    /// removes them. The period kept is never shorter than the retry
    /// schedule's total. An attempt whose event was purged before it ran
    /// ends without a request.
    pub async fn purge(&self) -> Result<Purged, WebhookError> {
        let retries: Duration = self.inner.config.retry_schedule.iter().sum();
        let keep = self.inner.config.retention.max(retries);
        let before = self.now() - span(keep);
        let purged = self.inner.store.purge(before).await?;
        tracing::info!(
            deliveries = purged.deliveries,
            messages = purged.messages,
            "webhook delivery log purged"
        );
        Ok(purged)
    }

    /// An endpoint's delivery log, newest first.
    pub async fn deliveries(
        &self,
        tenant_id: TenantId,
        endpoint_id: EndpointId,
        page: &PageRequest,
    ) -> Result<Page<DeliveryAttempt>, WebhookError> {
        self.inner
            .store
            .get_endpoint(tenant_id, endpoint_id)
            .await?;
        self.inner
            .store
            .list_attempts(tenant_id, endpoint_id, page)
            .await
    }

    /// Delivers the event of a logged attempt again, as a new delivery
    /// (attempt 1, with the whole retry schedule); returns its job.
    pub async fn redeliver(
        &self,
        tenant_id: TenantId,
        delivery_id: DeliveryId,
    ) -> Result<JobId, WebhookError> {
        let row = self.inner.store.get_attempt(tenant_id, delivery_id).await?;
        self.inner
            .store
            .get_endpoint(tenant_id, row.endpoint_id)
            .await?;
        let job = DeliverJob {
            tenant_id,
            endpoint_id: row.endpoint_id,
            event_id: row.event_id,
            attempt: 1,
        };
        let job = NewJob::from_serde(self.inner.kind.clone(), &job)?
            .with_tenant(tenant_id)
            .with_queue(self.inner.config.queue.clone());
        Ok(self.inner.jobs.enqueue(job).await?.id())
    }

    /// Enqueues the first attempt of `event` to `endpoint`, once per pair
    /// while it is pending.
    pub(crate) async fn enqueue_first(
        &self,
        endpoint: &Endpoint,
        event: &Event,
    ) -> Result<(), WebhookError> {
        self.enqueue_first_ids(event.tenant_id, endpoint.id, event.id)
            .await
    }

    async fn enqueue_first_ids(
        &self,
        tenant_id: TenantId,
        endpoint_id: EndpointId,
        event_id: EventId,
    ) -> Result<(), WebhookError> {
        let job = DeliverJob {
            tenant_id,
            endpoint_id,
            event_id,
            attempt: 1,
        };
        let job = NewJob::from_serde(self.inner.kind.clone(), &job)?
            .with_tenant(tenant_id)
            .with_queue(self.inner.config.queue.clone())
            .with_dedupe_key(format!("webhook:{endpoint_id}:{event_id}"))?;
        self.inner.jobs.enqueue(job).await?;
        Ok(())
    }

    /// The secrets that sign now: the current one, and the previous one
    /// while its grace period lasts.
    async fn signing_secrets(
        &self,
        tenant_id: TenantId,
        id: EndpointId,
        now: OffsetDateTime,
    ) -> Result<Vec<WebhookSecret>, WebhookError> {
        let stored = self.inner.store.secrets(tenant_id, id).await?;
        let mut secrets = vec![self.inner.cipher.open(&stored.current)?];
        if let Some((previous, until)) = &stored.previous
            && *until > now
        {
            secrets.push(self.inner.cipher.open(previous)?);
        }
        Ok(secrets)
    }

    /// Makes one delivery attempt: the job handler's work.
    pub(crate) async fn attempt(&self, job: DeliverJob) -> Result<(), WebhookError> {
        let store = &self.inner.store;
        let endpoint = match store.get_endpoint(job.tenant_id, job.endpoint_id).await {
            Ok(endpoint) => endpoint,
            // Deleted since: nothing to deliver to.
            Err(WebhookError::NotFound(_)) => return Ok(()),
            Err(error) => return Err(error),
        };
        let event = match store.get_message(job.tenant_id, job.event_id).await {
            Ok(event) => event,
            // Purged since (a delivery older than the retention period):
            // nothing left to send.
            Err(WebhookError::NotFound(_)) => {
                tracing::warn!(
                    tenant = %job.tenant_id,
                    endpoint = %job.endpoint_id,
                    event = %job.event_id,
                    "webhook delivery dropped: its event was purged"
                );
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        let now = self.now();
        let mut row = DeliveryAttempt {
            id: DeliveryId::new(),
            tenant_id: job.tenant_id,
            endpoint_id: endpoint.id,
            event_id: event.id,
            event_type: event.event_type.as_str().to_owned(),
            attempt: job.attempt,
            outcome: AttemptOutcome::Skipped,
            status_code: None,
            latency_ms: None,
            error: None,
            response_excerpt: None,
            at: now,
        };
        if !endpoint.status.is_active() {
            row.error = Some(format!("the endpoint is {}", endpoint.status.as_str()));
            store.record_attempt(&row).await?;
            // If telling the tenant failed when it was paused, tell it now.
            return self.notify_paused(&endpoint).await;
        }
        let secrets = self
            .signing_secrets(job.tenant_id, endpoint.id, now)
            .await?;
        let body = serde_json::to_vec(&event).map_err(WebhookError::corrupt)?;
        let sent = self
            .send(&endpoint.url, &event.id.to_string(), &body, &secrets)
            .await;
        let retries = self.inner.config.retry_schedule.len();
        let delay = usize::try_from(job.attempt)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| self.inner.config.retry_schedule.get(i).copied())
            .filter(|_| (job.attempt as usize) <= retries);
        row.outcome = match (sent.ok, delay) {
            (true, _) => AttemptOutcome::Succeeded,
            (false, Some(_)) => AttemptOutcome::Failed,
            (false, None) => AttemptOutcome::Dead,
        };
        row.status_code = sent.status_code;
        row.latency_ms = sent.latency_ms;
        row.error = sent.error;
        row.response_excerpt = sent.excerpt;
        let updated = match store.record_attempt(&row).await {
            Ok(updated) => updated,
            Err(WebhookError::NotFound(_)) => return Ok(()),
            Err(error) => return Err(error),
        };
        if sent.ok {
            return Ok(());
        }
        if let Some(delay) = delay {
            let next = DeliverJob {
                attempt: job.attempt + 1,
                ..job
            };
            let next = NewJob::from_serde(self.inner.kind.clone(), &next)?
                .with_tenant(job.tenant_id)
                .with_queue(self.inner.config.queue.clone())
                .with_run_at(now + span(delay))
                .with_dedupe_key(format!(
                    "webhook:{}:{}:{}",
                    job.endpoint_id, job.event_id, next.attempt
                ))?;
            self.inner.jobs.enqueue(next).await?;
        }
        self.trip_breaker(&updated, now).await
    }

    /// Pauses the endpoint when it has failed enough times for long
    /// enough, and tells the tenant (outbox event and audit event).
    async fn trip_breaker(
        &self,
        endpoint: &Endpoint,
        now: OffsetDateTime,
    ) -> Result<(), WebhookError> {
        let config = &self.inner.config;
        if endpoint.consecutive_failures < config.breaker_failures
            || now - endpoint.failing_since() < span(config.breaker_period)
        {
            return Ok(());
        }
        let reason = format!(
            "{} consecutive failed deliveries and none succeeded since {}",
            endpoint.consecutive_failures,
            endpoint
                .failing_since()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        );
        let paused = self
            .inner
            .store
            .pause_if_active(endpoint.tenant_id, endpoint.id, &reason, now)
            .await?;
        if !paused {
            return Ok(());
        }
        tracing::warn!(endpoint = %endpoint.id, tenant = %endpoint.tenant_id, %reason, "webhook endpoint paused");
        let paused = self
            .inner
            .store
            .get_endpoint(endpoint.tenant_id, endpoint.id)
            .await?;
        self.notify_paused(&paused).await
    }

    /// Appends the `webhook.endpoint.paused` event and its audit event for
    /// a paused endpoint, once per pause: the event's id is derived from
    /// the endpoint and the time of the pause, so calling it again (after
    /// a failed attempt to tell, from a later skipped delivery) appends
    /// nothing more.
    async fn notify_paused(&self, endpoint: &Endpoint) -> Result<(), WebhookError> {
        let EndpointStatus::Paused { reason, since } = &endpoint.status else {
            return Ok(());
        };
        let data = serde_json::json!({
            "endpoint_id": endpoint.id,
            "url": endpoint.url,
            "reason": reason,
            "consecutive_failures": endpoint.consecutive_failures,
        });
        let bad = |e: tenancy_core::ValidationError| WebhookError::Store(e.into());
        let event_id = pause_event_id(endpoint.id, *since);
        let tx = self.inner.backend.begin().await?;
        let appended = tx
            .append_event(
                endpoint.tenant_id,
                NewEvent::new(EventType::new(ENDPOINT_PAUSED).map_err(bad)?, data.clone())
                    .with_id(event_id)
                    .with_occurred_at(*since),
            )
            .await;
        match appended {
            Ok(_) => {}
            // Told already: the transaction is dropped, nothing more is written.
            Err(tenancy_core::StoreError::Conflict(tenancy_core::Conflict::Id(_))) => {
                return Ok(());
            }
            Err(error) => return Err(error.into()),
        }
        tx.append_audit(
            endpoint.tenant_id,
            NewAuditEvent::new(
                &AuditContext::system(),
                AuditAction::new(ENDPOINT_PAUSED).map_err(bad)?,
                Target::new("webhook_endpoint", endpoint.id).map_err(bad)?,
                Metadata::new(data).map_err(bad)?,
                *since,
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// POSTs `body`, signed, to `url`: checks the target first, follows
    /// no redirect, reads at most the configured number of answer bytes.
    pub(crate) async fn send(
        &self,
        url: &str,
        msg_id: &str,
        body: &[u8],
        secrets: &[WebhookSecret],
    ) -> Sent {
        let failed = |error: String| Sent {
            ok: false,
            status_code: None,
            latency_ms: None,
            error: Some(error),
            excerpt: None,
        };
        let parsed = match validate_url(self.inner.config.policy, url) {
            Ok(parsed) => parsed,
            Err(error) => return failed(error.to_string()),
        };
        if let Err(refused) = check_target(self.inner.config.policy, &parsed).await {
            // The tenant reads the delivery log: the resolved address and
            // its class go to the server log only.
            tracing::warn!(%refused, url, "webhook delivery refused by the target policy");
            return failed(format!("refused: {}", refused.public_message()));
        }
        let timestamp = self.now().unix_timestamp();
        let signature = signature_header(secrets, msg_id, timestamp, body);
        let started = Instant::now();
        let request = self
            .inner
            .client
            .post(parsed)
            .header("content-type", "application/json")
            .header("webhook-id", msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec());
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                let mut sent = failed(describe(&error));
                sent.latency_ms = Some(elapsed_ms(started));
                return sent;
            }
        };
        let status = response.status();
        let mut read = Vec::new();
        let mut read_error = None;
        while read.len() < self.inner.config.max_response_bytes {
            match response.chunk().await {
                Ok(Some(chunk)) => read.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(error) => {
                    read_error = Some(describe(&error));
                    break;
                }
            }
        }
        drop(response);
        let latency_ms = Some(elapsed_ms(started));
        let excerpt = (!read.is_empty()).then(|| excerpt(&read));
        let ok = status.is_success();
        let error = if status.is_redirection() {
            Some(format!("redirect ({status}) not followed"))
        } else if !ok {
            Some(format!("status {status}"))
        } else {
            read_error
        };
        Sent {
            ok,
            status_code: Some(status.as_u16()),
            latency_ms,
            error,
            excerpt,
        }
    }
}

/// The id of the event telling of the pause of `endpoint` at `since`: the
/// first 16 bytes of a SHA-256 over both, marked as a version 8 UUID.
fn pause_event_id(endpoint: EndpointId, since: OffsetDateTime) -> EventId {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!(
        "{ENDPOINT_PAUSED}:{endpoint}:{}",
        since.unix_timestamp_nanos()
    ));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    EventId::from_uuid(uuid::Uuid::from_bytes(bytes))
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn excerpt(bytes: &[u8]) -> String {
    let mut end = bytes.len().min(MAX_EXCERPT_BYTES);
    let text = loop {
        match std::str::from_utf8(&bytes[..end]) {
            Ok(text) => break text.to_owned(),
            Err(e) if e.error_len().is_none() => end = e.valid_up_to(),
            Err(_) => break String::from_utf8_lossy(&bytes[..end]).into_owned(),
        }
    };
    text.chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .collect()
}

fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::memory::MemoryWebhookStore;
    use crate::secret::SecretKey;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Set in the child process of [`client_ignores_proxy_environment`].
    const PROXY_CHILD: &str = "TENANCY_WEBHOOKS_PROXY_CHILD";

    /// Run by [`client_ignores_proxy_environment`] in a process of its own
    /// whose environment names a proxy: a delivery to a local receiver
    /// must go straight to it. Proxy variables are process-wide and read
    /// when the client is built, so they cannot be set for one test of a
    /// process running others.
    #[tokio::test]
    #[ignore = "run by client_ignores_proxy_environment in a child process"]
    async fn proxy_child() {
        if std::env::var_os(PROXY_CHILD).is_none() {
            return;
        }
        assert!(std::env::var_os("HTTP_PROXY").is_some());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the connection closed before the request head");
                head.extend_from_slice(&buf[..n]);
            }
            socket
                .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&head).into_owned()
        });
        let webhooks = Webhooks::new(
            Arc::new(MemoryWebhookStore::new()),
            Arc::new(tenancy_jobs::MemoryJobStore::new()),
            Arc::new(tenancy_core::MemoryBackend::new()),
            SecretCipher::new(SecretKey::generate("k").unwrap()),
            WebhookConfig::default()
                .with_policy(TargetPolicy::AllowPrivate)
                .with_timeout(Duration::from_secs(3)),
        )
        .unwrap();
        let url = format!("http://{addr}/hook");
        let sent = webhooks
            .send(&url, "msg_1", b"{}", &[WebhookSecret::generate()])
            .await;
        assert!(sent.ok, "{sent:?}");
        assert_eq!(sent.status_code, Some(204));
        // Straight to the receiver: the request line is origin-form, not
        // the absolute form a proxy is sent.
        let head = served.await.unwrap();
        assert!(head.starts_with("POST /hook "), "{head}");
    }

    #[test]
    fn client_ignores_proxy_environment() {
        // A proxy that accepts connections and never answers: a request
        // sent through it times out.
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--exact",
                "service::tests::proxy_child",
                "--ignored",
                "--test-threads=1",
            ])
            .env(PROXY_CHILD, "1")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy");
        for var in [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            child.env(var, &proxy_url);
        }
        let output = child.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("1 passed"), "{stdout}");
        drop(proxy);
    }
}
