//! The state query audit (agent spec §3.5): 2 s after start and then every
//! 10 s, per host in inventory order: learn the host's reporting state and
//! instance list from the VIM until that has worked once (through the
//! "vim-query" thread, so the dispatcher never waits), then send QRY_INST to
//! every host that has instances and reporting on. The one O(hosts) walk of
//! the dispatcher. Also handles the two query replies.

use std::time::Instant;

use crossbeam_channel::TrySendError;

use crate::wire::payload::to_json;
use crate::wire::vim::{HostQuery, HostQueryReply, InstanceList};

use super::inventory::ServerCmd;
use super::state::{State, TimerKey};
use super::vim_client::Reply;
use super::vim_sender::{JobTag, VimDone, VimJob};

impl State {
    /// One audit pass; re-arms itself.
    pub fn audit(&mut self, now: Instant) {
        self.counters.audits += 1;
        let names = self.inv.hostnames();
        if names.is_empty() {
            // As the original: the first pass happens when the first host appears.
            self.audit_waiting_for_host = true;
            return;
        }
        for name in names {
            let Some(h) = self.inv.host(&name) else {
                continue;
            };
            let (uuid, need_state, need_list) = (h.uuid.clone(), !h.got_host_state, !h.got_instances);
            if need_state && !self.queries.contains(&(name.clone(), true)) {
                let body = to_json(&HostQuery { hostname: name.clone(), uuid: uuid.clone() }).ok();
                self.query(
                    JobTag::HostState { hostname: name.clone() },
                    format!("/nfvi-plugins/v1/hosts/{uuid}"),
                    body,
                );
            }
            if need_list && !self.queries.contains(&(name.clone(), false)) {
                self.query(
                    JobTag::InstanceList { hostname: name.clone() },
                    format!("/nfvi-plugins/v1/instances/?host_uuid={uuid}"),
                    None,
                );
            }
            let Some(h) = self.inv.host_mut(&name) else {
                continue;
            };
            if h.instances.is_empty() || !h.reporting {
                continue;
            }
            if h.query_flag {
                h.query_misses += 1;
                if h.query_misses > 1 {
                    log::debug!("{name}: {} query audits unanswered", h.query_misses);
                }
            } else {
                h.query_misses = 0;
            }
            h.query_flag = true;
            if let Some(out) = self.inv.command(&name, ServerCmd::Query) {
                self.send(out);
            }
        }
        self.arm(now + self.cfg.audit_interval, TimerKey::Audit);
    }

    /// A host appeared; runs a pass that was waiting for one.
    pub fn host_added(&mut self, now: Instant) {
        if self.audit_waiting_for_host {
            self.audit_waiting_for_host = false;
            self.audit(now);
        }
    }

    fn query(&mut self, tag: JobTag, path: String, body: Option<Vec<u8>>) {
        let key = match &tag {
            JobTag::HostState { hostname } => (hostname.clone(), true),
            JobTag::InstanceList { hostname } => (hostname.clone(), false),
            JobTag::Event { .. } => return,
        };
        let job =
            VimJob { tag, url: self.cfg.vim_url.clone(), method: "GET", path, body, timeout: self.cfg.vim_timeout };
        match self.io.query_tx.try_send(job) {
            Ok(()) => {
                self.queries.insert(key);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.vim_jobs_refused += 1;
            }
        }
    }

    /// Handles the reply to an audit query.
    pub fn on_query_done(&mut self, done: VimDone, now: Instant) {
        let body = match &done.result {
            Ok(Reply::Status { code: 200..=299, body }) => Some(body.clone()),
            Ok(Reply::Status { code, .. }) => {
                self.warn_limited(now, format!("{} answered {code}; retried next audit", done.target));
                None
            }
            Ok(other) => {
                self.warn_limited(now, format!("{}: {other:?}; retried next audit", done.target));
                None
            }
            Err(e) => {
                self.warn_limited(now, format!("{}: {e}; retried next audit", done.target));
                None
            }
        };
        match done.tag {
            JobTag::HostState { hostname } => {
                self.queries.remove(&(hostname.clone(), true));
                if let Some(b) = body {
                    self.on_host_state(&hostname, &b);
                }
            }
            JobTag::InstanceList { hostname } => {
                self.queries.remove(&(hostname.clone(), false));
                if let Some(b) = body {
                    self.on_instance_list(&hostname, &b, now);
                }
            }
            JobTag::Event { .. } => {}
        }
    }

    fn on_host_state(&mut self, hostname: &str, body: &[u8]) {
        let state = match serde_json::from_slice::<HostQueryReply>(body) {
            Ok(r) => r.state.unwrap_or_default(),
            Err(e) => {
                log::warn!("host state of {hostname}: not JSON ({e}); treated as disabled");
                String::new()
            }
        };
        let enable = state == "enabled";
        match self.inv.host_inst(hostname, enable) {
            Ok(out) => {
                if let Some(h) = self.inv.host_mut(hostname) {
                    h.got_host_state = true;
                }
                log::info!("{hostname}: VIM says host state {state:?}; reporting {enable}");
                self.state_dirty = true;
                // decisions §guestAgent 6: tell the guestServer too.
                self.send_all(out);
            }
            Err(e) => log::debug!("host state for {hostname}: {e}"),
        }
    }

    fn on_instance_list(&mut self, hostname: &str, body: &[u8], now: Instant) {
        let list = match serde_json::from_slice::<InstanceList>(body) {
            Ok(l) => l,
            Err(e) => {
                self.warn_limited(now, format!("instance list of {hostname}: bad JSON ({e})"));
                return;
            }
        };
        let mut ok = true;
        for i in &list.instances {
            let enable = match i.services.first() {
                Some(s) if s.service == "heartbeat" && (s.state == "enabled" || s.state == "disabled") => {
                    s.state == "enabled"
                }
                _ => {
                    log::error!("instance list of {hostname}: bad services for {}", i.uuid);
                    ok = false;
                    continue;
                }
            };
            match self.inv.add_inst(hostname, &i.uuid, enable) {
                Ok(out) => {
                    self.state_dirty = true;
                    self.send_all(out);
                }
                Err(e) => {
                    log::warn!("instance list of {hostname}: {}: {e}", i.uuid);
                    ok = false;
                }
            }
        }
        if ok {
            if let Some(h) = self.inv.host_mut(hostname) {
                h.got_instances = true;
            }
            log::info!("{hostname}: {} instance(s) from the VIM", list.instances.len());
        }
    }
}
