//! Golden-vector and edge-case tests for the guest protocol codec.

use super::*;
use crate::wire::vocab::{EventType, NotificationType};

/// Frames recorded from the real C guest-client (observed-guest-transcript.md).
const GOLDEN_INIT: &str = "\n{\"version\":3,\"revision\":1,\"msg_type\":\"init\",\"sequence\":1,\"invocation_id\":1804289383,\"name\":\"peer-vm\",\"heartbeat_interval_ms\":1000,\"vote_secs\":9,\"shutdown_notice_secs\":9,\"suspend_notice_secs\":9,\"resume_notice_secs\":14,\"restart_secs\":601,\"corrective_action\":\"reboot\"}\n";
const GOLDEN_RESPONSE: &str = "\n{\"version\":3,\"revision\":1,\"msg_type\":\"challenge_response\",\"sequence\":2,\"heartbeat_response\":1576872650,\"heartbeat_health\":\"healthy\",\"corrective_action\":\"reboot\",\"log_msg\":\"\"}\n";
const GOLDEN_ACTION_RESPONSE: &str = "\n{\"version\":3,\"revision\":1,\"msg_type\":\"action_response\",\"sequence\":8,\"invocation_id\":1804289383,\"event_type\":\"stop\",\"notification_type\":\"revocable\",\"vote_result\":\"reject\",\"log_msg\":\"File /etc/guest-client/flags/vote_no_to_stop exists. \"}\n";
const GOLDEN_EXIT: &str =
    "\n{\"version\":3,\"revision\":1,\"msg_type\":\"exit\",\"sequence\":18,\"log_msg\":\"Exiting...\"}\n";

fn line(frame: &str) -> &[u8] {
    frame.trim_matches('\n').as_bytes()
}

fn golden_init() -> Init {
    Init {
        invocation_id: 1_804_289_383,
        name: "peer-vm".into(),
        heartbeat_interval_ms: 1000,
        vote_secs: 9,
        shutdown_notice_secs: 9,
        suspend_notice_secs: 9,
        resume_notice_secs: 14,
        restart_secs: 601,
        corrective_action: "reboot".into(),
    }
}

#[test]
fn decodes_golden_guest_frames() {
    let hdr = |sequence| Header { version: 3, revision: 1, sequence };
    assert_eq!(decode_guest(line(GOLDEN_INIT)), Decoded::Msg(hdr(1), GuestMsg::Init(golden_init())));
    assert_eq!(
        decode_guest(line(GOLDEN_RESPONSE)),
        Decoded::Msg(
            hdr(2),
            GuestMsg::ChallengeResponse(ChallengeResponse {
                heartbeat_response: 1_576_872_650,
                heartbeat_health: "healthy".into(),
                corrective_action: "reboot".into(),
                log_msg: String::new(),
            })
        )
    );
    let Decoded::Msg(_, GuestMsg::ActionResponse(r)) = decode_guest(line(GOLDEN_ACTION_RESPONSE)) else {
        panic!("not an action_response");
    };
    assert_eq!(r.vote_result, "reject");
    assert_eq!(r.log_msg, "File /etc/guest-client/flags/vote_no_to_stop exists. ");
    assert_eq!(
        decode_guest(line(GOLDEN_EXIT)),
        Decoded::Msg(hdr(18), GuestMsg::Exit(Exit { log_msg: "Exiting...".into() }))
    );
}

#[test]
fn guest_encoding_reproduces_golden_frames_byte_for_byte() {
    assert_eq!(encode_guest(1, &GuestMsg::Init(golden_init())), GOLDEN_INIT.as_bytes());
    assert_eq!(encode_guest(18, &GuestMsg::Exit(Exit { log_msg: "Exiting...".into() })), GOLDEN_EXIT.as_bytes());
    let Decoded::Msg(h, msg) = decode_guest(line(GOLDEN_ACTION_RESPONSE)) else {
        panic!("golden frame did not decode");
    };
    assert_eq!(encode_guest(h.sequence, &msg), GOLDEN_ACTION_RESPONSE.as_bytes());
}

