//! Percentile summaries of latency samples (pure; any thread).

use serde::Serialize;

/// p50/p99/max of a sample set, in milliseconds; `n` = 0 means no samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    /// Nearest-rank percentiles of `samples_ms` (order does not matter).
    pub fn of(mut samples_ms: Vec<f64>) -> Self {
        samples_ms.retain(|v| v.is_finite());
        if samples_ms.is_empty() {
            return Summary::default();
        }
        samples_ms.sort_by(f64::total_cmp);
        let n = samples_ms.len();
        let rank = |p: f64| {
            let idx = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
            samples_ms[idx]
        };
        Summary { n, p50_ms: rank(0.50), p99_ms: rank(0.99), max_ms: samples_ms[n - 1] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let s = Summary::of((1..=100).map(f64::from).collect());
        assert_eq!((s.n, s.p50_ms, s.p99_ms, s.max_ms), (100, 50.0, 99.0, 100.0));
        assert_eq!(Summary::of(vec![]).n, 0);
        assert_eq!(Summary::of(vec![3.0]).p99_ms, 3.0);
    }
}
