//! The instance table of the dispatcher: creating and deleting instances,
//! running a state-machine transition and carrying out its effects
//! (writes to the guest, events to the agent, timers, connects), restore
//! from and snapshot to the state file.
//!
//! Runs on the dispatcher thread only. Lookups are by hash map: no event
//! walks all instances (only QRY replies, rescans and dumps do, by nature).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use gh_threads::ratelimit::{LogDecision, LogLimiter};
use gh_threads::reader::{connect_unix, spawn_reader, ChannelWriter, ReaderHandle, ReaderMsg, WriteError};
use gh_threads::wheel::TimerId;

use super::discovery::{channel_path, channel_uuid, scan};
use super::dispatcher::{ConnMsg, Dispatcher, Event, TimerKey};
use super::instance::{ConnectOutcome, Ctx, Effect, Instance, TimerKind, UUID_LEN};
use super::statefile::{Saved, SavedInstance, FORMAT};
use crate::wire::guest::{decode_guest, encode_host};

/// Guest-triggered log lines allowed per window, per instance.
const LOG_BURST: u32 = 10;
const LOG_WINDOW: Duration = Duration::from_secs(60);
/// Grace for a restored, heartbeating guest to re-init after a restart: one
/// init retry period of the reference guest plus slack.
const READOPT_GRACE: Duration = Duration::from_secs(10);

/// An open channel.
pub struct Conn {
    pub id: u64,
    pub writer: ChannelWriter,
    /// Our own outgoing sequence counter (decisions §13).
    pub seq: u32,
    _reader: ReaderHandle,
}

/// One instance with its I/O and timers.
pub struct Slot {
    pub inst: Instance,
    pub conn: Option<Conn>,
    pub timers: HashMap<TimerKind, TimerId>,
    /// Rate limit for log lines this guest can trigger.
    log: LogLimiter,
}

impl Slot {
    fn new(inst: Instance) -> Self {
        Self { inst, conn: None, timers: HashMap::new(), log: LogLimiter::new(LOG_BURST, LOG_WINDOW) }
    }
}

impl Dispatcher {
    /// Runs one transition of instance `id` and carries out its effects.
    pub(super) fn with_instance(
        &mut self,
        id: u64,
        now: Instant,
        f: impl FnOnce(&mut Instance, &mut Ctx<'_>, &mut Vec<Effect>),
    ) {
        let mut out = Vec::new();
        {
            let Some(slot) = self.slots.get_mut(&id) else {
                return;
            };
            let mut ctx = Ctx { now, host_reporting: self.host_reporting, cfg: &self.hb, rng: &mut self.rng };
            f(&mut slot.inst, &mut ctx, &mut out);
        }
        self.apply(id, out, now);
    }

    /// Carries out effects; effects may produce more (a failed write closes
    /// the channel, a connect result arms timers), handled in order.
    fn apply(&mut self, id: u64, effects: Vec<Effect>, now: Instant) {
        let mut queue: VecDeque<Effect> = effects.into();
        while let Some(effect) = queue.pop_front() {
            let mut more = Vec::new();
            match effect {
                Effect::Guest(msg) => self.write_guest(id, &msg, now, &mut more),
                Effect::Agent(ev) => self.send_agent_event(id, ev, now),
                Effect::Arm(kind, at) => {
                    let Some(slot) = self.slots.get_mut(&id) else {
                        continue;
                    };
                    if let Some(old) = slot.timers.remove(&kind) {
                        self.wheel.cancel(old);
                    }
                    let tid = self.wheel.insert(at, TimerKey::Inst(id, kind));
                    slot.timers.insert(kind, tid);
                }
                Effect::Cancel(kind) => {
                    if let Some(old) = self.slots.get_mut(&id).and_then(|s| s.timers.remove(&kind)) {
                        self.wheel.cancel(old);
                    }
                }
                Effect::Connect => self.connect(id, now, &mut more),
                Effect::Close => self.close(id),
                Effect::Warn(text) => self.guest_warn(id, now, &text),
                Effect::Persist => self.persist(now),
            }
            queue.extend(more);
        }
    }

    fn write_guest(&mut self, id: u64, msg: &crate::wire::guest::HostMsg, now: Instant, more: &mut Vec<Effect>) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        // Skip the send when not connected (bug 13 fixed: never write to fd 0).
        let Some(conn) = slot.conn.as_mut() else {
            self.metrics.guest_send_skipped += 1;
            return;
        };
        conn.seq = conn.seq.wrapping_add(1);
        let bytes = encode_host(conn.seq, msg);
        match conn.writer.try_write(&bytes) {
            Ok(()) => self.metrics.guest_sent += 1,
            Err(WriteError::Closed) => {
                self.metrics.channel_closed += 1;
                let mut ctx = Ctx { now, host_reporting: self.host_reporting, cfg: &self.hb, rng: &mut self.rng };
                if let Some(c) = slot.conn.take() {
                    self.by_conn.remove(&c.id);
                    c.writer.shutdown();
                }
                slot.inst.on_closed(&mut ctx, more);
            }
            Err(e) => {
                self.metrics.guest_send_failed += 1;
                more.push(Effect::Warn(format!("write failed: {e}")));
            }
        }
    }

