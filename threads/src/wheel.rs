//! Pure timer queue with time passed in. Owned and driven by the dispatcher
//! thread; the timer thread (see `timer`) only wakes it at `next_deadline`.
//!
//! Keeping the queue pure means heartbeat timing can be unit-tested with fake
//! instants instead of real sleeps.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// Identifies one inserted timer; ids are never reused by a wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(u64);

/// Ordered timers: O(log n) insert, cancel and pop, exact cancellation.
#[derive(Debug)]
pub struct TimerWheel<K> {
    /// Keyed by (deadline, sequence) so that equal deadlines pop in insertion order.
    queue: BTreeMap<(Instant, u64), K>,
    /// Deadline of every live id, so that cancel finds its queue entry directly.
    deadlines: HashMap<u64, Instant>,
    next_id: u64,
}

impl<K> Default for TimerWheel<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K> TimerWheel<K> {
    pub fn new() -> Self {
        TimerWheel {
            queue: BTreeMap::new(),
            deadlines: HashMap::new(),
            next_id: 0,
        }
    }

    pub fn insert(&mut self, at: Instant, key: K) -> TimerId {
        let id = self.next_id;
        self.next_id += 1;
        self.queue.insert((at, id), key);
        self.deadlines.insert(id, at);
        TimerId(id)
    }

    /// Removes a pending timer; `None` when it already fired or was cancelled.
    pub fn cancel(&mut self, id: TimerId) -> Option<K> {
        let at = self.deadlines.remove(&id.0)?;
        self.queue.remove(&(at, id.0))
    }

    pub fn deadline(&self, id: TimerId) -> Option<Instant> {
        self.deadlines.get(&id.0).copied()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(at, _)| *at)
    }

    /// Earliest first; equal deadlines in insertion order; `None` when nothing
    /// is due at `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<(TimerId, K)> {
        let (&(at, id), _) = self.queue.first_key_value()?;
        if at > now {
            return None;
        }
        let key = self.queue.remove(&(at, id))?;
        self.deadlines.remove(&id);
        Some((TimerId(id), key))
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn pops_in_deadline_order() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new();
        w.insert(t0 + ms(30), "c");
        w.insert(t0 + ms(10), "a");
        w.insert(t0 + ms(20), "b");
        assert_eq!(w.len(), 3);
        assert_eq!(w.next_deadline(), Some(t0 + ms(10)));
        assert!(w.pop_expired(t0 + ms(5)).is_none());
        let mut got = Vec::new();
        while let Some((_, k)) = w.pop_expired(t0 + ms(100)) {
            got.push(k);
        }
        assert_eq!(got, vec!["a", "b", "c"]);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn ties_in_insertion_order_and_inclusive_deadline() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new();
        for k in 0..5 {
            w.insert(t0 + ms(10), k);
        }
        let got: Vec<i32> =
            std::iter::from_fn(|| w.pop_expired(t0 + ms(10)).map(|(_, k)| k)).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn cancel_is_exact() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new();
        let a = w.insert(t0 + ms(10), "a");
        let b = w.insert(t0 + ms(10), "b");
        let c = w.insert(t0 + ms(5), "c");
        assert_eq!(w.deadline(b), Some(t0 + ms(10)));
        assert_eq!(w.cancel(b), Some("b"));
        assert_eq!(w.cancel(b), None);
        assert_eq!(w.deadline(b), None);
        assert_eq!(w.cancel(c), Some("c"));
        assert_eq!(w.next_deadline(), Some(t0 + ms(10)));
        assert_eq!(w.pop_expired(t0 + ms(10)), Some((a, "a")));
        assert_eq!(w.cancel(a), None);
        assert!(w.is_empty());
    }

    #[test]
    fn ids_are_unique() {
        let t0 = Instant::now();
        let mut w = TimerWheel::default();
        let a = w.insert(t0, ());
        w.pop_expired(t0);
        let b = w.insert(t0, ());
        assert_ne!(a, b);
    }
}
