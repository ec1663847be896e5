//! `State`: everything guestAgent knows, owned by the dispatcher thread and
//! changed only through `&mut self` (house rule 1). This file holds the
//! shared plumbing: sending commands to guestServers and READY to mtcAgent,
//! the timer wheel, rate-limited warnings and persistence. The handlers live
//! next to their message family (`link`, `mtc`, `audit`, `events`, `api`).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use gh_threads::ratelimit::{LogDecision, LogLimiter};
use gh_threads::timer::TimerHandle;
use gh_threads::wheel::{TimerId, TimerWheel};

use super::config::Settings;
use super::inventory::{Inventory, Outgoing};
use super::link::encode_keyed;
use super::mtc::ready_datagram;
use super::outbox::{Backoff, Outbox};
use super::persist::{self, Persisted};
use super::vim_sender::VimJob;

/// Something that can be asked for a tick at an instant (the timer thread,
/// or a recorder in tests).
pub trait Wake: Send {
    fn wake_at(&self, at: Instant);
}

impl Wake for TimerHandle {
    fn wake_at(&self, at: Instant) {
        TimerHandle::wake_at(self, at)
    }
}

impl Wake for Sender<Instant> {
    fn wake_at(&self, at: Instant) {
        let _ = self.send(at);
    }
}

/// The dispatcher's outputs.
pub struct Io {
    /// Sends to guestServers and mtcAgent; bound to the floating address so
    /// that guestServers answer to an address we listen on.
    pub udp: UdpSocket,
    pub events_tx: Sender<VimJob>,
    pub query_tx: Sender<VimJob>,
    pub waker: Box<dyn Wake>,
}

/// What the timer wheel can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKey {
    Audit,
    MtcReady,
    Outbox,
}

/// Plain counters for /metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub datagrams_in: u64,
    pub bad_datagrams: u64,
    pub udp_sent: u64,
    pub udp_send_errors: u64,
    pub vim_jobs_refused: u64,
    pub ready_sent: u64,
    pub audits: u64,
    pub events_acked: u64,
    pub events_duplicate: u64,
    /// Events with an id not taken: the outbox was full of undroppable events.
    pub events_refused: u64,
    /// Acks not sent because the outbox file could not be written.
    pub acks_withheld: u64,
    pub rejected_source: u64,
    /// Datagrams dropped because their HMAC tag was missing or wrong.
    pub auth_failed: u64,
}

/// See the module doc.
pub struct State {
    pub cfg: Settings,
    /// The `source` IP written in every command.
    pub source: String,
    pub inv: Inventory,
    pub outbox: Outbox,
    pub io: Io,
    wheel: TimerWheel<TimerKey>,
    requested_wake: Option<Instant>,
    outbox_timer: Option<(TimerId, Instant)>,
    /// Audit queries to the VIM in flight: (hostname, is_host_state).
    pub queries: HashSet<(String, bool)>,
    /// An audit pass found no host: run the next one when a host appears.
    pub audit_waiting_for_host: bool,
    pub mtc_inventory_seen: bool,
    pub state_dirty: bool,
    pub outbox_dirty: bool,
    pub counters: Counters,
    /// Acknowledged events already acted on (`dedup.rs`).
    pub seen_events: super::dedup::Dedup,
    /// With the HMAC key on: the guestServers' datagrams already accepted.
    pub replay: crate::wire::auth::ReplayGuard,
    limiter: LogLimiter,
    /// Set by SIGTERM/SIGINT; the dispatcher loop ends.
    pub stop: bool,
}

impl State {
    /// A state restored from `persisted`, with the static hosts applied and
    /// the first audit and READY scheduled.
    pub fn new(cfg: Settings, source: String, io: Io, persisted: Persisted, now: Instant) -> Self {
        let backoff = Backoff { min: cfg.retry_min, max: cfg.retry_max };
        let mut outbox = Outbox::new(cfg.outbox_max, 4, backoff);
        outbox.restore(persisted.outbox, now);
        let mut s = State {
            inv: Inventory::restore(persisted.hosts, persisted.instances),
            outbox,
            source,
            io,
            wheel: TimerWheel::new(),
            requested_wake: None,
            outbox_timer: None,
            queries: HashSet::new(),
            audit_waiting_for_host: false,
            mtc_inventory_seen: false,
            state_dirty: false,
            outbox_dirty: false,
            counters: Counters::default(),
            seen_events: super::dedup::Dedup::restore(persisted.seen),
            replay: crate::wire::auth::ReplayGuard::default(),
            limiter: LogLimiter::new(20, Duration::from_secs(10)),
            stop: false,
            cfg,
        };
        s.apply_static_hosts();
        s.greet_hosts();
        s.arm(now + s.cfg.audit_start, TimerKey::Audit);
        s.send_ready_to_mtc();
        s.arm(now + s.cfg.mtc_ready_interval, TimerKey::MtcReady);
        s.pump_outbox(now);
        s
    }

    /// Adds the `[hosts]` / `--host` entries; a known host takes the
    /// configured uuid and address.
    pub fn apply_static_hosts(&mut self) {
        for h in self.cfg.hosts.clone() {
            let dest = super::inventory::Dest { ip: h.ip.clone(), port: h.port };
            let res = if self.inv.host(&h.hostname).is_some() {
                self.inv.mod_host(&h.hostname, &h.uuid, dest)
            } else {
                self.inv.add_host(&h.hostname, &h.uuid, dest)
            };
            match res {
                Ok(()) => self.state_dirty = true,
                Err(e) => log::warn!("static host {}: {e}", h.hostname),
            }
        }
    }