#[test]
fn host_encoding_matches_the_spec_shapes() {
    let ack = encode_host(2, &HostMsg::InitAck(InitAck { invocation_id: 1_804_289_383 }));
    assert_eq!(
        ack,
        b"\n{\"version\":3,\"revision\":1,\"msg_type\":\"init_ack\",\"sequence\":2,\"invocation_id\":1804289383}\n"
    );
    let ch = encode_host(3, &HostMsg::Challenge(Challenge { heartbeat_challenge: 1_576_872_650 }));
    assert_eq!(
        ch,
        b"\n{\"version\":3,\"revision\":1,\"msg_type\":\"challenge\",\"sequence\":3,\"heartbeat_challenge\":1576872650}\n"
    );
    let notify = encode_host(
        7,
        &HostMsg::ActionNotify(ActionNotify {
            invocation_id: 1_804_289_383,
            event_type: EventType::Stop,
            notification_type: NotificationType::Revocable,
            timeout_ms: 9000,
        }),
    );
    assert_eq!(
        notify,
        b"\n{\"version\":3,\"revision\":1,\"msg_type\":\"action_notify\",\"sequence\":7,\"invocation_id\":1804289383,\"event_type\":\"stop\",\"notification_type\":\"revocable\",\"timeout_ms\":9000}\n"
    );
    let nack = encode_host(4, &HostMsg::Nack(Nack { invocation_id: 5, log_msg: "a \"quoted\" \\ text".into() }));
    assert_eq!(
        nack,
        b"\n{\"version\":3,\"revision\":1,\"msg_type\":\"nack\",\"sequence\":4,\"invocation_id\":5,\"log_msg\":\"a \\\"quoted\\\" \\\\ text\"}\n"
    );
}

#[test]
fn host_frames_round_trip_through_decode_host() {
    for msg in [
        HostMsg::InitAck(InitAck { invocation_id: 9 }),
        HostMsg::Challenge(Challenge { heartbeat_challenge: 0x7fff_ffff }),
        HostMsg::ActionNotify(ActionNotify {
            invocation_id: 1,
            event_type: EventType::LiveMigrateBegin,
            notification_type: NotificationType::Irrevocable,
            timeout_ms: 10_000,
        }),
        HostMsg::Nack(Nack { invocation_id: 1, log_msg: "x".into() }),
    ] {
        let bytes = encode_host(11, &msg);
        let Decoded::Msg(h, back) = decode_host(line(std::str::from_utf8(&bytes).unwrap())) else {
            panic!("did not decode {msg:?}");
        };
        assert_eq!(h.sequence, 11);
        assert_eq!(back, msg);
    }
}

