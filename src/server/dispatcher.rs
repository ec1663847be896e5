//! The guestServer dispatcher: the one thread that owns every instance and
//! all other mutable state (house rule 1). Every other thread (watcher,
//! per-socket readers, timer, UDP receiver, HTTP, signals, state saver) only
//! sends an [`Event`] on the one bounded inbox.
//!
//! Channels: the inbox is bounded (`INBOX`): a flooding guest or network
//! blocks its own reader/receiver thread, never the dispatcher. The
//! dispatcher never blocks on anything but its inbox: socket writes are
//! non-blocking (`ChannelWriter`), UDP sends are non-blocking, the state file
//! is written by the saver thread, and timer requests go on an unbounded
//! channel to the timer thread.
//!
//! Timers: the design card's timer thread sleeps until the wheel's next
//! deadline and sends `Event::Tick`; the dispatcher then fires what is due.
//! This costs a thread hop per expiry (docs/PERFORMANCE.md measures it: about
//! a sixth of the per-round CPU at 1,000 guests); waiting with
//! `recv_deadline` on the inbox would save it but departs from the card.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use gh_threads::guard::{ExitReason, ThreadExit};
use gh_threads::reader::CloseReason;
use gh_threads::timer::TimerHandle;
use gh_threads::udp::Datagram;
use gh_threads::watcher::WatchMsg;
use gh_threads::wheel::TimerWheel;

use super::config::Settings;
use super::instance::{HbConfig, TimerKind};
use super::metrics::Metrics;
use super::slots::Slot;
use super::statefile::Saver;
use super::status::{StatusReply, StatusRequest};
use crate::rng::Rng;
use crate::wire::guest::{Decoded, GuestMsg};

/// Capacity of the dispatcher's inbox.
pub const INBOX: usize = 8192;
/// Period of the channel-search audit (spec §3.6).
pub const SEARCH_AUDIT: Duration = Duration::from_secs(180);
/// READY retry period (spec §8.4).
pub const READY_RETRY: Duration = Duration::from_secs(5);
/// Coalescing delay of state-file writes.
pub const SAVE_DELAY: Duration = Duration::from_millis(20);

/// What a reader thread reports about its connection.
#[derive(Debug)]
pub enum ConnMsg {
    Guest(Decoded<GuestMsg>),
    TooLong { len: usize },
    RateLimited { dropped_lines: u64 },
    Closed(CloseReason),
}

/// Everything the dispatcher reacts to: one variant per source.
#[derive(Debug)]
pub enum Event {
    Watch(WatchMsg),
    Conn { conn: u64, msg: ConnMsg },
    Udp(Datagram),
    Tick(Instant),
    Status(StatusRequest, Sender<StatusReply>),
    Signal(i32),
    ThreadExit(ThreadExit),
}

/// Keys of the timer wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKey {
    Inst(u64, TimerKind),
    Ready,
    Search,
    Save,
    /// The earliest unacknowledged event's retry (`retransmit.rs`).
    Retransmit,
}

/// How the dispatcher ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM or SIGINT.
    Signal(i32),
    /// A singleton thread died: exit non-zero so supervision restarts us.
    ThreadDied(String),
    /// Every sender is gone.
    Disconnected,
}

/// The I/O endpoints the dispatcher uses without blocking.
pub struct Io {
    /// Sender handed to every new reader thread.
    pub tx: Sender<Event>,
    pub timer: TimerHandle,
    /// Non-blocking socket for datagrams to guestAgent.
    pub udp_tx: UdpSocket,
    pub saver: Saver,
}

/// All mutable guestServer state.
pub struct Dispatcher {
    pub(super) settings: Settings,
    pub(super) hb: HbConfig,
    pub(super) host_reporting: bool,
    pub(super) slots: HashMap<u64, Slot>,
    pub(super) by_uuid: HashMap<String, u64>,
    pub(super) by_conn: HashMap<u64, u64>,
    pub(super) wheel: TimerWheel<TimerKey>,
    pub(super) global_timers: HashMap<TimerKey, gh_threads::wheel::TimerId>,
    /// Earliest instant requested from the timer thread and not yet ticked.
    pub(super) requested: Option<Instant>,
    pub(super) rng: Rng,
    pub(super) next_id: u64,
    pub(super) metrics: Metrics,
    pub(super) agent: super::agent_link::AgentLink,
    pub(super) io: Io,
    pub(super) started: Instant,
}

