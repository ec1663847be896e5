//! The demo's VIM stand-in: the HTTP listener guestAgent posts its events to
//! (and audits host state and instance lists from), answering like the real
//! Python VIM, and turning every event into a timeline line.
//!
//! Runs on thread "vim" (accept loop, one request at a time: the agent sends
//! one request per connection from a single sender thread).

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;

use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};

use super::http::{read_request, respond};
use super::Note;

/// One instance the VIM knows.
#[derive(Debug, Clone)]
pub struct VimInstance {
    pub uuid: String,
    pub host_uuid: String,
    pub hostname: String,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "event-type")]
    event_type: String,
    #[serde(rename = "event-data")]
    event_data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    #[serde(default)]
    services: Vec<Service>,
    #[serde(default)]
    action: Option<String>,
    #[serde(rename = "guest-response", default)]
    guest_response: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct Service {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(rename = "repair-action", default)]
    repair_action: Option<String>,
}

#[derive(Serialize)]
struct HostState<'a> {
    uuid: &'a str,
    hostname: &'a str,
    state: &'a str,
}

#[derive(Serialize)]
struct InstanceList<'a> {
    instances: Vec<ListedInstance<'a>>,
}

#[derive(Serialize)]
struct ListedInstance<'a> {
    uuid: &'a str,
    hostname: &'a str,
    services: [ListedService; 1],
}

#[derive(Serialize)]
struct ListedService {
    service: &'static str,
    state: &'static str,
}

/// Serves until the process ends (the demo exits, the listener goes with it).
pub fn serve(
    listener: TcpListener,
    instances: Arc<Vec<VimInstance>>,
    hosts: HashMap<String, String>,
    tx: Sender<Note>,
) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let Ok(req) = read_request(&mut stream) else { continue };
        let path = req.path.as_str();
        if req.method == "GET" {
            if let Some(host_uuid) = path.strip_prefix("/nfvi-plugins/v1/instances/?host_uuid=") {
                let list = InstanceList {
                    instances: instances
                        .iter()
                        .filter(|i| i.host_uuid == host_uuid)
                        .map(|i| ListedInstance {
                            uuid: &i.uuid,
                            hostname: &i.hostname,
                            services: [ListedService { service: "heartbeat", state: "enabled" }],
                        })
                        .collect(),
                };
                let _ = respond(&mut stream, 200, &serde_json::to_vec(&list).unwrap_or_default());
            } else if let Some(uuid) = path.strip_prefix("/nfvi-plugins/v1/hosts/") {
                let name = hosts.get(uuid).map(String::as_str).unwrap_or("unknown");
                let body = HostState { uuid, hostname: name, state: "enabled" };
                let _ = respond(&mut stream, 200, &serde_json::to_vec(&body).unwrap_or_default());
            } else {
                let _ = respond(&mut stream, 404, b"{}");
            }
            continue;
        }
        if req.method == "PATCH" {
            if let Some(uuid) = path.strip_prefix("/nfvi-plugins/v1/instances/") {
                if let Ok(ev) = serde_json::from_slice::<Event>(&req.body) {
                    let _ = tx.send(describe(uuid, &ev));
                    // Like the real VIM: alarms get a JSON answer, service and
                    // action events a bare close.
                    if ev.event_type == "alarm" {
                        let _ = respond(&mut stream, 200, b"{}");
                    }
                    continue;
                }
            }
        }
        let _ = respond(&mut stream, 400, b"{}");
    }
}

fn describe(uuid: &str, ev: &Event) -> Note {
    let d = &ev.event_data;
    let s = d.services.first();
    let field = |f: fn(&Service) -> &Option<String>| s.and_then(|s| f(s).clone()).unwrap_or_default();
    let text = match ev.event_type.as_str() {
        "service" => format!("service status {} (reporting {})", field(|s| &s.status), field(|s| &s.state)),
        "alarm" => format!("ALARM heartbeat {} -> repair-action {}", field(|s| &s.state), field(|s| &s.repair_action)),
        "action" => format!(
            "vote result for {}: guest-response {} {}",
            d.action.clone().unwrap_or_default(),
            d.guest_response.clone().unwrap_or_default(),
            d.reason.clone().filter(|r| !r.is_empty()).map(|r| format!("({r})")).unwrap_or_default()
        ),
        other => format!("event {other}"),
    };
    Note::Vim { uuid: uuid.to_string(), text }
}
