//! The guestServer side of the UDP link with guestAgent (spec server §8):
//! commands in (accepted only from allowed agent addresses), events and
//! query replies out in the full 1060-byte envelope, and the READY handshake
//! (decisions §10). With `hmac_key_file` set, datagrams are sealed and
//! opened with the shared key (`wire::auth`); without it, nothing changes.
//!
//! Runs on the dispatcher; the datagrams themselves are received by the
//! "udp-rx" thread and sent with a non-blocking socket.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use gh_threads::udp::Datagram;

use super::config::Settings;
use super::dispatcher::{Dispatcher, TimerKey, READY_RETRY};
use super::instance::AgentEvent;
use super::retransmit::Retransmit;
use crate::wire::auth::{self, ReplayGuard};
use crate::wire::envelope::{cmd, Envelope, ENVELOPE_LEN};
use crate::wire::payload::{to_json, ActionCmd, EventAck, HostCmd, InstCmd, InstanceInfo, Loss, Ready, VoteNotify};
use crate::wire::vocab::{EventType, NotificationType};

/// What the dispatcher knows about guestAgent.
#[derive(Debug)]
pub struct AgentLink {
    /// Where to send while we have not heard from the agent.
    pub configured: Option<SocketAddr>,
    /// The agent's address, learned from its last datagram (port = `[agent] rx_port`).
    pub peer: Option<SocketAddr>,
    /// Source addresses allowed to send commands.
    pub allowed: Vec<IpAddr>,
    /// Failure and vote events awaiting acknowledgement.
    pub acks: Retransmit,
    /// With the HMAC key on: the agents' datagrams already accepted.
    pub replay: ReplayGuard,
}

impl AgentLink {
    pub fn new(settings: &Settings) -> Self {
        // Event ids start at the wall clock in microseconds, so that ids of
        // a restarted daemon do not repeat ones the agent has already seen.
        let first_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
            .unwrap_or(1);
        Self {
            configured: settings.agent_addr(),
            peer: None,
            allowed: settings.allowed_ips(),
            acks: Retransmit::new(first_id),
            replay: ReplayGuard::default(),
        }
    }
}

impl Dispatcher {
    /// A datagram from the network.
    pub(super) fn on_datagram(&mut self, dg: Datagram, now: Instant) {
        if dg.bytes.is_empty() {
            return; // the receiver's own wake-up datagram
        }
        let ip = canonical(dg.from.ip());
        if !self.agent.allowed.contains(&ip) {
            self.metrics.udp_rejected_source += 1;
            if self.metrics.udp_rejected_source.is_power_of_two() {
                log::warn!("dropping datagram from {} (not an allowed agent address)", dg.from);
            }
            return;
        }
        let bytes = match &self.settings.hmac_key {
            None => &dg.bytes[..],
            Some(key) => match auth::open(key, &dg.bytes)
                .and_then(|(envelope, stamp)| self.agent.replay.check(stamp, auth::wall_us()).map(|()| envelope))
            {
                Ok(envelope) => envelope,
                Err(e) => {
                    self.metrics.udp_auth_failed += 1;
                    // Any host can send these: log at powers of two only.
                    if self.metrics.udp_auth_failed.is_power_of_two() {
                        log::warn!("dropping datagram from {}: {e} ({} so far)", dg.from, self.metrics.udp_auth_failed);
                    }
                    return;
                }
            },
        };
        let env = match Envelope::decode(bytes) {
            Ok(env) => env,
            Err(e) => {
                self.metrics.udp_malformed += 1;
                if self.metrics.udp_malformed.is_power_of_two() {
                    log::warn!("dropping datagram from {}: {e}", dg.from);
                }
                return;
            }
        };
        self.metrics.udp_commands += 1;
        let first_contact = self.agent.peer.is_none();
        let peer = SocketAddr::new(ip, self.settings.agent_port);
        if let Some(old) = self.agent.peer.filter(|old| *old != peer) {
            // A controller failover: events now go to the new agent.
            log::info!("guestAgent moved from {} to {ip}", old.ip());
        }
        self.agent.peer = Some(peer);
        if first_contact {
            log::info!("guestAgent is at {ip}");
            // READY is no longer retried once the agent has talked to us.
            if let Some(t) = self.global_timers.remove(&TimerKey::Ready) {
                self.wheel.cancel(t);
            }
        }
        self.on_command(env.cmd, &env.payload, now);
    }

