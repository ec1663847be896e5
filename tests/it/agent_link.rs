//! The guestServer link and the mtcAgent interface of the real guestAgent
//! binary: every command of spec §7.3 byte for byte at a fake guestServer,
//! every guestServer event of §7.4 and its VIM event, READY replay, the query
//! audit and its replies, and the host inventory of §8.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use crate::agent_support::*;
use serde_json::json;

const SIG_GUEST: &[u8] = b"guest msg header:\0";
const SIG_MTC: &[u8] = b"cgts mtc cmd req:\0";

fn info(uuid: &str, reporting: &str, heartbeating: &str) -> String {
    format!(
        r#"{{"hostname":"compute-0","uuid":"{uuid}","reporting":"{reporting}","heartbeating":"{heartbeating}","repair-action":"reboot","restart-to":"120","shutdown-to":"11","suspend-to":"12","resume-to":"13","vote-to":"14"}}"#
    )
}

/// An agent with compute-0 at `gs`, host reporting on and INST_A enabled.
fn setup(tag: &str, gs: &FakeUdp, cfg: AgentCfg) -> (Agent, FakeVim) {
    let mut cfg = cfg.host("compute-0", HOST_UUID, gs.port());
    let vim = cfg.vim();
    let a = start(&cfg);
    let _ = tag;
    assert_eq!(a.vim("PUT", &format!("/v1/hosts/{HOST_UUID}/enable"), Some(&host_body())).0, 200);
    assert_eq!(gs.recv().cmd, cmd::MOD_HOST);
    assert_eq!(a.vim("POST", &format!("/v1/instances/{INST_A}"), Some(&create_body(INST_A))).0, 200);
    assert_eq!(gs.recv().cmd, cmd::ADD_INST);
    assert_eq!(a.vim("PATCH", &format!("/v1/instances/{INST_A}"), Some(&service_body(INST_A, "enabled"))).0, 200);
    assert_eq!(gs.recv().cmd, cmd::MOD_INST);
    (a, vim)
}

fn event_json(r: &VimReq) -> serde_json::Value {
    assert_eq!(r.method, "PATCH");
    assert_eq!(r.header("User-Agent"), Some("guest-agent/1.0"));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    json(&r.body)
}

