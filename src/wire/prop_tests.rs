//! Property tests of the wire decoders (issue 6): no panic on arbitrary
//! bytes, and encode → decode round trips where a round trip exists. The
//! guest decoders run on a 64 KiB thread, as on a guestServer reader.

use proptest::prelude::*;

use super::auth::{open, seal, AuthError, HmacKey, SEALED_LEN};
use super::envelope::{Envelope, MAX_PAYLOAD};
use super::guest::*;

/// Runs `f` on a thread with the reader's stack size.
fn on_reader_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new().stack_size(64 * 1024).spawn(f).unwrap().join().unwrap()
}

/// Bytes biased towards JSON punctuation, so nesting and strings get tried.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            any::<u8>(),
            Just(b'['),
            Just(b'{'),
            Just(b'"'),
            Just(b'\\'),
            Just(b':'),
            Just(b','),
            Just(b'}'),
            Just(b']'),
            Just(b'0'),
        ],
        0..4096,
    )
}

fn guest_msg() -> impl Strategy<Value = GuestMsg> {
    let s = || ".{0,40}";
    prop_oneof![
        (any::<u32>(), s(), any::<u32>(), any::<[u32; 5]>(), s()).prop_map(|(id, name, hb, t, ca)| {
            GuestMsg::Init(Init {
                invocation_id: id,
                name,
                heartbeat_interval_ms: hb,
                vote_secs: t[0],
                shutdown_notice_secs: t[1],
                suspend_notice_secs: t[2],
                resume_notice_secs: t[3],
                restart_secs: t[4],
                corrective_action: ca,
            })
        }),
        (any::<u32>(), s(), s(), s()).prop_map(|(r, h, c, l)| {
            GuestMsg::ChallengeResponse(ChallengeResponse {
                heartbeat_response: r,
                heartbeat_health: h,
                corrective_action: c,
                log_msg: l,
            })
        }),
        (any::<u32>(), s(), s(), s(), s()).prop_map(|(id, e, n, v, l)| {
            GuestMsg::ActionResponse(ActionResponse {
                invocation_id: id,
                event_type: e,
                notification_type: n,
                vote_result: v,
                log_msg: l,
            })
        }),
    ]
}

fn host_msg() -> impl Strategy<Value = HostMsg> {
    prop_oneof![
        any::<u32>().prop_map(|i| HostMsg::InitAck(InitAck { invocation_id: i })),
        any::<u32>().prop_map(|c| HostMsg::Challenge(Challenge { heartbeat_challenge: c })),
        (any::<u32>(), ".{0,80}").prop_map(|(i, l)| HostMsg::Nack(Nack { invocation_id: i, log_msg: l })),
    ]
}

/// The line without the leading and trailing newline.
fn strip(line: &[u8]) -> &[u8] {
    &line[1..line.len() - 1]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn guest_and_host_decoders_never_panic(bytes in jsonish()) {
        let b = bytes.clone();
        on_reader_stack(move || {
            let _ = decode_guest(&b);
            let _ = decode_host(&b);
        });
    }

    #[test]
    fn guest_messages_round_trip(seq in any::<u32>(), msg in guest_msg()) {
        let line = encode_guest(seq, &msg);
        prop_assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 2, "one line");
        match decode_guest(strip(&line)) {
            Decoded::Msg(h, m) => {
                prop_assert_eq!(h.sequence, seq);
                prop_assert_eq!(h.version, 3);
                prop_assert_eq!(m, msg);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn host_messages_round_trip(seq in any::<u32>(), msg in host_msg()) {
        let line = encode_host(seq, &msg);
        match decode_host(strip(&line)) {
            Decoded::Msg(h, m) => {
                prop_assert_eq!(h.sequence, seq);
                prop_assert_eq!(m, msg);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn envelope_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1200)) {
        match Envelope::decode(&bytes) {
            Ok(e) => prop_assert!((100..=1060).contains(&bytes.len()) && e.payload.len() <= 960),
            Err(_) => prop_assert!(bytes.len() < 100 || bytes.len() > 1060),
        }
    }

    #[test]
    fn envelopes_round_trip(
        cmd in any::<u32>(),
        sig in prop::collection::vec(1u8..=255, 0..40),
        payload in prop::collection::vec(1u8..=255, 0..=MAX_PAYLOAD),
    ) {
        let env = Envelope::signed(&sig, cmd, payload.clone());
        for bytes in [env.encode_full().unwrap(), env.encode_short().unwrap()] {
            let back = Envelope::decode(&bytes).unwrap();
            prop_assert_eq!(back.cmd, cmd);
            prop_assert_eq!(&back.payload, &payload);
            prop_assert_eq!(back.signature(), &sig[..]);
        }
    }

    #[test]
    fn keyed_envelope_opening_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..1200),
        key in prop::collection::vec(any::<u8>(), 1..100),
    ) {
        let key = HmacKey::new(key).unwrap();
        match open(&key, &bytes) {
            // A random 32-byte tag matching is a 2^-256 event.
            Ok(_) => prop_assert!(false, "random bytes authenticated"),
            Err(AuthError::Length(n)) => prop_assert!(n != SEALED_LEN),
            Err(e) => prop_assert_eq!((e, bytes.len()), (AuthError::BadTag, SEALED_LEN)),
        }
    }

    #[test]
    fn sealed_envelopes_round_trip_and_any_flip_is_caught(
        cmd in any::<u32>(),
        payload in prop::collection::vec(1u8..=255, 0..=MAX_PAYLOAD),
        key in prop::collection::vec(any::<u8>(), 1..100),
        flip in 0usize..SEALED_LEN,
        bit in 0u8..8,
    ) {
        let key = HmacKey::new(key).unwrap();
        let env = Envelope::new(cmd, payload);
        let sealed = seal(&key, &env.encode_short().unwrap(), 1_795_000_000_000_000).unwrap();
        let (opened, stamp) = open(&key, &sealed).unwrap();
        prop_assert_eq!(Envelope::decode(opened).unwrap(), env);
        prop_assert_eq!(stamp.sender, key.sender());
        let mut bad = sealed.clone();
        bad[flip] ^= 1 << bit;
        prop_assert_eq!(open(&key, &bad), Err(AuthError::BadTag));
    }
}
