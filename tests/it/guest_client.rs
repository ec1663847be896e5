//! guest-client binary against a scripted fake host (and a test app on the
//! API socket): init, ack, challenges, votes through the event script,
//! host loss and return, SIGTERM, exit codes.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use guest_heartbeat::guest::api::{ApiClient, ApiMsg, AppHandler, AppInit, HealthReport};
use guest_heartbeat::wire::guest::{ActionNotify, Challenge, GuestMsg, HostMsg, InitAck};
use guest_heartbeat::wire::vocab::{CorrectiveAction, EventType, NotificationType, VoteResult};

use crate::util::*;

const CONF: &str = "HB_INTERVAL = 1000\nHB_INIT_RETRY=1000\nHB_MIN_TIMEOUT=2000\nVOTE=8\nSHUTDOWN_NOTICE=8\nSUSPEND_NOTICE=8\nRESUME_NOTICE=13\nRESTART=600\nCORRECTIVE_ACTION=\"reboot\"\n";

fn client(dir: &TempDir, conf: &str) -> Command {
    let conf_path = dir.path("guest.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_guest-client"));
    c.arg("--device")
        .arg(dir.path("host.sock"))
        .args(["--name", "vm1", "-f", "--fail-delay", "0", "--log-level", "debug"])
        .arg("--config")
        .arg(&conf_path)
        .arg("--api-socket")
        .arg(dir.path("api.sock"))
        .stderr(crate::support::child_stderr());
    c
}

fn init_of(m: &GuestMsg) -> Option<u32> {
    match m {
        GuestMsg::Init(i) => Some(i.invocation_id),
        _ => None,
    }
}

fn notify(host: &mut crate::util::HostConn, id: u32, ev: EventType, nt: NotificationType) {
    host.send(HostMsg::ActionNotify(ActionNotify {
        invocation_id: id,
        event_type: ev,
        notification_type: nt,
        timeout_ms: 4000,
    }));
}

fn vote(host: &crate::util::HostConn) -> (String, String) {
    host.expect("action_response", |m| match m {
        GuestMsg::ActionResponse(r) => Some((r.vote_result.clone(), r.log_msg.clone())),
        _ => None,
    })
}

/// Acks `id`, challenges with `value` and checks the echo.
fn heartbeat(host: &mut crate::util::HostConn, id: u32, value: u32) -> (String, String) {
    host.send(HostMsg::InitAck(InitAck { invocation_id: id }));
    host.send(HostMsg::Challenge(Challenge { heartbeat_challenge: value }));
    host.expect("challenge_response", |m| match m {
        GuestMsg::ChallengeResponse(r) if r.heartbeat_response == value => {
            Some((r.heartbeat_health.clone(), r.corrective_action.clone()))
        }
        _ => None,
    })
}