#[test]
fn audit_query_then_vote_and_notify_commands_byte_for_byte() {
    let gs = FakeUdp::new();
    let started = Instant::now();
    let (a, vim) = setup("audit", &gs, AgentCfg::new("audit").ini("[agent]\naudit_interval_ms = 300\n"));
    // First audit 2 s after start: GET host state with body, GET instance list, QRY_INST.
    let q = gs.recv_cmd(cmd::QRY_INST);
    assert!(started.elapsed() >= Duration::from_millis(1900), "{:?}", started.elapsed());
    assert_eq!(q.payload, r#"{"source":"127.0.0.1"}"#);
    assert_eq!((q.len, &q.hdr[..18]), (100 + 22, SIG_GUEST));
    // Sent right after the first audit's host-state reply;
    // decisions §6: the learnt host state is pushed down.
    assert!(gs.recv_cmd(cmd::MOD_HOST).payload.ends_with(r#""heartbeat":"enabled"}"#));
    let first = Instant::now();
    gs.recv_cmd(cmd::QRY_INST);
    assert!(first.elapsed() < Duration::from_secs(2));
    let hs = vim.next();
    assert_eq!((hs.method.as_str(), hs.path.as_str()), ("GET", &*format!("/nfvi-plugins/v1/hosts/{HOST_UUID}")));
    assert_eq!(json(&hs.body), json!({"hostname": "compute-0", "uuid": HOST_UUID}));
    let il = vim.next();
    assert_eq!(
        (il.method.as_str(), il.path.as_str()),
        ("GET", &*format!("/nfvi-plugins/v1/instances/?host_uuid={HOST_UUID}"))
    );
    // Not heartbeating: vote answers 0 and the guest is not contacted.
    let vote = |suffix: &str, action: &str| {
        let body = format!(r#"{{"uuid":"{INST_A}","hostname":"compute-0","action":"{action}"}}"#);
        let (c, b) = a.vim("POST", &format!("/v1/instances/{INST_A}/{suffix}"), Some(&body));
        assert_eq!(c, 200);
        json(&b)["timeout"].as_str().unwrap().to_string()
    };
    assert_eq!(vote("vote", "stop"), "0");
    gs.send(a.listen, &[], cmd::RUNNING, &info(INST_A, "enabled", "enabled"));
    let ev = event_json(&vim.next_event());
    assert_eq!(ev["event-data"]["services"][0]["status"], "enabled");
    assert_eq!(vote("vote", "stop"), "14");
    let m = gs.recv_cmd(cmd::VOTE_INST);
    assert_eq!(m.payload, format!(r#"{{"source":"127.0.0.1","uuid":"{INST_A}","event":"stop"}}"#));
    assert_eq!(m.len, 100 + m.payload.len());
    for (action, timeout) in [
        ("stop", "11"),
        ("reboot", "11"),
        ("pause", "12"),
        ("live_migrate_begin", "12"),
        ("resume", "13"),
        ("cold_migrate_end", "13"),
        ("resize_begin", "0"),
    ] {
        assert_eq!(vote("notify", action), timeout, "{action}");
        let m = gs.recv_cmd(cmd::NOTIFY_INST);
        assert_eq!(m.payload, format!(r#"{{"source":"127.0.0.1","uuid":"{INST_A}","event":"{action}"}}"#));
    }
    let (c, b) = a.vim("GET", &format!("/v1/instances/{INST_A}"), None);
    assert_eq!(c, 200);
    assert_eq!(
        json(&b)["services"][0],
        json!({"service":"heartbeat","state":"enabled","restart-timeout":"120","status":"enabled"})
    );
}

#[test]
fn every_server_event_reaches_the_vim_as_specified() {
    let gs = FakeUdp::new();
    let (a, vim) = setup("events", &gs, AgentCfg::new("events"));
    let path = format!("/nfvi-plugins/v1/instances/{INST_A}");
    gs.send(a.listen, &[], cmd::RUNNING, &info(INST_A, "enabled", "enabled"));
    let r = vim.next_event();
    assert_eq!(r.path, path);
    assert_eq!(
        event_json(&r),
        json!({"uuid": INST_A, "hostname": "compute-0", "event-type": "service",
        "event-data": {"services": [{"service": "heartbeat", "state": "enabled", "status": "enabled", "restart-timeout": "120"}]}})
    );
    assert_eq!(
        r.body,
        format!(
            r#"{{"uuid":"{INST_A}","hostname":"compute-0","event-type":"service","event-data":{{"services":[{{"service":"heartbeat","state":"enabled","status":"enabled","restart-timeout":"120"}}]}}}}"#
        )
    );
    gs.send(a.listen, &[], cmd::ILLHEALTH, &info(INST_A, "enabled", "enabled"));
    assert_eq!(
        event_json(&vim.next_event()),
        json!({"uuid": INST_A, "hostname": "compute-0", "event-type": "alarm",
        "event-data": {"services": [{"service": "heartbeat", "state": "unhealthy", "repair-action": "reboot"}]}})
    );
    let loss = format!(r#"{{"hostname":"compute-0","uuid":"{INST_A}"}}"#);
    gs.send(a.listen, &[], cmd::LOSS, &loss);
    assert_eq!(
        event_json(&vim.next_event()),
        json!({"uuid": INST_A, "hostname": "compute-0", "event-type": "alarm",
        "event-data": {"services": [{"service": "heartbeat", "state": "failed", "repair-action": "reboot"}]}})
    );
    gs.send(a.listen, &[], cmd::STOPPED, &info(INST_A, "enabled", "disabled"));
    assert_eq!(
        event_json(&vim.next_event())["event-data"]["services"][0],
        json!({"service": "heartbeat", "state": "enabled", "status": "disabled", "restart-timeout": "0"})
    );
    let vn = |ntype: &str, vote: &str| {
        format!(
            r#"{{"hostname":"compute-0","uuid":"{INST_A}","notification_type":"{ntype}","event-type":"stop","vote":"{vote}","reason":"say \"why\""}}"#
        )
    };
    // accept with an unknown notification type is not sent; the next one is.
    for (ntype, vote, response) in [
        ("other", "accept", None),
        ("revocable", "accept", Some("allow")),
        ("irrevocable", "complete", Some("proceed")),
        ("revocable", "reject", Some("reject")),
        ("revocable", "timeout", Some("")),
    ] {
        gs.send(a.listen, &[], cmd::VOTE_NOTIFY, &vn(ntype, vote));
        if let Some(resp) = response {
            assert_eq!(
                event_json(&vim.next_event()),
                json!({"uuid": INST_A, "event-type": "action",
                "event-data": {"action": "stop", "guest-response": resp, "reason": "say \"why\""}})
            );
        }
    }
    // Gates: a loss with instance reporting off is not forwarded.
    let set = format!(
        r#"{{"uuid":"{INST_A}","hostname":"compute-0","services":[{{"service":"heartbeat","state":"disabled"}}]}}"#
    );
    assert_eq!(a.vim("PATCH", &format!("/v1/instances/{INST_A}"), Some(&set)).0, 200);
    gs.send(a.listen, &[], cmd::LOSS, &loss);
    gs.send(a.listen, &[], cmd::RUNNING, &info(INST_A, "disabled", "enabled"));
    assert_eq!(event_json(&vim.next_event())["event-type"], "service");
}

#[test]
fn ready_replay_and_query_replies() {
    let gs = FakeUdp::new();
    let (a, vim) = setup("replay", &gs, AgentCfg::new("replay"));
    let create = format!(r#"{{"uuid":"{INST_B}","hostname":"compute-0","services":["heartbeat"]}}"#);
    assert_eq!(a.vim("POST", &format!("/v1/instances/{INST_B}"), Some(&create)).0, 200);
    assert_eq!(gs.recv().cmd, cmd::ADD_INST);
    gs.send(a.listen, &[], cmd::READY, r#"{"hostname":"compute-0"}"#);
    let (m1, m2) = (gs.recv(), gs.recv());
    assert_eq!((m1.cmd, m2.cmd), (cmd::MOD_INST, cmd::MOD_INST));
    assert!(m1.payload.contains(INST_A) && m1.payload.ends_with(r#""state":"enabled"}"#), "{m1:?}");
    assert!(m2.payload.contains(INST_B) && m2.payload.ends_with(r#""state":"disabled"}"#), "{m2:?}");
    // Issue 6: then the greeting that tells our guestServer we acknowledge
    // events (a C++ guestServer logs the unknown command once and ignores it).
    let hello = gs.recv();
    assert_eq!(hello.cmd, guest_heartbeat::wire::envelope::cmd::EVENT_ACK);
    assert_eq!(hello.payload, r#"{"source":"127.0.0.1","event_id":0}"#);
    // Unknown uuid in a query reply: DEL_INST to that host.
    let stale = "11111111-2222-3333-4444-555555555555";
    gs.send(a.listen, &[], cmd::QRY_INST, &info(stale, "enabled", "enabled"));
    let m = gs.recv();
    assert_eq!(m.cmd, cmd::DEL_INST);
    assert_eq!(
        m.payload,
        format!(r#"{{"source":"127.0.0.1","uuid":"{stale}","service":"heartbeat","state":"disabled"}}"#)
    );
    // Reporting mismatch: the agent restores its own value; heartbeating change: service event.
    gs.send(a.listen, &[], cmd::QRY_INST, &info(INST_B, "enabled", "enabled"));
    let m = gs.recv();
    assert_eq!(m.cmd, cmd::MOD_INST);
    assert!(m.payload.contains(INST_B) && m.payload.ends_with(r#""state":"disabled"}"#));
    let ev = event_json(&vim.next_event());
    assert_eq!(
        (ev["uuid"].as_str(), ev["event-data"]["services"][0]["state"].as_str()),
        (Some(INST_B), Some("disabled"))
    );
    assert_eq!(ev["event-data"]["services"][0]["status"], "enabled");
    let (_, b) = a.vim("GET", &format!("/v1/instances/{INST_B}"), None);
    assert_eq!(json(&b)["services"][0]["state"], "disabled");
}

#[test]
fn mtc_agent_inventory_and_self_registration() {
    let gs = FakeUdp::new();
    let mtc = FakeUdp::new();
    let cfg = AgentCfg::new("mtc")
        .ini(&format!("[client]\nrx_port = {}\n", gs.port()))
        .arg("--mtc-addr")
        .arg(&format!("127.0.0.1:{}", mtc.port()))
        .arg("--self-register");
    let a = start(&cfg);
    assert_eq!(mtc.recv().cmd, cmd::READY);
    let add = format!(r#"{{"hostname":"compute-3","uuid":"{HOST_UUID}","ip":"127.0.0.1","personality":"worker"}}"#);
    // Without the mtcAgent signature the command is ignored.
    gs.send(a.mtc_listen, &[], cmd::ADD_HOST, &add);
    gs.send(a.mtc_listen, SIG_MTC, cmd::ADD_HOST, &add);
    let deadline = Instant::now() + WAIT;
    while a.vim("POST", &format!("/v1/hosts/{HOST_UUID}"), None).0 != 200 {
        assert!(Instant::now() < deadline, "ADD_HOST never applied");
    }
    let create = format!(r#"{{"uuid":"{INST_A}","hostname":"compute-3","services":["heartbeat"]}}"#);
    assert_eq!(a.vim("POST", &format!("/v1/instances/{INST_A}"), Some(&create)).0, 200);
    assert!(gs.recv().payload.contains(INST_A));
    let del = format!(r#"{{"hostname":"compute-3","uuid":"{HOST_UUID}"}}"#);
    gs.send(a.mtc_listen, SIG_MTC, cmd::DEL_HOST, &del);
    let m = gs.recv();
    assert_eq!(m.cmd, cmd::DEL_INST);
    assert!(m.payload.contains(INST_A));
    assert_eq!(a.vim("GET", &format!("/v1/instances/{INST_A}"), None).0, 404);
    // Self-registration from a guestServer READY.
    gs.send(a.listen, &[], cmd::READY, r#"{"hostname":"compute-5"}"#);
    let deadline = Instant::now() + WAIT;
    while a.vim("GET", "/v1/hosts/compute-5", None).0 != 200 {
        assert!(Instant::now() < deadline, "self-registration never applied");
    }
}
