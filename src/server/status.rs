//! guestServer's local read-only HTTP API (`--http`): `GET /v1/instances`,
//! `GET /v1/instances/<uuid>` and `GET /metrics`.
//!
//! The handler runs on rouille's pool threads: it only parses the URL, sends
//! a [`StatusRequest`] with its own `bounded(1)` reply channel to the
//! dispatcher and waits with a timeout (503 when the dispatcher is busy).
//! The dispatcher builds the reply (`Dispatcher::status`).

use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use gh_threads::rouille::{Request, Response};
use serde::Serialize;

use super::dispatcher::{Dispatcher, Event};
use super::instance::Link;
use super::metrics::Gauges;

/// How long a handler waits for the dispatcher.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// A question for the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusRequest {
    Instances,
    Instance(String),
    Metrics,
}

/// The dispatcher's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusReply {
    Doc(Box<StatusDoc>),
    One(Box<InstanceStatus>),
    NotFound,
    Metrics(String),
}

/// One instance as shown by the status API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceStatus {
    pub uuid: String,
    pub name: String,
    pub channel: Option<String>,
    pub connected: bool,
    pub state: &'static str,
    pub heartbeating: bool,
    pub reporting: bool,
    pub failed: bool,
    pub misses: u32,
    pub heartbeat_interval_ms: u32,
    pub corrective_action: String,
    pub losses_reported: u64,
    pub vote_pending: Option<String>,
}

/// The whole status document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusDoc {
    pub hostname: String,
    pub host_reporting: bool,
    pub agent: Option<String>,
    pub uptime_secs: u64,
    pub instances: Vec<InstanceStatus>,
}

#[derive(Serialize)]
struct Failure<'a> {
    status: &'static str,
    reason: &'a str,
}

fn fail(code: u16, reason: &str) -> Response {
    Response::json(&Failure { status: "fail", reason }).with_status_code(code)
}

/// The rouille handler: thin, no state.
pub fn handler(tx: Sender<Event>) -> impl Fn(&Request) -> Response + Send + Sync + 'static {
    move |req: &Request| {
        if req.method() != "GET" {
            return fail(405, "read-only API: use GET");
        }
        let url = req.url();
        let query = match url.trim_end_matches('/') {
            "/metrics" => StatusRequest::Metrics,
            "/v1/instances" | "" => StatusRequest::Instances,
            path => match path.strip_prefix("/v1/instances/") {
                Some(id) if !id.is_empty() && !id.contains('/') => StatusRequest::Instance(id.to_string()),
                _ => return fail(404, "no such resource"),
            },
        };
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        if tx.send_timeout(Event::Status(query, reply_tx), REPLY_TIMEOUT).is_err() {
            return fail(503, "daemon busy");
        }
        match reply_rx.recv_timeout(REPLY_TIMEOUT) {
            Ok(StatusReply::Doc(doc)) => Response::json(&*doc),
            Ok(StatusReply::One(one)) => Response::json(&*one),
            Ok(StatusReply::NotFound) => fail(404, "unknown instance"),
            Ok(StatusReply::Metrics(text)) => Response::from_data("text/plain; version=0.0.4", text),
            Err(_) => fail(503, "daemon busy"),
        }
    }
}

impl Dispatcher {
    /// Answers a status request.
    pub(super) fn status(&self, req: StatusRequest, now: Instant) -> StatusReply {
        let uptime_secs = now.duration_since(self.started).as_secs();
        match req {
            StatusRequest::Metrics => {
                let mut g = Gauges {
                    instances: self.slots.len(),
                    timers: self.wheel.len(),
                    host_reporting: self.host_reporting,
                    uptime_secs,
                    ..Default::default()
                };
                for s in self.slots.values() {
                    g.connected += usize::from(s.inst.link == Link::Up);
                    g.heartbeating += usize::from(s.inst.heartbeating);
                    g.failed += usize::from(s.inst.failed);
                }
                StatusReply::Metrics(self.metrics.render(&g))
            }
            StatusRequest::Instances => {
                let mut instances: Vec<InstanceStatus> = self.slots.values().map(|s| self.one(s)).collect();
                instances.sort_by(|a, b| a.uuid.cmp(&b.uuid));
                StatusReply::Doc(Box::new(StatusDoc {
                    hostname: self.settings.hostname.clone(),
                    host_reporting: self.host_reporting,
                    agent: self.agent.peer.or(self.agent.configured).map(|a| a.to_string()),
                    uptime_secs,
                    instances,
                }))
            }
            StatusRequest::Instance(uuid) => match self.by_uuid.get(&uuid).and_then(|id| self.slots.get(id)) {
                Some(s) => StatusReply::One(Box::new(self.one(s))),
                None => StatusReply::NotFound,
            },
        }
    }

    fn one(&self, s: &super::slots::Slot) -> InstanceStatus {
        let i = &s.inst;
        InstanceStatus {
            uuid: i.uuid.clone(),
            name: i.params.name.clone(),
            channel: i.chan.clone(),
            connected: i.link == Link::Up,
            state: i.hb.name(),
            heartbeating: i.heartbeating,
            reporting: i.reporting,
            failed: i.failed,
            misses: i.b2b_misses,
            heartbeat_interval_ms: i.params.heartbeat_interval_ms,
            corrective_action: i.params.corrective_action.clone(),
            losses_reported: i.failures,
            vote_pending: i.vote.as_ref().map(|v| format!("{} {}", v.notification_type, v.event)),
        }
    }
}
