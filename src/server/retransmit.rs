//! Retransmission of LOSS, ILLHEALTH and VOTE_NOTIFY until guestAgent
//! acknowledges them (issue 6; docs/RELIABILITY.md). A failure report must
//! not be lost to one dropped datagram.
//!
//! Compatibility: every such event carries an `event_id` key. The C++
//! guestAgent extracts keys by name (agent spec §3.5 "lenient"), so an extra
//! key is harmless to it, but it never acknowledges; so events are tracked
//! from the start but *retransmitted* only once an agent has shown that it
//! acknowledges (any `EVENT_ACK`, including the id-0 greeting our guestAgent
//! sends in reply to READY). An event sent before that and never
//! acknowledged is retransmitted as soon as the first acknowledgement
//! arrives. Retries back off 1 s, 2 s, then every 4 s, and stop after
//! `MAX_ATTEMPTS` sends (a peer that stopped acknowledging — say a C++
//! agent took over — then gets a bounded number of duplicates).
//!
//! Survives a restart: the queue is part of the state file (`statefile.rs`,
//! written when an event is added, acknowledged or given up on, not when it
//! is merely resent). Restored events are due at once and each gets at least
//! one more send; their ids are kept, so an agent that already has one
//! acknowledges it without acting on it again.
//!
//! Pure and owned by the dispatcher (inside `AgentLink`); time is an input.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::statefile::SavedEvent;

pub const FIRST_RETRY: Duration = Duration::from_secs(1);
pub const MAX_RETRY: Duration = Duration::from_secs(4);
/// Sends in all, first one included (about two minutes of retrying: even
/// at 50 % loss each way a report then fails with odds of 1 in 10^9).
pub const MAX_ATTEMPTS: u32 = 30;
/// Unacknowledged events kept; the oldest is dropped beyond this.
pub const CAPACITY: usize = 1024;

#[derive(Debug, Clone)]
struct Pending {
    code: u32,
    json: Vec<u8>,
    attempts: u32,
    next_at: Instant,
}

/// What `due` asks the caller to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// `(event id, command code, payload)` to send again.
    pub resend: Vec<(u64, u32, Vec<u8>)>,
    /// Event ids given up on after `MAX_ATTEMPTS` sends.
    pub given_up: Vec<u64>,
}

/// The queue of unacknowledged events.
#[derive(Debug)]
pub struct Retransmit {
    pending: BTreeMap<u64, Pending>,
    next_id: u64,
    /// Set by the first acknowledgement: the agent is one of ours.
    pub agent_acks: bool,
}

impl Retransmit {
    /// `first_id` should differ across restarts (the agent de-duplicates by
    /// host and id): the caller derives it from the wall clock.
    pub fn new(first_id: u64) -> Self {
        Self { pending: BTreeMap::new(), next_id: first_id.max(1), agent_acks: false }
    }

