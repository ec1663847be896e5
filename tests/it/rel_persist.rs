//! Failure reports survive kill -9 of either daemon and a controller
//! failover (issue 6, docs/RELIABILITY.md "Faults"), with the real
//! guestServer and the real guestAgent:
//!
//! * guestServer killed while a LOSS is unacknowledged (the agent is down):
//!   the restarted server resends it from its state file;
//! * guestAgent killed after it acknowledged a LOSS, while the VIM is down:
//!   the restarted agent delivers it from its outbox file;
//! * failover: the agent is killed and a new one starts at another address
//!   (127.0.0.2; Linux loopback answers on all of 127/8) on the same state
//!   dir: it knows the instance, and the next failure reaches the VIM
//!   through it.
//!
//! At-least-once is asserted; duplicates at the VIM are counted and printed.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::agent_support::{start as start_agent, Agent, AgentCfg, FakeVim, HOST_UUID};
use crate::support::*;

const SERVER_INI: &str = "[client]\nhbs_pulse_period = 100\nhbs_failure_threshold = 1\n";

/// One compute host and one controller: the real daemons, a fake VIM.
struct Rig {
    dir: TestDir,
    cfg: AgentCfg,
    agent: Option<Agent>,
    server: Server,
    udp_port: u16,
    server_args: Vec<String>,
    uuid: String,
}

impl Rig {
    /// guestAgent (address `cfg.ip`) and guestServer, with one instance
    /// provisioned and its reporting gate on at the server.
    fn start(tag: &str, cfg: AgentCfg, server_args: &[&str]) -> Self {
        let dir = TestDir::new(tag);
        let udp_port = free_udp_port();
        // The VIM audit is pushed past the test: the fake VIM lists no
        // instances, and an audit would rightly forget ours.
        let cfg = cfg.host("compute-0", HOST_UUID, udp_port).ini(
            "[agent]\naudit_start_ms = 600000\n[vim]\nretry_min_ms = 100\nretry_max_ms = 500\ntimeout_ms = 2000\n",
        );
        let server_args: Vec<String> = server_args.iter().map(|s| s.to_string()).collect();
        let server = launch_server(&dir, &cfg, &server_args, udp_port);
        let agent = start_agent(&cfg);
        let uuid = uuid(0x9E55_0000 + u32::from(udp_port));
        let mut rig = Self { dir, cfg, agent: Some(agent), server, udp_port, server_args, uuid };
        rig.provision();
        rig
    }

    fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("agent running")
    }

    /// Host and instance enabled at the agent, and the gate seen on at the server.
    fn provision(&mut self) {
        let a = self.agent();
        let u = &self.uuid;
        a.vim_enable(u);
        let on = wait_for(WAIT, || {
            let (_, body) = self.server.get("/v1/instances");
            let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
            doc["instances"].as_array()?.iter().any(|i| i["uuid"] == u.as_str() && i["reporting"] == true).then_some(())
        });
        assert!(on.is_some(), "reporting never enabled at the server for {u}");
    }

    /// kill -9 of the agent: nothing flushed.
    fn kill_agent(&mut self) {
        let mut agent = self.agent.take().expect("agent running");
        let mut child = agent.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// kill -9 of guestServer, and a restart on the same port and state dir.
    fn restart_server(&mut self) {
        self.server.kill9();
        self.server = launch_server(&self.dir, &self.cfg, &self.server_args, self.udp_port);
    }

    /// A guest that inits and then answers nothing more: a LOSS soon after.
    fn guest_goes_silent(&self) -> FakeGuest {
        let mut g = FakeGuest::listen(&self.server.channels, &self.uuid);
        g.handshake(300);
        g
    }

    fn server_acked(&self) -> u64 {
        crate::rel_support::metric(&self.server, "events_acked_total")
    }

    /// The server's unacknowledged events in its state file, by uuid.
    fn pending_in_state_file(&self) -> usize {
        let text = std::fs::read_to_string(self.server.state.join("guestServer.state.json")).unwrap_or_default();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        doc["pending_events"].as_array().map_or(0, |a| {
            a.iter().filter(|e| e["payload"].as_str().is_some_and(|p| p.contains(self.uuid.as_str()))).count()
        })
    }
}

/// guestServer, pointed at the agent's address, stderr appended to a log.
fn launch_server(dir: &TestDir, cfg: &AgentCfg, args: &[String], udp_port: u16) -> Server {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.path("guestServer.log")).unwrap();
    // Server::launch only reads the fake's address (the agent's listen
    // address); the real agent binds it afterwards.
    let placeholder = FakeAgent::bind(&format!("{}:{}", cfg.ip, cfg.listen));
    let http = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let s = Server::launch(dir, &placeholder, SERVER_INI, args, udp_port, Some(http), Stdio::from(log));
    drop(placeholder);
    s
}

/// Failure PATCHes for `uuid` among the VIM's requests within `deadline`,
/// stopping early at `want`.
fn failures_at_vim(vim: &FakeVim, uuid: &str, want: usize, deadline: Instant) -> usize {
    let mut n = 0;
    while n < want {
        let Ok(r) = vim.rx.recv_deadline(deadline) else { break };
        let j: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
        if r.method == "PATCH" && j["uuid"] == uuid && j["event-data"]["services"][0]["state"] == "failed" {
            n += 1;
        }
    }
    n
}

