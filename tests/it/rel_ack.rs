//! Failure reports survive a lossy management network (issue 6): the real
//! guestServer and the real guestAgent talk through a UDP relay that drops
//! 30 % of the datagrams in each direction. 20 guests go silent; every LOSS
//! reaches the VIM exactly once (retransmitted until acknowledged, and
//! de-duplicated by the agent).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::agent_support::{start as start_agent, AgentCfg, HOST_UUID};
use crate::rel_support::*;
use crate::support::*;

/// Forwarded and dropped counts of one direction.
#[derive(Default)]
struct Counts {
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

/// A UDP relay: datagrams arriving on `a` go to `a_to` (sent from `a`),
/// datagrams arriving on `b` go to `b_to` (sent from `b`); `pct` % dropped.
struct Relay {
    a: UdpSocket,
    b: UdpSocket,
    stop: Arc<AtomicBool>,
    counts: [Arc<Counts>; 2],
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    fn bind() -> Self {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        Self { a, b, stop: Arc::new(AtomicBool::new(false)), counts: Default::default(), threads: Vec::new() }
    }

    fn start(&mut self, a_to: SocketAddr, b_to: SocketAddr, pct: u64) {
        for (i, (sock, to)) in [(&self.a, a_to), (&self.b, b_to)].into_iter().enumerate() {
            let sock = sock.try_clone().unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let (stop, counts) = (self.stop.clone(), self.counts[i].clone());
            self.threads.push(std::thread::spawn(move || {
                // xorshift, seeded per direction: the same drops every run.
                let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1);
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((n, _)) = sock.recv_from(&mut buf) else { continue };
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if x % 100 < pct {
                        counts.dropped.fetch_add(1, Ordering::SeqCst);
                    } else {
                        counts.forwarded.fetch_add(1, Ordering::SeqCst);
                        let _ = sock.send_to(&buf[..n], to);
                    }
                }
            }));
        }
    }

    fn figures(&self, i: usize) -> (u64, u64) {
        (self.counts[i].forwarded.load(Ordering::SeqCst), self.counts[i].dropped.load(Ordering::SeqCst))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn rel_ack_every_loss_reaches_the_vim_once_through_a_30_percent_lossy_relay() {
    const GUESTS: u32 = 20;
    let dir = TestDir::new("ack");
    let mut relay = Relay::bind();
    // The agent's commands go to relay.b (its configured host address).
    // The VIM audit is pushed past the test: the fake VIM lists no
    // instances, and an audit would rightly forget ours.
    let mut cfg = AgentCfg::new("relack")
        .host("compute-0", HOST_UUID, relay.b.local_addr().unwrap().port())
        .ini("[agent]\naudit_start_ms = 600000\n");
    let vim = cfg.vim();
    let agent = start_agent(&cfg);
    // guestServer sends events (and READY) to relay.a.
    let via = FakeAgent { sock: relay.a.try_clone().unwrap() };
    let udp_port = free_udp_port();
    let ls = start_logged(
        &dir,
        &via,
        "[client]\nhbs_pulse_period = 100\nhbs_failure_threshold = 1\n",
        udp_port,
        ([127, 0, 0, 1], free_tcp_port()).into(),
    );
    relay.start(agent.listen, ls.server.udp, 30);

    let hb = format!(r#"{{"uuid":"{HOST_UUID}","hostname":"compute-0"}}"#);
    assert_eq!(agent.vim("PUT", &format!("/v1/hosts/{HOST_UUID}/enable"), Some(&hb)).0, 200);
    // Reporting on in the agent's records (its commands may be dropped) and,
    // reliably, straight to the server from a loopback socket.
    let side = FakeAgent::new();
    let uuids: Vec<String> = (0..GUESTS).map(|i| uuid(0xACC0_0000 + i)).collect();
    for u in &uuids {
        let create = format!(r#"{{"uuid":"{u}","hostname":"compute-0","services":["heartbeat"]}}"#);
        assert_eq!(agent.vim("POST", &format!("/v1/instances/{u}"), Some(&create)).0, 200);
        let set = format!(
            r#"{{"uuid":"{u}","hostname":"compute-0","services":[{{"service":"heartbeat","state":"enabled"}}]}}"#
        );
        assert_eq!(agent.vim("PATCH", &format!("/v1/instances/{u}"), Some(&set)).0, 200);
        side.enable(ls.server.udp, u);
    }
    // The agent's ADD_INST ("disabled") crosses the lossy relay and may land
    // after the direct enable: make sure every gate is on before the test.
    let mut last_off = Vec::new();
    let all_enabled = wait_for(Duration::from_secs(40), || {
        let (_, body) = ls.server.get("/v1/instances");
        let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
        // Off, or missing (an audit may have removed one the agent did not
        // know yet): re-assert both.
        let on: std::collections::HashSet<&str> = doc["instances"]
            .as_array()?
            .iter()
            .filter(|i| i["reporting"] == true)
            .filter_map(|i| i["uuid"].as_str())
            .collect();
        let off: Vec<String> = uuids.iter().filter(|u| !on.contains(u.as_str())).cloned().collect();
        for u in &off {
            // Both the agent's record (master of reporting; its audit
            // re-asserts it) and the server directly.
            let set = format!(
                r#"{{"uuid":"{u}","hostname":"compute-0","services":[{{"service":"heartbeat","state":"enabled"}}]}}"#
            );
            agent.vim("PATCH", &format!("/v1/instances/{u}"), Some(&set));
            side.enable(ls.server.udp, u);
        }
        last_off = off.clone();
        off.is_empty().then_some(())
    });
    assert!(all_enabled.is_some(), "reporting never enabled for every instance; still off: {last_off:?}");
    let mut guests: Vec<FakeGuest> = uuids.iter().map(|u| FakeGuest::listen(&ls.server.channels, u)).collect();
    for g in &mut guests {
        g.handshake(300);
    }
    // Every guest now goes silent: (1 + 1) x 300 ms later each is a loss.
    let silent_at = Instant::now();
    let mut failed: HashMap<String, usize> = HashMap::new();
    let deadline = silent_at + Duration::from_secs(90);
    while failed.len() < uuids.len() && Instant::now() < deadline {
        let Ok(r) = vim.rx.recv_deadline(deadline) else { break };
        if r.method != "PATCH" {
            continue;
        }
        let j: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        if j["event-data"]["services"][0]["state"] == "failed" {
            *failed.entry(j["uuid"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    let all_in = silent_at.elapsed();
    assert_eq!(failed.len(), uuids.len(), "failures reached the VIM for only {failed:?}");
    // Retransmissions still in flight must not reach the VIM twice: wait
    // until the server has nothing unacknowledged, then look again.
    let settled = wait_for(Duration::from_secs(90), || {
        (metric(&ls.server, "events_acked_total") >= u64::from(GUESTS)).then_some(())
    });
    while let Ok(r) = vim.rx.try_recv() {
        let j: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
        if r.method == "PATCH" && j["event-data"]["services"][0]["state"] == "failed" {
            *failed.entry(j["uuid"].as_str().unwrap_or_default().to_string()).or_default() += 1;
        }
    }
    let dups: Vec<_> = failed.iter().filter(|(_, n)| **n != 1).collect();
    let (up_fwd, up_drop) = relay.figures(0);
    let (down_fwd, down_drop) = relay.figures(1);
    let retx = metric(&ls.server, "events_retransmitted_total");
    let (_, agent_metrics) = agent.vim("GET", "/metrics", None);
    let dup_caught: u64 = agent_metrics
        .lines()
        .find_map(|l| l.strip_prefix("guestagent_events_duplicate_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("agent duplicate counter");
    eprintln!(
        "lossy relay: server->agent {up_fwd} forwarded / {up_drop} dropped, agent->server {down_fwd} / {down_drop}; \
         {GUESTS} losses all at the VIM {all_in:?} after going silent; {retx} retransmissions, {dup_caught} duplicates caught by the agent; all acked: {}; \
         duplicates at the VIM {dups:?}",
        settled.is_some()
    );
    assert!(dups.is_empty(), "a loss reached the VIM more than once: {dups:?}");
    assert!(up_drop * 100 >= (up_fwd + up_drop) * 20, "the relay did not drop enough to test anything");
    assert!(retx > 0, "nothing was retransmitted");
    assert!(settled.is_some(), "not every loss was acknowledged");
}
