//! guestServer as a process: command line and config errors, pid file,
//! signals, the status API, socket delete/re-create, and restart with guests
//! already present (state file re-adoption).

use std::process::Command;
use std::time::Duration;

use guest_heartbeat::wire::envelope::cmd;
use guest_heartbeat::wire::guest::HostMsg;

use crate::support::*;

fn run_bin(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_guestServer")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_tells_the_truth_and_bad_flags_exit_2() {
    let (code, out, _) = run_bin(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--foreground",
        "--config",
        "--channel-dir",
        "--pidfile",
        "--state-dir",
        "--hostname",
        "--listen",
        "--agent",
        "--http",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}");
    }
    let (code, _, err) = run_bin(&["--frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("--frobnicate: unknown option"), "{err}");
    let (code, _, err) = run_bin(&["--listen", "nowhere", "-f"]);
    assert_eq!(code, 2);
    assert!(err.contains("--listen"), "{err}");
}

#[test]
fn bad_config_names_file_line_and_key_and_exits_2() {
    let dir = TestDir::new("badcfg");
    let ini = dir.path("bad.ini");
    std::fs::write(&ini, "[agent]\nrx_port = 2401\n[client]\nhbs_failure_threshold = lots\n").unwrap();
    let (code, _, err) = run_bin(&["-f", "--config", ini.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("bad.ini:4: [client] hbs_failure_threshold = \"lots\": not a whole number"), "{err}");
    let (code, _, err) = run_bin(&["-f", "--config", dir.path("missing.ini").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("missing.ini: cannot read"), "{err}");
}

#[test]
fn pidfile_refuses_a_duplicate_and_sigterm_exits_cleanly() {
    let dir = TestDir::new("pid");
    let agent = FakeAgent::new();
    let mut server = Server::start(&dir, &agent, ServerOpts::default());
    agent.expect(cmd::MONITOR_READY, WAIT, |_| true);
    let pid = std::fs::read_to_string(&server.pidfile).unwrap();
    assert_eq!(pid.trim(), server.child.id().to_string());
    // A second daemon with the same pid file refuses to start.
    let mut second = Server::start_on(&dir, &agent, ServerOpts::default(), free_udp_port());
    assert_eq!(second.wait_exit(WAIT), Some(1));
    // SIGUSR1 rewrites the health file.
    std::fs::remove_file(&server.health).unwrap();
    server.signal(libc::SIGUSR1);
    let text = wait_for(WAIT, || std::fs::read_to_string(&server.health).ok()).expect("health file");
    assert!(text.contains("I'm healthy"), "{text}");
    // SIGHUP reloads without stopping.
    server.signal(libc::SIGHUP);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(WAIT), Some(0));
    assert!(!server.pidfile.exists(), "pid file removed on exit");
}

#[test]
fn status_api_lists_instances_and_serves_metrics() {
    let dir = TestDir::new("http");
    let agent = FakeAgent::new();
    let server = Server::start(&dir, &agent, ServerOpts { http: true, ..Default::default() });
    let mut g = FakeGuest::listen(&server.channels, &uuid(20));
    g.handshake(5000);
    agent.expect(cmd::HEARTBEAT_RUNNING, WAIT, |_| true);
    let (code, body) = server.get("/v1/instances");
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["hostname"], "compute-0");
    assert_eq!(doc["instances"][0]["uuid"], uuid(20).as_str());
    assert_eq!(doc["instances"][0]["heartbeating"], true);
    assert_eq!(doc["instances"][0]["name"], "vm-0000");
    let (code, body) = server.get(&format!("/v1/instances/{}", uuid(20)));
    assert_eq!(code, 200, "{body}");
    let (code, body) = server.get("/v1/instances/nope");
    assert_eq!(code, 404);
    assert!(body.contains("\"status\":\"fail\""), "{body}");
    let (code, body) = server.get("/metrics");
    assert_eq!(code, 200);
    assert!(body.contains("guestserver_instances 1\n"), "{body}");
    assert!(body.contains("guestserver_instances_heartbeating 1\n"), "{body}");
}

#[test]
fn socket_delete_stops_and_recreate_reconnects() {
    let dir = TestDir::new("del");
    let agent = FakeAgent::new();
    let server = Server::start(&dir, &agent, ServerOpts::default());
    let mut g = FakeGuest::listen(&server.channels, &uuid(21));
    g.handshake(5000);
    agent.expect(cmd::HEARTBEAT_RUNNING, WAIT, |_| true);
    g.remove();
    agent.expect(cmd::HEARTBEAT_STOPPED, WAIT, |j| j["uuid"] == uuid(21).as_str());
    let mut g = FakeGuest::listen(&server.channels, &uuid(21));
    g.handshake(5000);
    agent.expect(cmd::HEARTBEAT_RUNNING, WAIT, |_| true);
}

#[test]
fn guest_hangup_is_a_disconnect_then_the_server_reconnects() {
    let dir = TestDir::new("eof");
    let agent = FakeAgent::new();
    let server = Server::start(&dir, &agent, ServerOpts::default());
    let mut g = FakeGuest::listen(&server.channels, &uuid(22));
    g.handshake(5000);
    agent.expect(cmd::HEARTBEAT_RUNNING, WAIT, |_| true);
    g.disconnect();
    agent.expect(cmd::HEARTBEAT_STOPPED, WAIT, |_| true);
    // Back-off starts at 1 s.
    g.handshake(5000);
    agent.expect(cmd::HEARTBEAT_RUNNING, WAIT, |_| true);
}

/// Answers every challenge the given guests have received.
fn pump(guests: &mut [FakeGuest]) {
    for g in guests {
        while let Some(m) = g.recv(Duration::from_millis(2)) {
            if let HostMsg::Challenge(c) = m {
                g.respond(c.heartbeat_challenge, "healthy", "reboot");
            }
        }
    }
}

#[test]
fn restart_readopts_sockets_keeps_gates_and_reports_only_the_silent_guest() {
    let dir = TestDir::new("rst");
    let agent = FakeAgent::new();
    let port = free_udp_port();
    let mut server = Server::start_on(&dir, &agent, ServerOpts::default(), port);
    agent.expect(cmd::MONITOR_READY, WAIT, |_| true);
    let mut guests: Vec<FakeGuest> = (30..33).map(|n| FakeGuest::listen(&server.channels, &uuid(n))).collect();
    for g in &mut guests {
        agent.enable(server.udp, &g.uuid);
        g.handshake(200);
    }
    // Keep answering until the state file records gates and heartbeating.
    let state = server.state.join("guestServer.state.json");
    wait_for(WAIT, || {
        pump(&mut guests);
        let text = std::fs::read_to_string(&state).ok()?;
        (text.matches("\"reporting\": true").count() == 3 && text.matches("\"heartbeating\": true").count() == 3)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("state file lacks the gates: {:?}", std::fs::read_to_string(&state)));
    server.kill9();
    agent.drain(Duration::from_millis(50));
    let server = Server::start_on(&dir, &agent, ServerOpts::default(), port);
    agent.expect(cmd::MONITOR_READY, WAIT, |_| true);
    // Reporting is right before the agent says anything.
    agent.send(server.udp, cmd::QRY_INST, r#"{"source":"127.0.0.1"}"#);
    for _ in 0..3 {
        let q = agent.expect(cmd::QRY_INST, WAIT, |_| true);
        assert_eq!(q.json["reporting"], "enabled", "{q:?}");
        assert_eq!(q.json["heartbeating"], "enabled", "{q:?}");
    }
    // Every socket is re-adopted. Two guests re-init on the new connection
    // (as the real guest does on channel-up) and keep answering; one is silent.
    for g in guests.iter_mut() {
        assert!(g.accept(WAIT), "not re-adopted: {}", g.uuid);
    }
    for g in guests.iter_mut().take(2) {
        g.invocation_id += 1;
        g.init(200);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut losses = Vec::new();
    while std::time::Instant::now() < deadline && losses.is_empty() {
        pump(&mut guests[..2]);
        while let Some(got) = agent.recv(Duration::from_millis(5)) {
            if got.cmd == cmd::HEARTBEAT_LOSS {
                losses.push(got.json["uuid"].as_str().unwrap().to_string());
            }
            assert_ne!(got.cmd, cmd::HEARTBEAT_RUNNING, "no RUNNING flap for re-adopted guests: {got:?}");
        }
    }
    assert_eq!(losses, vec![uuid(32)], "only the silent guest is reported");
}