impl Dispatcher {
    /// A dispatcher with no instances; `restore` and `start` follow.
    pub fn new(settings: Settings, io: Io, rng: Rng) -> Self {
        let agent = super::agent_link::AgentLink::new(&settings);
        Self {
            hb: settings.hb,
            settings,
            host_reporting: true,
            slots: HashMap::new(),
            by_uuid: HashMap::new(),
            by_conn: HashMap::new(),
            wheel: TimerWheel::new(),
            global_timers: HashMap::new(),
            requested: None,
            rng,
            next_id: 1,
            metrics: Metrics::default(),
            agent,
            io,
            started: Instant::now(),
        }
    }

    /// Start-up work after the threads run: scan the directory (the watcher
    /// is already armed, so nothing created meanwhile is missed), send READY
    /// and arm the audits.
    pub fn start(&mut self, now: Instant) {
        let present = self.rescan(now, true);
        self.adopt_leftovers(&present, now);
        self.send_ready(now);
        self.arm_global(TimerKey::Search, now + SEARCH_AUDIT);
        self.sync_timer_thread();
    }

    /// Runs until SIGTERM/SIGINT, a fatal thread exit, or disconnection.
    pub fn run(&mut self, rx: &Receiver<Event>) -> Exit {
        loop {
            let Ok(event) = rx.recv() else {
                return Exit::Disconnected;
            };
            if let Some(exit) = self.handle(event) {
                self.save_now();
                return exit;
            }
        }
    }

    /// Handles one event; `Some` means stop.
    pub fn handle(&mut self, event: Event) -> Option<Exit> {
        let now = Instant::now();
        match event {
            Event::Watch(msg) => self.on_watch(msg, now),
            Event::Conn { conn, msg } => self.on_conn(conn, msg, now),
            Event::Udp(dg) => self.on_datagram(dg, now),
            Event::Tick(_) => {
                self.requested = None;
                self.fire_timers(now);
            }
            Event::Status(req, reply) => {
                let _ = reply.try_send(self.status(req, now));
            }
            Event::Signal(sig) => {
                if let Some(exit) = self.on_signal(sig, now) {
                    return Some(exit);
                }
            }
            Event::ThreadExit(exit) => {
                let reason = match &exit.reason {
                    ExitReason::Finished => "finished".to_string(),
                    ExitReason::Error(e) => e.clone(),
                    ExitReason::Panicked(p) => format!("panicked: {p}"),
                };
                log::error!("thread {} exited ({reason}); stopping so supervision restarts us", exit.name);
                return Some(Exit::ThreadDied(exit.name));
            }
        }
        self.sync_timer_thread();
        None
    }

    fn on_watch(&mut self, msg: WatchMsg, now: Instant) {
        match msg {
            WatchMsg::Created(name) => {
                if let Some(name) = name.to_str() {
                    self.channel_add(name, now);
                }
            }
            WatchMsg::Deleted(name) => {
                if let Some(name) = name.to_str() {
                    self.channel_delete(name, now);
                }
            }
            WatchMsg::Modified(name) => {
                if let Some(name) = name.to_str() {
                    if self.channel_delete(name, now) {
                        self.channel_add(name, now);
                    }
                }
            }
            WatchMsg::Overflow => {
                log::warn!("inotify queue overflow: rescanning {}", self.settings.channel_dir.display());
                self.rescan(now, false);
            }
            WatchMsg::DirGone => {
                log::warn!("channel directory {} is gone; waiting for it", self.settings.channel_dir.display());
            }
            WatchMsg::DirBack => {
                log::info!("channel directory {} is back: rescanning", self.settings.channel_dir.display());
                self.rescan(now, false);
            }
        }
    }

