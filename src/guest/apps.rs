//! Local applications registered over the API socket (spec guest-side §8.4):
//! registration, per-app heartbeat challenges and timeouts, per-app votes and
//! their aggregate, with the fixes of Q3 (interval < 400 → `accepted=0`) and
//! Q9 (no challenges after FINAL, old timers replaced on re-INIT, an app's
//! death re-checks the vote at once).
//!
//! Pure: time is an input. Owned by the guest-client dispatcher, which writes
//! the returned frames to the app sockets.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::api_wire::{ApiMsg, AppInit};
use super::config::MIN_INTERVAL_MS;
use super::fsm::Guard;
use super::health::{self, clean_text, Report};
use crate::rng::Rng;
use crate::wire::guest::ActionNotify;
use crate::wire::vocab::{EventType, NotificationType, VoteResult};

/// At most this many app connections.
pub const MAX_APPS: usize = 16;
/// Remembered challenges per app.
const HISTORY: usize = 4;

/// Something for the dispatcher to do on an app connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppOut {
    Send { conn: u64, msg: ApiMsg },
    Close { conn: u64 },
}

/// Where the apps stand on the pending action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Some registered app is still deciding.
    Running,
    /// Everyone finished without a usable vote: the apps never report.
    NoVote,
    /// The aggregate vote and its text.
    Vote(VoteResult, String),
}

#[derive(Debug)]
struct AppAction {
    invocation_id: u32,
    deadline: Instant,
    running: bool,
    vote: VoteResult,
    text: String,
}

#[derive(Debug)]
struct Registration {
    init: AppInit,
    interval: Duration,
    challenges: VecDeque<u32>,
    answered: bool,
    next_challenge: Instant,
    timeout_at: Instant,
    health: Report,
    action: Option<AppAction>,
}

#[derive(Debug)]
struct Slot {
    conn: u64,
    reg: Option<Registration>,
}

#[derive(Debug)]
pub struct Apps {
    slots: Vec<Slot>,
    rng: Rng,
}

impl Apps {
    pub fn new(rng: Rng) -> Self {
        Apps { slots: Vec::new(), rng }
    }

    /// A new connection. Returns the connections to close: an unregistered
    /// one evicted to make room, or the new one when all are registered.
    pub fn connected(&mut self, conn: u64) -> Vec<AppOut> {
        let mut out = Vec::new();
        if self.slots.len() >= MAX_APPS {
            match self.slots.iter().position(|s| s.reg.is_none()) {
                Some(i) => {
                    let old = self.slots.remove(i);
                    out.push(AppOut::Close { conn: old.conn });
                }
                None => {
                    out.push(AppOut::Close { conn });
                    return out;
                }
            }
        }
        self.slots.push(Slot { conn, reg: None });
        out
    }

    /// The connection is gone (EOF, reset, evicted). It drops out of health
    /// and out of any pending vote silently.
    pub fn closed(&mut self, conn: u64) {
        self.slots.retain(|s| s.conn != conn);
    }

    pub fn registered_count(&self) -> usize {
        self.slots.iter().filter(|s| s.reg.is_some()).count()
    }

