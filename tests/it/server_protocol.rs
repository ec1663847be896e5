//! guestServer against fake guests and a fake guestAgent: every message of
//! spec server §5–§8, the framing cases, loss timing, votes and nacks.

use std::time::{Duration, Instant};

use guest_heartbeat::wire::envelope::cmd;
use guest_heartbeat::wire::guest::{ActionResponse, GuestMsg, HostMsg};

use crate::support::*;

fn setup(tag: &str) -> (TestDir, FakeAgent, Server) {
    let dir = TestDir::new(tag);
    let agent = FakeAgent::new();
    let server = Server::start(&dir, &agent, ServerOpts::default());
    agent.expect(cmd::MONITOR_READY, WAIT, |j| j["hostname"] == "compute-0");
    (dir, agent, server)
}

#[test]
fn ready_then_init_ack_challenge_echo_and_running_event() {
    let (_dir, agent, server) = setup("hs");
    let mut g = FakeGuest::listen(&server.channels, &uuid(1));
    g.handshake(200);
    let running = agent.expect(cmd::HEARTBEAT_RUNNING, WAIT, |_| true);
    assert_eq!(running.len, 1060, "guestServer sends full envelopes");
    assert_eq!(running.json["uuid"], uuid(1).as_str());
    assert_eq!(running.json["hostname"], "compute-0");
    assert_eq!(running.json["heartbeating"], "enabled");
    assert_eq!(running.json["reporting"], "disabled");
    assert_eq!(running.json["repair-action"], "reboot");
    assert_eq!(running.json["restart-to"], "6");
    assert_eq!(running.json["vote-to"], "2");
    // The next challenge comes one interval later and is a fresh value.
    let t = Instant::now();
    let c2 = g.expect_challenge(WAIT);
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(150) && waited < Duration::from_millis(600), "{waited:?}");
    g.respond(c2, "healthy", "reboot");
    let c3 = g.expect_challenge(WAIT);
    assert_ne!(c2, c3);
}

/// One silent episode: answer a challenge, go silent, and return the time
/// from receiving the first unanswered challenge to receiving LOSS.
fn silent_episode(g: &mut FakeGuest, agent: &FakeAgent) -> Duration {
    let c = g.expect_challenge(WAIT);
    g.respond(c, "healthy", "reboot");
    let _ = g.expect_challenge(WAIT);
    let first_unanswered = Instant::now();
    // STOPPED comes first (heartbeating ends), then the LOSS report.
    let stopped = agent.expect(cmd::HEARTBEAT_STOPPED, WAIT, |_| true);
    assert_eq!(stopped.json["heartbeating"], "disabled");
    let loss = agent.expect(cmd::HEARTBEAT_LOSS, WAIT, |_| true);
    // Issue 6: LOSS carries an `event_id` for acknowledgement (harmless to
    // the C++ agent, which extracts keys by name); otherwise unchanged.
    let mut json = loss.json.clone();
    assert!(json.as_object_mut().unwrap().remove("event_id").unwrap().is_u64());
    assert_eq!(json, serde_json::json!({"hostname": "compute-0", "uuid": g.uuid}));
    loss.at.duration_since(first_unanswered)
}

#[test]
fn loss_is_reported_threshold_plus_one_intervals_after_the_first_unanswered_challenge() {
    let (_dir, agent, server) = setup("loss");
    let mut g = FakeGuest::listen(&server.channels, &uuid(2));
    agent.enable(server.udp, &uuid(2));
    g.handshake(400);
    agent.expect(cmd::HEARTBEAT_RUNNING, WAIT, |_| true);
    // threshold 1 -> (1 + 1) x 400 ms = 800 ms. The test sees both ends
    // through its own (possibly busy) CPU, so every episode must fall within
    // 100 ms, which already excludes 1 or 3 intervals, and at least one of
    // three within the issue's 50 ms.
    let mut spans = Vec::new();
    for round in 0..3 {
        if round > 0 {
            // Drop the challenges sent before the loss, then re-init; the
            // new first challenge is answered below.
            while g.recv(Duration::from_millis(100)).is_some() {}
            g.invocation_id += 1;
            g.init(400);
        }
        spans.push(silent_episode(&mut g, &agent));
    }
    let close = |d: &Duration, ms: u64| d.as_millis().abs_diff(800) <= u128::from(ms);
    assert!(spans.iter().all(|d| close(d, 100)), "loss spans {spans:?}");
    assert!(spans.iter().any(|d| close(d, 50)), "loss spans {spans:?}");
}

