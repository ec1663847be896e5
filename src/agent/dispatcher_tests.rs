//! Dispatcher tests through injected channels and fake time: API requests,
//! guestServer events, VIM outcomes, timer ticks and signals go in as
//! `Event`s; commands come out of a loopback UDP socket standing in for a
//! guestServer, VIM jobs out of the job channels, wake-ups out of a channel.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver};

use super::*;
use crate::agent::api::HostRequest;
use crate::agent::config::{settings, Args, StaticHost};
use crate::agent::persist::Persisted;
use crate::agent::state::Io;
use crate::agent::vim_client::{Reply, SendError};
use crate::agent::vim_sender::{job_channel, VimJob};
use crate::wire::envelope::cmd;
use crate::wire::payload::Loss;

const HOST: &str = "010e7741-1173-4a3b-88fa-c4e5905500ca";

struct Rig {
    d: Dispatcher,
    gs: UdpSocket,
    events: Receiver<VimJob>,
    queries: Receiver<VimJob>,
    wakes: Receiver<Instant>,
    t0: Instant,
    dir: std::path::PathBuf,
}

fn rig(tag: &str) -> Rig {
    let dir = std::env::temp_dir().join(format!("gh-agent-disp-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    rig_in(dir, Persisted::default())
}

/// A dispatcher on `dir` restored from `persisted` (a restart).
fn rig_in(dir: std::path::PathBuf, persisted: Persisted) -> Rig {
    let gs = UdpSocket::bind("127.0.0.1:0").unwrap();
    gs.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut cfg = settings(&Args::default(), None, None, None).unwrap();
    cfg.state_dir = dir.clone();
    cfg.health_file = dir.join("info");
    cfg.retry_min = Duration::from_millis(100);
    cfg.hosts = vec![StaticHost {
        hostname: "compute-0".into(),
        uuid: HOST.into(),
        ip: "127.0.0.1".into(),
        port: gs.local_addr().unwrap().port(),
    }];
    let (events_tx, events) = job_channel();
    let (query_tx, queries) = job_channel();
    let (wake_tx, wakes) = unbounded::<Instant>();
    let io = Io { udp: UdpSocket::bind("127.0.0.1:0").unwrap(), events_tx, query_tx, waker: Box::new(wake_tx) };
    let t0 = Instant::now();
    let state = State::new(cfg, "127.0.0.1".into(), io, persisted, t0);
    let (_tx, rx) = bounded(1);
    let (_ctl_tx, ctl_rx) = bounded(1);
    let d = Dispatcher::new(state, rx, ctl_rx, Args::default());
    let r = Rig { d, gs, events, queries, wakes, t0, dir };
    // At start every known guestServer is greeted: it learns this agent's
    // address (a failover may have moved it) and that we acknowledge.
    assert_eq!(r.gs_cmd(), (cmd::EVENT_ACK, r#"{"source":"127.0.0.1","event_id":0}"#.to_string()));
    r
}

impl Rig {
    fn api(&mut self, req: ApiRequest) -> Result<ApiReply, ApiError> {
        let (tx, rx) = bounded(1);
        assert!(self.d.handle(Event::Api { req, reply: tx }, self.t0).is_none());
        rx.try_recv().unwrap()
    }

    fn gs_cmd(&self) -> (u32, String) {
        let mut buf = [0u8; 1100];
        let (n, _) = self.gs.recv_from(&mut buf).unwrap();
        let code = u32::from_le_bytes(buf[72..76].try_into().unwrap());
        (code, String::from_utf8_lossy(&buf[100..n]).into_owned())
    }
}

#[test]
fn api_request_changes_state_sends_and_persists() {
    let mut r = rig("api");
    let reply = r.api(ApiRequest::Host(HostRequest::Set { hostname: "compute-0".into(), enable: true }));
    assert_eq!(reply, Ok(ApiReply::Pass));
    let (code, payload) = r.gs_cmd();
    assert_eq!(code, cmd::MOD_HOST);
    assert_eq!(payload, format!(r#"{{"source":"127.0.0.1","uuid":"{HOST}","heartbeat":"enabled"}}"#));
    let saved = std::fs::read_to_string(r.dir.join("agent-state.json")).unwrap();
    assert!(saved.contains("\"reporting\": true"), "{saved}");
    let reply = r.api(ApiRequest::Host(HostRequest::Query { id: "nope".into() }));
    assert_eq!(reply, Err(ApiError::NotFound));
}

#[test]
fn loss_goes_to_the_outbox_and_is_retried_on_the_timer() {
    let mut r = rig("loss");
    r.d.state.inv.host_inst("compute-0", true).unwrap();
    r.d.state.inv.mod_inst("compute-0", "i1", true).unwrap();
    let from = r.gs.local_addr().unwrap();
    let loss = Loss { hostname: "compute-0".into(), uuid: "i1".into(), event_id: None };
    let ev = Event::Server { from, msg: Ok(crate::agent::link::ServerMsg::Loss(loss)), stamp: None };
    assert!(r.d.handle(ev, r.t0).is_none());
    let job = r.events.try_recv().unwrap();
    assert_eq!((job.method, job.path.as_str()), ("PATCH", "/nfvi-plugins/v1/instances/i1"));
    assert!(String::from_utf8(job.body.clone().unwrap()).unwrap().contains(r#""state":"failed""#));
    // Connection refused: retried 100 ms later, on a timer tick.
    let refused = VimDone {
        tag: job.tag.clone(),
        target: "t".into(),
        result: Err(SendError::Connect("t".into(), std::io::ErrorKind::ConnectionRefused.into())),
    };
    assert!(r.d.handle(Event::Vim(refused), r.t0).is_none());
    assert!(r.events.try_recv().is_err());
    let retry_at = r.t0 + Duration::from_millis(100);
    assert!(r.wakes.try_iter().any(|w| w == retry_at));
    assert!(r.d.handle(Event::Tick(retry_at), retry_at).is_none());
    let again = r.events.try_recv().unwrap();
    assert_eq!(again.body, job.body);
    let closed = VimDone { tag: again.tag, target: "t".into(), result: Ok(Reply::ClosedWithoutReply) };
    assert!(r.d.handle(Event::Vim(closed), retry_at).is_none());
    assert!(r.d.state.outbox.is_empty());
    assert_eq!(r.d.state.outbox.stats.delivered, 1);
}

#[test]
fn first_audit_two_seconds_after_start() {
    let mut r = rig("audit");
    r.d.state.inv.host_inst("compute-0", true).unwrap();
    r.d.state.inv.mod_inst("compute-0", "i1", true).unwrap();
    assert!(r.d.handle(Event::Tick(r.t0 + Duration::from_millis(1999)), r.t0).is_none());
    assert!(r.queries.try_recv().is_err());
    let at = r.t0 + Duration::from_secs(2);
    assert!(r.d.handle(Event::Tick(at), at).is_none());
    let q1 = r.queries.try_recv().unwrap();
    let q2 = r.queries.try_recv().unwrap();
    assert_eq!(q1.path, format!("/nfvi-plugins/v1/hosts/{HOST}"));
    assert!(q1.body.is_some());
    assert_eq!(q2.path, format!("/nfvi-plugins/v1/instances/?host_uuid={HOST}"));
    assert_eq!(r.gs_cmd(), (cmd::QRY_INST, r#"{"source":"127.0.0.1"}"#.into()));
    assert!(r.wakes.try_iter().any(|w| w == at + Duration::from_secs(10)));
}

#[test]
fn signals_health_and_stop() {
    let mut r = rig("signals");
    assert!(r.d.handle(Event::Signal(libc::SIGUSR1), r.t0).is_none());
    assert!(std::fs::read_to_string(r.dir.join("info")).unwrap().contains("healthy"));
    assert_eq!(r.d.handle(Event::Signal(libc::SIGTERM), r.t0), Some(Stop::Clean));
}

#[test]
fn datagrams_from_unknown_addresses_are_dropped_and_counted() {
    let mut r = rig("src");
    r.d.state.inv.host_inst("compute-0", true).unwrap();
    r.d.state.inv.mod_inst("compute-0", "i1", true).unwrap();
    let loss = || {
        crate::agent::link::ServerMsg::Loss(Loss { hostname: "compute-0".into(), uuid: "i1".into(), event_id: Some(7) })
    };
    let stranger: std::net::SocketAddr = "192.0.2.9:2401".parse().unwrap();
    assert!(r.d.handle(Event::Server { from: stranger, msg: Ok(loss()), stamp: None }, r.t0).is_none());
    assert!(r.events.try_recv().is_err(), "a forged LOSS reached the VIM");
    assert_eq!(r.d.state.counters.rejected_source, 1);
    // The known host (loopback here) is heard, acknowledged after handling,
    // and a second copy of the same event is acknowledged but not forwarded.
    let from = r.gs.local_addr().unwrap();
    assert!(r.d.handle(Event::Server { from, msg: Ok(loss()), stamp: None }, r.t0).is_none());
    assert!(r.events.try_recv().is_ok());
    let mut buf = [0u8; 2048];
    let (n, _) = r.gs.recv_from(&mut buf).unwrap();
    let ack = crate::wire::envelope::Envelope::decode(&buf[..n]).unwrap();
    assert_eq!(
        (ack.cmd, ack.payload.as_slice()),
        (cmd::EVENT_ACK, br#"{"source":"127.0.0.1","event_id":7}"#.as_slice())
    );
    assert!(r.d.handle(Event::Server { from, msg: Ok(loss()), stamp: None }, r.t0).is_none());
    assert!(r.events.try_recv().is_err(), "a retransmitted LOSS reached the VIM twice");
    assert_eq!(r.d.state.counters.events_duplicate, 1);
    let _ = std::fs::remove_dir_all(&r.dir);
}

/// A LOSS with id `id` from the rig's guestServer.
fn loss_from_gs(r: &mut Rig, id: u64) {
    let msg = crate::agent::link::ServerMsg::Loss(Loss {
        hostname: "compute-0".into(),
        uuid: "i1".into(),
        event_id: Some(id),
    });
    let from = r.gs.local_addr().unwrap();
    assert!(r.d.handle(Event::Server { from, msg: Ok(msg), stamp: None }, r.t0).is_none());
}

/// The next EVENT_ACK's id, if one comes within `within`.
fn ack_id(r: &Rig, within: Duration) -> Option<u64> {
    r.gs.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 2048];
    loop {
        let (n, _) = r.gs.recv_from(&mut buf).ok()?;
        let env = crate::wire::envelope::Envelope::decode(&buf[..n]).unwrap();
        if env.cmd == cmd::EVENT_ACK {
            let v: serde_json::Value = serde_json::from_slice(&env.payload).unwrap();
            return v["event_id"].as_u64();
        }
    }
}

#[test]
fn taken_event_ids_survive_a_restart_and_acks_wait_for_the_outbox_file() {
    let mut r = rig("seen");
    r.d.state.inv.host_inst("compute-0", true).unwrap();
    r.d.state.inv.mod_inst("compute-0", "i1", true).unwrap();
    loss_from_gs(&mut r, 7);
    assert_eq!(ack_id(&r, Duration::from_secs(5)), Some(7));
    assert!(r.events.try_recv().is_ok());
    // The outbox file cannot be written: the event is taken but not acknowledged.
    let dir = r.dir.clone();
    r.d.state.cfg.state_dir = dir.join("missing/deeper");
    loss_from_gs(&mut r, 8);
    assert_eq!(ack_id(&r, Duration::from_millis(200)), None, "acknowledged without being on disk");
    assert_eq!(r.d.state.counters.acks_withheld, 1);
    // The retransmission is a duplicate; once the file is written it is acknowledged.
    r.d.state.cfg.state_dir = dir.clone();
    loss_from_gs(&mut r, 8);
    assert_eq!(ack_id(&r, Duration::from_secs(5)), Some(8));
    // "kill -9" and restart on the same state dir: both ids are still known.
    let persisted = crate::agent::persist::load(&dir).unwrap();
    assert_eq!(persisted.seen, vec![("compute-0".to_string(), vec![7, 8])]);
    drop(r);
    let mut r = rig_in(dir, persisted);
    let restored: Vec<VimJob> = r.events.try_iter().collect();
    assert_eq!(restored.len(), 1, "the undelivered head of i1's queue is sent again");
    loss_from_gs(&mut r, 7);
    assert_eq!(ack_id(&r, Duration::from_secs(5)), Some(7));
    assert_eq!(r.d.state.counters.events_duplicate, 1);
    assert_eq!(r.d.state.outbox.len(), 2, "not queued a second time");
    // Bounded: an outbox full of failure events takes no more, and does not
    // acknowledge, so guestServer keeps the event and resends it.
    r.d.state.outbox = crate::agent::outbox::Outbox::new(2, 4, r.d.state.outbox.backoff);
    for _ in 0..2 {
        r.d.state.outbox.push("i1", crate::agent::outbox::EventKind::Alarm, "/p".into(), "{}".into(), r.t0);
    }
    loss_from_gs(&mut r, 9);
    assert_eq!(ack_id(&r, Duration::from_millis(200)), None);
    assert_eq!((r.d.state.counters.events_refused, r.d.state.outbox.len()), (1, 2));
    assert!(!r.d.state.seen_events.contains("compute-0", 9), "a refused event must be taken when resent");
    let _ = std::fs::remove_dir_all(&r.dir);
}
