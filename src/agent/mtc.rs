//! The mtcAgent interface (agent spec §8, server spec §8): decoding the host
//! inventory commands (on the "udp-mtc" receiver thread, via
//! `decode_datagram`), the READY datagram, and the dispatcher's handling of
//! ADD_HOST / MOD_HOST / DEL_HOST.

use std::time::Instant;

use gh_threads::udp::Datagram;

use crate::wire::envelope::{cmd, Envelope, HDR_LEN, READY_TAG, READY_TAG_OFFSET, SIG_GUEST, SIG_MTC_CMD};
use crate::wire::payload::HostInventory;

use super::dispatcher::Event;
use super::inventory::{Dest, InvError};
use super::link::LinkError;
use super::state::State;

/// A decoded mtcAgent command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MtcMsg {
    AddHost(HostInventory),
    ModHost(HostInventory),
    DelHost(HostInventory),
    Unsupported(u32),
}

/// Decodes an mtcAgent datagram; the signature must be `cgts mtc cmd req:`.
pub fn decode(bytes: &[u8]) -> Result<MtcMsg, LinkError> {
    let env = Envelope::decode(bytes)?;
    if env.signature() != SIG_MTC_CMD {
        return Err(LinkError::Signature(String::from_utf8_lossy(env.signature()).into_owned()));
    }
    let inv = |env: &Envelope| {
        serde_json::from_slice::<HostInventory>(&env.payload).map_err(|source| LinkError::Json { cmd: env.cmd, source })
    };
    Ok(match env.cmd {
        cmd::ADD_HOST => MtcMsg::AddHost(inv(&env)?),
        cmd::MOD_HOST => MtcMsg::ModHost(inv(&env)?),
        cmd::DEL_HOST => MtcMsg::DelHost(inv(&env)?),
        other => MtcMsg::Unsupported(other),
    })
}

/// The UDP receiver's map function for the mtcAgent socket.
pub fn decode_datagram(d: Datagram) -> Event {
    Event::Mtc { from: d.from, msg: decode(&d.bytes) }
}

/// READY: `guest msg header:` + `guestAgent` at byte 18, cmd 0xF0F0F0F0, no
/// payload: 100 bytes.
pub fn ready_datagram() -> Vec<u8> {
    let mut env = Envelope::signed(SIG_GUEST, cmd::MONITOR_READY, Vec::new());
    let end = (READY_TAG_OFFSET + READY_TAG.len()).min(HDR_LEN);
    env.hdr[READY_TAG_OFFSET..end].copy_from_slice(&READY_TAG[..end - READY_TAG_OFFSET]);
    // encode_short only fails for payloads over 959 bytes; this one is empty.
    env.encode_short().unwrap_or_default()
}

impl State {
    /// Handles one mtcAgent command.
    pub fn on_mtc(&mut self, msg: MtcMsg, now: Instant) {
        match msg {
            MtcMsg::AddHost(h) => {
                self.mtc_inventory_seen = true;
                let Some(ip) = h.ip.clone() else {
                    self.warn_limited(now, format!("ADD_HOST {} without ip", h.hostname));
                    return;
                };
                let dest = Dest { ip, port: self.cfg.client_port };
                match self.inv.add_host(&h.hostname, &h.uuid, dest) {
                    Ok(()) => {
                        log::info!("host {} ({}) added by mtcAgent", h.hostname, h.uuid);
                        self.state_dirty = true;
                        self.host_added(now);
                    }
                    Err(InvError::HostExists(_)) => {
                        log::debug!("host {} already known", h.hostname)
                    }
                    Err(e) => log::warn!("ADD_HOST {}: {e}", h.hostname),
                }
            }
            MtcMsg::ModHost(h) => {
                let Some(ip) = h.ip.clone() else {
                    self.warn_limited(now, format!("MOD_HOST {} without ip", h.hostname));
                    return;
                };
                let port = self.inv.host(&h.hostname).map_or(self.cfg.client_port, |x| x.dest.port);
                match self.inv.mod_host(&h.hostname, &h.uuid, Dest { ip, port }) {
                    Ok(()) => {
                        log::info!("host {} modified by mtcAgent", h.hostname);
                        self.state_dirty = true;
                    }
                    Err(e) => log::warn!("MOD_HOST {}: {e}", h.hostname),
                }
            }
            MtcMsg::DelHost(h) => match self.inv.del_host(&h.uuid).or_else(|_| self.inv.del_host(&h.hostname)) {
                Ok(out) => {
                    log::info!("host {} deleted by mtcAgent", h.hostname);
                    self.state_dirty = true;
                    self.send_all(out);
                }
                Err(e) => log::warn!("DEL_HOST {}: {e}", h.hostname),
            },
            MtcMsg::Unsupported(c) => self.warn_limited(now, format!("unsupported mtcAgent command {c:#010x}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_is_100_bytes_with_tag() {
        let b = ready_datagram();
        assert_eq!(b.len(), 100);
        assert_eq!(&b[..18], b"guest msg header:\0");
        assert_eq!(&b[18..28], b"guestAgent");
        assert_eq!(&b[72..76], &0xF0F0_F0F0u32.to_le_bytes());
    }

    #[test]
    fn commands_need_the_mtc_signature() {
        let payload = br#"{"hostname":"compute-0","uuid":"u","ip":"10.0.0.5","personality":"worker"}"#.to_vec();
        let env = Envelope::signed(SIG_MTC_CMD, cmd::ADD_HOST, payload.clone());
        match decode(&env.encode_short().unwrap()).unwrap() {
            MtcMsg::AddHost(h) => assert_eq!(h.ip.as_deref(), Some("10.0.0.5")),
            other => panic!("{other:?}"),
        }
        let unsigned = Envelope::new(cmd::ADD_HOST, payload);
        assert!(matches!(decode(&unsigned.encode_full().unwrap()), Err(LinkError::Signature(_))));
    }
}