/// Everything the VIM gets within `window` (the duplicate check).
fn more_failures(vim: &FakeVim, uuid: &str, window: Duration) -> usize {
    failures_at_vim(vim, uuid, usize::MAX, Instant::now() + window)
}

fn state_file_has(path: &Path, needle: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle))
}

#[test]
fn rel_persist_server_kill9_with_an_unacked_loss_resends_it_after_restart() {
    let mut cfg = AgentCfg::new("pers-srv");
    let vim = cfg.vim();
    let mut rig = Rig::start("psrv", cfg, &[]);
    // The agent goes down; the guest then goes silent: the LOSS is sent to
    // nobody and stays unacknowledged.
    rig.kill_agent();
    let _guest = rig.guest_goes_silent();
    let on_disk = wait_for(Duration::from_secs(20), || (rig.pending_in_state_file() > 0).then_some(()));
    assert!(on_disk.is_some(), "the unacknowledged LOSS never reached the state file");
    let pending = rig.pending_in_state_file();
    rig.restart_server();
    let restarted = Instant::now();
    rig.agent = Some(start_agent(&rig.cfg));
    let got = failures_at_vim(&vim, &rig.uuid, 1, Instant::now() + Duration::from_secs(30));
    let took = restarted.elapsed();
    assert_eq!(got, 1, "the LOSS pending at the kill never reached the VIM");
    // Until the server holds nothing unacknowledged, a resend may still come.
    let settled = wait_for(Duration::from_secs(30), || (rig.pending_in_state_file() == 0).then_some(()));
    let dups = more_failures(&vim, &rig.uuid, Duration::from_millis(1500));
    eprintln!(
        "guestServer kill -9 with {pending} unacked LOSS: at the VIM {took:?} after the restart, \
         duplicates at the VIM {dups}, state file emptied: {}",
        settled.is_some()
    );
    assert!(settled.is_some(), "the resent LOSS was never acknowledged");
}

#[test]
fn rel_persist_agent_kill9_after_acking_a_loss_with_the_vim_down_delivers_it_after_restart() {
    let mut cfg = AgentCfg::new("pers-agt");
    drop(cfg.vim_listener.take()); // the VIM is down
    let mut rig = Rig::start("pagt", cfg, &[]);
    let _guest = rig.guest_goes_silent();
    // The agent took the LOSS: it is in the outbox file and the server
    // holds nothing unacknowledged.
    let outbox = rig.cfg.dir.join("state/outbox.json");
    let acked = wait_for(Duration::from_secs(20), || {
        (state_file_has(&outbox, &rig.uuid) && rig.pending_in_state_file() == 0 && rig.server_acked() >= 1)
            .then_some(())
    });
    assert!(acked.is_some(), "the LOSS was never taken and acknowledged");
    rig.kill_agent();
    let vim = FakeVim::start_on(rig.cfg.vim);
    let restarted = Instant::now();
    rig.agent = Some(start_agent(&rig.cfg));
    let got = failures_at_vim(&vim, &rig.uuid, 1, Instant::now() + Duration::from_secs(30));
    let took = restarted.elapsed();
    assert_eq!(got, 1, "the acknowledged LOSS was lost with the agent");
    let dups = more_failures(&vim, &rig.uuid, Duration::from_millis(1500));
    eprintln!(
        "guestAgent kill -9 after acking a LOSS, VIM down: at the VIM {took:?} after the restart, duplicates {dups}"
    );
    assert_eq!(dups, 0, "delivered twice");
}

#[test]
fn rel_persist_failover_to_a_controller_at_another_address() {
    let mut cfg = AgentCfg::new("pers-fo");
    let vim = cfg.vim();
    // guestServer accepts both controllers.
    let mut rig = Rig::start("pfo", cfg, &["--agent-allow", "127.0.0.1", "--agent-allow", "127.0.0.2"]);
    rig.kill_agent();
    // The other controller: same state dir, its own address, no --host
    // flags (everything from the state dir).
    rig.cfg.ip = "127.0.0.2".into();
    rig.cfg.extra.clear();
    let moved = Instant::now();
    rig.agent = Some(start_agent(&rig.cfg));
    let (code, body) = rig.agent().vim("GET", &format!("/v1/instances/{}", rig.uuid), None);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(
        (code, doc["services"][0]["state"].clone()),
        (200, serde_json::json!("enabled")),
        "instance forgotten: {body}"
    );
    let _guest = rig.guest_goes_silent();
    let got = failures_at_vim(&vim, &rig.uuid, 1, Instant::now() + Duration::from_secs(30));
    let took = moved.elapsed();
    assert_eq!(got, 1, "the failure after the failover never reached the VIM through the new agent");
    let log = std::fs::read_to_string(rig.dir.path("guestServer.log")).unwrap_or_default();
    let noticed = log.lines().any(|l| l.contains("guestAgent moved from 127.0.0.1 to 127.0.0.2"));
    let dups = more_failures(&vim, &rig.uuid, Duration::from_millis(1500));
    eprintln!("failover 127.0.0.1 -> 127.0.0.2: instance known, next LOSS at the VIM {took:?} after the new agent started, duplicates {dups}");
    assert!(noticed, "guestServer never switched to the new agent address");
}
