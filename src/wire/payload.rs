//! The JSON payloads carried in the envelope's buffer (spec server §8.2–§8.3,
//! agent §7.3–§7.4, §8.2), in the originals' key order.
//!
//! Commands the C++ peers send are parsed leniently where the original was
//! lenient (a missing key reads as absent, not as an error), because unchanged
//! C++ guestAgents and mtcAgents talk to us.

use serde::{Deserialize, Serialize};

/// `"enabled"` / `"disabled"` as used in every payload.
pub fn enabled_str(on: bool) -> &'static str {
    if on {
        "enabled"
    } else {
        "disabled"
    }
}

/// The instance-info payload of RUNNING, STOPPED, ILLHEALTH and QRY replies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub hostname: String,
    pub uuid: String,
    pub reporting: String,
    pub heartbeating: String,
    #[serde(rename = "repair-action")]
    pub repair_action: String,
    #[serde(rename = "restart-to")]
    pub restart_to: String,
    #[serde(rename = "shutdown-to")]
    pub shutdown_to: String,
    #[serde(rename = "suspend-to")]
    pub suspend_to: String,
    #[serde(rename = "resume-to")]
    pub resume_to: String,
    #[serde(rename = "vote-to")]
    pub vote_to: String,
    /// Ours (issue 6): present only when the agent acknowledges events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<u64>,
}

/// HEARTBEAT_LOSS payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loss {
    pub hostname: String,
    pub uuid: String,
    /// Ours (issue 6): present only when the agent acknowledges events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<u64>,
}

/// MONITOR_READY payload from guestServer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    pub hostname: String,
}

/// VOTE_NOTIFY payload (note the hyphenated `event-type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteNotify {
    pub hostname: String,
    pub uuid: String,
    pub notification_type: String,
    #[serde(rename = "event-type")]
    pub event_type: String,
    pub vote: String,
    pub reason: String,
    /// Ours (issue 6): present only when the agent acknowledges events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<u64>,
}

/// ADD_INST / MOD_INST / DEL_INST payload (agent → server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstCmd {
    pub source: String,
    #[serde(default)]
    pub uuid: Option<String>,
    pub service: String,
    #[serde(default)]
    pub state: Option<String>,
}

/// MOD_HOST payload (agent → server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCmd {
    pub source: String,
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default)]
    pub heartbeat: Option<String>,
}

/// QRY_INST request and LOOPBACK payload (agent → server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub source: String,
}

/// VOTE_INST / NOTIFY_INST payload (agent → server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionCmd {
    pub source: String,
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default)]
    pub event: Option<String>,
}

/// EVENT_ACK payload (our guestAgent → our guestServer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventAck {
    pub source: String,
    pub event_id: u64,
}

/// ADD_HOST / MOD_HOST / DEL_HOST payload (mtcAgent → agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInventory {
    pub hostname: String,
    pub uuid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personality: Option<String>,
}

/// Serialises a payload compactly, as the originals' builders do.
pub fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_info_keys_in_original_order() {
        let info = InstanceInfo {
            hostname: "compute-0".into(),
            uuid: "u".into(),
            reporting: enabled_str(true).into(),
            heartbeating: enabled_str(false).into(),
            repair_action: "log".into(),
            restart_to: "120".into(),
            shutdown_to: "10".into(),
            suspend_to: "10".into(),
            resume_to: "10".into(),
            vote_to: "10".into(),
            event_id: None,
        };
        assert_eq!(
            String::from_utf8(to_json(&info).unwrap()).unwrap(),
            r#"{"hostname":"compute-0","uuid":"u","reporting":"enabled","heartbeating":"disabled","repair-action":"log","restart-to":"120","shutdown-to":"10","suspend-to":"10","resume-to":"10","vote-to":"10"}"#
        );
    }

    #[test]
    fn vote_notify_escapes_reason() {
        let v = VoteNotify {
            hostname: "h".into(),
            uuid: "u".into(),
            notification_type: "revocable".into(),
            event_type: "stop".into(),
            vote: "reject".into(),
            reason: "say \"no\"\\".into(),
            event_id: None,
        };
        let json = String::from_utf8(to_json(&v).unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"hostname":"h","uuid":"u","notification_type":"revocable","event-type":"stop","vote":"reject","reason":"say \"no\"\\"}"#
        );
        assert_eq!(serde_json::from_str::<VoteNotify>(&json).unwrap(), v);
    }

    #[test]
    fn agent_commands_parse_with_missing_keys() {
        let c: InstCmd = serde_json::from_str(r#"{"source":"1.1.1.1","service":"heartbeat"}"#).unwrap();
        assert_eq!(c.uuid, None);
        assert_eq!(c.state, None);
        let h: HostCmd = serde_json::from_str(r#"{"source":"s","uuid":"x"}"#).unwrap();
        assert_eq!(h.heartbeat, None);
    }
}

/// ADD_INST / MOD_INST / DEL_INST payload as guestAgent sends it: every key
/// present, in the original's order (agent §7.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstCmdOut {
    pub source: String,
    pub uuid: String,
    pub service: String,
    pub state: String,
}

/// MOD_HOST payload as guestAgent sends it (agent §7.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCmdOut {
    pub source: String,
    pub uuid: String,
    pub heartbeat: String,
}

/// VOTE_INST / NOTIFY_INST payload as guestAgent sends it (agent §7.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionCmdOut {
    pub source: String,
    pub uuid: String,
    pub event: String,
}

#[cfg(test)]
mod agent_out_tests {
    use super::*;

    #[test]
    fn agent_command_payloads_are_exact() {
        let add = InstCmdOut {
            source: "10.0.0.1".into(),
            uuid: "u".into(),
            service: "heartbeat".into(),
            state: enabled_str(true).into(),
        };
        assert_eq!(
            to_json(&add).unwrap(),
            br#"{"source":"10.0.0.1","uuid":"u","service":"heartbeat","state":"enabled"}"#
        );
        let host = HostCmdOut { source: "s".into(), uuid: "h".into(), heartbeat: "disabled".into() };
        assert_eq!(to_json(&host).unwrap(), br#"{"source":"s","uuid":"h","heartbeat":"disabled"}"#);
        let vote = ActionCmdOut { source: "s".into(), uuid: "u".into(), event: "stop".into() };
        assert_eq!(to_json(&vote).unwrap(), br#"{"source":"s","uuid":"u","event":"stop"}"#);
    }
}
