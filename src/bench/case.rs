//! One bench case: guestServer with N simulated guests at interval I and
//! the UDP sink, a warm-up until every guest is heartbeating, a steady
//! measurement window during which a sample of guests goes silent at known
//! instants, then the analysis. Runs on the bench's main thread; the sim's
//! event stream is drained by thread "bench-simev" (batches every 20 ms, so
//! it wakes rarely; the events carry their own timestamps).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError};
use serde::Serialize;

use super::machine::LoadAvg;
use super::procstat::{sample, ProcDelta};
use super::server::{count_log, ServerProc, FAILURE_THRESHOLD};
use super::sink::{Sink, SinkEvent};
use super::stats::Summary;
use super::BenchError;
use crate::sim::{Behaviour, Sim, SimConfig, SimEvent, SimEventKind};
use crate::wire::envelope::cmd;

/// What to run.
#[derive(Debug, Clone)]
pub struct CaseSpec {
    pub guests: usize,
    pub interval_ms: u32,
    pub window: Duration,
    pub settle: Duration,
    /// Guests made silent during the window (0 = none).
    pub silent: usize,
    pub server_bin: PathBuf,
    pub scratch: PathBuf,
    /// Nice value of the simulated guests' threads (0 = same as the daemon).
    pub sim_nice: i32,
    /// Pin guestServer to CPU 0 and the sim to the other CPUs.
    pub pin: bool,
}

/// The figures of one case (see docs/PERFORMANCE.md for definitions).
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub guests: usize,
    pub interval_ms: u32,
    pub window_secs: f64,
    pub load_avg_start: LoadAvg,
    pub load_avg_end: LoadAvg,
    /// Seconds from start until every guest was heartbeating.
    pub ramp_secs: f64,
    pub cpu_pct_of_core: f64,
    pub cpu_user_pct: f64,
    pub cpu_sys_pct: f64,
    pub rounds: u64,
    pub rounds_per_sec: f64,
    /// From `/proc/<pid>/stat` (10 ms ticks).
    pub cpu_us_per_round: Option<f64>,
    /// On-CPU time from per-thread schedstat (ns resolution), % of a core.
    pub sched_cpu_pct_of_core: f64,
    /// The same per round: the precise figure for small windows.
    pub sched_cpu_us_per_round: Option<f64>,
    /// Runnable-but-waiting time of guestServer's threads, ms per second:
    /// how much the machine's other load delayed the daemon.
    pub runqueue_wait_ms_per_sec: f64,
    pub rss_kib: u64,
    /// (RSS − RSS of the 0-guest case at the same interval) / guests.
    pub rss_kib_per_guest_above_idle: Option<f64>,
    pub threads: u64,
    pub voluntary_ctxt_per_sec: f64,
    pub involuntary_ctxt_per_sec: f64,
    /// LOSS time at the sink minus the protocol deadline.
    pub detection: Summary,
    /// Silenced guests with no ignored challenge or no LOSS at the sink.
    pub detection_missing: usize,
    /// Of those: a STOPPED came but no LOSS (reporting was not enabled).
    pub detection_stopped_only: usize,
    /// |challenge period − interval| seen by the guests.
    pub jitter: Summary,
    /// Challenge period − interval, mean (ms): systematic drift per round.
    pub period_excess_mean_ms: f64,
    /// "Heartbeat Miss" log lines of guests that were never silenced.
    pub daemon_misses: u64,
    /// LOSS or STOPPED events of guests that were never silenced.
    pub unexpected_events: u64,
    /// CPU of the bench process itself (sim + sink), % of a core.
    pub bench_cpu_pct_of_core: f64,
    pub sim_nice: i32,
    pub pinned: bool,
    pub server_alive_at_end: bool,
}

/// A challenge a guest received.
#[derive(Debug, Clone, Copy)]
struct Challenge {
    at: Instant,
    answered: bool,
}

/// Drains the sim's event stream into per-guest challenge lists.
struct SimEvents {
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<JoinHandle<HashMap<usize, Vec<Challenge>>>>,
}

