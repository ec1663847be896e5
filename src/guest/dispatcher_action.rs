//! Vote and notification handling of the dispatcher (spec guest-side §7):
//! intake of `action_notify`, the event script, the apps' aggregate and the
//! single `action_response`. Runs on the dispatcher thread, as methods of
//! `State`.

use std::time::Instant;

use super::apps::Outcome;
use super::dispatcher::State;
use super::fsm::HbState;
use super::health::clean_text;
use super::script;
use super::vote::{self, PendingAction};
use crate::wire::guest::{ActionNotify, ActionResponse, GuestMsg};
use crate::wire::vocab::{EventType, NotificationType};

impl State {
    pub(super) fn action_notify(&mut self, n: ActionNotify, now: Instant) {
        log::info!("action_notify {} {} timeout {} ms", n.notification_type, n.event_type, n.timeout_ms);
        if self.hb.state() != HbState::Enabled {
            self.reply(vote::complete_now(&n));
            return;
        }
        // One pending action at most; the old one gets no reply (fix Q4).
        self.abort_action();
        let mut p = PendingAction::new(n.clone(), now);
        let (outs, any_app) = self.apps.start_action(&n, now);
        self.app_out(outs);
        p.apps_waiting = any_app;
        let known = n.event_type != EventType::Unknown && n.notification_type != NotificationType::Unknown;
        if let (Some(path), true) = (self.settings.event_notification_script.clone(), known) {
            let run = self.next_run;
            self.next_run += 1;
            let args = [n.notification_type.as_str(), n.event_type.as_str()];
            match script::start(run, &path, &args, &self.tx) {
                Ok(r) => p.script_run = Some(r),
                Err(e) => log::warn!("event script {} not run: {e}", path.display()),
            }
        }
        if p.is_done() {
            self.reply(vote::complete_now(&n));
        } else {
            self.action = Some(p);
        }
    }

    pub(super) fn event_script_done(&mut self, run: u64, exit_code: Option<i32>, output: &[u8], now: Instant) {
        let Some(p) = self.action.as_mut() else {
            return;
        };
        if p.script_run.map(|r| r.run) != Some(run) {
            return;
        }
        p.script_done(exit_code, clean_text(output));
        self.check_action(now);
    }

    /// Folds the apps' verdict in and replies once nobody is left to wait for.
    pub(super) fn check_action(&mut self, _now: Instant) {
        let Some(p) = self.action.as_mut() else {
            return;
        };
        if p.apps_waiting {
            match self.apps.outcome() {
                Outcome::Vote(v, text) => {
                    p.fold(v, text);
                    p.apps_waiting = false;
                }
                // With no usable app vote the action timer decides.
                Outcome::Running | Outcome::NoVote => {}
            }
        }
        if p.is_done() {
            let r = p.finish();
            self.action = None;
            self.apps.abort_action();
            self.reply(r);
        }
    }

    /// The action timer (guard permitting).
    pub(super) fn action_tick(&mut self, now: Instant) {
        let Some(p) = self.action.as_ref() else {
            return;
        };
        if p.deadline > now {
            return;
        }
        let period = vote::local_timeout(p.notify.timeout_ms);
        if !self.hb.guard.allows(period, now) {
            if let Some(p) = self.action.as_mut() {
                p.deadline = now + period;
            }
            return;
        }
        let r = p.timed_out();
        self.abort_action();
        self.reply(r);
    }

    /// Drops the pending action without a reply: kills its script group and
    /// forgets the apps' waits.
    pub(super) fn abort_action(&mut self) {
        if let Some(p) = self.action.take() {
            if let Some(r) = p.script_run {
                r.kill();
            }
            self.apps.abort_action();
        }
    }

    fn reply(&mut self, r: ActionResponse) {
        log::info!("action_response {} {} {}: {}", r.notification_type, r.event_type, r.vote_result, r.log_msg);
        self.link.send(&GuestMsg::ActionResponse(r));
    }
}
