//! One simulated guest: its thread ("sim-<i>") owns the listening socket,
//! accepts the host, and runs the guest heartbeat machine with the plan's
//! behaviour on top. Ends when the stop channel disconnects; returns its
//! counters through the join handle.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use gh_threads::framer::{Frame, LineFramer};
use serde::Serialize;

use super::{Behaviour, Control, GuestPlan, SimEvent, SimEventKind, Vote};
use crate::guest::fsm::{HbParams, Heartbeat, Input, Output};
use crate::rng::Rng;
use crate::wire::guest::{
    decode_host, encode_guest, ActionResponse, ChallengeResponse, Decoded, GuestMsg, HostMsg, Init,
};
use crate::wire::vocab::{NotificationType, VoteResult};

const STACK: usize = 64 * 1024;
const TICK: Duration = Duration::from_millis(500);

pub(super) struct GuestSetup {
    pub index: usize,
    pub path: PathBuf,
    pub name: String,
    pub seed: u64,
    pub interval_ms: u32,
    pub init_retry: Duration,
    pub flap_down: Duration,
    pub plan: GuestPlan,
    pub started: Instant,
    pub control: Receiver<Control>,
    pub stop: Receiver<()>,
    pub events: Option<Sender<SimEvent>>,
}

/// What one guest did, reported at the end.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GuestCounters {
    pub index: usize,
    pub connects: u64,
    pub disconnects: u64,
    pub inits_sent: u64,
    pub init_acks: u64,
    pub challenges_received: u64,
    pub challenges_answered: u64,
    pub latency_ms_min: f64,
    pub latency_ms_mean: f64,
    pub latency_ms_max: f64,
    pub notifies_seen: u64,
    pub notifies_answered: u64,
    pub bad_lines: u64,
    pub panicked: bool,
    #[serde(skip)]
    latency_sum_ms: f64,
}

impl GuestCounters {
    pub(super) fn panicked(index: usize) -> Self {
        GuestCounters { index, panicked: true, ..Default::default() }
    }

    fn latency(&mut self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        let n = self.challenges_answered as f64;
        if self.challenges_answered == 1 || ms < self.latency_ms_min {
            self.latency_ms_min = ms;
        }
        self.latency_ms_max = self.latency_ms_max.max(ms);
        self.latency_sum_ms += ms;
        self.latency_ms_mean = self.latency_sum_ms / n;
    }
}

fn bind(path: &PathBuf) -> io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
}

/// Binds the socket now (so it exists when `Sim::start` returns) and
/// starts the guest's thread.
pub(super) fn spawn(g: GuestSetup) -> io::Result<JoinHandle<GuestCounters>> {
    let listener = bind(&g.path)?;
    std::thread::Builder::new()
        .name(format!("sim-{}", g.index))
        .stack_size(STACK)
        .spawn(move || Guest::new(g).run(listener))
}

enum End {
    Stop,
    HostGone,
    Flap,
}

struct Guest {
    g: GuestSetup,
    behaviour: Behaviour,
    vote: Vote,
    next_flap: Option<Instant>,
    sequence: u32,
    rng: Rng,
    /// When the last non-`none` unhealthy action was sent (the reference
    /// guest repeats it only every 60 s, spec guest-side §6.4).
    action_sent: Option<Instant>,
    c: GuestCounters,
}

/// The reference guest's repeat period for a corrective action.
const ACTION_REPEAT: Duration = Duration::from_secs(60);

impl Guest {
    fn new(g: GuestSetup) -> Self {
        Guest {
            behaviour: g.plan.behaviour,
            vote: g.plan.vote,
            next_flap: g.plan.flap_every.map(|p| g.started + p),
            sequence: 0,
            rng: Rng::seeded(g.seed),
            action_sent: None,
            c: GuestCounters { index: g.index, ..Default::default() },
            g,
        }
    }

    fn emit(&self, kind: SimEventKind) {
        if let Some(tx) = &self.g.events {
            let _ = tx.send(SimEvent { guest: self.g.index, kind, at: Instant::now() });
        }
    }