    /// At start-up, the id-0 `EVENT_ACK` greeting to every known
    /// guestServer. It tells each where this agent now is: after a failover
    /// to the other controller's address a guestServer would otherwise keep
    /// sending to the dead one's (it sends to wherever the agent last wrote
    /// from, decisions §10) until an audit or command reached it. It also
    /// tells ours that we acknowledge, so events it restored from its state
    /// file are resent at once. A C++ guestServer logs one unsupported
    /// command per host and start, as it does for the greeting after READY.
    fn greet_hosts(&mut self) {
        for name in self.inv.hostnames() {
            if let Some(out) = self.inv.command(&name, super::inventory::ServerCmd::Ack { event_id: 0 }) {
                self.send(out);
            }
        }
    }

    /// Sends one command to a guestServer; failures are logged, not fatal.
    pub fn send(&mut self, out: Outgoing) {
        let bytes = match encode_keyed(&out.cmd, &self.source, self.cfg.hmac_key.as_ref()) {
            Ok(b) => b,
            Err(e) => {
                log::error!("cannot encode {:?} for {}: {e}", out.cmd, out.hostname);
                return;
            }
        };
        let Ok(ip) = out.dest.ip.parse::<IpAddr>() else {
            self.counters.udp_send_errors += 1;
            log::error!("{}: bad guestServer address {:?}", out.hostname, out.dest.ip);
            return;
        };
        let to = SocketAddr::new(ip, out.dest.port);
        match self.io.udp.send_to(&bytes, to) {
            Ok(_) => {
                self.counters.udp_sent += 1;
                log::debug!("sent {:?} to {} ({to})", out.cmd, out.hostname);
            }
            Err(e) => {
                self.counters.udp_send_errors += 1;
                log::warn!("send {:?} to {} ({to}) failed: {e}", out.cmd, out.hostname);
            }
        }
    }

    pub fn send_all(&mut self, outs: Vec<Outgoing>) {
        for o in outs {
            self.send(o);
        }
    }

    /// READY to mtcAgent (spec §8.1): asks it to (re)send the inventory.
    pub fn send_ready_to_mtc(&mut self) {
        let Some(to) = self.cfg.mtc_addr else {
            return;
        };
        match self.io.udp.send_to(&ready_datagram(), to) {
            Ok(_) => {
                self.counters.ready_sent += 1;
                log::info!("READY sent to mtcAgent at {to}");
            }
            Err(e) => log::warn!("READY to mtcAgent at {to} failed: {e}"),
        }
    }

    /// A warning a peer can trigger, rate-limited.
    pub fn warn_limited(&mut self, now: Instant, text: String) {
        match self.limiter.allow(now) {
            LogDecision::Allow { suppressed_before: 0 } => log::warn!("{text}"),
            LogDecision::Allow { suppressed_before } => {
                log::warn!("{text} ({suppressed_before} similar warnings suppressed before)")
            }
            LogDecision::Suppress => {}
        }
    }

    /// Schedules `key` at `at`.
    pub fn arm(&mut self, at: Instant, key: TimerKey) -> TimerId {
        self.wheel.insert(at, key)
    }

    /// Keeps the outbox timer at the outbox's next due time.
    pub fn arm_outbox(&mut self, _now: Instant) {
        let due = self.outbox.next_due();
        match (due, self.outbox_timer) {
            (Some(d), Some((_, at))) if at <= d => {}
            (Some(d), old) => {
                if let Some((id, _)) = old {
                    self.wheel.cancel(id);
                }
                let id = self.wheel.insert(d, TimerKey::Outbox);
                self.outbox_timer = Some((id, d));
            }
            (None, _) => {}
        }
    }

    /// Runs every timer due at `now`.
    pub fn on_tick(&mut self, now: Instant) {
        if self.requested_wake.is_some_and(|r| r <= now) {
            self.requested_wake = None;
        }
        while let Some((_, key)) = self.wheel.pop_expired(now) {
            match key {
                TimerKey::Audit => self.audit(now),
                TimerKey::MtcReady => {
                    if !self.mtc_inventory_seen {
                        self.send_ready_to_mtc();
                        self.arm(now + self.cfg.mtc_ready_interval, TimerKey::MtcReady);
                    }
                }
                TimerKey::Outbox => {
                    self.outbox_timer = None;
                    self.pump_outbox(now);
                }
            }
        }
    }

    /// Asks the timer thread for the wheel's next deadline if it has not
    /// been asked already. Called by the dispatcher after every event.
    pub fn sync_timer(&mut self) {
        if let Some(d) = self.wheel.next_deadline() {
            if self.requested_wake.is_none_or(|r| d < r) {
                self.io.waker.wake_at(d);
                self.requested_wake = Some(d);
            }
        }
    }

    /// Writes the state and outbox files if they changed.
    pub fn persist(&mut self) {
        if self.state_dirty {
            match persist::save_state(&self.cfg.state_dir, &self.inv) {
                Ok(()) => self.state_dirty = false,
                Err(e) => log::error!("cannot write state file: {e}"),
            }
        }
        if self.outbox_dirty {
            match persist::save_outbox(&self.cfg.state_dir, &self.outbox, &self.seen_events) {
                Ok(()) => self.outbox_dirty = false,
                Err(e) => log::error!("cannot write outbox file: {e}"),
            }
        }
    }
}
