//! The 1060-byte maintenance message that carries every UDP datagram between
//! guestAgent, guestServer and mtcAgent (spec server §8.1, agent §7.1).
//!
//! Layout (packed, little-endian): `hdr[64]` at 0, `ver` u16 at 64, `rev` u16
//! at 66, `res` u32 at 68, `cmd` u32 at 72, `num` u32 at 76, `parm[5]` u32 at
//! 80, `buf[960]` at 100 (NUL-terminated JSON). Pure code: decoded on the UDP
//! receiver threads, encoded on the dispatchers.

use thiserror::Error;

/// Total size of a full envelope.
pub const ENVELOPE_LEN: usize = 1060;
/// Size of the signature header.
pub const HDR_LEN: usize = 64;
/// Offset of `cmd`.
pub const CMD_OFFSET: usize = 72;
/// Offset of the JSON buffer.
pub const BUF_OFFSET: usize = 100;
/// Size of the JSON buffer, including its terminating NUL.
pub const BUF_LEN: usize = ENVELOPE_LEN - BUF_OFFSET;
/// Longest JSON payload that fits with its NUL.
pub const MAX_PAYLOAD: usize = BUF_LEN - 1;

/// Signature guestAgent writes on messages to guestServer and mtcAgent.
pub const SIG_GUEST: &[u8] = b"guest msg header:";
/// Signature mtcAgent writes on commands to guestAgent.
pub const SIG_MTC_CMD: &[u8] = b"cgts mtc cmd req:";
/// Tag guestAgent writes at byte 18 of its READY to mtcAgent.
pub const READY_TAG: &[u8] = b"guestAgent";
/// Offset of that tag.
pub const READY_TAG_OFFSET: usize = 18;

/// Command and event codes.
pub mod cmd {
    pub const ADD_HOST: u32 = 0x1111_0010;
    pub const DEL_HOST: u32 = 0x1111_0011;
    pub const MOD_HOST: u32 = 0x1111_0012;
    pub const ADD_INST: u32 = 0x1111_0020;
    pub const DEL_INST: u32 = 0x1111_0021;
    pub const MOD_INST: u32 = 0x1111_0022;
    pub const QRY_INST: u32 = 0x1111_0023;
    pub const VOTE_INST: u32 = 0x1111_0024;
    pub const NOTIFY_INST: u32 = 0x1111_0025;
    pub const LOOPBACK: u32 = 0x0101_0101;
    pub const MONITOR_READY: u32 = 0xF0F0_F0F0;
    pub const HEARTBEAT_LOSS: u32 = 0x0000_FEAD;
    pub const HEARTBEAT_ILLHEALTH: u32 = 0x0001_FEAD;
    pub const HEARTBEAT_STOPPED: u32 = 0x0100_FEAD;
    pub const HEARTBEAT_RUNNING: u32 = 0x0110_FEAD;
    pub const VOTE_NOTIFY: u32 = 0xFEED_FEED;
    /// Ours, not the originals' (issue 6): guestAgent acknowledges a LOSS,
    /// ILLHEALTH or VOTE_NOTIFY that carried an `event_id`. The C++ peers
    /// never see it: our agent sends it only to servers that sent an id (and
    /// id 0 in reply to READY, which a C++ guestServer logs and ignores).
    pub const EVENT_ACK: u32 = 0x1111_00A0;
}

/// A decoded or to-be-encoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The 64-byte signature header.
    pub hdr: [u8; HDR_LEN],
    pub cmd: u32,
    /// The JSON text, without the NUL terminator.
    pub payload: Vec<u8>,
}

/// Why a datagram is not an envelope.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("datagram of {0} bytes is shorter than the 100-byte envelope header")]
    Truncated(usize),
    #[error("datagram of {0} bytes is longer than the 1060-byte envelope")]
    Oversized(usize),
    #[error("payload of {0} bytes does not fit the 960-byte buffer")]
    PayloadTooLong(usize),
}

impl Envelope {
    /// An envelope with an all-zero header (what guestServer sends).
    pub fn new(cmd: u32, payload: Vec<u8>) -> Self {
        Self { hdr: [0; HDR_LEN], cmd, payload }
    }

