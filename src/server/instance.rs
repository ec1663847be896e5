//! The per-instance state machine: connection back-off, the heartbeat cycle
//! (spec server §3.4–§3.6, §6) and, in `vote.rs`, votes and notifications
//! (§7).
//!
//! Pure: every method takes the current time in a [`Ctx`] and appends what
//! must happen to an `out` list of [`Effect`]s (messages to the guest, events
//! to the agent, timers to arm or cancel, connect/close requests). The
//! dispatcher owns every `Instance` and carries the effects out; unit tests
//! drive it with fake instants.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::wire::guest::{Challenge, ChallengeResponse, GuestMsg, HostMsg, Init, InitAck, Nack};
use crate::wire::payload::{enabled_str, InstanceInfo};
use crate::wire::vocab::{EventType, Health, NotificationType};

pub use super::vote::PendingVote;

/// Instance ids are 36 characters; only the length is checked (spec §2).
pub const UUID_LEN: usize = 36;
/// Connect back-off ceiling (spec §3.4).
pub const MAX_BACKOFF_SECS: u32 = 60;
/// Reconnect audit period (spec §3.6).
pub const RECONNECT_AUDIT: Duration = Duration::from_secs(120);
/// How long after a migration/suspend/reboot event challenges stay silenced (spec §6.6).
pub const INIT_WAIT: Duration = Duration::from_secs(60);
/// Longest guest name kept (the guest's own limit, spec §4.2).
pub const MAX_NAME: usize = 64;
/// Longest short string kept (corrective actions), so every payload fits the envelope.
pub const MAX_VALUE: usize = 32;
/// Longest guest log text kept.
pub const MAX_LOG: usize = 224;
/// Range `*_secs` values are clamped to (decisions §5).
pub const SECS_RANGE: (u32, u32) = (1, 3600);

/// The per-instance timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKind {
    /// Challenge period and response deadline.
    Monitor,
    /// Next connect attempt (back-off).
    Connect,
    /// 120 s reconnect audit.
    Reconnect,
    /// 60 s post-event "waiting for init".
    Init,
    /// Vote/notification deadline.
    Vote,
    /// After a daemon restart: the deadline for a restored, heartbeating guest to re-init.
    Readopt,
}

/// Heartbeat state (spec §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HbState {
    WaitingInit,
    WaitingChallenge,
    WaitingResponse,
}

impl HbState {
    /// The original's log name.
    pub fn name(self) -> &'static str {
        match self {
            HbState::WaitingInit => "server_waiting_init",
            HbState::WaitingChallenge => "server_waiting_challenge",
            HbState::WaitingResponse => "server_waiting_response",
        }
    }
}

/// The channel's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Link {
    /// Waiting for the next connect attempt.
    Connecting,
    /// Connected: a reader thread runs.
    Up,
}

/// What a connect attempt gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectOutcome {
    Connected,
    Failed,
}

/// What the guest announced in its `init` (defaults of spec §2 until then).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestParams {
    pub name: String,
    pub invocation_id: u32,
    pub heartbeat_interval_ms: u32,
    pub vote_secs: u32,
    pub shutdown_notice_secs: u32,
    pub suspend_notice_secs: u32,
    pub resume_notice_secs: u32,
    pub restart_secs: u32,
    pub corrective_action: String,
}

impl Default for GuestParams {
    fn default() -> Self {
        Self {
            name: String::new(),
            invocation_id: 0,
            heartbeat_interval_ms: 1000,
            vote_secs: 10,
            shutdown_notice_secs: 10,
            suspend_notice_secs: 10,
            resume_notice_secs: 10,
            restart_secs: 120,
            corrective_action: "log".to_string(),
        }
    }
}

/// Heartbeat settings from the config file (reloadable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HbConfig {
    /// `[client] hbs_pulse_period`: the shortest interval (ms).
    pub pulse_period_ms: u32,
    /// `[client] hbs_max_interval`: the longest interval (ms).
    pub max_interval_ms: u32,
    /// `[client] hbs_failure_threshold`: misses tolerated before a loss.
    pub failure_threshold: u32,
}

impl Default for HbConfig {
    fn default() -> Self {
        Self { pulse_period_ms: 400, max_interval_ms: 60_000, failure_threshold: 1 }
    }
}