    fn connect(&mut self, id: u64, now: Instant, more: &mut Vec<Effect>) {
        let conn_id = self.next_id;
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        if slot.conn.is_some() {
            return;
        }
        let path = channel_path(&self.settings.channel_dir, &slot.inst.uuid);
        let mut connected_log = false;
        let outcome = match connect_unix(&path) {
            Ok(stream) => match stream.try_clone() {
                Ok(reader_end) => {
                    let tx = self.io.tx.clone();
                    let map = move |m: ReaderMsg| Event::Conn {
                        conn: conn_id,
                        msg: match m {
                            ReaderMsg::Line(line) => ConnMsg::Guest(decode_guest(&line)),
                            ReaderMsg::TooLong { len } => ConnMsg::TooLong { len },
                            ReaderMsg::RateLimited { dropped_lines } => ConnMsg::RateLimited { dropped_lines },
                            ReaderMsg::Closed(r) => ConnMsg::Closed(r),
                        },
                    };
                    let name = format!("rd-{}", &slot.inst.uuid[..8.min(slot.inst.uuid.len())]);
                    match spawn_reader(name, reader_end, self.settings.limits, tx, map) {
                        Ok(handle) => {
                            self.next_id += 1;
                            slot.conn =
                                Some(Conn { id: conn_id, writer: ChannelWriter::new(stream), seq: 0, _reader: handle });
                            self.by_conn.insert(conn_id, id);
                            self.metrics.connects += 1;
                            connected_log = true;
                            ConnectOutcome::Connected
                        }
                        Err(e) => {
                            log::error!("cannot start reader for {}: {e}", path.display());
                            ConnectOutcome::Failed
                        }
                    }
                }
                Err(e) => {
                    log::error!("cannot clone socket {}: {e}", path.display());
                    ConnectOutcome::Failed
                }
            },
            Err(e) => {
                self.metrics.connect_failures += 1;
                log::debug!("connect {} failed: {e}", path.display());
                ConnectOutcome::Failed
            }
        };
        let mut ctx = Ctx { now, host_reporting: self.host_reporting, cfg: &self.hb, rng: &mut self.rng };
        slot.inst.on_connect(outcome, &mut ctx, more);
        if connected_log {
            self.guest_log(id, now, log::Level::Info, &format!("connected to {}", path.display()));
        }
    }

    /// Closes the channel; the reader's `Closed` then finds no conn and is ignored.
    fn close(&mut self, id: u64) {
        if let Some(c) = self.slots.get_mut(&id).and_then(|s| s.conn.take()) {
            self.by_conn.remove(&c.id);
            c.writer.shutdown();
        }
    }

    /// Logs a guest-triggered warning, rate-limited per instance.
    pub(super) fn guest_warn(&mut self, id: u64, now: Instant, text: &str) {
        self.guest_log(id, now, log::Level::Warn, text);
    }

