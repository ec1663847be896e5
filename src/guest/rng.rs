//! A small seeded generator for invocation ids and app challenges (fix Q6:
//! the C daemon used unseeded `rand()`, repeating 1804289383, ... on every
//! start). Values stay in 1..2^31-1 because peers store them as int32.
//!
//! Pure; owned by whichever state machine draws from it.

use std::time::{SystemTime, UNIX_EPOCH};

/// xorshift64*: fast, tiny, good enough for non-cryptographic ids.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator with a fixed seed (tests, the simulator).
    pub fn with_seed(seed: u64) -> Self {
        // Zero is the one state xorshift never leaves.
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    /// A generator seeded from the clock and the pid.
    pub fn from_entropy() -> Self {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        Self::with_seed(nanos ^ (u64::from(std::process::id()) << 32))
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in 1..=2^31-1.
    pub fn next_id(&mut self) -> u32 {
        loop {
            let v = (self.next_u64() >> 33) as u32;
            if v != 0 {
                return v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_in_range_and_seed_dependent() {
        let mut a = Rng::with_seed(1);
        let mut b = Rng::with_seed(2);
        let va: Vec<u32> = (0..100).map(|_| a.next_id()).collect();
        let vb: Vec<u32> = (0..100).map(|_| b.next_id()).collect();
        assert_ne!(va, vb);
        assert!(va.iter().all(|v| *v >= 1 && *v <= i32::MAX as u32));
        let mut a2 = Rng::with_seed(1);
        assert_eq!(a2.next_id(), va[0]);
    }
}