/// Everything a transition may read besides the instance itself.
pub struct Ctx<'a> {
    pub now: Instant,
    /// The host-level reporting gate.
    pub host_reporting: bool,
    pub cfg: &'a HbConfig,
    pub rng: &'a mut Rng,
}

/// An event for guestAgent; the dispatcher adds the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    Running,
    Stopped,
    IllHealth { action: String },
    Loss,
    VoteNotify { notification_type: String, event_type: String, vote: String, reason: String },
}

/// Something the dispatcher must do for an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Guest(HostMsg),
    Agent(AgentEvent),
    Arm(TimerKind, Instant),
    Cancel(TimerKind),
    /// Try to connect the channel now and report with `on_connect`.
    Connect,
    /// Close the channel (the reader's later `Closed` is stale and ignored).
    Close,
    /// A guest-triggered warning, for the dispatcher's rate-limited log.
    Warn(String),
    /// The instance's persisted fields changed.
    Persist,
}

/// One VM's heartbeat channel.
#[derive(Debug, Clone)]
pub struct Instance {
    pub uuid: String,
    /// Socket file name when found by discovery (spec §3.3).
    pub chan: Option<String>,
    pub params: GuestParams,
    /// Instance-level reporting gate, set by guestAgent.
    pub reporting: bool,
    pub heartbeating: bool,
    /// A loss was declared and not yet recovered.
    pub failed: bool,
    pub hb: HbState,
    pub link: Link,
    pub b2b_misses: u32,
    pub challenge: u32,
    /// LOSS events sent.
    pub failures: u64,
    /// Action carried by the last unhealthy response.
    pub unhealthy_action: String,
    pub vote: Option<PendingVote>,
    pub backoff_secs: u32,
}

impl Instance {
    /// A new instance with the defaults of spec §2, reporting disabled.
    pub fn new(uuid: &str, chan: Option<String>) -> Self {
        Self {
            uuid: uuid.to_string(),
            chan,
            params: GuestParams::default(),
            reporting: false,
            heartbeating: false,
            failed: false,
            hb: HbState::WaitingInit,
            link: Link::Connecting,
            b2b_misses: 0,
            challenge: 0,
            failures: 0,
            unhealthy_action: "unknown".to_string(),
            vote: None,
            backoff_secs: 1,
        }
    }

    /// The last 12 characters of the uuid plus the guest's name, for logs.
    pub fn tag(&self) -> String {
        let short = self.uuid.get(self.uuid.len().saturating_sub(12)..).unwrap_or(&self.uuid);
        if self.params.name.is_empty() {
            short.to_string()
        } else {
            format!("{short} {}", self.params.name)
        }
    }

    /// The instance-info payload (spec §8.3).
    pub fn info(&self, hostname: &str, repair_action: Option<&str>) -> InstanceInfo {
        let p = &self.params;
        InstanceInfo {
            hostname: hostname.to_string(),
            uuid: self.uuid.clone(),
            reporting: enabled_str(self.reporting).to_string(),
            heartbeating: enabled_str(self.heartbeating).to_string(),
            repair_action: repair_action.unwrap_or(&p.corrective_action).to_string(),
            restart_to: p.restart_secs.to_string(),
            shutdown_to: p.shutdown_notice_secs.to_string(),
            suspend_to: p.suspend_notice_secs.to_string(),
            resume_to: p.resume_notice_secs.to_string(),
            vote_to: p.vote_secs.to_string(),
            event_id: None,
        }
    }

    /// "Reconnect start" (spec §3.5): close any open channel and connect at once.
    pub fn start_connect(&mut self, out: &mut Vec<Effect>) {
        if self.link == Link::Up {
            out.push(Effect::Close);
            self.channel_down(out);
        }
        // A restored instance keeps its `heartbeating` until the guest
        // re-inits or the readopt deadline passes.
        self.backoff_secs = 1;
        out.push(Effect::Cancel(TimerKind::Connect));
        out.push(Effect::Connect);
    }

