//! The guest-client dispatcher: the one thread that owns all domain state
//! (`State`), receives every `Event` on a single channel, runs the timers
//! (it sleeps with `recv_deadline` until the earliest deadline, at most
//! 250 ms so the scheduling guard can tell a stall from an idle gap) and
//! writes to the host channel and the app sockets, never blocking.
//!
//! Action (vote/notify) handling lives in `dispatcher_action.rs`.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use gh_threads::guard::ExitReason;
use gh_threads::ratelimit::{LogDecision, LogLimiter};
use gh_threads::reader::{ChannelWriter, WriteError};

use super::api_wire::{self, ApiMsg};
use super::apps::{AppOut, Apps};
use super::config::Settings;
use super::events::{Event, HostWriter};
use super::fsm::{HbParams, HbState, Heartbeat, Input, Output};
use super::health::HealthState;
use super::script::{self, ScriptRun};
use super::vote::PendingAction;
use crate::rng::Rng;
use crate::wire::guest::{encode_guest, Exit, GuestMsg, HostMsg, Init};

/// Longest sleep between two timer scans.
const MAX_SLEEP: Duration = Duration::from_millis(250);

/// How the dispatcher ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// SIGTERM, SIGINT or SIGQUIT: exit 0.
    Shutdown,
    /// A singleton thread died: exit non-zero so systemd restarts us.
    ThreadDied(String),
}

/// The host link: writer and the guest's single `sequence` counter.
#[derive(Debug, Default)]
pub(super) struct Link {
    writer: Option<HostWriter>,
    sequence: u32,
}

impl Link {
    /// Formats and sends one frame in one write. The sequence goes up even
    /// when there is no channel or the write fails (spec §4).
    pub(super) fn send(&mut self, msg: &GuestMsg) {
        self.sequence = self.sequence.wrapping_add(1);
        let bytes = encode_guest(self.sequence, msg);
        let Some(w) = self.writer.as_mut() else {
            return;
        };
        let r = match w {
            HostWriter::Socket(s) => s.try_write(&bytes).map_err(|e| match e {
                WriteError::Closed => "host gone".to_string(),
                other => other.to_string(),
            }),
            HostWriter::Device(f) => f.write(&bytes).map(|_| ()).map_err(|e| e.to_string()),
        };
        if let Err(e) = r {
            log::warn!("message to host lost: {e}");
        }
    }

    fn close(&mut self) {
        if let Some(HostWriter::Socket(s)) = self.writer.take() {
            s.shutdown();
        }
    }
}

pub struct State {
    pub(super) settings: Settings,
    pub(super) hb: Heartbeat,
    pub(super) link: Link,
    pub(super) health: HealthState,
    pub(super) apps: Apps,
    pub(super) app_streams: HashMap<u64, ChannelWriter>,
    app_sequence: u32,
    health_at: Option<Instant>,
    pub(super) health_run: Option<ScriptRun>,
    pub(super) action: Option<PendingAction>,
    pub(super) next_run: u64,
    pub(super) tx: Sender<Event>,
    bad_lines: LogLimiter,
}

/// The `init` we announce (spec §2: `*_secs` = ms / 1000 + 1).
pub fn init_template(settings: &Settings, name: &str) -> Init {
    Init {
        invocation_id: 0,
        name: name.to_string(),
        heartbeat_interval_ms: settings.heartbeat_interval_ms,
        vote_secs: Settings::announced_secs(settings.vote_ms),
        shutdown_notice_secs: Settings::announced_secs(settings.shutdown_notice_ms),
        suspend_notice_secs: Settings::announced_secs(settings.suspend_notice_ms),
        resume_notice_secs: Settings::announced_secs(settings.resume_notice_ms),
        restart_secs: Settings::announced_secs(settings.restart_ms),
        corrective_action: settings.corrective_action.as_str().to_string(),
    }
}

impl State {
    pub fn new(settings: Settings, name: &str, tx: Sender<Event>, now: Instant) -> Self {
        let params = HbParams {
            init: init_template(&settings, name),
            init_retry: settings.init_retry,
            challenge_timeout: settings.challenge_timeout(),
        };
        State {
            hb: Heartbeat::new(params, Rng::from_entropy(), now),
            health: HealthState::new(settings.corrective_action),
            settings,
            link: Link::default(),
            apps: Apps::new(Rng::from_entropy()),
            app_streams: HashMap::new(),
            app_sequence: 0,
            health_at: None,
            health_run: None,
            action: None,
            next_run: 1,
            tx,
            bad_lines: LogLimiter::new(5, Duration::from_secs(60)),
        }
    }
}