    /// A message from an app.
    pub fn message(&mut self, conn: u64, msg: ApiMsg, now: Instant) -> Vec<AppOut> {
        let Some(slot) = self.slots.iter_mut().find(|s| s.conn == conn) else {
            return Vec::new();
        };
        match msg {
            ApiMsg::Init(init) => {
                if init.heartbeat_interval_ms < MIN_INTERVAL_MS {
                    log::warn!(
                        "application {} interval {} ms below {MIN_INTERVAL_MS} ms, rejected",
                        init.name,
                        init.heartbeat_interval_ms
                    );
                    slot.reg = None;
                    return vec![send(conn, ApiMsg::InitAck { accepted: false })];
                }
                let interval = Duration::from_millis(u64::from(init.heartbeat_interval_ms));
                log::info!("application {} registered", init.name);
                slot.reg = Some(Registration {
                    init,
                    interval,
                    challenges: VecDeque::new(),
                    answered: true,
                    next_challenge: now + interval,
                    timeout_at: now + 2 * interval,
                    health: Report::healthy(),
                    action: None,
                });
                vec![send(conn, ApiMsg::InitAck { accepted: true })]
            }
            ApiMsg::Final { log_msg } => {
                if let Some(r) = slot.reg.take() {
                    log::info!("application {} deregistered: {log_msg}", r.init.name);
                }
                Vec::new()
            }
            ApiMsg::ChallengeResponse { value, healthy, action, log_msg } => {
                if let Some(r) = slot.reg.as_mut() {
                    if r.challenges.contains(&value) {
                        r.health = Report { healthy, action, text: clean_text(log_msg.as_bytes()) };
                        r.answered = true;
                        r.timeout_at = now + 2 * r.interval;
                    }
                }
                Vec::new()
            }
            ApiMsg::ActionResponse { invocation_id, vote, log_msg, .. } => {
                if let Some(a) = slot.reg.as_mut().and_then(|r| r.action.as_mut()) {
                    if a.running && a.invocation_id == invocation_id {
                        a.running = false;
                        a.vote = vote;
                        a.text = clean_text(log_msg.as_bytes());
                    }
                }
                Vec::new()
            }
            // Daemon-to-app types sent by an app are ignored.
            _ => Vec::new(),
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.regs()
            .flat_map(|r| {
                let act = r.action.as_ref().filter(|a| a.running).map(|a| a.deadline);
                [Some(r.next_challenge), Some(r.timeout_at), act]
            })
            .flatten()
            .min()
    }

    /// Runs due challenge, heartbeat-timeout and vote timers.
    pub fn tick(&mut self, now: Instant, guard: &Guard) -> Vec<AppOut> {
        let mut out = Vec::new();
        for slot in &mut self.slots {
            let conn = slot.conn;
            let Some(r) = slot.reg.as_mut() else { continue };
            if r.next_challenge <= now {
                r.next_challenge = now + r.interval;
                if r.answered {
                    let value = self.rng.next_id();
                    if r.challenges.len() == HISTORY {
                        r.challenges.pop_front();
                    }
                    r.challenges.push_back(value);
                    r.answered = false;
                    out.push(send(conn, ApiMsg::Challenge { value }));
                }
            }
            if r.timeout_at <= now {
                let period = 2 * r.interval;
                r.timeout_at = now + period;
                if guard.allows(period, now) {
                    r.health = Report {
                        healthy: false,
                        action: r.init.corrective_action,
                        text: format!("Application {} heartbeat timeout {} ms.", r.init.name, period.as_millis()),
                    };
                }
            }
            if let Some(a) = r.action.as_mut() {
                if a.running && a.deadline <= now {
                    a.running = false;
                    a.vote = VoteResult::Timeout;
                }
            }
        }
        out
    }

    /// The aggregate health of the registered apps (§6.2).
    pub fn health(&self) -> Report {
        health::aggregate(self.regs().map(|r| &r.health))
    }

    /// Sends every registered app its own notify. Returns the frames and
    /// whether any app is registered (so the action must wait for them).
    pub fn start_action(&mut self, n: &ActionNotify, now: Instant) -> (Vec<AppOut>, bool) {
        let mut out = Vec::new();
        for slot in &mut self.slots {
            let Some(r) = slot.reg.as_mut() else { continue };
            let secs = app_timeout_secs(&r.init, n.event_type, n.notification_type);
            let invocation_id = self.rng.next_id();
            r.action = Some(AppAction {
                invocation_id,
                deadline: now + Duration::from_secs(u64::from(secs)),
                running: true,
                vote: VoteResult::Unknown,
                text: String::new(),
            });
            out.push(send(
                slot.conn,
                ApiMsg::ActionNotify { invocation_id, event: n.event_type, notify: n.notification_type },
            ));
        }
        let any = !out.is_empty();
        (out, any)
    }

    /// Forgets every app's pending action.
    pub fn abort_action(&mut self) {
        for slot in &mut self.slots {
            if let Some(r) = slot.reg.as_mut() {
                r.action = None;
            }
        }
    }

    /// The apps' verdict, folded in slot order: reject wins, else the last
    /// accept or complete; timeout and unknown are ignored.
    pub fn outcome(&self) -> Outcome {
        let actions: Vec<&AppAction> = self.regs().filter_map(|r| r.action.as_ref()).collect();
        if actions.iter().any(|a| a.running) {
            return Outcome::Running;
        }
        let mut best: Option<(VoteResult, String)> = None;
        for a in actions {
            match a.vote {
                VoteResult::Reject => return Outcome::Vote(VoteResult::Reject, a.text.clone()),
                VoteResult::Accept | VoteResult::Complete => best = Some((a.vote, a.text.clone())),
                _ => {}
            }
        }
        match best {
            Some((v, t)) => Outcome::Vote(v, t),
            None => Outcome::NoVote,
        }
    }

    fn regs(&self) -> impl Iterator<Item = &Registration> {
        self.slots.iter().filter_map(|s| s.reg.as_ref())
    }
}

fn send(conn: u64, msg: ApiMsg) -> AppOut {
    AppOut::Send { conn, msg }
}

/// An app's own timer for a notify (§8.4).
fn app_timeout_secs(init: &AppInit, event: EventType, notify: NotificationType) -> u32 {
    use EventType::*;
    if notify == NotificationType::Revocable {
        return init.vote_secs;
    }
    match event {
        Pause | Suspend | ResizeBegin | LiveMigrateBegin | ColdMigrateBegin => init.suspend_notice_secs,
        Unpause | Resume | ResizeEnd | LiveMigrateEnd | ColdMigrateEnd => init.resume_notice_secs,
        _ => init.shutdown_notice_secs,
    }
}

#[cfg(test)]
#[path = "apps_tests.rs"]
mod tests;
