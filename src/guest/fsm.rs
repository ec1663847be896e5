//! The guest heartbeat state machine (spec guest-side §5): `initial`,
//! `enabling`, `enabled`, `disabled`, plus the scheduling guard of §1.6.
//!
//! Pure: time is an input (`now: Instant`), nothing here reads a clock or
//! does IO. Owned by the guest-client dispatcher thread and by each guest of
//! the simulator. The caller feeds `Input`s, calls `tick` at every wake-up (at
//! least every 300 ms, so the guard can tell a stall from an idle gap) and
//! acts on the returned `Output`s.

use std::time::{Duration, Instant};

use crate::rng::Rng;
use crate::wire::guest::Init;

/// Delay of the one-shot release timer after start.
pub const RELEASE_DELAY: Duration = Duration::from_millis(1000);
/// A gap of this much between two ticks counts as a stall (VM paused).
pub const STALL: Duration = Duration::from_millis(800);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HbState {
    Initial,
    Enabling,
    Enabled,
    Disabled,
}

impl HbState {
    pub fn as_str(self) -> &'static str {
        match self {
            HbState::Initial => "initial",
            HbState::Enabling => "enabling",
            HbState::Enabled => "enabled",
            HbState::Disabled => "disabled",
        }
    }
}

/// Events from outside; timer events come from `tick`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    ChannelUp,
    ChannelDown,
    InitAck(u32),
    Challenge(u32),
    Shutdown,
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this `init`.
    SendInit(Init),
    /// Send a `challenge_response` echoing this value.
    AnswerChallenge(u32),
    /// Send `exit` ("Exiting...").
    SendExit,
    /// The state changed; log it, and start or stop per-state work.
    Transition { from: HbState, to: HbState, event: &'static str },
}

/// The scheduling guard: remembers the last stall.
#[derive(Debug, Default, Clone)]
pub struct Guard {
    last_tick: Option<Instant>,
    last_stall: Option<Instant>,
}

impl Guard {
    /// Records a tick; a long gap since the previous one is a stall.
    pub fn observe(&mut self, now: Instant) {
        if let Some(last) = self.last_tick {
            if now.saturating_duration_since(last) >= STALL {
                self.last_stall = Some(now);
            }
        }
        self.last_tick = Some(now);
    }

    /// True when no stall was recorded within `period` before `now`.
    pub fn allows(&self, period: Duration, now: Instant) -> bool {
        match self.last_stall {
            None => true,
            Some(s) => now.saturating_duration_since(s) >= period,
        }
    }
}

/// Static parameters of the machine.
#[derive(Debug, Clone)]
pub struct HbParams {
    /// `init` to send; `invocation_id` is replaced on each send.
    pub init: Init,
    pub init_retry: Duration,
    pub challenge_timeout: Duration,
}

#[derive(Debug)]
pub struct Heartbeat {
    params: HbParams,
    rng: Rng,
    state: HbState,
    current_id: u32,
    previous_id: Option<u32>,
    release_at: Option<Instant>,
    retry_at: Option<Instant>,
    challenge_deadline: Option<Instant>,
    pub guard: Guard,
}

impl Heartbeat {
    /// A machine in `initial`; the release timer fires 1 s after `now`.
    pub fn new(params: HbParams, rng: Rng, now: Instant) -> Self {
        Heartbeat {
            params,
            rng,
            state: HbState::Initial,
            current_id: 0,
            previous_id: None,
            release_at: Some(now + RELEASE_DELAY),
            retry_at: None,
            challenge_deadline: None,
            guard: Guard::default(),
        }
    }

    pub fn state(&self) -> HbState {
        self.state
    }

    /// The id of the last `init` sent (0 before the first).
    pub fn invocation_id(&self) -> u32 {
        self.current_id
    }

    /// The earliest timer, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.release_at, self.retry_at, self.challenge_deadline].into_iter().flatten().min()
    }

    /// Runs due timers. Call at every wake-up.
    pub fn tick(&mut self, now: Instant) -> Vec<Output> {
        self.guard.observe(now);
        let mut out = Vec::new();
        if self.release_at.is_some_and(|t| t <= now) {
            self.release_at = None;
            if self.state == HbState::Initial {
                self.enter_enabling(now, "release", &mut out);
            }
        }
        if self.retry_at.is_some_and(|t| t <= now) && self.state == HbState::Enabling {
            self.send_init(now, &mut out);
        }
        if let Some(t) = self.challenge_deadline {
            if t <= now {
                let period = self.params.challenge_timeout;
                if self.guard.allows(period, now) {
                    self.enter_enabling(now, "challenge-timeout", &mut out);
                } else {
                    // A stall inside the period: the silence may be ours.
                    self.challenge_deadline = Some(now + period);
                }
            }
        }
        out
    }

    /// Feeds one event.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        use HbState::*;
        match (self.state, input) {
            (Initial | Disabled, Input::ChannelUp) => self.enter_enabling(now, "channel-up", &mut out),
            (Initial | Enabling | Enabled, Input::ChannelDown) => self.go(Disabled, "channel-down", &mut out),
            (Enabling, Input::InitAck(id)) if id == self.current_id || Some(id) == self.previous_id => {
                self.retry_at = None;
                self.challenge_deadline = Some(now + self.params.challenge_timeout);
                self.go(Enabled, "init-ack", &mut out);
            }
            (Enabled, Input::Challenge(value)) => {
                self.challenge_deadline = Some(now + self.params.challenge_timeout);
                out.push(Output::AnswerChallenge(value));
            }
            (Enabled, Input::Shutdown) => {
                out.push(Output::SendExit);
                self.go(Initial, "shutdown", &mut out);
            }
            (Enabling | Disabled, Input::Shutdown) => self.go(Initial, "shutdown", &mut out),
            _ => {}
        }
        if input == Input::Shutdown {
            self.release_at = None;
        }
        out
    }

    fn enter_enabling(&mut self, now: Instant, event: &'static str, out: &mut Vec<Output>) {
        self.go(HbState::Enabling, event, out);
        self.send_init(now, out);
    }

    fn send_init(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.current_id != 0 {
            self.previous_id = Some(self.current_id);
        }
        self.current_id = self.rng.next_id();
        self.retry_at = Some(now + self.params.init_retry);
        let mut init = self.params.init.clone();
        init.invocation_id = self.current_id;
        out.push(Output::SendInit(init));
    }

    fn go(&mut self, to: HbState, event: &'static str, out: &mut Vec<Output>) {
        let from = self.state;
        self.state = to;
        // Timers belong to the state they were armed in.
        self.retry_at = None;
        if to != HbState::Enabled {
            self.challenge_deadline = None;
        }
        out.push(Output::Transition { from, to, event });
    }
}

#[cfg(test)]
#[path = "fsm_tests.rs"]
mod tests;