    /// An envelope whose header starts with `signature` (NUL-terminated).
    pub fn signed(signature: &[u8], cmd: u32, payload: Vec<u8>) -> Self {
        let mut env = Self::new(cmd, payload);
        let n = signature.len().min(HDR_LEN - 1);
        env.hdr[..n].copy_from_slice(&signature[..n]);
        env
    }

    /// The header's signature: the bytes before the first NUL.
    pub fn signature(&self) -> &[u8] {
        let end = self.hdr.iter().position(|b| *b == 0).unwrap_or(HDR_LEN);
        &self.hdr[..end]
    }

    /// The full 1060-byte form guestServer sends.
    pub fn encode_full(&self) -> Result<Vec<u8>, EnvelopeError> {
        let mut out = self.encode_short()?;
        out.resize(ENVELOPE_LEN, 0);
        Ok(out)
    }

    /// The `100 + strlen(payload)` form guestAgent sends.
    pub fn encode_short(&self) -> Result<Vec<u8>, EnvelopeError> {
        if self.payload.len() > MAX_PAYLOAD {
            return Err(EnvelopeError::PayloadTooLong(self.payload.len()));
        }
        let mut out = vec![0u8; BUF_OFFSET];
        out[..HDR_LEN].copy_from_slice(&self.hdr);
        out[CMD_OFFSET..CMD_OFFSET + 4].copy_from_slice(&self.cmd.to_le_bytes());
        out.extend_from_slice(&self.payload);
        Ok(out)
    }

    /// Decodes a datagram of 100 to 1060 bytes; the payload ends at the first
    /// NUL or at the end of the datagram.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() < BUF_OFFSET {
            return Err(EnvelopeError::Truncated(bytes.len()));
        }
        if bytes.len() > ENVELOPE_LEN {
            return Err(EnvelopeError::Oversized(bytes.len()));
        }
        let mut hdr = [0u8; HDR_LEN];
        hdr.copy_from_slice(&bytes[..HDR_LEN]);
        let mut cmd = [0u8; 4];
        cmd.copy_from_slice(&bytes[CMD_OFFSET..CMD_OFFSET + 4]);
        let buf = &bytes[BUF_OFFSET..];
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        Ok(Self { hdr, cmd: u32::from_le_bytes(cmd), payload: buf[..end].to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_form_is_1060_bytes_with_cmd_at_72_and_json_at_100() {
        let env = Envelope::new(cmd::HEARTBEAT_LOSS, br#"{"hostname":"h","uuid":"u"}"#.to_vec());
        let bytes = env.encode_full().unwrap();
        assert_eq!(bytes.len(), 1060);
        assert!(bytes[..72].iter().all(|b| *b == 0));
        assert_eq!(&bytes[72..76], &[0xAD, 0xFE, 0x00, 0x00]);
        assert_eq!(&bytes[100..127], br#"{"hostname":"h","uuid":"u"}"#);
        assert!(bytes[127..].iter().all(|b| *b == 0));
        assert_eq!(Envelope::decode(&bytes).unwrap(), env);
    }

    #[test]
    fn short_form_is_header_plus_strlen() {
        let env = Envelope::signed(SIG_GUEST, cmd::QRY_INST, br#"{"source":"1.2.3.4"}"#.to_vec());
        let bytes = env.encode_short().unwrap();
        assert_eq!(bytes.len(), 100 + 20);
        assert_eq!(&bytes[..18], b"guest msg header:\0");
        assert_eq!(&bytes[72..76], &0x1111_0023u32.to_le_bytes());
        let back = Envelope::decode(&bytes).unwrap();
        assert_eq!(back.signature(), SIG_GUEST);
        assert_eq!(back, env);
    }

    #[test]
    fn rejects_short_and_long_datagrams_and_payloads() {
        assert_eq!(Envelope::decode(&[0; 99]), Err(EnvelopeError::Truncated(99)));
        assert_eq!(Envelope::decode(&[0; 1061]), Err(EnvelopeError::Oversized(1061)));
        let env = Envelope::new(1, vec![b'x'; 960]);
        assert_eq!(env.encode_full(), Err(EnvelopeError::PayloadTooLong(960)));
        assert!(Envelope::new(1, vec![b'x'; 959]).encode_full().is_ok());
    }

    #[test]
    fn header_only_datagram_has_empty_payload() {
        let env = Envelope::decode(&[0; 100]).unwrap();
        assert!(env.payload.is_empty());
        assert_eq!(env.cmd, 0);
    }
}
