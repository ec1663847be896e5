//! The dispatcher thread ("dispatcher"): the single owner of `State`. It
//! receives one closed `Event` enum from every other thread and matches on
//! it; after each event it persists what changed and re-arms the timer.
//!
//! Channels: `events` is bounded (`EVENT_QUEUE`) because UDP floods can
//! happen; its producers (UDP readers, the timer, the VIM senders) block
//! briefly when it is full, and HTTP handlers give up after their timeout
//! with 503. Signals come on their own small channel that is drained before
//! every event, so SIGUSR1 is answered promptly whatever the load.

use std::net::SocketAddr;
use std::time::Instant;

use crossbeam_channel::{select, Receiver, Sender};
use gh_threads::guard::{ExitReason, ThreadExit};

use crate::daemon::write_health_file;
use crate::wire::auth::Stamp;

use super::api::{ApiError, ApiReply, ApiRequest};
use super::config;
use super::link::{LinkError, ServerMsg};
use super::mtc::MtcMsg;
use super::state::State;
use super::vim_sender::{JobTag, VimDone};

/// Capacity of the main event channel.
pub const EVENT_QUEUE: usize = 1024;

/// Everything the dispatcher reacts to.
#[derive(Debug)]
pub enum Event {
    /// A datagram from a guestServer.
    /// `stamp` is there when the HMAC key is on (checked here for replays).
    Server { from: SocketAddr, msg: Result<ServerMsg, LinkError>, stamp: Option<Stamp> },
    /// A datagram from mtcAgent.
    Mtc { from: SocketAddr, msg: Result<MtcMsg, LinkError> },
    /// A VIM command with its own reply channel.
    Api { req: ApiRequest, reply: Sender<Result<ApiReply, ApiError>> },
    /// The timer thread's tick.
    Tick(Instant),
    /// A signal (from the signal thread, on the control channel).
    Signal(i32),
    /// A VIM request finished.
    Vim(VimDone),
    /// A thread ended; singleton threads are fatal.
    ThreadExited(ThreadExit),
}

/// Why the dispatcher stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM / SIGINT, or every channel closed.
    Clean,
    /// A singleton thread died.
    ThreadDied(String),
}

/// Owns `State` and runs the loop.
pub struct Dispatcher {
    pub state: State,
    events: Receiver<Event>,
    control: Receiver<Event>,
    /// The command line, for SIGHUP reloads.
    args: config::Args,
}

impl Dispatcher {
    pub fn new(state: State, events: Receiver<Event>, control: Receiver<Event>, args: config::Args) -> Self {
        Self { state, events, control, args }
    }

    /// Runs until stopped, then drops the event receivers (so that no
    /// thread can block sending to us any more) and hands `State` back for
    /// the caller to drop, which joins the timer.
    pub fn run(mut self) -> (Stop, State) {
        let stop = self.run_loop();
        let Dispatcher { state, events, control, .. } = self;
        drop(events);
        drop(control);
        (stop, state)
    }

    /// `now` is read once per event.
    fn run_loop(&mut self) -> Stop {
        self.state.sync_timer();
        loop {
            while let Ok(ev) = self.control.try_recv() {
                if let Some(stop) = self.handle(ev, Instant::now()) {
                    return stop;
                }
            }
            let ev = select! {
                recv(self.control) -> ev => ev,
                recv(self.events) -> ev => ev,
            };
            let Ok(ev) = ev else {
                return Stop::Clean;
            };
            if let Some(stop) = self.handle(ev, Instant::now()) {
                return stop;
            }
        }
    }

