//! The guestServer link (agent spec §7): decoding the datagrams guestServers
//! send (on the UDP receiver threads, through `decoder`), encoding the
//! commands the agent sends (§7.3, exact payloads, `100 + strlen` bytes), and
//! the dispatcher's handling of every event (§7.4). With a shared key
//! (`[agent] hmac_key_file`), received datagrams are opened on the receiver
//! threads and commands sealed on the dispatcher (`wire::auth`).

use std::net::SocketAddr;
use std::time::Instant;

use gh_threads::udp::Datagram;
use thiserror::Error;

use crate::wire::auth::{self, AuthError, HmacKey, Stamp};
use crate::wire::envelope::{cmd, Envelope, EnvelopeError, SIG_GUEST};
use crate::wire::payload::{
    enabled_str, to_json, ActionCmdOut, EventAck, HostCmdOut, InstCmdOut, InstanceInfo, Loss, Ready, Source, VoteNotify,
};

use super::dispatcher::Event;
use super::events::VimEvent;
use super::inventory::{Dest, Instance, ServerCmd};
use super::state::State;

/// A decoded guestServer datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMsg {
    Ready(Ready),
    Running(InstanceInfo),
    Stopped(InstanceInfo),
    IllHealth(InstanceInfo),
    Loss(Loss),
    QueryReply(InstanceInfo),
    VoteNotify(VoteNotify),
    Unsupported(u32),
}

