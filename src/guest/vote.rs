//! One pending `action_notify` (spec guest-side §7): who we still wait for,
//! the combined vote (reject wins, §7.3) and the reply. At most one action is
//! pending; a new notify replaces the old one, which gets no reply, so every
//! notify gets exactly one `action_response` (fix Q4).
//!
//! Pure; owned by the guest-client dispatcher.

use std::time::{Duration, Instant};

use super::script::ScriptRun;
use crate::wire::guest::{ActionNotify, ActionResponse};
use crate::wire::vocab::VoteResult;

/// Text of the reply when the action timer fires (kept exactly, K4).
pub const TIMEOUT_TEXT: &str = "Timeout on application and/or script action responses.";
/// Upper bound on a host's `timeout_ms` (fix Q10).
const MAX_TIMEOUT_MS: u32 = 3_600_000;

/// The local deadline for a notify: `timeout_ms - 1000` when above 1000.
pub fn local_timeout(timeout_ms: u32) -> Duration {
    let t = timeout_ms.min(MAX_TIMEOUT_MS);
    Duration::from_millis(u64::from(if t > 1000 { t - 1000 } else { t }))
}

/// An immediate reply: `complete` with an empty text (§7.1 step 3, §7.2 step 5).
pub fn complete_now(n: &ActionNotify) -> ActionResponse {
    reply(n, VoteResult::Complete, String::new())
}

fn reply(n: &ActionNotify, vote: VoteResult, log_msg: String) -> ActionResponse {
    ActionResponse {
        invocation_id: n.invocation_id,
        event_type: n.event_type.as_str().to_string(),
        notification_type: n.notification_type.as_str().to_string(),
        vote_result: vote.as_str().to_string(),
        log_msg,
    }
}

#[derive(Debug, Clone)]
pub struct PendingAction {
    pub notify: ActionNotify,
    pub deadline: Instant,
    /// The event-script run we wait for, if any.
    pub script_run: Option<ScriptRun>,
    /// True while the apps have not produced their aggregate.
    pub apps_waiting: bool,
    vote: VoteResult,
    text: String,
    script_error: Option<String>,
}

impl PendingAction {
    pub fn new(notify: ActionNotify, now: Instant) -> Self {
        PendingAction {
            deadline: now + local_timeout(notify.timeout_ms),
            notify,
            script_run: None,
            apps_waiting: false,
            vote: VoteResult::Unknown,
            text: String::new(),
            script_error: None,
        }
    }

    /// Folds one party's answer: reject always overwrites; accept and
    /// complete overwrite unless a reject is recorded; others change nothing.
    pub fn fold(&mut self, vote: VoteResult, text: String) {
        match vote {
            VoteResult::Reject => {
                self.vote = vote;
                self.text = text;
            }
            VoteResult::Accept | VoteResult::Complete if self.vote != VoteResult::Reject => {
                self.vote = vote;
                self.text = text;
            }
            _ => {}
        }
    }

    /// The event script finished: 0 accept, 1 reject, else error.
    pub fn script_done(&mut self, exit_code: Option<i32>, text: String) {
        self.script_run = None;
        match exit_code {
            Some(0) => self.fold(VoteResult::Accept, text),
            Some(1) => self.fold(VoteResult::Reject, text),
            _ => self.script_error = Some(text),
        }
    }

    pub fn is_done(&self) -> bool {
        self.script_run.is_none() && !self.apps_waiting
    }

    /// The reply once everyone answered. A script error with no usable
    /// vote is sent as `error` with the script's text (fix Q2).
    pub fn finish(&self) -> ActionResponse {
        match self.vote {
            VoteResult::Unknown => {
                reply(&self.notify, VoteResult::Error, self.script_error.clone().unwrap_or_default())
            }
            v => reply(&self.notify, v, self.text.clone()),
        }
    }

    /// The reply when the action timer fires.
    pub fn timed_out(&self) -> ActionResponse {
        if self.vote == VoteResult::Reject {
            reply(&self.notify, VoteResult::Reject, self.text.clone())
        } else {
            reply(&self.notify, VoteResult::Timeout, TIMEOUT_TEXT.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::vocab::{EventType, NotificationType};

    fn notify(timeout_ms: u32) -> ActionNotify {
        ActionNotify {
            invocation_id: 42,
            event_type: EventType::Stop,
            notification_type: NotificationType::Revocable,
            timeout_ms,
        }
    }

    #[test]
    fn timeout_adjustment() {
        assert_eq!(local_timeout(9000), Duration::from_millis(8000));
        assert_eq!(local_timeout(800), Duration::from_millis(800));
        assert_eq!(local_timeout(u32::MAX), Duration::from_millis(3_599_000));
    }

    #[test]
    fn reject_wins_and_last_accept_text_is_sent() {
        let mut p = PendingAction::new(notify(4000), Instant::now());
        p.fold(VoteResult::Accept, "a1".into());
        p.fold(VoteResult::Reject, "no".into());
        p.fold(VoteResult::Accept, "a2".into());
        p.fold(VoteResult::Timeout, "t".into());
        let r = p.finish();
        assert_eq!((r.vote_result.as_str(), r.log_msg.as_str()), ("reject", "no"));
        assert_eq!(r.invocation_id, 42);
        let mut p = PendingAction::new(notify(4000), Instant::now());
        p.fold(VoteResult::Accept, "a1".into());
        p.fold(VoteResult::Complete, "c".into());
        assert_eq!(p.finish().log_msg, "c");
    }

    #[test]
    fn script_exit_codes_and_error_fix() {
        let mut p = PendingAction::new(notify(4000), Instant::now());
        p.script_run = Some(ScriptRun { run: 1, pid: 0 });
        assert!(!p.is_done());
        p.script_done(Some(2), "oops".into());
        assert!(p.is_done());
        let r = p.finish();
        assert_eq!((r.vote_result.as_str(), r.log_msg.as_str()), ("error", "oops"));
        let mut p = PendingAction::new(notify(4000), Instant::now());
        p.script_done(Some(1), "veto".into());
        assert_eq!(p.finish().vote_result, "reject");
    }

    #[test]
    fn timer_reply_keeps_a_recorded_reject() {
        let t0 = Instant::now();
        let mut p = PendingAction::new(notify(4000), t0);
        assert_eq!(p.deadline, t0 + Duration::from_millis(3000));
        let r = p.timed_out();
        assert_eq!((r.vote_result.as_str(), r.log_msg.as_str()), ("timeout", TIMEOUT_TEXT));
        p.fold(VoteResult::Reject, "app says no".into());
        assert_eq!(p.timed_out().vote_result, "reject");
        assert_eq!(complete_now(&p.notify).vote_result, "complete");
    }
}
