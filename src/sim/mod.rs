//! guest-sim library: one process playing QEMU and N guests. Each guest owns
//! a listening `cgcs.heartbeat.<uuid>.sock` in a directory (what QEMU creates
//! for guestServer to connect to) and speaks the guest protocol on the
//! accepted connection, driven by the same `guest::fsm::Heartbeat` machine as
//! the real guest-client, with scripted behaviours on top.
//!
//! Threads: one small thread per guest ("sim-<i>", 64 KiB stack) that blocks
//! in `poll` on its listener or connection with a 500 ms tick. Why not one
//! poll loop: per-guest threads keep each guest's code a straight-line
//! sequence (a slow guest simply sleeps before answering) and 1,000 idle
//! threads cost about 64 MiB of reserved (mostly untouched) stack and a
//! couple of thousand cheap wake-ups per second. Nothing is shared between
//! guests: control goes in through a per-guest channel, events come out
//! through one channel, counters come back on join.

mod guest;

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, Sender};
use serde::Serialize;

use crate::wire::vocab::{CorrectiveAction, EventType, NotificationType, VoteResult};
pub use guest::GuestCounters;

/// How a guest answers challenges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers every challenge at once, healthy.
    Healthy,
    /// Answers nothing at all (connection stays open).
    Silent,
    /// Answers each challenge after this delay.
    Slow(Duration),
    /// Answers `unhealthy` with this corrective action.
    Unhealthy(CorrectiveAction),
    /// Healthy, but sends a garbage line and an over-long line before
    /// every answer.
    Garbage,
}

/// How a guest votes on revocable `action_notify` (irrevocable ones are
/// always answered `complete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    Accept,
    Reject,
    /// Never answers (the host's vote timer decides).
    Ignore,
}

/// What one guest does over time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPlan {
    pub behaviour: Behaviour,
    pub vote: Vote,
    /// `(at, behaviour)`: switch behaviour at `at` after the sim started.
    pub schedule: Vec<(Duration, Behaviour)>,
    /// Disconnect (close the connection, remove the socket) every this
    /// long, staying away for `flap_down`, then re-create the socket.
    pub flap_every: Option<Duration>,
}

impl Default for GuestPlan {
    fn default() -> Self {
        GuestPlan { behaviour: Behaviour::Healthy, vote: Vote::Accept, schedule: Vec::new(), flap_every: None }
    }
}

/// Everything a simulation needs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub dir: PathBuf,
    pub count: usize,
    pub seed: u64,
    /// `heartbeat_interval_ms` announced in init.
    pub interval_ms: u32,
    /// Resend init every this long until acked.
    pub init_retry: Duration,
    /// How long a flapping guest stays away.
    pub flap_down: Duration,
    /// Per-guest plans; guests without one are healthy.
    pub plans: Vec<(usize, GuestPlan)>,
    /// Send `SimEvent`s (unbounded channel: read them, or leave this off).
    pub events: bool,
}

impl SimConfig {
    pub fn new(dir: impl Into<PathBuf>, count: usize) -> Self {
        SimConfig {
            dir: dir.into(),
            count,
            seed: 1,
            interval_ms: 1000,
            init_retry: Duration::from_secs(5),
            flap_down: Duration::from_secs(2),
            plans: Vec::new(),
            events: false,
        }
    }
}

