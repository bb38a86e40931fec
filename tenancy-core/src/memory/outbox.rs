//! The outbox of [`MemoryBackend`]: streams live in the transactional
//! state, consumer positions and claims beside it.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use imbl::{HashMap, HashSet, Vector};
use time::OffsetDateTime;
use tokio::sync::OwnedMutexGuard;

use super::{Holder, MemoryBackend, MemoryTransaction, Result, State};
use crate::error::{Conflict, Entity, StoreError};
use crate::id::{EventId, TenantId};
use crate::outbox::{
    ClaimedEvents, ConsumerName, Event, EventFeed, NewEvent, Outbox, ReplayFrom, check_ack,
    check_limit,
};

/// Every tenant's stream, part of the state transactions copy and commit.
#[derive(Clone, Default)]
pub(super) struct Streams {
    events: HashMap<TenantId, Vector<Event>>,
    heads: HashMap<TenantId, u64>,
    ids: HashSet<EventId>,
}

impl Streams {
    pub(super) fn append(
        &mut self,
        tenant_id: TenantId,
        event: NewEvent,
        now: OffsetDateTime,
    ) -> Result<Event> {
        event.validate()?;
        if self.ids.contains(&event.id()) {
            return Err(StoreError::Conflict(Conflict::Id(Entity::Event)));
        }
        let head = self.heads.entry(tenant_id).or_insert(0);
        *head += 1;
        let sealed = event.seal(tenant_id, *head, now);
        self.ids.insert(sealed.id);
        self.events
            .entry(tenant_id)
            .or_default()
            .push_back(sealed.clone());
        Ok(sealed)
    }

    fn head(&self, tenant_id: TenantId) -> u64 {
        self.heads.get(&tenant_id).copied().unwrap_or(0)
    }

    /// The retained events of `tenant_id` numbered after `after`.
    fn after(&self, tenant_id: TenantId, after: u64) -> impl Iterator<Item = &Event> {
        let stream = self.events.get(&tenant_id);
        let skip = stream
            .and_then(|events| events.front())
            .map_or(0, |first| after.saturating_sub(first.seq.saturating_sub(1)));
        stream
            .into_iter()
            .flat_map(|events| events.iter())
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
    }

    /// The number a reader positioned at `from` has read up to.
    fn position(&self, tenant_id: TenantId, from: ReplayFrom) -> Result<u64> {
        let retained = || self.events.get(&tenant_id).into_iter().flatten();
        let before_first = self
            .events
            .get(&tenant_id)
            .and_then(|events| events.front())
            .map_or(self.head(tenant_id), |first| first.seq - 1);
        match from {
            ReplayFrom::Start => Ok(before_first),
            ReplayFrom::AfterSeq(seq) if seq <= self.head(tenant_id) => Ok(seq),
            ReplayFrom::AfterSeq(seq) => Err(crate::ValidationError::EventSeq { seq }.into()),
            ReplayFrom::AfterEvent(id) => retained()
                .find(|event| event.id == id)
                .map(|event| event.seq)
                .ok_or(StoreError::NotFound(Entity::Event)),
            ReplayFrom::Since(at) => Ok(retained()
                .find(|event| event.occurred_at >= at)
                .map_or(self.head(tenant_id), |event| event.seq - 1)),
        }
    }
}

/// Consumer positions and claims, outside transactions as on Postgres.
#[derive(Default)]
pub(super) struct FeedState {
    cursors: std::collections::HashMap<(ConsumerName, TenantId), Cursor>,
    turns: u64,
}

#[derive(Default)]
struct Cursor {
    seq: u64,
    claimed: bool,
    /// Moved by a rewind during the claim: the claim's ack must not undo it.
    rewound: bool,
    /// When this tenant last had its turn, so tenants take turns.
    turn: u64,
}

impl MemoryBackend {
    /// The committed state, for the feed's reads and its purge. Refused
    /// inside a transaction of this task, which holds the lock.
    async fn committed(&self) -> Result<OwnedMutexGuard<State>> {
        let me = Holder::current();
        if *self.holder.lock().unwrap_or_else(PoisonError::into_inner) == Some(me) {
            return Err(StoreError::NestedTransaction);
        }
        Ok(Arc::clone(&self.state).lock_owned().await)
    }