    /// A fresh event id.
    pub fn allocate(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Records event `id`, just sent at `now`. Returns the id of the oldest
    /// event dropped to make room, if any.
    pub fn track(&mut self, id: u64, code: u32, json: Vec<u8>, now: Instant) -> Option<u64> {
        let evicted = if self.pending.len() >= CAPACITY { self.pending.pop_first().map(|(k, _)| k) } else { None };
        self.pending.insert(id, Pending { code, json, attempts: 1, next_at: now + FIRST_RETRY });
        evicted
    }

    /// An acknowledgement; true when it matched a pending event. Id 0 is the
    /// agent's greeting and matches nothing.
    pub fn ack(&mut self, id: u64) -> bool {
        self.agent_acks = true;
        self.pending.remove(&id).is_some()
    }

    /// Everything due at `now`, with the next retry scheduled.
    pub fn due(&mut self, now: Instant) -> Due {
        let mut out = Due::default();
        if !self.agent_acks {
            return out;
        }
        for (&id, p) in self.pending.iter_mut().filter(|(_, p)| p.next_at <= now) {
            if p.attempts >= MAX_ATTEMPTS {
                out.given_up.push(id);
                continue;
            }
            let backoff = FIRST_RETRY.saturating_mul(1 << p.attempts.min(4)).min(MAX_RETRY);
            p.attempts += 1;
            p.next_at = now + backoff;
            out.resend.push((id, p.code, p.json.clone()));
        }
        for id in &out.given_up {
            self.pending.remove(id);
        }
        out
    }

    /// The earliest retry; none while no agent has acknowledged anything.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.agent_acks {
            return None;
        }
        self.pending.values().map(|p| p.next_at).min()
    }

    /// The queue for the state file, oldest first.
    pub fn snapshot(&self) -> Vec<SavedEvent> {
        self.pending
            .iter()
            .map(|(&event_id, p)| SavedEvent {
                event_id,
                code: p.code,
                payload: String::from_utf8_lossy(&p.json).into_owned(),
                attempts: p.attempts,
            })
            .collect()
    }

    /// The id the next event will get (saved, so that ids never repeat
    /// across a restart even if the wall clock went back).
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Puts events from the state file back, all due at `now` (they go out
    /// once an agent acknowledges something, as any other). New ids
    /// continue at `next_id` or above every restored one, whichever is
    /// higher. The newest `CAPACITY` are kept.
    pub fn restore(&mut self, events: Vec<SavedEvent>, next_id: u64, now: Instant) {
        self.next_id = self.next_id.max(next_id);
        for e in events {
            self.next_id = self.next_id.max(e.event_id.saturating_add(1));
            let attempts = e.attempts.min(MAX_ATTEMPTS - 1);
            self.pending
                .insert(e.event_id, Pending { code: e.code, json: e.payload.into_bytes(), attempts, next_at: now });
        }
        while self.pending.len() > CAPACITY {
            self.pending.pop_first();
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_retries_until_the_agent_acknowledges_then_the_backlog_goes() {
        let t0 = Instant::now();
        let mut r = Retransmit::new(100);
        assert_eq!(r.allocate(), 100);
        r.track(100, 1, b"a".to_vec(), t0);
        assert_eq!(r.next_deadline(), None, "a C++ agent: no timer, no retries");
        assert_eq!(r.due(t0 + MAX_RETRY), Due::default());
        assert!(!r.ack(0), "the greeting matches no event");
        assert_eq!(r.next_deadline(), Some(t0 + FIRST_RETRY));
        assert_eq!(r.due(t0 + FIRST_RETRY).resend, vec![(100, 1, b"a".to_vec())]);
        assert_eq!(r.allocate(), 101);
    }

    #[test]
    fn retries_back_off_to_the_cap_then_give_up() {
        let t0 = Instant::now();
        let mut r = Retransmit::new(1);
        r.ack(0);
        let id = r.allocate();
        r.track(id, 7, b"{}".to_vec(), t0);
        assert_eq!(r.due(t0), Due::default());
        let mut at = t0;
        let mut gaps = Vec::new();
        while let Some(next) = r.next_deadline() {
            gaps.push((next - at).as_secs());
            at = next;
            let d = r.due(at);
            if !d.given_up.is_empty() {
                assert_eq!(d.given_up, vec![id]);
                break;
            }
            assert_eq!(d.resend, vec![(id, 7, b"{}".to_vec())]);
        }
        let mut want = vec![1, 2];
        want.resize(MAX_ATTEMPTS as usize, 4);
        assert_eq!(gaps, want);
        assert!(r.is_empty());
    }

    #[test]
    fn a_restored_queue_resends_with_the_same_ids_and_new_ids_continue_above() {
        let t0 = Instant::now();
        let mut r = Retransmit::new(1);
        let a = r.allocate();
        r.track(a, 7, b"{\"x\":1}".to_vec(), t0);
        r.ack(0);
        let b = r.allocate();
        r.track(b, 8, b"{}".to_vec(), t0);
        assert!(r.ack(b));
        // The first event was resent until its last attempt.
        let mut at = t0;
        while let Some(next) = r.next_deadline() {
            if r.snapshot()[0].attempts == MAX_ATTEMPTS {
                break;
            }
            at = next;
            r.due(at);
        }
        let (saved, next) = (r.snapshot(), r.next_id());
        assert_eq!(saved.len(), 1);
        assert_eq!((saved[0].event_id, saved[0].code, saved[0].payload.as_str()), (a, 7, "{\"x\":1}"));
        // "Restart": a fresh queue whose clock-derived first id is lower.
        let t1 = at + Duration::from_secs(100);
        let mut back = Retransmit::new(1);
        back.restore(saved, next, t1);
        assert_eq!(back.next_deadline(), None, "nothing goes out before an agent acknowledges");
        assert_eq!(back.allocate(), b + 1, "ids never repeat, not even the acknowledged one's");
        back.ack(0);
        assert_eq!(back.due(t1).resend, vec![(a, 7, b"{\"x\":1}".to_vec())], "one more send at least");
        assert_eq!(back.due(t1 + MAX_RETRY).given_up, vec![a]);
        // The bound holds for a restored queue too.
        let many = (1..=CAPACITY as u64 + 5)
            .map(|i| SavedEvent { event_id: i, code: 1, payload: String::new(), attempts: 0 })
            .collect();
        let mut big = Retransmit::new(1);
        big.restore(many, 0, t1);
        assert_eq!((big.len(), big.snapshot()[0].event_id), (CAPACITY, 6), "the newest are kept");
        assert_eq!(big.allocate(), CAPACITY as u64 + 6);
    }

    #[test]
    fn acknowledged_events_are_not_resent_and_the_queue_is_bounded() {
        let t0 = Instant::now();
        let mut r = Retransmit::new(1);
        r.ack(0);
        let a = r.allocate();
        r.track(a, 1, vec![], t0);
        assert!(r.ack(a));
        assert!(!r.ack(a), "a duplicate ack matches nothing");
        assert_eq!(r.due(t0 + MAX_RETRY), Due::default());
        let mut evicted = None;
        for _ in 0..=CAPACITY {
            let id = r.allocate();
            evicted = evicted.or(r.track(id, 1, vec![], t0));
        }
        assert_eq!(r.len(), CAPACITY);
        assert_eq!(evicted, Some(a + 1), "the oldest goes first");
    }
}
