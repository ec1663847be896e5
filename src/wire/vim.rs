//! JSON bodies exchanged with the NFV VIM (agent spec §4–§6): the command API
//! the VIM calls on guestAgent, and the events and queries guestAgent sends to
//! the VIM's guest REST server. Key order follows the originals.
//!
//! Pure code: request bodies are parsed on the HTTP worker threads, responses
//! and events are built on the guestAgent dispatcher, query replies are parsed
//! there too.

use serde::{Deserialize, Serialize};

/// `{"status":"pass"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pass {
    pub status: String,
}

impl Pass {
    pub fn new() -> Self {
        Self { status: "pass".into() }
    }
}

impl Default for Pass {
    fn default() -> Self {
        Self::new()
    }
}

/// `{"status":"fail","reason":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fail {
    pub status: String,
    pub reason: String,
}

impl Fail {
    pub fn new(reason: &str) -> Self {
        Self { status: "fail".into(), reason: reason.into() }
    }

    /// The body of the HTTP gate's own refusals (`GateLimits::reject`), so
    /// that they look like every other API error. The status code is in the
    /// status line.
    pub fn gate_body(_status: u16, reason: &str) -> Vec<u8> {
        let mut body = serde_json::to_vec(&Fail::new(reason)).unwrap_or_default();
        body.push(b'\n');
        body
    }
}

/// Body of the VIM's host calls: `{"uuid","hostname"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostBody {
    pub hostname: String,
    #[serde(default)]
    pub uuid: Option<String>,
}

/// Body of guest_services_create: `services` is `["heartbeat"]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceCreateBody {
    pub hostname: String,
    pub uuid: String,
    pub services: Vec<serde_json::Value>,
}

/// One element of guest_services_set's `services`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    pub service: String,
    pub state: String,
}

/// Body of guest_services_set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSetBody {
    pub hostname: String,
    pub uuid: String,
    pub services: Vec<ServiceState>,
}

/// Body of guest_services_vote / _notify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionBody {
    pub hostname: String,
    pub uuid: String,
    pub action: String,
}

/// Reply to GET host: `{"uuid","hostname","state"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    pub uuid: String,
    pub hostname: String,
    pub state: String,
}

/// One element of the instance services reply (spec §4.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub service: String,
    pub state: String,
    #[serde(rename = "restart-timeout")]
    pub restart_timeout: String,
    pub status: String,
}

/// Reply to GET and PATCH instance (spec §4.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceServices {
    pub uuid: String,
    pub hostname: String,
    pub services: Vec<ServiceStatus>,
}

/// Reply to vote / notify: `timeout` is a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionReply {
    pub uuid: String,
    pub hostname: String,
    pub action: String,
    pub timeout: String,
}

/// `services` element of a service event (spec §6.3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEventItem {
    pub service: String,
    pub state: String,
    pub status: String,
    #[serde(rename = "restart-timeout")]
    pub restart_timeout: String,
}

/// `services` element of an alarm event (spec §6.3.2, §6.3.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmEventItem {
    pub service: String,
    pub state: String,
    #[serde(rename = "repair-action")]
    pub repair_action: String,
}

/// `event-data` of service and alarm events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Services<T> {
    pub services: Vec<T>,
}

/// Service and alarm events: `{"uuid","hostname","event-type","event-data"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceEvent<T> {
    pub uuid: String,
    pub hostname: String,
    #[serde(rename = "event-type")]
    pub event_type: String,
    #[serde(rename = "event-data")]
    pub event_data: Services<T>,
}

/// `event-data` of an action event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionData {
    pub action: String,
    #[serde(rename = "guest-response")]
    pub guest_response: String,
    pub reason: String,
}

/// Vote / notification result event (spec §6.3.4): no `hostname`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionEvent {
    pub uuid: String,
    #[serde(rename = "event-type")]
    pub event_type: String,
    #[serde(rename = "event-data")]
    pub event_data: ActionData,
}

/// Body of the host-state query (spec §6.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostQuery {
    pub hostname: String,
    pub uuid: String,
}

/// Reply to the host-state query; only `state` is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostQueryReply {
    #[serde(default)]
    pub state: Option<String>,
}

/// One instance of the host instance list (spec §6.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedInstance {
    pub uuid: String,
    #[serde(default)]
    pub hostname: Option<String>,
    pub services: Vec<ServiceState>,
}

/// Reply to the host instance list query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceList {
    pub instances: Vec<ListedInstance>,
}

/// What the VIM answers to a failure alarm; the real VIM sends `admin_state`
/// instead of `state`, so `state` is optional (spec §6.3.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmReplyService {
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
}

/// The failure alarm reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmReply {
    pub uuid: String,
    pub hostname: String,
    pub services: Vec<AlarmReplyService>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::payload::to_json;

    fn text<T: Serialize>(v: &T) -> String {
        String::from_utf8(to_json(v).unwrap()).unwrap()
    }

    #[test]
    fn event_bodies_have_the_original_keys_in_order() {
        let service = InstanceEvent {
            uuid: "u".into(),
            hostname: "h".into(),
            event_type: "service".into(),
            event_data: Services {
                services: vec![ServiceEventItem {
                    service: "heartbeat".into(),
                    state: "enabled".into(),
                    status: "enabled".into(),
                    restart_timeout: "120".into(),
                }],
            },
        };
        assert_eq!(
            text(&service),
            r#"{"uuid":"u","hostname":"h","event-type":"service","event-data":{"services":[{"service":"heartbeat","state":"enabled","status":"enabled","restart-timeout":"120"}]}}"#
        );
        let action = ActionEvent {
            uuid: "u".into(),
            event_type: "action".into(),
            event_data: ActionData { action: "stop".into(), guest_response: "allow".into(), reason: "a \"b\"".into() },
        };
        assert_eq!(
            text(&action),
            r#"{"uuid":"u","event-type":"action","event-data":{"action":"stop","guest-response":"allow","reason":"a \"b\""}}"#
        );
    }

    #[test]
    fn services_reply_is_exact() {
        let r = InstanceServices {
            uuid: "u".into(),
            hostname: "h".into(),
            services: vec![ServiceStatus {
                service: "heartbeat".into(),
                state: "disabled".into(),
                restart_timeout: "0".into(),
                status: "disabled".into(),
            }],
        };
        assert_eq!(
            text(&r),
            r#"{"uuid":"u","hostname":"h","services":[{"service":"heartbeat","state":"disabled","restart-timeout":"0","status":"disabled"}]}"#
        );
    }

    #[test]
    fn the_real_vims_alarm_reply_has_no_state() {
        let r: AlarmReply = serde_json::from_str(
            r#"{"uuid":"u","hostname":"h","services":[{"service":"heartbeat","admin_state":"unlocked"}]}"#,
        )
        .unwrap();
        assert_eq!(r.services[0].state, None);
    }
}
