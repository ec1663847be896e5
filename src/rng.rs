//! A small seeded random source (SplitMix64) for challenge values, guest
//! invocation ids and app challenges. Seeded from the kernel's random pool at start, so no two
//! runs draw the same sequence (decisions §12); tests seed it explicitly.
//!
//! Pure; owned by the dispatcher that draws from it.

use std::io::Read;

/// SplitMix64: tiny, fast, statistically fine for unpredictable-enough
/// challenges (they are liveness tokens, not secrets).
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator with a fixed seed (tests).
    pub fn seeded(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator seeded from `/dev/urandom`, falling back to time and pid.
    pub fn from_entropy() -> Self {
        let mut buf = [0u8; 8];
        let from_kernel = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
        let seed = match from_kernel {
            Ok(()) => u64::from_le_bytes(buf),
            Err(_) => {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0);
                t ^ (u64::from(std::process::id()) << 32)
            }
        };
        Self::seeded(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..=2^31-1, the range of C `rand()` that peers expect.
    pub fn next_rand31(&mut self) -> u32 {
        (self.next_u64() >> 33) as u32
    }

    /// An id in 1..=2^31-1 (invocation ids: peers store them as int32 and
    /// treat 0 as "none").
    pub fn next_id(&mut self) -> u32 {
        loop {
            let v = self.next_rand31();
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
    fn values_stay_in_the_c_rand_range_and_vary() {
        let mut rng = Rng::seeded(7);
        let values: Vec<u32> = (0..1000).map(|_| rng.next_rand31()).collect();
        assert!(values.iter().all(|v| *v <= 0x7fff_ffff));
        let distinct: std::collections::HashSet<_> = values.iter().collect();
        assert!(distinct.len() > 990);
    }

    #[test]
    fn same_seed_same_sequence_different_seed_different_sequence() {
        let a: Vec<u32> = {
            let mut r = Rng::seeded(1);
            (0..5).map(|_| r.next_rand31()).collect()
        };
        let b: Vec<u32> = {
            let mut r = Rng::seeded(1);
            (0..5).map(|_| r.next_rand31()).collect()
        };
        let c: Vec<u32> = {
            let mut r = Rng::seeded(2);
            (0..5).map(|_| r.next_rand31()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