    /// The outcome of an [`Effect::Connect`].
    pub fn on_connect(&mut self, outcome: ConnectOutcome, ctx: &mut Ctx<'_>, out: &mut Vec<Effect>) {
        match outcome {
            ConnectOutcome::Connected => {
                // Connect DONE (spec §3.4), also for channels found at start-up (bug 12 fixed).
                self.link = Link::Up;
                self.failed = false;
                self.b2b_misses = 0;
                self.hb = HbState::WaitingInit;
                self.backoff_secs = 1;
                out.push(Effect::Cancel(TimerKind::Connect));
                out.push(Effect::Arm(TimerKind::Reconnect, ctx.now + RECONNECT_AUDIT));
            }
            ConnectOutcome::Failed => {
                self.link = Link::Connecting;
                let wait = Duration::from_secs(u64::from(self.backoff_secs));
                out.push(Effect::Arm(TimerKind::Connect, ctx.now + wait));
                self.backoff_secs = (self.backoff_secs * 2).min(MAX_BACKOFF_SECS);
            }
        }
    }

    /// The channel closed under us: EOF, reset, EPIPE, or the reader died.
    pub fn on_closed(&mut self, ctx: &mut Ctx<'_>, out: &mut Vec<Effect>) {
        self.channel_down(out);
        self.backoff_secs = 1;
        self.on_connect(ConnectOutcome::Failed, ctx, out);
    }

    /// The instance is being deleted (socket deleted, DEL_INST, modify).
    pub fn on_removed(&mut self, out: &mut Vec<Effect>) {
        if self.link == Link::Up {
            out.push(Effect::Close);
        }
        self.channel_down(out);
    }

    fn channel_down(&mut self, out: &mut Vec<Effect>) {
        self.link = Link::Connecting;
        self.hb = HbState::WaitingInit;
        out.push(Effect::Cancel(TimerKind::Monitor));
        // Decisions §3: STOPPED whenever heartbeating stops, whatever the cause.
        self.set_heartbeating(false, out);
    }

    /// Sets `heartbeating`, emitting RUNNING/STOPPED on a change (spec §6.2).
    pub fn set_heartbeating(&mut self, on: bool, out: &mut Vec<Effect>) {
        if self.heartbeating != on {
            self.heartbeating = on;
            out.push(Effect::Agent(if on { AgentEvent::Running } else { AgentEvent::Stopped }));
            out.push(Effect::Persist);
        }
    }

    /// Applies the agent's reporting state (spec §8.2 `manage_reporting_state`).
    pub fn set_reporting(&mut self, enabled: bool, out: &mut Vec<Effect>) {
        if enabled && !self.reporting {
            self.reporting = true;
            out.push(Effect::Persist);
        } else if !enabled && self.reporting {
            self.reporting = false;
            self.set_heartbeating(false, out);
            self.hb = HbState::WaitingInit;
            out.push(Effect::Cancel(TimerKind::Monitor));
            out.push(Effect::Persist);
        }
    }

    /// A decoded guest message.
    pub fn on_guest(&mut self, msg: GuestMsg, ctx: &mut Ctx<'_>, out: &mut Vec<Effect>) {
        match msg {
            GuestMsg::Init(init) => self.on_init(init, ctx, out),
            GuestMsg::ChallengeResponse(r) => self.on_response(r, ctx, out),
            GuestMsg::ActionResponse(r) => self.on_action_response(r, ctx, out),
            GuestMsg::Exit(_) => {
                self.hb = HbState::WaitingInit;
                out.push(Effect::Cancel(TimerKind::Monitor));
                self.set_heartbeating(false, out);
            }
        }
    }

    /// A line the guest should be told about (spec §5.3 nack texts).
    pub fn nack(&self, text: String, out: &mut Vec<Effect>) {
        out.push(Effect::Warn(format!("nack: {text}")));
        out.push(Effect::Guest(HostMsg::Nack(Nack { invocation_id: self.params.invocation_id, log_msg: text })));
    }