    fn feed(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.feed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Outbox for MemoryTransaction {
    #[tracing::instrument(level = "debug", skip(self, event), fields(event_type = %event.event_type()), err)]
    async fn append_event(&self, tenant_id: TenantId, event: NewEvent) -> Result<Event> {
        event.validate()?;
        self.with_insert(|s| {
            s.tenant(tenant_id)?;
            s.outbox.append(tenant_id, event, OffsetDateTime::now_utc())
        })
    }
}

struct MemoryClaim {
    feed: Arc<Mutex<FeedState>>,
    key: (ConsumerName, TenantId),
    events: Vec<Event>,
    done: bool,
}

impl Drop for MemoryClaim {
    fn drop(&mut self) {
        if !self.done {
            let mut feed = self.feed.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(cursor) = feed.cursors.get_mut(&self.key) {
                cursor.claimed = false;
            }
        }
    }
}

#[async_trait]
impl ClaimedEvents for MemoryClaim {
    fn tenant_id(&self) -> TenantId {
        self.key.1
    }

    fn events(&self) -> &[Event] {
        &self.events
    }

    async fn ack(mut self: Box<Self>, through: u64) -> Result<()> {
        check_ack(&self.events, through)?;
        let mut feed = self.feed.lock().unwrap_or_else(PoisonError::into_inner);
        let cursor = feed.cursors.entry(self.key.clone()).or_default();
        if !cursor.rewound {
            cursor.seq = through;
        }
        cursor.claimed = false;
        drop(feed);
        self.done = true;
        Ok(())
    }

    async fn release(self: Box<Self>) -> Result<()> {
        drop(self);
        Ok(())
    }
}

#[async_trait]
impl EventFeed for MemoryBackend {
    async fn claim(
        &self,
        consumer: &ConsumerName,
        limit: usize,
    ) -> Result<Option<Box<dyn ClaimedEvents>>> {
        let limit = check_limit(limit)?;
        let state = self.committed().await?;
        let mut feed = self.feed();
        let next = state
            .outbox
            .heads
            .iter()
            .filter_map(|(&tenant_id, &head)| {
                let cursor = feed.cursors.get(&(consumer.clone(), tenant_id));
                let (seq, claimed, turn) =
                    cursor.map_or((0, false, 0), |c| (c.seq, c.claimed, c.turn));
                let pending = head > seq && state.outbox.after(tenant_id, seq).next().is_some();
                (pending && !claimed).then_some((turn, tenant_id, seq))
            })
            .min();
        let Some((_, tenant_id, seq)) = next else {
            return Ok(None);
        };
        let events: Vec<Event> = state
            .outbox
            .after(tenant_id, seq)
            .take(limit)
            .cloned()
            .collect();
        drop(state);
        if events.is_empty() {
            return Ok(None);
        }
        feed.turns += 1;
        let turn = feed.turns;
        let key = (consumer.clone(), tenant_id);
        let cursor = feed.cursors.entry(key.clone()).or_default();
        cursor.claimed = true;
        cursor.rewound = false;
        cursor.turn = turn;
        // Purged events behind the position are skipped, as on Postgres.
        if let Some(first) = events.first() {
            cursor.seq = cursor.seq.max(first.seq - 1);
        }
        Ok(Some(Box::new(MemoryClaim {
            feed: Arc::clone(&self.feed),
            key,
            events,
            done: false,
        })))
    }

    async fn read_events(
        &self,
        tenant_id: TenantId,
        from: ReplayFrom,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let limit = check_limit(limit)?;
        let state = self.committed().await?;
        let after = state.outbox.position(tenant_id, from)?;
        Ok(state
            .outbox
            .after(tenant_id, after)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn rewind(
        &self,
        consumer: &ConsumerName,
        tenant_id: TenantId,
        from: ReplayFrom,
    ) -> Result<()> {
        let state = self.committed().await?;
        state.tenant(tenant_id)?;
        let seq = state.outbox.position(tenant_id, from)?;
        drop(state);
        let mut feed = self.feed();
        let cursor = feed
            .cursors
            .entry((consumer.clone(), tenant_id))
            .or_default();
        cursor.seq = seq;
        cursor.rewound = cursor.claimed;
        Ok(())
    }

    async fn oldest_pending(&self, consumer: &ConsumerName) -> Result<Option<OffsetDateTime>> {
        let state = self.committed().await?;
        let feed = self.feed();
        Ok(state
            .outbox
            .heads
            .keys()
            .filter_map(|&tenant_id| {
                let seq = feed
                    .cursors
                    .get(&(consumer.clone(), tenant_id))
                    .map_or(0, |c| c.seq);
                state
                    .outbox
                    .after(tenant_id, seq)
                    .next()
                    .map(|e| e.occurred_at)
            })
            .min())
    }

    async fn purge_events(
        &self,
        before: OffsetDateTime,
        consumers: &[ConsumerName],
    ) -> Result<u64> {
        let mut state = self.committed().await?;
        let feed = self.feed();
        let mut purged = 0;
        let listed: Vec<ConsumerName> = if consumers.is_empty() {
            let known: std::collections::BTreeSet<ConsumerName> = feed
                .cursors
                .keys()
                .map(|(consumer, _)| consumer.clone())
                .collect();
            known.into_iter().collect()
        } else {
            consumers.to_vec()
        };
        let tenants: Vec<TenantId> = state.outbox.events.keys().copied().collect();
        for tenant_id in tenants {
            let acknowledged = listed
                .iter()
                .map(|consumer| {
                    feed.cursors
                        .get(&(consumer.clone(), tenant_id))
                        .map_or(0, |c| c.seq)
                })
                .min()
                .unwrap_or(u64::MAX);
            let streams = &mut state.outbox;
            let Some(events) = streams.events.get_mut(&tenant_id) else {
                continue;
            };
            while events
                .front()
                .is_some_and(|e| e.occurred_at < before && e.seq <= acknowledged)
            {
                if let Some(event) = events.pop_front() {
                    streams.ids.remove(&event.id);
                    purged += 1;
                }
            }
        }
        Ok(purged)
    }

    async fn forget_consumer(&self, consumer: &ConsumerName) -> Result<u64> {
        let mut feed = self.feed();
        let before = feed.cursors.len();
        feed.cursors.retain(|(name, _), _| name != consumer);
        Ok((before - feed.cursors.len()) as u64)
    }
}
