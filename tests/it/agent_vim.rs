//! The VIM event side and the process features of the real guestAgent
//! binary: delivery rules (close-without-reply, 5xx, 4xx), VIM outages with
//! every failure and vote event delivered in order afterwards (a short one
//! with fast back-off, and the real 30 s one, which `tests/soak.sh` runs
//! again at the issue's 60 s), persistence across restarts,
//! the audit's instance list, signals, and configuration errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use crate::agent_support::*;
use serde_json::json;

fn loss(uuid: &str) -> String {
    format!(r#"{{"hostname":"compute-0","uuid":"{uuid}"}}"#)
}

fn vote(uuid: &str, vote: &str, event: &str) -> String {
    format!(
        r#"{{"hostname":"compute-0","uuid":"{uuid}","notification_type":"revocable","event-type":"{event}","vote":"{vote}","reason":""}}"#
    )
}

fn running(uuid: &str, hb: &str) -> String {
    format!(
        r#"{{"hostname":"compute-0","uuid":"{uuid}","reporting":"enabled","heartbeating":"{hb}","repair-action":"stop","restart-to":"60","shutdown-to":"10","suspend-to":"10","resume-to":"10","vote-to":"10"}}"#
    )
}

/// Host reporting on and both instances enabled.
fn provision(a: &Agent, gs: &FakeUdp) {
    assert_eq!(a.vim("PUT", &format!("/v1/hosts/{HOST_UUID}/enable"), Some(&host_body())).0, 200);
    for u in [INST_A, INST_B] {
        assert_eq!(a.vim("PATCH", &format!("/v1/instances/{u}"), Some(&service_body(u, "enabled"))).0, 200);
    }
    for _ in 0..3 {
        gs.recv();
    }
}

fn metric(a: &Agent, name: &str) -> u64 {
    let (_, text) = http_request(a.http, "GET", "/metrics", None, &[]);
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

fn wait_metric(a: &Agent, name: &str, at_least: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while metric(a, name) < at_least {
        assert!(Instant::now() < deadline, "{name} never reached {at_least}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends failure and vote events for two instances while the VIM is down for
/// `outage`, then checks that all arrive, each instance's in order.
fn outage(tag: &str, outage: Duration, retry_max_ms: u64) {
    let gs = FakeUdp::new();
    let mut cfg = AgentCfg::new(tag)
        .host("compute-0", HOST_UUID, gs.port())
        .ini(&format!("[vim]\nretry_min_ms = 100\nretry_max_ms = {retry_max_ms}\ntimeout_ms = 2000\n"));
    drop(cfg.vim_listener.take());
    let a = start(&cfg);
    provision(&a, &gs);
    let down = Instant::now();
    let sent = [
        (INST_A, cmd::LOSS, loss(INST_A)),
        (INST_B, cmd::VOTE_NOTIFY, vote(INST_B, "accept", "stop")),
        (INST_A, cmd::VOTE_NOTIFY, vote(INST_A, "reject", "pause")),
        (INST_B, cmd::LOSS, loss(INST_B)),
        (INST_A, cmd::VOTE_NOTIFY, vote(INST_A, "accept", "reboot")),
        (INST_A, cmd::LOSS, loss(INST_A)),
    ];
    for (_, c, p) in &sent {
        gs.send(a.listen, &[], *c, p);
    }
    wait_metric(&a, "guestagent_vim_events_pending", 6, WAIT);
    wait_metric(&a, "guestagent_vim_events_retried_total", 2, WAIT);
    // The outage itself is the scenario, not a settling delay.
    std::thread::sleep(outage.saturating_sub(down.elapsed()));
    let retried = metric(&a, "guestagent_vim_events_retried_total");
    let vim = FakeVim::start_on(cfg.vim);
    let back = Instant::now();
    let mut got: Vec<serde_json::Value> = Vec::new();
    while got.len() < sent.len() {
        let r = vim.next_event();
        assert!(r.path.ends_with(INST_A) || r.path.ends_with(INST_B));
        got.push(json(&r.body));
    }
    let describe = |v: &serde_json::Value| match v["event-type"].as_str() {
        Some("alarm") => format!("{} failed", v["uuid"].as_str().unwrap()),
        _ => format!(
            "{} {} {}",
            v["uuid"].as_str().unwrap(),
            v["event-data"]["action"].as_str().unwrap(),
            v["event-data"]["guest-response"].as_str().unwrap()
        ),
    };
    let per = |u: &str| got.iter().filter(|v| v["uuid"] == u).map(describe).collect::<Vec<_>>();
    assert_eq!(
        per(INST_A),
        vec![
            format!("{INST_A} failed"),
            format!("{INST_A} pause reject"),
            format!("{INST_A} reboot allow"),
            format!("{INST_A} failed")
        ]
    );
    assert_eq!(per(INST_B), vec![format!("{INST_B} stop allow"), format!("{INST_B} failed")]);
    let all_in = back.elapsed();
    wait_metric(&a, "guestagent_vim_events_sent_total", 6, WAIT);
    assert_eq!(metric(&a, "guestagent_vim_events_pending"), 0);
    eprintln!(
        "VIM outage {tag}: down {:?}, {} events queued, {retried} failed attempts during it, \
         all delivered in order {all_in:?} after the VIM came back",
        back.duration_since(down),
        sent.len()
    );
    // Delivered by a close without reply: never sent twice.
    assert!(vim.rx.recv_timeout(Duration::from_millis(300)).map_or(true, |r| r.method == "GET"));
}

#[test]
fn vim_down_briefly_then_back_receives_everything_in_order() {
    outage("outage-short", Duration::from_secs(3), 500);
}

/// 30 s in CI. The issue's own figure is 60 s (issue 6, "Faults"):
/// `tests/soak.sh` runs this same test with `GH_VIM_OUTAGE_SECS=60`.
#[test]
fn vim_down_for_30_s_then_back_receives_everything_in_order() {
    let secs = match std::env::var("GH_VIM_OUTAGE_SECS") {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("GH_VIM_OUTAGE_SECS={v:?} is not a number of seconds")),
        Err(_) => 30,
    };
    outage(&format!("outage-{secs}s"), Duration::from_secs(secs), 2000);
}

#[test]
fn delivery_rules_close_5xx_and_4xx() {
    let gs = FakeUdp::new();
    let mut cfg = AgentCfg::new("delivery")
        .host("compute-0", HOST_UUID, gs.port())
        .ini("[vim]\nretry_min_ms = 50\nretry_max_ms = 100\n");
    let vim = cfg.vim();
    let a = start(&cfg);
    provision(&a, &gs);
    *vim.mode.lock().unwrap() = VimMode::Status(503, String::new());
    gs.send(a.listen, &[], cmd::LOSS, &loss(INST_A));
    let first = vim.next_event();
    assert_eq!(vim.next_event().body, first.body, "a 5xx is retried");
    *vim.mode.lock().unwrap() = VimMode::Close;
    wait_metric(&a, "guestagent_vim_events_sent_total", 1, WAIT);
    *vim.mode.lock().unwrap() = VimMode::Status(404, String::new());
    gs.send(a.listen, &[], cmd::RUNNING, &running(INST_B, "enabled"));
    let mut rejected = vim.next_event();
    while rejected.body == first.body {
        rejected = vim.next_event();
    }
    assert_eq!(json(&rejected.body)["event-type"], "service");
    *vim.mode.lock().unwrap() = VimMode::Status(
        200,
        r#"{"uuid":"x","hostname":"compute-0","services":[{"service":"heartbeat","admin_state":"unlocked"}]}"#.into(),
    );
    gs.send(a.listen, &[], cmd::ILLHEALTH, &running(INST_B, "enabled"));
    let next = vim.next_event();
    assert_eq!(json(&next.body)["event-data"]["services"][0]["state"], "unhealthy", "a 4xx is dropped, not retried");
    wait_metric(&a, "guestagent_vim_events_rejected_total", 1, WAIT);
    wait_metric(&a, "guestagent_vim_events_sent_total", 2, WAIT);
}

#[test]
fn state_and_outbox_survive_a_restart() {
    let gs = FakeUdp::new();
    let mut cfg = AgentCfg::new("restart").host("compute-0", HOST_UUID, gs.port());
    drop(cfg.vim_listener.take());
    let mut a = start(&cfg);
    provision(&a, &gs);
    gs.send(a.listen, &[], cmd::LOSS, &loss(INST_B));
    wait_metric(&a, "guestagent_vim_events_pending", 1, WAIT);
    let outbox = std::fs::read_to_string(cfg.dir.join("state/outbox.json")).unwrap();
    assert!(outbox.contains(INST_B), "{outbox}");
    // SIGUSR1 rewrites the health file within a second.
    let info = cfg.dir.join("guestAgent.info");
    std::fs::remove_file(&info).unwrap();
    let asked = Instant::now();
    a.signal("USR1");
    wait_for_file(&info);
    assert!(asked.elapsed() < Duration::from_secs(1));
    assert!(std::fs::read_to_string(&info).unwrap().contains("healthy"));
    assert!(a.stop().success());
    assert!(!cfg.dir.join("guestAgent.pid").exists());
    // Second run: no --host flag; everything comes from the state dir.
    cfg.extra.clear();
    let vim = FakeVim::start_on(cfg.vim);
    let a = start(&cfg);
    let ev = json(&vim.next_event().body);
    assert_eq!(
        (ev["uuid"].as_str(), ev["event-data"]["services"][0]["state"].as_str()),
        (Some(INST_B), Some("failed"))
    );
    let (c, b) = a.vim("GET", &format!("/v1/hosts/{HOST_UUID}"), None);
    assert_eq!((c, json(&b)["state"].clone()), (200, json!("enabled")));
    let (c, b) = a.vim("GET", &format!("/v1/instances/{INST_A}"), None);
    assert_eq!((c, json(&b)["services"][0]["state"].clone()), (200, json!("enabled")));
}

#[test]
fn audit_learns_instances_from_the_vim() {
    let gs = FakeUdp::new();
    let mut cfg = AgentCfg::new("list").host("compute-0", HOST_UUID, gs.port()).ini("[agent]\naudit_start_ms = 100\n");
    let vim = cfg.vim();
    *vim.instances.lock().unwrap() = format!(
        r#"{{"instances":[{{"uuid":"{INST_A}","hostname":"compute-0","services":[{{"service":"heartbeat","state":"enabled"}}]}},{{"uuid":"{INST_B}","hostname":"compute-0","services":[{{"service":"heartbeat","state":"disabled"}}]}}]}}"#
    );
    let a = start(&cfg);
    let m = gs.recv_cmd(cmd::ADD_INST);
    assert!(m.payload.contains(INST_A) && m.payload.ends_with(r#""state":"enabled"}"#), "{m:?}");
    let m = gs.recv_cmd(cmd::ADD_INST);
    assert!(m.payload.contains(INST_B) && m.payload.ends_with(r#""state":"disabled"}"#), "{m:?}");
    let (_, b) = a.vim("GET", &format!("/v1/instances/{INST_A}"), None);
    assert_eq!(json(&b)["services"][0]["state"], "enabled");
}

#[test]
fn help_bad_config_duplicate_and_reload() {
    let bin = env!("CARGO_BIN_EXE_guestAgent");
    let out = Command::new(bin).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && help.contains("--vim-url") && help.contains("--state-dir"), "{help}");
    let dir = temp_dir("badcfg");
    let ini = dir.join("bad.ini");
    std::fs::write(&ini, "[agent]\nrx_port = 2401\nvim_cmd_port = lots\n").unwrap();
    let out = Command::new(bin).args(["-f", "--config"]).arg(&ini).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.ini:3: [agent] vim_cmd_port"), "{err}");
    let out = Command::new(bin).arg("--frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A second agent with the same pid file is refused (exit 0, as the original).
    let gs = FakeUdp::new();
    let cfg = AgentCfg::new("dup").host("compute-0", HOST_UUID, gs.port());
    let a = start(&cfg);
    let out = Command::new(bin)
        .args(["-f", "--config"])
        .arg(cfg.dir.join("guestAgent.ini"))
        .arg("--pidfile")
        .arg(cfg.dir.join("guestAgent.pid"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to start duplicate"));
    // SIGHUP re-reads the config: a new static host appears.
    std::fs::write(
        cfg.dir.join("guestAgent.ini"),
        format!("[hosts]\ncompute-7 = 77777777-1173-4a3b-88fa-c4e5905500ca,127.0.0.1:{}\n", gs.port()),
    )
    .unwrap();
    a.signal("HUP");
    let deadline = Instant::now() + WAIT;
    while a.vim("POST", "/v1/hosts/77777777-1173-4a3b-88fa-c4e5905500ca", None).0 != 200 {
        assert!(Instant::now() < deadline, "reload never added compute-7");
        std::thread::sleep(Duration::from_millis(20));
    }
}
