//! Instance-level VIM commands (agent spec §4.4 I1–I7, §4.5, §4.6): parsing
//! on the HTTP threads, handling on the dispatcher. The body's `uuid` and
//! `hostname` are authoritative for POST and PATCH, as in the original.

use std::time::Instant;

use crate::wire::payload::{enabled_str, to_json};
use crate::wire::vim::{ActionBody, ActionReply, InstanceCreateBody, InstanceServices, InstanceSetBody, ServiceStatus};

use super::{parse_body, ApiError, ApiReply, ApiRequest, Parsed};
use crate::agent::inventory::{Instance, ServerCmd};
use crate::agent::state::State;
use crate::agent::url::{CmdUrl, Suffix};

/// An instance command for the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceRequest {
    /// I1 POST.
    Create { hostname: String, uuid: String },
    /// I4 PATCH.
    Set { hostname: String, uuid: String, enable: bool },
    /// I5 GET.
    Query { id: String },
    /// I6 DELETE.
    Delete { id: String },
    /// I2 vote (`vote == true`) / I3 notify.
    Action { hostname: String, uuid: String, action: String, vote: bool },
}

/// Metrics label of an instance URL.
pub fn endpoint(url: &CmdUrl) -> &'static str {
    match url.suffix {
        Suffix::Vote => "vote",
        Suffix::Notify => "notify",
        _ => "instances",
    }
}

/// HTTP side.
pub fn parse(method: &str, url: &CmdUrl, body: &[u8]) -> Result<Parsed, ApiError> {
    let ask = |r| Ok(Parsed::Ask(ApiRequest::Instance(r)));
    match method {
        "POST" if matches!(url.suffix, Suffix::Vote | Suffix::Notify) => {
            let b: ActionBody = parse_body(body)?;
            ask(InstanceRequest::Action {
                hostname: b.hostname,
                uuid: b.uuid,
                action: b.action,
                vote: url.suffix == Suffix::Vote,
            })
        }
        "POST" => {
            let b: InstanceCreateBody = parse_body(body)?;
            if b.services.is_empty() {
                return Err(ApiError::Parse);
            }
            ask(InstanceRequest::Create { hostname: b.hostname, uuid: b.uuid })
        }
        "PATCH" => {
            let b: InstanceSetBody = parse_body(body)?;
            let first = b.services.first().ok_or(ApiError::Parse)?;
            if first.service != "heartbeat" {
                return Err(ApiError::InvalidData);
            }
            let enable = match first.state.as_str() {
                "enabled" => true,
                "disabled" => false,
                _ => return Err(ApiError::BadState),
            };
            ask(InstanceRequest::Set { hostname: b.hostname, uuid: b.uuid, enable })
        }
        "GET" => ask(InstanceRequest::Query { id: url.id.clone() }),
        "DELETE" => ask(InstanceRequest::Delete { id: url.id.clone() }),
        // I7: accepted and ignored, but with a JSON body (every 2xx is JSON).
        "PUT" if body.is_empty() => Err(ApiError::LengthRequired),
        "PUT" => Ok(Parsed::Done(ApiReply::Pass)),
        _ => Err(ApiError::Unsupported),
    }
}

/// The services reply of §4.6.
pub fn services_reply(inst: &Instance) -> Result<ApiReply, ApiError> {
    let reply = InstanceServices {
        uuid: inst.uuid.clone(),
        hostname: inst.hostname.clone(),
        services: vec![ServiceStatus {
            service: "heartbeat".into(),
            state: enabled_str(inst.reporting).into(),
            restart_timeout: if inst.heartbeating { inst.restart_to.clone() } else { "0".into() },
            status: enabled_str(inst.heartbeating).into(),
        }],
    };
    to_json(&reply).map(ApiReply::Json).map_err(|_| ApiError::InvalidData)
}

/// The timeout a vote or notification announces (§4.5).
pub fn action_timeout(inst: &Instance, action: &str, vote: bool) -> String {
    if !inst.heartbeating {
        return "0".into();
    }
    if vote {
        return inst.vote_to.clone();
    }
    match action {
        "stop" | "reboot" => inst.shutdown_to.clone(),
        "pause" | "suspend" | "live_migrate_begin" | "cold_migrate_begin" => inst.suspend_to.clone(),
        "unpause" | "resume" | "live_migrate_end" | "cold_migrate_end" => inst.resume_to.clone(),
        _ => "0".into(),
    }
}

impl State {
    /// Dispatcher side.
    pub fn on_instance_request(&mut self, r: InstanceRequest, _now: Instant) -> Result<ApiReply, ApiError> {
        match r {
            InstanceRequest::Create { hostname, uuid } => match self.inv.add_inst(&hostname, &uuid, false) {
                Ok(out) => {
                    log::info!("{uuid} on {hostname}: guest services created");
                    self.state_dirty = true;
                    self.send_all(out);
                    Ok(ApiReply::Pass)
                }
                Err(e) => {
                    log::warn!("create {uuid} on {hostname}: {e}");
                    Err(ApiError::InvalidData)
                }
            },
            InstanceRequest::Set { hostname, uuid, enable } => match self.inv.mod_inst(&hostname, &uuid, enable) {
                Ok(out) => {
                    log::info!("{uuid} on {hostname}: reporting {}", enabled_str(enable));
                    self.state_dirty = true;
                    self.send_all(out);
                    let inst = self.inv.instance(&uuid).ok_or(ApiError::NotFound)?;
                    services_reply(inst)
                }
                Err(e) => {
                    log::warn!("set {uuid} on {hostname}: {e}");
                    Err(ApiError::NotFound)
                }
            },
            InstanceRequest::Query { id } => services_reply(self.inv.instance(&id).ok_or(ApiError::NotFound)?),
            InstanceRequest::Delete { id } => match self.inv.del_inst(&id) {
                Ok(out) => {
                    log::info!("{id}: guest services deleted");
                    self.state_dirty = true;
                    self.send_all(out);
                    Ok(ApiReply::NoContent)
                }
                Err(_) => Err(ApiError::NotFound),
            },
            InstanceRequest::Action { hostname, uuid, action, vote } => {
                let inst = self.inv.instance(&uuid).ok_or(ApiError::NotFound)?;
                let timeout = action_timeout(inst, &action, vote);
                if inst.heartbeating {
                    let target =
                        if self.inv.host(&hostname).is_some() { hostname.clone() } else { inst.hostname.clone() };
                    let cmd = if vote {
                        ServerCmd::Vote { uuid: uuid.clone(), event: action.clone() }
                    } else {
                        ServerCmd::Notify { uuid: uuid.clone(), event: action.clone() }
                    };
                    if let Some(out) = self.inv.command(&target, cmd) {
                        self.send(out);
                    }
                }
                log::info!("{uuid}: {} {action}, timeout {timeout}", if vote { "vote" } else { "notify" });
                let reply = ActionReply { uuid, hostname, action, timeout };
                to_json(&reply).map(ApiReply::Json).map_err(|_| ApiError::InvalidData)
            }
        }
    }
}