    /// Logs a guest-triggerable line (a warning, or connection churn that a
    /// reconnect storm could repeat) through the instance's limiter.
    pub(super) fn guest_log(&mut self, id: u64, now: Instant, level: log::Level, text: &str) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        match slot.log.allow(now) {
            LogDecision::Allow { suppressed_before } => {
                if suppressed_before > 0 {
                    log::log!(level, "{} ({suppressed_before} similar messages suppressed)", slot.inst.tag());
                }
                log::log!(level, "{} {text}", slot.inst.tag());
            }
            LogDecision::Suppress => self.metrics.logs_suppressed += 1,
        }
    }

    /// Finds or creates the instance for `uuid`; `None` when the id is bad or
    /// the table is full.
    pub(super) fn find_or_create(&mut self, uuid: &str, now: Instant) -> Option<(u64, bool)> {
        if let Some(&id) = self.by_uuid.get(uuid) {
            return Some((id, false));
        }
        if uuid.len() != UUID_LEN {
            log::error!("ignoring instance id {uuid:?}: not {UUID_LEN} characters");
            return None;
        }
        if self.slots.len() >= self.settings.max_instances {
            log::error!("cannot add {uuid}: max_instances ({}) reached", self.settings.max_instances);
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.slots.insert(id, Slot::new(Instance::new(uuid, None)));
        self.by_uuid.insert(uuid.to_string(), id);
        self.metrics.instances_added += 1;
        self.persist(now);
        Some((id, true))
    }

    /// "Channel add" (spec §3.3): the socket file `name` appeared.
    pub(super) fn channel_add(&mut self, name: &str, now: Instant) {
        let Some(uuid) = channel_uuid(name) else {
            return;
        };
        let Some((id, _)) = self.find_or_create(uuid, now) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(&id) else { return };
        slot.inst.chan = Some(name.to_string());
        if slot.conn.is_some() {
            // Already connected (e.g. the agent provisioned it first): a
            // replaced socket would have closed that connection, so keep it.
            return;
        }
        log::info!("{} channel {name} added", slot.inst.tag());
        self.with_instance(id, now, |inst, _, out| inst.start_connect(out));
    }

    /// The socket file `name` is gone: delete its instance. True if one was found.
    pub(super) fn channel_delete(&mut self, name: &str, now: Instant) -> bool {
        let Some(uuid) = channel_uuid(name) else {
            return false;
        };
        let Some(&id) = self.by_uuid.get(uuid) else {
            return false;
        };
        self.remove(id, now);
        true
    }

    /// Deletes an instance: STOPPED if it was heartbeating, timers cancelled,
    /// channel closed.
    pub(super) fn remove(&mut self, id: u64, now: Instant) {
        let mut out = Vec::new();
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.inst.on_removed(&mut out);
            log::info!("{} removed", slot.inst.tag());
        }
        self.apply(id, out, now);
        if let Some(slot) = self.slots.remove(&id) {
            for (_, tid) in slot.timers {
                self.wheel.cancel(tid);
            }
            self.by_uuid.remove(&slot.inst.uuid);
            self.metrics.instances_removed += 1;
            self.persist(now);
        }
    }

    /// Scans the channel directory and adds every channel (`all`, at
    /// start-up) or only the unknown ones (audit, overflow; spec §3.6).
    /// Returns the uuids present.
    pub(super) fn rescan(&mut self, now: Instant, all: bool) -> Vec<String> {
        self.metrics.rescans += 1;
        let mut present = Vec::new();
        for name in scan(&self.settings.channel_dir) {
            let Some(uuid) = channel_uuid(&name) else {
                continue;
            };
            present.push(uuid.to_string());
            if all || !self.by_uuid.contains_key(uuid) {
                self.channel_add(&name, now);
            }
        }
        present
    }

    /// Restores instances from the state file, before the first scan.
    pub fn restore(&mut self, saved: Saved, now: Instant) {
        self.host_reporting = saved.host_reporting;
        for s in saved.instances {
            let Some((id, _)) = self.find_or_create(&s.uuid, now) else {
                continue;
            };
            let mut out = Vec::new();
            if let Some(slot) = self.slots.get_mut(&id) {
                let inst = &mut slot.inst;
                inst.chan = s.chan;
                inst.reporting = s.reporting;
                inst.heartbeating = s.heartbeating;
                inst.params = s.params;
                // The guest re-inits on channel-up; allow one init retry and
                // the loss deadline of its own interval.
                let misses = self.hb.failure_threshold.saturating_add(1);
                let deadline = now + READOPT_GRACE + inst.interval() * misses;
                inst.restored(deadline, &mut out);
            }
            self.apply(id, out, now);
        }
        if !saved.pending_events.is_empty() {
            log::info!("{} unacknowledged events restored for retransmission", saved.pending_events.len());
        }
        self.agent.acks.restore(saved.pending_events, saved.next_event_id, now);
        log::info!("restored {} instances, host reporting {}", self.slots.len(), self.host_reporting);
    }

    /// After the start-up scan: restored instances without a socket file.
    /// One found by discovery earlier has lost its VM while we were down:
    /// drop it (STOPPED if it was heartbeating). One provisioned by the agent
    /// keeps trying its socket path with back-off (spec §3.4).
    pub(super) fn adopt_leftovers(&mut self, present: &[String], now: Instant) {
        let present: std::collections::HashSet<&str> = present.iter().map(String::as_str).collect();
        let leftovers: Vec<(u64, bool)> = self
            .slots
            .iter()
            .filter(|(_, s)| !present.contains(s.inst.uuid.as_str()))
            .map(|(id, s)| (*id, s.inst.chan.is_some()))
            .collect();
        for (id, discovered) in leftovers {
            if discovered {
                self.remove(id, now);
            } else {
                self.apply(id, vec![Effect::Connect], now);
            }
        }
    }

    /// What goes into the state file.
    pub(super) fn snapshot(&self) -> Saved {
        let mut instances: Vec<SavedInstance> = self
            .slots
            .values()
            .map(|s| SavedInstance {
                uuid: s.inst.uuid.clone(),
                chan: s.inst.chan.clone(),
                reporting: s.inst.reporting,
                heartbeating: s.inst.heartbeating,
                params: s.inst.params.clone(),
            })
            .collect();
        instances.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        Saved {
            format: FORMAT,
            host_reporting: self.host_reporting,
            instances,
            pending_events: self.agent.acks.snapshot(),
            next_event_id: self.agent.acks.next_id(),
        }
    }
}