/// Runs until shutdown or a fatal thread death. `start_down`: there is no
/// host yet (listen mode), as on a virtio port that hangs up at open.
pub fn run_with(mut st: State, rx: &Receiver<Event>, start_down: bool) -> Ended {
    if start_down {
        let outs = st.hb.handle(Input::ChannelDown, Instant::now());
        st.apply(outs, Instant::now());
    }
    loop {
        let now = Instant::now();
        st.tick(now);
        let wake = [st.hb.next_deadline(), st.next_deadline()]
            .into_iter()
            .flatten()
            .min()
            .map_or(now + MAX_SLEEP, |d| d.min(now + MAX_SLEEP));
        let ev = match rx.recv_deadline(wake) {
            Ok(ev) => ev,
            Err(RecvTimeoutError::Timeout) => continue,
            // Impossible while `st.tx` lives; treat it as a shutdown.
            Err(RecvTimeoutError::Disconnected) => return Ended::Shutdown,
        };
        if let Some(end) = st.handle(ev, Instant::now()) {
            st.shutdown(Instant::now());
            return end;
        }
    }
}

impl State {
    fn next_deadline(&self) -> Option<Instant> {
        let action = self.action.as_ref().map(|a| a.deadline);
        [self.health_at, action, self.apps.next_deadline()].into_iter().flatten().min()
    }

    /// Runs every due timer.
    pub(super) fn tick(&mut self, now: Instant) {
        let outs = self.hb.tick(now);
        self.apply(outs, now);
        if self.health_at.is_some_and(|t| t <= now) {
            self.run_health_script(now);
        }
        let outs = self.apps.tick(now, &self.hb.guard);
        self.app_out(outs);
        self.action_tick(now);
    }

    /// Handles one event; `Some` ends the loop.
    pub(super) fn handle(&mut self, ev: Event, now: Instant) -> Option<Ended> {
        match ev {
            Event::ChannelUp { writer, initial } => {
                self.link.writer = Some(writer);
                if !initial {
                    log::info!("host channel up");
                    let outs = self.hb.handle(Input::ChannelUp, now);
                    self.apply(outs, now);
                }
            }
            Event::ChannelDown => {
                log::info!("host channel down");
                self.link.writer = None;
                let outs = self.hb.handle(Input::ChannelDown, now);
                self.apply(outs, now);
            }
            Event::Host(msg) => self.host_msg(msg, now),
            Event::HostBad(why) => {
                if let LogDecision::Allow { suppressed_before } = self.bad_lines.allow(now) {
                    log::warn!("bad message from host: {why} ({suppressed_before} suppressed)");
                }
            }
            Event::AppConnected { conn, stream } => {
                self.app_streams.insert(conn, ChannelWriter::new(stream));
                let outs = self.apps.connected(conn);
                self.app_out(outs);
            }
            Event::App { conn, msg } => {
                let outs = self.apps.message(conn, msg, now);
                self.app_out(outs);
                self.check_action(now);
            }
            Event::AppClosed { conn } => {
                self.app_streams.remove(&conn);
                self.apps.closed(conn);
                self.check_action(now);
            }
            Event::ScriptDone { run, exit_code, output } => self.script_done(run, exit_code, &output, now),
            Event::Signal(sig) if sig == libc::SIGHUP => set_level_from_flags(),
            Event::Signal(sig) => {
                log::info!("signal {sig}: shutting down");
                return Some(Ended::Shutdown);
            }
            Event::ThreadExited(exit) => {
                // Per-script and per-app threads end all the time; a
                // singleton (channel, api-accept, signals) ends only when
                // it failed, and the daemon cannot work without it.
                let per_instance = exit.name.starts_with("script-") || exit.name.starts_with("app-");
                if !per_instance {
                    return Some(Ended::ThreadDied(format!("{}: {:?}", exit.name, exit.reason)));
                }
                if let ExitReason::Panicked(m) = exit.reason {
                    log::error!("thread {} panicked: {m}", exit.name);
                }
            }
        }
        None
    }

