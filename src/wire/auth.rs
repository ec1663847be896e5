//! The optional shared-key HMAC on the guestAgent ↔ guestServer envelope
//! (issue 6). Pure code: sealed on the dispatchers before a send, opened on
//! guestServer's dispatcher and on guestAgent's UDP receiver threads.
//!
//! Off (no key configured), nothing here runs and datagrams are the
//! originals' byte for byte. On, every datagram is the full 1060-byte
//! envelope (zero-padded, so the layout is fixed in both directions), a
//! 16-byte stamp (the sender's random 64-bit id and a 64-bit sequence number,
//! both big-endian) and a 32-byte HMAC-SHA256 tag over envelope and stamp:
//! 1108 bytes in all. A receiver with the key drops anything else: another
//! length, or a tag that does not match (compared in constant time).
//!
//! Replay: the sequence number is the sender's wall clock in microseconds,
//! made strictly increasing per process. `ReplayGuard` (state, so it lives
//! on a dispatcher) refuses a stamp more than `REPLAY_WINDOW` away from the
//! receiver's clock, or one it has already accepted from that sender. It
//! keeps the last 64 sequence numbers of each sender, so datagrams reordered
//! by the network are still accepted. What is left: hosts must keep their
//! clocks within 5 minutes of each other (StarlingX keeps them NTP-synced),
//! and a receiver that restarts forgets what it has seen, so a datagram
//! captured in the 5 minutes before the restart could be replayed once.

use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

use super::envelope::ENVELOPE_LEN;

/// Length of the tag.
pub const TAG_LEN: usize = 32;
/// Length of the stamp (sender id, sequence number).
pub const STAMP_LEN: usize = 16;
/// Length of every datagram when the key is on.
pub const SEALED_LEN: usize = ENVELOPE_LEN + STAMP_LEN + TAG_LEN;
/// How far a stamp may be from the receiver's clock.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(300);
/// Sequence numbers remembered per sender (reordering tolerated within them).
const RECENT: usize = 64;
/// Senders remembered; the one heard from longest ago is forgotten first.
const MAX_SENDERS: usize = 1024;

/// Who sealed a datagram, and its place in that sender's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub sender: u64,
    pub seq: u64,
}

/// The shared key, with the HMAC state keyed once, and this process's
/// sender id and sequence counter (shared by every clone, so all threads of
/// a process seal one increasing sequence). The key bytes never appear in
/// `Debug` output or logs.
#[derive(Clone)]
pub struct HmacKey {
    bytes: Vec<u8>,
    keyed: Hmac<Sha256>,
    sender: u64,
    last_seq: Arc<AtomicU64>,
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
    #[error("stamp {seq} is more than 300 s away from our clock ({now}); clocks out of sync, or a replay")]
    Stale { seq: u64, now: u64 },
    #[error("datagram already received (replay) from sender {sender:016x}, sequence {seq}")]
    Replayed { sender: u64, seq: u64 },
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
        // A fresh random id per process (std's randomly seeded hasher).
        let sender = std::collections::hash_map::RandomState::new().hash_one((std::process::id(), wall_us()));
        Ok(Self { bytes, keyed, sender, last_seq: Arc::new(AtomicU64::new(0)) })
    }

    /// This process's sender id.
    pub fn sender(&self) -> u64 {
        self.sender
    }

    /// The next sequence number: `wall_us`, or one more than the last one
    /// if the clock has not moved on (or went back).
    fn next_seq(&self, wall_us: u64) -> u64 {
        let mut cur = self.last_seq.load(Ordering::Relaxed);
        loop {
            let next = wall_us.max(cur.saturating_add(1));
            match self.last_seq.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(actual) => cur = actual,
            }
        }
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

/// The wall clock in microseconds since the epoch (0 before 1970).
pub fn wall_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Pads an encoded envelope (short or full form) to 1060 bytes and appends
/// the stamp (sequence from `wall_us`, the caller's clock) and the tag.
pub fn seal(key: &HmacKey, envelope: &[u8], wall_us: u64) -> Result<Vec<u8>, AuthError> {
    if envelope.len() > ENVELOPE_LEN {
        return Err(AuthError::TooLong(envelope.len()));
    }
    let mut out = Vec::with_capacity(SEALED_LEN);
    out.extend_from_slice(envelope);
    out.resize(ENVELOPE_LEN, 0);
    out.extend_from_slice(&key.sender.to_be_bytes());
    out.extend_from_slice(&key.next_seq(wall_us).to_be_bytes());
    let mut mac = key.mac();
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    Ok(out)
}

