//! The bench result: JSON for machines, a Markdown table for
//! docs/PERFORMANCE.md (replaced between two marker comments, so the prose
//! around it is kept). Main thread.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use super::case::CaseResult;
use super::machine::{LoadAvg, Machine};
use super::BenchError;

pub const TABLE_START: &str = "<!-- guest-bench:table:start -->";
pub const TABLE_END: &str = "<!-- guest-bench:table:end -->";

/// Everything one run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    /// Seconds since the UNIX epoch at the start.
    pub started_unix: u64,
    pub machine: Machine,
    pub load_avg_start: LoadAvg,
    pub load_avg_end: LoadAvg,
    pub command: String,
    pub server: Vec<CaseResult>,
    /// guestAgent figures; `None` when not measured (see `agent_note`).
    pub agent: Option<super::agent::AgentResult>,
    pub agent_note: String,
}

impl Report {
    /// Fills the per-guest memory above the 0-guest case of the same interval.
    pub fn derive(&mut self) {
        let idle: Vec<(u32, u64)> =
            self.server.iter().filter(|c| c.guests == 0).map(|c| (c.interval_ms, c.rss_kib)).collect();
        for c in &mut self.server {
            if c.guests == 0 {
                continue;
            }
            if let Some((_, base)) = idle.iter().find(|(i, _)| *i == c.interval_ms) {
                c.rss_kib_per_guest_above_idle = Some((c.rss_kib as f64 - *base as f64) / c.guests as f64);
            }
        }
    }

    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        let json = serde_json::to_string_pretty(self).map_err(|e| BenchError::Other(e.to_string()))?;
        std::fs::write(path, json + "\n").map_err(|e| BenchError::Io(path.display().to_string(), e))
    }

    /// The Markdown block that goes between the markers.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let when = crate::daemon::utc_timestamp();
        let _ = writeln!(t, "Produced by `{}` at {when}.", self.command);
        let _ = writeln!(t, "Machine: {}.", self.machine.line());
        let _ = writeln!(
            t,
            "Load average at start {:.2} / {:.2} / {:.2}, at end {:.2} / {:.2} / {:.2} (1/5/15 min).\n",
            self.load_avg_start.one,
            self.load_avg_start.five,
            self.load_avg_start.fifteen,
            self.load_avg_end.one,
            self.load_avg_end.five,
            self.load_avg_end.fifteen
        );
        let _ = writeln!(
            t,
            "| N | I (ms) | window (s) | load 1m | CPU % core (stat / sched) | µs CPU / round (stat / sched) | run-queue wait ms/s | rounds/s | RSS MiB | KiB/guest above idle | threads | vol. cs/s | detect p50 / p99 / max (ms) | jitter p99 (ms) | daemon misses | bench CPU % |"
        );
        let _ = writeln!(t, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|");
        for c in &self.server {
            let per_round = match (c.cpu_us_per_round, c.sched_cpu_us_per_round) {
                (Some(a), Some(b)) => format!("{a:.1} / {b:.1}"),
                _ => "–".to_string(),
            };
            let per_guest = c.rss_kib_per_guest_above_idle.map_or("–".to_string(), |v| format!("{v:.1}"));
            let detect = if c.detection.n == 0 {
                "–".to_string()
            } else {
                format!(
                    "{:.2} / {:.2} / {:.2} (n={}{})",
                    c.detection.p50_ms,
                    c.detection.p99_ms,
                    c.detection.max_ms,
                    c.detection.n,
                    if c.detection_missing > 0 { format!(", {} missing", c.detection_missing) } else { String::new() }
                )
            };
            let jitter = if c.jitter.n == 0 { "–".to_string() } else { format!("{:.2}", c.jitter.p99_ms) };
            let _ = writeln!(
                t,
                "| {} | {} | {:.0} | {:.2} | {:.3} / {:.3} | {} | {:.1} | {:.0} | {:.1} | {} | {} | {:.0} | {} | {} | {} | {:.1} |",
                c.guests,
                c.interval_ms,
                c.window_secs,
                c.load_avg_start.one,
                c.cpu_pct_of_core,
                c.sched_cpu_pct_of_core,
                per_round,
                c.runqueue_wait_ms_per_sec,
                c.rounds_per_sec,
                c.rss_kib as f64 / 1024.0,
                per_guest,
                c.threads,
                c.voluntary_ctxt_per_sec,
                detect,
                jitter,
                c.daemon_misses + c.unexpected_events,
                c.bench_cpu_pct_of_core
            );
        }
        match &self.agent {
            Some(a) => {
                let _ = writeln!(
                    t,
                    "\n| guestAgent | clients | target req/s | achieved req/s | errors | API p50 / p99 / max (ms) | events delivered | event p50 / p99 / max (ms) | agent CPU % core | RSS MiB | load 1m |"
                );
                let _ = writeln!(t, "|---|---:|---:|---:|---:|---|---:|---|---:|---:|---:|");
                let _ = writeln!(
                    t,
                    "| VIM API + events | {} | {} | {:.0} | {} | {:.2} / {:.2} / {:.2} | {} of {} | {:.2} / {:.2} / {:.2} | {:.1} | {:.1} | {:.2} |",
                    a.clients,
                    a.target_rate_per_sec,
                    a.achieved_rate_per_sec,
                    a.errors,
                    a.api_latency.p50_ms,
                    a.api_latency.p99_ms,
                    a.api_latency.max_ms,
                    a.events_delivered,
                    a.events_sent,
                    a.event_latency.p50_ms,
                    a.event_latency.p99_ms,
                    a.event_latency.max_ms,
                    a.agent_cpu_pct_of_core,
                    a.agent_rss_kib as f64 / 1024.0,
                    a.load_avg_start.one
                );
            }
            None => {
                let _ = writeln!(t, "\nguestAgent: {}", self.agent_note);
            }
        }
        t
    }

    /// Replaces the table in `doc` (creating the file or the markers if needed).
    pub fn update_doc(&self, doc: &Path) -> Result<(), BenchError> {
        let old = std::fs::read_to_string(doc).unwrap_or_else(|_| "# Performance\n".to_string());
        let block = format!("{TABLE_START}\n{}{TABLE_END}", self.table());
        let new = match (old.find(TABLE_START), old.find(TABLE_END)) {
            (Some(a), Some(b)) if a < b => format!("{}{block}{}", &old[..a], &old[b + TABLE_END.len()..]),
            _ => format!("{}\n{block}\n", old.trim_end()),
        };
        std::fs::write(doc, new).map_err(|e| BenchError::Io(doc.display().to_string(), e))
    }
}
