//! The optional shared-key HMAC on the guestAgent ↔ guestServer envelope
//! (issue 6). Pure code: sealed on the dispatchers before a send, opened on
//! guestServer's dispatcher and on guestAgent's UDP receiver threads.
//!
//! Off (no key configured), nothing here runs and datagrams are the
//! originals' byte for byte. On, every datagram is the full 1060-byte
//! envelope (zero-padded, so the layout is fixed in both directions)
//! followed by a 32-byte HMAC-SHA256 tag computed over those 1060 bytes:
//! 1092 bytes in all. A receiver with the key drops anything else: another
//! length, or a tag that does not match (compared in constant time).
//!
//! Not covered: replay. The tag proves the datagram was made by a holder
//! of the key and not changed, but a captured datagram can be sent again.
//! Preventing that needs a counter or timestamp both sides agree on, a
//! protocol change this switch deliberately does not make.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

use super::envelope::ENVELOPE_LEN;

/// Length of the tag.
pub const TAG_LEN: usize = 32;
/// Length of every datagram when the key is on.
pub const SEALED_LEN: usize = ENVELOPE_LEN + TAG_LEN;

/// The shared key, with the HMAC state keyed once. Its bytes never appear
/// in `Debug` output or logs.
#[derive(Clone)]
pub struct HmacKey {
    bytes: Vec<u8>,
    keyed: Hmac<Sha256>,
}

impl PartialEq for HmacKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for HmacKey {}

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HmacKey(<{} bytes>)", self.bytes.len())
    }
}

/// Why a datagram is not accepted, or an envelope cannot be sealed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("datagram of {0} bytes is not a 1092-byte authenticated envelope (missing tag?)")]
    Length(usize),
    #[error("authentication tag does not match (wrong key or altered datagram)")]
    BadTag,
    #[error("envelope of {0} bytes is longer than 1060 bytes")]
    TooLong(usize),
    #[error("empty key")]
    EmptyKey,
}

impl HmacKey {
    /// A key from its bytes; an empty key is refused.
    pub fn new(bytes: Vec<u8>) -> Result<Self, AuthError> {
        if bytes.is_empty() {
            return Err(AuthError::EmptyKey);
        }
        // HMAC takes keys of any length (long keys are hashed first), so
        // this error cannot happen; it is mapped rather than unwrapped.
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(&bytes).map_err(|_| AuthError::EmptyKey)?;
        Ok(Self { bytes, keyed })
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn mac(&self) -> Hmac<Sha256> {
        self.keyed.clone()
    }
}

/// Pads an encoded envelope (short or full form) to 1060 bytes and appends
/// the tag.
pub fn seal(key: &HmacKey, envelope: &[u8]) -> Result<Vec<u8>, AuthError> {
    if envelope.len() > ENVELOPE_LEN {
        return Err(AuthError::TooLong(envelope.len()));
    }
    let mut out = Vec::with_capacity(SEALED_LEN);
    out.extend_from_slice(envelope);
    out.resize(ENVELOPE_LEN, 0);
    let mut mac = key.mac();
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    Ok(out)
}

/// Checks a received datagram and returns its 1060-byte envelope.
pub fn open<'a>(key: &HmacKey, datagram: &'a [u8]) -> Result<&'a [u8], AuthError> {
    if datagram.len() != SEALED_LEN {
        return Err(AuthError::Length(datagram.len()));
    }
    let (envelope, tag) = datagram.split_at(ENVELOPE_LEN);
    let mut mac = key.mac();
    mac.update(envelope);
    // `verify_slice` compares in constant time.
    mac.verify_slice(tag).map_err(|_| AuthError::BadTag)?;
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::envelope::{cmd, Envelope, SIG_GUEST};

    fn key(k: &[u8]) -> HmacKey {
        HmacKey::new(k.to_vec()).unwrap()
    }

    #[test]
    fn sealed_envelopes_open_with_the_same_key() {
        let env = Envelope::signed(SIG_GUEST, cmd::QRY_INST, br#"{"source":"1.2.3.4"}"#.to_vec());
        let short = env.encode_short().unwrap();
        let sealed = seal(&key(b"secret"), &short).unwrap();
        assert_eq!(sealed.len(), 1092);
        // The envelope part is the full, zero-padded form.
        assert_eq!(&sealed[..1060], &env.encode_full().unwrap()[..]);
        let opened = open(&key(b"secret"), &sealed).unwrap();
        assert_eq!(Envelope::decode(opened).unwrap(), env);
    }

    #[test]
    fn known_answer_matches_hmac_sha256() {
        // RFC 4231 test case 2 checks the primitive itself.
        let mut mac = key(b"Jefe").mac();
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn every_altered_byte_is_rejected() {
        let sealed =
            seal(&key(b"k"), &Envelope::new(cmd::HEARTBEAT_LOSS, b"{}".to_vec()).encode_full().unwrap()).unwrap();
        for i in [0, 63, 72, 100, 101, 1059, 1060, 1091] {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(open(&key(b"k"), &bad), Err(AuthError::BadTag), "byte {i}");
        }
    }

    #[test]
    fn a_wrong_key_is_rejected() {
        let sealed = seal(&key(b"right"), &[0; 100]).unwrap();
        assert_eq!(open(&key(b"wrong"), &sealed), Err(AuthError::BadTag));
        assert_eq!(open(&key(b"right\n"), &sealed), Err(AuthError::BadTag));
    }

    #[test]
    fn missing_or_short_tags_are_rejected_by_length() {
        let k = key(b"k");
        let env = Envelope::new(cmd::LOOPBACK, b"{}".to_vec());
        // What a peer without the key sends: the plain envelope.
        assert_eq!(open(&k, &env.encode_full().unwrap()), Err(AuthError::Length(1060)));
        assert_eq!(open(&k, &env.encode_short().unwrap()), Err(AuthError::Length(102)));
        let sealed = seal(&k, &env.encode_full().unwrap()).unwrap();
        assert_eq!(open(&k, &sealed[..1091]), Err(AuthError::Length(1091)));
        assert_eq!(open(&k, &[]), Err(AuthError::Length(0)));
        let mut long = sealed.clone();
        long.push(0);
        assert_eq!(open(&k, &long), Err(AuthError::Length(1093)));
    }

    #[test]
    fn oversized_envelopes_and_empty_keys_are_refused() {
        assert_eq!(seal(&key(b"k"), &[0; 1061]), Err(AuthError::TooLong(1061)));
        assert_eq!(HmacKey::new(Vec::new()), Err(AuthError::EmptyKey));
        assert_eq!(format!("{:?}", key(b"secret")), "HmacKey(<6 bytes>)");
    }
}