#[test]
fn recovery_after_loss_needs_a_new_init_and_sends_running_again() {
    let (_dir, agent, server) = setup("recov");
    let mut g = FakeGuest::listen(&server.channels, &uuid(3));
    agent.enable(server.udp, &uuid(3));
    g.handshake(100);
    agent.expect(cmd::HEARTBEAT_RUNNING, WAIT, |_| true);
    agent.expect(cmd::HEARTBEAT_LOSS, WAIT, |_| true);
    // After the loss the server waits for init: only the (at most two)
    // challenges sent before the loss are in the channel, nothing after.
    let mut pending = Vec::new();
    while let Some(m) = g.recv(Duration::from_millis(300)) {
        pending.push(m);
    }
    assert!(pending.len() <= 2 && pending.iter().all(|m| matches!(m, HostMsg::Challenge(_))), "{pending:?}");
    g.invocation_id += 1;
    g.init(100);
    assert!(matches!(g.recv(WAIT), Some(HostMsg::InitAck(_))));
    let c = g.expect_challenge(WAIT);
    g.respond(c, "healthy", "reboot");
    agent.expect(cmd::HEARTBEAT_RUNNING, WAIT, |_| true);
}

#[test]
fn loss_is_gated_by_host_reporting() {
    let (_dir, agent, server) = setup("gate");
    agent.send(server.udp, cmd::MOD_HOST, r#"{"source":"127.0.0.1","uuid":"host-uuid","heartbeat":"disabled"}"#);
    let mut g = FakeGuest::listen(&server.channels, &uuid(4));
    agent.enable(server.udp, &uuid(4));
    g.handshake(100);
    agent.expect(cmd::HEARTBEAT_STOPPED, WAIT, |_| true);
    let later = agent.drain(Duration::from_millis(400));
    assert!(later.iter().all(|g| g.cmd != cmd::HEARTBEAT_LOSS), "{later:?}");
}

#[test]
fn unhealthy_response_sends_illhealth_with_the_guests_action() {
    let (_dir, agent, server) = setup("ill");
    let mut g = FakeGuest::listen(&server.channels, &uuid(5));
    assert!(g.accept(WAIT));
    g.init(200);
    let c = g.expect_challenge(WAIT);
    g.respond(c, "unhealthy", "stop");
    agent.expect(cmd::HEARTBEAT_RUNNING, WAIT, |_| true);
    let ill = agent.expect(cmd::HEARTBEAT_ILLHEALTH, WAIT, |_| true);
    assert_eq!(ill.json["repair-action"], "stop");
    assert_eq!(ill.json["uuid"], uuid(5).as_str());
}

#[test]
fn framing_coalesced_split_blank_garbage_and_overlong_lines() {
    let (_dir, agent, server) = setup("frame");
    let mut g = FakeGuest::listen(&server.channels, &uuid(6));
    assert!(g.accept(WAIT));
    // Garbage line, blank lines, then an init split at every byte.
    g.send_raw(b"\nthis is not json\n\n\n");
    let init = guest_heartbeat::wire::guest::encode_guest(
        1,
        &GuestMsg::Init(guest_heartbeat::wire::guest::Init {
            invocation_id: 77,
            name: "split".into(),
            heartbeat_interval_ms: 300,
            vote_secs: 2,
            shutdown_notice_secs: 2,
            suspend_notice_secs: 2,
            resume_notice_secs: 2,
            restart_secs: 2,
            corrective_action: "log".into(),
        }),
    );
    for b in &init {
        g.send_raw(&[*b]);
    }
    assert!(matches!(g.recv(WAIT), Some(HostMsg::InitAck(a)) if a.invocation_id == 77));
    let c = g.expect_challenge(WAIT);
    // An over-long line (20 KiB) is discarded; the response coalesced after it
    // in the same write still counts.
    let mut burst = vec![b'x'; 20 * 1024];
    burst.push(b'\n');
    let mut resp = guest_heartbeat::wire::guest::encode_guest(
        2,
        &GuestMsg::ChallengeResponse(guest_heartbeat::wire::guest::ChallengeResponse {
            heartbeat_response: c,
            heartbeat_health: "healthy".into(),
            corrective_action: "log".into(),
            log_msg: String::new(),
        }),
    );
    burst.append(&mut resp);
    g.send_raw(&burst);
    agent.expect(cmd::HEARTBEAT_RUNNING, WAIT, |_| true);
}

#[test]
fn nack_texts_for_bad_version_parse_failures_and_unsupported_types() {
    let (_dir, _agent, server) = setup("nack");
    let mut g = FakeGuest::listen(&server.channels, &uuid(7));
    assert!(g.accept(WAIT));
    let cases: [(&str, &str); 4] = [
        (r#"{"version":2,"revision":1,"msg_type":"init","sequence":1}"#, "Bad version: 2, expect version: 3"),
        (r#"{"revision":1,"msg_type":"init","sequence":1}"#, "failed to parse version"),
        (r#"{"version":3,"revision":1,"msg_type":"challenge","sequence":1}"#, "unsupported message type: challenge"),
        (
            r#"{"version":3,"revision":1,"msg_type":"init","sequence":1,"invocation_id":-4,"name":"x"}"#,
            "failed to parse invocation_id",
        ),
    ];
    for (line, text) in cases {
        g.send_raw(format!("\n{line}\n").as_bytes());
        match g.recv(WAIT) {
            Some(HostMsg::Nack(n)) => assert_eq!(n.log_msg, text),
            other => panic!("expected nack {text:?}, got {other:?}"),
        }
    }
    // NUL bytes: dropped without a nack, and the channel keeps working.
    g.send_raw(b"\n{\"version\":3,\0}\n");
    g.init(200);
    assert!(matches!(g.recv(WAIT), Some(HostMsg::InitAck(_))));
}

fn vote_reply(g: &FakeGuest, result: &str, reason: &str) -> GuestMsg {
    GuestMsg::ActionResponse(ActionResponse {
        invocation_id: g.invocation_id,
        event_type: "stop".into(),
        notification_type: "revocable".into(),
        vote_result: result.into(),
        log_msg: reason.into(),
    })
}

#[test]
fn vote_reaches_the_guest_and_its_reject_comes_back() {
    let (_dir, agent, server) = setup("vote");
    let mut g = FakeGuest::listen(&server.channels, &uuid(8));
    g.handshake(200);
    agent.expect(cmd::HEARTBEAT_RUNNING, WAIT, |_| true);
    agent.send(server.udp, cmd::VOTE_INST, &format!(r#"{{"source":"127.0.0.1","uuid":"{}","event":"stop"}}"#, uuid(8)));
    let notify = loop {
        match g.recv(WAIT) {
            Some(HostMsg::ActionNotify(n)) => break n,
            Some(HostMsg::Challenge(c)) => g.respond(c.heartbeat_challenge, "healthy", "reboot"),
            other => panic!("expected action_notify, got {other:?}"),
        }
    };
    assert_eq!(notify.invocation_id, g.invocation_id);
    assert_eq!(notify.event_type.as_str(), "stop");
    assert_eq!(notify.notification_type.as_str(), "revocable");
    assert_eq!(notify.timeout_ms, 2000);
    // A wrong invocation id is nacked and not forwarded.
    let mut wrong = vote_reply(&g, "accept", "");
    if let GuestMsg::ActionResponse(r) = &mut wrong {
        r.invocation_id = 5;
    }
    g.send(wrong);
    let reply = vote_reply(&g, "reject", "say \"no\" \\ politely");
    g.send(reply);
    let mut got = agent.expect(cmd::VOTE_NOTIFY, WAIT, |_| true);
    // Issue 6: plus an `event_id` for acknowledgement.
    assert!(got.json.as_object_mut().unwrap().remove("event_id").unwrap().is_u64());
    assert_eq!(
        got.json,
        serde_json::json!({"hostname":"compute-0","uuid":uuid(8),"notification_type":"revocable",
            "event-type":"stop","vote":"reject","reason":"say \"no\" \\ politely"})
    );
}

#[test]
fn vote_timeout_sends_the_implied_accept_even_while_heartbeating() {
    let (_dir, agent, server) = setup("vto");
    let mut g = FakeGuest::listen(&server.channels, &uuid(9));
    g.handshake(200);
    agent.send(server.udp, cmd::VOTE_INST, &format!(r#"{{"source":"127.0.0.1","uuid":"{}","event":"stop"}}"#, uuid(9)));
    let sent = Instant::now();
    // Keep heartbeating but never answer the vote.
    let got = loop {
        if let Some(HostMsg::Challenge(c)) = g.recv(Duration::from_millis(50)) {
            g.respond(c.heartbeat_challenge, "healthy", "reboot");
        }
        if let Some(got) = agent.recv(Duration::from_millis(1)) {
            if got.cmd == cmd::VOTE_NOTIFY {
                break got;
            }
        }
        assert!(sent.elapsed() < WAIT, "no implied vote result");
    };
    let waited = sent.elapsed();
    assert!(waited >= Duration::from_millis(1900) && waited < Duration::from_millis(3000), "{waited:?}");
    assert_eq!(got.json["vote"], "accept");
    assert_eq!(got.json["reason"], "");
}

#[test]
fn query_replies_one_envelope_per_instance_and_del_removes() {
    let (_dir, agent, server) = setup("qry");
    let mut guests: Vec<FakeGuest> = (10..13).map(|n| FakeGuest::listen(&server.channels, &uuid(n))).collect();
    for g in &mut guests {
        g.handshake(5000);
    }
    agent.enable(server.udp, &uuid(11));
    agent.send(server.udp, cmd::QRY_INST, r#"{"source":"127.0.0.1"}"#);
    let mut replies = Vec::new();
    while replies.len() < 3 {
        replies.push(agent.expect(cmd::QRY_INST, WAIT, |_| true).json);
    }
    replies.sort_by(|a, b| a["uuid"].as_str().cmp(&b["uuid"].as_str()));
    assert_eq!(replies[1]["uuid"], uuid(11).as_str());
    assert_eq!(replies[1]["reporting"], "enabled");
    assert_eq!(replies[0]["reporting"], "disabled");
    let keys: Vec<&str> = replies[0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 10);
    agent.send(
        server.udp,
        cmd::DEL_INST,
        &format!(r#"{{"source":"127.0.0.1","uuid":"{}","service":"heartbeat","state":"disabled"}}"#, uuid(10)),
    );
    agent.expect(cmd::HEARTBEAT_STOPPED, WAIT, |j| j["uuid"] == uuid(10).as_str());
    agent.send(server.udp, cmd::QRY_INST, r#"{"source":"127.0.0.1"}"#);
    let mut after = Vec::new();
    for got in agent.drain(Duration::from_millis(500)) {
        if got.cmd == cmd::QRY_INST {
            after.push(got.json["uuid"].as_str().unwrap().to_string());
        }
    }
    after.sort();
    assert_eq!(after, vec![uuid(11), uuid(12)]);
}

#[test]
fn commands_from_other_addresses_are_ignored() {
    let (_dir, agent, server) = setup("src");
    let mut g = FakeGuest::listen(&server.channels, &uuid(14));
    g.handshake(300);
    // 127.0.0.2 is not the configured agent nor 127.0.0.1.
    let stranger = FakeAgent::bind("127.0.0.2:0");
    stranger.send(server.udp, cmd::QRY_INST, r#"{"source":"127.0.0.2"}"#);
    assert!(stranger.drain(Duration::from_millis(300)).is_empty());
    assert!(agent.drain(Duration::from_millis(100)).iter().all(|g| g.cmd != cmd::QRY_INST));
    // The real agent gets an answer.
    agent.send(server.udp, cmd::QRY_INST, r#"{"source":"127.0.0.1"}"#);
    agent.expect(cmd::QRY_INST, WAIT, |_| true);
}

#[test]
fn guest_exit_stops_heartbeating() {
    let (_dir, agent, server) = setup("exit");
    let mut g = FakeGuest::listen(&server.channels, &uuid(15));
    g.handshake(5000);
    agent.expect(cmd::HEARTBEAT_RUNNING, WAIT, |_| true);
    g.send(GuestMsg::Exit(guest_heartbeat::wire::guest::Exit { log_msg: "Exiting...".into() }));
    agent.expect(cmd::HEARTBEAT_STOPPED, WAIT, |_| true);
}
