//! Pure rate limiters with time passed in. `TokenBucket` runs on each reader
//! thread to cap what one guest may push at the dispatcher; `LogLimiter` runs
//! wherever guest-triggerable log lines are written (normally the dispatcher).

use std::time::{Duration, Instant};

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Classic token bucket. Tokens are kept in billionths so that refill is exact
/// integer arithmetic: no float drift, and tests can predict every decision.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_sec: u32,
    /// Capacity in billionths of a token.
    burst_nanos: u128,
    tokens_nanos: u128,
    last: Option<Instant>,
}

impl TokenBucket {
    /// `rate_per_sec` 0 means unlimited. A burst of 0 would never allow
    /// anything, so it is raised to 1.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        let burst_nanos = u128::from(burst.max(1)) * NANOS_PER_SEC;
        TokenBucket {
            rate_per_sec,
            burst_nanos,
            tokens_nanos: burst_nanos,
            last: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            // saturating: a caller passing an older instant gets no refill,
            // and `last` never moves backwards.
            let elapsed = now.saturating_duration_since(last).as_nanos();
            let added = elapsed.saturating_mul(u128::from(self.rate_per_sec));
            self.tokens_nanos = self
                .tokens_nanos
                .saturating_add(added)
                .min(self.burst_nanos);
            if now > last {
                self.last = Some(now);
            }
        } else {
            self.last = Some(now);
        }
    }

    /// True when `n` tokens are available at `now`, without taking them.
    pub fn can_take(&mut self, n: u32, now: Instant) -> bool {
        if self.rate_per_sec == 0 {
            return true;
        }
        self.refill(now);
        self.tokens_nanos >= u128::from(n) * NANOS_PER_SEC
    }

    /// Takes `n` tokens if available; always true when unlimited.
    pub fn try_take(&mut self, n: u32, now: Instant) -> bool {
        if !self.can_take(n, now) {
            return false;
        }
        if self.rate_per_sec != 0 {
            self.tokens_nanos -= u128::from(n) * NANOS_PER_SEC;
        }
        true
    }
}

/// For rate-limiting log lines a guest can trigger: allows `per_window` per
/// `window`; when a new window opens, `allow` returns how many were suppressed
/// in the previous one so the caller can log that count.
#[derive(Debug, Clone)]
pub struct LogLimiter {
    per_window: u32,
    window: Duration,
    window_start: Option<Instant>,
    allowed: u32,
    suppressed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogDecision {
    Allow { suppressed_before: u64 },
    Suppress,
}

impl LogLimiter {
    pub fn new(per_window: u32, window: Duration) -> Self {
        LogLimiter {
            per_window,
            window,
            window_start: None,
            allowed: 0,
            suppressed: 0,
        }
    }

    pub fn allow(&mut self, now: Instant) -> LogDecision {
        let new_window = match self.window_start {
            None => true,
            Some(start) => now.saturating_duration_since(start) >= self.window,
        };
        if new_window {
            self.window_start = Some(now);
            self.allowed = 0;
            let suppressed_before = std::mem::take(&mut self.suppressed);
            if self.per_window == 0 {
                self.suppressed = 1;
                return LogDecision::Suppress;
            }
            self.allowed = 1;
            return LogDecision::Allow { suppressed_before };
        }
        if self.allowed < self.per_window {
            self.allowed += 1;
            LogDecision::Allow {
                suppressed_before: 0,
            }
        } else {
            self.suppressed += 1;
            LogDecision::Suppress
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bucket_burst_then_refill() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 10);
        for _ in 0..10 {
            assert!(b.try_take(1, t0));
        }
        assert!(!b.try_take(1, t0));
        // 10/s refills one token every 100 ms.
        assert!(!b.try_take(1, t0 + ms(99)));
        assert!(b.try_take(1, t0 + ms(100)));
        assert!(!b.try_take(1, t0 + ms(100)));
        // Refill is capped at the burst.
        for _ in 0..10 {
            assert!(b.try_take(1, t0 + ms(60_000)));
        }
        assert!(!b.try_take(1, t0 + ms(60_000)));
    }

    #[test]
    fn bucket_multi_token_and_can_take() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 100);
        assert!(!b.try_take(101, t0));
        assert!(b.can_take(100, t0));
        assert!(b.try_take(60, t0));
        assert!(!b.try_take(60, t0));
        assert!(b.try_take(40, t0));
        // Time going backwards neither panics nor refills.
        assert!(!b.try_take(1, t0.checked_sub(ms(10)).unwrap_or(t0)));
    }

    #[test]
    fn bucket_unlimited() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, 0);
        for _ in 0..10_000 {
            assert!(b.try_take(u32::MAX, t0));
        }
    }

    #[test]
    fn log_limiter_reports_suppressed() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(2, Duration::from_secs(1));
        assert_eq!(
            l.allow(t0),
            LogDecision::Allow {
                suppressed_before: 0
            }
        );
        assert_eq!(
            l.allow(t0 + ms(1)),
            LogDecision::Allow {
                suppressed_before: 0
            }
        );
        for i in 0..5 {
            assert_eq!(l.allow(t0 + ms(2 + i)), LogDecision::Suppress);
        }
        assert_eq!(
            l.allow(t0 + ms(1000)),
            LogDecision::Allow {
                suppressed_before: 5
            }
        );
        assert_eq!(
            l.allow(t0 + ms(2500)),
            LogDecision::Allow {
                suppressed_before: 0
            }
        );
    }
}
