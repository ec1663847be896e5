//! Host-level VIM commands (agent spec §4.4 H1–H6): parsing on the HTTP
//! threads, handling on the dispatcher. Every "host not found" also sends
//! READY to mtcAgent so that it resends the inventory (§8.1).

use std::time::Instant;

use crate::wire::payload::{enabled_str, to_json};
use crate::wire::vim::{HostBody, HostState};

use super::{parse_body, ApiError, ApiReply, ApiRequest, Parsed};
use crate::agent::state::State;
use crate::agent::url::{CmdUrl, Suffix};

/// A host command for the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRequest {
    /// H1 POST: does the host exist?
    Create { id: String },
    /// H2 GET (any suffix): its reporting state.
    Query { id: String },
    /// H3/H4 PUT: enable on `enable`, anything else disables; acts on the
    /// body's hostname, not the URL.
    Set { hostname: String, enable: bool },
}

/// HTTP side.
pub fn parse(method: &str, url: &CmdUrl, body: &[u8]) -> Result<Parsed, ApiError> {
    let ask = |r| Ok(Parsed::Ask(ApiRequest::Host(r)));
    match method {
        "POST" => ask(HostRequest::Create { id: url.id.clone() }),
        "GET" => ask(HostRequest::Query { id: url.id.clone() }),
        "PUT" => {
            let b: HostBody = parse_body(body)?;
            ask(HostRequest::Set { hostname: b.hostname, enable: url.suffix == Suffix::Enable })
        }
        // H5: nothing is looked up; the agent never owned hosts.
        "DELETE" => Ok(Parsed::Done(ApiReply::NoContent)),
        "PATCH" if body.is_empty() => Err(ApiError::LengthRequired),
        _ => Err(ApiError::Unsupported),
    }
}

impl State {
    /// Dispatcher side.
    pub fn on_host_request(&mut self, r: HostRequest, _now: Instant) -> Result<ApiReply, ApiError> {
        match r {
            HostRequest::Create { id } => match self.inv.host(&id) {
                Some(_) => Ok(ApiReply::Pass),
                None => self.host_not_found(&id),
            },
            HostRequest::Query { id } => {
                let Some(h) = self.inv.host(&id) else {
                    return self.host_not_found(&id);
                };
                let reply = HostState {
                    uuid: id.clone(),
                    hostname: h.hostname.clone(),
                    state: enabled_str(h.reporting).into(),
                };
                to_json(&reply).map(ApiReply::Json).map_err(|_| ApiError::InvalidData)
            }
            HostRequest::Set { hostname, enable } => match self.inv.host_inst(&hostname, enable) {
                Ok(out) => {
                    log::info!("{hostname}: VIM sets host reporting {}", enabled_str(enable));
                    self.state_dirty = true;
                    self.send_all(out);
                    Ok(ApiReply::Pass)
                }
                Err(_) => self.host_not_found(&hostname),
            },
        }
    }

    fn host_not_found(&mut self, id: &str) -> Result<ApiReply, ApiError> {
        log::warn!("VIM refers to unknown host {id}; asking mtcAgent for inventory");
        self.send_ready_to_mtc();
        Err(ApiError::NotFound)
    }
}
