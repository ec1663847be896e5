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
//! Pure and owned by the dispatcher (inside `AgentLink`); time is an input.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