    fn on_command(&mut self, code: u32, payload: &[u8], now: Instant) {
        match code {
            cmd::LOOPBACK => {}
            cmd::QRY_INST => {
                let replies: Vec<Vec<u8>> = self
                    .slots
                    .values()
                    .filter_map(|s| to_json(&s.inst.info(&self.settings.hostname, None)).ok())
                    .collect();
                for json in replies {
                    self.send_envelope(cmd::QRY_INST, json);
                }
            }
            cmd::ADD_INST | cmd::MOD_INST => {
                let Some(c) = parse::<InstCmd>(payload, code) else {
                    return;
                };
                let uuid = c.uuid.unwrap_or_else(|| "none".to_string());
                let Some((id, created)) = self.find_or_create(&uuid, now) else {
                    return;
                };
                let enabled = c.state.as_deref() == Some("enabled");
                self.with_instance(id, now, |inst, _, out| {
                    inst.set_reporting(enabled, out);
                    if created {
                        // Provisioned by the agent: connect once its socket exists.
                        inst.start_connect(out);
                    }
                });
            }
            cmd::DEL_INST => {
                let Some(c) = parse::<InstCmd>(payload, code) else {
                    return;
                };
                if let Some(&id) = c.uuid.as_ref().and_then(|u| self.by_uuid.get(u)) {
                    self.remove(id, now);
                }
            }
            cmd::MOD_HOST => {
                let Some(c) = parse::<HostCmd>(payload, code) else {
                    return;
                };
                let enabled = c.heartbeat.as_deref() == Some("enabled");
                if enabled != self.host_reporting {
                    log::info!("host level reporting {}", if enabled { "enabled" } else { "disabled" });
                    self.host_reporting = enabled;
                    self.persist(now);
                }
            }
            cmd::VOTE_INST | cmd::NOTIFY_INST => {
                let Some(c) = parse::<ActionCmd>(payload, code) else {
                    return;
                };
                let ntype =
                    if code == cmd::VOTE_INST { NotificationType::Revocable } else { NotificationType::Irrevocable };
                let event = EventType::parse(c.event.as_deref().unwrap_or(""));
                match c.uuid.as_ref().and_then(|u| self.by_uuid.get(u)) {
                    Some(&id) => {
                        self.metrics.actions += 1;
                        self.with_instance(id, now, |inst, ctx, out| inst.start_action(ntype, event, ctx, out));
                    }
                    None => log::warn!("{} for unknown instance {:?}", ntype, c.uuid),
                }
            }
            cmd::EVENT_ACK => {
                let Some(a) = parse::<EventAck>(payload, code) else {
                    return;
                };
                if self.agent.acks.ack(a.event_id) {
                    self.metrics.events_acked += 1;
                    self.persist(now);
                } else if a.event_id == 0 {
                    log::debug!("guestAgent acknowledges events");
                }
                // The first acknowledgement (often the greeting) starts the
                // retries of whatever was sent before it or restored.
                self.sync_retransmit_timer();
            }
            other => log::error!("unsupported command 0x{other:08x}"),
        }
    }

    /// Sends READY and, until the agent answers, re-arms the 5 s retry.
    pub(super) fn send_ready(&mut self, now: Instant) {
        if self.agent.peer.is_some() {
            return;
        }
        if self.agent.configured.is_none() {
            self.agent.configured = self.settings.agent_addr();
            self.agent.allowed = self.settings.allowed_ips();
        }
        if let Ok(json) = to_json(&Ready { hostname: self.settings.hostname.clone() }) {
            self.send_envelope(cmd::MONITOR_READY, json);
        }
        self.arm_global(TimerKey::Ready, now + READY_RETRY);
    }

    /// Sends an instance event with its payload; LOSS, ILLHEALTH and
    /// VOTE_NOTIFY carry an `event_id` and are retransmitted until
    /// acknowledged once the agent is known to acknowledge (`retransmit.rs`).
    pub(super) fn send_agent_event(&mut self, id: u64, event: AgentEvent, now: Instant) {
        let Some(slot) = self.slots.get(&id) else {
            return;
        };
        let event_id = match event {
            AgentEvent::Running | AgentEvent::Stopped => None,
            _ => Some(self.agent.acks.allocate()),
        };
        let inst = &slot.inst;
        let host = &self.settings.hostname;
        let (code, json) = match &event {
            AgentEvent::Running => (cmd::HEARTBEAT_RUNNING, to_json(&inst.info(host, None))),
            AgentEvent::Stopped => (cmd::HEARTBEAT_STOPPED, to_json(&inst.info(host, None))),
            AgentEvent::IllHealth { action } => {
                (cmd::HEARTBEAT_ILLHEALTH, to_json(&InstanceInfo { event_id, ..inst.info(host, Some(action)) }))
            }
            AgentEvent::Loss => {
                (cmd::HEARTBEAT_LOSS, to_json(&Loss { hostname: host.clone(), uuid: inst.uuid.clone(), event_id }))
            }
            AgentEvent::VoteNotify { notification_type, event_type, vote, reason } => (
                cmd::VOTE_NOTIFY,
                to_json(&VoteNotify {
                    hostname: host.clone(),
                    uuid: inst.uuid.clone(),
                    notification_type: notification_type.clone(),
                    event_type: event_type.clone(),
                    vote: vote.clone(),
                    reason: reason.clone(),
                    event_id,
                }),
            ),
        };
        log::info!("{} -> agent: {event:?}", inst.tag());
        match json {
            Ok(json) => {
                self.send_envelope(code, json.clone());
                if let Some(eid) = event_id {
                    if let Some(old) = self.agent.acks.track(eid, code, json, now) {
                        // With a C++ agent nothing is ever acknowledged: quietly bounded.
                        if self.agent.acks.agent_acks {
                            self.metrics.events_unacked += 1;
                            log::warn!("retransmit queue full: event {old} dropped unacknowledged");
                        }
                    }
                    self.sync_retransmit_timer();
                    // On disk shortly (coalesced), so a kill -9 keeps it.
                    self.persist(now);
                }
            }
            Err(e) => log::error!("cannot encode {event:?}: {e}"),
        }
    }