    fn on_conn(&mut self, conn: u64, msg: ConnMsg, now: Instant) {
        let Some(&id) = self.by_conn.get(&conn) else {
            return; // a connection we already closed
        };
        match msg {
            ConnMsg::Guest(Decoded::Msg(_, m)) => {
                self.metrics.guest_msgs += 1;
                self.with_instance(id, now, |inst, ctx, out| inst.on_guest(m, ctx, out));
            }
            ConnMsg::Guest(Decoded::Nack(text)) => {
                self.metrics.guest_nacked += 1;
                self.with_instance(id, now, |inst, _, out| inst.nack(text, out));
            }
            ConnMsg::Guest(Decoded::Malformed(why)) => {
                self.metrics.guest_malformed += 1;
                self.guest_warn(id, now, &format!("dropped malformed line ({why})"));
            }
            ConnMsg::TooLong { len } => {
                self.metrics.guest_too_long += 1;
                self.guest_warn(id, now, &format!("discarding a line longer than {len} bytes"));
            }
            ConnMsg::RateLimited { dropped_lines } => {
                self.metrics.guest_rate_limited += dropped_lines;
                self.guest_warn(id, now, &format!("rate limit: dropped {dropped_lines} lines"));
            }
            ConnMsg::Closed(reason) => {
                self.by_conn.remove(&conn);
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.conn = None;
                }
                self.guest_log(id, now, log::Level::Info, &format!("channel closed ({reason:?})"));
                self.metrics.channel_closed += 1;
                self.with_instance(id, now, |inst, ctx, out| inst.on_closed(ctx, out));
            }
        }
    }

    fn on_signal(&mut self, sig: i32, now: Instant) -> Option<Exit> {
        match sig {
            libc::SIGTERM | libc::SIGINT => {
                log::info!("signal {sig}: exiting");
                return Some(Exit::Signal(sig));
            }
            libc::SIGHUP => self.reload(),
            libc::SIGUSR1 => {
                if let Err(e) = crate::daemon::write_health_file(&self.settings.health_file, "guestServer") {
                    log::warn!("cannot write {}: {e}", self.settings.health_file.display());
                }
            }
            libc::SIGUSR2 => self.dump(now),
            other => log::debug!("ignoring signal {other}"),
        }
        None
    }

    fn reload(&mut self) {
        let flags = super::config::Flags { config: self.settings.config.clone(), ..Default::default() };
        let result = super::config::load_ini(&flags).and_then(|ini| Settings::resolve(&flags, &ini));
        match result {
            Ok(new) => {
                self.hb = new.hb;
                self.settings.hb = new.hb;
                self.settings.limits = new.limits;
                self.settings.max_instances = new.max_instances;
                log::set_max_level(new.log_level);
                log::info!("configuration reloaded: {:?}, {:?}", new.hb, new.limits);
            }
            Err(e) => log::error!("reload failed, keeping the running configuration: {e}"),
        }
    }

    fn dump(&self, now: Instant) {
        log::info!(
            "state: host reporting {}, {} instances, up {:?}, agent {:?}",
            self.host_reporting,
            self.slots.len(),
            now.duration_since(self.started),
            self.agent.peer
        );
        for slot in self.slots.values() {
            let i = &slot.inst;
            log::info!(
                "  {} {} link {:?} hb {} heartbeating {} reporting {} failed {} misses {} interval {} ms",
                i.uuid,
                i.params.name,
                i.link,
                i.hb.name(),
                i.heartbeating,
                i.reporting,
                i.failed,
                i.b2b_misses,
                i.params.heartbeat_interval_ms
            );
        }
    }

    /// Fires every due timer.
    fn fire_timers(&mut self, now: Instant) {
        while let Some((id, key)) = self.wheel.pop_expired(now) {
            match key {
                TimerKey::Inst(slot, kind) => {
                    let Some(s) = self.slots.get_mut(&slot) else {
                        continue;
                    };
                    if s.timers.get(&kind) != Some(&id) {
                        continue;
                    }
                    s.timers.remove(&kind);
                    self.with_instance(slot, now, |inst, ctx, out| inst.on_timer(kind, ctx, out));
                }
                TimerKey::Ready => {
                    self.global_timers.remove(&key);
                    self.send_ready(now);
                }
                TimerKey::Search => {
                    self.global_timers.remove(&key);
                    self.rescan(now, false);
                    self.arm_global(TimerKey::Search, now + SEARCH_AUDIT);
                }
                TimerKey::Save => {
                    self.global_timers.remove(&key);
                    self.save_now();
                }
                TimerKey::Retransmit => {
                    self.global_timers.remove(&key);
                    self.retransmit_due(now);
                }
            }
        }
    }

    /// Arms (or re-arms) a global timer.
    pub(super) fn arm_global(&mut self, key: TimerKey, at: Instant) {
        if let Some(old) = self.global_timers.remove(&key) {
            self.wheel.cancel(old);
        }
        let id = self.wheel.insert(at, key);
        self.global_timers.insert(key, id);
    }

    /// Asks the timer thread to wake us for the wheel's next deadline.
    fn sync_timer_thread(&mut self) {
        if let Some(next) = self.wheel.next_deadline() {
            if self.requested.is_none_or(|r| next < r) {
                self.io.timer.wake_at(next);
                self.requested = Some(next);
            }
        }
    }

    /// Marks the state file dirty; it is written shortly after.
    pub(super) fn persist(&mut self, now: Instant) {
        if !self.global_timers.contains_key(&TimerKey::Save) {
            self.arm_global(TimerKey::Save, now + SAVE_DELAY);
        }
    }

    /// Hands a snapshot to the saver thread.
    pub(super) fn save_now(&mut self) {
        let snapshot = self.snapshot();
        match serde_json::to_vec_pretty(&snapshot) {
            Ok(bytes) => {
                self.metrics.state_saves += 1;
                self.io.saver.save(bytes);
            }
            Err(e) => log::error!("cannot serialise state: {e}"),
        }
    }
}