/// Why a datagram was not understood.
#[derive(Debug, Error)]
pub enum LinkError {
    #[error("bad envelope")]
    Envelope(#[from] EnvelopeError),
    #[error("bad payload for command {cmd:#010x}")]
    Json {
        cmd: u32,
        #[source]
        source: serde_json::Error,
    },
    #[error("unexpected signature {0:?}")]
    Signature(String),
    #[error("not authenticated")]
    Auth(#[from] AuthError),
}

fn json<T: serde::de::DeserializeOwned>(env: &Envelope) -> Result<T, LinkError> {
    serde_json::from_slice(&env.payload).map_err(|source| LinkError::Json { cmd: env.cmd, source })
}

/// Decodes a guestServer datagram (no signature check, as the original).
pub fn decode(bytes: &[u8]) -> Result<ServerMsg, LinkError> {
    let env = Envelope::decode(bytes)?;
    Ok(match env.cmd {
        cmd::MONITOR_READY => ServerMsg::Ready(json(&env)?),
        cmd::HEARTBEAT_RUNNING => ServerMsg::Running(json(&env)?),
        cmd::HEARTBEAT_STOPPED => ServerMsg::Stopped(json(&env)?),
        cmd::HEARTBEAT_ILLHEALTH => ServerMsg::IllHealth(json(&env)?),
        cmd::HEARTBEAT_LOSS => ServerMsg::Loss(json(&env)?),
        cmd::QRY_INST => ServerMsg::QueryReply(json(&env)?),
        cmd::VOTE_NOTIFY => ServerMsg::VoteNotify(json(&env)?),
        other => ServerMsg::Unsupported(other),
    })
}

/// Decodes a datagram, first checking its tag when a key is configured; the
/// stamp (key on) is for the dispatcher's replay check.
pub fn decode_keyed(key: Option<&HmacKey>, bytes: &[u8]) -> Result<(ServerMsg, Option<Stamp>), LinkError> {
    match key {
        None => Ok((decode(bytes)?, None)),
        Some(k) => {
            let (envelope, stamp) = auth::open(k, bytes)?;
            Ok((decode(envelope)?, Some(stamp)))
        }
    }
}

/// The UDP receiver's map function for guestServer sockets; with a key, the
/// thread owns a copy and opens every datagram with it.
pub fn decoder(key: Option<HmacKey>) -> impl Fn(Datagram) -> Event + Send + 'static {
    move |d: Datagram| match decode_keyed(key.as_ref(), &d.bytes) {
        Ok((msg, stamp)) => Event::Server { from: d.from, msg: Ok(msg), stamp },
        Err(e) => Event::Server { from: d.from, msg: Err(e), stamp: None },
    }
}

/// Encodes a command; with a key, as the sealed 1108-byte form.
pub fn encode_keyed(c: &ServerCmd, source: &str, key: Option<&HmacKey>) -> Result<Vec<u8>, LinkError> {
    let bytes = encode(c, source)?;
    match key {
        None => Ok(bytes),
        Some(k) => Ok(auth::seal(k, &bytes, auth::wall_us())?),
    }
}

/// Encodes a command with its exact payload.
pub fn encode(c: &ServerCmd, source: &str) -> Result<Vec<u8>, LinkError> {
    let inst = |uuid: &str, state: &str| InstCmdOut {
        source: source.to_string(),
        uuid: uuid.to_string(),
        service: "heartbeat".into(),
        state: state.to_string(),
    };
    let action = |uuid: &str, event: &str| ActionCmdOut {
        source: source.to_string(),
        uuid: uuid.to_string(),
        event: event.to_string(),
    };
    let (code, payload) = match c {
        ServerCmd::AddInst { uuid, enabled } => (cmd::ADD_INST, to_json(&inst(uuid, enabled_str(*enabled)))),
        ServerCmd::ModInst { uuid, enabled } => (cmd::MOD_INST, to_json(&inst(uuid, enabled_str(*enabled)))),
        ServerCmd::DelInst { uuid } => (cmd::DEL_INST, to_json(&inst(uuid, "disabled"))),
        ServerCmd::ModHost { host_uuid, enabled } => (
            cmd::MOD_HOST,
            to_json(&HostCmdOut {
                source: source.to_string(),
                uuid: host_uuid.clone(),
                heartbeat: enabled_str(*enabled).into(),
            }),
        ),
        ServerCmd::Query => (cmd::QRY_INST, to_json(&Source { source: source.to_string() })),
        ServerCmd::Vote { uuid, event } => (cmd::VOTE_INST, to_json(&action(uuid, event))),
        ServerCmd::Notify { uuid, event } => (cmd::NOTIFY_INST, to_json(&action(uuid, event))),
        ServerCmd::Ack { event_id } => {
            (cmd::EVENT_ACK, to_json(&EventAck { source: source.to_string(), event_id: *event_id }))
        }
    };
    let payload = payload.map_err(|source| LinkError::Json { cmd: code, source })?;
    Ok(Envelope::signed(SIG_GUEST, code, payload).encode_short()?)
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Copies a guestServer instance-info payload into a record (§7.4).
fn absorb(inst: &mut Instance, info: &InstanceInfo) {
    inst.reporting = info.reporting == "enabled";
    inst.heartbeating = info.heartbeating == "enabled";
    inst.corrective_action = info.repair_action.clone();
    inst.restart_to = info.restart_to.clone();
    inst.shutdown_to = info.shutdown_to.clone();
    inst.suspend_to = info.suspend_to.clone();
    inst.resume_to = info.resume_to.clone();
    inst.vote_to = info.vote_to.clone();
}

impl State {
    /// Handles one guestServer datagram.
    /// The replay check of an authenticated datagram (no stamp: key off).
    pub fn check_stamp(&mut self, stamp: Option<Stamp>) -> Result<(), LinkError> {
        match stamp {
            Some(st) => Ok(self.replay.check(st, auth::wall_us())?),
            None => Ok(()),
        }
    }

    /// A datagram that cannot be used: counted and logged (rate-limited).
    pub fn drop_datagram(&mut self, from: SocketAddr, e: &LinkError, now: Instant) {
        match e {
            LinkError::Auth(e) => {
                self.counters.auth_failed += 1;
                self.warn_limited(now, format!("dropping datagram from {from}: {e}"));
            }
            e => {
                self.counters.bad_datagrams += 1;
                self.warn_limited(now, format!("bad datagram from {from}: {e}"));
            }
        }
    }

    pub fn on_server(&mut self, from: SocketAddr, msg: ServerMsg, now: Instant) {
        self.counters.datagrams_in += 1;
        if !self.source_allowed(from, &msg) {
            self.counters.rejected_source += 1;
            self.warn_limited(now, format!("dropping datagram from {from}: not a known guestServer address"));
            return;
        }
        match msg {
            ServerMsg::Ready(r) => {
                self.on_ready(from, &r.hostname, now);
                // Tells one of our guestServers that we acknowledge events.
                self.ack_event(from, &r.hostname, 0);
            }
            ServerMsg::Running(info) => self.on_status(info, Some(true), now),
            ServerMsg::Stopped(info) => self.on_status(info, Some(false), now),
            // Acknowledged only after handling, once the outbox file (the
            // queued VIM event and the seen id) is on disk: an acknowledged
            // event survives a kill -9 (`take_event`).
            ServerMsg::IllHealth(info) => {
                let (host, id) = (info.hostname.clone(), info.event_id);
                self.take_event(from, &host, id, now, |s| s.on_status(info, None, now));
            }
            ServerMsg::Loss(l) => {
                let (host, id) = (l.hostname.clone(), l.event_id);
                self.take_event(from, &host, id, now, |s| s.on_loss(&l, now));
            }
            ServerMsg::QueryReply(info) => self.on_query_reply(from, info, now),
            ServerMsg::VoteNotify(v) => {
                let (host, id) = (v.hostname.clone(), v.event_id);
                self.take_event(from, &host, id, now, |s| s.on_vote_notify(v, now));
            }
            ServerMsg::Unsupported(c) => {
                self.warn_limited(now, format!("unsupported guestServer command {c:#010x} from {from}"))
            }
        }
    }

    /// Datagrams come from known hosts' addresses or loopback; READY also
    /// from anywhere when hosts self-register (issue 6).
    fn source_allowed(&self, from: SocketAddr, msg: &ServerMsg) -> bool {
        let ip = canonical(from.ip());
        if self.cfg.accept_any_source || ip.is_loopback() {
            return true;
        }
        if self.cfg.self_register && matches!(msg, ServerMsg::Ready(_)) {
            return true;
        }
        self.inv.hosts().any(|h| h.dest.ip.parse::<std::net::IpAddr>().ok().map(canonical) == Some(ip))
    }

    /// A failure or vote event. One from a C++ guestServer (no id) is just
    /// handled. One with an id is handled on its first copy only (`dedup.rs`)
    /// and acknowledged once the outbox file holds it and its id; if that
    /// write failed the ack is withheld, and guestServer's retransmission
    /// gets it once a write succeeds. Bounded: while the outbox is full of
    /// events it may not drop (failures and votes), a new event is neither
    /// taken nor acknowledged; guestServer keeps it and retries.
    fn take_event(
        &mut self,
        from: SocketAddr,
        hostname: &str,
        event_id: Option<u64>,
        now: Instant,
        handle: impl FnOnce(&mut Self),
    ) {
        let Some(id) = event_id else {
            handle(self);
            return;
        };
        if self.seen_events.contains(hostname, id) {
            self.counters.events_duplicate += 1;
            log::debug!("duplicate event {id} from {hostname}: acknowledged again, not forwarded");
        } else if !self.outbox.has_room_for_undroppable() {
            self.counters.events_refused += 1;
            self.warn_limited(
                now,
                format!("VIM outbox full: event {id} from {hostname} not taken (it will be resent)"),
            );
            return;
        } else {
            self.seen_events.first_time(hostname, id);
            self.outbox_dirty = true;
            handle(self);
        }
        self.persist();
        if self.outbox_dirty {
            self.counters.acks_withheld += 1;
            self.warn_limited(now, format!("event {id} from {hostname} not acknowledged: outbox file not written"));
        } else {
            self.ack_event(from, hostname, id);
        }
    }

    /// Sends EVENT_ACK to the guestServer at `from`'s address.
    fn ack_event(&mut self, from: SocketAddr, hostname: &str, event_id: u64) {
        self.counters.events_acked += u64::from(event_id != 0);
        // The host's command address when we know it; else where it wrote from.
        let dest = self
            .inv
            .host(hostname)
            .map(|h| h.dest.clone())
            .unwrap_or(Dest { ip: from.ip().to_string(), port: self.cfg.client_port });
        self.send(super::inventory::Outgoing {
            hostname: hostname.to_string(),
            dest,
            cmd: ServerCmd::Ack { event_id },
        });
    }

    fn on_ready(&mut self, from: SocketAddr, hostname: &str, now: Instant) {
        if self.inv.host(hostname).is_none() && self.cfg.self_register {
            // The host's command address when we know it; else where it wrote from.
            let dest = self
                .inv
                .host(hostname)
                .map(|h| h.dest.clone())
                .unwrap_or(Dest { ip: from.ip().to_string(), port: self.cfg.client_port });
            match self.inv.add_host(hostname, "", dest) {
                Ok(()) => {
                    log::info!("{hostname} self-registered from {from}");
                    self.state_dirty = true;
                    self.host_added(now);
                }
                Err(e) => log::warn!("cannot self-register {hostname}: {e}"),
            }
        }
        match self.inv.set_inst_state(hostname) {
            Ok(out) => {
                log::info!("{hostname} guestServer ready; replaying {} instance(s)", out.len());
                self.send_all(out);
            }
            Err(e) => self.warn_limited(now, format!("READY from {from}: {e}")),
        }
    }

    /// RUNNING (`Some(true)`), STOPPED (`Some(false)`) or ILLHEALTH (`None`).
    fn on_status(&mut self, info: InstanceInfo, running: Option<bool>, now: Instant) {
        let Some(inst) = self.inv.instance_mut(&info.uuid) else {
            self.warn_limited(now, format!("status for unknown instance {}", info.uuid));
            return;
        };
        if inst.hostname != info.hostname {
            log::info!("{} reported by {} but recorded on {}", info.uuid, info.hostname, inst.hostname);
        }
        let before = inst.clone();
        absorb(inst, &info);
        if let Some(on) = running {
            inst.heartbeating = on;
        }
        // Only real changes are written: status events repeat the same values.
        let changed = *inst != before;
        let event = match running {
            Some(on) => {
                log::info!("{} heartbeating {}", inst.uuid, enabled_str(on));
                VimEvent::service(inst)
            }
            None => {
                log::warn!("{} unhealthy, repair action {}", inst.uuid, inst.corrective_action);
                VimEvent::alarm(inst, "unhealthy")
            }
        };
        self.state_dirty |= changed;
        self.push_event(event, now);
    }

    fn on_loss(&mut self, loss: &Loss, now: Instant) {
        let host_on = self.inv.host(&loss.hostname).map(|h| h.reporting);
        if host_on != Some(true) {
            log::warn!("heartbeat loss of {} on {}: host reporting disabled", loss.uuid, loss.hostname);
            return;
        }
        let Some(inst) = self.inv.instance(&loss.uuid) else {
            self.warn_limited(now, format!("heartbeat loss of unknown instance {}", loss.uuid));
            return;
        };
        if !inst.reporting {
            log::warn!("heartbeat loss of {}: instance reporting disabled", loss.uuid);
            return;
        }
        log::error!("heartbeat loss of {} on {}; action {}", inst.uuid, loss.hostname, inst.corrective_action);
        let event = VimEvent::alarm(inst, "failed");
        self.push_event(event, now);
    }

    fn on_query_reply(&mut self, from: SocketAddr, info: InstanceInfo, now: Instant) {
        let h = info.hostname.clone();
        if let Some(host) = self.inv.host_mut(&h) {
            host.query_flag = false;
        }
        let del = ServerCmd::DelInst { uuid: info.uuid.clone() };
        let recorded = self.inv.instance(&info.uuid).map(|i| i.hostname.clone());
        if recorded.as_deref() != Some(h.as_str()) {
            match &recorded {
                None => log::info!("{h} reports unknown instance {}; deleting it there", info.uuid),
                Some(o) => log::info!("{} no longer paired with {h} (now on {o}); deleting it there", info.uuid),
            }
            let out = self.inv.command(&h, del.clone()).unwrap_or(super::inventory::Outgoing {
                hostname: h.clone(),
                dest: Dest { ip: from.ip().to_string(), port: self.cfg.client_port },
                cmd: del,
            });
            self.send(out);
            return;
        }
        let Some(inst) = self.inv.instance_mut(&info.uuid) else {
            return;
        };
        let before = inst.clone();
        let (r0, b0) = (inst.reporting, inst.heartbeating);
        absorb(inst, &info);
        let mut event = None;
        if inst.reporting != r0 {
            inst.reporting = r0;
        }
        if inst.heartbeating != b0 {
            event = Some(VimEvent::service(inst));
        }
        let reported = info.reporting == "enabled";
        // Query replies arrive every 10 s per instance; write only on change.
        self.state_dirty |= *inst != before;
        if reported != r0 {
            let cmd = ServerCmd::ModInst { uuid: info.uuid.clone(), enabled: r0 };
            if let Some(out) = self.inv.command(&h, cmd) {
                self.send(out);
            }
        }
        if let Some(e) = event {
            self.push_event(e, now);
        }
    }

    fn on_vote_notify(&mut self, v: VoteNotify, now: Instant) {
        if self.inv.instance(&v.uuid).is_none() {
            self.warn_limited(now, format!("vote result for unknown instance {}", v.uuid));
            return;
        }
        let response = match (v.vote.as_str(), v.notification_type.as_str()) {
            ("accept" | "complete", "revocable") => "allow",
            ("accept" | "complete", "irrevocable") => "proceed",
            ("accept" | "complete", other) => {
                log::warn!("vote {} for {} with notification type {other:?}: not sent", v.vote, v.uuid);
                return;
            }
            ("reject", _) => "reject",
            _ => "",
        };
        log::info!("{} {} {}: {} ({})", v.uuid, v.notification_type, v.event_type, v.vote, v.reason);
        self.push_event(VimEvent::action(&v.uuid, &v.event_type, response, &v.reason), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_byte_exact() {
        let b = encode(&ServerCmd::Query, "127.0.0.1").unwrap();
        assert_eq!(b.len(), 100 + r#"{"source":"127.0.0.1"}"#.len());
        assert_eq!(&b[..18], b"guest msg header:\0");
        assert_eq!(&b[72..76], &cmd::QRY_INST.to_le_bytes());
        let b = encode(&ServerCmd::DelInst { uuid: "u".into() }, "s").unwrap();
        assert_eq!(&b[100..], br#"{"source":"s","uuid":"u","service":"heartbeat","state":"disabled"}"#);
    }

    #[test]
    fn keyed_commands_and_datagrams_round_trip_and_unkeyed_ones_are_refused() {
        let key = HmacKey::new(b"k".to_vec()).unwrap();
        let plain = encode(&ServerCmd::Query, "s").unwrap();
        assert_eq!(encode_keyed(&ServerCmd::Query, "s", None).unwrap(), plain);
        let sealed = encode_keyed(&ServerCmd::Query, "s", Some(&key)).unwrap();
        assert_eq!((sealed.len(), &sealed[..plain.len()]), (1108, &plain[..]));
        let loss = Envelope::new(cmd::HEARTBEAT_LOSS, br#"{"hostname":"h","uuid":"u"}"#.to_vec());
        let full = loss.encode_full().unwrap();
        let want = ServerMsg::Loss(Loss { hostname: "h".into(), uuid: "u".into(), event_id: None });
        assert_eq!(decode_keyed(None, &full).unwrap(), (want.clone(), None));
        let (msg, stamp) = decode_keyed(Some(&key), &auth::seal(&key, &full, 5).unwrap()).unwrap();
        assert_eq!((msg, stamp.map(|s| s.sender)), (want, Some(key.sender())));
        let err = decode_keyed(Some(&key), &full).unwrap_err();
        assert!(matches!(err, LinkError::Auth(AuthError::Length(1060))), "{err:?}");
        let other = HmacKey::new(b"other".to_vec()).unwrap();
        let err = decode_keyed(Some(&key), &auth::seal(&other, &full, 5).unwrap()).unwrap_err();
        assert!(matches!(err, LinkError::Auth(AuthError::BadTag)), "{err:?}");
    }

    #[test]
    fn decodes_full_guest_server_datagrams() {
        let env = Envelope::new(cmd::HEARTBEAT_LOSS, br#"{"hostname":"h","uuid":"u"}"#.to_vec());
        let msg = decode(&env.encode_full().unwrap()).unwrap();
        assert_eq!(msg, ServerMsg::Loss(Loss { hostname: "h".into(), uuid: "u".into(), event_id: None }));
        let bad = Envelope::new(cmd::VOTE_NOTIFY, br#"{"reason":"a"b"}"#.to_vec());
        assert!(decode(&bad.encode_full().unwrap()).is_err());
        let other = Envelope::new(0x1234, vec![]);
        assert_eq!(decode(&other.encode_full().unwrap()).unwrap(), ServerMsg::Unsupported(0x1234));
    }
}