    fn stopped(&self) -> bool {
        matches!(self.g.stop.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Applies runtime controls and due scheduled changes.
    fn update(&mut self, now: Instant) {
        while let Ok(c) = self.g.control.try_recv() {
            match c {
                Control::Behaviour(b) => self.behaviour = b,
                Control::Vote(v) => self.vote = v,
            }
        }
        let elapsed = now.saturating_duration_since(self.g.started);
        while let Some((at, b)) = self.g.plan.schedule.first().copied() {
            if at > elapsed {
                break;
            }
            self.behaviour = b;
            self.g.plan.schedule.remove(0);
        }
    }

    fn flap_due(&mut self, now: Instant) -> bool {
        match (self.next_flap, self.g.plan.flap_every) {
            (Some(t), Some(every)) if t <= now => {
                self.next_flap = Some(now + every);
                true
            }
            _ => false,
        }
    }

    fn run(mut self, first: UnixListener) -> GuestCounters {
        let mut listener = Some(first);
        self.emit(SimEventKind::Listening);
        let mut back_at = Instant::now();
        loop {
            let now = Instant::now();
            self.update(now);
            if self.stopped() {
                break;
            }
            let Some(l) = listener.as_ref() else {
                if now >= back_at {
                    match bind(&self.g.path) {
                        Ok(l) => {
                            listener = Some(l);
                            self.emit(SimEventKind::Listening);
                        }
                        Err(e) => log::warn!("{}: rebind failed: {e}", self.g.name),
                    }
                    continue;
                }
                if self.sleep((back_at - now).min(TICK)) {
                    break;
                }
                continue;
            };
            if self.flap_due(now) {
                listener = None;
                let _ = std::fs::remove_file(&self.g.path);
                back_at = now + self.g.flap_down;
                continue;
            }
            if !poll_in(l.as_raw_fd(), TICK) {
                continue;
            }
            let Ok((stream, _)) = l.accept() else {
                continue;
            };
            self.c.connects += 1;
            self.emit(SimEventKind::Connected);
            let end = self.session(stream);
            self.c.disconnects += 1;
            self.emit(SimEventKind::Disconnected);
            match end {
                End::Stop => break,
                End::HostGone => {}
                End::Flap => {
                    listener = None;
                    let _ = std::fs::remove_file(&self.g.path);
                    back_at = Instant::now() + self.g.flap_down;
                }
            }
        }
        let _ = std::fs::remove_file(&self.g.path);
        self.c
    }

    /// Sleeps unless stopped first; true when stopped.
    fn sleep(&self, d: Duration) -> bool {
        matches!(self.g.stop.recv_timeout(d), Err(RecvTimeoutError::Disconnected))
    }

    fn send(&mut self, s: &mut UnixStream, msg: &GuestMsg) {
        self.sequence = self.sequence.wrapping_add(1);
        let _ = s.write_all(&encode_guest(self.sequence, msg));
    }

    fn session(&mut self, mut s: UnixStream) -> End {
        let params = HbParams {
            init: Init {
                invocation_id: 0,
                name: self.g.name.clone(),
                heartbeat_interval_ms: self.g.interval_ms,
                vote_secs: 9,
                shutdown_notice_secs: 9,
                suspend_notice_secs: 9,
                resume_notice_secs: 14,
                restart_secs: 601,
                corrective_action: "reboot".into(),
            },
            init_retry: self.g.init_retry,
            challenge_timeout: Duration::from_millis(u64::from(self.g.interval_ms) * 2).max(Duration::from_secs(5)),
        };
        let now = Instant::now();
        let mut hb = Heartbeat::new(params, Rng::seeded(self.rng.next_id().into()), now);
        let outs = hb.handle(Input::ChannelUp, now);
        self.outputs(&mut s, outs, now);
        let mut framer = LineFramer::new(4096);
        let mut frames = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let now = Instant::now();
            self.update(now);
            if self.stopped() {
                return End::Stop;
            }
            if self.flap_due(now) {
                return End::Flap;
            }
            let outs = hb.tick(now);
            self.outputs(&mut s, outs, now);
            let wait = hb.next_deadline().map_or(TICK, |d| d.saturating_duration_since(now).min(TICK));
            if !poll_in(s.as_raw_fd(), wait) {
                continue;
            }
            let n = match s.read(&mut buf) {
                Ok(0) | Err(_) => return End::HostGone,
                Ok(n) => n,
            };
            framer.push(&buf[..n], &mut frames);
            for f in std::mem::take(&mut frames) {
                let line = match f {
                    Frame::Line(l) => l,
                    Frame::TooLong { len } => {
                        self.bad(format!("line over {len} bytes"));
                        continue;
                    }
                };
                match decode_host(&line) {
                    Decoded::Msg(_, m) => self.host_msg(&mut s, &mut hb, m),
                    Decoded::Nack(t) => self.bad(t),
                    Decoded::Malformed(w) => self.bad(w.to_string()),
                }
            }
        }
    }

    fn bad(&mut self, why: String) {
        self.c.bad_lines += 1;
        self.emit(SimEventKind::BadLine(why));
    }

    fn host_msg(&mut self, s: &mut UnixStream, hb: &mut Heartbeat, m: HostMsg) {
        let now = Instant::now();
        match m {
            HostMsg::InitAck(a) => {
                let outs = hb.handle(Input::InitAck(a.invocation_id), now);
                if !outs.is_empty() {
                    self.c.init_acks += 1;
                    self.emit(SimEventKind::InitAcked(a.invocation_id));
                }
                self.outputs(s, outs, now);
            }
            HostMsg::Challenge(c) => {
                self.c.challenges_received += 1;
                if self.behaviour == Behaviour::Silent {
                    self.emit(SimEventKind::ChallengeIgnored(c.heartbeat_challenge));
                    return;
                }
                let outs = hb.handle(Input::Challenge(c.heartbeat_challenge), now);
                self.outputs(s, outs, now);
            }
            HostMsg::ActionNotify(n) => {
                self.c.notifies_seen += 1;
                let answer = match (n.notification_type, self.vote) {
                    (_, _) if self.behaviour == Behaviour::Silent => None,
                    (NotificationType::Irrevocable, _) => Some(VoteResult::Complete),
                    (_, Vote::Accept) => Some(VoteResult::Accept),
                    (_, Vote::Reject) => Some(VoteResult::Reject),
                    (_, Vote::Ignore) => None,
                };
                if let Some(v) = answer {
                    self.c.notifies_answered += 1;
                    let r = ActionResponse {
                        invocation_id: n.invocation_id,
                        event_type: n.event_type.as_str().into(),
                        notification_type: n.notification_type.as_str().into(),
                        vote_result: v.as_str().into(),
                        log_msg: format!("guest-sim {}", v.as_str()),
                    };
                    self.send(s, &GuestMsg::ActionResponse(r));
                }
                self.emit(SimEventKind::Notify {
                    event: n.event_type,
                    notification: n.notification_type,
                    answered: answer,
                });
            }
            HostMsg::Nack(_) => {}
        }
    }

    fn outputs(&mut self, s: &mut UnixStream, outs: Vec<Output>, arrival: Instant) {
        for o in outs {
            match o {
                Output::SendInit(init) if self.behaviour != Behaviour::Silent => {
                    self.c.inits_sent += 1;
                    self.emit(SimEventKind::InitSent(init.invocation_id));
                    self.send(s, &GuestMsg::Init(init));
                }
                Output::AnswerChallenge(v) => self.answer(s, v, arrival),
                _ => {}
            }
        }
    }

    fn answer(&mut self, s: &mut UnixStream, value: u32, arrival: Instant) {
        let (health, action, text) = match self.behaviour {
            Behaviour::Slow(d) => {
                std::thread::sleep(d);
                ("healthy", "reboot", String::new())
            }
            Behaviour::Unhealthy(a) => {
                let due = self.action_sent.is_none_or(|t| t.elapsed() >= ACTION_REPEAT);
                if due {
                    self.action_sent = Some(Instant::now());
                }
                ("unhealthy", if due { a.as_str() } else { "none" }, "guest-sim unhealthy".into())
            }
            Behaviour::Garbage => {
                let _ = s.write_all(b"\nthis is not json\n");
                let mut long = vec![b'x'; 5000];
                long.push(b'\n');
                let _ = s.write_all(&long);
                ("healthy", "reboot", String::new())
            }
            _ => {
                self.action_sent = None;
                ("healthy", "reboot", String::new())
            }
        };
        let r = ChallengeResponse {
            heartbeat_response: value,
            heartbeat_health: health.into(),
            corrective_action: action.into(),
            log_msg: text,
        };
        self.send(s, &GuestMsg::ChallengeResponse(r));
        self.c.challenges_answered += 1;
        self.c.latency(arrival.elapsed());
        self.emit(SimEventKind::ChallengeAnswered(value));
    }
}

/// True when `fd` is readable (or hung up) within `d`.
fn poll_in(fd: RawFd, d: Duration) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `p` is one valid pollfd living across the call.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}