/// Checks a received datagram's tag and returns its 1060-byte envelope and
/// its stamp, which the caller's `ReplayGuard` must check next.
pub fn open<'a>(key: &HmacKey, datagram: &'a [u8]) -> Result<(&'a [u8], Stamp), AuthError> {
    if datagram.len() != SEALED_LEN {
        return Err(AuthError::Length(datagram.len()));
    }
    let (signed, tag) = datagram.split_at(ENVELOPE_LEN + STAMP_LEN);
    let mut mac = key.mac();
    mac.update(signed);
    // `verify_slice` compares in constant time.
    mac.verify_slice(tag).map_err(|_| AuthError::BadTag)?;
    let (envelope, stamp) = signed.split_at(ENVELOPE_LEN);
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&stamp[i..i + 8]);
        u64::from_be_bytes(b)
    };
    Ok((envelope, Stamp { sender: word(0), seq: word(8) }))
}

/// What one receiver has accepted, per sender; refuses replays. Owned by a
/// dispatcher (it is state); bounded: 64 sequence numbers for each of at
/// most 1,024 senders.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    senders: HashMap<u64, BTreeSet<u64>>,
}

impl ReplayGuard {
    /// Accepts `stamp` once, if it is within `REPLAY_WINDOW` of `now_us`.
    pub fn check(&mut self, stamp: Stamp, now_us: u64) -> Result<(), AuthError> {
        let window = u64::try_from(REPLAY_WINDOW.as_micros()).unwrap_or(u64::MAX);
        if stamp.seq.abs_diff(now_us) > window {
            return Err(AuthError::Stale { seq: stamp.seq, now: now_us });
        }
        if !self.senders.contains_key(&stamp.sender) && self.senders.len() >= MAX_SENDERS {
            self.forget_quietest();
        }
        let seen = self.senders.entry(stamp.sender).or_default();
        let replayed = seen.contains(&stamp.seq)
            // Too old to tell: below everything remembered.
            || (seen.len() >= RECENT && seen.first().is_some_and(|&lo| stamp.seq < lo));
        if replayed {
            return Err(AuthError::Replayed { sender: stamp.sender, seq: stamp.seq });
        }
        seen.insert(stamp.seq);
        while seen.len() > RECENT {
            seen.pop_first();
        }
        Ok(())
    }

    /// Forgets the sender whose newest datagram is the oldest.
    fn forget_quietest(&mut self) {
        let quietest = self.senders.iter().min_by_key(|(_, seen)| seen.last().copied()).map(|(id, _)| *id);
        if let Some(id) = quietest {
            self.senders.remove(&id);
        }
    }

