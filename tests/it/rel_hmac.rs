//! The optional shared-key HMAC on the UDP envelope (issue 6,
//! docs/RELIABILITY.md), with the real guestAgent and guestServer: with the
//! same key an instance's RUNNING and LOSS reach the VIM and the LOSS is
//! acknowledged; a peer with another key, or with none, is dropped, counted
//! and logged on both sides; a bad key file stops either daemon at start.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::agent_support::{start as start_agent, Agent, AgentCfg, FakeUdp, HOST_UUID, INST_A};
use crate::rel_support::{log_lines, metric};
use crate::support::*;

/// Writes a key file with `mode`.
fn key_file(dir: &TestDir, name: &str, key: &str, mode: u32) -> PathBuf {
    let p = dir.path(name);
    std::fs::write(&p, key).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// A guestServer on `udp_port` that talks to the real agent at `agent`,
/// with `extra` flags, its log in `<dir>/guestServer.log` and `--http`.
fn server(dir: &TestDir, agent: SocketAddr, udp_port: u16, extra: &[String]) -> (Server, PathBuf) {
    let log = dir.path("guestServer.log");
    let file = std::fs::File::create(&log).unwrap();
    // Server::launch points [agent] rx_port and --agent at a fake agent;
    // the later key and flag win and point them at the real one.
    let unused = FakeAgent::new();
    let ini = format!("[agent]\nrx_port = {}\n[client]\nhbs_pulse_period = 100\n", agent.port());
    let mut args = vec!["--agent".to_string(), agent.to_string(), "--log-level".into(), "debug".into()];
    args.extend_from_slice(extra);
    let http = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    (Server::launch(dir, &unused, &ini, &args, udp_port, Some(http), Stdio::from(file)), log)
}

/// An agent that knows compute-0 at `udp_port`, with `extra` flags; the VIM
/// audit is pushed past the test (the fake VIM lists no instances).
fn agent(tag: &str, udp_port: u16, extra: &[String]) -> (Agent, crate::agent_support::FakeVim) {
    let mut cfg = AgentCfg::new(tag).host("compute-0", HOST_UUID, udp_port).ini("[agent]\naudit_start_ms = 600000\n");
    for a in extra {
        cfg = cfg.arg(a);
    }
    let vim = cfg.vim();
    (start_agent(&cfg), vim)
}

fn agent_metric(a: &Agent, name: &str) -> u64 {
    let (_, body) = a.vim("GET", "/metrics", None);
    let key = format!("guestagent_{name} ");
    body.lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no agent metric {name}"))
}

fn flag(path: &Path) -> Vec<String> {
    vec!["--hmac-key-file".into(), path.display().to_string()]
}

#[test]
fn rel_hmac_same_key_heartbeat_events_reach_the_vim_and_are_acknowledged() {
    let dir = TestDir::new("hmac");
    let key = key_file(&dir, "hb.key", "correct horse battery staple\n", 0o600);
    let udp_port = free_udp_port();
    let (a, vim) = agent("hmac-ok", udp_port, &flag(&key));
    let (srv, log) = server(&dir, a.listen, udp_port, &flag(&key));
    // READY (sealed) reaches the agent, whose replay greeting (sealed)
    // reaches the server: the link works in both directions.
    let greeted = wait_for(WAIT, || (metric(&srv, "udp_commands_total") >= 1).then_some(()));
    assert!(greeted.is_some(), "no authenticated command reached guestServer:\n{}", a.log_text());
    a.vim_enable(INST_A);
    let enabled = wait_for(WAIT, || {
        let (_, body) = srv.get("/v1/instances");
        body.contains(INST_A).then_some(()).filter(|_| body.contains(r#""reporting":true"#))
    });
    assert!(enabled.is_some(), "the agent's ADD_INST/MOD_INST never took effect: {}", srv.get("/v1/instances").1);
    let mut guest = FakeGuest::listen(&srv.channels, INST_A);
    guest.handshake(200);
    let running = vim.next_event();
    let j: serde_json::Value = serde_json::from_str(&running.body).unwrap();
    assert_eq!(j["event-data"]["services"][0]["status"], "enabled", "{}", running.body);
    // Silent guest: LOSS (sealed, with an event id) and STOPPED to the
    // agent, the VIM alarm, and the agent's EVENT_ACK (sealed) back.
    let mut seen = Vec::new();
    while !seen.iter().any(|b: &String| b.contains(r#""state":"failed""#)) {
        assert!(seen.len() < 4, "no failure alarm at the VIM: {seen:?}");
        seen.push(vim.next_event().body);
    }
    let acked = wait_for(WAIT, || (metric(&srv, "events_acked_total") >= 1).then_some(()));
    assert!(acked.is_some(), "the LOSS was never acknowledged");
    assert_eq!(metric(&srv, "udp_auth_failed_total"), 0);
    assert_eq!(agent_metric(&a, "udp_auth_failed_total"), 0);
    assert!(a.log_text().contains("authenticated with HMAC-SHA256 (28-byte key)"), "{}", a.log_text());
    assert_eq!(log_lines(&log, &["authenticated with HMAC-SHA256 (28-byte key)"]), 1);
}

#[test]
fn rel_hmac_a_peer_with_another_key_or_none_is_dropped_counted_and_logged() {
    let dir = TestDir::new("hmacbad");
    let key_a = key_file(&dir, "a.key", "key-of-the-agent", 0o600);
    let key_b = key_file(&dir, "b.key", "key-of-the-server", 0o640);
    let udp_port = free_udp_port();
    let (a, _vim) = agent("hmac-bad", udp_port, &flag(&key_a));
    let (srv, log) = server(&dir, a.listen, udp_port, &flag(&key_b));
    // The server's READY carries a tag made with another key.
    let dropped = wait_for(WAIT, || (agent_metric(&a, "udp_auth_failed_total") >= 1).then_some(()));
    assert!(dropped.is_some(), "the agent accepted or never saw the READY:\n{}", a.log_text());
    assert!(a.log_text().contains("authentication tag does not match"), "{}", a.log_text());
    assert!(!a.log_text().contains("guestServer ready"), "READY with a wrong key was handled");
    // The agent's MOD_HOST carries a tag the server cannot verify.
    let hb = format!(r#"{{"uuid":"{HOST_UUID}","hostname":"compute-0"}}"#);
    assert_eq!(a.vim("PUT", &format!("/v1/hosts/{HOST_UUID}/enable"), Some(&hb)).0, 200);
    let dropped = wait_for(WAIT, || (metric(&srv, "udp_auth_failed_total") >= 1).then_some(()));
    assert!(dropped.is_some(), "guestServer accepted or never saw the MOD_HOST");
    // The first drop is always logged (then every power of two).
    assert!(log_lines(&log, &["dropping datagram from", "authentication tag does not match"]) >= 1);
    // A peer without a key (the C++ agent's plain 100 + strlen envelope):
    // each one is counted; sent until a count that is logged.
    let plain = FakeAgent::new();
    let before = metric(&srv, "udp_auth_failed_total");
    let logged = wait_for(WAIT, || {
        plain.enable(srv.udp, INST_A);
        (log_lines(&log, &["dropping datagram from", "missing tag"]) >= 1).then_some(())
    });
    assert!(logged.is_some(), "unauthenticated commands were not logged");
    assert!(metric(&srv, "udp_auth_failed_total") > before, "unauthenticated commands were not counted");
    assert_eq!(metric(&srv, "udp_commands_total"), 0, "a command was acted on");
    assert!(!srv.get("/v1/instances").1.contains(INST_A), "the plain MOD_INST created an instance");
    // A plain (C++-style) guestServer datagram to the keyed agent.
    let gs = FakeUdp::new();
    let before = agent_metric(&a, "udp_auth_failed_total");
    gs.send(a.listen, &[], crate::agent_support::cmd::READY, r#"{"hostname":"compute-0"}"#);
    let dropped = wait_for(WAIT, || (agent_metric(&a, "udp_auth_failed_total") > before).then_some(()));
    assert!(dropped.is_some(), "the agent accepted an unauthenticated READY");
    assert!(gs.try_recv(Duration::from_millis(300)).is_none(), "the agent answered an unauthenticated READY");
}

/// Runs `cmd`, which must exit at once (its output fits the pipes), and
/// returns the exit code and stdout + stderr.
fn run_to_exit(cmd: &mut Command) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let status = wait_for(WAIT, || child.try_wait().ok().flatten());
    if status.is_none() {
        let _ = child.kill();
    }
    let mut text = String::new();
    for mut pipe in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn Read>),
    ]
    .into_iter()
    .flatten()
    {
        let _ = pipe.read_to_string(&mut text);
    }
    let _ = child.wait();
    (status.and_then(|s| s.code()), text)
}

#[test]
fn rel_hmac_bad_key_files_stop_both_daemons_at_start_naming_the_file() {
    let dir = TestDir::new("hmackey");
    let open = key_file(&dir, "open.key", "k\n", 0o644);
    let empty = key_file(&dir, "empty.key", "\n", 0o600);
    let missing = dir.path("missing.key");
    let empty_ini = dir.path("empty.ini");
    std::fs::write(&empty_ini, "").unwrap();
    for (path, why) in [(&open, "mode 0644"), (&empty, "empty"), (&missing, "cannot read")] {
        let p = path.display().to_string();
        let (code, err) = run_to_exit(
            Command::new(env!("CARGO_BIN_EXE_guestServer"))
                .args(["-f", "--config"])
                .arg(&empty_ini)
                .args(["--hmac-key-file", &p]),
        );
        assert_eq!(code, Some(2), "guestServer with {why}: {err}");
        assert!(err.contains(&format!("HMAC key file {p}: ")) && err.contains(why), "{err}");
        let (code, err) = run_to_exit(
            Command::new(env!("CARGO_BIN_EXE_guestAgent"))
                .arg("-f")
                .arg("--config")
                .arg(&empty_ini)
                .arg("--mtc-conf")
                .arg(&empty_ini)
                .arg("--nfv-config")
                .arg(&empty_ini)
                .args(["--hmac-key-file", &p]),
        );
        assert_eq!(code, Some(2), "guestAgent with {why}: {err}");
        assert!(err.contains(&format!("HMAC key file {p}: ")) && err.contains(why), "{err}");
    }
    // --help documents the switch in both daemons.
    for bin in [env!("CARGO_BIN_EXE_guestServer"), env!("CARGO_BIN_EXE_guestAgent")] {
        let (code, out) = run_to_exit(Command::new(bin).arg("--help"));
        assert_eq!(code, Some(0), "{bin}");
        assert!(out.contains("--hmac-key-file FILE"), "{bin}: {out}");
    }
}

/// Replays (issue 6, `wire::auth::ReplayGuard`): a sealed datagram sent a
/// second time, or sealed with a clock more than 5 minutes off, is dropped,
/// counted and logged by both daemons; the first copy is acted on once.
#[test]
fn rel_hmac_replayed_and_stale_datagrams_are_dropped_counted_and_logged() {
    use guest_heartbeat::wire::auth::{seal, wall_us, HmacKey};
    use guest_heartbeat::wire::envelope::Envelope;
    let dir = TestDir::new("hmacreplay");
    let key = key_file(&dir, "k.key", "replay-key\n", 0o600);
    let k = HmacKey::new(b"replay-key".to_vec()).unwrap();
    let sealed = |c: u32, payload: &str, wall: u64| {
        // A clock in the past needs a sender of its own: one sender's
        // sequence never goes back.
        let k = if wall < wall_us() - 1_000_000 { HmacKey::new(b"replay-key".to_vec()).unwrap() } else { k.clone() };
        seal(&k, &Envelope::new(c, payload.as_bytes().to_vec()).encode_full().unwrap(), wall).unwrap()
    };
    let five_min_ago = wall_us() - 301_000_000;

    // guestAgent: a guestServer's READY, captured and sent again.
    let gs = FakeUdp::new();
    let (a, _vim) = agent("hmac-replay", gs.port(), &flag(&key));
    let ready = sealed(crate::agent_support::cmd::READY, r#"{"hostname":"compute-0"}"#, wall_us());
    gs.sock.send_to(&ready, a.listen).unwrap();
    let handled = wait_for(WAIT, || a.log_text().contains("guestServer ready").then_some(()));
    assert!(handled.is_some(), "the sealed READY was not handled:\n{}", a.log_text());
    gs.sock.send_to(&ready, a.listen).unwrap();
    let dropped = wait_for(WAIT, || (agent_metric(&a, "udp_auth_failed_total") >= 1).then_some(()));
    assert!(dropped.is_some(), "the replayed READY was not dropped:\n{}", a.log_text());
    assert!(a.log_text().contains("already received (replay)"), "{}", a.log_text());
    assert_eq!(a.log_text().matches("guestServer ready").count(), 1, "the replay was acted on");
    let stale = sealed(crate::agent_support::cmd::READY, r#"{"hostname":"compute-0"}"#, five_min_ago);
    gs.sock.send_to(&stale, a.listen).unwrap();
    let dropped = wait_for(WAIT, || (agent_metric(&a, "udp_auth_failed_total") >= 2).then_some(()));
    assert!(dropped.is_some(), "the stale READY was not dropped:\n{}", a.log_text());
    assert!(a.log_text().contains("more than 300 s away"), "{}", a.log_text());

    // guestServer: an agent's query, captured and sent again. The test's
    // socket plays the agent.
    let fake_agent = FakeUdp::new();
    let (srv, log) = server(&dir, fake_agent.sock.local_addr().unwrap(), free_udp_port(), &flag(&key));
    // Its READY says its UDP socket is up.
    fake_agent.recv_cmd(crate::agent_support::cmd::READY);
    let query = sealed(crate::agent_support::cmd::QRY_INST, r#"{"source":"127.0.0.1"}"#, wall_us());
    fake_agent.sock.send_to(&query, srv.udp).unwrap();
    let accepted = wait_for(WAIT, || (metric(&srv, "udp_commands_total") >= 1).then_some(()));
    assert!(accepted.is_some(), "the sealed query was not accepted:\n{}", std::fs::read_to_string(&log).unwrap());
    fake_agent.sock.send_to(&query, srv.udp).unwrap();
    let stale = sealed(crate::agent_support::cmd::QRY_INST, r#"{"source":"127.0.0.1"}"#, five_min_ago);
    fake_agent.sock.send_to(&stale, srv.udp).unwrap();
    let dropped = wait_for(WAIT, || (metric(&srv, "udp_auth_failed_total") >= 2).then_some(()));
    assert!(dropped.is_some(), "the replayed or stale query was not dropped");
    assert_eq!(metric(&srv, "udp_commands_total"), 1, "a replay was acted on");
    // Logged at powers of two: the 1st and the 2nd drop.
    assert_eq!(log_lines(&log, &["dropping datagram from", "already received (replay)"]), 1);
    assert_eq!(log_lines(&log, &["dropping datagram from", "more than 300 s away"]), 1);
}