    fn on_init(&mut self, init: Init, ctx: &mut Ctx<'_>, out: &mut Vec<Effect>) {
        if self.hb != HbState::WaitingInit {
            // Spec §6.3: drop it; the guest re-sends init every 5 s.
            out.push(Effect::Warn(format!("unexpected 'init' message in {}", self.hb.name())));
            self.hb = HbState::WaitingInit;
            out.push(Effect::Cancel(TimerKind::Monitor));
            return;
        }
        let (lo, hi) = (ctx.cfg.pulse_period_ms, ctx.cfg.max_interval_ms.max(ctx.cfg.pulse_period_ms));
        let interval = init.heartbeat_interval_ms.clamp(lo, hi);
        if interval != init.heartbeat_interval_ms {
            out.push(Effect::Warn(format!(
                "heartbeat_interval_ms {} clamped to {interval}",
                init.heartbeat_interval_ms
            )));
        }
        let secs = |v: u32| v.clamp(SECS_RANGE.0, SECS_RANGE.1);
        self.params = GuestParams {
            name: bounded(init.name, MAX_NAME),
            invocation_id: init.invocation_id,
            heartbeat_interval_ms: interval,
            vote_secs: secs(init.vote_secs),
            shutdown_notice_secs: secs(init.shutdown_notice_secs),
            suspend_notice_secs: secs(init.suspend_notice_secs),
            resume_notice_secs: secs(init.resume_notice_secs),
            restart_secs: secs(init.restart_secs),
            corrective_action: bounded(init.corrective_action, MAX_VALUE),
        };
        self.unhealthy_action = "unknown".to_string();
        out.push(Effect::Cancel(TimerKind::Init));
        out.push(Effect::Cancel(TimerKind::Readopt));
        out.push(Effect::Persist);
        out.push(Effect::Guest(HostMsg::InitAck(InitAck { invocation_id: init.invocation_id })));
        self.b2b_misses = 0;
        self.failed = false;
        self.send_challenge(ctx, out);
    }

    fn send_challenge(&mut self, ctx: &mut Ctx<'_>, out: &mut Vec<Effect>) {
        self.hb = HbState::WaitingResponse;
        self.challenge = ctx.rng.next_rand31();
        out.push(Effect::Guest(HostMsg::Challenge(Challenge { heartbeat_challenge: self.challenge })));
        out.push(Effect::Arm(TimerKind::Monitor, ctx.now + self.interval()));
    }

