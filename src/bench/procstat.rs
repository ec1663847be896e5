//! Resource figures of another process from `/proc` (runs on the bench's
//! main thread): CPU time (user + sys, all threads, from `/proc/<pid>/stat`),
//! resident memory and thread count (`/proc/<pid>/status`) and context
//! switches summed over every thread (`/proc/<pid>/task/*/status`; the
//! process-level file only counts the main thread).

use std::path::Path;
use std::time::Instant;

use super::BenchError;

/// One sample of a process.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub at: Instant,
    /// user + system CPU of all threads, in seconds.
    pub cpu_secs: f64,
    pub user_secs: f64,
    pub sys_secs: f64,
    pub rss_kib: u64,
    pub threads: u64,
    pub voluntary_ctxt: u64,
    pub involuntary_ctxt: u64,
    /// On-CPU time summed over threads from `task/*/schedstat` (ns
    /// resolution, unlike the 10 ms ticks of `stat`).
    pub sched_run_secs: f64,
    /// Time threads spent runnable but waiting for a CPU: the machine's
    /// contention as this process felt it.
    pub sched_wait_secs: f64,
}

/// Clock ticks per second for `/proc/<pid>/stat` times.
fn clk_tck() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Reads a sample of process `pid`.
pub fn sample(pid: u32) -> Result<ProcSample, BenchError> {
    let at = Instant::now();
    let base = format!("/proc/{pid}");
    let stat = read(&format!("{base}/stat"))?;
    let (user_secs, sys_secs) = parse_stat_times(&stat).ok_or_else(|| BenchError::Proc(pid, "stat".into()))?;
    let status = read(&format!("{base}/status"))?;
    let rss_kib = status_field(&status, "VmRSS:").unwrap_or(0);
    let threads = status_field(&status, "Threads:").unwrap_or(0);
    let (mut voluntary_ctxt, mut involuntary_ctxt) = (0, 0);
    let (mut run_ns, mut wait_ns) = (0u64, 0u64);
    let tasks = std::fs::read_dir(format!("{base}/task")).map_err(|e| BenchError::Io(format!("{base}/task"), e))?;
    for task in tasks.flatten() {
        // A thread may exit between listing and reading: skip it.
        let Ok(s) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        voluntary_ctxt += status_field(&s, "voluntary_ctxt_switches:").unwrap_or(0);
        involuntary_ctxt += status_field(&s, "nonvoluntary_ctxt_switches:").unwrap_or(0);
        if let Ok(ss) = std::fs::read_to_string(task.path().join("schedstat")) {
            let mut it = ss.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
            run_ns += it.next().unwrap_or(0);
            wait_ns += it.next().unwrap_or(0);
        }
    }
    Ok(ProcSample {
        at,
        cpu_secs: user_secs + sys_secs,
        user_secs,
        sys_secs,
        rss_kib,
        threads,
        voluntary_ctxt,
        involuntary_ctxt,
        sched_run_secs: run_ns as f64 / 1e9,
        sched_wait_secs: wait_ns as f64 / 1e9,
    })
}

fn read(path: &str) -> Result<String, BenchError> {
    std::fs::read_to_string(Path::new(path)).map_err(|e| BenchError::Io(path.to_string(), e))
}

/// utime and stime (fields 14 and 15) in seconds. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted after the last ')'.
pub fn parse_stat_times(stat: &str) -> Option<(f64, f64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14 -> index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let tck = clk_tck();
    Some((utime as f64 / tck, stime as f64 / tck))
}

/// The first number after `key` in a `/proc/*/status` text.
pub fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Figures over the interval between two samples.
#[derive(Debug, Clone, Copy)]
pub struct ProcDelta {
    pub secs: f64,
    pub cpu_secs: f64,
    pub user_secs: f64,
    pub sys_secs: f64,
    pub voluntary_ctxt: u64,
    pub involuntary_ctxt: u64,
    pub sched_run_secs: f64,
    pub sched_wait_secs: f64,
}

impl ProcDelta {
    pub fn between(a: &ProcSample, b: &ProcSample) -> Self {
        ProcDelta {
            secs: b.at.saturating_duration_since(a.at).as_secs_f64(),
            cpu_secs: b.cpu_secs - a.cpu_secs,
            user_secs: b.user_secs - a.user_secs,
            sys_secs: b.sys_secs - a.sys_secs,
            voluntary_ctxt: b.voluntary_ctxt.saturating_sub(a.voluntary_ctxt),
            involuntary_ctxt: b.involuntary_ctxt.saturating_sub(a.involuntary_ctxt),
            sched_run_secs: b.sched_run_secs - a.sched_run_secs,
            sched_wait_secs: b.sched_wait_secs - a.sched_wait_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_survive_odd_command_names() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 2 3";
        let (u, s) = parse_stat_times(stat).unwrap();
        let tck = clk_tck();
        assert!((u - 250.0 / tck).abs() < 1e-9 && (s - 50.0 / tck).abs() < 1e-9);
    }

    #[test]
    fn own_process_can_be_sampled() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.threads >= 1 && s.rss_kib > 0);
        assert_eq!(status_field("Threads:\t7\n", "Threads:"), Some(7));
    }
}
