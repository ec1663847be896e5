//! De-duplication of acknowledged guestServer events (issue 6): our
//! guestServer retransmits a LOSS, ILLHEALTH or VOTE_NOTIFY until we
//! acknowledge it, so a retransmission whose ack was lost arrives twice. The
//! agent acknowledges every copy but acts on the first only, keyed by
//! (hostname, event id). Pure; owned by `State` on the dispatcher.
//!
//! Bounded: the last `PER_HOST` ids of each host. A server retries for about
//! two minutes, far fewer events than that in any sane deployment.
//! Persisted in `outbox.json` together with the outbox (one atomic write,
//! `persist.rs`), so an event is never marked seen on disk without being
//! queued there too, and a restarted agent (kill -9, or the other
//! controller on the same state dir) still recognises a retransmission of an
//! event the old one had already taken.

use std::collections::{HashMap, HashSet, VecDeque};

pub const PER_HOST: usize = 1024;

#[derive(Debug, Default)]
pub struct Dedup {
    hosts: HashMap<String, (VecDeque<u64>, HashSet<u64>)>,
}

impl Dedup {
    /// True the first time `(host, id)` is seen.
    pub fn first_time(&mut self, host: &str, id: u64) -> bool {
        let (order, set) = self.hosts.entry(host.to_string()).or_default();
        if !set.insert(id) {
            return false;
        }
        order.push_back(id);
        if order.len() > PER_HOST {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        true
    }

    /// Whether `(host, id)` was seen.
    pub fn contains(&self, host: &str, id: u64) -> bool {
        self.hosts.get(host).is_some_and(|(_, set)| set.contains(&id))
    }

    /// Every host's ids, oldest first, for the state file.
    pub fn snapshot(&self) -> Vec<(String, Vec<u64>)> {
        let mut all: Vec<(String, Vec<u64>)> =
            self.hosts.iter().map(|(h, (order, _))| (h.clone(), order.iter().copied().collect())).collect();
        all.sort();
        all
    }

    /// Rebuilds the set from `snapshot`'s output (bounded again on the way).
    pub fn restore(hosts: Vec<(String, Vec<u64>)>) -> Self {
        let mut d = Self::default();
        for (host, ids) in hosts {
            for id in ids {
                d.first_time(&host, id);
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_caught_per_host_and_memory_is_bounded() {
        let mut d = Dedup::default();
        assert!(d.first_time("a", 1));
        assert!(!d.first_time("a", 1));
        assert!(d.first_time("b", 1), "ids are per host");
        for id in 2..=(PER_HOST as u64 + 1) {
            assert!(d.first_time("a", id));
        }
        assert!(d.first_time("a", 1), "the oldest id was forgotten");
        assert_eq!(d.hosts["a"].0.len(), PER_HOST);
    }

    #[test]
    fn a_restored_set_still_catches_duplicates_in_the_same_order() {
        let mut d = Dedup::default();
        for id in [5, 3, 9] {
            d.first_time("h", id);
        }
        d.first_time("g", 1);
        let back = Dedup::restore(d.snapshot());
        assert_eq!(back.snapshot(), vec![("g".to_string(), vec![1]), ("h".to_string(), vec![5, 3, 9])]);
        let mut back = back;
        assert!(back.contains("h", 3) && !back.contains("h", 4) && !back.contains("x", 3));
        assert!(!back.first_time("h", 3) && !back.first_time("g", 1));
        assert!(back.first_time("h", 4));
    }
}
