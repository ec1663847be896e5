//! VIM events (agent spec §6.3): building the exact PATCH bodies, queueing
//! them in the outbox, handing due events to the "vim-events" sender thread
//! and classifying the outcomes (decisions §guestAgent 4). Dispatcher thread.

use std::time::Instant;

use crossbeam_channel::TrySendError;

use crate::wire::payload::{enabled_str, to_json};
use crate::wire::vim::{
    ActionData, ActionEvent, AlarmEventItem, AlarmReply, InstanceEvent, ServiceEventItem, Services,
};

use super::inventory::Instance;
use super::outbox::{Delivery, EventKind};
use super::state::State;
use super::vim_client::{classify_event, Reply};
use super::vim_sender::{JobTag, VimDone, VimJob};

/// An event for the VIM, not yet serialised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VimEvent {
    pub instance: String,
    pub kind: EventKind,
    pub body: Result<Vec<u8>, String>,
}

fn body<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, String> {
    to_json(v).map_err(|e| e.to_string())
}

impl VimEvent {
    /// Service event (§6.3.1): status from `heartbeating`, timeout
    /// `restart_to` when enabled, "0" when disabled.
    pub fn service(inst: &Instance) -> Self {
        let ev = InstanceEvent {
            uuid: inst.uuid.clone(),
            hostname: inst.hostname.clone(),
            event_type: "service".into(),
            event_data: Services {
                services: vec![ServiceEventItem {
                    service: "heartbeat".into(),
                    state: enabled_str(inst.reporting).into(),
                    status: enabled_str(inst.heartbeating).into(),
                    restart_timeout: if inst.heartbeating { inst.restart_to.clone() } else { "0".into() },
                }],
            },
        };
        Self { instance: inst.uuid.clone(), kind: EventKind::Service, body: body(&ev) }
    }

    /// Alarm event (§6.3.2 `unhealthy`, §6.3.3 `failed`).
    pub fn alarm(inst: &Instance, state: &str) -> Self {
        let ev = InstanceEvent {
            uuid: inst.uuid.clone(),
            hostname: inst.hostname.clone(),
            event_type: "alarm".into(),
            event_data: Services {
                services: vec![AlarmEventItem {
                    service: "heartbeat".into(),
                    state: state.into(),
                    repair_action: inst.corrective_action.clone(),
                }],
            },
        };
        Self { instance: inst.uuid.clone(), kind: EventKind::Alarm, body: body(&ev) }
    }

    /// Vote / notification result (§6.3.4).
    pub fn action(uuid: &str, action: &str, response: &str, reason: &str) -> Self {
        let ev = ActionEvent {
            uuid: uuid.to_string(),
            event_type: "action".into(),
            event_data: ActionData {
                action: action.to_string(),
                guest_response: response.to_string(),
                reason: reason.to_string(),
            },
        };
        Self { instance: uuid.to_string(), kind: EventKind::Action, body: body(&ev) }
    }
}

/// The path every event is PATCHed to.
pub fn event_path(uuid: &str) -> String {
    format!("/nfvi-plugins/v1/instances/{uuid}")
}

impl State {
    /// Queues an event and sends whatever is due.
    pub fn push_event(&mut self, ev: VimEvent, now: Instant) {
        let body = match ev.body {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => {
                log::error!("cannot serialise event for {}: {e}", ev.instance);
                return;
            }
        };
        if let Some(dropped) = self.outbox.push(&ev.instance, ev.kind, event_path(&ev.instance), body, now) {
            log::warn!("outbox full: dropped service event {} for {}", dropped.id, dropped.instance);
        }
        // On disk before anything tries to send it: a crash now loses nothing.
        self.outbox_dirty = true;
        self.persist();
        self.pump_outbox(now);
    }

    /// Hands every due event to the sender thread and re-arms the outbox timer.
    pub fn pump_outbox(&mut self, now: Instant) {
        while let Some(ev) = self.outbox.next_job(now) {
            let job = VimJob {
                tag: JobTag::Event { id: ev.id, kind: ev.kind },
                url: self.cfg.vim_url.clone(),
                method: "PATCH",
                path: ev.path.clone(),
                body: Some(ev.body.into_bytes()),
                timeout: self.cfg.vim_timeout,
            };
            match self.io.events_tx.try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.counters.vim_jobs_refused += 1;
                    self.outbox.complete(ev.id, Delivery::Retry, now);
                    break;
                }
            }
        }
        self.arm_outbox(now);
    }

    /// Records the outcome of an event PATCH.
    pub fn on_event_done(&mut self, id: u64, kind: EventKind, done: &VimDone, now: Instant) {
        let outcome = classify_event(&done.result);
        match (&done.result, outcome) {
            (Err(e), _) => log::warn!("event {id} not sent ({}): {e}; will retry", done.target),
            (Ok(Reply::Status { code, .. }), Delivery::Retry) => {
                log::warn!("event {id}: {} answered {code}; will retry", done.target)
            }
            (Ok(Reply::Status { code, .. }), Delivery::Rejected) => {
                log::error!("event {id}: {} answered {code}; dropped", done.target)
            }
            (Ok(Reply::ClosedWithoutReply), _) => {
                log::debug!("event {id}: VIM closed without a reply; delivered")
            }
            (Ok(Reply::Broken(why)), _) => {
                log::warn!("event {id}: sent, but no reply ({why}); counted as delivered")
            }
            (Ok(Reply::Status { .. }), _) => log::debug!("event {id} delivered"),
        }
        if kind == EventKind::Alarm {
            if let Ok(Reply::Status { code: 200, body }) = &done.result {
                self.on_alarm_reply(body);
            }
        }
        self.outbox.complete(id, outcome, now);
        self.outbox_dirty = true;
        self.pump_outbox(now);
    }

    /// The failure alarm's reply may carry the VIM's service state (§6.3.3);
    /// the real VIM sends `admin_state`, which is ignored as the original does.
    fn on_alarm_reply(&mut self, body: &[u8]) {
        let Ok(reply) = serde_json::from_slice::<AlarmReply>(body) else {
            log::debug!("alarm reply is not the expected JSON; ignored");
            return;
        };
        let Some(svc) = reply.services.first() else {
            return;
        };
        let enable = match svc.state.as_deref() {
            Some("enabled") => true,
            Some("disabled") => false,
            _ => return,
        };
        if svc.service.as_deref() != Some("heartbeat") {
            return;
        }
        match self.inv.mod_inst(&reply.hostname, &reply.uuid, enable) {
            Ok(out) => {
                self.state_dirty = true;
                self.send_all(out);
            }
            Err(e) => log::warn!("alarm reply for {}: {e}", reply.uuid),
        }
    }
}
