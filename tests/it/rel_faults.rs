//! guestServer faults (issue 6): kill -9 under 200 heartbeating guests and
//! restart from the state file; the channel directory deleted and
//! re-created; an inotify queue overflow (the daemon is stopped with
//! SIGSTOP while more events than `max_queued_events` happen) answered by a
//! full rescan.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use guest_heartbeat::sim::Behaviour;
use guest_heartbeat::wire::envelope::cmd;

use crate::rel_support::*;
use crate::support::*;

const INI: &str = "[client]\nhbs_pulse_period = 400\nhbs_failure_threshold = 1\n";

fn http() -> std::net::SocketAddr {
    ([127, 0, 0, 1], free_tcp_port()).into()
}

/// `/v1/instances` as (uuid, reporting, heartbeating).
fn instances(server: &Server) -> Vec<(String, bool, bool)> {
    let (code, body) = server.get("/v1/instances");
    assert_eq!(code, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    doc["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["uuid"].as_str().unwrap().to_string(),
                i["reporting"].as_bool().unwrap(),
                i["heartbeating"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn rel_fault_kill9_under_200_guests_readopts_all_and_reports_only_the_silent_one() {
    const N: usize = 200;
    let dir = TestDir::new("k9");
    let agent = FakeAgent::new();
    let port = free_udp_port();
    let mut ls = start_logged(&dir, &agent, INI, port, http());
    let col = Collector::start(&agent);
    let fleet = Fleet::start(&ls.server, &agent, &col, N, 1000);
    let silent = fleet.sim.uuid(0).to_string();
    let state = ls.server.state.join("guestServer.state.json");
    let recorded = wait_for(Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&state).ok()?;
        (text.matches("\"reporting\": true").count() == N && text.matches("\"heartbeating\": true").count() == N)
            .then_some(())
    });
    if recorded.is_none() {
        let text = std::fs::read_to_string(&state).unwrap_or_default();
        panic!(
            "state file never recorded all {N} gates: reporting {}, heartbeating {}; STOPPED so far {}",
            text.matches("\"reporting\": true").count(),
            text.matches("\"heartbeating\": true").count(),
            col.count(cmd::HEARTBEAT_STOPPED, &fleet.uuids)
        );
    }
    ls.server.kill9();
    let killed = Instant::now();
    // One guest goes silent while the daemon is down.
    fleet.sim.set_behaviour(0, Behaviour::Silent);
    let before = col.len();
    let ls = start_logged(&dir, &agent, INI, port, http());
    let restarted = Instant::now();
    // Gates are back from the state file before anyone says anything.
    let insts = wait_for(WAIT, || {
        let v = instances(&ls.server);
        (v.len() == N).then_some(v)
    })
    .expect("instances restored");
    assert!(insts.iter().all(|(_, r, _)| *r), "a reporting gate was lost");
    // The silent guest is reported once the readopt deadline
    // (10 s + (1 + 1) x 1 s) has passed; by then every other guest's
    // deadline has passed too.
    let lost = col.wait(Duration::from_secs(40), |evs| {
        evs[before..].iter().any(|g| g.cmd == cmd::HEARTBEAT_LOSS && g.json["uuid"] == silent.as_str())
    });
    let loss_after = restarted.elapsed();
    assert!(lost, "the guest that went silent while we were down was never reported");
    let mut healthy = fleet.uuids.clone();
    healthy.remove(&silent);
    // Every healthy guest re-inits on the new connection, then answers
    // challenges for more than (threshold + 1) intervals.
    let reinit = wait_for(Duration::from_secs(30), || {
        let (code, body) = ls.server.get("/v1/instances");
        let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
        let waiting = doc["instances"].as_array()?.iter().filter(|i| i["state"] == "server_waiting_init").count();
        (code == 200 && waiting <= 1).then_some(())
    });
    assert!(reinit.is_some(), "healthy guests did not re-init");
    let msgs = metric(&ls.server, "guest_messages_total");
    let rounds = wait_for(Duration::from_secs(30), || {
        (metric(&ls.server, "guest_messages_total") >= msgs + 3 * healthy.len() as u64).then_some(())
    });
    assert!(rounds.is_some(), "healthy guests stopped answering");
    let evs = col.got.lock().unwrap()[before..].to_vec();
    let bad: Vec<_> = evs
        .iter()
        .filter(|g| g.cmd == cmd::HEARTBEAT_LOSS || g.cmd == cmd::HEARTBEAT_STOPPED)
        .filter(|g| g.json["uuid"].as_str().is_some_and(|u| healthy.contains(u)))
        .collect();
    let running_flaps = evs.iter().filter(|g| g.cmd == cmd::HEARTBEAT_RUNNING).count();
    let losses_of_silent =
        evs.iter().filter(|g| g.cmd == cmd::HEARTBEAT_LOSS && g.json["uuid"] == silent.as_str()).count();
    let beating = instances(&ls.server).iter().filter(|(u, _, hb)| *hb && healthy.contains(u)).count();
    eprintln!(
        "kill -9 under {N}: restarted {:?} after the kill; silent guest's LOSS {loss_after:?} after restart \
         ({losses_of_silent} LOSS); healthy guests with LOSS/STOPPED: {}; RUNNING after restart: {running_flaps}; \
         {beating}/{} healthy heartbeating",
        restarted - killed,
        bad.len(),
        healthy.len()
    );
    assert!(bad.is_empty(), "healthy guests reported: {bad:?}");
    assert_eq!(losses_of_silent, 1);
    assert_eq!(beating, healthy.len());
}

#[test]
fn rel_fault_channel_dir_deleted_and_recreated() {
    let dir = TestDir::new("cdir");
    let agent = FakeAgent::new();
    let ls = start_logged(&dir, &agent, "[client]\nhbs_pulse_period = 50\n", free_udp_port(), http());
    let col = Collector::start(&agent);
    let uuids: HashSet<String> = (0..5).map(|i| uuid(0xD1D0_0000 + i)).collect();
    let mut guests: Vec<FakeGuest> = uuids.iter().map(|u| FakeGuest::listen(&ls.server.channels, u)).collect();
    for g in &mut guests {
        agent.enable(ls.server.udp, &g.uuid);
        g.handshake(5_000);
    }
    assert!(col.wait(WAIT, |e| count_in(e, cmd::HEARTBEAT_RUNNING, &uuids) == 5), "not all running");
    drop(guests);
    std::fs::remove_dir_all(&ls.server.channels).unwrap();
    assert!(
        col.wait(WAIT, |e| count_in(e, cmd::HEARTBEAT_STOPPED, &uuids) == 5),
        "deleting the directory did not stop every instance"
    );
    std::fs::create_dir_all(&ls.server.channels).unwrap();
    let mut guests: Vec<FakeGuest> = uuids.iter().map(|u| FakeGuest::listen(&ls.server.channels, u)).collect();
    for g in &mut guests {
        g.handshake(5_000);
    }
    assert!(col.wait(WAIT, |e| count_in(e, cmd::HEARTBEAT_RUNNING, &uuids) == 10), "not all running again");
    assert_eq!(col.count(cmd::HEARTBEAT_LOSS, &uuids), 0, "a deleted socket is not a loss");
    assert!(ls.server.child.id() > 0 && metric(&ls.server, "instances_heartbeating") == 5);
}

/// Events with `code` for one of `uuids` (on a slice the collector lends).
fn count_in(evs: &[Got], code: u32, uuids: &HashSet<String>) -> usize {
    evs.iter().filter(|g| g.cmd == code && g.json["uuid"].as_str().is_some_and(|u| uuids.contains(u))).count()
}

#[test]
fn rel_fault_inotify_overflow_triggers_a_full_rescan() {
    let dir = TestDir::new("ovf");
    let agent = FakeAgent::new();
    let ls = start_logged(&dir, &agent, "[client]\nhbs_pulse_period = 50\n", free_udp_port(), http());
    agent.expect(cmd::MONITOR_READY, WAIT, |_| true);
    let rescans = metric(&ls.server, "rescans_total");
    let max_events: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(16384);
    // Freeze the daemon so its watcher cannot drain the queue.
    ls.server.signal(libc::SIGSTOP);
    let started = Instant::now();
    for i in 0..max_events {
        let p = ls.server.channels.join(format!("noise{i}"));
        std::fs::write(&p, b"").unwrap();
        std::fs::remove_file(&p).unwrap();
    }
    // These creations are lost in the overflow: only a rescan finds them.
    let mut guests: Vec<FakeGuest> =
        (0..3).map(|i| FakeGuest::listen(&ls.server.channels, &uuid(0x0F10_0000 + i))).collect();
    let flooded = started.elapsed();
    ls.server.signal(libc::SIGCONT);
    for g in &mut guests {
        // Well before the 180 s periodic audit.
        g.handshake(5_000);
    }
    let found = started.elapsed();
    assert!(metric(&ls.server, "rescans_total") > rescans, "no rescan");
    assert!(log_lines(&ls.log, &["inotify queue overflow"]) >= 1, "overflow not logged");
    eprintln!(
        "inotify overflow: {} events in {flooded:?}; new guests found {found:?} after the freeze",
        2 * max_events
    );
}
