//! guest-sim: scripted host against the binary (behaviours, report) and
//! the library in-process (1,000 guests, runtime changes, flapping).

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use guest_heartbeat::sim::{socket_path, uuid_for, Behaviour, GuestPlan, Sim, SimConfig, SimEventKind};
use guest_heartbeat::wire::guest::{decode_guest, ActionNotify, Challenge, Decoded, GuestMsg, HostMsg, InitAck};
use guest_heartbeat::wire::vocab::{EventType, NotificationType};

use crate::util::*;

fn init_of(m: &GuestMsg) -> Option<u32> {
    match m {
        GuestMsg::Init(i) => Some(i.invocation_id),
        _ => None,
    }
}

/// Connects as the host would (waiting for the socket to exist), acks the
/// init and returns the connection.
fn attach(path: &std::path::Path) -> HostConn {
    let mut stream = None;
    wait_until("connect", || {
        stream = UnixStream::connect(path).ok();
        stream.is_some()
    });
    let mut h = HostConn::new(stream.unwrap());
    let id = h.expect("init", init_of);
    h.send(HostMsg::InitAck(InitAck { invocation_id: id }));
    h
}

fn challenge(h: &mut HostConn, v: u32) -> Option<(String, String)> {
    h.send(HostMsg::Challenge(Challenge { heartbeat_challenge: v }));
    let deadline = Instant::now() + Duration::from_millis(1500);
    while let Some(m) = h.next_within(deadline.saturating_duration_since(Instant::now())) {
        if let GuestMsg::ChallengeResponse(r) = m {
            if r.heartbeat_response == v {
                return Some((r.heartbeat_health, r.corrective_action));
            }
        }
    }
    None
}

#[test]
fn binary_behaviours_seen_by_a_scripted_host() {
    let dir = TempDir::new("sim");
    let mut proc = Proc(
        Command::new(env!("CARGO_BIN_EXE_guest-sim"))
            .arg("--dir")
            .arg(&dir.0)
            .args(["--count", "4", "--seed", "5", "--silent-at", "1:2"])
            .args(["--unhealthy", "2:0:stop", "--reject", "3", "--garbage", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let path = |i| socket_path(&dir.0, &uuid_for(5, i));
    wait_until("sockets", || (0..4).all(|i| path(i).exists()));
    let mut g: Vec<HostConn> = (0..4).map(|i| attach(&path(i))).collect();

    // Garbage: a non-JSON line and an over-long line precede the answer.
    assert_eq!(challenge(&mut g[0], 10), Some(("healthy".into(), "reboot".into())));
    let raws: Vec<Vec<u8>> = g[0].raw.try_iter().collect();
    assert!(raws.iter().any(|l| l == b"this is not json"));
    assert!(raws.iter().any(|l| l.len() == 5000));
    // Unhealthy with the scripted action.
    assert_eq!(challenge(&mut g[2], 11), Some(("unhealthy".into(), "stop".into())));
    // Reject on a revocable notify, complete on an irrevocable one.
    for (nt, want) in [(NotificationType::Revocable, "reject"), (NotificationType::Irrevocable, "complete")] {
        g[3].send(HostMsg::ActionNotify(ActionNotify {
            invocation_id: 1,
            event_type: EventType::Stop,
            notification_type: nt,
            timeout_ms: 9000,
        }));
        let v = g[3].expect("action_response", |m| match m {
            GuestMsg::ActionResponse(r) => Some(r.vote_result.clone()),
            _ => None,
        });
        assert_eq!(v, want);
    }
    // Guest 1 answers until 2 s after start, then goes silent.
    assert!(challenge(&mut g[1], 12).is_some());
    wait_until("guest 1 silent", || challenge(&mut g[1], 13).is_none());

    proc.signal(libc::SIGTERM);
    assert!(proc.wait().success());
    let mut out = String::new();
    std::io::Read::read_to_string(proc.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let guests = report["guests"].as_array().unwrap();
    assert_eq!(guests.len(), 4);
    assert_eq!(guests[3]["notifies_answered"], 2);
    assert!(guests[1]["challenges_received"].as_u64().unwrap() > guests[1]["challenges_answered"].as_u64().unwrap());
    assert_eq!(guests[0]["inits_sent"], 1);
    assert!(!path(0).exists(), "sockets removed at exit");
}

#[test]
fn thousand_guests_listen_and_greet() {
    let dir = TempDir::new("sim1k");
    let sim = Sim::start(SimConfig::new(&dir.0, 1000)).unwrap();
    let t = Instant::now();
    let mut conns = Vec::new();
    for i in 0..1000 {
        let s = UnixStream::connect(sim.socket(i)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        conns.push(BufReader::new(s));
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let mut line = String::new();
        while line.trim().is_empty() {
            line.clear();
            assert!(c.read_line(&mut line).unwrap() > 0, "guest {i} closed");
        }
        let Decoded::Msg(_, GuestMsg::Init(init)) = decode_guest(line.trim().as_bytes()) else {
            panic!("guest {i}: {line}")
        };
        assert_eq!(init.name, format!("sim-{i}"));
    }
    eprintln!("1000 guests greeted in {:?}", t.elapsed());
    let report = sim.stop();
    assert_eq!(report.guests.len(), 1000);
    assert!(report.guests.iter().all(|g| g.connects == 1 && !g.panicked));
}

#[test]
fn runtime_behaviour_change_events_and_flapping() {
    let dir = TempDir::new("simlib");
    let mut cfg = SimConfig::new(&dir.0, 2);
    cfg.events = true;
    cfg.flap_down = Duration::from_millis(300);
    cfg.plans.push((1, GuestPlan { flap_every: Some(Duration::from_secs(2)), ..GuestPlan::default() }));
    let sim = Sim::start(cfg).unwrap();
    let ev = sim.events().unwrap().clone();
    let mut h = attach(&sim.socket(0));
    assert!(challenge(&mut h, 1).is_some());
    sim.set_behaviour(0, Behaviour::Silent);
    wait_until("silent", || challenge(&mut h, 2).is_none());
    sim.set_behaviour(0, Behaviour::Healthy);
    wait_until("answering again", || challenge(&mut h, 3).is_some());

    // Guest 1 drops the host, removes its socket and comes back.
    let h1 = attach(&sim.socket(1));
    let deadline = Instant::now() + WAIT;
    let mut disconnected = false;
    loop {
        let e = ev.recv_deadline(deadline).expect("flap events");
        match e.kind {
            SimEventKind::Disconnected if e.guest == 1 => disconnected = true,
            SimEventKind::Listening if e.guest == 1 && disconnected => break,
            _ => {}
        }
    }
    drop(h1);
    let _h1 = attach(&sim.socket(1));
    let report = sim.stop();
    assert!(report.guests[0].challenges_received > report.guests[0].challenges_answered);
    assert!(report.guests[1].connects >= 2);
}