#[test]
fn full_session_against_a_scripted_host() {
    let dir = TempDir::new("gc");
    let flag = dir.path("veto");
    script(
        &dir.path("event.sh"),
        &format!("if [ -e {f} ]; then echo \"veto $1 $2\"; exit 1; fi\necho \"ok $1 $2\"; exit 0", f = flag.display()),
    );
    let conf = format!("{CONF}EVENT_NOTIFICATION_SCRIPT={}\n", dir.path("event.sh").display());
    let listener = UnixListener::bind(dir.path("host.sock")).unwrap();
    let started = Instant::now();
    let mut proc = Proc::spawn(&mut client(&dir, &conf));
    let mut host = accept(&listener);

    // First init about 1 s after start, sequence 1, +1 s on the secs.
    let raw = host.raw.recv_timeout(WAIT).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
    let text = String::from_utf8(raw).unwrap();
    assert!(text.starts_with(r#"{"version":3,"revision":1,"msg_type":"init","sequence":1,"invocation_id":"#), "{text}");
    assert!(text.ends_with(r#","name":"vm1","heartbeat_interval_ms":1000,"vote_secs":9,"shutdown_notice_secs":9,"suspend_notice_secs":9,"resume_notice_secs":14,"restart_secs":601,"corrective_action":"reboot"}"#), "{text}");
    let id = host.expect("init", init_of);

    // A challenge before the ack gets no answer; after it, an exact echo.
    host.send(HostMsg::Challenge(Challenge { heartbeat_challenge: 1 }));
    let (health, action) = heartbeat(&mut host, id, 1_576_872_650);
    assert_eq!((health.as_str(), action.as_str()), ("healthy", "reboot"));

    // Votes through the event script: accept, then reject with the flag.
    notify(&mut host, id, EventType::Stop, NotificationType::Revocable);
    assert_eq!(vote(&host), ("accept".into(), "ok revocable stop ".into()));
    std::fs::write(&flag, "").unwrap();
    notify(&mut host, id, EventType::Stop, NotificationType::Revocable);
    assert_eq!(vote(&host), ("reject".into(), "veto revocable stop ".into()));
    std::fs::remove_file(&flag).unwrap();
    notify(&mut host, id, EventType::Reboot, NotificationType::Irrevocable);
    assert_eq!(vote(&host).0, "accept");
    // An unknown event is answered `complete` at once with "unknown".
    host.send_raw(b"\n{\"version\":3,\"revision\":1,\"msg_type\":\"action_notify\",\"sequence\":9,\"invocation_id\":5,\"event_type\":\"explode\",\"notification_type\":\"revocable\",\"timeout_ms\":4000}\n");
    let r = host.expect("action_response", |m| match m {
        GuestMsg::ActionResponse(r) => Some(r.clone()),
        _ => None,
    });
    assert_eq!((r.event_type.as_str(), r.vote_result.as_str()), ("unknown", "complete"));

    // The host goes away and comes back: the guest reconnects and re-inits.
    host.close();
    let mut host = accept(&listener);
    let id2 = host.expect("init after reconnect", init_of);
    assert_ne!(id2, id);
    let (health, _) = heartbeat(&mut host, id2, 77);
    assert_eq!(health, "healthy");

    // Silence: init again after the 2 s no-challenge timeout.
    let t = Instant::now();
    let id3 = host.expect("init after silence", init_of);
    assert!(t.elapsed() >= Duration::from_millis(1500), "{:?}", t.elapsed());
    heartbeat(&mut host, id3, 78);

    // SIGTERM while enabled: `exit` then exit code 0.
    proc.signal(libc::SIGTERM);
    let log = host.expect("exit", |m| match m {
        GuestMsg::Exit(e) => Some(e.log_msg.clone()),
        _ => None,
    });
    assert_eq!(log, "Exiting...");
    assert_eq!(proc.wait().code(), Some(0));
}

#[test]
fn hanging_event_script_times_out_and_overlap_gets_one_reply() {
    let dir = TempDir::new("gc-hang");
    script(&dir.path("event.sh"), "exec sleep 30");
    // No challenges while we wait: keep the no-challenge timeout long.
    let conf = format!("{CONF}HB_MIN_TIMEOUT=10000\nEVENT_NOTIFICATION_SCRIPT={}\n", dir.path("event.sh").display());
    let listener = UnixListener::bind(dir.path("host.sock")).unwrap();
    let _proc = Proc::spawn(&mut client(&dir, &conf));
    let mut host = accept(&listener);
    let id = host.expect("init", init_of);
    heartbeat(&mut host, id, 5);
    notify(&mut host, id, EventType::Pause, NotificationType::Revocable);
    notify(&mut host, id, EventType::Stop, NotificationType::Revocable);
    let t = Instant::now();
    let r = host.expect("action_response", |m| match m {
        GuestMsg::ActionResponse(r) => Some(r.clone()),
        _ => None,
    });
    // timeout_ms 4000 - 1000, for the second notify only.
    assert!(t.elapsed() >= Duration::from_millis(2800), "{:?}", t.elapsed());
    assert_eq!(r.event_type, "stop");
    assert_eq!(r.vote_result, "timeout");
    assert_eq!(r.log_msg, "Timeout on application and/or script action responses.");
    // Keep the heartbeat alive and make sure no second reply follows.
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        host.send(HostMsg::Challenge(Challenge { heartbeat_challenge: 9 }));
        if let Some(m) = host.next_within(Duration::from_millis(300)) {
            assert!(!matches!(m, GuestMsg::ActionResponse(_)), "{m:?}");
        }
    }
}

struct TestApp {
    healthy: bool,
}

impl AppHandler for TestApp {
    fn health(&mut self) -> HealthReport {
        HealthReport {
            healthy: self.healthy,
            action: CorrectiveAction::Stop,
            log_msg: if self.healthy { "" } else { "app sick" }.into(),
        }
    }
    fn action(&mut self, _: EventType, _: NotificationType) -> (VoteResult, String) {
        (VoteResult::Reject, "app says no".into())
    }
}

fn app_init(interval: u32) -> AppInit {
    AppInit {
        name: "test-app".into(),
        heartbeat_interval_ms: interval,
        vote_secs: 3,
        shutdown_notice_secs: 3,
        suspend_notice_secs: 3,
        resume_notice_secs: 3,
        corrective_action: CorrectiveAction::Log,
    }
}

#[test]
fn app_api_health_vote_and_death() {
    let dir = TempDir::new("gc-app");
    script(&dir.path("event.sh"), "echo fine; exit 0");
    let conf = format!("{CONF}EVENT_NOTIFICATION_SCRIPT={}\n", dir.path("event.sh").display());
    let listener = UnixListener::bind(dir.path("host.sock")).unwrap();
    let _proc = Proc::spawn(&mut client(&dir, &conf));
    let mut host = accept(&listener);
    let id = host.expect("init", init_of);
    heartbeat(&mut host, id, 5);
    let api = dir.path("api.sock");
    wait_until("api socket", || Path::new(&api).exists());

    // Interval below 400 ms is refused, and the daemon keeps running.
    assert!(matches!(
        ApiClient::register(&api, &app_init(300), WAIT),
        Err(guest_heartbeat::guest::api::ApiError::Rejected)
    ));
    let mut app = ApiClient::register(&api, &app_init(400), WAIT).unwrap();
    let mut handler = TestApp { healthy: false };
    assert!(app.serve_until(&mut handler, WAIT, |m| matches!(m, ApiMsg::Challenge { .. })).unwrap());
    // The app's unhealthy report reaches the host. The app's answer and the
    // host's challenge race inside the daemon, so challenge until the
    // aggregate has it; the first unhealthy response carries the action.
    let (health, action) = heartbeat(&mut host, id, 6);
    let (health, action) = if health == "healthy" {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "the app's unhealthy report never reached the host");
            host.send(HostMsg::Challenge(Challenge { heartbeat_challenge: 6 }));
            let r = host.expect("challenge_response", |m| match m {
                GuestMsg::ChallengeResponse(r) => Some((r.heartbeat_health.clone(), r.corrective_action.clone())),
                _ => None,
            });
            if r.0 != "healthy" {
                break r;
            }
            assert!(app.serve_until(&mut handler, Duration::from_millis(200), |_| false).is_ok());
        }
    } else {
        (health, action)
    };
    assert_eq!((health.as_str(), action.as_str()), ("unhealthy", "stop"));
    handler.healthy = true;

    // The app's reject beats the script's accept.
    notify(&mut host, id, EventType::Stop, NotificationType::Revocable);
    assert!(app.serve_until(&mut handler, WAIT, |m| matches!(m, ApiMsg::ActionNotify { .. })).unwrap());
    assert_eq!(vote(&host), ("reject".into(), "app says no".into()));

    // A hung app (socket open, no answers) turns the VM unhealthy with the
    // app's registered action after twice its interval.
    let deadline = Instant::now() + WAIT;
    let text = loop {
        assert!(Instant::now() < deadline, "never reported the hung app");
        host.send(HostMsg::Challenge(Challenge { heartbeat_challenge: 7 }));
        let r = host.expect("challenge_response", |m| match m {
            GuestMsg::ChallengeResponse(r) => Some(r.clone()),
            _ => None,
        });
        if r.heartbeat_health == "unhealthy" && r.log_msg.contains("timeout") {
            assert_eq!(r.corrective_action, "log");
            break r.log_msg;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(text, "Application test-app heartbeat timeout 800 ms.");
    // A killed app drops out silently: the VM is healthy again.
    drop(app);
    wait_until("healthy after app death", || {
        host.send(HostMsg::Challenge(Challenge { heartbeat_challenge: 8 }));
        host.expect("challenge_response", |m| match m {
            GuestMsg::ChallengeResponse(r) => Some(r.heartbeat_health == "healthy"),
            _ => None,
        })
    });
}

#[test]
fn exit_codes() {
    let dir = TempDir::new("gc-exit");
    let mut p = Proc::spawn(client(&dir, CONF).stderr(std::process::Stdio::null()));
    assert_eq!(p.wait().code(), Some(6), "missing device");
    std::fs::write(dir.path("host.sock"), "").unwrap();
    let out = client(&dir, "HB_INTERVAL = 300\n").stderr(std::process::Stdio::piped()).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "bad config");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HB_INTERVAL") && err.contains("line 1"), "{err}");
    let help = Command::new(env!("CARGO_BIN_EXE_guest-client")).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--listen"));
}

#[test]
fn health_script_unhealthy_then_none_with_escaped_text() {
    let dir = TempDir::new("gc-health");
    script(&dir.path("health.sh"), "echo 'bad \"q\" \\\\'; echo line2; exit 1");
    let conf = format!("{CONF}HEALTH_CHECK_INTERVAL=1\nHEALTH_CHECK_SCRIPT={}\n", dir.path("health.sh").display());
    let listener = UnixListener::bind(dir.path("host.sock")).unwrap();
    let _proc = Proc::spawn(&mut client(&dir, &conf));
    let mut host = accept(&listener);
    let id = host.expect("init", init_of);
    heartbeat(&mut host, id, 1);
    let mut actions = Vec::new();
    let mut v = 2;
    wait_until("two unhealthy responses", || {
        v += 1;
        host.send(HostMsg::Challenge(Challenge { heartbeat_challenge: v }));
        let r = host.expect("challenge_response", |m| match m {
            GuestMsg::ChallengeResponse(r) => Some(r.clone()),
            _ => None,
        });
        if r.heartbeat_health == "unhealthy" {
            assert_eq!(r.log_msg, "bad \"q\" \\ line2 ");
            actions.push(r.corrective_action);
        }
        actions.len() >= 2
    });
    assert_eq!(actions, vec!["reboot".to_string(), "none".to_string()]);
}