/// What a guest saw or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimEventKind {
    Listening,
    Connected,
    Disconnected,
    InitSent(u32),
    InitAcked(u32),
    ChallengeAnswered(u32),
    ChallengeIgnored(u32),
    Notify { event: EventType, notification: NotificationType, answered: Option<VoteResult> },
    BadLine(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimEvent {
    pub guest: usize,
    pub kind: SimEventKind,
    /// When the guest thread saw or did it (for timing measurements: the
    /// stream may be read much later).
    pub at: std::time::Instant,
}

/// Per-guest control messages.
#[derive(Debug, Clone)]
enum Control {
    Behaviour(Behaviour),
    Vote(Vote),
}

/// Counters of every guest, in index order.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub guests: Vec<GuestCounters>,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot prepare {0}")]
    Dir(PathBuf, #[source] std::io::Error),
    #[error("cannot start guest {0}")]
    Guest(usize, #[source] std::io::Error),
}

/// A running simulation. Dropping it without `stop` stops it too.
#[derive(Debug)]
pub struct SimHandle {
    uuids: Vec<String>,
    dir: PathBuf,
    controls: Vec<Sender<Control>>,
    stop: Option<Sender<()>>,
    threads: Vec<JoinHandle<GuestCounters>>,
    events: Option<Receiver<SimEvent>>,
}

/// Starting point of the simulator.
pub struct Sim;

impl Sim {
    /// Raises RLIMIT_NOFILE, creates the directory and every guest's
    /// listening socket (all exist when this returns), starts the guests.
    pub fn start(cfg: SimConfig) -> Result<SimHandle, SimError> {
        if let Err(e) = raise_nofile_limit() {
            log::warn!("cannot raise RLIMIT_NOFILE: {e}");
        }
        std::fs::create_dir_all(&cfg.dir).map_err(|e| SimError::Dir(cfg.dir.clone(), e))?;
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let (ev_tx, ev_rx) = unbounded();
        let ev_tx = cfg.events.then_some(ev_tx);
        let started = std::time::Instant::now();
        let mut h = SimHandle {
            uuids: Vec::new(),
            dir: cfg.dir.clone(),
            controls: Vec::new(),
            stop: Some(stop_tx),
            threads: Vec::new(),
            events: cfg.events.then_some(ev_rx),
        };
        for i in 0..cfg.count {
            let uuid = uuid_for(cfg.seed, i);
            let plan = cfg.plans.iter().rev().find(|(idx, _)| *idx == i).map(|(_, p)| p.clone()).unwrap_or_default();
            let (ctl_tx, ctl_rx) = unbounded();
            let g = guest::GuestSetup {
                index: i,
                path: socket_path(&cfg.dir, &uuid),
                name: format!("sim-{i}"),
                seed: cfg.seed ^ ((i as u64 + 1) << 20),
                interval_ms: cfg.interval_ms,
                init_retry: cfg.init_retry,
                flap_down: cfg.flap_down,
                plan,
                started,
                control: ctl_rx,
                stop: stop_rx.clone(),
                events: ev_tx.clone(),
            };
            let t = guest::spawn(g).map_err(|e| SimError::Guest(i, e))?;
            h.uuids.push(uuid);
            h.controls.push(ctl_tx);
            h.threads.push(t);
        }
        Ok(h)
    }
}

impl SimHandle {
    /// The uuid of guest `i` (panics if out of range, like indexing).
    pub fn uuid(&self, i: usize) -> &str {
        &self.uuids[i]
    }

    pub fn count(&self) -> usize {
        self.uuids.len()
    }

    /// The socket path of guest `i`.
    pub fn socket(&self, i: usize) -> PathBuf {
        socket_path(&self.dir, &self.uuids[i])
    }

    /// Changes guest `i`'s behaviour from now on.
    pub fn set_behaviour(&self, i: usize, b: Behaviour) {
        if let Some(c) = self.controls.get(i) {
            let _ = c.send(Control::Behaviour(b));
        }
    }

    /// Changes guest `i`'s vote from now on.
    pub fn set_vote(&self, i: usize, v: Vote) {
        if let Some(c) = self.controls.get(i) {
            let _ = c.send(Control::Vote(v));
        }
    }

    /// The event stream (only when `SimConfig::events` was set).
    pub fn events(&self) -> Option<&Receiver<SimEvent>> {
        self.events.as_ref()
    }

    /// Stops every guest (within about 500 ms), removes the sockets and
    /// returns the counters.
    pub fn stop(mut self) -> Report {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Report {
        self.stop.take();
        let guests = self
            .threads
            .drain(..)
            .enumerate()
            .map(|(i, t)| t.join().unwrap_or_else(|_| GuestCounters::panicked(i)))
            .collect();
        Report { guests }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.stop_inner();
        }
    }
}

/// `<dir>/cgcs.heartbeat.<uuid>.sock`.
pub fn socket_path(dir: &Path, uuid: &str) -> PathBuf {
    dir.join(format!("cgcs.heartbeat.{uuid}.sock"))
}

/// A deterministic version-4-shaped uuid for guest `index` under `seed`.
pub fn uuid_for(seed: u64, index: usize) -> String {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let a = mix(seed ^ (index as u64).wrapping_mul(0x1000_0000_01B3));
    let b = mix(a ^ index as u64);
    let hi = (a & 0xFFFF_FFFF_FFFF_0FFF) | 0x4000;
    let lo = (b & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xFFFF,
        hi & 0xFFFF,
        lo >> 48,
        lo & 0xFFFF_FFFF_FFFF
    )
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new value.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `r` is a valid rlimit the kernel fills in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    r.rlim_cur = r.rlim_max;
    // SAFETY: `r` is a valid rlimit; soft = hard is always permitted.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_deterministic_distinct_and_well_formed() {
        let a: Vec<String> = (0..1000).map(|i| uuid_for(7, i)).collect();
        assert_eq!(a[3], uuid_for(7, 3));
        assert_ne!(a[3], uuid_for(8, 3));
        let set: std::collections::HashSet<_> = a.iter().collect();
        assert_eq!(set.len(), 1000);
        for u in &a {
            assert_eq!(u.len(), 36);
            assert!(!u.contains('.'));
            let parts: Vec<usize> = u.split('-').map(str::len).collect();
            assert_eq!(parts, vec![8, 4, 4, 4, 12]);
            assert_eq!(&u[14..15], "4");
        }
    }
}