    /// Handles one event; `Some` ends the loop.
    pub fn handle(&mut self, ev: Event, now: Instant) -> Option<Stop> {
        let s = &mut self.state;
        match ev {
            Event::Server { from, msg, stamp } => match msg.and_then(|m| s.check_stamp(stamp).map(|()| m)) {
                Ok(m) => s.on_server(from, m, now),
                Err(e) => s.drop_datagram(from, &e, now),
            },
            Event::Mtc { from, msg: Err(e) } => s.drop_datagram(from, &e, now),
            Event::Mtc { msg: Ok(m), .. } => s.on_mtc(m, now),
            Event::Api { req, reply } => {
                let result = s.on_api(req, now);
                // On disk before the VIM hears "done": a kill -9 right after
                // the reply must not forget what the VIM was told we took.
                s.persist();
                // The HTTP side may have given up (503); nothing to do then.
                let _ = reply.try_send(result);
            }
            Event::Tick(at) => s.on_tick(at.max(now)),
            Event::Signal(sig) => self.on_signal(sig),
            Event::Vim(done) => match done.tag.clone() {
                JobTag::Event { id, kind } => self.state.on_event_done(id, kind, &done, now),
                _ => self.state.on_query_done(done, now),
            },
            Event::ThreadExited(exit) => {
                if let ExitReason::Finished = exit.reason {
                    log::info!("thread {} finished", exit.name);
                } else {
                    log::error!("thread {} died: {:?}", exit.name, exit.reason);
                }
                if !self.state.stop {
                    self.state.persist();
                    return Some(Stop::ThreadDied(exit.name));
                }
            }
        }
        self.state.persist();
        self.state.sync_timer();
        if self.state.stop {
            return Some(Stop::Clean);
        }
        None
    }

    fn on_signal(&mut self, sig: i32) {
        match sig {
            libc::SIGUSR1 => {
                if let Err(e) = write_health_file(&self.state.cfg.health_file, "guestAgent") {
                    log::error!("cannot write {}: {e}", self.state.cfg.health_file.display());
                }
            }
            libc::SIGHUP => self.reload(),
            libc::SIGUSR2 => self.dump(),
            libc::SIGTERM | libc::SIGINT => {
                log::info!("signal {sig}: shutting down");
                self.state.stop = true;
            }
            other => log::debug!("signal {other} ignored"),
        }
    }

    /// SIGUSR2: the host and instance tables and the outbox, to the log.
    fn dump(&self) {
        let s = &self.state;
        log::info!("dump: {} host(s), {} pending VIM event(s), config {:?}", s.inv.host_count(), s.outbox.len(), s.cfg);
        for h in s.inv.hosts() {
            log::info!(
                "dump: host {} uuid {} at {}:{} reporting {} instances {}",
                h.hostname,
                h.uuid,
                h.dest.ip,
                h.dest.port,
                h.reporting,
                h.instances.len()
            );
        }
        for i in s.inv.instances() {
            log::info!("dump: instance {i:?}");
        }
    }

    /// SIGHUP: re-reads the configuration files. Addresses and sockets stay
    /// as they are (as in the original); timings, the VIM URL, static hosts,
    /// self-registration and the log level take effect.
    fn reload(&mut self) {
        match config::load(&self.args) {
            Ok(new) => {
                let s = &mut self.state;
                log::info!("configuration reloaded");
                log::set_max_level(new.log_level);
                s.cfg.vim_url = new.vim_url;
                s.cfg.vim_timeout = new.vim_timeout;
                s.cfg.retry_min = new.retry_min;
                s.cfg.retry_max = new.retry_max;
                s.outbox.backoff.min = new.retry_min;
                s.outbox.backoff.max = new.retry_max;
                s.cfg.audit_interval = new.audit_interval;
                s.cfg.mtc_ready_interval = new.mtc_ready_interval;
                s.cfg.self_register = new.self_register;
                s.cfg.hosts = new.hosts;
                s.cfg.log_level = new.log_level;
                s.apply_static_hosts();
            }
            Err(e) => log::error!("reload failed, keeping the old configuration: {e}"),
        }
    }
}

#[cfg(test)]
#[path = "dispatcher_tests.rs"]
mod tests;
