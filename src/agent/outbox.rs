//! The outbox of VIM events: FIFO per instance, retried with exponential
//! back-off until the VIM has them, persisted by the dispatcher after every
//! change so that a restart loses nothing (decisions §guestAgent 4 and 8).
//!
//! Pure code with time passed in, owned by the dispatcher. Only the head of an
//! instance's queue is ever in flight, which keeps each instance's events in
//! order; different instances proceed independently. `ready` holds the heads
//! that wait for their due time, so picking the next job is O(log n).
//! Bounded: past `max` entries the oldest service event that is not in flight
//! is dropped; alarms and action events are never dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What an event is, which decides whether it may be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Service,
    Alarm,
    Action,
}

/// One queued PATCH to the VIM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutEvent {
    pub id: u64,
    pub instance: String,
    pub kind: EventKind,
    /// Path below the VIM URL, e.g. `/nfvi-plugins/v1/instances/<uuid>`.
    pub path: String,
    /// The JSON body, already serialised.
    pub body: String,
    #[serde(default)]
    pub attempts: u32,
}

/// How an attempt ended, as the VIM client classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// 2xx, or a close without a reply after the whole request was written.
    Delivered,
    /// 4xx or an unexpected status: logged and dropped.
    Rejected,
    /// Not fully sent, or 5xx: try again later.
    Retry,
}

/// Retry timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Delay before attempt `attempts + 1`: min, 2·min, 4·min … capped at max.
    pub fn delay(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(20);
        self.min.saturating_mul(1u32 << shift).min(self.max)
    }
}

/// Counters for /metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub delivered: u64,
    pub rejected: u64,
    pub retried: u64,
    pub overflowed: u64,
}

/// See the module doc.
#[derive(Debug)]
pub struct Outbox {
    next_id: u64,
    queues: HashMap<String, VecDeque<OutEvent>>,
    /// (due, id, instance) of every head that is waiting.
    ready: BTreeSet<(Instant, u64, String)>,
    /// Due time of each waiting head, by id, to find it in `ready`.
    due: HashMap<u64, Instant>,
    in_flight: HashMap<u64, String>,
    /// Service events by id, oldest first, for overflow.
    services: BTreeMap<u64, String>,
    len: usize,
    max: usize,
    max_in_flight: usize,
    pub backoff: Backoff,
    pub stats: OutboxStats,
}

impl Outbox {
    pub fn new(max: usize, max_in_flight: usize, backoff: Backoff) -> Self {
        Self {
            next_id: 1,
            queues: HashMap::new(),
            ready: BTreeSet::new(),
            due: HashMap::new(),
            in_flight: HashMap::new(),
            services: BTreeMap::new(),
            len: 0,
            max: max.max(1),
            max_in_flight: max_in_flight.max(1),
            backoff,
            stats: OutboxStats::default(),
        }
    }

    /// Puts persisted events back, in their original order, all due at `now`.
    pub fn restore(&mut self, mut events: Vec<OutEvent>, now: Instant) {
        events.sort_by_key(|e| e.id);
        for e in events {
            self.next_id = self.next_id.max(e.id + 1);
            self.enqueue(e, now);
        }
    }

    /// Queues a new event; returns the service event dropped to make room.
    pub fn push(
        &mut self,
        instance: &str,
        kind: EventKind,
        path: String,
        body: String,
        now: Instant,
    ) -> Option<OutEvent> {
        let dropped = if self.len >= self.max { self.drop_oldest_service(now) } else { None };
        let id = self.next_id;
        self.next_id += 1;
        self.enqueue(OutEvent { id, instance: instance.to_string(), kind, path, body, attempts: 0 }, now);
        dropped
    }