    /// The challenge period and response deadline.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.params.heartbeat_interval_ms))
    }

    fn on_response(&mut self, r: ChallengeResponse, _ctx: &mut Ctx<'_>, out: &mut Vec<Effect>) {
        match self.hb {
            HbState::WaitingResponse => {}
            HbState::WaitingChallenge => {
                out.push(Effect::Warn("received late response".to_string()));
                return;
            }
            HbState::WaitingInit => return,
        }
        if r.heartbeat_response != self.challenge {
            // Not a miss yet: the pending challenge counts as one at its deadline.
            out.push(Effect::Warn(format!(
                "challenge mismatch: sent {} received {}",
                self.challenge, r.heartbeat_response
            )));
            return;
        }
        self.hb = HbState::WaitingChallenge;
        // An unhealthy guest is still heartbeating (bug 24 fixed).
        self.set_heartbeating(true, out);
        match Health::parse(&r.heartbeat_health) {
            Health::Healthy => self.failed = false,
            health => {
                if health != Health::Unhealthy {
                    out.push(Effect::Warn(format!("Invalid health reported: {}", r.heartbeat_health)));
                }
                let action = bounded(r.corrective_action, MAX_VALUE);
                self.unhealthy_action = action.clone();
                match action.as_str() {
                    "none" | "unknown" => out.push(Effect::Warn(format!(
                        "unhealthy ({}) with action '{}': not reporting",
                        bounded(r.log_msg, MAX_LOG),
                        action
                    ))),
                    _ => out.push(Effect::Agent(AgentEvent::IllHealth { action })),
                }
            }
        }
    }

    /// A timer of this instance expired.
    pub fn on_timer(&mut self, kind: TimerKind, ctx: &mut Ctx<'_>, out: &mut Vec<Effect>) {
        match kind {
            TimerKind::Monitor => self.on_monitor(ctx, out),
            TimerKind::Connect => out.push(Effect::Connect),
            TimerKind::Reconnect => {
                if !self.heartbeating && self.link == Link::Up {
                    out.push(Effect::Warn("issuing auto-reconnect ; no heartbeating".to_string()));
                    self.start_connect(out);
                } else {
                    out.push(Effect::Arm(TimerKind::Reconnect, ctx.now + RECONNECT_AUDIT));
                }
            }
            TimerKind::Init => {
                self.hb = HbState::WaitingInit;
                out.push(Effect::Cancel(TimerKind::Monitor));
            }
            TimerKind::Vote => self.on_vote_timeout(ctx, out),
            TimerKind::Readopt => {
                // Restored as heartbeating but the guest never re-initialised.
                if self.hb == HbState::WaitingInit && self.heartbeating {
                    self.declare_loss(ctx, out);
                }
            }
        }
    }

    fn on_monitor(&mut self, ctx: &mut Ctx<'_>, out: &mut Vec<Effect>) {
        match self.hb {
            HbState::WaitingResponse => {
                if self.failed || !self.reporting {
                    self.set_heartbeating(false, out);
                    self.hb = HbState::WaitingInit;
                    return;
                }
                self.b2b_misses += 1;
                if self.b2b_misses > ctx.cfg.failure_threshold {
                    self.declare_loss(ctx, out);
                } else {
                    out.push(Effect::Warn(format!(
                        "Heartbeat Miss {} of {}",
                        self.b2b_misses, ctx.cfg.failure_threshold
                    )));
                    self.send_challenge(ctx, out);
                }
            }
            HbState::WaitingChallenge => {
                self.b2b_misses = 0;
                self.send_challenge(ctx, out);
            }
            HbState::WaitingInit => {}
        }
    }

    /// Loss (spec §6.5): stop heartbeating and report when both gates allow.
    fn declare_loss(&mut self, ctx: &mut Ctx<'_>, out: &mut Vec<Effect>) {
        self.b2b_misses = 0;
        self.failed = true;
        self.hb = HbState::WaitingInit;
        out.push(Effect::Cancel(TimerKind::Monitor));
        self.set_heartbeating(false, out);
        if !ctx.host_reporting {
            out.push(Effect::Warn("heartbeat loss: host level reporting is disabled".to_string()));
        } else if !self.reporting {
            out.push(Effect::Warn("heartbeat loss: instance reporting is disabled".to_string()));
        } else {
            self.failures += 1;
            out.push(Effect::Agent(AgentEvent::Loss));
        }
    }

    /// After a daemon restart: this instance was heartbeating before; give the
    /// guest until `deadline` to re-initialise on the new connection.
    pub fn restored(&mut self, deadline: Instant, out: &mut Vec<Effect>) {
        if self.heartbeating {
            out.push(Effect::Arm(TimerKind::Readopt, deadline));
        }
    }

    /// When a vote or notification for `event` ends, silence challenges for 60 s
    /// if the VM is going away or moving (spec §6.6).
    pub(super) fn schedule_init_timer(&self, event: EventType, now: Instant, out: &mut Vec<Effect>) {
        if matches!(
            event,
            EventType::Suspend | EventType::LiveMigrateBegin | EventType::ColdMigrateBegin | EventType::Reboot
        ) {
            out.push(Effect::Arm(TimerKind::Init, now + INIT_WAIT));
        }
    }

    /// The `timeout_ms` announced for an action (spec §7.2, decisions §2).
    pub fn action_timeout_ms(&self, ntype: NotificationType, event: EventType) -> u32 {
        let p = &self.params;
        let secs = match (ntype, event) {
            (NotificationType::Revocable, _) => p.vote_secs,
            (_, EventType::Stop | EventType::Reboot) => p.shutdown_notice_secs,
            (
                _,
                EventType::Suspend
                | EventType::Pause
                | EventType::ResizeBegin
                | EventType::LiveMigrateBegin
                | EventType::ColdMigrateBegin,
            ) => p.suspend_notice_secs,
            (
                _,
                EventType::Unpause
                | EventType::Resume
                | EventType::ResizeEnd
                | EventType::LiveMigrateEnd
                | EventType::ColdMigrateEnd,
            ) => p.resume_notice_secs,
            (_, EventType::Unknown) => p.vote_secs,
        };
        secs.saturating_mul(1000)
    }
}

/// `s` cut to at most `max` characters.
pub fn bounded(mut s: String, max: usize) -> String {
    if let Some((idx, _)) = s.char_indices().nth(max) {
        s.truncate(idx);
    }
    s
}

#[cfg(test)]
#[path = "instance_tests.rs"]
mod tests;
