//! guestAgent faults (issue 6): kill -9 while the VIM is down and events
//! are queued, then a restart with the same state directory (what a
//! controller failover does; on one test host the "other controller" is the
//! same address). No instance forgotten; every failure and vote event
//! delivered, in order per instance, at least once; acknowledged events are
//! exactly those already persisted.

use std::time::Duration;

use crate::agent_support::*;
use guest_heartbeat::wire::envelope::cmd::EVENT_ACK;

fn with_id(json: &str, id: u64) -> String {
    format!("{},\"event_id\":{id}}}", &json[..json.len() - 1])
}

#[test]
fn rel_agent_kill9_with_queued_events_then_restart_from_the_state_dir() {
    let gs = FakeUdp::new();
    let mut cfg = AgentCfg::new("relk9")
        .host("compute-0", HOST_UUID, gs.port())
        .ini("[vim]\nretry_min_ms = 100\nretry_max_ms = 500\ntimeout_ms = 2000\n");
    drop(cfg.vim_listener.take()); // the VIM is down
    let mut a = start(&cfg);
    let hb = format!(r#"{{"uuid":"{HOST_UUID}","hostname":"compute-0"}}"#);
    assert_eq!(a.vim("PUT", &format!("/v1/hosts/{HOST_UUID}/enable"), Some(&hb)).0, 200);
    for u in [INST_A, INST_B] {
        let set = format!(
            r#"{{"uuid":"{u}","hostname":"compute-0","services":[{{"service":"heartbeat","state":"enabled"}}]}}"#
        );
        assert_eq!(a.vim("PATCH", &format!("/v1/instances/{u}"), Some(&set)).0, 200);
    }
    let loss = |u: &str| format!(r#"{{"hostname":"compute-0","uuid":"{u}"}}"#);
    let vote = |u: &str, v: &str, e: &str| {
        format!(
            r#"{{"hostname":"compute-0","uuid":"{u}","notification_type":"revocable","event-type":"{e}","vote":"{v}","reason":""}}"#
        )
    };
    let sent = [
        (cmd::LOSS, loss(INST_A)),
        (cmd::VOTE_NOTIFY, vote(INST_B, "accept", "stop")),
        (cmd::VOTE_NOTIFY, vote(INST_A, "reject", "pause")),
        (cmd::LOSS, loss(INST_B)),
        (cmd::LOSS, loss(INST_A)),
    ];
    for (i, (c, p)) in sent.iter().enumerate() {
        gs.send(a.listen, &[], *c, &with_id(p, 100 + i as u64));
        // The acknowledgement comes after the event is in the outbox file.
        let ack = gs.recv_cmd(EVENT_ACK);
        assert_eq!(ack.payload, format!(r#"{{"source":"127.0.0.1","event_id":{}}}"#, 100 + i));
        let outbox = std::fs::read_to_string(cfg.dir.join("state/outbox.json")).unwrap();
        let seen = [INST_A, INST_B].iter().map(|u| outbox.matches(u).count()).sum::<usize>();
        assert!(seen > i, "event {i} acknowledged before it was persisted: {outbox}");
    }
    // A retransmission of an event already handled is acknowledged, not queued again.
    gs.send(a.listen, &[], cmd::LOSS, &with_id(&loss(INST_B), 103));
    assert!(gs.recv_cmd(EVENT_ACK).payload.ends_with(":103}"));
    // kill -9: no chance to flush anything.
    let mut child = a.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    // "The other controller": same state dir, no --host (all from the files).
    cfg.extra.clear();
    let vim = FakeVim::start_on(cfg.vim);
    let a = start(&cfg);
    let mut got: Vec<serde_json::Value> = Vec::new();
    while got.len() < sent.len() {
        let r = vim.next_event();
        got.push(json(&r.body));
    }
    let describe = |v: &serde_json::Value| match v["event-type"].as_str() {
        Some("alarm") => "failed".to_string(),
        _ => format!(
            "{} {}",
            v["event-data"]["action"].as_str().unwrap_or("?"),
            v["event-data"]["guest-response"].as_str().unwrap_or("?")
        ),
    };
    let per = |u: &str| got.iter().filter(|v| v["uuid"] == u).map(describe).collect::<Vec<_>>();
    assert_eq!(per(INST_A), vec!["failed", "pause reject", "failed"]);
    assert_eq!(per(INST_B), vec!["stop allow", "failed"]);
    // Nothing else comes (a retry would be a duplicate at the VIM).
    let extra: Vec<_> = std::iter::from_fn(|| vim.rx.recv_timeout(Duration::from_millis(1500)).ok())
        .filter(|r| r.method == "PATCH")
        .collect();
    assert!(extra.is_empty(), "duplicates: {extra:?}");
    for u in [INST_A, INST_B] {
        let (c, b) = a.vim("GET", &format!("/v1/instances/{u}"), None);
        assert_eq!((c, json(&b)["services"][0]["state"].clone()), (200, serde_json::json!("enabled")), "{u} forgotten");
    }
    eprintln!("agent kill -9: {} queued events delivered after restart, in order, no duplicates", got.len());
}