    fn enqueue(&mut self, e: OutEvent, now: Instant) {
        if e.kind == EventKind::Service {
            self.services.insert(e.id, e.instance.clone());
        }
        let q = self.queues.entry(e.instance.clone()).or_default();
        let is_head = q.is_empty();
        let (id, instance) = (e.id, e.instance.clone());
        q.push_back(e);
        self.len += 1;
        if is_head {
            self.make_ready(id, instance, now);
        }
    }

    fn make_ready(&mut self, id: u64, instance: String, at: Instant) {
        self.due.insert(id, at);
        self.ready.insert((at, id, instance));
    }

    fn drop_oldest_service(&mut self, now: Instant) -> Option<OutEvent> {
        let victim = self
            .services
            .iter()
            .find(|(id, _)| !self.in_flight.contains_key(id))
            .map(|(id, inst)| (*id, inst.clone()))?;
        let (id, instance) = victim;
        self.services.remove(&id);
        let q = self.queues.get_mut(&instance)?;
        let pos = q.iter().position(|e| e.id == id)?;
        let removed = q.remove(pos)?;
        self.len -= 1;
        self.stats.overflowed += 1;
        if pos == 0 {
            if let Some(at) = self.due.remove(&id) {
                self.ready.remove(&(at, id, instance.clone()));
            }
            self.advance(&instance, now);
        }
        Some(removed)
    }

    /// Makes the new head of `instance` ready, or forgets the empty queue.
    fn advance(&mut self, instance: &str, now: Instant) {
        match self.queues.get(instance).and_then(|q| q.front()) {
            Some(head) => {
                let id = head.id;
                self.make_ready(id, instance.to_string(), now);
            }
            None => {
                self.queues.remove(instance);
            }
        }
    }

    /// The next event to send at `now`, which becomes in flight.
    pub fn next_job(&mut self, now: Instant) -> Option<OutEvent> {
        if self.in_flight.len() >= self.max_in_flight {
            return None;
        }
        let first = self.ready.first()?.clone();
        if first.0 > now {
            return None;
        }
        self.ready.remove(&first);
        let (_, id, instance) = first;
        self.due.remove(&id);
        let head = self.queues.get(&instance)?.front()?.clone();
        self.in_flight.insert(id, instance);
        Some(head)
    }

    /// Records the outcome of the in-flight event `id`.
    pub fn complete(&mut self, id: u64, outcome: Delivery, now: Instant) {
        let Some(instance) = self.in_flight.remove(&id) else {
            return;
        };
        match outcome {
            Delivery::Retry => {
                let Some(head) = self.queues.get_mut(&instance).and_then(|q| q.front_mut()) else {
                    return;
                };
                head.attempts = head.attempts.saturating_add(1);
                let at = now + self.backoff.delay(head.attempts);
                self.stats.retried += 1;
                self.make_ready(id, instance, at);
            }
            Delivery::Delivered | Delivery::Rejected => {
                if outcome == Delivery::Delivered {
                    self.stats.delivered += 1;
                } else {
                    self.stats.rejected += 1;
                }
                if let Some(q) = self.queues.get_mut(&instance) {
                    q.pop_front();
                }
                self.services.remove(&id);
                self.len -= 1;
                self.advance(&instance, now);
            }
        }
    }

    /// When `next_job` will next have something, if a slot is free.
    pub fn next_due(&self) -> Option<Instant> {
        if self.in_flight.len() >= self.max_in_flight {
            return None;
        }
        self.ready.first().map(|(at, _, _)| *at)
    }

    /// Whether an alarm or action event can be queued without going past
    /// `max`: there is room, or a service event that `push` may drop.
    pub fn has_room_for_undroppable(&self) -> bool {
        self.len < self.max || self.services.keys().any(|id| !self.in_flight.contains_key(id))
    }

    /// Queued events including those in flight.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every queued event in id order, for the state file.
    pub fn snapshot(&self) -> Vec<OutEvent> {
        let mut all: Vec<OutEvent> = self.queues.values().flatten().cloned().collect();
        all.sort_by_key(|e| e.id);
        all
    }
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