    /// Senders remembered (for tests and metrics).
    pub fn senders(&self) -> usize {
        self.senders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::envelope::{cmd, Envelope, SIG_GUEST};

    /// A fixed wall clock (2026-11-26), in microseconds.
    const NOW: u64 = 1_795_000_000_000_000;
    const SEC: u64 = 1_000_000;

    fn key(k: &[u8]) -> HmacKey {
        HmacKey::new(k.to_vec()).unwrap()
    }

    #[test]
    fn sealed_envelopes_open_with_the_same_key() {
        let env = Envelope::signed(SIG_GUEST, cmd::QRY_INST, br#"{"source":"1.2.3.4"}"#.to_vec());
        let short = env.encode_short().unwrap();
        let sealed = seal(&key(b"secret"), &short, NOW).unwrap();
        assert_eq!(sealed.len(), 1108);
        // The envelope part is the full, zero-padded form.
        assert_eq!(&sealed[..1060], &env.encode_full().unwrap()[..]);
        let (opened, stamp) = open(&key(b"secret"), &sealed).unwrap();
        assert_eq!(Envelope::decode(opened).unwrap(), env);
        assert_eq!(stamp.seq, NOW);
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
            seal(&key(b"k"), &Envelope::new(cmd::HEARTBEAT_LOSS, b"{}".to_vec()).encode_full().unwrap(), NOW).unwrap();
        for i in [0, 63, 72, 100, 101, 1059, 1060, 1067, 1068, 1075, 1076, 1107] {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(open(&key(b"k"), &bad), Err(AuthError::BadTag), "byte {i}");
        }
    }

    #[test]
    fn a_wrong_key_is_rejected() {
        let sealed = seal(&key(b"right"), &[0; 100], NOW).unwrap();
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
        let sealed = seal(&k, &env.encode_full().unwrap(), NOW).unwrap();
        assert_eq!(open(&k, &sealed[..1107]), Err(AuthError::Length(1107)));
        // What the first version of this switch sent (no stamp).
        assert_eq!(open(&k, &sealed[..1092]), Err(AuthError::Length(1092)));
        assert_eq!(open(&k, &[]), Err(AuthError::Length(0)));
        let mut long = sealed.clone();
        long.push(0);
        assert_eq!(open(&k, &long), Err(AuthError::Length(1109)));
    }

    #[test]
    fn oversized_envelopes_and_empty_keys_are_refused() {
        assert_eq!(seal(&key(b"k"), &[0; 1061], NOW), Err(AuthError::TooLong(1061)));
        assert_eq!(HmacKey::new(Vec::new()), Err(AuthError::EmptyKey));
        assert_eq!(format!("{:?}", key(b"secret")), "HmacKey(<6 bytes>)");
    }

    #[test]
    fn sequence_numbers_increase_even_when_the_clock_does_not() {
        let k = key(b"k");
        let stamp = |wall| open(&k, &seal(&k, &[0; 100], wall).unwrap()).unwrap().1;
        assert_eq!(stamp(NOW).seq, NOW);
        assert_eq!(stamp(NOW).seq, NOW + 1);
        assert_eq!(stamp(NOW - SEC).seq, NOW + 2, "clock went back");
        assert_eq!(stamp(NOW + SEC).seq, NOW + SEC);
        // Clones share the sequence and the sender id; another key load does not.
        let twin = k.clone();
        assert_eq!(open(&k, &seal(&twin, &[0; 100], NOW).unwrap()).unwrap().1.seq, NOW + SEC + 1);
        assert_eq!(stamp(NOW).sender, k.sender());
        assert_ne!(key(b"k").sender(), k.sender());
    }

    #[test]
    fn the_guard_accepts_each_stamp_once_and_tolerates_reordering() {
        let mut g = ReplayGuard::default();
        let s = |seq| Stamp { sender: 7, seq };
        assert_eq!(g.check(s(NOW), NOW), Ok(()));
        assert_eq!(g.check(s(NOW), NOW), Err(AuthError::Replayed { sender: 7, seq: NOW }));
        assert_eq!(g.check(s(NOW + 20), NOW), Ok(()));
        assert_eq!(g.check(s(NOW + 10), NOW), Ok(()), "late but new");
        assert_eq!(g.check(s(NOW + 10), NOW), Err(AuthError::Replayed { sender: 7, seq: NOW + 10 }));
        // Another sender with the same sequence number is another datagram.
        assert_eq!(g.check(Stamp { sender: 8, seq: NOW }, NOW), Ok(()));
        // Once 64 newer ones are remembered, anything older is refused.
        for i in 0..64 {
            assert_eq!(g.check(s(NOW + 100 + i), NOW), Ok(()));
        }
        assert_eq!(g.check(s(NOW + 30), NOW), Err(AuthError::Replayed { sender: 7, seq: NOW + 30 }));
    }

    #[test]
    fn the_guard_refuses_stale_stamps_and_stays_bounded() {
        let mut g = ReplayGuard::default();
        let five_min = 300 * SEC;
        assert_eq!(g.check(Stamp { sender: 1, seq: NOW - five_min }, NOW), Ok(()));
        assert_eq!(
            g.check(Stamp { sender: 1, seq: NOW - five_min - 1 }, NOW),
            Err(AuthError::Stale { seq: NOW - five_min - 1, now: NOW })
        );
        assert!(matches!(g.check(Stamp { sender: 1, seq: NOW + five_min + 1 }, NOW), Err(AuthError::Stale { .. })));
        for sender in 0..2000u64 {
            assert_eq!(g.check(Stamp { sender, seq: NOW + sender }, NOW), Ok(()));
        }
        assert_eq!(g.senders(), MAX_SENDERS);
        // The quietest senders were forgotten, the newest kept.
        assert_eq!(
            g.check(Stamp { sender: 1999, seq: NOW + 1999 }, NOW),
            Err(AuthError::Replayed { sender: 1999, seq: NOW + 1999 })
        );
    }
}
