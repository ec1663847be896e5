//! Votes and notifications of an instance (spec server §7): the agent's
//! VOTE/NOTIFY command becomes an `action_notify` to the guest; the guest's
//! `action_response`, or the deadline, becomes a VOTE_NOTIFY to the agent.
//!
//! Pure, like `instance.rs` (it extends `Instance`); runs on the dispatcher.

use std::time::Duration;

use crate::wire::guest::{ActionNotify, ActionResponse, HostMsg};
use crate::wire::vocab::{EventType, NotificationType, VoteResult};

use super::instance::{bounded, AgentEvent, Ctx, Effect, HbState, Instance, Link, TimerKind, MAX_LOG, MAX_VALUE};

/// The outstanding vote or notification (the original's `vnState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingVote {
    pub event: EventType,
    pub notification_type: NotificationType,
    pub timeout_ms: u32,
}

impl Instance {
    /// VOTE_INST (revocable) or NOTIFY_INST (irrevocable) from the agent.
    pub fn start_action(
        &mut self,
        notification_type: NotificationType,
        event: EventType,
        ctx: &mut Ctx<'_>,
        out: &mut Vec<Effect>,
    ) {
        if event == EventType::Resume && (self.link != Link::Up || !self.heartbeating) {
            self.start_connect(out);
        }
        let timeout_ms = self.action_timeout_ms(notification_type, event);
        // A new request replaces an outstanding one (spec §7.2).
        self.vote = Some(PendingVote { event, notification_type, timeout_ms });
        out.push(Effect::Guest(HostMsg::ActionNotify(ActionNotify {
            invocation_id: self.params.invocation_id,
            event_type: event,
            notification_type,
            timeout_ms,
        })));
        // Decisions §2: the server waits exactly what it announced.
        let deadline = ctx.now + Duration::from_millis(u64::from(timeout_ms));
        out.push(Effect::Arm(TimerKind::Vote, deadline));
    }

    /// The guest's `action_response` (spec §7.3).
    pub(super) fn on_action_response(&mut self, r: ActionResponse, ctx: &mut Ctx<'_>, out: &mut Vec<Effect>) {
        if r.invocation_id != self.params.invocation_id {
            self.nack(
                format!("Invocation id mismatch. Received: {} expect: {}", r.invocation_id, self.params.invocation_id),
                out,
            );
            return;
        }
        let event = EventType::parse(&r.event_type);
        let result = VoteResult::parse(&r.vote_result);
        self.schedule_init_timer(event, ctx.now, out);
        if event == EventType::Pause && matches!(result, VoteResult::Accept | VoteResult::Complete) {
            self.hb = HbState::WaitingInit;
            out.push(Effect::Cancel(TimerKind::Monitor));
        }
        self.vote = None;
        out.push(Effect::Cancel(TimerKind::Vote));
        self.send_result(
            bounded(r.notification_type, MAX_VALUE),
            bounded(r.event_type, MAX_VALUE),
            result,
            bounded(r.vote_result, MAX_VALUE),
            bounded(r.log_msg, MAX_LOG),
            out,
        );
    }

    /// The vote deadline passed without an answer: send the implied result
    /// every time (decisions §1).
    pub(super) fn on_vote_timeout(&mut self, ctx: &mut Ctx<'_>, out: &mut Vec<Effect>) {
        let Some(vote) = self.vote.take() else { return };
        let result = match vote.notification_type {
            NotificationType::Revocable => VoteResult::Accept,
            NotificationType::Irrevocable => VoteResult::Complete,
            NotificationType::Unknown => VoteResult::Unknown,
        };
        self.schedule_init_timer(vote.event, ctx.now, out);
        self.send_result(
            vote.notification_type.as_str().to_string(),
            vote.event.as_str().to_string(),
            result,
            result.as_str().to_string(),
            String::new(),
            out,
        );
    }

    /// `send_vote_notify_resp` (spec §7.5).
    fn send_result(
        &mut self,
        notification_type: String,
        event_type: String,
        result: VoteResult,
        vote: String,
        reason: String,
        out: &mut Vec<Effect>,
    ) {
        if result == VoteResult::Complete && EventType::parse(&event_type) == EventType::Suspend {
            // The VM is suspended: drop the channel and reconnect when it resumes.
            self.start_connect(out);
        }
        out.push(Effect::Agent(AgentEvent::VoteNotify { notification_type, event_type, vote, reason }));
    }
}