    fn host_msg(&mut self, msg: HostMsg, now: Instant) {
        let outs = match msg {
            HostMsg::InitAck(a) => self.hb.handle(Input::InitAck(a.invocation_id), now),
            HostMsg::Challenge(c) => self.hb.handle(Input::Challenge(c.heartbeat_challenge), now),
            HostMsg::ActionNotify(n) => {
                self.action_notify(n, now);
                return;
            }
            HostMsg::Nack(n) => {
                log::warn!("host nack: {}", n.log_msg);
                return;
            }
        };
        self.apply(outs, now);
    }

    pub(super) fn apply(&mut self, outs: Vec<Output>, now: Instant) {
        for o in outs {
            match o {
                Output::SendInit(init) => {
                    log::info!("sending init, invocation id {}", init.invocation_id);
                    self.link.send(&GuestMsg::Init(init));
                }
                Output::AnswerChallenge(v) => {
                    let body = self.health.respond(v, &self.apps.health(), now);
                    self.link.send(&GuestMsg::ChallengeResponse(body));
                }
                Output::SendExit => self.link.send(&GuestMsg::Exit(Exit { log_msg: "Exiting...".into() })),
                Output::Transition { from, to, event } => {
                    log::info!(
                        "Guest-Client heartbeat state change from {} to {}, event={event}",
                        from.as_str(),
                        to.as_str()
                    );
                    if from == HbState::Enabled {
                        self.leave_enabled();
                    }
                    if to == HbState::Enabled {
                        self.health.script_healthy = true;
                        if self.settings.health_check_script.is_some() {
                            self.health_at = self.settings.health_check_interval.map(|i| now + i);
                        }
                    }
                }
            }
        }
    }

    fn leave_enabled(&mut self) {
        self.health_at = None;
        if let Some(r) = self.health_run.take() {
            r.kill();
        }
        // A pending action gets no reply (§5).
        self.abort_action();
    }

    fn run_health_script(&mut self, now: Instant) {
        self.health_at = self.settings.health_check_interval.map(|i| now + i);
        if let Some(old) = self.health_run.take() {
            old.kill();
        }
        let Some(path) = self.settings.health_check_script.clone() else {
            return;
        };
        let run = self.next_run;
        self.next_run += 1;
        match script::start(run, &path, &[], &self.tx) {
            Ok(r) => self.health_run = Some(r),
            Err(e) => log::warn!("health script {} not run: {e}", path.display()),
        }
    }

    fn script_done(&mut self, run: u64, exit_code: Option<i32>, output: &[u8], now: Instant) {
        if self.health_run.is_some_and(|r| r.run == run) {
            self.health_run = None;
            if !matches!(exit_code, Some(0 | 1)) {
                log::info!("health script exit {exit_code:?}, counted healthy");
            }
            self.health.script_done(exit_code, output);
            return;
        }
        self.event_script_done(run, exit_code, output, now);
    }

    pub(super) fn app_out(&mut self, outs: Vec<AppOut>) {
        for o in outs {
            match o {
                AppOut::Send { conn, msg } => self.app_send(conn, &msg),
                AppOut::Close { conn } => {
                    if let Some(s) = self.app_streams.remove(&conn) {
                        s.shutdown();
                    }
                    self.apps.closed(conn);
                }
            }
        }
    }

    fn app_send(&mut self, conn: u64, msg: &ApiMsg) {
        let Some(s) = self.app_streams.get(&conn) else {
            return;
        };
        self.app_sequence = self.app_sequence.wrapping_add(1);
        let frame = api_wire::encode(self.app_sequence, msg);
        // Never block the owner: a full socket loses the frame.
        if let Err(e) = s.try_write(&frame) {
            log::debug!("app {conn}: frame lost: {e}");
        }
    }

    fn shutdown(&mut self, now: Instant) {
        let outs = self.hb.handle(Input::Shutdown, now);
        self.apply(outs, now);
        self.leave_enabled();
        for (_, s) in self.app_streams.drain() {
            s.shutdown();
        }
        self.link.close();
    }
}

/// SIGHUP: debug if /tmp/guest_debug_debug exists, else verbose (trace) if
/// /tmp/guest_debug_verbose exists, else info (spec §1.4).
fn set_level_from_flags() {
    let level = if std::path::Path::new("/tmp/guest_debug_debug").exists() {
        log::LevelFilter::Debug
    } else if std::path::Path::new("/tmp/guest_debug_verbose").exists() {
        log::LevelFilter::Trace
    } else {
        log::LevelFilter::Info
    };
    log::set_max_level(level);
    log::info!("log level {level}");
}