impl SimEvents {
    fn spawn(events: Receiver<SimEvent>) -> Result<Self, BenchError> {
        let (stop, stop_rx) = bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("bench-simev".into())
            .spawn(move || {
                let mut by_guest: HashMap<usize, Vec<Challenge>> = HashMap::new();
                loop {
                    for e in events.try_iter() {
                        let answered = match e.kind {
                            SimEventKind::ChallengeAnswered(_) => true,
                            SimEventKind::ChallengeIgnored(_) => false,
                            _ => continue,
                        };
                        by_guest.entry(e.guest).or_default().push(Challenge { at: e.at, answered });
                    }
                    if let Err(RecvTimeoutError::Disconnected) = stop_rx.recv_timeout(Duration::from_millis(20)) {
                        return by_guest;
                    }
                }
            })
            .map_err(|e| BenchError::Io("spawn bench-simev".into(), e))?;
        Ok(SimEvents { stop: Some(stop), thread: Some(thread) })
    }

    fn finish(mut self) -> HashMap<usize, Vec<Challenge>> {
        self.stop.take();
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

impl Drop for SimEvents {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs one case.
pub fn run(spec: &CaseSpec) -> Result<CaseResult, BenchError> {
    let dir = spec.scratch.join(format!("n{}i{}", spec.guests, spec.interval_ms));
    let _ = std::fs::remove_dir_all(&dir);
    let channels = dir.join("ch");
    std::fs::create_dir_all(&channels).map_err(|e| BenchError::Io(channels.display().to_string(), e))?;
    let interval = Duration::from_millis(u64::from(spec.interval_ms));
    let load_avg_start = LoadAvg::now();
    let started = Instant::now();

    let sink = Sink::start()?;
    // The server first (it finds the sockets through its directory watch),
    // so it does not inherit the sim's lower priority.
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let pin = spec.pin && cpus >= 2;
    let mut server = ServerProc::start(&spec.server_bin, &dir, &channels, sink.addr()?, pin.then_some(0..1))?;
    let mut cfg = SimConfig::new(&channels, spec.guests);
    cfg.interval_ms = spec.interval_ms;
    cfg.events = true;
    let sim = start_sim(cfg, spec.sim_nice, pin.then_some(1..cpus))?;
    let simev = match sim.events() {
        Some(rx) => SimEvents::spawn(rx.clone())?,
        None => return Err(BenchError::Other("sim has no event stream".into())),
    };
    let mut sink_log: Vec<SinkEvent> = Vec::new();

    // READY, then reporting enabled for every guest (paced: the server's UDP
    // receive buffer is finite), then wait until all are heartbeating.
    wait_sink(&sink, &mut sink_log, Duration::from_secs(15), |log| log.iter().any(|e| e.cmd == cmd::MONITOR_READY))
        .ok_or_else(|| BenchError::Other("no READY from guestServer".into()))?;
    for i in 0..spec.guests {
        sink.enable(server.listen, sim.uuid(i))?;
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let ramp_limit = Duration::from_secs(30) + Duration::from_millis(10 * spec.guests as u64);
    let uuids: Vec<String> = (0..spec.guests).map(|i| sim.uuid(i).to_string()).collect();
    let all: HashSet<&str> = uuids.iter().map(String::as_str).collect();
    wait_sink(&sink, &mut sink_log, ramp_limit, |log| {
        let running: HashSet<&str> =
            log.iter().filter(|e| e.cmd == cmd::HEARTBEAT_RUNNING).filter_map(|e| e.uuid.as_deref()).collect();
        all.iter().all(|u| running.contains(u))
    })
    .ok_or_else(|| BenchError::Other(format!("not all {} guests heartbeating within {ramp_limit:?}", spec.guests)))?;
    let ramp_secs = started.elapsed().as_secs_f64();
    std::thread::sleep(spec.settle);

    // The steady window.
    let silent: Vec<usize> = (0..spec.silent.min(spec.guests)).map(|k| k * spec.guests / spec.silent.max(1)).collect();
    let loss_after = interval * (FAILURE_THRESHOLD + 2);
    let span = spec.window.saturating_sub(loss_after + Duration::from_millis(500));
    let me = std::process::id();
    let bench0 = sample(me)?;
    let s0 = sample(server.pid())?;
    let t0 = s0.at;
    let mut silenced: HashMap<usize, Instant> = HashMap::new();
    for (k, &g) in silent.iter().enumerate() {
        let offset = spec.window / 10 + span.mul_f64(k as f64 / silent.len().max(1) as f64) / 2;
        // Enabled again just before: one of the thousands of paced MOD_INSTs
        // of the warm-up may have been dropped by a full receive buffer.
        sink.enable(server.listen, &uuids[g])?;
        sleep_until(t0 + offset);
        sim.set_behaviour(g, Behaviour::Silent);
        silenced.insert(g, Instant::now());
    }
    sleep_until(t0 + spec.window);
    let s1 = sample(server.pid())?;
    let bench1 = sample(me)?;
    let t1 = s1.at;
    // Let the last losses arrive.
    if !silenced.is_empty() {
        std::thread::sleep(loss_after + Duration::from_millis(500));
    }
    let server_alive_at_end = server.alive();
    let load_avg_end = LoadAvg::now();
    sink_log.extend(sink.poll(Duration::from_millis(50)));
    server.stop();
    drop(sim);
    let challenges = simev.finish();
    drop(sink);

    let d = ProcDelta::between(&s0, &s1);
    let bd = ProcDelta::between(&bench0, &bench1);
    let in_window = |c: &Challenge| c.at >= t0 && c.at <= t1;
    let rounds: u64 = challenges.values().flat_map(|v| v.iter()).filter(|c| c.answered && in_window(c)).count() as u64;

    // Jitter: consecutive challenges of guests never silenced.
    let mut jitter = Vec::new();
    let mut excess_sum = 0.0;
    for (g, list) in &challenges {
        if silenced.contains_key(g) {
            continue;
        }
        for w in list.windows(2) {
            if in_window(&w[0]) && in_window(&w[1]) {
                let excess = (w[1].at - w[0].at).as_secs_f64() * 1000.0 - f64::from(spec.interval_ms);
                excess_sum += excess;
                jitter.push(excess.abs());
            }
        }
    }
    let period_excess_mean_ms = if jitter.is_empty() { 0.0 } else { excess_sum / jitter.len() as f64 };

    // Detection: first ignored challenge after the silence, + (T+1) intervals.
    let mut detection = Vec::new();
    let mut detection_missing = 0;
    let mut detection_stopped_only = 0;
    let silent_uuids: HashMap<String, usize> = silenced.keys().map(|&g| (uuids[g].clone(), g)).collect();
    for (&g, &at) in &silenced {
        let first_ignored = challenges.get(&g).and_then(|l| l.iter().find(|c| !c.answered && c.at >= at));
        let uuid = uuids[g].as_str();
        let loss = sink_log.iter().find(|e| e.cmd == cmd::HEARTBEAT_LOSS && e.uuid.as_deref() == Some(uuid));
        match (first_ignored, loss) {
            (Some(c), Some(l)) => {
                let deadline = c.at + interval * (FAILURE_THRESHOLD + 1);
                let ms = if l.at >= deadline {
                    (l.at - deadline).as_secs_f64() * 1000.0
                } else {
                    -((deadline - l.at).as_secs_f64() * 1000.0)
                };
                detection.push(ms);
            }
            _ => {
                detection_missing += 1;
                let stopped =
                    sink_log.iter().any(|e| e.cmd == cmd::HEARTBEAT_STOPPED && e.uuid.as_deref() == Some(uuid));
                if stopped {
                    detection_stopped_only += 1;
                }
            }
        }
    }
    let unexpected_events = sink_log
        .iter()
        .filter(|e| e.at >= t0 && matches!(e.cmd, cmd::HEARTBEAT_LOSS | cmd::HEARTBEAT_STOPPED))
        .filter(|e| e.uuid.as_ref().is_none_or(|u| !silent_uuids.contains_key(u)))
        .count() as u64;
    let silent_tags: Vec<String> = silent_uuids.keys().map(|u| u[u.len().saturating_sub(12)..].to_string()).collect();
    let daemon_misses = count_log(&server.log, "Heartbeat Miss", &silent_tags);

    let secs = d.secs.max(1e-9);
    Ok(CaseResult {
        guests: spec.guests,
        interval_ms: spec.interval_ms,
        window_secs: d.secs,
        load_avg_start,
        load_avg_end,
        ramp_secs,
        cpu_pct_of_core: 100.0 * d.cpu_secs / secs,
        cpu_user_pct: 100.0 * d.user_secs / secs,
        cpu_sys_pct: 100.0 * d.sys_secs / secs,
        rounds,
        rounds_per_sec: rounds as f64 / secs,
        cpu_us_per_round: (rounds > 0).then(|| d.cpu_secs * 1e6 / rounds as f64),
        sched_cpu_pct_of_core: 100.0 * d.sched_run_secs / secs,
        sched_cpu_us_per_round: (rounds > 0).then(|| d.sched_run_secs * 1e6 / rounds as f64),
        runqueue_wait_ms_per_sec: 1000.0 * d.sched_wait_secs / secs,
        rss_kib: s1.rss_kib,
        rss_kib_per_guest_above_idle: None,
        threads: s1.threads,
        voluntary_ctxt_per_sec: d.voluntary_ctxt as f64 / secs,
        involuntary_ctxt_per_sec: d.involuntary_ctxt as f64 / secs,
        detection: Summary::of(detection),
        detection_missing,
        detection_stopped_only,
        jitter: Summary::of(jitter),
        period_excess_mean_ms,
        daemon_misses,
        unexpected_events,
        bench_cpu_pct_of_core: 100.0 * bd.cpu_secs / bd.secs.max(1e-9),
        sim_nice: spec.sim_nice,
        pinned: pin,
        server_alive_at_end,
    })
}

/// Starts the sim from a helper thread that first lowers its own priority:
/// Linux nice values are per thread and inherited by the threads it spawns,
/// so every guest thread runs at `nice` while the bench's main thread (and
/// guestServer) keep theirs. The guests stand in for VMs, which run on other
/// cores in production; at a lower priority their wake-ups do not preempt the
/// daemon being measured on this small machine.
fn start_sim(
    cfg: SimConfig,
    nice: i32,
    cpus: Option<std::ops::Range<usize>>,
) -> Result<crate::sim::SimHandle, BenchError> {
    let t = std::thread::Builder::new()
        .name("bench-simstart".into())
        .spawn(move || {
            if let Some(cpus) = cpus {
                if let Err(e) = super::server::pin_current(cpus) {
                    log::warn!("cannot pin the sim: {e}");
                }
            }
            if nice != 0 {
                // SAFETY: setpriority on the calling thread (who = 0) has no memory-safety preconditions.
                if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
                    log::warn!("cannot renice the sim: {}", std::io::Error::last_os_error());
                }
            }
            Sim::start(cfg)
        })
        .map_err(|e| BenchError::Io("spawn bench-simstart".into(), e))?;
    match t.join() {
        Ok(r) => r.map_err(|e| BenchError::Other(e.to_string())),
        Err(_) => Err(BenchError::Other("sim start panicked".into())),
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Collects sink events until `done(log)` holds; `None` on timeout.
fn wait_sink(
    sink: &Sink,
    log: &mut Vec<SinkEvent>,
    limit: Duration,
    done: impl Fn(&[SinkEvent]) -> bool,
) -> Option<()> {
    let deadline = Instant::now() + limit;
    loop {
        log.extend(sink.poll(Duration::from_millis(50)));
        if done(log) {
            return Some(());
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}

/// Scratch directory helper: short, because UNIX socket paths are limited to 108 bytes.
pub fn scratch_dir(base: Option<&Path>) -> PathBuf {
    base.map(Path::to_path_buf).unwrap_or_else(|| std::env::temp_dir().join(format!("ghb{}", std::process::id())))
}
