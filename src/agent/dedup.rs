//! De-duplication of acknowledged guestServer events (issue 6): our
//! guestServer retransmits a LOSS, ILLHEALTH or VOTE_NOTIFY until we
//! acknowledge it, so a retransmission whose ack was lost arrives twice. The
//! agent acknowledges every copy but acts on the first only, keyed by
//! (hostname, event id). Pure; owned by `State` on the dispatcher.
//!
//! Bounded: the last `PER_HOST` ids of each host. A server retries for about
//! a minute, far fewer events than that in any sane deployment. Not
//! persisted: after an agent restart a retransmitted event may be delivered
//! once more (at-least-once, as the VIM outbox already is).

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
}