#[test]
fn header_failures_give_the_original_nack_texts() {
    let nack = |s: &str| Decoded::<GuestMsg>::Nack(s.to_string());
    assert_eq!(decode_guest(br#"{"msg_type":"init"}"#), nack("failed to parse version"));
    assert_eq!(decode_guest(br#"{"version":"3"}"#), nack("failed to parse version"));
    assert_eq!(decode_guest(br#""just a string""#), nack("failed to parse version"));
    assert_eq!(
        decode_guest(br#"{"version":2,"revision":1,"msg_type":"init","sequence":1}"#),
        nack("Bad version: 2, expect version: 3")
    );
    assert_eq!(decode_guest(br#"{"version":3,"revision":1,"sequence":1}"#), nack("failed to parse msg_type"));
    assert_eq!(
        decode_guest(br#"{"version":3,"revision":1,"msg_type":7,"sequence":1}"#),
        nack("failed to parse msg_type")
    );
    assert_eq!(
        decode_guest(br#"{"version":3,"revision":1,"msg_type":"challenge","sequence":1}"#),
        nack("unsupported message type: challenge")
    );
    assert_eq!(
        decode_guest(br#"{"version":3,"revision":1,"msg_type":"bogus","sequence":1}"#),
        nack("unsupported message type: bogus")
    );
}

#[test]
fn newer_versions_are_accepted() {
    let line = br#"{"version":4,"revision":9,"msg_type":"exit","sequence":1,"log_msg":"bye","extra":1}"#;
    assert!(matches!(decode_guest(line), Decoded::Msg(Header { version: 4, .. }, _)));
}

#[test]
fn integer_fields_reject_strings_fractions_negatives_booleans_and_huge_values() {
    for bad in ["\"1000\"", "1000.5", "-1", "true", "4294967296", "1e3", "null", "[1]"] {
        let line =
            format!(r#"{{"version":3,"revision":1,"msg_type":"init","sequence":1,"invocation_id":{bad},"name":"n"}}"#);
        assert_eq!(decode_guest(line.as_bytes()), Decoded::Nack("failed to parse invocation_id".into()), "value {bad}");
    }
}

#[test]
fn init_nack_names_the_first_bad_key_in_original_order() {
    let line = br#"{"version":3,"revision":1,"msg_type":"init","sequence":1,"invocation_id":1,"name":"n","corrective_action":"log","heartbeat_interval_ms":-5}"#;
    assert_eq!(decode_guest(line), Decoded::Nack("failed to parse heartbeat_interval_ms".into()));
    let line = br#"{"version":3,"revision":1,"msg_type":"challenge_response","sequence":1,"heartbeat_response":1,"heartbeat_health":"healthy","corrective_action":"log"}"#;
    assert_eq!(decode_guest(line), Decoded::Nack("failed to parse log_msg".into()));
}

#[test]
fn malformed_lines_are_dropped_without_nack() {
    assert!(matches!(decode_guest(b"garbage"), Decoded::Malformed(_)));
    assert!(matches!(decode_guest(b"null"), Decoded::Malformed(_)));
    assert!(matches!(decode_guest(b"{\"version\":3,"), Decoded::Malformed(_)));
    assert!(matches!(
        decode_guest(b"{\"version\":3,\"revision\":1,\"msg_type\":\"ex\0it\",\"sequence\":1}"),
        Decoded::Malformed(_)
    ));
    assert!(matches!(
        decode_guest(b"{\"version\":3,\"revision\":1,\"msg_type\":\"\xff\xfe\",\"sequence\":1}"),
        Decoded::Malformed(_)
    ));
}

#[test]
fn deeply_nested_json_is_malformed_not_a_crash() {
    let deep = "[".repeat(100_000);
    assert!(matches!(decode_guest(deep.as_bytes()), Decoded::Malformed(_)));
}

/// The challenge_response fast path never disagrees with the general decoder.
#[test]
fn fast_path_agrees_with_the_general_decoder() {
    let cases: &[&[u8]] = &[
        line(GOLDEN_RESPONSE),
        br#"{"version":3,"revision":1,"msg_type":"challenge_response","sequence":1,"heartbeat_response":1,"heartbeat_health":"healthy","corrective_action":"log","log_msg":"x","extra":[1,{"a":null}]}"#,
        br#"{"version":2,"revision":1,"msg_type":"challenge_response","sequence":1,"heartbeat_response":1,"heartbeat_health":"healthy","corrective_action":"log","log_msg":""}"#,
        br#"{"version":4,"revision":9,"msg_type":"challenge_response","sequence":1,"heartbeat_response":1,"heartbeat_health":"unhealthy","corrective_action":"log","log_msg":"\u00e9\n"}"#,
        br#"{"version":3,"revision":1,"msg_type":"challenge_response","sequence":1,"heartbeat_response":1,"heartbeat_response":2,"heartbeat_health":"healthy","corrective_action":"log","log_msg":""}"#,
        br#"{"version":3,"revision":1,"msg_type":"challenge_response","sequence":1,"heartbeat_response":1.0,"heartbeat_health":"healthy","corrective_action":"log","log_msg":""}"#,
        br#"{"version":3,"revision":1,"msg_type":"challenge_response","sequence":1,"heartbeat_response":4294967296,"heartbeat_health":"healthy","corrective_action":"log","log_msg":""}"#,
        br#"{"version":3,"revision":1,"msg_type":"init","sequence":1,"heartbeat_response":1,"heartbeat_health":"healthy","corrective_action":"log","log_msg":""}"#,
        br#"{"version":3,"revision":1,"msg_type":"challenge_response","sequence":1,"heartbeat_response":1,"heartbeat_health":"healthy","corrective_action":"log"}"#,
        b"{\"version\":3,\"revision\":1,\"msg_type\":\"challenge_response\",\"sequence\":1,\"heartbeat_response\":1,\"heartbeat_health\":\"healthy\",\"corrective_action\":\"log\",\"log_msg\":\"a\x00\"}",
        br#"{"version":3,"revision":1,"msg_type":"challenge_response","sequence":-1,"heartbeat_response":1,"heartbeat_health":"healthy","corrective_action":"log","log_msg":""}"#,
        br#"[1,2]"#,
        br#"null"#,
    ];
    for case in cases {
        assert_eq!(decode_guest(case), decode_guest_general(case), "{}", String::from_utf8_lossy(case));
    }
}

proptest::proptest! {
    #[test]
    fn fast_path_agrees_on_arbitrary_fields(
        version in proptest::prop_oneof![proptest::strategy::Just("3".to_string()), "-?[0-9]{1,11}(\\.[0-9])?", proptest::strategy::Just("\"3\"".to_string())],
        response in "-?[0-9]{1,11}",
        health in "[a-z\\\\\"é]{0,8}",
        extra in proptest::bool::ANY,
    ) {
        let extra = if extra { r#","heartbeat_health":"x""# } else { "" };
        let text = format!(
            r#"{{"version":{version},"revision":1,"msg_type":"challenge_response","sequence":7,"heartbeat_response":{response},"heartbeat_health":"{health}","corrective_action":"log","log_msg":""{extra}}}"#
        );
        proptest::prop_assert_eq!(decode_guest(text.as_bytes()), decode_guest_general(text.as_bytes()));
    }
}

#[test]
fn challenge_fast_encoding_is_byte_identical_to_the_generic_frame() {
    for (seq, value) in [(0, 0), (1, 1_576_872_650), (u32::MAX, 2_147_483_647)] {
        let c = Challenge { heartbeat_challenge: value };
        assert_eq!(encode_host(seq, &HostMsg::Challenge(c.clone())), frame("challenge", seq, &c));
    }
}

#[test]
fn deep_json_on_a_reader_sized_stack_is_malformed() {
    // Found by the hostile-guest suite: serde_json's own limit (128 levels)
    // overflowed the 64 KiB reader stack and killed the daemon.
    let d = 1500;
    let lines = [
        format!("{}{}", "[".repeat(d), "]".repeat(d)),
        format!(
            r#"{{"version":3,"revision":1,"msg_type":"exit","sequence":1,"log_msg":{}1{}}}"#,
            "{\"a\":".repeat(d),
            "}".repeat(d)
        ),
    ];
    let t = std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(move || {
            lines.iter().map(|l| matches!(decode_guest(l.as_bytes()), Decoded::Malformed(_))).collect::<Vec<_>>()
        })
        .unwrap();
    assert_eq!(t.join().unwrap(), vec![true, true]);
    // Brackets inside strings do not count.
    let ok = format!(
        r#"{{"version":3,"revision":1,"msg_type":"exit","sequence":1,"log_msg":"{}\"{}"}}"#,
        "[".repeat(100),
        "{".repeat(100)
    );
    assert!(!nesting_exceeds(ok.as_bytes(), MAX_DEPTH));
    assert!(matches!(decode_guest(ok.as_bytes()), Decoded::Msg(..)));
    assert!(nesting_exceeds(b"[[[", 2));
    assert!(!nesting_exceeds(b"[[]]", 2));
}