    /// Resends every event whose retry is due.
    pub(super) fn retransmit_due(&mut self, now: Instant) {
        let due = self.agent.acks.due(now);
        for (eid, code, json) in due.resend {
            log::debug!("retransmitting event {eid} (0x{code:08x})");
            self.metrics.events_retransmitted += 1;
            self.send_envelope(code, json);
        }
        if !due.given_up.is_empty() {
            self.persist(now);
        }
        for eid in due.given_up {
            self.metrics.events_unacked += 1;
            log::warn!("event {eid} never acknowledged by guestAgent; giving up");
        }
        self.sync_retransmit_timer();
    }

    /// Keeps the retransmit timer at the earliest pending retry.
    fn sync_retransmit_timer(&mut self) {
        match self.agent.acks.next_deadline() {
            Some(at) => self.arm_global(TimerKey::Retransmit, at),
            None => {
                if let Some(t) = self.global_timers.remove(&TimerKey::Retransmit) {
                    self.wheel.cancel(t);
                }
            }
        }
    }

    /// Sends one full envelope to the agent (learned address, else configured).
    pub(super) fn send_envelope(&mut self, code: u32, mut json: Vec<u8>) {
        let Some(dest) = self.agent.peer.or(self.agent.configured) else {
            self.metrics.udp_unsent += 1;
            log::warn!("no address for guestAgent yet; event 0x{code:08x} not sent");
            return;
        };
        if json.len() >= ENVELOPE_LEN - crate::wire::envelope::BUF_OFFSET {
            // Only a guest-controlled string (a vote reason) can be this long: cut it.
            json = truncate_reason(json);
        }
        let encoded = Envelope::new(code, json).encode_full().map_err(|e| e.to_string());
        let sealed = match &self.settings.hmac_key {
            None => encoded,
            Some(key) => encoded.and_then(|b| auth::seal(key, &b, auth::wall_us()).map_err(|e| e.to_string())),
        };
        match sealed {
            Ok(bytes) => match self.io.udp_tx.send_to(&bytes, dest) {
                Ok(_) => self.metrics.udp_sent += 1,
                Err(e) => {
                    self.metrics.udp_unsent += 1;
                    log::warn!("send to guestAgent {dest} failed: {e}");
                }
            },
            Err(e) => log::error!("cannot encode envelope: {e}"),
        }
    }
}

/// Re-encodes an over-long VOTE_NOTIFY with its reason shortened so it fits.
fn truncate_reason(json: Vec<u8>) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<VoteNotify>(&json) else {
        return json;
    };
    while to_json(&v).map(|j| j.len()).unwrap_or(usize::MAX) > crate::wire::envelope::MAX_PAYLOAD {
        let keep = v.reason.chars().count().saturating_sub(16);
        v.reason = v.reason.chars().take(keep).collect();
        if v.reason.is_empty() {
            break;
        }
    }
    to_json(&v).unwrap_or(json)
}

fn parse<T: serde::de::DeserializeOwned>(payload: &[u8], code: u32) -> Option<T> {
    match serde_json::from_slice(payload) {
        Ok(v) => Some(v),
        Err(e) => {
            log::error!("command 0x{code:08x}: bad payload ({e})");
            None
        }
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_cut_to_fit_the_envelope() {
        let v = VoteNotify {
            hostname: "h".into(),
            uuid: "u".into(),
            notification_type: "revocable".into(),
            event_type: "stop".into(),
            vote: "reject".into(),
            reason: "\"".repeat(2000),
            event_id: Some(1),
        };
        let out = truncate_reason(to_json(&v).unwrap());
        assert!(out.len() <= crate::wire::envelope::MAX_PAYLOAD);
        let back: VoteNotify = serde_json::from_slice(&out).unwrap();
        assert!(!back.reason.is_empty() && back.vote == "reject");
    }

    #[test]
    fn mapped_addresses_are_canonical() {
        assert_eq!(canonical("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(canonical("::1".parse().unwrap()), "::1".parse::<IpAddr>().unwrap());
    }
}
